"""Writers of one CSV, JSON or Parquet target at the same time, in real processes: every
append lands once, or fails saying so; a writer killed mid-write leaves the old output
whole and nothing a folder read counts, and the next write of the target removes what
it left. Targets are read back without odibi_dagster (pyarrow, pandas, the blob bytes).
"""

from __future__ import annotations

import io
import multiprocessing
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq
import pytest

from odibi_dagster.engines import replace
from odibi_dagster.engines.pandas import PandasEngine
from odibi_dagster.errors import OdibiRunError
from odibi_dagster.resources.azure_adls import AzureADLS
from odibi_dagster.resources.base import Location
from odibi_dagster.resources.local import LocalStorage
from odibi_dagster_tests.support.cli import cli_env
from odibi_dagster_tests.support.lake import CUR, Lake
from odibi_dagster_tests.support.overlap import BARRIER_STEP, run_at_once

WHERE = "node 'n' (p.yaml:3)"
NAMES = {"csv": "out.csv", "json": "out.json", "parquet": "out.parquet"}
WRITERS = 4
APPENDS = 3
ROWS = 20_000


def frame(writer: int, seq: int, rows: int) -> pd.DataFrame:
    return pd.DataFrame(
        {"writer": [writer] * rows, "seq": [seq] * rows, "i": range(rows), "pad": "x" * 8}
    )


def keys(df: pd.DataFrame) -> list[tuple[int, int, int]]:
    return sorted(zip(df["writer"], df["seq"], df["i"], strict=True))


def rows_in(data: bytes, fmt: str) -> pd.DataFrame:
    if fmt == "parquet":
        return pq.read_table(io.BytesIO(data)).to_pandas()
    if fmt == "csv":
        return pd.read_csv(io.BytesIO(data))
    return pd.read_json(io.BytesIO(data), lines=True)


def location(where: dict[str, Any]) -> Location:
    """A picklable description of a target -> its Location (local disk or ADLS)."""
    if where["kind"] == "local":
        return LocalStorage(base_path=where["base"]).location(where["path"])
    return AzureADLS(**where["connection"]).location(where["path"])


# --------------------------------------------------------------------------- many writers


def append_at_once(
    where: dict[str, Any], fmt: str, writer: int, appends: int, rows: int, barrier: Any
) -> list[str]:
    """Append ``appends`` frames of ``rows`` rows, one after the other, once every writer
    is ready: the error message of each append that failed."""
    loc = location(where)
    engine = PandasEngine()
    frames = [frame(writer, seq, rows) for seq in range(appends)]
    barrier.wait()
    errors = []
    for df in frames:
        try:
            engine.write(df, loc, fmt, "append", where=f"node 'w{writer}' (p.yaml:1)")
        except OdibiRunError as exc:
            errors.append(str(exc))
    return errors


@pytest.fixture(scope="module")
def writers() -> Any:
    """A pool of writer processes and a barrier they wait at, started once."""
    ctx = multiprocessing.get_context("spawn")
    with ctx.Manager() as manager, ctx.Pool(WRITERS) as pool:
        yield pool, manager


def race(writers: Any, where: dict[str, Any], fmt: str, rows: int = ROWS) -> list[str]:
    """Every writer appends to the target at once; the errors of all of them."""
    pool, manager = writers
    barrier = manager.Barrier(WRITERS, timeout=120)
    args = [(where, fmt, w, APPENDS, rows, barrier) for w in range(WRITERS)]
    return [e for errors in pool.starmap(append_at_once, args) for e in errors]


def expected_keys(rows: int = ROWS) -> list[tuple[int, int, int]]:
    first = [(-1, 0, 0)]
    return sorted(
        first + [(w, s, i) for w in range(WRITERS) for s in range(APPENDS) for i in range(rows)]
    )


