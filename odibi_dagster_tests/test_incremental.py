"""read.incremental through real runs: batches land between runs, each run reads only what
is new, the mark lives in the instance (a new process and a new instance object see it),
and a failed run does not move it."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import dagster as dg
import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake

import odibi_dagster
from odibi_dagster.incremental import FILTER_KEY, MARK_BEFORE_KEY, MARK_KEY, ROWS_READ_KEY
from odibi_dagster_tests.support.cli import run_cli
from odibi_dagster_tests.support.runs import failure_text, run_job

ENGINES = ["pandas", pytest.param("spark", marks=pytest.mark.spark)]


def append_batch(path: Path, ids: list[int], amounts: list[float | None] | None = None) -> None:
    """One batch landing in the source Delta table."""
    amounts = amounts if amounts is not None else [float(i) for i in ids]
    table = pa.table({"id": pa.array(ids, pa.int64()), "amount": pa.array(amounts, pa.float64())})
    write_deltalake(str(path), table, mode="append")


def latest(key: list[str], instance: dg.DagsterInstance | None = None) -> dict[str, Any]:
    """The metadata of the latest materialization of ``key``, as plain values."""
    instance = instance or dg.DagsterInstance.get()
    event = instance.get_latest_materialization_event(dg.AssetKey(key))
    assert event is not None and event.asset_materialization is not None
    return {k: getattr(v, "value", v) for k, v in event.asset_materialization.metadata.items()}


def out_ids(path: Path) -> list[int]:
    return sorted(DeltaTable(str(path)).to_pyarrow_table().column("id").to_pylist())


def node_project(root: Path, engine: str, validation: str = "") -> Path:
    (root / "p.yaml").write_text(
        f"""
engine: {engine}
connections: {{fs: {{type: local, base_path: .}}}}
pipelines:
  - pipeline: p
    nodes:
      - name: orders
        read:
          connection: fs
          path: src
          format: delta
          incremental: {{mode: stateful, column: id}}
        transform: {{steps: ["SELECT id, amount * 2 AS amount2 FROM __result__"]}}
{validation}
        write: {{connection: fs, path: out, format: delta, mode: append}}
"""
    )
    return root / "p.yaml"


@pytest.mark.parametrize("engine", ENGINES)
def test_a_stateful_node_reads_each_batch_once_and_a_failed_run_moves_no_mark(
    tmp_path: Path, dagster_home: Path, engine: str
):
    key = ["p", "orders"]
    project = node_project(tmp_path, engine)
    append_batch(tmp_path / "src", [1, 2, 3])
    assert run_job(project).success
    meta = latest(key)
    assert meta[ROWS_READ_KEY] == 3  # the first run: no mark, everything
    assert meta[MARK_BEFORE_KEY].startswith("none")
    assert meta[MARK_KEY] == {"column": "id", "value": 3, "type": "integer"}
    assert "no mark yet" in meta[FILTER_KEY]

    append_batch(tmp_path / "src", [4, 5])
    assert run_job(project).success
    meta = latest(key)
    assert meta[ROWS_READ_KEY] == 2 and meta[FILTER_KEY] == "stateful: id > 3"
    assert meta[MARK_KEY]["value"] == 5
    assert out_ids(tmp_path / "out") == [1, 2, 3, 4, 5]

    # the third batch has a null amount: the check fails the node, nothing is written,
    # and the mark stays where the last successful run left it
    append_batch(tmp_path / "src", [6, 7], [6.0, None])
    failing = node_project(tmp_path, engine, "        validation: {no_nulls: [amount2]}")
    result = run_job(failing)
    assert not result.success and "validation failed" in failure_text(result)
    assert latest(key)[MARK_KEY]["value"] == 5
    assert out_ids(tmp_path / "out") == [1, 2, 3, 4, 5]

    # fixed, run again from a new instance object on the same DAGSTER_HOME: the same two
    # rows are read again
    project = node_project(tmp_path, engine)
    fresh = dg.DagsterInstance.get()  # a new object, from DAGSTER_HOME alone
    assert run_job(project, instance=fresh).success
    meta = latest(key, fresh)
    assert meta[ROWS_READ_KEY] == 2 and meta[FILTER_KEY] == "stateful: id > 5"
    assert meta[MARK_BEFORE_KEY]["value"] == 5 and meta[MARK_KEY]["value"] == 7
    assert out_ids(tmp_path / "out") == [1, 2, 3, 4, 5, 6, 7]

    # nothing new: no rows, the mark kept
    assert run_job(project).success
    meta = latest(key)
    assert meta[ROWS_READ_KEY] == 0 and meta[MARK_KEY]["value"] == 7


def test_the_mark_survives_a_new_process(tmp_path: Path, dagster_home: Path):
    project = node_project(tmp_path, "pandas")
    append_batch(tmp_path / "src", [1, 2, 3])
    assert run_job(project).success
    append_batch(tmp_path / "src", [4])
    result = run_cli("odibi-dagster", "run", project)  # another process, same DAGSTER_HOME
    assert result.returncode == 0, result.stderr
    meta = latest(["p", "orders"])
    assert meta[ROWS_READ_KEY] == 1 and meta[MARK_KEY]["value"] == 4
    assert out_ids(tmp_path / "out") == [1, 2, 3, 4]


@pytest.mark.parametrize("engine", ENGINES)
def test_a_read_only_source_is_read_incrementally_for_each_consumer(
    tmp_path: Path, dagster_home: Path, engine: str
):
    (tmp_path / "p.yaml").write_text(
        f"""
