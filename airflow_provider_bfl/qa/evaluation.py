"""
:func:`evaluate`: read every landed image once, run the enabled checks, decide an action per image.

Pure with respect to storage: it reads objects but never writes or moves one, so it is safe to call
from anywhere (a notebook, a test, a dry run) and :func:`~airflow_provider_bfl.qa.apply_policies`
is the only place that touches storage.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from airflow_provider_bfl.qa import checks, storage
from airflow_provider_bfl.qa.config import CHECKS, POLICIES, QAConfig
from airflow_provider_bfl.qa.errors import QAInputError
from airflow_provider_bfl.qa.imaging import ImageFacts, allowed_pixels, measure, require_pillow
from airflow_provider_bfl.qa.report import image_label

log = logging.getLogger(__name__)

#: The verdict action each policy leads to when one of its checks fails.
ACTION_OF_POLICY = {"fail": "failed", "quarantine": "quarantined", "skip": "skipped"}


def evaluate(records: Iterable[Mapping[str, Any]], config: QAConfig | None = None) -> list[dict[str, Any]]:
    """
    One verdict per landed image record, in input order: the record plus a ``"qa"`` block::

        {..., "qa": {"passed": bool, "action": "kept" | "skipped" | "quarantined" | "failed",
                     "reasons": ["not_blank: near-uniform: ...", ...],
                     "checks": {"decodes": {"ok": True, "detail": "PNG 256x256"}, ...}}}

    ``checks`` holds the checks that ran: disabled ones (policy ``"off"``) are absent, and so are
    the pixel checks of an image that does not decode (its ``decodes`` entry says why).
    ``action`` is the decision; the object moves only in :func:`apply_policies`. A record whose
    object is already at its quarantine location (a re-run) is read from there and carries
    ``quarantinedURI``.
    """
    config = config or QAConfig()
    items = validated_records(records, config)
    require_pillow()
    labels = [image_label(index, record) for index, record in enumerate(items)]
    results: list[dict[str, checks.CheckResult]] = []
    hashes: list[int | None] = []
    found_at: list[str | None] = []
    for record in items:
        data, location, read_error = _read(record, config)
        max_pixels = allowed_pixels(record.get("requested"))
        facts = measure(data, max_pixels) if data is not None else ImageFacts(error=read_error)
        results.append(_image_checks(record, facts, None if data is None else len(data), config))
        hashes.append(facts.dhash)
        found_at.append(location)
    if config.enabled("near_duplicate"):
        for result, duplicate in zip(
            results, checks.near_duplicates(hashes, labels, config.max_duplicate_distance), strict=True
        ):
            if duplicate is not None:
                result["near_duplicate"] = duplicate
    return [
        _verdict(record, result, location, config)
        for record, result, location in zip(items, results, found_at, strict=True)
    ]


def validated_records(records: Iterable[Mapping[str, Any]], config: QAConfig) -> list[Mapping[str, Any]]:
    """
    The records as a list; every problem of every record reported at once, with the fix.

    ``records`` may also be a :class:`~airflow_provider_bfl.storage.manifest.ManifestRef`: the
    manifest's records are read (through ``config.conn_id``, else the ref's connection).
    """
    from airflow_provider_bfl.storage import manifest  # here: importing the qa package stays light

    if manifest.is_manifest_ref(records):
        records = manifest.iter_records(records, conn_id=config.conn_id, error=QAInputError)
    if records is None or isinstance(records, str | bytes | Mapping):
        raise QAInputError(
            f"images: got {type(records).__name__}; expected a list of landed image records "
            "(the landing task's output)",
            parameter="images",
        )
    items = list(records)
    problems: list[str] = []
    for index, record in enumerate(items):
        if not isinstance(record, Mapping):
            problems.append(
                f"#{index + 1}: got {type(record).__name__}, expected a landed image record (dict)"
            )
            continue
        uri = record.get("storedURI")
        if not isinstance(uri, str) or not uri:
            problems.append(f"{image_label(index, record)}: no storedURI (where the image bytes are)")
        requested = record.get("requested")
        requested = requested if isinstance(requested, Mapping) else {}
        if config.enabled("format") and requested.get("outputFormat") not in checks.PILLOW_FORMATS:
            problems.append(
                f"{image_label(index, record)}: requested.outputFormat is {requested.get('outputFormat')!r}, "
                f"the format check needs one of {', '.join(sorted(checks.PILLOW_FORMATS))} (or format='off')"
            )
        if config.enabled("dimensions") and not all(
            isinstance(requested.get(key), int) for key in ("width", "height")
        ):
            problems.append(
                f"{image_label(index, record)}: requested.width/height are missing, the dimensions check "
                "needs them (or dimensions='off')"
            )
    if problems:
        raise QAInputError(
            f"{len(problems)} problem(s) in {len(items)} image record(s): " + "; ".join(problems[:20]),
            parameter="images",
        )
    return items


def _read(record: Mapping[str, Any], config: QAConfig) -> tuple[bytes | None, str | None, str]:
    """``(bytes, quarantine URI if read from there, error)``: the stored object, else its quarantined copy."""
    stored = record["storedURI"]
    try:
        return storage.read_bytes(stored, config.conn_id), None, ""
    except FileNotFoundError as exc:
        missing: Exception = exc
    except Exception as exc:  # credentials, permissions, network: reported per image, not raised
        return None, None, f"cannot read {stored}: {type(exc).__name__}: {exc}"
    candidates = [record.get("quarantinedURI"), _quarantine_uri(record, config)]
    for candidate in dict.fromkeys(c for c in candidates if isinstance(c, str)):
        try:
            data = storage.read_bytes(candidate, config.conn_id)
        except Exception:  # absent there too: report the original error below
            continue
        log.info("%s is already in quarantine at %s (an earlier run moved it)", stored, candidate)
        return data, candidate, ""
    return None, None, f"cannot read {stored}: {type(missing).__name__}: {missing}"


def _quarantine_uri(record: Mapping[str, Any], config: QAConfig) -> str | None:
    try:
        return storage.quarantine_uri(record["storedURI"], record.get("taskUUID"), config.quarantine_prefix)
    except QAInputError:
        return None


def _image_checks(
    record: Mapping[str, Any], facts: ImageFacts, size: int | None, config: QAConfig
) -> dict[str, checks.CheckResult]:
    requested = record.get("requested") or {}
    ran: dict[str, checks.CheckResult] = {}
    if facts.not_decoded is not None and config.enabled("decodes") and not config.enabled("dimensions"):
        ran["decodes"] = checks.CheckResult(False, facts.not_decoded)
    elif config.enabled("decodes") and facts.not_decoded is None:
        ran["decodes"] = checks.decodes(facts)
    # An image declaring more pixels than requested is judged from its header: the dimensions
    # check fails it without a decode (and with that check off, decodes says why it was not run).
    if facts.header_read:
        if config.enabled("format"):
            ran["format"] = checks.format_matches(facts, requested["outputFormat"])
        if config.enabled("dimensions"):
            ran["dimensions"] = checks.dimensions(facts, requested["width"], requested["height"])
    if facts.decoded and config.enabled("not_blank"):
        ran["not_blank"] = checks.not_blank(facts, config.min_stddev, config.max_dominant_share)
    if size is not None and config.enabled("file_size"):
        ran["file_size"] = checks.file_size(size, config.min_bytes, config.max_bytes)
    if config.enabled("nsfw"):
        ran["nsfw"] = checks.nsfw(record)
    return ran


def _verdict(
    record: Mapping[str, Any], results: dict[str, checks.CheckResult], location: str | None, config: QAConfig
) -> dict[str, Any]:
    ordered = {name: results[name] for name in CHECKS if name in results}
    failed = [name for name, result in ordered.items() if not result.ok]
    severities = sorted(POLICIES.index(config.policy(name)) for name in failed)
    action = ACTION_OF_POLICY[POLICIES[severities[0]]] if severities else "kept"
    verdict = {key: value for key, value in record.items() if key not in ("qa", "quarantinedURI")}
    if location is not None:
        verdict["quarantinedURI"] = location
        if action != "quarantined":
            log.warning(
                "%s lives in quarantine (%s) from an earlier run but is now %s; it stays there",
                record["storedURI"],
                location,
                action,
            )
    verdict["qa"] = {
        "passed": action == "kept",
        "action": action,
        "reasons": [f"{name}: {ordered[name].detail}" for name in failed],
        "checks": {name: result.to_json() for name, result in ordered.items()},
    }
    return verdict
