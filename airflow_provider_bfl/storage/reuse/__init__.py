"""
Re-using landed images: pay only for the requests that changed.

- :func:`fingerprint` names a request's generation-relevant content; :func:`reusable` says
  whether a request may be answered by an earlier image at all (pure, no I/O).
- :class:`ReuseIndex` keeps, in the destination itself, which landed images answer which
  fingerprint, and gives racing runs one taskUUID per fingerprint, so at most one pays;
  :func:`rebuild_from_manifests` restores it from the manifests of what was landed.
"""

from airflow_provider_bfl.storage.reuse.entries import Claim, Entry
from airflow_provider_bfl.storage.reuse.fingerprints import (
    FINGERPRINT_VERSION,
    NOT_GENERATION,
    fingerprint,
    reusable,
    reuse_mode,
)
from airflow_provider_bfl.storage.reuse.index import Found, ReuseIndex
from airflow_provider_bfl.storage.reuse.manifests import rebuild_from_manifests

__all__ = [
    "FINGERPRINT_VERSION",
    "NOT_GENERATION",
    "Claim",
    "Entry",
    "Found",
    "ReuseIndex",
    "fingerprint",
    "rebuild_from_manifests",
    "reusable",
    "reuse_mode",
]
