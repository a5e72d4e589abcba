"""
The Airflow plugin: the gallery app, and a tab on every task instance and DAG run page.

Cheap to import (plugins load in every Airflow process, DAG processors and workers included): the
FastAPI app is built on its first request in the api-server.
"""

from __future__ import annotations

from typing import Any

from airflow.plugins_manager import AirflowPlugin

from airflow_provider_bfl.ui import urls


class LazyGalleryApp:
    """An ASGI app that builds :func:`~airflow_provider_bfl.ui.app.create_app` on first use."""

    def __init__(self) -> None:
        self._app: Any = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if self._app is None:
            from airflow_provider_bfl.ui.app import create_app

            self._app = create_app()
        await self._app(scope, receive, send)

    def __repr__(self) -> str:
        return "airflow_provider_bfl.ui.app:create_app"


class BflGalleryPlugin(AirflowPlugin):
    """The UI fills in ``{DAG_ID}``, ``{RUN_ID}``, ``{TASK_ID}`` and ``{MAP_INDEX}`` of each view's href."""

    name = "bfl_image_gallery"
    fastapi_apps = [{"app": LazyGalleryApp(), "url_prefix": urls.PREFIX, "name": "FLUX image gallery"}]
    external_views = [
        {
            "name": "Images",
            # relative: the UI resolves it against its base URL
            "href": f"{urls.PREFIX[1:]}/ti/{{DAG_ID}}/{{RUN_ID}}/{{TASK_ID}}/{{MAP_INDEX}}",
            "destination": "task_instance",
            "url_route": "bfl-images-task-instance",
            "category": "FLUX",
        },
        {
            "name": "Images",
            "href": f"{urls.PREFIX[1:]}/run/{{DAG_ID}}/{{RUN_ID}}",
            "destination": "dag_run",
            "url_route": "bfl-images-dag-run",
            "category": "FLUX",
        },
    ]