@pytest.mark.parametrize("fmt", ["parquet", "csv", "json"])
def test_appends_from_several_processes_to_one_local_file_all_land(
    writers: Any, tmp_path: Path, fmt: str
):
    where = {"kind": "local", "base": str(tmp_path), "path": NAMES[fmt]}
    PandasEngine().write(frame(-1, 0, 1), location(where), fmt, "overwrite")
    errors = race(writers, where, fmt)
    assert errors == []
    found = rows_in((tmp_path / NAMES[fmt]).read_bytes(), fmt)
    assert len(found) == 1 + WRITERS * APPENDS * ROWS
    assert keys(found) == expected_keys()
    assert sorted(p.name for p in tmp_path.iterdir()) == [NAMES[fmt]]  # no lock, no temp


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_appends_from_several_processes_to_one_blob_all_land(writers: Any, lake: Lake, fmt: str):
    connection = {
        "account": CUR,
        "container": lake.cur_container,
        "auth_mode": "direct_key",
        "account_key": lake.key(CUR),
        "blob_endpoint": lake.azurite.blob_endpoint(CUR),
    }
    where = {"kind": "adls", "connection": connection, "path": f"t/{NAMES[fmt]}"}
    PandasEngine().write(frame(-1, 0, 1), location(where), fmt, "overwrite")
    rows = 5_000
    errors = race(writers, where, fmt, rows)
    assert errors == []
    found = rows_in(lake.read_blob(f"t/{NAMES[fmt]}"), fmt)
    assert len(found) == 1 + WRITERS * APPENDS * rows
    assert keys(found) == expected_keys(rows)
    assert lake.blobs() == [f"t/{NAMES[fmt]}"]  # no lock blob, no temporary blob


# --------------------------------------------------------------------------- a writer waits


def test_an_append_that_cannot_get_the_lock_in_time_fails_saying_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    loc = LocalStorage(base_path=str(tmp_path)).location("out.parquet")
    engine = PandasEngine()
    engine.write(frame(-1, 0, 2), loc, "parquet", "overwrite")
    before = (tmp_path / "out.parquet").read_bytes()
    monkeypatch.setattr(replace, "LOCK_WAIT", 0.3)
    holding = replace.target_lock(loc.fs, loc.fs_path, uri=loc.uri)  # another write's
    with holding, pytest.raises(OdibiRunError) as err:
        engine.write(frame(1, 0, 2), loc, "parquet", "append", where=WHERE)
    message = str(err.value)
    assert message.startswith(f"{WHERE}: another write of '{loc.uri}' ")
    assert "nothing was written" in message and "re-run" in message.lower()
    assert (tmp_path / "out.parquet").read_bytes() == before
    engine.write(frame(1, 0, 2), loc, "parquet", "append", where=WHERE)  # released: it lands
    assert len(pq.read_table(tmp_path / "out.parquet")) == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.parquet"]


def test_an_append_to_a_blob_that_cannot_get_the_lease_in_time_fails_saying_so(
    lake: Lake, monkeypatch: pytest.MonkeyPatch
):
    loc = lake.resource(CUR).location("t/out.csv")
    engine = PandasEngine()
    engine.write(frame(-1, 0, 2), loc, "csv", "overwrite")
    before = lake.read_blob("t/out.csv")
    monkeypatch.setattr(replace, "LOCK_WAIT", 1.0)
    holding = replace.target_lock(loc.fs, loc.fs_path, uri=loc.uri)  # another write's
    with holding, pytest.raises(OdibiRunError) as err:
        engine.write(frame(1, 0, 2), loc, "csv", "append", where=WHERE)
    assert str(err.value).startswith(f"{WHERE}: another write of '{loc.uri}' ")
    assert lake.read_blob("t/out.csv") == before
    engine.write(frame(1, 0, 2), loc, "csv", "append", where=WHERE)
    assert len(rows_in(lake.read_blob("t/out.csv"), "csv")) == 4
    assert lake.blobs() == ["t/out.csv"]


