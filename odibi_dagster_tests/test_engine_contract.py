"""The engine contract: what every registered engine does the same way.

Every test here runs once per engine of ``odibi_dagster.engines.registry.ENGINES``, so an
engine that registers gets the whole suite. Data goes in and comes out through files
written and read without the engines (pyarrow, csv, json, delta-rs), and frames are
compared as rows (``engine.head``), so nothing here knows pandas from Spark.
Behaviour only one engine has (pandas' option blame, Spark's session) is tested in that
engine's own module.
"""

from __future__ import annotations

import csv
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable, write_deltalake

from odibi_dagster import checks, quality, transform
from odibi_dagster.config.models import NodeConfig, Step, ValidationConfig
from odibi_dagster.engines import replace
from odibi_dagster.engines.base import Engine, RowFilter
from odibi_dagster.engines.messages import markdown_table
from odibi_dagster.engines.registry import ENGINE_NAMES, get_engine
from odibi_dagster.errors import OdibiRunError
from odibi_dagster.resources.local import LocalStorage
from odibi_dagster.transforms import run_steps
from odibi_dagster.vocabulary import FORMATS

WHERE = "node 'n' (p.yaml:3)"
ROWS = [
    {"id": 1, "g": "a", "x": 1.5},
    {"id": 2, "g": "b", "x": None},
    {"id": 3, "g": "a", "x": 3.5},
]


# engines that need a service of their own carry its marker (see conftest.py);
# spark_connect: the Spark engine on a Spark Connect session (a local server)
ENGINE_MARKS = {"spark": pytest.mark.spark, "spark_connect": pytest.mark.spark}


@pytest.fixture(
    params=[
        pytest.param(n, marks=ENGINE_MARKS.get(n, ())) for n in (*ENGINE_NAMES, "spark_connect")
    ]
)
def engine(request: pytest.FixtureRequest) -> Engine:
    if request.param == "spark":
        request.getfixturevalue("spark")  # the suite's one local session
    if request.param == "spark_connect":
        from odibi_dagster.engines.spark import SparkEngine

        return SparkEngine(request.getfixturevalue("spark_connect"))
    return get_engine(request.param)


class Lake:
    """A local directory as a connection, and frames of the engine under test."""

    def __init__(self, engine: Engine, root: Path):
        self.engine, self.root = engine, root
        self.storage = LocalStorage(base_path=str(root), connection_name="lake")

    def loc(self, rel: str) -> Any:
        return self.storage.location(rel)

    def frame(self, rows: list[dict[str, Any]], name: str | None = None) -> Any:
        """``rows`` as a frame of the engine, read from a Parquet file it did not write."""
        name = name or f"src-{len(list(self.root.glob('src-*')))}.parquet"
        schema = pa.schema([("id", pa.int64()), ("g", pa.string()), ("x", pa.float64())])
        pq.write_table(pa.Table.from_pylist(rows, schema=schema), self.root / name)
        return self.engine.read(self.loc(name), "parquet")

    def rows(self, df: Any) -> list[dict[str, Any]]:
        return sorted(self.engine.head(df, 10_000), key=lambda r: r["id"])


@pytest.fixture
def local_lake(engine: Engine, tmp_path: Path) -> Lake:
    return Lake(engine, tmp_path)


def read_back(path: Path, fmt: str) -> list[tuple[Any, ...]]:
    """(id, g, x) of what is at ``path``, read without the engines, sorted."""
    if fmt == "delta":
        rows = DeltaTable(str(path)).to_pyarrow_table().to_pylist()
    elif fmt == "parquet":
        rows = pq.read_table(path).to_pylist()
    else:
        files = [path] if path.is_file() else sorted(path.glob(f"part-*{fmt}*"))
        rows = []
        for f in files:
            if fmt == "csv":
                rows += list(csv.DictReader(f.open()))
            else:
                rows += [json.loads(line) for line in f.open() if line.strip()]

    def value(v: Any) -> Any:
        return None if v in ("", None) else float(v)

    return sorted((int(r["id"]), r["g"], value(r.get("x"))) for r in rows)


