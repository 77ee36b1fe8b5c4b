"""Unattended runs with a real ``dagster-daemon``: files dropped on local disk and on
Azurite start one run each, unchanged files never run again (not after a daemon crash
either), a changed file runs again, and a pipeline with ``run_after`` runs once after each
successful upstream run and never after a failed one.

Every wait is on the daemon's own records (ticks, runs), bounded by a timeout."""

from __future__ import annotations

import io
import os
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import deltalake
import pandas as pd
import pytest

from odibi_dagster_tests.support.daemon import Daemon, wait_for, write_workspace
from odibi_dagster_tests.support.lake import Lake
from odibi_dagster_tests.support.webhook import Receiver, serving
from odibi_dagster_tests.support.webserver import make_dagster_home

pytestmark = pytest.mark.daemon

SENSOR = "orders_arrived"

PIPELINES = """\
pipelines:
  - pipeline: ingest
    max_concurrent_runs: 1
    sensors:
      - name: orders_arrived
        new_files:
          connection: {raw}
          path: landing/orders
          pattern: "*.csv"
        interval: 1
        enabled: true
    nodes:
      - name: orders
        read:
          connection: {raw}
          path: landing/orders
          format: csv
      - name: priced
        depends_on: [orders]
        transform:
          steps:
            - SELECT order_id, qty * price AS amount FROM orders
        write:
          connection: {out}
          path: priced
          format: delta
          mode: append
  - pipeline: report
    run_after: [ingest]
    nodes:
      - name: totals
        read:
          connection: {out}
          path: priced
          format: delta
        transform:
          steps:
            - SELECT COUNT(*) AS orders, SUM(amount) AS revenue FROM __result__
        write:
          connection: {out}
          path: totals.csv
          format: csv
"""

LOCAL = """\
project: shop
alerts:
  - type: webhook
    url: ${ALERT_URL}
    on_events: [on_failure]
    metadata: {throttle_minutes: 0, dagster_url: "http://dagster.test:3000"}
connections:
  raw:
    type: local
    base_path: ./raw
  lake:
    type: local
    base_path: ./lake
""" + PIPELINES.format(raw="raw", out="lake")


def orders_csv(rows: list[tuple[str, int, float]]) -> bytes:
    buf = io.StringIO()
    pd.DataFrame(rows, columns=["order_id", "qty", "price"]).to_csv(buf, index=False)
    return buf.getvalue().encode()


def expected(files: list[bytes]) -> list[tuple[str, float]]:
    """What ``priced`` must hold once these file contents were processed: computed with
    pandas, independently of the pipeline."""
    frames = [pd.read_csv(io.BytesIO(b)) for b in files]
    df = pd.concat(frames, ignore_index=True)
    return sorted(zip(df["order_id"], df["qty"] * df["price"], strict=True))


def files_tag(run: dg.DagsterRun) -> str:
    return run.tags.get("odibi/files", "")


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with serving() as rec:
        yield rec


@pytest.fixture
def daemon(tmp_path: Path, receiver: Receiver) -> Iterator[Daemon]:
    root = tmp_path / "shop"
    (root / "raw" / "landing" / "orders").mkdir(parents=True)
    (root / "lake").mkdir()
    (root / "project.yaml").write_text(LOCAL)
    d = Daemon(
        write_workspace(root),
        make_dagster_home(tmp_path / "home"),
        env={"ALERT_URL": receiver.url("/hooks/T0K3N-secret")},
    )
    try:
        yield d.start()
    finally:
        d.stop()


def drop(daemon: Daemon, name: str, data: bytes) -> None:
    """Land a file the way a producer should: a hidden temporary name, then a rename."""
    folder = daemon.workspace.parent / "raw" / "landing" / "orders"
    tmp = folder / f".{name}.part"
    tmp.write_bytes(data)
    os.replace(tmp, folder / name)


