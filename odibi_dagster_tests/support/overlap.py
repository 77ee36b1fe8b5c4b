"""Runs that surely overlap: CLI runs of one job started at once, each with its own
environment, and a function step that waits until every run has reached it.

A project registers the step by listing a file holding :data:`BARRIER_STEP` under
``transforms:``, and uses it as ``{function: odibi_test_wait_for_every_run, params:
{source: <node>}}``: the step returns ``<node>``'s frame once every run is there (or
fails after two minutes). :func:`run_at_once` starts the runs and tells each which run
it is.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Mapping
from pathlib import Path

import dagster as dg

from odibi_dagster_tests.support.cli import BIN, cli_env

BARRIER_STEP = """
import os, time
from odibi_dagster import transform

@transform
def odibi_test_wait_for_every_run(context, source):
    barrier = os.environ["ODIBI_TEST_BARRIER"]
    runs = os.environ["ODIBI_TEST_RUNS"].split(",")
    open(os.path.join(barrier, os.environ["ODIBI_TEST_RUN"]), "w").close()
    deadline = time.monotonic() + 120
    while not all(os.path.exists(os.path.join(barrier, r)) for r in runs):
        if time.monotonic() > deadline:
            raise TimeoutError(f"the other runs never reached the barrier in {barrier}")
        time.sleep(0.05)
    return context.get(source)
"""

RUN_TAG = "odibi_test/run"


def run_at_once(
    project_dir: Path, job: str, runs: Mapping[str, Mapping[str, str]], timeout: float = 600
) -> dict[str, tuple[int, str]]:
    """Run ``job`` of the project in ``project_dir`` once per entry of ``runs`` (run
    name -> environment variables), all at once with ``dagster job execute`` on the
    instance of ``DAGSTER_HOME``; each run is tagged ``odibi_test/run: <name>``. Returns each run's exit code and output, and
    leaves the names of the runs that reached the barrier in ``project_dir/barrier``."""
    # Dagster's SQLite storage cannot be created by two processes at once: create it first
    dg.DagsterInstance.get().dispose()
    (project_dir / "definitions.py").write_text(
        "import odibi_dagster\ndefs = odibi_dagster.load_definitions(__file__.rsplit('/', 1)[0])\n"
    )
    barrier = project_dir / "barrier"
    barrier.mkdir(exist_ok=True)
    procs = {}
    for name, extra in runs.items():
        env = cli_env(
            ODIBI_TEST_RUN=name,
            ODIBI_TEST_RUNS=",".join(runs),
            ODIBI_TEST_BARRIER=str(barrier),
            **extra,
        )
        cmd = [str(BIN / "dagster"), "job", "execute", "-f", "definitions.py", "-j", job]
        cmd += ["--tags", json.dumps({RUN_TAG: name})]
        procs[name] = subprocess.Popen(
            cmd,
            cwd=project_dir,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
    out = {}
    for name, proc in procs.items():
        try:
            output = proc.communicate(timeout=timeout)[0]
        except subprocess.TimeoutExpired:
            proc.kill()
            output = proc.communicate()[0] + f"\n(killed after {timeout}s)"
        out[name] = (proc.returncode, output)
    return out