def test_a_blob_write_whose_lease_was_taken_meanwhile_writes_nothing(lake: Lake):
    from azure.storage.blob import BlobClient, BlobLeaseClient

    loc = lake.resource(CUR).location("t/out.csv")
    PandasEngine().write(frame(-1, 0, 3), loc, "csv", "overwrite")
    before = lake.read_blob("t/out.csv")
    with replace.target_lock(loc.fs, loc.fs_path, uri=loc.uri, where=WHERE) as held:
        # as if this write had stalled past its lease: another one broke it and took it
        other = BlobClient.from_connection_string(
            lake.azurite.connection_string(CUR), lake.cur_container, "t/.out.csv.lock"
        )
        BlobLeaseClient(other).break_lease(lease_break_period=0)
        other.acquire_lease(lease_duration=15)
        with pytest.raises(OdibiRunError) as err:
            replace.write_file_atomically(
                loc.fs,
                loc.fs_path,
                lambda h: h.write(b"new\n"),
                uri=loc.uri,
                where=WHERE,
                lock=held,
            )
    assert str(err.value).startswith(f"{WHERE}: lost the lock of '{loc.uri}' while writing it")
    assert "nothing was written" in str(err.value)
    assert lake.read_blob("t/out.csv") == before
    assert lake.blobs() == ["t/.out.csv.lock", "t/out.csv"]  # the other write's lock


# --------------------------------------------------------------------------- killed mid-write

KILLED_WRITER = """
import sys
import pandas as pd
from odibi_dagster.engines.pandas import PandasEngine
from odibi_dagster.resources.local import LocalStorage
base, path, fmt, rows = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
df = pd.DataFrame({"writer": 9, "seq": 0, "i": range(rows), "pad": "y" * 40})
PandasEngine().write(df, LocalStorage(base_path=base).location(path), fmt, "append")
"""


def temporaries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".tmp-" in p.name)


def kill_mid_write(tmp_path: Path, rel: str, fmt: str, rows: int) -> list[str]:
    """Start an append of ``rows`` rows in another process and kill -9 it once its
    temporary file is there; the temporary files it left."""
    folder = (tmp_path / rel).parent
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED_WRITER, str(tmp_path), rel, fmt, str(rows)],
        env=cli_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 60
    try:
        while not temporaries(folder):
            if proc.poll() is not None:
                pytest.fail(f"the writer ended before it was killed: {proc.stderr.read()!r}")  # type: ignore[union-attr]
            if time.monotonic() > deadline:
                pytest.fail("the writer never created its temporary file in 60 s")
            time.sleep(0.005)
        time.sleep(0.05)  # some bytes in it
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    left = temporaries(folder)
    assert left, "the writer finished before it was killed"
    return left


@pytest.mark.parametrize(("fmt", "rows"), [("csv", 3_000_000), ("parquet", 6_000_000)])
def test_a_writer_killed_mid_append_leaves_nothing_a_read_counts_and_the_next_write_clears_it(
    tmp_path: Path, fmt: str, rows: int
):
    (tmp_path / "data").mkdir()
    rel = f"data/{NAMES[fmt]}"
    storage = LocalStorage(base_path=str(tmp_path))
    engine = PandasEngine()
    engine.write(frame(-1, 0, 3), storage.location(rel), fmt, "overwrite")
    before = (tmp_path / rel).read_bytes()

    left = kill_mid_write(tmp_path, rel, fmt, rows)

    assert (tmp_path / rel).read_bytes() == before  # the old output is whole
    # what it left is hidden from a folder read (and from a listing for sensors)
    assert all(n.startswith(".") for n in left), left
    assert len(engine.read(storage.location("data"), fmt)) == 3
    assert [f.path for f in storage.list_files("data")] == [rel]

    # the next write of the target removes it (the writer that left it is gone)
    engine.write(frame(1, 0, 2), storage.location(rel), fmt, "append")
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == [NAMES[fmt]]
    assert len(rows_in((tmp_path / rel).read_bytes(), fmt)) == 5


