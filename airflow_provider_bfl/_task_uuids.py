"""
The one validator of ``{taskUUID: images expected}`` input (hook, sensor, trigger, operator XCom).

Light to import: DAG files import the sensor and trigger modules while being parsed.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from typing import Any, NoReturn

from airflow_provider_bfl.exceptions import BflInvalidRequestError

#: What every ``{taskUUID: images expected}`` argument accepts (operator XCom, sensor, trigger, hook).
EXPECTED_SHAPE = "a mapping of taskUUID to expected image count (numberResults), or a list of taskUUIDs"


def expected_images(value: Any, *, parameter: str = "task_uuids", shown: Any = None) -> dict[str, int]:
    """
    The one validator of ``{taskUUID: images expected}`` input: the checked mapping, in order.

    Accepts such a mapping or an iterable of taskUUIDs (one image each); UUIDs are stripped of
    surrounding whitespace. Anything else is a :class:`BflInvalidRequestError` naming
    ``parameter`` and quoting ``shown`` (default: ``value``) before any request is sent.
    """
    given = value if shown is None else shown

    def invalid(reason: str) -> NoReturn:
        raise BflInvalidRequestError(
            f"{parameter} must be {EXPECTED_SHAPE}; got {given!r:.300}: {reason}", parameter=parameter
        )

    if isinstance(value, Mapping):
        pairs: Iterable[tuple[Any, Any]] = value.items()
    elif isinstance(value, Iterable) and not isinstance(value, str | bytes | bytearray):
        pairs = ((item, 1) for item in value)
    else:
        invalid(f"a {type(value).__name__} is not accepted")
    counts: dict[str, int] = {}
    for task_uuid, count in pairs:
        if not isinstance(task_uuid, str) or not _is_uuid(task_uuid.strip()):
            invalid(f"{task_uuid!r:.80} is not a taskUUID")
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            invalid(
                f"the image count (numberResults) of {task_uuid} must be an integer >= 1, got {count!r:.40}"
            )
        counts[task_uuid.strip()] = count
    if not counts:
        invalid("it is empty: it holds no taskUUID")
    return counts


def _is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True
