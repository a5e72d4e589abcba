"""The operator's extra link: the task instance's page in the image gallery (never an expiring URL)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from airflow.providers.common.compat.sdk import BaseOperatorLink

from airflow_provider_bfl.ui import urls

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator
    from airflow.sdk.types import TaskInstanceKey


class BflImageLink(BaseOperatorLink):
    name = "FLUX images"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        return urls.under_base(
            urls.task_instance_page(ti_key.dag_id, ti_key.run_id, ti_key.task_id, ti_key.map_index)
        )