def test_files_dropped_on_local_disk_each_run_once_across_a_daemon_crash(
    daemon: Daemon, receiver: Receiver
) -> None:
    lake = daemon.workspace.parent / "lake"
    # both sensors are on (enabled: true; run_after is on by default) and have looked once
    daemon.wait_for_ticks(SENSOR, 1, after=0, timeout=120)
    daemon.wait_for_ticks("report_run_after_sensor", 1, after=0, timeout=120)

    a1 = orders_csv([("o1", 2, 5.0), ("o2", 1, 3.5)])
    drop(daemon, "a.csv", a1)
    (run_a,) = daemon.wait_for_runs("ingest", 1, timeout=90)
    assert run_a.status == dg.DagsterRunStatus.SUCCESS, daemon.log_path.read_text()[-3000:]
    assert files_tag(run_a) == "a.csv" and run_a.tags["odibi/sensor"] == SENSOR

    b = orders_csv([("o3", 4, 2.0)])
    drop(daemon, "b.csv", b)
    runs = daemon.wait_for_runs("ingest", 2, timeout=90)
    assert [files_tag(r) for r in runs] == ["a.csv", "b.csv"]
    assert pd.read_parquet(lake / "priced").pipe(
        lambda df: sorted(zip(df["order_id"], df["amount"], strict=True))
    ) == expected([a1, b])

    # unchanged files: more ticks, no more runs
    daemon.wait_for_ticks(SENSOR, 3, after=time.time(), timeout=60)
    assert len(daemon.runs("ingest")) == 2

    # a changed file runs again, alone
    a2 = orders_csv([("o1", 3, 5.0), ("o4", 1, 1.0)])
    drop(daemon, "a.csv", a2)
    runs = daemon.wait_for_runs("ingest", 3, timeout=90)
    assert files_tag(runs[-1]) == "a.csv" and runs[-1].status == dg.DagsterRunStatus.SUCCESS

    # a crash (SIGKILL of the daemon and its children) and a restart: nothing runs twice
    daemon.kill()
    daemon.start()
    daemon.wait_for_ticks(SENSOR, 3, after=time.time(), timeout=120)
    assert len(daemon.runs("ingest")) == 3
    got = pd.read_parquet(lake / "priced")
    assert sorted(zip(got["order_id"], got["amount"], strict=True)) == expected([a1, b, a2])

    # run_after: every successful ingest run is followed by exactly one report run
    covered: list[str] = []

    def reports_cover_all() -> bool:
        reports = daemon.runs("report")
        if any(r.status not in (dg.DagsterRunStatus.SUCCESS,) for r in reports):
            return False
        covered[:] = [
            part.split()[1] for r in reports for part in r.tags["odibi/run_after"].split(", ")
        ]
        return len(covered) >= 3

    wait_for("report runs after the 3 ingest runs", reports_cover_all, 120, daemon.log_path)
    assert sorted(covered) == sorted(r.run_id[:8] for r in daemon.runs("ingest"))
    totals = pd.read_csv(lake / "totals.csv")
    assert totals["orders"].tolist() == [len(expected([a1, b, a2]))]

    # a file the pipeline cannot process: its run fails, and report does not run after it
    reports_before = len(daemon.runs("report"))
    drop(daemon, "bad.csv", b"order_id,quantity\no9,1\n")
    runs = daemon.wait_for_runs("ingest", 4, timeout=90)
    assert files_tag(runs[-1]) == "bad.csv" and runs[-1].status == dg.DagsterRunStatus.FAILURE
    daemon.wait_for_ticks("report_run_after_sensor", 2, after=time.time(), timeout=60)
    assert len(daemon.runs("report")) == reports_before

    # ... and the failure alert reaches the webhook, once, naming the run and the node
    (body,) = wait_for("the failure alert", lambda: receiver.bodies, 60, daemon.log_path)
    assert body["pipeline"] == "ingest" and body["run_id"] == runs[-1].run_id
    assert body["failed_nodes"] == ["ingest/priced"]
    assert body["run_url"] == f"http://dagster.test:3000/runs/{runs[-1].run_id}"
    assert "T0K3N" not in daemon.log_path.read_text()


def test_files_dropped_on_azurite_each_run_once(lake: Lake, tmp_path: Path) -> None:
    project = lake.project(PIPELINES.format(raw="raw", out="cur"))
    root = project.parent
    (root / "project.yaml").write_text(project.read_text())
    d = Daemon(write_workspace(root), make_dagster_home(tmp_path / "home"))
    d.start()
    try:
        d.wait_for_ticks(SENSOR, 1, after=0, timeout=120)
        a1 = orders_csv([("o1", 2, 5.0)])
        lake.upload("landing/orders/a.csv", a1)
        (run_a,) = d.wait_for_runs("ingest", 1, timeout=90)
        assert run_a.status == dg.DagsterRunStatus.SUCCESS, d.log_path.read_text()[-3000:]
        assert files_tag(run_a) == "a.csv"

        d.wait_for_ticks(SENSOR, 3, after=time.time(), timeout=60)
        assert len(d.runs("ingest")) == 1

        a2 = orders_csv([("o1", 2, 5.0), ("o2", 2, 1.5)])
        lake.upload("landing/orders/a.csv", a2)  # new content, new etag
        runs = d.wait_for_runs("ingest", 2, timeout=90)
        assert files_tag(runs[-1]) == "a.csv" and runs[-1].status == dg.DagsterRunStatus.SUCCESS
        got = deltalake.DeltaTable(
            f"az://{lake.cur_container}/gold/priced",
            storage_options=lake.delta_options("odibicurated"),
        ).to_pandas()
        assert sorted(zip(got["order_id"], got["amount"], strict=True)) == expected([a1, a2])
    finally:
        d.stop()
