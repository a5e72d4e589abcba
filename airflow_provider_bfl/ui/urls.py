"""
Where the gallery lives: one place for every URL the plugin serves and every link that points at it.

Paths are relative to the api-server's root (``[api] base_url``'s path is prepended by
:func:`under_base`), so the extra link, the review body and the plugin's own pages agree.
"""

from __future__ import annotations

from urllib.parse import quote, urlsplit

#: Where the plugin's FastAPI app is mounted in the api-server.
PREFIX = "/bfl-gallery"


def _q(value: str) -> str:
    return quote(value, safe="")


def task_instance_page(dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> str:
    return f"{PREFIX}/ti/{_q(dag_id)}/{_q(run_id)}/{_q(task_id)}/{map_index}"


def run_page(dag_id: str, run_id: str) -> str:
    return f"{PREFIX}/run/{_q(dag_id)}/{_q(run_id)}"


def image(dag_id: str, run_id: str, image_id: str) -> str:
    """The full-size image, read from where it was landed."""
    return f"{PREFIX}/image/{_q(dag_id)}/{_q(run_id)}/{_q(image_id)}"


def thumbnail(dag_id: str, run_id: str, image_id: str) -> str:
    return f"{PREFIX}/thumb/{_q(dag_id)}/{_q(run_id)}/{_q(image_id)}"


def under_base(path: str, base_url: str | None = None) -> str:
    """
    ``path`` below the path of ``[api] base_url`` (``/airflow`` behind a proxy, empty by default).

    Root-relative on purpose: the browser keeps the host it already uses (and its login cookie).
    """
    if base_url is None:
        from airflow.configuration import conf

        base_url = conf.get("api", "base_url", fallback="") or ""
    return urlsplit(base_url).path.rstrip("/") + path
