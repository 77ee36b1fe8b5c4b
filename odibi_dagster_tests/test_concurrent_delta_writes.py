"""Runs writing one Delta table at the same time, in real processes: appends all land
once; writes that conflict fail whole, saying so; no row is lost silently or written
twice. The table is read back with delta-rs, never through odibi_dagster."""

from __future__ import annotations

import multiprocessing
from collections import Counter
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd
import pytest
from deltalake import DeltaTable, write_deltalake

from odibi_dagster.engines.pandas import PandasEngine
from odibi_dagster.errors import OdibiRunError
from odibi_dagster.resources.local import LocalStorage
from odibi_dagster_tests.support.overlap import BARRIER_STEP, run_at_once

PROJECT = """
project: lake
transforms: [steps.py]
connections: {fs: {type: local, base_path: .}}
pipelines:
  - pipeline: p
    nodes:
      - name: src
        read: {connection: fs, path: "${ODIBI_TEST_INPUT}", format: csv}
      - name: appended
        depends_on: [src]
        transform: {steps: [{function: odibi_test_wait_for_every_run, params: {source: src}}]}
        write: {connection: fs, path: table, format: delta, mode: append}
"""


def table_rows(path: Path) -> list[tuple[str, int]]:
    return sorted(
        (r["writer"], r["i"]) for r in DeltaTable(str(path)).to_pyarrow_table().to_pylist()
    )


@pytest.mark.slow  # two CLI runs
def test_two_runs_appending_to_one_delta_table_at_once_both_land_once(
    tmp_path: Path, dagster_home: Path
):
    write_deltalake(str(tmp_path / "table"), pd.DataFrame({"writer": ["before"], "i": [0]}))
    (tmp_path / "project.yaml").write_text(PROJECT)
    (tmp_path / "steps.py").write_text(BARRIER_STEP)
    envs = {}
    for name, n in (("a", 3), ("b", 5)):
        pd.DataFrame({"writer": [name] * n, "i": range(n)}).to_csv(
            tmp_path / f"in_{name}.csv", index=False
        )
        envs[name] = {"ODIBI_TEST_INPUT": f"in_{name}.csv"}
    for name, (code, output) in run_at_once(tmp_path, "p", envs).items():
        assert code == 0, f"run {name}: {output[-3000:]}"
    assert sorted(p.name for p in (tmp_path / "barrier").iterdir()) == ["a", "b"]

    expected = [("a", i) for i in range(3)] + [("b", i) for i in range(5)] + [("before", 0)]
    assert table_rows(tmp_path / "table") == expected
    assert DeltaTable(str(tmp_path / "table")).version() == 2  # one commit each
    assert all(r.status == dg.DagsterRunStatus.SUCCESS for r in dg.DagsterInstance.get().get_runs())


# --------------------------------------------------------------------------- many writers


def write_at_once(path: str, mode: str, writer: str, rows: int, barrier: Any) -> str:
    """Write ``rows`` rows of ``writer`` to the Delta table at ``path`` with the pandas
    engine once every writer is ready: "" when written, "skipped" when not (mode
    ignore), else the error message."""
    loc = LocalStorage(base_path=str(Path(path).parent)).location(Path(path).name)
    df = pd.DataFrame({"writer": [writer] * rows, "i": range(rows)})
    barrier.wait()
    try:
        written = PandasEngine().write(df, loc, "delta", mode, where=f"node '{writer}' (p.yaml:1)")
    except OdibiRunError as exc:
        return str(exc)
    return "" if written else "skipped"


WRITERS = 4
ROUNDS = 3


@pytest.fixture(scope="module")
def writers() -> Any:
    """A pool of writer processes and a barrier they wait at, started once."""
    ctx = multiprocessing.get_context("spawn")
    with ctx.Manager() as manager, ctx.Pool(WRITERS) as pool:
        yield pool, manager


def race(writers: Any, path: Path, mode: str) -> dict[str, str]:
    """Every writer writes ``mode`` to ``path`` at once: writer -> error ("" if written)."""
    pool, manager = writers
    barrier = manager.Barrier(WRITERS, timeout=60)
    names = [f"w{i}" for i in range(WRITERS)]
    args = [(str(path), mode, name, 2 + i, barrier) for i, name in enumerate(names)]
    return dict(zip(names, pool.starmap(write_at_once, args), strict=True))


def rows_of(writer: str) -> list[tuple[str, int]]:
    return [(writer, i) for i in range(2 + int(writer[1:]))]


def assert_clear_conflict(writer: str, error: str, path: Path) -> None:
    """A failure that names the node and the table and says to re-run: the commit lost
    to another, or the write began while another was creating the table (data files,
    no log yet)."""
    assert error.startswith(f"node '{writer}' (p.yaml:1): "), error
    assert str(path) in error
    lost = "another write to Delta table" in error and "nothing of this write was committed"
    assert lost or "if another run is creating a Delta table there right now" in error, error
    assert "re-run" in error.lower(), error


def test_appends_to_one_table_at_once_all_land_once(writers: Any, tmp_path: Path):
    for n in range(ROUNDS):
        path = tmp_path / f"t{n}"
        write_deltalake(str(path), pd.DataFrame({"writer": ["before"], "i": [0]}))
        errors = race(writers, path, "append")
        assert errors == dict.fromkeys(errors, "")  # delta-rs commits each again on conflict
        expected = sorted([("before", 0)] + [r for w in errors for r in rows_of(w)])
        assert table_rows(path) == expected


def test_first_appends_creating_a_table_land_once_or_fail_saying_so(writers: Any, tmp_path: Path):
    for n in range(ROUNDS):
        path = tmp_path / f"t{n}"
        errors = race(writers, path, "append")
        landed = [w for w, e in errors.items() if not e]
        for writer, error in errors.items():
            if error:
                assert_clear_conflict(writer, error, path)
        assert landed  # the first to commit creates the table
        assert table_rows(path) == sorted(r for w in landed for r in rows_of(w))


@pytest.mark.parametrize("table", ["existing", "new"])
def test_overwrites_at_once_leave_one_writers_rows_or_fail_saying_so(
    writers: Any, tmp_path: Path, table: str
):
    for n in range(ROUNDS):
        path = tmp_path / f"t{n}"
        if table == "existing":
            write_deltalake(str(path), pd.DataFrame({"writer": ["before"], "i": [0]}))
        errors = race(writers, path, "overwrite")
        for writer, error in errors.items():
            if error:
                assert_clear_conflict(writer, error, path)
        rows = table_rows(path)
        (last,) = Counter(w for w, _ in rows)  # one writer's rows, never a mix
        assert not errors[last] and rows == rows_of(last)


def test_writes_in_mode_error_at_once_create_the_table_once(writers: Any, tmp_path: Path):
    for n in range(ROUNDS):
        path = tmp_path / f"t{n}"
        errors = race(writers, path, "error")
        (landed,) = [w for w, e in errors.items() if not e]
        for writer, error in errors.items():
            if writer != landed:
                assert error.startswith(f"node '{writer}' (p.yaml:1): output path"), error
                assert "already exists and the write mode is 'error'" in error, error
        assert table_rows(path) == rows_of(landed)


def test_writes_in_mode_ignore_at_once_create_the_table_once(writers: Any, tmp_path: Path):
    for n in range(ROUNDS):
        path = tmp_path / f"t{n}"
        outcomes = race(writers, path, "ignore")
        (landed,) = [w for w, e in outcomes.items() if not e]
        assert {e for w, e in outcomes.items() if w != landed} == {"skipped"}
        assert table_rows(path) == rows_of(landed)
