"""Schedules, new-files sensors and run_after, evaluated the way the daemon evaluates them
(a real instance, real files, the compiled sensor definitions), and the runs they request
executed for real. The daemon itself runs in test_daemon.py."""

from __future__ import annotations

import os
import textwrap
import time
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd
import pytest

import odibi_dagster
from odibi_dagster.automation import SETTLE_SECONDS, FileCursor, pick_new_files
from odibi_dagster.resources.connection import StoredFile
from odibi_dagster_tests.support.runs import run_job

PROJECT = """\
project: shop
connections:
  raw:
    type: local
    base_path: ./raw
  lake:
    type: local
    base_path: ./lake
story:
  connection: lake
  path: stories
pipelines:
  - pipeline: ingest
    max_concurrent_runs: 1
    sensors:
      - new_files:
          connection: raw
          path: landing/orders
          pattern: "*.csv"
        interval: 1
        enabled: true
        max_files_per_run: 2
    nodes:
      - name: orders
        read:
          connection: raw
          path: landing/orders
          format: csv
      - name: priced
        depends_on: [orders]
        transform:
          steps:
            - SELECT order_id, qty * price AS amount FROM orders
        write:
          connection: lake
          path: priced
          format: delta
          mode: append
  - pipeline: report
    run_after: [ingest]
    nodes:
      - name: totals
        read:
          connection: lake
          path: priced
          format: delta
        transform:
          steps:
            - SELECT COUNT(*) AS orders, SUM(amount) AS revenue FROM __result__
        write:
          connection: lake
          path: totals.csv
          format: csv
"""


def drop(root: Path, name: str, rows: list[tuple[str, int, float]]) -> Path:
    """Write an orders file the way a producer should: under a temporary name, then
    renamed into the watched folder."""
    folder = root / "raw" / "landing" / "orders"
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{name}.tmp"
    pd.DataFrame(rows, columns=["order_id", "qty", "price"]).to_csv(tmp, index=False)
    os.replace(tmp, folder / name)
    return folder / name


@pytest.fixture
def shop(tmp_path: Path) -> Path:
    root = tmp_path / "shop"
    (root / "raw" / "landing" / "orders").mkdir(parents=True)
    (root / "lake").mkdir()
    (root / "project.yaml").write_text(PROJECT)
    return root


def tick(defs: dg.Definitions, name: str, instance: dg.DagsterInstance, cursor: str | None):
    sensor = defs.get_sensor_def(name)
    with dg.build_sensor_context(instance=instance, cursor=cursor, definitions=defs) as context:
        return sensor.evaluate_tick(context)


def files_of(request: dg.RunRequest) -> list[str]:
    return request.run_config["resources"]["odibi_new_files"]["config"]["files"]


# --------------------------------------------------------------------------- the cursor


def f(path: str, version: str, modified: float) -> StoredFile:
    return StoredFile(path=path, size=1, modified=modified, version=version)


def test_new_files_are_taken_oldest_first_up_to_the_limit_and_the_rest_wait() -> None:
    listing = [f("c", "1", 30.0), f("a", "1", 10.0), f("b", "1", 20.0)]
    batch, waiting, cursor = pick_new_files(listing, None, 2)
    assert [x.path for x in batch] == ["a", "b"] and waiting == 1
    batch, waiting, cursor = pick_new_files(listing, cursor, 2)
    assert [x.path for x in batch] == ["c"] and waiting == 0
    assert pick_new_files(listing, cursor, 2)[0] == []


def test_a_changed_file_is_new_again_and_an_unchanged_one_never() -> None:
    _, _, cursor = pick_new_files([f("a", "1", 10.0), f("b", "1", 11.0)], None, 10)
    batch, _, cursor = pick_new_files([f("a", "2", 50.0), f("b", "1", 11.0)], cursor, 10)
    assert [(x.path, x.version) for x in batch] == [("a", "2")]
    # the cursor survives being stored as text, as Dagster stores it
    again = FileCursor.decode(cursor.encode())
    assert pick_new_files([f("a", "2", 50.0), f("b", "1", 11.0)], again, 10)[0] == []


def test_a_file_listed_after_a_newer_one_with_an_older_time_is_still_taken() -> None:
    # same-second timestamps, or a listing that paged while the file landed
    _, _, cursor = pick_new_files([f("z", "1", 100.0)], None, 10)
    late = f("a", "1", 100.0 - SETTLE_SECONDS / 2)
    assert pick_new_files([f("z", "1", 100.0), late], cursor, 10)[0] == [late]


