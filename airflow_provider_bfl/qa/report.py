"""
Words for humans: image labels, the run summary, the per-image log table and the failure message.

Kept apart from the checks so the log, the exception and the contact sheet all name an image the
same way (``#3 (imageUUID 9a1b...)``, 1-based, in input order).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

#: Verdict actions, in the order the summary lists them.
ACTIONS = ("kept", "quarantined", "skipped", "failed")
#: At most this many images are spelled out in a failure message; the rest are counted.
MAX_LISTED_FAILURES = 20
#: Characters of a prompt the table shows.
PROMPT_WIDTH = 40


def image_label(index: int, record: Mapping[str, Any]) -> str:
    """``#3 (imageUUID 9a1b...)``, with the caller's key when the record has one: ``#3 SKU-17 (...)``."""
    image_uuid = record.get("imageUUID")
    key = record.get("key")
    number = f"#{index + 1} {key}" if isinstance(key, str) and key else f"#{index + 1}"
    return f"{number} (imageUUID {image_uuid})" if image_uuid else f"{number} ({record.get('storedURI')})"


def counts(verdicts: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """``{"images": n, "kept": .., "quarantined": .., "skipped": .., "failed": ..}``."""
    tally = dict.fromkeys(ACTIONS, 0)
    for verdict in verdicts:
        tally[verdict["qa"]["action"]] += 1
    return {"images": len(verdicts), **tally}


def summary_line(verdicts: Sequence[Mapping[str, Any]]) -> str:
    tally = counts(verdicts)
    return (
        f"{tally['images']} image(s): {tally['kept']} passed, {tally['quarantined']} quarantined, "
        f"{tally['skipped']} skipped, {tally['failed']} failed"
    )


def failed_checks(verdict: Mapping[str, Any]) -> list[str]:
    return [name for name, result in verdict["qa"]["checks"].items() if not result["ok"]]


def format_table(verdicts: Sequence[Mapping[str, Any]]) -> str:
    """A fixed-width table, one line per image: what happened and why (with key and prompt when known)."""
    extras = [name for name in ("key", "prompt") if any(verdict.get(name) for verdict in verdicts)]
    rows: list[tuple[str, ...]] = [("#", *extras, "imageUUID", "size", "bytes", "action", "reasons")]
    for index, verdict in enumerate(verdicts):
        width, height = verdict.get("width"), verdict.get("height")
        rows.append(
            (
                str(index + 1),
                *(_cell(verdict.get(name)) for name in extras),
                str(verdict.get("imageUUID", "-")),
                f"{width}x{height}" if width and height else "-",
                str(verdict.get("bytes", "-")),
                verdict["qa"]["action"],
                "; ".join(verdict["qa"]["reasons"]) or "all checks passed",
            )
        )
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]) - 1)]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)) + "  " + row[-1]
        for row in rows
    ]
    return "\n".join([summary_line(verdicts), *lines])


def _cell(value: Any) -> str:
    """A table cell: one line, at most :data:`PROMPT_WIDTH` characters."""
    if not value:
        return "-"
    text = " ".join(str(value).split())
    return text if len(text) <= PROMPT_WIDTH else text[: PROMPT_WIDTH - 3] + "..."


def failure_message(
    verdicts: Sequence[Mapping[str, Any]], move_errors: Sequence[tuple[int, str]] = ()
) -> str:
    """The exception text: each failing image with its failing checks, then each failed move."""
    failing = [
        (index, verdict) for index, verdict in enumerate(verdicts) if verdict["qa"]["action"] == "failed"
    ]
    parts = [
        f"{image_label(index, verdict)} at {verdict.get('storedURI')}: " + "; ".join(verdict["qa"]["reasons"])
        for index, verdict in failing[:MAX_LISTED_FAILURES]
    ]
    if len(failing) > MAX_LISTED_FAILURES:
        parts.append(f"... and {len(failing) - MAX_LISTED_FAILURES} more failing image(s)")
    parts.extend(
        f"could not quarantine {image_label(index, verdicts[index])}: {error}" for index, error in move_errors
    )
    head = (
        f"Image QA failed for {len(failing)} of {len(verdicts)} image(s)"
        if failing
        else "Image QA could not finish"
    )
    extra = f" and {len(move_errors)} quarantine move(s) failed" if failing and move_errors else ""
    return f"{head}{extra}: " + " | ".join(parts)
