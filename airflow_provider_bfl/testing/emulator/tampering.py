"""Hostile answers built from correct ones: what a buggy or compromised API could send back.

The ``foreign_result`` and ``bad_image_url`` faults process a request normally and then pass the
answer through one of these functions, so everything else about the answer stays realistic.
"""

from __future__ import annotations

import dataclasses
import functools
import uuid
import zlib
from typing import Any
from urllib.parse import urlsplit

from airflow_provider_bfl.testing.emulator.api import ApiResponse
from airflow_provider_bfl.testing.emulator.validation import TASK_TYPE


def _data_items(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The ``data`` items of a body as a list (also when ``data_as_object`` sent a single object)."""
    data = body.get("data")
    if data is None:
        return []
    return [data] if isinstance(data, dict) else list(data)


def with_foreign_result(response: ApiResponse, origin: str, task_uuid: str | None = None) -> ApiResponse:
    """The answer plus one finished image of a task the request never asked about."""
    if response.status != 200:
        return response
    foreign = task_uuid or str(uuid.uuid4())
    image_uuid = str(uuid.uuid4())
    item = {
        "taskType": TASK_TYPE,
        "taskUUID": foreign,
        "status": "success",
        "imageUUID": image_uuid,
        "imageURL": f"{origin}/images/{image_uuid}.jpg",
        "seed": 1,
    }
    body = {**response.body, "data": [*_data_items(response.body), item]}
    return dataclasses.replace(response, body=body)


def with_bad_image_urls(response: ApiResponse, scheme: str) -> ApiResponse:
    """The answer with every ``imageURL`` moved to another scheme (``ftp://``, ``file://``...)."""
    if response.status != 200 or "data" not in response.body:
        return response
    items = [
        {**item, "imageURL": urlsplit(item["imageURL"])._replace(scheme=scheme).geturl()}
        if isinstance(item.get("imageURL"), str)
        else item
        for item in _data_items(response.body)
    ]
    data: Any = items[0] if isinstance(response.body["data"], dict) else items
    return dataclasses.replace(response, body={**response.body, "data": data})


def _with_items(response: ApiResponse, change: Any) -> ApiResponse:
    if response.status != 200 or "data" not in response.body:
        return response
    items = [change(item) for item in _data_items(response.body)]
    data: Any = items[0] if isinstance(response.body["data"], dict) else items
    return dataclasses.replace(response, body={**response.body, "data": data})


def without_image_uuids(response: ApiResponse) -> ApiResponse:
    """The answer with ``imageUUID`` removed from every result."""
    return _with_items(response, lambda item: {k: v for k, v in item.items() if k != "imageUUID"})


def with_nan_costs(response: ApiResponse) -> ApiResponse:
    """The answer with every result's ``cost`` set to NaN (sent as the bare JSON token ``NaN``)."""
    return _with_items(response, lambda item: {**item, "cost": float("nan")} if "imageUUID" in item else item)


def nested_json(depth: int) -> bytes:
    return b'{"data": ' + b"[" * depth + b"]" * depth + b"}"


@functools.lru_cache(maxsize=4)
def gzip_bomb(size: int) -> bytes:
    """A gzip body that inflates to about ``size`` bytes (a thousandth of that on the wire).

    After a full flush the compressor's output for another megabyte of spaces is always the same
    segment, so it is made once and repeated; no trailer (a client reading to the end has lost).
    """
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    start = compressor.compress(b'{"data": [], "pad": "') + compressor.flush(zlib.Z_FULL_FLUSH)
    segment = compressor.compress(b" " * (1 << 20)) + compressor.flush(zlib.Z_FULL_FLUSH)
    return start + segment * max(1, size >> 20)