def test_the_cursor_forgets_versions_older_than_the_settle_time() -> None:
    _, _, cursor = pick_new_files([f(str(i), "1", float(i)) for i in range(1000)], None, 1000)
    assert cursor.mark == 999.0
    assert len(cursor.seen) == int(SETTLE_SECONDS)  # only those within a minute of the mark
    assert len(cursor.encode()) < 2000


# --------------------------------------------------------------------------- the sensor


def test_each_new_file_is_requested_once_and_its_run_reads_just_it(
    shop: Path, dagster_home: Path
) -> None:
    defs = odibi_dagster.load_definitions(shop)
    instance = dg.DagsterInstance.get()
    drop(shop, "a.csv", [("o1", 2, 5.0), ("o2", 1, 3.5)])
    first = tick(defs, "ingest_new_files_sensor", instance, None)
    (request,) = first.run_requests
    assert files_of(request) == ["landing/orders/a.csv"]
    assert request.tags["odibi/files"] == "a.csv"
    assert request.tags["odibi/sensor"] == "ingest_new_files_sensor"

    # nothing new: a skipped tick that says what it saw, and the cursor stays
    second = tick(defs, "ingest_new_files_sensor", instance, first.cursor)
    assert not second.run_requests
    assert "no new or changed files" in second.skip_message and "1 listed" in second.skip_message

    drop(shop, "b.csv", [("o3", 4, 2.0)])
    third = tick(defs, "ingest_new_files_sensor", instance, first.cursor)
    (request_b,) = third.run_requests
    assert files_of(request_b) == ["landing/orders/b.csv"]
    assert request_b.run_key != request.run_key

    # the run the sensor asked for reads b.csv only, and says so
    result = run_job(defs, "ingest", instance=instance, run_config=request_b.run_config)
    assert result.success
    got = pd.read_parquet(shop / "lake" / "priced")  # a Delta table's data files
    expected = pd.read_csv(shop / "raw/landing/orders/b.csv")
    assert got["order_id"].tolist() == expected["order_id"].tolist()
    assert got["amount"].tolist() == (expected["qty"] * expected["price"]).tolist()
    (mat,) = result.asset_materializations_for_node("ingest__priced")
    assert mat.metadata["odibi/file_count"].value == 1
    assert "`landing/orders/b.csv`" in mat.metadata["odibi/files"].value
    (story,) = (shop / "lake" / "stories" / "ingest").glob("*/story.json")
    assert '"landing/orders/b.csv"' in story.read_text() and "a.csv" not in story.read_text()
    assert "landing/orders/b.csv" in (story.parent / "story.html").read_text()


def test_a_changed_file_starts_another_run_and_the_cap_holds_the_rest(
    shop: Path, dagster_home: Path
) -> None:
    defs = odibi_dagster.load_definitions(shop)
    instance = dg.DagsterInstance.get()
    for i in range(3):
        drop(shop, f"{i}.csv", [(f"o{i}", 1, 1.0)])
        time.sleep(0.01)  # distinct modification times, so "oldest first" is defined
    first = tick(defs, "ingest_new_files_sensor", instance, None)
    assert [files_of(r) for r in first.run_requests] == [
        ["landing/orders/0.csv", "landing/orders/1.csv"]
    ]
    second = tick(defs, "ingest_new_files_sensor", instance, first.cursor)
    assert [files_of(r) for r in second.run_requests] == [["landing/orders/2.csv"]]
    drop(shop, "0.csv", [("o0", 9, 1.0), ("o9", 1, 1.0)])  # new content
    third = tick(defs, "ingest_new_files_sensor", instance, second.cursor)
    assert [files_of(r) for r in third.run_requests] == [["landing/orders/0.csv"]]
    assert third.run_requests[0].run_key != first.run_requests[0].run_key


def test_a_file_moved_in_with_an_old_mtime_is_new(shop: Path, dagster_home: Path) -> None:
    defs = odibi_dagster.load_definitions(shop)
    instance = dg.DagsterInstance.get()
    drop(shop, "a.csv", [("o1", 1, 1.0)])
    first = tick(defs, "ingest_new_files_sensor", instance, None)
    old = shop / "old.csv"
    pd.DataFrame([("o2", 1, 1.0)], columns=["order_id", "qty", "price"]).to_csv(old, index=False)
    os.utime(old, (time.time() - 86400, time.time() - 86400))  # as `cp -p` or `mv` keep it
    os.replace(old, shop / "raw/landing/orders/old.csv")
    second = tick(defs, "ingest_new_files_sensor", instance, first.cursor)
    assert [files_of(r) for r in second.run_requests] == [["landing/orders/old.csv"]]


