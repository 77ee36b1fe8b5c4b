"""The keyed write modes (upsert, append_once, merge) beyond one engine call: writers at
the same time in real processes and threads, a writer killed mid-write, a Dagster run's
metadata, and ADLS on the emulators. What the modes do to a table, on both engines and
every format, is in test_engine_contract.py. Tables are read back without odibi_dagster
(delta-rs, pyarrow)."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable, write_deltalake

import odibi_dagster
from odibi_dagster.engines.pandas import PandasEngine
from odibi_dagster.errors import OdibiRunError
from odibi_dagster.resources.local import LocalStorage
from odibi_dagster_tests.support.lake import CUR, Lake
from odibi_dagster_tests.support.runs import failure_text, run_job

WRITERS = 4
SHARED = 5  # keys every writer writes


def writer_rows(writer: int) -> pd.DataFrame:
    """Keys 0..SHARED-1 (every writer's) and (writer+1)*100+j (this writer's own)."""
    own = [(writer + 1) * 100 + j for j in range(3)]
    keys = list(range(SHARED)) + own
    return pd.DataFrame({"k": keys, "writer": [f"w{writer}"] * len(keys)})


def merge_at_once(path: str, mode: str, writer: int, barrier: Any) -> str:
    """Write ``writer``'s rows to the Delta table at ``path`` in ``mode`` once every
    writer is ready: "" when it landed, else the error."""
    loc = LocalStorage(base_path=str(Path(path).parent)).location(Path(path).name)
    df = writer_rows(writer)
    barrier.wait()
    try:
        PandasEngine().merge(df, loc, "delta", mode, {"keys": ["k"]}, where=f"node 'w{writer}'")
    except OdibiRunError as exc:
        return str(exc)
    return ""


@pytest.fixture(scope="module")
def writers() -> Any:
    ctx = multiprocessing.get_context("spawn")
    with ctx.Manager() as manager, ctx.Pool(WRITERS) as pool:
        yield pool, manager


def check_landed_once(path: Path, outcomes: list[str], mode: str, before: dict[int, str]) -> None:
    """Every writer's merge landed; each key is in the table once, the shared ones with
    one writer's value (upsert) or as they were (append_once)."""
    assert outcomes == [""] * WRITERS, outcomes
    rows = DeltaTable(str(path)).to_pyarrow_table().to_pylist()
    counts = Counter(r["k"] for r in rows)
    expected_keys = set(range(SHARED)) | {
        (w + 1) * 100 + j for w in range(WRITERS) for j in range(3)
    }
    assert set(counts) == expected_keys | set(before)
    assert set(counts.values()) == {1}  # no key doubled
    values = {r["k"]: r["writer"] for r in rows}
    for w in range(WRITERS):
        assert all(values[(w + 1) * 100 + j] == f"w{w}" for j in range(3))
    for k in range(SHARED):
        if mode == "append_once" and k in before:
            assert values[k] == before[k]
        else:
            assert values[k] in {f"w{w}" for w in range(WRITERS)}


@pytest.mark.parametrize("mode", ["upsert", "append_once"])
@pytest.mark.parametrize("table_there", [True, False], ids=["existing", "created"])
def test_merges_into_one_delta_table_at_once_all_land_once(
    writers: Any, tmp_path: Path, mode: str, table_there: bool
):
    path = tmp_path / "table"
    before = {0: "before", 1: "before"} if table_there else {}
    if table_there:
        write_deltalake(
            str(path), pd.DataFrame({"k": list(before), "writer": list(before.values())})
        )
    pool, manager = writers
    barrier = manager.Barrier(WRITERS, timeout=60)
    outcomes = pool.starmap(merge_at_once, [(str(path), mode, w, barrier) for w in range(WRITERS)])
    check_landed_once(path, outcomes, mode, before)


