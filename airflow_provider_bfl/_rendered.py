"""
The one decoder of rendered template text.

Jinja renders a templated argument to text unless the DAG uses native rendering: a list or dict
from an XCom arrives as its JSON or as its Python ``repr``. Every templated argument that expects
data (the operator's ``request``/``prompts``, the sensor's ``task_uuids``, QA's ``images``) goes
through :func:`decode_rendered`, so they all accept the same text and fail the same way.
"""

from __future__ import annotations

import ast
import json
from typing import Any

from airflow_provider_bfl.exceptions import BflError, BflInvalidRequestError

#: How rendered data text starts: a list, an object, a tuple or a quoted string.
_LITERAL_OPENERS = ("[", "{", "(", '"', "'")


def looks_like_literal(text: str) -> bool:
    """True when ``text`` is meant as data (JSON or a Python literal), not as a bare string."""
    return text.lstrip().startswith(_LITERAL_OPENERS)


def decode_rendered(value: Any, *, parameter: str, error: type[BflError] = BflInvalidRequestError) -> Any:
    """
    ``value`` unchanged unless it is text; text decoded as JSON, else as a Python literal.

    Fails with ``error`` (naming ``parameter``) for text that is neither, including input nested
    too deeply to decode, which must never escape as a RecursionError or MemoryError.
    """
    if not isinstance(value, str):
        return value
    text = value.strip()
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        pass
    try:
        return ast.literal_eval(text)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        raise error(
            f"{parameter}: got {text!r:.120}, which is neither JSON nor a Python literal",
            parameter=parameter,
        ) from None
