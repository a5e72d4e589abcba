"""The operator's extra link: straight to the first generated image."""

from __future__ import annotations

from typing import TYPE_CHECKING

from airflow.providers.common.compat.sdk import BaseOperatorLink, XCom

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator
    from airflow.sdk.types import TaskInstanceKey

#: XCom key under which the operator records the link target.
IMAGE_LINK_XCOM_KEY = "bfl_image_url"


class BflImageLink(BaseOperatorLink):
    name = "FLUX image"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        url = XCom.get_value(key=IMAGE_LINK_XCOM_KEY, ti_key=ti_key)
        return url if isinstance(url, str) else ""