@pytest.mark.spark
@pytest.mark.parametrize("session", ["spark", "spark_connect"])
def test_spark_merges_into_one_delta_table_at_once_all_land_once(
    request: pytest.FixtureRequest, session: str, tmp_path: Path
):
    # over Spark Connect too: the conflict arrives as a pyspark.errors exception there
    from odibi_dagster.engines.spark import SparkEngine

    spark = request.getfixturevalue(session)
    engine = SparkEngine(spark)
    path = tmp_path / "table"
    write_deltalake(str(path), pd.DataFrame({"k": [0], "writer": ["before"]}))
    loc = LocalStorage(base_path=str(tmp_path)).location("table")
    frames = [spark.createDataFrame(writer_rows(w)) for w in range(2)]
    barrier = threading.Barrier(2)
    outcomes = [""] * 2

    def write(w: int) -> None:
        barrier.wait()
        try:
            engine.merge(frames[w], loc, "delta", "upsert", {"keys": ["k"]}, where=f"node 'w{w}'")
        except OdibiRunError as exc:
            outcomes[w] = str(exc)

    threads = [threading.Thread(target=write, args=(w,)) for w in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outcomes == ["", ""]
    rows = DeltaTable(str(path)).to_pyarrow_table().to_pylist()
    counts = Counter(r["k"] for r in rows)
    assert set(counts.values()) == {1}
    assert set(counts) == set(range(SHARED)) | {
        (w + 1) * 100 + j for w in range(2) for j in range(3)
    }


# --------------------------------------------------------------------------- killed mid-write

KILLED_WRITER = """
import sys
import pandas as pd
from odibi_dagster.engines.pandas import PandasEngine
from odibi_dagster.resources.local import LocalStorage
root, name, fmt, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
df = pd.DataFrame({"k": range(n), "v": ["new"] * n})
PandasEngine().merge(df, LocalStorage(base_path=root).location(name), fmt, "upsert", {"keys": ["k"]})
"""


def start_writer(root: Path, name: str, fmt: str, rows: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    args = [sys.executable, "-c", KILLED_WRITER, str(root), name, fmt, str(rows)]
    return subprocess.Popen(args, env=env)


def kill_when(proc: subprocess.Popen[bytes], seen: Any) -> None:
    """SIGKILL ``proc`` as soon as ``seen()`` (it is writing); fail if it finished first."""
    deadline = time.monotonic() + 120
    while not seen():
        assert proc.poll() is None, "the writer finished before it could be killed mid-write"
        assert time.monotonic() < deadline
        time.sleep(0.002)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


ROWS = 1_500_000


def test_an_upsert_killed_mid_write_leaves_the_old_file_and_a_rerun_completes(tmp_path: Path):
    old = pd.DataFrame({"k": range(ROWS), "v": ["old"] * ROWS})
    old.to_parquet(tmp_path / "t.parquet", index=False)
    proc = start_writer(tmp_path, "t.parquet", "parquet", ROWS + 10)
    kill_when(proc, lambda: any(p.name.startswith(".t.parquet.tmp-") for p in tmp_path.iterdir()))

    table = pq.read_table(tmp_path / "t.parquet")  # the old file, whole
    assert table.num_rows == ROWS and set(table.column("v").to_pylist()) == {"old"}

    proc = start_writer(tmp_path, "t.parquet", "parquet", ROWS + 10)
    assert proc.wait() == 0
    table = pq.read_table(tmp_path / "t.parquet")
    assert table.num_rows == ROWS + 10 and set(table.column("v").to_pylist()) == {"new"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.parquet"]  # leftovers gone


def test_a_delta_upsert_killed_mid_merge_leaves_the_old_version_and_a_rerun_completes(
    tmp_path: Path,
):
    path = tmp_path / "t"
    write_deltalake(str(path), pd.DataFrame({"k": range(ROWS), "v": ["old"] * ROWS}))
    files = set(os.listdir(path))
    proc = start_writer(tmp_path, "t", "delta", ROWS + 10)
    kill_when(proc, lambda: bool(set(os.listdir(path)) - files))  # its first data file

    table = DeltaTable(str(path))
    assert table.version() == 0
    data = table.to_pyarrow_table()
    assert data.num_rows == ROWS and set(data.column("v").to_pylist()) == {"old"}

    proc = start_writer(tmp_path, "t", "delta", ROWS + 10)
    assert proc.wait() == 0
    table = DeltaTable(str(path))
    assert table.version() == 1
    data = table.to_pyarrow_table()
    assert data.num_rows == ROWS + 10 and set(data.column("v").to_pylist()) == {"new"}


# --------------------------------------------------------------------------- a Dagster run

PROJECT = """
connections: {fs: {type: local, base_path: .}}
pipelines:
  - pipeline: p
    nodes:
      - name: changes
        read: {connection: fs, path: changes.csv, format: csv}
      - name: customers
        depends_on: [changes]
        transform:
          steps: ["SELECT id, name, op FROM changes"]
        write:
          connection: fs
          path: customers
          format: delta
          mode: MODE
          options: OPTIONS
"""


def keyed_run(
    tmp_path: Path, csv: str, mode: str, options: str, engine: str = "pandas"
) -> dict[str, Any]:
    (tmp_path / "changes.csv").write_text(textwrap.dedent(csv).lstrip())
    text = f"engine: {engine}\n" + PROJECT.replace("MODE", mode).replace("OPTIONS", options)
    (tmp_path / "p.yaml").write_text(text)
    result = run_job(odibi_dagster.load_definitions(tmp_path / "p.yaml"), "p")
    assert result.success
    (mat,) = [
        m
        for m in result.asset_materializations_for_node("p__customers")
        if m.asset_key.path == ["p", "customers"]
    ]
    return {k: getattr(v, "value", v) for k, v in mat.metadata.items()}


def test_a_run_records_the_rows_an_upsert_and_a_merge_inserted_updated_deleted(tmp_path: Path):
    first = keyed_run(tmp_path, "id,name,op\n1,ann,U\n2,bob,U\n", "upsert", "{keys: [id]}")
    assert first["odibi/rows_inserted"] == 2 and first["odibi/rows_updated"] == 0
    assert first["dagster/row_count"] == 2

    changes = "id,name,op\n2,bobby,U\n3,cy,U\n"
    second = keyed_run(tmp_path, changes, "upsert", "{keys: [id]}")
    assert (second["odibi/rows_inserted"], second["odibi/rows_updated"]) == (1, 1)
    assert second["odibi/rows_deleted"] == 0

    merge = "{keys: [id], delete_condition: \"op = 'D'\", update_columns: [name]}"
    third = keyed_run(tmp_path, "id,name,op\n1,x,D\n3,cyd,U\n", "merge", merge)
    assert (third["odibi/rows_inserted"], third["odibi/rows_updated"]) == (0, 1)
    assert third["odibi/rows_deleted"] == 1
    rows = DeltaTable(str(tmp_path / "customers")).to_pyarrow_table().to_pylist()
    assert sorted((r["id"], r["name"]) for r in rows) == [(2, "bobby"), (3, "cyd")]


def test_a_spark_run_records_the_rows_an_upsert_inserted_and_updated(spark: Any, tmp_path: Path):
    first = keyed_run(tmp_path, "id,name,op\n1,ann,U\n2,bob,U\n", "upsert", "{keys: [id]}", "spark")
    assert (first["odibi/rows_inserted"], first["odibi/rows_updated"]) == (2, 0)
    changes = "id,name,op\n2,bobby,U\n3,cy,U\n"
    for _ in range(2):
        again = keyed_run(tmp_path, changes, "upsert", "{keys: [id]}", "spark")
    assert (again["odibi/rows_inserted"], again["odibi/rows_updated"]) == (0, 2)
    assert again["odibi/rows_deleted"] == 0 and again["dagster/row_count"] == 2
    rows = DeltaTable(str(tmp_path / "customers")).to_pyarrow_table().to_pylist()
    assert sorted((r["id"], r["name"]) for r in rows) == [(1, "ann"), (2, "bobby"), (3, "cy")]


def test_a_run_with_repeated_keys_fails_naming_node_and_keys(tmp_path: Path):
    (tmp_path / "changes.csv").write_text("id,name,op\n1,ann,U\n1,again,U\n")
    text = PROJECT.replace("MODE", "upsert").replace("OPTIONS", "{keys: [id]}")
    (tmp_path / "p.yaml").write_text(text)
    result = run_job(odibi_dagster.load_definitions(tmp_path / "p.yaml"), "p")
    assert not result.success
    message = failure_text(result)
    assert "node 'customers' (" in message and "(id=1)" in message
    assert not (tmp_path / "customers").exists()


# --------------------------------------------------------------------------- ADLS (Azurite)


def test_delta_upsert_on_adls(lake: Lake):
    engine = PandasEngine()
    loc = lake.resource(CUR).location("keyed/customers")
    first = pd.DataFrame({"id": [1, 2], "name": ["ann", "bob"]})
    change = pd.DataFrame({"id": [2, 3], "name": ["bobby", "cy"]})
    engine.merge(first, loc, "delta", "upsert", {"keys": ["id"]})
    for _ in range(2):
        outcome = engine.merge(change, loc, "delta", "upsert", {"keys": ["id"]})
    assert (outcome.inserted, outcome.updated) == (0, 2)
    table = DeltaTable(loc.delta_uri, storage_options=loc.storage_options)
    rows = sorted((r["id"], r["name"]) for r in table.to_pyarrow_table().to_pylist())
    assert rows == [(1, "ann"), (2, "bobby"), (3, "cy")]
