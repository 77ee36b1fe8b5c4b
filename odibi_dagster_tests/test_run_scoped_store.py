"""The intermediate store keyed by run: runs at the same time read only their own results,
a re-execution reads the run it re-executes, a run of a subset reads the latest
materialization, and superseded results are deleted.

Real Dagster runs on a real DAGSTER_HOME (the ``dagster_home`` fixture) and real files;
expected rows come from pandas over each run's own input, never from odibi_dagster."""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd
import pytest

from odibi_dagster.engines.pandas import PandasEngine
from odibi_dagster.io_managers import run_store
from odibi_dagster_tests.support.overlap import BARRIER_STEP, RUN_TAG, run_at_once
from odibi_dagster_tests.support.runs import failure_text

# A node with no write: (`totals`) whose value a downstream node (`report`) consumes.
PROJECT = """
project: store
transforms: [steps.py]
connections: {fs: {type: local, base_path: .}}
pipelines:
  - pipeline: p
    nodes:
      - name: src
        read: {connection: fs, path: "${ODIBI_TEST_INPUT}", format: csv}
      - name: totals
        depends_on: [src]
        transform: {steps: ["SELECT g, SUM(v) AS total, COUNT(*) AS n FROM src GROUP BY g"]}
      - name: report
        depends_on: [totals]
        transform:
          steps:
            - {function: odibi_test_fails_while_flagged, params: {source: totals}}
            - SELECT g, total, n FROM __result__ ORDER BY g
        write: {connection: fs, path: "${ODIBI_TEST_OUTPUT}", format: csv}
"""

STEPS = """
import os
from odibi_dagster import transform

@transform
def odibi_test_fails_while_flagged(context, source):
    flag = os.environ.get("ODIBI_TEST_FAIL_FLAG", "")
    if flag and os.path.exists(flag):
        raise RuntimeError(f"failing while {flag} exists")
    return context.get(source)
"""

TOTALS = ("p", "totals")
REPORT = dg.AssetKey(["p", "report"])


def expected_report(csv_path: Path) -> list[dict[str, object]]:
    """What `report` holds for the input ``csv_path``, by pandas alone."""
    df = pd.read_csv(csv_path)
    out = df.groupby("g", as_index=False).agg(total=("v", "sum"), n=("v", "size"))
    return out.sort_values("g").to_dict("records")


def report_rows(path: Path) -> list[dict[str, object]]:
    return pd.read_csv(path).to_dict("records")


def stored_rows(home: Path, run_id: str) -> list[dict[str, object]]:
    """`totals` as run ``run_id`` kept it in the intermediate store."""
    df = pd.read_parquet(home / "storage" / "odibi" / "p" / "totals" / f"{run_id}.parquet")
    return df.sort_values("g").to_dict("records")


def stored_runs(home: Path) -> list[str]:
    folder = home / "storage" / "odibi" / "p" / "totals"
    return sorted(p.name.removesuffix(".parquet") for p in folder.iterdir())


