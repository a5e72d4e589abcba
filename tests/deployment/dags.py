"""The DAG files the deployment parses: one DAG per scenario, written into its DAGs folder at start-up.

They are ordinary user DAGs: the provider's operator and sensor with the ``bfl_default`` connection
(``bfl_tight`` where a small retry budget is the point), which the deployment's processes receive as
``AIRFLOW_CONN_*`` environment variables pointing at the emulator.
"""

from __future__ import annotations

HEADER = """\
import datetime

import pendulum
from airflow.sdk import DAG

from airflow_provider_bfl.operators.bfl import BflImageInferenceOperator
from airflow_provider_bfl.sensors.bfl import BflImageInferenceSensor

ARGS = dict(schedule=None, start_date=pendulum.datetime(2026, 1, 1), catchup=False)
"""

DEFERRABLE = "bfl_deploy_deferrable"
TRIGGERER_CRASH = "bfl_deploy_triggerer_crash"
WORKER_CRASH = "bfl_deploy_worker_crash"
FAULT_STORM = "bfl_deploy_fault_storm"
RETRY_BUDGET = "bfl_deploy_retry_budget"
API_FAILURES = "bfl_deploy_api_failures"
USER_KILL = "bfl_deploy_user_kill"

#: Prompts of the API-failure batch; the emulator fails prompts carrying these markers.
FAILURE_BATCH = [
    "a calm lake at dawn, film photo",
    "moderation-marker portrait in a studio",
    "a quiet pine forest in fog",
    "fail-marker ceramic vase on a plinth",
]

_BODIES = {
    DEFERRABLE: """
with DAG(DAG_ID, params={"subject": "brass desk lamp"}, **ARGS) as dag:
    hero = BflImageInferenceOperator(
        task_id="hero",
        positive_prompt="Studio photo of a {{ params.subject }}, seamless grey background",
        width=512, height=512, seed=42, number_results=2, deferrable=True,
    )
    variants = BflImageInferenceOperator(
        task_id="variants",
        prompts=["{{ params.subject }} front view", "{{ params.subject }} side view"],
        width=256, height=256, wait_for_completion=False,
    )
    wait_variants = BflImageInferenceSensor(
        task_id="wait_variants", task_uuids=variants.output, deferrable=True, poll_interval=0.25, timeout=300,
    )
""",
    TRIGGERER_CRASH: """
with DAG(DAG_ID, **ARGS) as dag:
    BflImageInferenceOperator(
        task_id="batch", prompts=["a red kettle", "a green kettle", "a blue kettle"],
        width=256, height=256, deferrable=True,
    )
    BflImageInferenceOperator(
        task_id="pair", positive_prompt="a copper teapot", number_results=2,
        width=256, height=256, deferrable=True,
    )
    BflImageInferenceOperator(
        task_id="single", positive_prompt="a porcelain cup", width=256, height=256, deferrable=True,
    )
""",
    WORKER_CRASH: """
with DAG(DAG_ID, **ARGS) as dag:
    BflImageInferenceOperator(
        task_id="in_worker", positive_prompt="a walnut bookshelf, catalogue photo", number_results=2,
        width=256, height=256, deferrable=False,
        retries=2, retry_delay=datetime.timedelta(seconds=1),
    )
""",
    FAULT_STORM: """
with DAG(DAG_ID, **ARGS) as dag:
    BflImageInferenceOperator(
        task_id="batch", prompts=[f"catalogue item {i}, white background" for i in range(6)],
        width=256, height=256, deferrable=True,
    )
""",
    RETRY_BUDGET: """
with DAG(DAG_ID, **ARGS) as dag:
    rate_limited = BflImageInferenceOperator(
        task_id="rate_limited", positive_prompt="a linen armchair", width=256, height=256,
        bfl_conn_id="bfl_tight", deferrable=False,
    )
    disconnected = BflImageInferenceOperator(
        task_id="disconnected", positive_prompt="an oak side table", width=256, height=256,
        bfl_conn_id="bfl_tight", deferrable=False, trigger_rule="all_done",
    )
    rate_limited >> disconnected
""",
    API_FAILURES: f"""
with DAG(DAG_ID, **ARGS) as dag:
    BflImageInferenceOperator(
        task_id="deferred_batch", prompts={FAILURE_BATCH!r}, width=256, height=256, deferrable=True,
    )
    BflImageInferenceOperator(
        task_id="worker_batch", prompts={FAILURE_BATCH!r}, width=256, height=256, deferrable=False,
    )
""",
    USER_KILL: """
with DAG(DAG_ID, **ARGS) as dag:
    BflImageInferenceOperator(
        task_id="marked_failed", positive_prompt="a marble bust", width=256, height=256, deferrable=True,
    )
    BflImageInferenceOperator(
        task_id="cleared", positive_prompt="a glass paperweight", width=256, height=256, deferrable=True,
    )
""",
}

ALL_DAG_IDS = list(_BODIES)


def dag_files() -> dict[str, str]:
    """``{file name: source}`` for the DAGs folder."""
    return {f"{dag_id}.py": f"{HEADER}\nDAG_ID = {dag_id!r}\n{body}" for dag_id, body in _BODIES.items()}
