"""
``make matrix``: the unit, example-DAG, ``dag.test()`` and browser suites on the newest patch of every
Airflow minor the provider claims (3.1, 3.2, 3.3).

One virtualenv per version under ``.venv/matrix/airflow-<version>`` (re-used while ``pyproject.toml``
is unchanged), built with uv from PyPI: ``-e .[dev]`` plus ``apache-airflow==<version>`` and the pins
in :data:`PINS`. Airflow's own constraint files live on GitHub, which the build machines cannot
reach, so the resolver picks provider versions itself and what breaks is pinned here. The suites
(``tests/unit``, ``tests/testing`` and ``tests/browser``: the gallery and the review page in Chromium
against that version's api-server; not the deployment tests, which ``make reliability`` runs on the
installed version) run in each; a table is printed and written to ``tests/deployment/MATRIX.md``.

    python -m tests.deployment.matrix [--versions 3.1.8,3.2.2,3.3.2] [--minors 3.1,3.2,3.3] [--markers EXPR]

``--markers "not slow"`` leaves out the tests marked slow (benchmark smokes, 1,000-image runs,
process races), as ``make test`` does; CI runs the matrix that way to fit its time.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
VENVS = ROOT / ".venv" / "matrix"
RESULTS = Path(__file__).with_name("MATRIX.md")
MINORS = ("3.1", "3.2", "3.3")
SUITES = ("tests/unit", "tests/testing", "tests/browser")
#: Extra requirements per Airflow minor, for what the resolver gets wrong without Airflow's constraints.
PINS: dict[str, list[str]] = {
    # celery 5.7 dropped celery.backends.database.retry, which every Celery provider release imports.
    # svcs 26.2 attaches its registry to app.state itself and detaches it when one of the merged
    # (cadwyn) lifespans exits, taking the execution API's svcs_registry away before 3.3 (which gives
    # the in-process API its own registry): every dag.test() task then fails with
    # "'State' object has no attribute 'svcs_registry'".
    "3.1": ["celery<5.7", "svcs<26.2"],
    # FastAPI 0.137+ (with cadwyn 9) cannot build the execution API's TIStateUpdate union on 3.2
    # (PydanticUserError discriminator-no-field on TITerminalStatePayload); 3.3 declares this cap.
    "3.2": ["celery<5.7", "svcs<26.2", "fastapi<0.137"],
    "3.3": ["celery<5.7"],
}
#: Loaded into every suite run: backports 3.3's dag.test() fix (``context["exception"]``) to 3.1/3.2.
PLUGIN = "tests.deployment.matrix_plugin"
#: pytest's exit code when it collected nothing: not a failure of the matrix.
NO_TESTS = 5


@dataclass
class Outcome:
    version: str
    exit_code: int
    summary: str
    build_seconds: float
    test_seconds: float

    @property
    def green(self) -> bool:
        return self.exit_code in (0, NO_TESTS)


def newest_patches(minors: list[str]) -> list[str]:
    """The newest released patch of each minor, from the package index (``pip index versions``)."""
    answer = subprocess.run(
        [sys.executable, "-m", "pip", "index", "versions", "apache-airflow"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    listed = re.search(r"Available versions: (.*)", answer)
    if listed is None:
        raise RuntimeError(f"unexpected answer from pip index versions:\n{answer}")
    versions = [v.strip() for v in listed.group(1).split(",")]
    chosen = []
    for minor in minors:
        patches = [v for v in versions if re.fullmatch(rf"{re.escape(minor)}\.\d+", v)]
        if not patches:
            raise RuntimeError(f"no release of Airflow {minor} on the index")
        chosen.append(max(patches, key=lambda v: int(v.rsplit(".", 1)[1])))
    return chosen


def _fingerprint(version: str) -> str:
    pins = ",".join(PINS.get(version.rsplit(".", 1)[0], []))
    return hashlib.sha256((ROOT / "pyproject.toml").read_bytes() + pins.encode()).hexdigest()


def build(version: str) -> Path:
    """The venv for ``version``, (re)built when ``pyproject.toml`` or the pins changed."""
    venv = VENVS / f"airflow-{version}"
    stamp = venv / ".matrix-stamp"
    if stamp.exists() and stamp.read_text() == _fingerprint(version):
        return venv
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    uv = shutil.which("uv", path=str(Path(sys.executable).parent)) or "uv"
    requirements = ["-e", ".[dev]", f"apache-airflow=={version}", *PINS.get(version.rsplit(".", 1)[0], [])]
    subprocess.run(
        [uv, "pip", "install", "--quiet", "--python", str(venv / "bin" / "python"), *requirements],
        cwd=ROOT,
        check=True,
    )
    stamp.write_text(_fingerprint(version))
    return venv


def run_suites(venv: Path, markers: str | None) -> tuple[int, str]:
    """pytest over :data:`SUITES` in ``venv`` (only tests matching ``markers`` if given); its exit code and summary line."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("AIRFLOW", "PYTEST"))}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    # A per-test timeout above the suite's own 120 s: a loaded machine runs older versions' dag.test() slower.
    command = [
        str(venv / "bin" / "python"),
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "-p",
        PLUGIN,
        "--timeout=300",
        "--durations=15",
        *(["-m", markers] if markers else []),
        *SUITES,
    ]
    process = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    sys.stdout.write(process.stdout[-4000:])
    sys.stderr.write(process.stderr[-2000:])
    lines = [line for line in process.stdout.splitlines() if line.strip()]
    summary = lines[-1].strip("= ") if lines else "(no output)"
    return process.returncode, summary