def write_input(path: Path, rows: dict[str, list[int]]) -> Path:
    lines = ["g,v"] + [f"{g},{v}" for g, values in rows.items() for v in values]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def project(tmp_path: Path, dagster_home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The project in ``tmp_path``: input in.csv, output report.csv, `report` failing
    while the file ``fail.flag`` exists."""
    (tmp_path / "project.yaml").write_text(PROJECT)
    (tmp_path / "steps.py").write_text(STEPS)
    monkeypatch.setenv("ODIBI_TEST_INPUT", "in.csv")
    monkeypatch.setenv("ODIBI_TEST_OUTPUT", "report.csv")
    monkeypatch.setenv("ODIBI_TEST_FAIL_FLAG", str(tmp_path / "fail.flag"))
    monkeypatch.setenv("ODIBI_TEST_PROJECT", str(tmp_path / "project.yaml"))
    return tmp_path


def job() -> Any:
    """The pipeline's job, reconstructable (what a re-execution needs). Dagster caches a
    reconstructed job by its pointer: the project's path is part of it, so each test
    gets its own project's job."""
    return dg.build_reconstructable_job(
        "odibi_dagster.cli",
        "pipeline_job",
        reconstructable_args=(os.environ["ODIBI_TEST_PROJECT"], "p"),
    )


def execute(instance: dg.DagsterInstance, **kwargs: Any) -> dg.ExecuteJobResult:
    """A run of the pipeline's job (not entered as a context manager: only its run id and
    events are read)."""
    return dg.execute_job(job(), instance=instance, **kwargs)


# --------------------------------------------------------------------------- runs at once

OVERLAP_PROJECT = """
project: overlap
executor: multiprocess
transforms: [steps.py]
connections: {fs: {type: local, base_path: .}}
pipelines:
  - pipeline: p
    nodes:
      - name: src
        read: {connection: fs, path: "${ODIBI_TEST_INPUT}", format: csv}
      - name: totals
        depends_on: [src]
        transform: {steps: ["SELECT g, SUM(v) AS total, COUNT(*) AS n FROM src GROUP BY g"]}
      - name: gate
        depends_on: [totals]
        transform: {steps: [{function: odibi_test_wait_for_every_run, params: {source: totals}}]}
      - name: report
        depends_on: [totals, gate]
        transform: {steps: ["SELECT g, total, n FROM totals ORDER BY g"]}
        write: {connection: fs, path: "${ODIBI_TEST_OUTPUT}", format: csv}
"""


@pytest.mark.slow  # two CLI runs, each step in a process of its own
def test_two_runs_at_once_each_read_their_own_intermediate_result(
    tmp_path: Path, dagster_home: Path
):
    """Each run's `gate` waits until both runs are there, and `report` starts only after
    it: each run's `report` loads `totals` once both runs have kept theirs."""
    (tmp_path / "project.yaml").write_text(OVERLAP_PROJECT)
    (tmp_path / "steps.py").write_text(BARRIER_STEP)
    inputs = {
        "a": write_input(tmp_path / "in_a.csv", {"x": [1, 2], "y": [3]}),
        "b": write_input(tmp_path / "in_b.csv", {"x": [10], "z": [20, 30, 40]}),
    }
    envs = {
        name: {"ODIBI_TEST_INPUT": f"in_{name}.csv", "ODIBI_TEST_OUTPUT": f"report_{name}.csv"}
        for name in inputs
    }
    for name, (code, output) in run_at_once(tmp_path, "p", envs).items():
        assert code == 0, f"run {name}: {output[-3000:]}"
    assert sorted(p.name for p in (tmp_path / "barrier").iterdir()) == ["a", "b"]

    instance = dg.DagsterInstance.get()
    runs = {r.tags[RUN_TAG]: r.run_id for r in instance.get_runs()}
    assert sorted(runs) == ["a", "b"]
    for name, csv_path in inputs.items():
        expected = expected_report(csv_path)
        assert report_rows(tmp_path / f"report_{name}.csv") == expected
        # each run's intermediate file is its own
        assert stored_rows(dagster_home, runs[name]) == expected
    # neither run deleted the other's result: each was in progress when the other kept its own
    assert stored_runs(dagster_home) == sorted(runs.values())


# --------------------------------------------------------------------------- re-execution


def test_a_reexecution_from_failure_reads_the_failed_runs_upstream_result(
    project: Path, dagster_home: Path
):
    instance = dg.DagsterInstance.get()
    first_input = write_input(project / "in.csv", {"x": [1, 2], "y": [5]})
    expected = expected_report(first_input)
    (project / "fail.flag").touch()
    failed = execute(instance)
    assert not failed.success
    assert "failing while" in failure_text(failed)
    assert stored_rows(dagster_home, failed.run_id) == expected
    assert not (project / "report.csv").exists()

    # meanwhile the input changes and `totals` alone is materialized again: the newest
    # result of `totals` is now another one
    write_input(project / "in.csv", {"q": [100]})
    newer = execute(instance, asset_selection=[dg.AssetKey(list(TOTALS))])
    assert newer.success
    assert stored_rows(dagster_home, newer.run_id) == expected_report(project / "in.csv")

    # the cause is fixed; the re-execution runs `report` alone, on the failed run's `totals`
    (project / "fail.flag").unlink()
    options = dg.ReexecutionOptions.from_failure(failed.run_id, instance)
    again = execute(instance, reexecution_options=options)
    assert again.success
    assert [e.step_key for e in again.all_events if e.is_step_success] == ["p__report"]
    assert report_rows(project / "report.csv") == expected


# --------------------------------------------------------------------------- subset runs


def test_a_run_of_only_the_downstream_asset_reads_the_latest_materialization(
    project: Path, dagster_home: Path
):
    instance = dg.DagsterInstance.get()
    home = dagster_home
    write_input(project / "in.csv", {"x": [1]})
    (project / "fail.flag").touch()
    failed = execute(instance)  # keeps its `totals`, then `report` fails
    assert not failed.success
    (project / "fail.flag").unlink()
    expected = expected_report(write_input(project / "in.csv", {"x": [2, 3], "y": [4]}))
    latest = execute(instance)
    assert latest.success
    # both are stored: the failed run's is kept for a re-execution from failure
    assert stored_runs(home) == sorted([failed.run_id, latest.run_id])

    write_input(project / "in.csv", {"never": [999]})  # `report` must not see this
    (project / "report.csv").unlink()
    only_report = execute(instance, asset_selection=[REPORT])
    assert only_report.success
    assert [e.step_key for e in only_report.all_events if e.is_step_success] == ["p__report"]
    assert report_rows(project / "report.csv") == expected


def test_an_input_with_nothing_stored_names_the_run_looked_for(project: Path, dagster_home: Path):
    instance = dg.DagsterInstance.get()
    write_input(project / "in.csv", {"x": [1]})
    never = execute(instance, asset_selection=[REPORT])
    assert not never.success
    assert "never materialized in this Dagster instance). Materialize this upstream node" in (
        failure_text(never)
    )

    first = execute(instance)
    assert first.success
    stored = dagster_home / "storage" / "odibi" / "p" / "totals"
    (stored / f"{first.run_id}.parquet").unlink()
    gone = execute(instance, asset_selection=[REPORT])
    assert not gone.success
    text = failure_text(gone)
    assert f"the result of run {first.run_id} (its latest materialization)" in text
    assert "no stored result yet" in text and "Materialize this upstream node first" in text

    (project / "fail.flag").touch()
    failed = execute(instance)
    assert not failed.success
    (stored / f"{failed.run_id}.parquet").unlink()
    (project / "fail.flag").unlink()
    options = dg.ReexecutionOptions.from_failure(failed.run_id, instance)
    again = execute(instance, reexecution_options=options)
    assert not again.success
    assert (
        f"the result of run {failed.run_id} (the earlier run that produced it; this run "
        "re-executes it): no stored result yet"
    ) in failure_text(again)


# --------------------------------------------------------------------------- pruning


def add_run(
    instance: dg.DagsterInstance,
    reexecutes: str | None = None,
    status: dg.DagsterRunStatus = dg.DagsterRunStatus.STARTED,
) -> str:
    """A run of job p in the instance, still going unless ``status`` says otherwise; a
    re-execution of the run ``reexecutes`` if given."""
    run = dg.DagsterRun(
        job_name="p",
        run_id=str(uuid.uuid4()),
        status=status,
        parent_run_id=reexecutes,
        root_run_id=reexecutes,
    )
    instance.add_run(run)
    return run.run_id


def stored_by_hand(home: Path, run_id: str, written: float | None = None) -> Path:
    """A result of `totals` for ``run_id`` put in the store by hand, written at ``written``."""
    path = home / "storage" / "odibi" / "p" / "totals" / f"{run_id}.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"g": ["by hand"], "total": [0], "n": [0]}).to_parquet(path)
    if written is not None:
        os.utime(path, (written, written))
    return path


def test_a_good_run_deletes_superseded_results_and_keeps_those_still_needed(
    project: Path, dagster_home: Path
):
    instance = dg.DagsterInstance.get()
    write_input(project / "in.csv", {"x": [1]})
    first = execute(instance)
    second = execute(instance)
    assert first.success and second.success
    assert stored_runs(dagster_home) == [second.run_id]  # the first run's was superseded

    going = add_run(instance)
    stored_by_hand(dagster_home, going)
    reexecuting = add_run(instance, reexecutes=second.run_id)  # may read the second's
    (project / "fail.flag").touch()
    failed = execute(instance)  # `totals` succeeds, then `report` fails
    assert not failed.success
    (project / "fail.flag").unlink()
    assert stored_runs(dagster_home) == sorted([second.run_id, going, failed.run_id])

    instance.report_run_failed(instance.get_run_by_id(reexecuting))
    third = execute(instance)
    assert third.success
    # kept: the run still going, the run that failed just now (it may be re-executed from
    # failure); deleted: the second run's, superseded and no longer in use
    assert stored_runs(dagster_home) == sorted([going, failed.run_id, third.run_id])


def test_results_of_failed_runs_go_after_seven_days_and_of_unknown_runs_after_one(
    project: Path, dagster_home: Path
):
    """run_store.prune on a real instance and real files, at times the test chooses."""
    instance = dg.DagsterInstance.get()
    base = str(dagster_home / "storage" / "odibi")
    write_input(project / "in.csv", {"x": [1]})
    (project / "fail.flag").touch()
    failed = execute(instance)
    assert not failed.success
    going = add_run(instance)
    stored_by_hand(dagster_home, going, written=time.time() - 30 * 86400)
    deleted_run = str(uuid.uuid4())  # a run deleted from the instance: not in it any more
    stored_by_hand(dagster_home, deleted_run, written=time.time() - 2 * 86400)
    recent_unknown = str(uuid.uuid4())  # e.g. a run of another instance, maybe still going
    stored_by_hand(dagster_home, recent_unknown)
    (dagster_home / "storage" / "odibi" / "p" / "totals" / "notes.parquet").write_bytes(b"x")
    # more good runs than one query asks about (run_store asks about 200 at a time)
    succeeded = [add_run(instance, status=dg.DagsterRunStatus.SUCCESS) for _ in range(210)]
    for run_id in succeeded:
        (dagster_home / "storage" / "odibi" / "p" / "totals" / f"{run_id}.parquet").touch()
    this_run = str(uuid.uuid4())

    engine = PandasEngine()
    deleted = run_store.prune(engine, base, TOTALS, this_run, instance)
    assert sorted(deleted) == sorted([deleted_run, *succeeded])
    assert stored_runs(dagster_home) == sorted([failed.run_id, going, recent_unknown, "notes"])

    eight_days_on = time.time() + 8 * 86400
    deleted = run_store.prune(engine, base, TOTALS, this_run, instance, now=eight_days_on)
    assert sorted(deleted) == sorted([failed.run_id, recent_unknown])
    assert stored_runs(dagster_home) == sorted([going, "notes"])


def test_a_pruning_error_is_logged_and_the_node_succeeds_with_deletion_mocked_to_fail(
    project: Path, dagster_home: Path, monkeypatch: pytest.MonkeyPatch
):
    instance = dg.DagsterInstance.get()
    write_input(project / "in.csv", {"x": [1]})
    first = execute(instance)
    assert first.success

    def refuse(self: PandasEngine, base: str, key: tuple[str, ...]) -> None:
        raise PermissionError(f"not allowed to delete {key[-1]}")

    # (the run executes in this process, so the patched engine is the one it uses)
    monkeypatch.setattr(PandasEngine, "delete_intermediate", refuse)
    second = execute(instance)
    assert second.success
    assert stored_runs(dagster_home) == sorted([first.run_id, second.run_id])
    warnings = [
        e.user_message
        for e in instance.all_logs(second.run_id)
        if "were not pruned" in e.user_message
    ]
    assert len(warnings) == 2  # totals, and report (a CSV: its result is kept too)
    assert f"PermissionError: not allowed to delete {first.run_id}" in warnings[0]