def test_no_run_is_requested_while_max_concurrent_runs_are_in_progress(
    shop: Path, dagster_home: Path
) -> None:
    defs = odibi_dagster.load_definitions(shop)
    instance = dg.DagsterInstance.get()
    job = defs.resolve_job_def("ingest")
    running = instance.create_run_for_job(job, run_config={}, status=dg.DagsterRunStatus.STARTED)
    drop(shop, "a.csv", [("o1", 1, 1.0)])
    waiting = tick(defs, "ingest_new_files_sensor", instance, None)
    assert not waiting.run_requests and waiting.cursor is None  # nothing taken
    assert "1 run(s) of ingest in progress (max_concurrent_runs: 1)" in waiting.skip_message
    instance.report_run_canceled(running)
    later = tick(defs, "ingest_new_files_sensor", instance, None)
    assert [files_of(r) for r in later.run_requests] == [["landing/orders/a.csv"]]


def test_skip_existing_takes_only_files_that_arrive_later(shop: Path, dagster_home: Path) -> None:
    (shop / "project.yaml").write_text(
        PROJECT.replace("max_files_per_run: 2", "max_files_per_run: 2\n        skip_existing: true")
    )
    drop(shop, "old.csv", [("o1", 1, 1.0)])
    defs = odibi_dagster.load_definitions(shop)
    instance = dg.DagsterInstance.get()
    first = tick(defs, "ingest_new_files_sensor", instance, None)
    assert not first.run_requests and "1 file(s) already in" in first.skip_message
    drop(shop, "new.csv", [("o2", 1, 1.0)])
    second = tick(defs, "ingest_new_files_sensor", instance, first.cursor)
    assert [files_of(r) for r in second.run_requests] == [["landing/orders/new.csv"]]


