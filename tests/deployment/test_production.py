"""
What only the production-shaped topology (``celery``) can show: two triggerers that adopt each
other's triggers, Celery workers with no shared disk, a PostgreSQL that goes away, and a run of
thousands of images held to a pool. Sizes in :mod:`tests.deployment.dags`; figures beyond the
billing columns go to the scenario's ``details`` (the second table of ``make reliability``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from airflow_provider_bfl.storage.manifest import MANIFEST_FOLDER
from tests.deployment import dags
from tests.deployment.airflow_api import wait_for
from tests.deployment.deployment import TASK_HEARTBEAT_TIMEOUT, Deployment
from tests.deployment.loop_blocks import BLOCK_THRESHOLD, blocks_in, slow_callbacks
from tests.deployment.scenario import Scenario

pytestmark = [
    pytest.mark.deployment,
    pytest.mark.topology("celery"),
    pytest.mark.repeat(1),  # heavy: once per `make reliability`, whatever RUNS says
    pytest.mark.timeout(2400),
]


class Sampler:
    """Calls ``probe`` every ``interval`` seconds in a thread; keeps every sample (time, value)."""

    def __init__(self, probe: Callable[[], object], interval: float = 1.0) -> None:
        self.probe = probe
        self.interval = interval
        self.samples: list[tuple[float, object]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.samples.append((time.monotonic(), self.probe()))
            except Exception as exc:  # a DB that is restarting: keep sampling
                self.samples.append((time.monotonic(), exc))
            self._stop.wait(self.interval)

    @contextmanager
    def running(self) -> Iterator[Sampler]:
        self._thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            self._thread.join(timeout=30)


@contextmanager
def control_loop_lag() -> Iterator[Callable[[], float]]:
    """
    An idle asyncio loop in a process of its own (:mod:`tests.deployment.loop_lag`) while the block
    runs; yields a function giving its worst lag so far (seconds), Airflow's measure of a blocked
    triggerer loop applied to a loop that runs nothing.
    """
    script = Path(__file__).with_name("loop_lag.py")
    process = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    output = process.stdout
    assert output is not None
    lags: list[float] = []
    reader = threading.Thread(target=lambda: lags.extend(float(line) for line in output), daemon=True)
    reader.start()
    try:
        yield lambda: max(lags, default=0.0)
    finally:
        process.terminate()
        process.wait(timeout=10)
        reader.join(timeout=10)


@contextmanager
def failed_on_error(scenario: Scenario, dag_id: str, run_id: str) -> Iterator[None]:
    """A run whose scenario failed is set failed: hundreds of its tasks must not weigh on the next scenarios."""
    try:
        yield
    except BaseException:
        scenario.api.set_run_state(dag_id, run_id, "failed")
        raise


# -- 7 ---------------------------------------------------------------------------------------------
#: Seconds the survivor may take to adopt the victim's triggers (its health check notices in ~6 s),
#: and how long the test then watches that nothing moves again.
ADOPTION_BUDGET, ADOPTION_HOLD = 180.0, 10.0
#: The longest the scenario waits for every task to defer. Starting a task costs ~2 CPU-seconds
#: across the deployment, so on a shared 2-core machine 500 deferrals take 10-20 minutes; a
#: machine that would need longer gets the measured rate in the failure instead of a bare timeout.
MAX_DEFERRAL = 2400.0
#: Generations of the probe run outlive its deferral (a resuming task would slow the ones deferring).
PROBE_LATENCY = 90.0


def measure_deferral_rate(scenario: Scenario, deployment: Deployment) -> float:
    """
    Deferrals per second this deployment manages right now, from a run of the probe DAG (the same
    task as the scenario's, ``PROBE_COUNT`` times): the creation times of its triggers, after the
    first wave (one task per slot, which may meet pool processes that never ran a task yet).
    """
    dag_id, count, wave = dags.MANY_TRIGGERS_PROBE, dags.PROBE_COUNT, deployment.task_slots
    scenario.emulator.configure(latency=PROBE_LATENCY)
    run_id = scenario.trigger(dag_id)
    scenario.expect(generations=count, images=count)
    created: dict[int, float] = {}

    def every_trigger_seen() -> bool:
        created.update(deployment.trigger_created(dag_id, run_id))  # rows go once their trigger fires
        return len(created) >= count

    wait_for(f"the {count} probe tasks to defer", every_trigger_seen, 900.0, interval=1.0)
    run = scenario.api.wait_for_run(dag_id, run_id, 900.0)
    assert run["state"] == "success", deployment.ti_states(dag_id, run_id)
    times = sorted(created.values())
    return (count - wave) / max(times[-1] - times[wave - 1], 1.0)


@pytest.mark.scenario("7 triggerer SIGKILL, 500 deferred, other adopts")
@pytest.mark.timeout(6000)  # the probe, up to MAX_DEFERRAL, adoption, then every task resuming
def test_killed_triggerers_triggers_are_adopted_once_by_the_other(
    scenario: Scenario, deployment: Deployment, repetition: int
) -> None:
    count = dags.TRIGGER_COUNT
    dag_id = dags.MANY_TRIGGERS
    rate = measure_deferral_rate(scenario, deployment)
    probed = set(scenario.tasks())
    projected = count / rate
    # The rate moves with the machine's other load (and the probe's resuming tasks already slowed
    # it down): a third more, plus a wave of pool processes that never ran a task.
    deferral_budget = 1.3 * projected + 120.0
    if deferral_budget > MAX_DEFERRAL:
        pytest.fail(
            f"this deployment defers {rate * 60:.1f} tasks/min now (probe of {dags.PROBE_COUNT}, load "
            f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores): {count} deferred tasks would take "
            f"~{projected:.0f} s, over the scenario's {MAX_DEFERRAL:.0f} s"
        )
    # Every generation outlives the deferral of all, the adoption and the hold after it: the
    # latency is fixed when a generation is accepted, and the first is accepted at the start.
    latency = deferral_budget + ADOPTION_BUDGET + ADOPTION_HOLD + 60.0
    scenario.emulator.configure(latency=latency)
    run_id = scenario.trigger(dag_id)
    scenario.expect(generations=count, images=count)

    with failed_on_error(scenario, dag_id, run_id):

        def all_deferred() -> dict[int, int] | None:
            states = deployment.ti_states(dag_id, run_id)
            assignments = deployment.trigger_assignments()
            assigned = {tid: job for tid, job in assignments.items() if job is not None}
            return assigned if states.get("deferred") == count and len(assigned) >= count else None

        deferred_started = time.monotonic()
        before = wait_for(
            f"{count} tasks deferred and their triggers assigned "
            f"(probe: {rate * 60:.1f}/min, so ~{projected:.0f} s)",
            all_deferred,
            deferral_budget,
            interval=2.0,
            context=lambda: f"{deployment.ti_states(dag_id, run_id)}\n{deployment.tail_logs()}",
        )
        deferral_seconds = time.monotonic() - deferred_started
        scenario.detail("triggers", count)
        scenario.detail(
            "deferral rate, probe / all (tasks/min)", f"{rate * 60:.1f} / {count / deferral_seconds * 60:.1f}"
        )
        scenario.detail("deferral of all (s)", round(deferral_seconds))

        def main_tasks() -> dict[str, dict[str, int]]:
            return {uuid: counts for uuid, counts in scenario.tasks().items() if uuid not in probed}

        assert main_tasks() and all(c["images_billed"] == 0 for c in main_tasks().values())
        jobs = defaultdict(list)
        for trigger_id, job in before.items():
            jobs[job].append(trigger_id)
        # Kill the triggerer that holds the most triggers; find its service by its job's process.
        victim_job = max(jobs, key=lambda job: len(jobs[job]))
        victim = deployment.job_hostname(victim_job)  # the triggerer's service name
        assert victim in deployment.triggerers
        survivor = next(name for name in deployment.triggerers if name != victim)
        survivor_log_before = deployment.registry.services[survivor].output()
        polls_before = scenario.requests_since_start("getResponse")

        history: dict[int, list[int | None]] = {tid: [job] for tid, job in before.items()}
        sampler = Sampler(deployment.trigger_assignments, interval=1.0)
        try:
            with sampler.running(), control_loop_lag() as control_lag:
                killed_at = time.monotonic()
                deployment.crash(victim)

                def adopted() -> bool:
                    now = deployment.trigger_assignments()
                    return all(job is not None and job != victim_job for job in now.values())

                wait_for(
                    f"{survivor} to adopt {len(jobs[victim_job])} triggers",
                    adopted,
                    ADOPTION_BUDGET,
                    interval=1.0,
                )
                scenario.detail("adopted", len(jobs[victim_job]))
                scenario.detail("adoption after SIGKILL (s)", round(time.monotonic() - killed_at, 1))
                time.sleep(ADOPTION_HOLD)  # and keep them: no trigger moves again
                control_worst = control_lag()
        finally:
            deployment.restart(victim)  # the topology is whole again for the next scenarios
        for _, sample in sampler.samples:
            if isinstance(sample, dict):
                for trigger_id, job in sample.items():
                    if trigger_id in history and history[trigger_id][-1] != job:
                        history[trigger_id].append(job)

        # Each of the victim's triggers moved exactly once (victim -> survivor's job), the others never.
        survivor_jobs = {job for moves in history.values() for job in moves[1:]}
        assert len(survivor_jobs) == 1 and victim_job not in survivor_jobs, survivor_jobs
        moves = [len(jobs_seen) - 1 for jobs_seen in history.values()]
        assert moves.count(1) == len(jobs[victim_job]) and set(moves) <= {0, 1}, moves
        survivor_output = deployment.registry.services[survivor].output()[len(survivor_log_before) :]
        pauses = deployment.runner_gc_pauses(survivor)
        slow = deployment.runner_slow_callbacks(survivor)
        callbacks = slow_callbacks(slow)
        blocks = blocks_in(survivor_output, pauses, callbacks, deployment.runner_run_queue(survivor))
        scenario.detail(
            "survivor's loop blocked (warnings / worst / worst triggers' share; an idle loop's worst lag)",
            f"{len(blocks)} / {max((b.seconds for b in blocks), default=0):.2f} s / "
            f"{max((b.triggers_share for b in blocks), default=0):.2f} s; {control_worst:.2f} s",
        )
        scenario.detail(
            "survivor's blocked seconds: collecting / in Airflow's code / waiting for a CPU",
            " / ".join(
                f"{sum(getattr(b, part) for b in blocks):.2f}"
                for part in ("collecting", "in_airflow", "waiting_for_cpu")
            ),
        )
        scenario.detail(
            "survivor's full GCs since start (count / worst)",
            f"{len(pauses)} / {max((took for _, took in pauses), default=0):.2f} s",
        )
        # The adopting triggerer's event loop stayed responsive while it took the load over: no
        # warning Airflow would still give without the interpreter's full collections of the
        # triggerer's heap, Airflow's own code between trigger steps (its synchronous log lines) and
        # the time the loop's thread waited for a CPU of this loaded machine.
        held = [b for b in blocks if b.triggers_share > BLOCK_THRESHOLD]
        assert not held, (
            f"{len(held)} blocked-loop warnings beyond what full GCs, Airflow's own code and waiting "
            f"for a CPU explain: "
            f"{[(b.seconds, round(b.collecting, 2), round(b.in_airflow, 2), round(b.waiting_for_cpu, 2)) for b in held]} "
            f"(seconds; collecting; in Airflow's code; waiting for a CPU); an idle loop on this machine "
            f"lagged up to {control_worst:.2f} s meanwhile (load {os.getloadavg()[0]:.1f}). Callbacks "
            f"over 150 ms (ended, seconds, Airflow's own): "
            f"{[(round(c.ended, 2), c.seconds, c.airflows_own) for c in callbacks][-40:]}\n"
            f"{survivor_output[-3000:]}\nThe runner's callbacks over 150 ms, with where they were:\n{slow[-12000:]}"
        )
        # ... and its polls kept going for every adopted wait.
        assert scenario.requests_since_start("getResponse") > polls_before

        # The generations complete from `latency` after their acceptance on; every task then resumes,
        # about as fast as they deferred.
        run = scenario.api.wait_for_run(dag_id, run_id, latency + 1.5 * projected + 300.0)
        assert run["state"] == "success", deployment.ti_states(dag_id, run_id)
        assert deployment.ti_tries(dag_id, run_id) == {1: count}  # no task retried: the triggers just moved
        tasks = main_tasks()
        assert len(tasks) == count
        # Nothing re-submitted, every image billed once.
        assert all(c == {"submissions": 1, "accepted": 1, "images_billed": 1} for c in tasks.values())


# -- 8 ---------------------------------------------------------------------------------------------
@pytest.mark.scenario("8 Celery worker SIGKILL while landing")
def test_worker_killed_while_landing_retry_on_other_worker_lands_the_rest_once(
    scenario: Scenario, deployment: Deployment, repetition: int
) -> None:
    api = scenario.api
    dag_id, task_id = dags.LANDING_CRASH, "land"
    images = dags.LANDING_IMAGES
    scenario.emulator.configure(latency=2.0)
    downloads_at_start = scenario.emulator.counters()["image_downloads"]
    run_id = scenario.trigger(dag_id)
    scenario.expect(generations=dags.LANDING_PROMPTS, images=images)
    prefix = f"{dags.LANDING_PREFIX}/{dag_id}/"

    def stored(manifests: bool = False) -> dict[str, int]:
        """The run's objects: its images, or the manifests the task writes beside them."""
        return {
            key: size
            for key, size in deployment.s3_objects(dags.LANDING_BUCKET, prefix).items()
            if f"/{run_id}/" in key and (f"/{MANIFEST_FOLDER}/" in key) == manifests
        }

    def landed() -> dict[str, int]:
        return stored()

    wait_for("the first images to be committed", lambda: 0 < len(landed()) < images // 2, 120.0, interval=0.1)
    ti = api.task_instance(dag_id, run_id, task_id)
    assert ti["state"] == "running" and ti["try_number"] == 1
    first_worker = ti["hostname"]  # the service name (see Deployment.hostname_module)
    assert first_worker in deployment.workers
    deployment.crash(first_worker)  # the whole worker: Celery master, pool, supervisor and task
    committed = len(landed())
    downloads_at_kill = scenario.emulator.counters()["image_downloads"] - downloads_at_start
    assert 0 < committed < images

    # No one reports the killed task: the scheduler fails it once its heartbeat is overdue.
    run = api.wait_for_run(dag_id, run_id, 300.0 + TASK_HEARTBEAT_TIMEOUT)
    assert run["state"] == "success", api.describe_run(dag_id, run_id)
    ti = api.task_instance(dag_id, run_id, task_id)
    assert ti["try_number"] == 2
    deployment.restart(first_worker)
    assert ti["hostname"] in deployment.workers and ti["hostname"] != first_worker
    images_stored = landed()
    assert len(images_stored) == images and all(size > 0 for size in images_stored.values())
    assert len(stored(manifests=True)) == 1  # the finished task's manifest of every image
    downloads = scenario.emulator.counters()["image_downloads"] - downloads_at_start
    retry_downloads = downloads - downloads_at_kill
    # The retry downloaded exactly what was not committed yet: nothing committed was fetched twice.
    assert retry_downloads == images - committed, (downloads, downloads_at_kill, committed)
    tasks = scenario.tasks()
    assert len(tasks) == dags.LANDING_PROMPTS
    assert all(c["accepted"] == 1 and c["images_billed"] == dags.LANDING_RESULTS for c in tasks.values())
    log = api.wait_for_log(dag_id, run_id, task_id, 2, "Re-attached to", "Landed")
    assert f"Landed {images} image(s)" in log, log[-2000:]
    scenario.detail("images", images)
    scenario.detail("committed before SIGKILL", committed)
    scenario.detail("downloads (first try / retry)", f"{downloads_at_kill} / {retry_downloads}")


# -- 9 ---------------------------------------------------------------------------------------------
#: Seconds after the PostgreSQL restart during which processes that exited are restarted.
REVIVE_WINDOW = 60.0


@pytest.mark.scenario("9 PostgreSQL restart mid-run")
def test_metadata_db_restart_mid_run_recovers_through_retries_without_paying_twice(
    scenario: Scenario, deployment: Deployment, repetition: int
) -> None:
    api = scenario.api
    dag_id = dags.DB_RESTART
    scenario.emulator.configure(latency=20.0)
    run_id = scenario.trigger(dag_id)
    scenario.expect(generations=3, images=5)

    def in_flight() -> bool:
        tis = {ti["task_id"]: ti["state"] for ti in api.task_instances(dag_id, run_id)}
        return tis.get("deferred_a") == "deferred" and tis.get("in_worker") == "running"

    wait_for("the tasks to be deferred / running", in_flight, 120.0, interval=0.5)
    wait_for(
        "the three generations to be accepted",
        lambda: len(tasks := scenario.tasks()) == 3 and all(c["accepted"] == 1 for c in tasks.values()),
        60.0,
    )
    down_at = time.monotonic()
    deployment.restart_postgres()
    outage = time.monotonic() - down_at
    # What a supervisor would restart: whatever exits in the outage's aftermath, also late (a
    # triggerer first cleans up its triggers, which takes tens of seconds with hundreds of them).
    revived: list[str] = []
    while time.monotonic() - down_at < REVIVE_WINDOW:
        time.sleep(2.0)
        revived += deployment.revive_exited()

    run = wait_for(
        "the run to finish",
        lambda: (run := api.dag_run(dag_id, run_id))["state"] in ("success", "failed") and run,
        300.0,
        interval=1.0,
        context=lambda: api.describe_run(dag_id, run_id),
    )
    assert run["state"] == "success", api.describe_run(dag_id, run_id)
    tasks = scenario.tasks()
    assert len(tasks) == 3
    # Whatever was retried re-attached: every generation accepted and billed once.
    assert all(c["accepted"] == 1 for c in tasks.values()), tasks
    assert sorted(c["images_billed"] for c in tasks.values()) == [1, 2, 2]
    tries = {ti["task_id"]: ti["try_number"] for ti in api.task_instances(dag_id, run_id)}
    scenario.detail("outage (s)", round(outage, 1))
    scenario.detail("tries", ", ".join(f"{task}={n}" for task, n in sorted(tries.items())))
    scenario.detail("processes restarted after", ", ".join(revived) or "none")


# -- 10 --------------------------------------------------------------------------------------------
@pytest.mark.scenario("10 2,000 images, mapped, pool-limited")
def test_large_mapped_run_within_a_pool_pays_each_image_once(
    scenario: Scenario, deployment: Deployment, repetition: int
) -> None:
    api = scenario.api
    dag_id = dags.BIG_RUN
    tasks_count, images = dags.BIG_RUN_TASKS, dags.BIG_RUN_IMAGES
    api.create_pool(dags.SUBMISSION_POOL, dags.SUBMISSION_SLOTS)
    # Long enough that many tasks wait (deferred, holding no slot) while the pool admits the next.
    scenario.emulator.configure(latency=20.0)
    requests_before = scenario.emulator.counters()["requests"]
    started = time.monotonic()
    run_id = scenario.trigger(dag_id)
    scenario.expect(generations=tasks_count * dags.BIG_RUN_PROMPTS, images=images)

    sampler = Sampler(lambda: deployment.ti_states(dag_id, run_id), interval=1.0)
    with sampler.running():
        run = api.wait_for_run(dag_id, run_id, 600.0 + 3.0 * tasks_count)
    wall = time.monotonic() - started
    assert run["state"] == "success", deployment.ti_states(dag_id, run_id)
    running = [s.get("running", 0) for _, s in sampler.samples if isinstance(s, dict)]
    deferred = [s.get("deferred", 0) for _, s in sampler.samples if isinstance(s, dict)]
    # The pool held the submitting (running) tasks to its slots; waiting happened in the triggerers.
    assert running and max(running) <= dags.SUBMISSION_SLOTS, max(running)
    assert max(deferred) > dags.SUBMISSION_SLOTS
    tasks = scenario.tasks()
    assert len(tasks) == tasks_count * dags.BIG_RUN_PROMPTS
    assert all(
        c == {"submissions": 1, "accepted": 1, "images_billed": dags.BIG_RUN_RESULTS} for c in tasks.values()
    )
    assert sum(c["images_billed"] for c in tasks.values()) == images
    requests = scenario.emulator.counters()["requests"] - requests_before
    slot_seconds = sum(running) * sampler.interval
    scenario.detail("images", images)
    scenario.detail("wall time (s)", round(wall))
    scenario.detail("images per minute", round(images / wall * 60))
    scenario.detail("HTTP requests per image", round(requests / images, 3))
    scenario.detail("worker slots held (max / slot-seconds)", f"{max(running)} / {slot_seconds:.0f}")
    scenario.detail("max deferred at once", max(deferred))