# --------------------------------------------------------------------------- leftovers


def test_the_next_write_removes_temporaries_of_its_target_only(tmp_path: Path):
    storage = LocalStorage(base_path=str(tmp_path))
    engine = PandasEngine()
    engine.write(frame(-1, 0, 3), storage.location("out.csv"), "csv", "overwrite")
    hex32 = uuid.uuid4().hex
    two_hours_ago = time.time() - 2 * 3600
    names = {
        f".out.csv.tmp-{hex32}": None,  # a hidden temporary of this target: its writer died
        f"out.csv.tmp-{hex32}": two_hours_ago,  # an earlier version's, two hours old
        f"out.csv.tmp-{uuid.uuid4().hex}": None,  # an earlier version's, fresh: may be live
        f".other.csv.tmp-{hex32}": two_hours_ago,  # another target's
        "out.csv.tmp-notes": two_hours_ago,  # not a temporary name this package makes
    }
    for name, mtime in names.items():
        (tmp_path / name).write_text("writer,seq,i,pad\n9,9,9,half-writ")
        if mtime:
            os.utime(tmp_path / name, (mtime, mtime))
    engine.write(frame(1, 0, 1), storage.location("out.csv"), "csv", "append")
    kept = sorted(p.name for p in tmp_path.iterdir())
    assert kept == sorted(["out.csv", *list(names)[2:]])
    assert len(pd.read_csv(tmp_path / "out.csv")) == 4


def test_the_next_write_of_a_blob_removes_the_hidden_temporaries_of_dead_writers(lake: Lake):
    loc = lake.resource(CUR).location("t/out.csv")
    engine = PandasEngine()
    engine.write(frame(-1, 0, 3), loc, "csv", "overwrite")
    hex32 = uuid.uuid4().hex
    left = [
        f"t/.out.csv.tmp-{hex32}",  # a file
        f"t/.out.csv.tmp-{uuid.uuid4().hex}/part-0.csv",  # a folder (Spark's)
        f"t/.out.csv.tmp-{uuid.uuid4().hex}/_SUCCESS",
    ]
    other = f"t/.other.csv.tmp-{hex32}"
    for name in [*left, other]:
        lake.azurite.upload_blob(CUR, lake.cur_container, name, b"writer,seq\n9,9\n")
    engine.write(frame(1, 0, 1), loc, "csv", "append")
    assert lake.blobs() == sorted([other, "t/out.csv"])
    assert len(rows_in(lake.read_blob("t/out.csv"), "csv")) == 4


KILLED_BLOB_WRITER = """
import json, sys
import pandas as pd
from odibi_dagster.engines.pandas import PandasEngine
from odibi_dagster.resources.azure_adls import AzureADLS
connection, path, rows = json.loads(sys.argv[1]), sys.argv[2], int(sys.argv[3])
df = pd.DataFrame({"writer": 9, "seq": 0, "i": range(rows), "pad": "y" * 40})
PandasEngine().write(df, AzureADLS(**connection).location(path), "csv", "append")
"""


@pytest.mark.slow  # waits for the killed writer's lease to lapse
def test_a_blob_writer_killed_mid_append_holds_up_the_next_write_only_until_its_lease_lapses(
    lake: Lake,
):
    import json

    connection = {
        "account": CUR,
        "container": lake.cur_container,
        "auth_mode": "direct_key",
        "account_key": lake.key(CUR),
        "blob_endpoint": lake.azurite.blob_endpoint(CUR),
    }
    loc = AzureADLS(**connection).location("t/out.csv")
    engine = PandasEngine()
    engine.write(frame(-1, 0, 3), loc, "csv", "overwrite")
    before = lake.read_blob("t/out.csv")
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED_BLOB_WRITER, json.dumps(connection), "t/out.csv", "2000000"],
        env=cli_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 60
    try:
        while "t/.out.csv.lock" not in lake.blobs():  # it holds the lease: it is writing
            if proc.poll() is not None:
                pytest.fail(f"the writer ended before it was killed: {proc.stderr.read()!r}")  # type: ignore[union-attr]
            if time.monotonic() > deadline:
                pytest.fail("the writer never took the lock in 60 s")
            time.sleep(0.01)
        time.sleep(0.5)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    assert lake.read_blob("t/out.csv") == before
    started = time.monotonic()
    engine.write(frame(1, 0, 2), loc, "csv", "append", where=WHERE)
    assert time.monotonic() - started < 30  # the lease lapsed (15 s) and the write went on
    assert len(rows_in(lake.read_blob("t/out.csv"), "csv")) == 5
    assert lake.blobs() == ["t/out.csv"]