def test_a_listing_error_is_a_skipped_tick_that_says_why_and_keeps_the_cursor(
    tmp_path: Path, dagster_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a real Azure client against a port where nothing listens
    monkeypatch.setenv("DOWN_KEY", "c2VjcmV0LWtleS1ub3QtdG8tYmUtc2hvd24=")
    root = tmp_path / "p"
    root.mkdir()
    (root / "project.yaml").write_text(
        textwrap.dedent(
            """\
            connections:
              raw:
                type: azure_adls
                account: devstoreaccount1
                container: landing
                auth_mode: direct_key
                account_key: ${DOWN_KEY}
                blob_endpoint: http://127.0.0.1:9/devstoreaccount1
              lake:
                type: local
                base_path: ./lake
            pipelines:
              - pipeline: ingest
                sensors:
                  - new_files: {connection: raw, path: orders}
                nodes:
                  - name: orders
                    read: {connection: raw, path: orders, format: csv}
                    write: {connection: lake, path: orders.parquet, format: parquet}
            """
        )
    )
    defs = odibi_dagster.load_definitions(root)
    t0 = time.monotonic()
    cursor = FileCursor(mark=1.0).encode()
    result = tick(defs, "ingest_new_files_sensor", dg.DagsterInstance.get(), cursor)
    assert time.monotonic() - t0 < 60
    assert not result.run_requests and result.cursor == cursor  # not moved
    assert "could not list connection 'raw'" in result.skip_message
    assert "new files are requested once listing works again" in result.skip_message
    assert "c2VjcmV0" not in result.skip_message


# --------------------------------------------------------------------------- run_after


def test_run_after_starts_the_pipeline_once_after_a_success_and_never_after_a_failure(
    shop: Path, dagster_home: Path
) -> None:
    defs = odibi_dagster.load_definitions(shop)
    instance = dg.DagsterInstance.get()
    first = tick(defs, "report_run_after_sensor", instance, None)
    assert not first.run_requests and "from now on" in first.skip_message

    # a failed upstream run (no file to read): nothing starts
    failed = run_job(defs, "ingest", instance=instance)
    assert not failed.success
    after_failure = tick(defs, "report_run_after_sensor", instance, first.cursor)
    assert not after_failure.run_requests

    drop(shop, "a.csv", [("o1", 2, 5.0)])
    ok = run_job(defs, "ingest", instance=instance)
    assert ok.success
    after_success = tick(defs, "report_run_after_sensor", instance, first.cursor)
    (request,) = after_success.run_requests
    assert ok.run_id[:8] in request.tags["odibi/run_after"]
    # the next tick does not start it again
    again = tick(defs, "report_run_after_sensor", instance, after_success.cursor)
    assert not again.run_requests
    report = run_job(defs, "report", instance=instance, **_request_kwargs(request))
    assert report.success
    totals = pd.read_csv(shop / "lake" / "totals.csv")
    assert totals.to_dict("records") == [{"orders": 1, "revenue": 10.0}]


def _request_kwargs(request: dg.RunRequest) -> dict[str, Any]:
    return {"run_config": request.run_config or {}, "tags": request.tags}


# --------------------------------------------------------------------------- schedules


def test_a_schedule_starts_running_only_when_enabled(shop: Path) -> None:
    text = PROJECT.replace(
        "    max_concurrent_runs: 1\n",
        "    max_concurrent_runs: 1\n    schedule: {cron: '0 6 * * *', enabled: true}\n",
    ).replace("    run_after: [ingest]\n", "    run_after: [ingest]\n    schedule: '0 7 * * *'\n")
    (shop / "project.yaml").write_text(text)
    defs = odibi_dagster.load_definitions(shop)
    by_name = {s.name: s for s in defs.schedules or []}
    assert by_name["ingest_schedule"].default_status == dg.DefaultScheduleStatus.RUNNING
    assert by_name["report_schedule"].default_status == dg.DefaultScheduleStatus.STOPPED
    sensors = {s.name: s for s in defs.sensors or []}
    assert sensors["ingest_new_files_sensor"].default_status == dg.DefaultSensorStatus.RUNNING
    assert sensors["ingest_new_files_sensor"].minimum_interval_seconds == 1


def test_a_schedule_skips_a_tick_while_max_concurrent_runs_are_in_progress(
    shop: Path, dagster_home: Path
) -> None:
    (shop / "project.yaml").write_text(
        PROJECT.replace(
            "    max_concurrent_runs: 1\n",
            "    max_concurrent_runs: 1\n    schedule: '0 6 * * *'\n",
        )
    )
    defs = odibi_dagster.load_definitions(shop)
    instance = dg.DagsterInstance.get()
    schedule = defs.get_schedule_def("ingest_schedule")
    with dg.build_schedule_context(instance=instance) as context:
        assert schedule.evaluate_tick(context).run_requests
    instance.create_run_for_job(
        defs.resolve_job_def("ingest"), run_config={}, status=dg.DagsterRunStatus.STARTED
    )
    with dg.build_schedule_context(instance=instance) as context:
        data = schedule.evaluate_tick(context)
    assert not data.run_requests and "max_concurrent_runs: 1" in data.skip_message


def test_materialize_in_the_asset_graph_runs_in_process(shop: Path) -> None:
    defs = odibi_dagster.load_definitions(shop)
    implicit = defs.resolve_implicit_global_asset_job_def()
    assert implicit.executor_def is dg.in_process_executor


def test_re_executing_a_failed_sensor_run_processes_the_same_files(
    shop: Path, dagster_home: Path
) -> None:
    defs = odibi_dagster.load_definitions(shop)
    instance = dg.DagsterInstance.get()
    drop(shop, "a.csv", [("o1", 2, 5.0)])
    first = tick(defs, "ingest_new_files_sensor", instance, None)
    drop(shop, "b.csv", [("o2", 1, 1.0)])  # arrives later: not part of the first run
    bad = drop(shop, "a.csv", [("o1", 2, 5.0)])
    bad.write_text("order_id,quantity\no1,2\n")  # broken after the sensor asked for it
    (request,) = first.run_requests
    job = dg.build_reconstructable_job(
        "odibi_dagster.cli",
        "pipeline_job",
        reconstructable_args=(str(shop), "ingest"),  # type: ignore[arg-type]
    )
    failed = dg.execute_job(job, instance=instance, run_config=request.run_config)
    assert not failed.success
    bad.write_text("order_id,qty,price\no1,2,5.0\n")  # fixed; the run is re-executed
    again = dg.execute_job(
        job,
        instance=instance,
        reexecution_options=dg.ReexecutionOptions.from_failure(failed.run_id, instance),
    )
    assert again.success
    got = pd.read_parquet(shop / "lake" / "priced")
    assert got["order_id"].tolist() == ["o1"]  # a.csv only, not b.csv
    run = instance.get_run_by_id(again.run_id)
    assert run is not None and run.run_config == request.run_config