def as_tuples(rows: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return sorted((r["id"], r["g"], r["x"]) for r in rows)


# --------------------------------------------------------------------------- formats and modes


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_write_mode_means_the_same(local_lake: Lake, fmt: str):
    loc = local_lake.loc(f"t.{fmt}")
    target = local_lake.root / f"t.{fmt}"
    assert not local_lake.engine.exists(loc, fmt)
    assert local_lake.engine.write(local_lake.frame(ROWS), loc, fmt, "overwrite") is True
    assert read_back(target, fmt) == as_tuples(ROWS)
    assert local_lake.engine.exists(loc, fmt)

    new = {"id": 4, "g": "c", "x": 4.0}
    assert local_lake.engine.write(local_lake.frame([new]), loc, fmt, "append") is True
    assert read_back(target, fmt) == as_tuples([*ROWS, new])

    with pytest.raises(OdibiRunError, match=r"already exists and the write mode is 'error'"):
        local_lake.engine.write(local_lake.frame([new]), loc, fmt, "error", where=WHERE)
    assert (
        local_lake.engine.write(
            local_lake.frame([{"id": 9, "g": "z", "x": 9.0}]), loc, fmt, "ignore"
        )
        is False
    )
    assert read_back(target, fmt) == as_tuples([*ROWS, new])

    last = {"id": 5, "g": "e", "x": 5.0}
    assert local_lake.engine.write(local_lake.frame([last]), loc, fmt, "overwrite") is True
    assert read_back(target, fmt) == [(5, "e", 5.0)]
    assert [
        (r["id"], r["g"], r["x"]) for r in local_lake.rows(local_lake.engine.read(loc, fmt))
    ] == [(5, "e", 5.0)]
    leftovers = [
        p.name for p in local_lake.root.iterdir() if ".tmp-" in p.name or ".old-" in p.name
    ]
    assert leftovers == []


@pytest.mark.parametrize("fmt", FORMATS)
def test_modes_error_and_ignore_write_when_nothing_is_there(local_lake: Lake, fmt: str):
    assert (
        local_lake.engine.write(local_lake.frame(ROWS), local_lake.loc(f"e.{fmt}"), fmt, "error")
        is True
    )
    assert (
        local_lake.engine.write(local_lake.frame(ROWS), local_lake.loc(f"i.{fmt}"), fmt, "ignore")
        is True
    )
    assert read_back(local_lake.root / f"e.{fmt}", fmt) == read_back(
        local_lake.root / f"i.{fmt}", fmt
    )


@pytest.mark.parametrize("fmt", FORMATS)
def test_an_append_with_other_columns_fails_and_changes_nothing(local_lake: Lake, fmt: str):
    loc = local_lake.loc(f"t.{fmt}")
    local_lake.engine.write(local_lake.frame(ROWS), loc, fmt, "overwrite")
    other = local_lake.engine.sql("SELECT id, g AS other FROM t", {"t": local_lake.frame(ROWS)})
    with pytest.raises(OdibiRunError, match=r"cannot append to .*: its columns .* differ"):
        local_lake.engine.write(other, loc, fmt, "append", where=WHERE)
    assert read_back(local_lake.root / f"t.{fmt}", fmt) == as_tuples(ROWS)


@pytest.mark.parametrize("fmt", ["csv", "json", "parquet"])
def test_a_file_format_never_replaces_a_delta_table(local_lake: Lake, fmt: str):
    loc = local_lake.loc("table")
    local_lake.engine.write(local_lake.frame(ROWS), loc, "delta", "overwrite")
    with pytest.raises(OdibiRunError, match=r"is a Delta table .* It was left unchanged"):
        local_lake.engine.write(local_lake.frame(ROWS), loc, fmt, "overwrite", where=WHERE)
    assert DeltaTable(str(local_lake.root / "table")).to_pyarrow_table().num_rows == 3


def test_a_folder_of_other_folders_is_never_replaced(local_lake: Lake):
    (local_lake.root / "silver" / "orders").mkdir(parents=True)
    (local_lake.root / "silver" / "orders" / "keep.txt").write_text("precious")
    (local_lake.root / "silver" / "x.csv").write_text("id\n1\n")
    with pytest.raises(OdibiRunError, match=r"holding subdirectories \(orders\)"):
        local_lake.engine.write(
            local_lake.frame(ROWS), local_lake.loc("silver"), "csv", "overwrite", where=WHERE
        )
    assert (local_lake.root / "silver" / "orders" / "keep.txt").read_text() == "precious"


@pytest.mark.parametrize("fmt", ["csv", "json", "parquet"])
def test_some_files_of_a_folder_are_read_as_one_frame(local_lake: Lake, fmt: str):
    # what a run a new-files sensor started reads: the files it names, not the folder
    folder = local_lake.root / "landing"
    folder.mkdir()
    for i, rows in enumerate([ROWS[:1], ROWS[1:], [{"id": 9, "g": "z", "x": 9.0}]]):
        table = pa.Table.from_pylist(rows)
        path = folder / f"f{i}.{fmt}"
        if fmt == "parquet":
            pq.write_table(table, path)
        elif fmt == "csv":
            import pyarrow.csv as pacsv

            pacsv.write_csv(table, path)
        else:
            path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    locs = [local_lake.loc(f"landing/f{i}.{fmt}") for i in (0, 1)]
    df = local_lake.engine.read_files(locs, fmt, where=WHERE)
    got = sorted(
        (r["id"], r["g"], None if r["x"] in (None, "") else float(r["x"]))
        for r in local_lake.engine.head(df, 100)
    )
    assert got == as_tuples(ROWS)  # f2 is not read
    one = local_lake.engine.read_files(locs[1:], fmt, where=WHERE)
    assert sorted(r["id"] for r in local_lake.engine.head(one, 100)) == [2, 3]


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_a_read_path_with_wildcards_reads_every_file_it_matches(local_lake: Lake, fmt: str):
    # Odibi v3: read.path: "yellow_tripdata_*.parquet" (examples/odibi_ride)
    folder = local_lake.root / "raw"
    folder.mkdir()
    parts = {"trips_2024-01": ROWS[:1], "trips_2024-02": ROWS[1:], "other": [ROWS[0]]}
    for name, rows in parts.items():
        table = pa.Table.from_pylist(rows)
        if fmt == "parquet":
            pq.write_table(table, folder / f"{name}.{fmt}")
        else:
            import pyarrow.csv as pacsv

            pacsv.write_csv(table, folder / f"{name}.{fmt}")
    df = local_lake.engine.read(local_lake.loc(f"raw/trips_*.{fmt}"), fmt, where=WHERE)
    got = sorted(
        (r["id"], r["g"], None if r["x"] in (None, "") else float(r["x"]))
        for r in local_lake.engine.head(df, 100)
    )
    assert got == as_tuples(ROWS)  # other.* is not read
    with pytest.raises(OdibiRunError) as err:
        local_lake.engine.read(local_lake.loc(f"raw/none_*.{fmt}"), fmt, where=WHERE)
    assert str(err.value).startswith(WHERE + ": input path ")
    assert f"none_*.{fmt}" in str(err.value) and "does not exist" in str(err.value)


def test_a_delta_table_is_not_read_file_by_file(local_lake: Lake):
    with pytest.raises(OdibiRunError, match="a Delta table is read whole"):
        local_lake.engine.read_files([local_lake.loc("t")], "delta", where=WHERE)


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_missing_input_names_the_path_and_what_to_do(local_lake: Lake, fmt: str):
    with pytest.raises(OdibiRunError) as err:
        local_lake.engine.read(local_lake.loc(f"nope/t.{fmt}"), fmt, where=WHERE)
    message = str(err.value)
    assert message.startswith(WHERE + ": input path ")
    assert str(local_lake.root / "nope" / f"t.{fmt}") in message and "does not exist" in message


def test_data_that_is_not_a_delta_table_is_named_so(local_lake: Lake):
    local_lake.engine.write(local_lake.frame(ROWS), local_lake.loc("plain"), "parquet")
    with pytest.raises(OdibiRunError, match=r"exists but is not a Delta table"):
        local_lake.engine.read(local_lake.loc("plain"), "delta", where=WHERE)


def test_format_and_mode_are_checked_with_the_valid_choices(local_lake: Lake):
    with pytest.raises(OdibiRunError, match=r"format 'xml' is not supported. Use one of: csv"):
        local_lake.engine.write(local_lake.frame(ROWS), local_lake.loc("t"), "xml", where=WHERE)
    with pytest.raises(OdibiRunError, match=r"write mode 'replace' is not supported. Use one of"):
        local_lake.engine.write(
            local_lake.frame(ROWS), local_lake.loc("t"), "parquet", "replace", where=WHERE
        )


# --------------------------------------------------------------------------- Delta options


@pytest.mark.parametrize("spelling", ["partition_by", "partitionBy"])
def test_delta_partitions_in_either_spelling(local_lake: Lake, spelling: str):
    local_lake.engine.write(
        local_lake.frame(ROWS), local_lake.loc("t"), "delta", options={spelling: ["g"]}
    )
    assert sorted(p.name for p in (local_lake.root / "t").iterdir() if "=" in p.name) == [
        "g=a",
        "g=b",
    ]
    assert read_back(local_lake.root / "t", "delta") == as_tuples(ROWS)


@pytest.mark.parametrize("spelling", ["predicate", "replaceWhere"])
def test_delta_predicate_replaces_only_matching_rows_in_either_spelling(
    local_lake: Lake, spelling: str
):
    local_lake.engine.write(local_lake.frame(ROWS), local_lake.loc("t"), "delta")
    new_a = [{"id": 7, "g": "a", "x": 7.0}]
    local_lake.engine.write(
        local_lake.frame(new_a), local_lake.loc("t"), "delta", "overwrite", {spelling: "g = 'a'"}
    )
    assert read_back(local_lake.root / "t", "delta") == [(2, "b", None), (7, "a", 7.0)]
    with pytest.raises(OdibiRunError, match=r"replaceWhere/predicate needs mode overwrite"):
        local_lake.engine.write(
            local_lake.frame(new_a), local_lake.loc("t"), "delta", "append", {spelling: "g = 'a'"}
        )


@pytest.mark.parametrize("option", [{"mergeSchema": True}, {"schema_mode": "merge"}])
def test_delta_merge_schema_adds_columns_in_either_spelling(
    local_lake: Lake, option: dict[str, Any]
):
    local_lake.engine.write(local_lake.frame(ROWS), local_lake.loc("t"), "delta")
    wider = local_lake.engine.sql(
        "SELECT id, g, x, 1 AS flag FROM t", {"t": local_lake.frame(ROWS[:1])}
    )
    local_lake.engine.write(wider, local_lake.loc("t"), "delta", "append", option)
    table = DeltaTable(str(local_lake.root / "t")).to_pyarrow_table()
    assert "flag" in table.column_names and table.num_rows == 4


def test_delta_time_travel(local_lake: Lake):
    local_lake.engine.write(local_lake.frame(ROWS), local_lake.loc("t"), "delta")
    local_lake.engine.write(local_lake.frame(ROWS[:1]), local_lake.loc("t"), "delta", "overwrite")
    old = local_lake.engine.read(local_lake.loc("t"), "delta", {"versionAsOf": 0})
    assert [r["id"] for r in local_lake.rows(old)] == [1, 2, 3]
    with pytest.raises(OdibiRunError, match=r"cannot both be set"):
        local_lake.engine.read(
            local_lake.loc("t"), "delta", {"versionAsOf": 0, "timestampAsOf": "2024-01-01"}
        )


# --------------------------------------------------------------------------- steps


def step(sql: str | None = None, function: str | None = None, **params: Any) -> Step:
    return Step(sql=sql, function=function, params=params)


def test_sql_steps_see_nodes_by_name_and_the_previous_result(local_lake: Lake):
    src = local_lake.frame(ROWS)
    other = local_lake.engine.sql(
        "SELECT DISTINCT g FROM t WHERE g = 'a'", {"t": local_lake.frame(ROWS)}
    )
    steps = [
        step("SELECT id, g, x * 10 AS y FROM src WHERE x IS NOT NULL"),
        step(
            "SELECT r.g, SUM(r.y) AS total FROM __result__ r JOIN other o ON r.g = o.g GROUP BY r.g"
        ),
    ]
    out = run_steps(local_lake.engine, steps, {"src": src, "other": other}, node="n", where=WHERE)
    assert [(r["g"], r["total"]) for r in local_lake.engine.head(out, 10)] == [("a", 50.0)]


def test_sql_naming_an_unknown_table_lists_the_available_ones(local_lake: Lake):
    with pytest.raises(OdibiRunError, match=r"refers to table 'missing'.*Available tables: src"):
        local_lake.engine.sql("SELECT * FROM missing", {"src": local_lake.frame(ROWS)}, where=WHERE)


def test_a_sql_syntax_error_names_the_query(local_lake: Lake):
    with pytest.raises(OdibiRunError, match=r"(?s)SQL step failed .* in query starting 'SELEC id"):
        local_lake.engine.sql("SELEC id FROM src", {"src": local_lake.frame(ROWS)}, where=WHERE)


@transform(name="contract_keep_group")
def _keep_group(context: Any, group: str) -> Any:
    df = context.get("src")
    return df.where(df.g == group) if context.engine == "spark" else df[df.g == group]


@transform(name="contract_not_a_frame")
def _not_a_frame(context: Any) -> Any:
    return {"id": [1]}


def test_function_steps_get_and_return_frames_of_the_engine(local_lake: Lake):
    src = local_lake.frame(ROWS)
    out = run_steps(
        local_lake.engine,
        [step(function="contract_keep_group", group="a")],
        {"src": src},
        node="n",
        where=WHERE,
    )
    assert local_lake.engine.is_frame(out)
    assert [r["id"] for r in local_lake.rows(out)] == [1, 3]
    with pytest.raises(OdibiRunError) as err:
        run_steps(
            local_lake.engine,
            [step(function="contract_not_a_frame")],
            {"src": src},
            node="n",
            where=WHERE,
        )
    assert (
        f"returned a dict; a function step on engine {local_lake.engine.name} must return a "
        in str(err.value)
    )


# --------------------------------------------------------------------------- describing


def test_checks_count_rows_and_nulls_and_compare_types(local_lake: Lake):
    validation = ValidationConfig.model_validate(
        {
            "not_empty": True,
            "no_nulls": ["g", "x", "missing"],
            "schema": {
                "required_columns": ["id"],
                "types": {"id": "int", "g": "string", "x": "int"},
            },
        }
    )
    outcomes = {
        o.name: o for o in checks.evaluate(local_lake.engine, local_lake.frame(ROWS), validation)
    }
    assert outcomes["not_empty"].passed and outcomes["not_empty"].metadata == {"row_count": 3}
    assert outcomes["no_nulls_g"].passed
    assert not outcomes["no_nulls_x"].passed and outcomes["no_nulls_x"].metadata == {
        "null_count": 1
    }
    assert not outcomes["no_nulls_missing"].passed
    assert "column 'missing' is missing" in outcomes["no_nulls_missing"].description
    assert not outcomes["schema"].passed
    assert outcomes["schema"].description.startswith("column 'x' is ")
    assert outcomes["schema"].description.endswith(", expected int")
    empty = local_lake.engine.sql("SELECT * FROM t WHERE id < 0", {"t": local_lake.frame(ROWS)})
    (outcome,) = checks.evaluate(local_lake.engine, empty, ValidationConfig(not_empty=True))
    assert not outcome.passed and outcome.description == "the result has no rows"


def test_a_frame_is_described_for_metadata(local_lake: Lake):
    df = local_lake.frame(ROWS)
    assert [name for name, _ in local_lake.engine.column_schema(df)] == ["id", "g", "x"]
    families = [local_lake.engine.type_family(t) for _, t in local_lake.engine.column_schema(df)]
    assert families == ["integer", "string", "float"]
    assert local_lake.engine.profile(df, ["x"]).rows == 3 and local_lake.engine.profile(
        df, ["x"]
    ).nulls == {"x": 1}
    assert local_lake.engine.cheap_row_count(df) in (3, None)
    assert [r["id"] for r in local_lake.engine.head(df, 2)] == [1, 2]
    assert local_lake.engine.head(df, 0) == []
    assert local_lake.engine.head(df, 5)[1]["x"] is None  # a missing value, on every engine


def test_rows_are_counted_by_the_write_itself(local_lake: Lake):
    counted, rows = local_lake.engine.count_while_writing(local_lake.frame(ROWS))
    local_lake.engine.write(counted, local_lake.loc("t.parquet"), "parquet")
    assert rows() == 3


def test_a_result_is_staged_then_kept_whole_or_dropped(local_lake: Lake):
    engine, base, key = local_lake.engine, str(local_lake.root / "store"), ("pipe", "node")
    staged, frame = engine.store_intermediate(local_lake.frame(ROWS), base, key)
    assert ".staged-" in staged.uri and staged.uri.startswith(base)
    assert as_tuples(engine.head(frame, 5, written_at=staged, fmt="parquet")) == as_tuples(ROWS)
    with pytest.raises(OdibiRunError, match=r"no stored result yet .* Materialize this upstream"):
        engine.load_intermediate(base, key, where=WHERE)  # staged is not kept yet

    kept, frame = engine.keep_intermediate(frame, staged, base, key)
    assert kept.uri == engine.intermediate(base, key).uri
    assert as_tuples(local_lake.rows(frame)) == as_tuples(ROWS)
    assert as_tuples(local_lake.rows(engine.load_intermediate(base, key, where=WHERE))) == (
        as_tuples(ROWS)
    )

    # a later result that is dropped leaves the kept one, and nothing beside it
    staged, _ = engine.store_intermediate(local_lake.frame(ROWS[:1]), base, key)
    engine.drop_intermediate(staged)
    assert as_tuples(local_lake.rows(engine.load_intermediate(base, key, where=WHERE))) == (
        as_tuples(ROWS)
    )
    assert not any(".staged-" in p.name for p in (local_lake.root / "store" / "pipe").iterdir())


def test_the_results_stored_under_a_key_are_listed_by_name_and_deleted_whole(
    local_lake: Lake,
):
    """What pruning the store by run needs: the names stored under an asset's key (a
    run's kept result, or a copy a process left staged), when each was written, and
    deleting one name's result with its staged copies."""
    engine, base, asset = local_lake.engine, str(local_lake.root / "store"), ("pipe", "node")
    assert engine.stored_intermediates(base, asset) == {}
    for run in ("run1", "run2", "run3"):
        staged, frame = engine.store_intermediate(local_lake.frame(ROWS), base, (*asset, run))
        engine.keep_intermediate(frame, staged, base, (*asset, run))
    # run3 stages another result, and its process dies before keeping or dropping it
    engine.store_intermediate(local_lake.frame(ROWS[:1]), base, (*asset, "run3"))
    engine.store_intermediate(local_lake.frame(ROWS[:1]), base, (*asset, "run4"))
    stored = engine.stored_intermediates(base, asset)
    assert sorted(stored) == ["run1", "run2", "run3", "run4"]
    written = [p.stat().st_mtime for p in (local_lake.root / "store" / "pipe" / "node").iterdir()]
    assert all(min(written) - 2 <= t <= max(written) + 2 for t in stored.values())

    for run in ("run1", "run3", "run4", "never_stored"):
        engine.delete_intermediate(base, (*asset, run))
    assert sorted(engine.stored_intermediates(base, asset)) == ["run2"]
    assert [
        p.name.split(".")[0] for p in (local_lake.root / "store" / "pipe" / "node").iterdir()
    ] == ["run2"]
    assert as_tuples(
        local_lake.rows(engine.load_intermediate(base, (*asset, "run2"), where=WHERE))
    ) == as_tuples(ROWS)
    with pytest.raises(OdibiRunError, match=r"no stored result yet .*run1"):
        engine.load_intermediate(base, (*asset, "run1"), where=WHERE)


def test_what_a_killed_write_left_of_a_stored_result_is_listed_and_deleted_with_it(
    local_lake: Lake,
):
    """A process killed while writing a run's result leaves a hidden temporary (and on
    local disk the file of the lock it held), named after the result: pruning finds
    and deletes them with it."""
    engine, base, asset = local_lake.engine, str(local_lake.root / "store"), ("pipe", "node")
    staged, frame = engine.store_intermediate(local_lake.frame(ROWS), base, (*asset, "run5"))
    engine.keep_intermediate(frame, staged, base, (*asset, "run5"))
    kept = engine.intermediate(base, (*asset, "run5")).fs_path
    left = Path(replace.sibling(kept, "tmp"))
    if engine.name == "spark":  # a result is a folder of part files
        left.mkdir()
        (left / "part-00000.parquet").write_bytes(b"PAR1 half written")
    else:
        left.write_bytes(b"PAR1 half written")
        Path(replace.lock_name(kept)).write_bytes(b"")
    assert sorted(engine.stored_intermediates(base, asset)) == ["run5"]
    engine.delete_intermediate(base, (*asset, "run5"))
    assert list((local_lake.root / "store" / "pipe" / "node").iterdir()) == []


def test_each_consumer_gets_a_frame_of_its_own(local_lake: Lake):
    df = local_lake.frame(ROWS)
    mine = local_lake.engine.handoff(df)
    assert local_lake.engine.is_frame(mine) and local_lake.rows(mine) == local_lake.rows(df)


def test_the_preview_table_escapes_pipes_and_line_breaks():
    assert markdown_table(["id", "text"], [(1, "a|b"), (2, "c\nd")]) == (
        "| id | text |\n| --- | --- |\n| 1 | a\\|b |\n| 2 | c d |"
    )


@pytest.mark.parametrize("fmt", ["parquet", "delta"])
@pytest.mark.parametrize("options", [{}, {"partition_by": ["g"]}], ids=["plain", "partitioned"])
def test_the_first_rows_of_what_was_written_are_the_rows_written(
    local_lake: Lake, fmt: str, options: dict[str, Any]
):
    if fmt == "parquet" and options and local_lake.engine.name == "pandas":
        pytest.skip("the pandas engine partitions delta only")
    df = local_lake.frame(ROWS)
    local_lake.engine.write(df, local_lake.loc("t"), fmt, options=options)
    written = local_lake.engine.after_write(df, local_lake.loc("t"), fmt)
    first = local_lake.engine.head(written, 3, written_at=local_lake.loc("t"), fmt=fmt)
    assert as_tuples(first) == as_tuples(ROWS)
    # partition columns may come last, as Spark reads them from the folder names
    assert [sorted(row) for row in first] == [["g", "id", "x"]] * 3


# --------------------------------------------------------------------------- keyed modes

CHANGES = [  # id 2 changed, id 4 new
    {"id": 2, "g": "B", "x": 20.0},
    {"id": 4, "g": "d", "x": 4.0},
]
KEYS = {"keys": ["id"]}


@pytest.mark.parametrize("fmt", FORMATS)
def test_upsert_twice_leaves_the_same_table(local_lake: Lake, fmt: str):
    loc, target = local_lake.loc(f"t.{fmt}"), local_lake.root / f"t.{fmt}"
    first = local_lake.engine.merge(local_lake.frame(ROWS), loc, fmt, "upsert", KEYS)
    assert (first.inserted, first.updated, first.deleted) == (3, 0, 0)  # created
    expected = [(1, "a", 1.5), (2, "B", 20.0), (3, "a", 3.5), (4, "d", 4.0)]
    for _ in range(2):
        local_lake.engine.merge(local_lake.frame(CHANGES), loc, fmt, "upsert", KEYS)
        assert read_back(target, fmt) == expected  # each key once, latest values
    again = local_lake.engine.merge(local_lake.frame(CHANGES), loc, fmt, "upsert", KEYS)
    assert (again.inserted, again.updated, again.deleted) == (0, 2, 0)
    assert not [p.name for p in local_lake.root.iterdir() if ".tmp-" in p.name]


@pytest.mark.parametrize("fmt", FORMATS)
def test_append_once_adds_only_new_keys_and_a_rerun_adds_nothing(local_lake: Lake, fmt: str):
    loc, target = local_lake.loc(f"t.{fmt}"), local_lake.root / f"t.{fmt}"
    local_lake.engine.merge(local_lake.frame(ROWS), loc, fmt, "append_once", KEYS)
    expected = [*as_tuples(ROWS)[:3], (4, "d", 4.0)]
    outcome = local_lake.engine.merge(local_lake.frame(CHANGES), loc, fmt, "append_once", KEYS)
    assert (outcome.inserted, outcome.updated) == (1, 0)
    assert read_back(target, fmt) == sorted(expected, key=lambda r: r[0])  # id 2 kept as was
    rerun = local_lake.engine.merge(local_lake.frame(CHANGES), loc, fmt, "append_once", KEYS)
    assert (rerun.inserted, rerun.updated, rerun.deleted) == (0, 0, 0)
    assert read_back(target, fmt) == sorted(expected, key=lambda r: r[0])


def test_merge_updates_some_columns_deletes_and_inserts(local_lake: Lake):
    loc, target = local_lake.loc("t"), local_lake.root / "t"
    engine = local_lake.engine
    engine.write(local_lake.frame(ROWS), loc, "delta", "overwrite")
    # g = 'D' marks a deletion; only x is updated on a match
    incoming = [
        {"id": 1, "g": "D", "x": None},
        {"id": 2, "g": "changed", "x": 2.5},
        {"id": 5, "g": "new", "x": 5.0},
        {"id": 6, "g": "D", "x": 6.0},  # a deletion of a row that is not there: nothing
    ]
    options = {"keys": ["id"], "update_columns": ["x"], "delete_condition": "g = 'D'"}
    expected = [(2, "b", 2.5), (3, "a", 3.5), (5, "new", 5.0)]
    outcome = engine.merge(local_lake.frame(incoming), loc, "delta", "merge", options)
    assert (outcome.inserted, outcome.updated, outcome.deleted) == (1, 1, 1)
    assert read_back(target, "delta") == expected
    rerun = engine.merge(local_lake.frame(incoming), loc, "delta", "merge", options)
    assert (rerun.inserted, rerun.updated, rerun.deleted) == (0, 2, 0)
    assert read_back(target, "delta") == expected

    no_insert = {**options, "insert": False}
    engine.merge(
        local_lake.frame([{"id": 7, "g": "x", "x": 7.0}]), loc, "delta", "merge", no_insert
    )
    assert read_back(target, "delta") == expected


@pytest.mark.parametrize("fmt", ["parquet", "delta"])
def test_repeated_or_null_keys_fail_naming_them_and_write_nothing(local_lake: Lake, fmt: str):
    loc, target = local_lake.loc(f"t.{fmt}"), local_lake.root / f"t.{fmt}"
    local_lake.engine.merge(local_lake.frame(ROWS), loc, fmt, "upsert", KEYS)
    twice = [*CHANGES, {"id": 2, "g": "again", "x": 0.0}]
    with pytest.raises(
        OdibiRunError,
        match=r"^node 'n' \(p.yaml:3\): .*keys \[id\] that are null or occur more than once, e.g. \(id=2\); nothing was written",
    ):
        local_lake.engine.merge(local_lake.frame(twice), loc, fmt, "upsert", KEYS, where=WHERE)
    two_keys = {"keys": ["id", "g"]}
    with pytest.raises(OdibiRunError, match=r"\(id=None, g='z'\)"):
        local_lake.engine.merge(
            local_lake.frame([{"id": None, "g": "z", "x": 1.0}]), loc, fmt, "upsert", two_keys
        )
    assert read_back(target, fmt) == as_tuples(ROWS)


@pytest.mark.parametrize("fmt", ["csv", "delta"])
def test_a_key_missing_from_the_result_or_the_target_is_named(local_lake: Lake, fmt: str):
    loc = local_lake.loc(f"t.{fmt}")
    with pytest.raises(OdibiRunError, match=r"key column 'order_id' .* not a column of the result"):
        local_lake.engine.merge(
            local_lake.frame(ROWS), loc, fmt, "upsert", {"keys": ["order_id"]}, where=WHERE
        )
    local_lake.engine.write(local_lake.frame(ROWS), loc, fmt, "overwrite")
    with_k = local_lake.engine.sql("SELECT id AS k, g, x FROM t", {"t": local_lake.frame(ROWS)})
    with pytest.raises(OdibiRunError, match=r"key column 'k' .* not a column of the target"):
        local_lake.engine.merge(with_k, loc, fmt, "append_once", {"keys": ["k"]}, where=WHERE)
    assert read_back(local_lake.root / f"t.{fmt}", fmt) == as_tuples(ROWS)


@pytest.mark.parametrize("fmt", ["csv", "json", "parquet"])
def test_merge_into_a_file_fails_saying_to_write_delta(local_lake: Lake, fmt: str):
    with pytest.raises(OdibiRunError, match=r"^node 'n' .*write mode merge needs format delta"):
        local_lake.engine.write(
            local_lake.frame(ROWS), local_lake.loc(f"t.{fmt}"), fmt, "merge", KEYS, where=WHERE
        )
    assert not (local_lake.root / f"t.{fmt}").exists()


# --------------------------------------------------------------------------- incremental reads

EVENTS = [
    {"id": 1, "at": "2024-01-01 10:00:00", "fb": None},
    {"id": 2, "at": "2024-01-02 10:00:00", "fb": None},
    {"id": 3, "at": None, "fb": "2024-01-03 10:00:00"},
]


def write_events(root: Path, fmt: str) -> Path:
    """EVENTS at ``root/events.<fmt>``, written without the engines: a timestamp column in
    parquet and Delta, text in csv and json (as csv keeps times)."""
    path = root / f"events.{fmt}"
    if fmt in ("csv", "json"):
        if fmt == "csv":
            with path.open("w", newline="") as f:
                w = csv.writer(f)
                w.writerow(["id", "at", "fb"])
                for r in EVENTS:
                    w.writerow([r["id"], r["at"] or "", r["fb"] or ""])
        else:
            path.write_text("".join(json.dumps(r) + "\n" for r in EVENTS))
        return path
    ts = pa.timestamp("us")
    table = pa.table(
        {
            "id": pa.array([r["id"] for r in EVENTS], pa.int64()),
            "at": pa.array([r["at"] and datetime.fromisoformat(r["at"]) for r in EVENTS], ts),
            "fb": pa.array([r["fb"] and datetime.fromisoformat(r["fb"]) for r in EVENTS], ts),
        }
    )
    if fmt == "delta":
        write_deltalake(str(path), table)
    else:
        pq.write_table(table, path)
    return path


@pytest.mark.parametrize("fmt", FORMATS)
def test_an_incremental_read_keeps_the_rows_past_its_bound_in_every_format(
    local_lake: Lake, fmt: str
):
    write_events(local_lake.root, fmt)
    eng, loc = local_lake.engine, local_lake.loc(f"events.{fmt}")

    def ids(rows: RowFilter) -> list[int]:
        return sorted(int(r["id"]) for r in eng.head(eng.read_rows(loc, fmt, {}, rows), 100))

    assert ids(RowFilter("id", 1)) == [2, 3]
    assert ids(RowFilter("id", 2, inclusive=True)) == [2, 3]
    # a time: compared as a timestamp, whether the column is one or text
    assert ids(RowFilter("at", datetime(2024, 1, 2, 10), inclusive=True)) == [2]
    assert ids(RowFilter("at", datetime(2024, 1, 2, 10))) == []
    assert ids(RowFilter("at", datetime(2024, 1, 1, 12), fallback="fb")) == [2, 3]
    # a zone-aware bound is the same instant as its UTC reading
    aware = datetime(2024, 1, 2, 11, tzinfo=timezone(timedelta(hours=1)))
    assert ids(RowFilter("at", aware, inclusive=True)) == [2]

    df = eng.read_rows(loc, fmt, {}, RowFilter("id", 1))
    assert eng.key_summary(df, RowFilter("id", None)) == (2, 3)
    n, top = eng.key_summary(df, RowFilter("at", None, fallback="fb"))
    assert n == 2 and str(top).replace("T", " ").startswith("2024-01-03 10:00:00")
    empty = eng.read_rows(loc, fmt, {}, RowFilter("id", 3))
    assert eng.key_summary(empty, RowFilter("id", None)) == (0, None)


def test_an_incremental_read_names_a_missing_column_and_a_number_compared_with_a_time(
    local_lake: Lake,
):
    write_events(local_lake.root, "parquet")
    eng, loc = local_lake.engine, local_lake.loc("events.parquet")
    with pytest.raises(OdibiRunError, match=r"^node 'n' .*column 'nope'.*columns: id, at, fb"):
        eng.read_rows(loc, "parquet", {}, RowFilter("nope", 1), where=WHERE)
    with pytest.raises(OdibiRunError, match=r"column 'id', which holds numbers, with a time"):
        eng.head(
            eng.read_rows(loc, "parquet", {}, RowFilter("id", datetime(2024, 1, 1)), where=WHERE), 1
        )


# --------------------------------------------------------------------------- patterns (Odibi v3)

VERSIONS = pa.schema([("id", pa.int64()), ("g", pa.string()), ("at", pa.timestamp("us"))])
DAY1, DAY2 = datetime(2025, 1, 1), datetime(2025, 1, 15)


def pattern_run(
    lake: Lake, name: str, kind: str, rows: list[dict[str, Any]], **params: Any
) -> None:
    """One run of a node with ``pattern: {type: kind, params}`` over ``rows`` (read from a
    Parquet file), its result written over its Delta table ``dim``, as the node's write."""
    from odibi_dagster.config.models import NodeConfig
    from odibi_dagster.patterns import run_pattern

    pq.write_table(pa.Table.from_pylist(rows, schema=VERSIONS), lake.root / name)
    src = lake.engine.read(lake.loc(name), "parquet")
    node = NodeConfig.model_validate(
        {"name": "n", "write": {"connection": "lake", "path": "dim", "format": "delta"}}
    )
    result, _ = run_pattern(lake.engine, node, {"lake": lake.storage}, {}, src, kind, {**params})
    lake.engine.write(result, lake.loc("dim"), "delta", "overwrite", where=WHERE)


def test_scd2_closes_a_changed_version_and_opens_a_new_one(local_lake: Lake):
    params = {"keys": ["id"], "track_cols": ["g"], "effective_time_col": "at"}
    first = [{"id": 1, "g": "gold", "at": DAY1}, {"id": 2, "g": "silver", "at": DAY1}]
    pattern_run(local_lake, "v1.parquet", "scd2", first, **params)
    second = [{"id": 1, "g": "platinum", "at": DAY2}, {"id": 2, "g": "silver", "at": DAY2}]
    for _ in range(2):  # the same input again changes nothing
        pattern_run(local_lake, "v2.parquet", "scd2", second, **params)
        rows = DeltaTable(str(local_lake.root / "dim")).to_pyarrow_table().to_pylist()
        got = sorted((r["id"], r["g"], r["at"], r["valid_to"], r["is_current"]) for r in rows)
        assert got == [
            (1, "gold", DAY1, DAY2, False),  # closed when the change took effect
            (1, "platinum", DAY2, None, True),
            (2, "silver", DAY1, None, True),  # unchanged: its first version stays current
        ]


def test_a_dimension_numbers_each_version_and_keeps_an_unknown_member(local_lake: Lake):
    params = {
        "natural_key": "id",
        "surrogate_key": "sk",
        "scd_type": 2,
        "track_cols": ["g"],
        "unknown_member": True,
        "audit": {"source_system": "CORP\\crm 'eu'"},  # stored as written on both engines
    }
    first = [{"id": 2, "g": "silver", "at": DAY1}, {"id": 1, "g": "gold", "at": DAY1}]
    pattern_run(local_lake, "v1.parquet", "dimension", first, **params)
    second = [{"id": 1, "g": "platinum", "at": DAY2}, {"id": 2, "g": "silver", "at": DAY1}]
    pattern_run(local_lake, "v2.parquet", "dimension", second, **params)
    rows = DeltaTable(str(local_lake.root / "dim")).to_pyarrow_table().to_pylist()
    by_sk = {r["sk"]: r for r in rows}
    assert sorted((sk, r["id"], r["g"], r["is_current"]) for sk, r in by_sk.items()) == [
        (0, -1, "Unknown", True),
        (1, 1, "gold", False),  # keys follow the natural key on the first load
        (2, 2, "silver", True),
        (3, 1, "platinum", True),  # the new version gets the next key
    ]
    assert by_sk[1]["valid_to"] == by_sk[3]["valid_from"] > by_sk[1]["valid_from"]
    # Spark writes Delta timestamps with the UTC zone, pandas without: the same instant
    assert by_sk[0]["valid_from"].replace(tzinfo=None) == datetime(1900, 1, 1)
    assert by_sk[0]["valid_to"] is None
    assert {r["source_system"] for r in rows} == {"CORP\\crm 'eu'"}
    assert len({r["load_timestamp"] for r in rows}) == 1  # this run's time on every row


def test_a_null_business_key_fails_scd2_and_writes_nothing(local_lake: Lake):
    params = {"keys": ["id"], "track_cols": ["g"], "effective_time_col": "at"}
    pattern_run(local_lake, "v1.parquet", "scd2", [{"id": 1, "g": "gold", "at": DAY1}], **params)
    second = [{"id": 1, "g": "gold", "at": DAY2}, {"id": None, "g": "x", "at": DAY2}]
    with pytest.raises(OdibiRunError, match=r"key column 'id' is null in 1 row\(s\)"):
        pattern_run(local_lake, "v2.parquet", "scd2", second, **params)
    rows = DeltaTable(str(local_lake.root / "dim")).to_pyarrow_table().to_pylist()
    assert [(r["id"], r["g"], r["is_current"]) for r in rows] == [(1, "gold", True)]


def test_a_date_dimension_has_the_same_calendar(local_lake: Lake):
    from odibi_dagster.config.models import NodeConfig
    from odibi_dagster.patterns import run_pattern

    node = NodeConfig.model_validate({"name": "n", "pattern": {"type": "date_dimension"}})
    params = {"start_date": "2024-12-30", "end_date": "2025-01-01", "fiscal_year_start_month": 10}
    df, _ = run_pattern(local_lake.engine, node, {}, {}, None, "date_dimension", params)
    rows = sorted(local_lake.engine.head(df, 10), key=lambda r: r["date_sk"])
    names = ["date_sk", "day_of_week", "day_of_week_num", "week_of_year"]
    names += ["fiscal_year", "fiscal_quarter", "is_year_end", "is_year_start"]
    assert [tuple(r[n] for n in names) for r in rows] == [
        (20241230, "Monday", 1, 1, 2025, 1, False, False),  # ISO week 1 of 2025
        (20241231, "Tuesday", 2, 1, 2025, 1, True, False),
        (20250101, "Wednesday", 3, 1, 2025, 2, False, True),
    ]


# --------------------------------------------------------------------------- simulation


def test_a_simulation_read_gives_the_same_rows_and_types(engine: Engine) -> None:
    """``read.format: simulation`` (Odibi v3): generated once, the same on every engine."""
    from odibi_dagster.config.simulation import SimulationRead
    from odibi_dagster.simulation import read_simulation

    read = SimulationRead.model_validate(
        {
            "format": "simulation",
            "options": {
                "simulation": {
                    "scope": {
                        "start_time": "2026-01-01T00:00:00Z",
                        "timestep": "1h",
                        "row_count": 4,
                    },
                    "entities": {"names": ["a", "b"]},
                    "columns": [
                        {
                            "name": "id",
                            "data_type": "string",
                            "generator": {"type": "constant", "value": "{entity_id}"},
                        },
                        {
                            "name": "ts",
                            "data_type": "timestamp",
                            "generator": {"type": "timestamp"},
                        },
                        {"name": "n", "data_type": "int", "generator": {"type": "sequential"}},
                        {
                            "name": "x",
                            "data_type": "float",
                            "generator": {"type": "range", "min": 0, "max": 1},
                            "null_rate": 0.3,
                        },
                        {"name": "ok", "data_type": "boolean", "generator": {"type": "boolean"}},
                    ],
                }
            },
        }
    )
    df, meta, _ = read_simulation(engine, read, where="node 'sim'")
    assert meta["odibi/rows_generated"] == 8
    families = [(c, engine.type_family(t)) for c, t in engine.column_schema(df)]
    assert families == [
        ("id", "string"),
        ("ts", "datetime"),
        ("n", "integer"),
        ("x", "float"),
        ("ok", "boolean"),
    ]
    expected, _, _ = read_simulation(get_engine("pandas"), read, where="node 'sim'")
    rows = [
        {k: (v.to_pydatetime() if hasattr(v, "to_pydatetime") else v) for k, v in r.items()}
        for r in engine.head(df, 100)
    ]
    want = [
        {k: (v.to_pydatetime() if hasattr(v, "to_pydatetime") else v) for k, v in r.items()}
        for r in get_engine("pandas").head(expected, 100)
    ]
    assert rows == want
    assert any(r["x"] is None for r in rows) and any(r["x"] is not None for r in rows)


def test_validation_tests_count_and_quarantine_the_same_rows(local_lake: Lake):
    node = NodeConfig.model_validate(
        {
            "name": "n",
            "transform": {"steps": ["SELECT 1"]},
            "validation": {
                "tests": [
                    {"type": "not_null", "columns": ["x"], "on_fail": "quarantine"},
                    {"type": "unique", "columns": ["id"], "on_fail": "warn"},
                    {
                        "type": "accepted_values",
                        "column": "g",
                        "values": ["a", "it's"],
                        "on_fail": "warn",
                    },
                    {"type": "regex_match", "column": "g", "pattern": "^[a-z]", "on_fail": "warn"},
                    {
                        "type": "regex_match",
                        "name": "backslash",
                        "column": "g",
                        "pattern": "\\\\",
                        "on_fail": "warn",
                    },
                    {"type": "range", "column": "x", "min": 0, "on_fail": "quarantine"},
                    {"type": "custom_sql", "condition": "id < 3", "threshold": 0.5},
                ],
                "quarantine": {"connection": "lake", "path": "q"},
            },
        }
    )
    assert node.validation is not None
    rows = [
        {"id": 1, "g": "a", "x": 1.5},
        {"id": 2, "g": "it's", "x": None},
        {"id": 3, "g": "7\\d", "x": -3.5},
        {"id": 3, "g": "a", "x": 2.0},
    ]
    df = local_lake.frame(rows)
    tests, gate = checks.v3_plan(node.validation)
    found = quality.evaluate(local_lake.engine, df, node, tests, gate)
    failing = {o.name: o.metadata["failing_rows"] for o in found.outcomes}
    assert failing == {
        "not_null": 1,
        "unique": 2,
        "accepted_values": 1,
        "regex_match": 1,
        "backslash": 3,
        "range": 1,
        "custom_sql": 2,
    }
    passed = {o.name for o in found.outcomes if o.passed}
    assert passed == {"custom_sql"}  # 50% fail, 50% allowed
    assert not found.blocking and found.removed_rows == 2
    by_name = {o.name: o for o in found.outcomes}
    assert by_name["accepted_values"].metadata["sample_failing_rows"] == [{"g": "7\\d"}]
    keep, reject = quality.split(local_lake.engine, df, found, "run-1", WHERE)
    assert [(r["id"], r["g"]) for r in local_lake.rows(keep)] == [(1, "a"), (3, "a")]
    rejected = local_lake.rows(reject)
    assert [(r["id"], r["_failed_tests"]) for r in rejected] == [(2, "not_null"), (3, "range")]
    assert (
        rejected[1]["_rejection_reason"]
        == "Failed: range: x within [0, None] (on_fail: quarantine)"
    )
    assert {r["_source_batch_id"] for r in rejected} == {"run-1"}
    assert "_original_node" not in rejected[0]
