"""
Which text Jinja would render to exactly itself, so rendering it can be skipped.

Airflow compiles every string of a templated field as a Jinja template, markup or not: a nightly
catalogue's 10,000 literal prompts cost about 1.6 s to render at the task's start and again at
each resume from the triggerer. Text that holds none of the environment's delimiters renders to
itself, byte for byte, in Airflow's environments (``keep_trailing_newline`` is on), except where
Jinja would change it: newlines normalised (``\\r``), a template file name, a native environment
(which turns ``"1024"`` into an int). Those still go through Jinja.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import jinja2


def renders_to_itself(text: str, env: jinja2.Environment, template_ext: Sequence[str] = ()) -> bool:
    """True when rendering ``text`` in ``env`` would return ``text`` unchanged (no markup at all)."""
    from jinja2.nativetypes import NativeEnvironment

    if isinstance(env, NativeEnvironment) or "\r" in text:
        return False
    if not env.keep_trailing_newline and text.endswith("\n"):
        return False
    if template_ext and text.endswith(tuple(template_ext)):
        return False
    markers = (
        env.block_start_string,
        env.variable_start_string,
        env.comment_start_string,
        env.line_statement_prefix,
        env.line_comment_prefix,
    )
    return not any(marker and marker in text for marker in markers)
