"""
The gallery's FastAPI app, mounted by the api-server at :data:`~airflow_provider_bfl.ui.urls.PREFIX`.

Every route names a DAG, and every route first asks Airflow's auth manager whether the caller (the
UI's session cookie or a bearer token, read exactly as the REST API reads them) may read that
DAG's XCom: no token is 401, a token without access is 403. Images are found by their id in the
run's records, never by a path from the request, so nothing outside the records can be named
(404). Bytes are read from where the records say they were landed, with
``[bfl] gallery_storage_conn_id`` for object stores.
"""

from __future__ import annotations

from typing import Annotated, Any

from airflow.api_fastapi.core_api.security import get_user
from fastapi import Depends, FastAPI, HTTPException, Query, Response
from fastapi.responses import HTMLResponse

from airflow_provider_bfl.ui import page, records, thumbnails

#: For pages: no script at all, images only from the api-server, framed only by the Airflow UI.
PAGE_CSP = "default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; frame-ancestors 'self'"
#: Image ids are immutable (one id, one stored object), so the browser may keep them.
IMAGE_CACHE = "private, max-age=86400"

_MAGIC = ((b"\x89PNG\r\n\x1a\n", "image/png"), (b"\xff\xd8\xff", "image/jpeg"))


def authorized(dag_id: str, user: Annotated[Any, Depends(get_user)]) -> str:
    """``dag_id`` if the caller may read its task instances' XCom, else 403."""
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity, DagDetails

    if not get_auth_manager().is_authorized_dag(
        method="GET", access_entity=DagAccessEntity.XCOM, details=DagDetails(id=dag_id), user=user
    ):
        raise HTTPException(status_code=403, detail=f"Not allowed to read the images of DAG {dag_id!r}")
    return dag_id


AuthorizedDag = Annotated[str, Depends(authorized)]


def _html(body: str) -> HTMLResponse:
    return HTMLResponse(
        body, headers={"Content-Security-Policy": PAGE_CSP, "X-Content-Type-Options": "nosniff"}
    )


def _find(run: records.RunRecords, image_id: str) -> records.GalleryImage:
    entry = run.find(image_id)
    if entry is None:
        raise HTTPException(status_code=404, detail="No such image in this run's records")
    return entry


def _first_readable(entry: records.GalleryImage, read: Any) -> bytes:
    for uri in entry.locations():
        try:
            return bytes(read(uri))
        except FileNotFoundError:
            continue
    raise HTTPException(status_code=404, detail="The image is no longer where its records say it was landed")


def _media_type(data: bytes) -> str:
    for magic, media_type in _MAGIC:
        if data.startswith(magic):
            return media_type
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return "application/octet-stream"


def create_app() -> FastAPI:
    app = FastAPI(title="FLUX image gallery", docs_url=None, redoc_url=None, openapi_url=None)
    run_records = records.RunRecordsCache(records.read_xcom_records, records.xcom_stamp).get

    @app.get("/run/{dag_id}/{run_id}", response_class=HTMLResponse)
    def run_gallery(dag_id: AuthorizedDag, run_id: str, page_number: int = Query(1, alias="page")) -> Any:
        images = run_records(dag_id, run_id).images()
        title = f"{dag_id} · {run_id}"
        return _html(page.render(title, images, records.totals(images), dag_id, run_id, page_number))

    @app.get("/ti/{dag_id}/{run_id}/{task_id}/{map_index}", response_class=HTMLResponse)
    def task_instance_gallery(
        dag_id: AuthorizedDag,
        run_id: str,
        task_id: str,
        map_index: int,
        page_number: int = Query(1, alias="page"),
    ) -> Any:
        images = records.gallery_images(
            run_records(dag_id, run_id).sets, task_id=task_id, map_index=map_index
        )
        label = task_id if map_index < 0 else f"{task_id}[{map_index}]"
        title = f"{dag_id} · {run_id} · {label}"
        return _html(page.render(title, images, records.totals(images), dag_id, run_id, page_number))

    @app.get("/image/{dag_id}/{run_id}/{image_id}")
    def full_image(dag_id: AuthorizedDag, run_id: str, image_id: str) -> Response:
        from airflow_provider_bfl.qa.storage import read_bytes

        conn_id = records.storage_conn_id()
        data = _first_readable(
            _find(run_records(dag_id, run_id), image_id), lambda uri: read_bytes(uri, conn_id)
        )
        media_type = _media_type(data)
        headers = {"Cache-Control": IMAGE_CACHE, "X-Content-Type-Options": "nosniff"}
        if media_type == "application/octet-stream":
            headers["Content-Disposition"] = "attachment"
        return Response(data, media_type=media_type, headers=headers)

    @app.get("/thumb/{dag_id}/{run_id}/{image_id}")
    def thumbnail(dag_id: AuthorizedDag, run_id: str, image_id: str) -> Response:
        conn_id = records.storage_conn_id()
        entry = _find(run_records(dag_id, run_id), image_id)
        try:
            data = _first_readable(entry, lambda uri: thumbnails.cached_thumbnail(uri, conn_id))
        except OSError as exc:  # Pillow cannot read it: the page shows the tile without a picture
            raise HTTPException(status_code=422, detail=f"Cannot make a thumbnail: {exc}") from None
        return Response(
            data,
            media_type=thumbnails.CONTENT_TYPE,
            headers={"Cache-Control": IMAGE_CACHE, "X-Content-Type-Options": "nosniff"},
        )

    return app