# --------------------------------------------------------------------------- Spark


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_spark_appends_from_several_threads_to_one_folder_all_land(
    spark: Any, tmp_path: Path, fmt: str
):
    """Spark appends add part files, but two jobs writing one folder share its
    ``_temporary`` directory: the first to commit deletes what the other wrote."""
    import threading

    from odibi_dagster.engines.spark import SparkEngine

    engine = SparkEngine(spark)
    loc = LocalStorage(base_path=str(tmp_path)).location(NAMES[fmt])
    engine.write(spark.createDataFrame(frame(-1, 0, 1)), loc, fmt, "overwrite")
    rows = 1_000
    frames = [spark.createDataFrame(frame(w, 0, rows)).repartition(2) for w in range(WRITERS)]
    barrier = threading.Barrier(WRITERS, timeout=120)
    errors: list[str] = []

    def append(df: Any) -> None:
        barrier.wait()
        for _ in range(APPENDS):
            try:
                engine.write(df, loc, fmt, "append", where=WHERE)
            except OdibiRunError as exc:
                errors.append(str(exc))

    threads = [threading.Thread(target=append, args=(df,)) for df in frames]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert errors == []
    found = pd.concat(
        [
            pq.read_table(p).to_pandas() if fmt == "parquet" else pd.read_csv(p)
            for p in sorted((tmp_path / NAMES[fmt]).glob("part-*"))
        ]
    )
    assert len(found) == 1 + WRITERS * APPENDS * rows
    assert sorted(p.name for p in tmp_path.iterdir()) == [NAMES[fmt]]


# --------------------------------------------------------------------------- whole runs

PROJECT = """
project: lake
transforms: [steps.py]
connections: {fs: {type: local, base_path: .}}
pipelines:
  - pipeline: p
    nodes:
      - name: src
        read: {connection: fs, path: "${ODIBI_TEST_INPUT}", format: parquet}
      - name: appended
        depends_on: [src]
        transform: {steps: [{function: odibi_test_wait_for_every_run, params: {source: src}}]}
        write: {connection: fs, path: out.parquet, format: parquet, mode: append}
"""


@pytest.mark.slow  # three CLI runs
def test_runs_appending_to_one_parquet_file_at_once_all_land(tmp_path: Path, dagster_home: Path):
    big = 300_000  # what each run reads and rewrites, so the writes overlap
    frame(-1, 0, big).to_parquet(tmp_path / "out.parquet", index=False)
    (tmp_path / "project.yaml").write_text(PROJECT)
    (tmp_path / "steps.py").write_text(BARRIER_STEP)
    envs = {}
    for w in range(3):
        frame(w, 0, 50_000).to_parquet(tmp_path / f"in_{w}.parquet", index=False)
        envs[f"r{w}"] = {"ODIBI_TEST_INPUT": f"in_{w}.parquet"}
    for name, (code, output) in run_at_once(tmp_path, "p", envs).items():
        assert code == 0, f"run {name}: {output[-3000:]}"
    found = pq.read_table(tmp_path / "out.parquet").to_pandas()
    assert len(found) == big + 3 * 50_000
    assert sorted(found["writer"].unique()) == [-1, 0, 1, 2]
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".out.parquet")]