engine: {engine}
connections: {{fs: {{type: local, base_path: .}}}}
story: {{connection: fs, path: stories}}
pipelines:
  - pipeline: p
    nodes:
      - name: src
        read:
          connection: fs
          path: src
          format: delta
          incremental: {{mode: stateful, key_column: id}}
      - name: copy
        depends_on: [src]
        write: {{connection: fs, path: out, format: delta, mode: append}}
"""
    )
    append_batch(tmp_path / "src", [1, 2])
    assert run_job(tmp_path / "p.yaml").success
    append_batch(tmp_path / "src", [3, 4, 5])
    result = run_job(tmp_path / "p.yaml")
    assert result.success
    # the story tells what the source's read kept, and the consumer's input says so too
    story = json.loads((tmp_path / "stories" / "p" / result.run_id / "story.json").read_text())
    nodes = {n["node"]: n for n in story["nodes"]}
    assert nodes["src"]["read"]["incremental"] == "incremental stateful: id > 2"
    assert list(nodes["copy"]["inputs"]) == ["src (incremental stateful: id > 2)"]
    meta = latest(["p", "copy"])
    assert meta[f"{ROWS_READ_KEY}/src"] == 3
    assert meta[f"{FILTER_KEY}/src"] == "stateful: id > 2"
    assert meta[f"{MARK_KEY}/src"]["value"] == 5
    assert out_ids(tmp_path / "out") == [1, 2, 3, 4, 5]


def test_watermark_lag_reads_late_rows_again_and_the_mark_never_moves_back(
    tmp_path: Path, dagster_home: Path
):
    (tmp_path / "p.yaml").write_text(
        """
connections: {fs: {type: local, base_path: .}}
pipelines:
  - pipeline: p
    nodes:
      - name: events
        read:
          connection: fs
          path: src
          format: delta
          incremental: {mode: stateful, column: at, watermark_lag: 1h}
        write: {connection: fs, path: out.parquet, format: parquet}
"""
    )

    def land(*hours: float) -> None:
        at = [datetime(2024, 1, 1) + timedelta(hours=h) for h in hours]
        write_deltalake(
            str(tmp_path / "src"), pa.table({"at": pa.array(at, pa.timestamp("us"))}), mode="append"
        )

    land(10, 11)
    assert run_job(tmp_path / "p.yaml").success
    assert latest(["p", "events"])[MARK_KEY]["value"] == "2024-01-01T11:00:00"
    land(10.5, 12)  # 10:30 landed late
    assert run_job(tmp_path / "p.yaml").success
    meta = latest(["p", "events"])
    assert meta[FILTER_KEY] == "stateful: at > '2024-01-01T10:00:00'"
    assert meta[ROWS_READ_KEY] == 3  # 11:00 again, the late 10:30, and 12:00
    assert meta[MARK_KEY]["value"] == "2024-01-01T12:00:00"
    land(9)  # only a row older than the mark minus the lag: not read, the mark kept
    assert run_job(tmp_path / "p.yaml").success
    meta = latest(["p", "events"])
    assert meta[ROWS_READ_KEY] == 1  # 12:00, within the lag
    assert meta[MARK_KEY]["value"] == "2024-01-01T12:00:00"


@pytest.mark.parametrize("engine", ENGINES)
def test_a_rolling_window_reads_the_recent_rows_only(tmp_path: Path, engine: str):
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    at = [now - timedelta(days=d) for d in (10, 4, 2, 0.1)]
    write_deltalake(
        str(tmp_path / "src"),
        pa.table({"id": [1, 2, 3, 4], "at": pa.array(at, pa.timestamp("us"))}),
    )
    (tmp_path / "p.yaml").write_text(
        f"""
engine: {engine}
connections: {{fs: {{type: local, base_path: .}}}}
pipelines:
  - pipeline: p
    nodes:
      - name: recent
        read:
          connection: fs
          path: src
          format: delta
          incremental: {{mode: rolling_window, column: at, lookback: 3, unit: day}}
        transform: {{steps: ["SELECT id FROM __result__"]}}
        write: {{connection: fs, path: out, format: delta}}
"""
    )
    result = run_job(odibi_dagster.load_definitions(tmp_path / "p.yaml"))
    assert result.success, failure_text(result)
    assert out_ids(tmp_path / "out") == [3, 4]
    (mat,) = result.get_asset_materialization_events()
    meta = mat.materialization.metadata
    assert meta[FILTER_KEY].value.startswith("rolling_window: at >= '")
    assert MARK_KEY not in meta  # nothing to remember