def installed(venv: Path, package: str) -> str:
    return subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-c",
            f"from importlib.metadata import version; print(version({package!r}))",
        ],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()


def document(outcomes: list[Outcome], venvs: dict[str, Path], markers: str | None) -> str:
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "| Airflow | task SDK | amazon provider | result | pytest summary | build / test time |",
        "|---|---|---|---|---|---|",
    ]
    for outcome in outcomes:
        venv = venvs[outcome.version]
        lines.append(
            f"| {outcome.version} | {installed(venv, 'apache-airflow-task-sdk')} "
            f"| {installed(venv, 'apache-airflow-providers-amazon')} "
            f"| {'green' if outcome.green else f'FAILED ({outcome.exit_code})'} | {outcome.summary} "
            f"| {outcome.build_seconds:.0f} s / {outcome.test_seconds:.0f} s |"
        )
    table = "\n".join(lines)
    return f"""# Version matrix

Produced by `make matrix` ({when}; {platform.system()} {platform.machine()}, {os.cpu_count()} cores,
Python {platform.python_version()}): `{" ".join(SUITES)}`{f' (tests matching `-m "{markers}"`)' if markers else ""} in one virtualenv per Airflow version,
resolved from PyPI without Airflow's constraint files (pins: `tests/deployment/matrix.py`).

{table}
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--versions", help="comma-separated Airflow versions (default: newest patches)")
    parser.add_argument("--minors", default=",".join(MINORS), help="minors to take the newest patch of")
    parser.add_argument("--markers", help='pytest -m expression, e.g. "not slow" (default: every test)')
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    versions = args.versions.split(",") if args.versions else newest_patches(args.minors.split(","))

    outcomes, venvs = [], {}
    for version in versions:
        print(f"\n=== Airflow {version} ===", flush=True)
        started = time.monotonic()
        venvs[version] = build(version)
        built = time.monotonic()
        exit_code, summary = run_suites(venvs[version], args.markers)
        outcomes.append(Outcome(version, exit_code, summary, built - started, time.monotonic() - built))
    text = document(outcomes, venvs, args.markers)
    args.output.write_text(text)
    print(f"\n{text}\nwritten to {args.output}")
    return 0 if all(outcome.green for outcome in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
