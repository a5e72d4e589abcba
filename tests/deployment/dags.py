"""The DAG files the deployment parses: one DAG per scenario, written into its DAGs folder at start-up.

They are ordinary user DAGs: the provider's operator and sensor with the ``bfl_default`` connection
(``bfl_tight`` where a small retry budget is the point), which the deployment's processes receive as
``AIRFLOW_CONN_*`` environment variables pointing at the emulator.
"""

from __future__ import annotations

import os

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
# The production-shaped topology's own scenarios (see test_production.py).
MANY_TRIGGERS = "bfl_deploy_many_triggers"
MANY_TRIGGERS_PROBE = "bfl_deploy_many_triggers_probe"
LANDING_CRASH = "bfl_deploy_landing_crash"
DB_RESTART = "bfl_deploy_db_restart"
BIG_RUN = "bfl_deploy_big_run"

#: Scenario sizes (``make reliability`` runs the defaults; the environment can shrink them for a try).
TRIGGER_COUNT = int(os.environ.get("BFL_DEPLOYMENT_TRIGGERS", "500"))
#: The same DAG with this many tasks first measures how fast the deployment defers right now.
PROBE_COUNT = 48
BIG_RUN_TASKS = int(os.environ.get("BFL_DEPLOYMENT_BIG_RUN_TASKS", "100"))
#: Each task of the big run: 4 prompts x 5 results = 20 images.
BIG_RUN_PROMPTS, BIG_RUN_RESULTS = 4, 5
BIG_RUN_IMAGES = BIG_RUN_TASKS * BIG_RUN_PROMPTS * BIG_RUN_RESULTS
#: The pool that bounds how many big-run tasks submit (run in a worker slot) at once.
SUBMISSION_POOL, SUBMISSION_SLOTS = "bfl_submissions", 4
#: The landing batch: 12 prompts x 5 results, landed one image at a time.
LANDING_PROMPTS, LANDING_RESULTS = 12, 5
LANDING_IMAGES = LANDING_PROMPTS * LANDING_RESULTS
LANDING_BUCKET, LANDING_PREFIX = "bfl-landing", "landed"

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


def _many_triggers(count: int) -> str:
    return f"""
with DAG(DAG_ID, max_active_tasks={count}, **ARGS) as dag:
    BflImageInferenceOperator.partial(
        task_id="generate", width=256, height=256, deferrable=True, bfl_conn_id="bfl_calm",
    ).expand(positive_prompt=[f"catalogue item {{i}}, white background" for i in range({count})])
"""


_PRODUCTION_BODIES = {
    MANY_TRIGGERS: _many_triggers(TRIGGER_COUNT),
    MANY_TRIGGERS_PROBE: _many_triggers(PROBE_COUNT),
    LANDING_CRASH: f"""
with DAG(DAG_ID, **ARGS) as dag:
    BflImageInferenceOperator(
        task_id="land", prompts=[f"a product shot, angle {{i}}" for i in range({LANDING_PROMPTS})],
        number_results={LANDING_RESULTS}, width=256, height=256, deferrable=False,
        destination="s3://{LANDING_BUCKET}/{LANDING_PREFIX}",
        destination_conn_id="bfl_s3", landing_concurrency=1,
        retries=2, retry_delay=datetime.timedelta(seconds=1),
    )
""",
    DB_RESTART: """
with DAG(DAG_ID, **ARGS) as dag:
    for name in ("deferred_a", "deferred_b"):
        BflImageInferenceOperator(
            task_id=name, positive_prompt=f"a {name} ceramic bowl", number_results=2,
            width=256, height=256, deferrable=True,
            retries=3, retry_delay=datetime.timedelta(seconds=2),
        )
    BflImageInferenceOperator(
        task_id="in_worker", positive_prompt="a pewter jug", width=256, height=256, deferrable=False,
        retries=3, retry_delay=datetime.timedelta(seconds=2),
    )
""",
    BIG_RUN: f"""
with DAG(DAG_ID, max_active_tasks=64, **ARGS) as dag:
    BflImageInferenceOperator.partial(
        task_id="batch", width=256, height=256, number_results={BIG_RUN_RESULTS}, deferrable=True,
        bfl_conn_id="bfl_calm", pool="{SUBMISSION_POOL}",
    ).expand(prompts=[
        [f"catalogue page {{page}}, item {{item}}" for item in range({BIG_RUN_PROMPTS})]
        for page in range({BIG_RUN_TASKS})
    ])
""",
}

ALL_DAG_IDS = list(_BODIES)
PRODUCTION_DAG_IDS = list(_PRODUCTION_BODIES)


def dag_files(production: bool = False) -> dict[str, str]:
    """``{file name: source}`` for the DAGs folder (with the production-shaped scenarios' DAGs too)."""
    bodies = {**_BODIES, **(_PRODUCTION_BODIES if production else {})}
    return {f"{dag_id}.py": f"{HEADER}\nDAG_ID = {dag_id!r}\n{body}" for dag_id, body in bodies.items()}
