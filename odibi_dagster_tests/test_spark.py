"""The Spark engine on local disk, with the real Delta Lake jars and one shared session.

Results are read back with independent readers (pyarrow, the csv/json modules, delta-rs)
or compared with the pandas engine's answer to the same YAML.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable, write_deltalake

import odibi_dagster
from odibi_dagster.engines.pandas import PandasEngine
from odibi_dagster.engines.spark import SparkEngine
from odibi_dagster.errors import OdibiRunError
from odibi_dagster.resources.local import LocalStorage
from odibi_dagster.resources.spark import SparkSessionResource
from odibi_dagster.transforms import run_steps
from odibi_dagster_tests.support.cli import run_cli
from odibi_dagster_tests.support.paths import EXAMPLES, copy_tree
from odibi_dagster_tests.support.runs import failure_text, run_job

ROWS = [(1, "a", 1.5), (2, "b", 2.5), (3, "a", None)]


@pytest.fixture
def engine(spark: Any) -> SparkEngine:
    return SparkEngine(spark)


def frame(spark: Any, rows: list[tuple[Any, ...]] = ROWS) -> Any:
    return spark.createDataFrame(rows, "id long, g string, x double")


def part_files(path: Path, suffix: str) -> list[Path]:
    return sorted(p for p in path.rglob(f"*{suffix}") if not p.name.startswith((".", "_")))


def read_back(path: Path, fmt: str) -> list[tuple[Any, ...]]:
    """The rows at ``path``, by a reader that is not odibi_dagster's, sorted by id."""
    if fmt == "parquet":
        rows = pq.read_table(path).to_pylist()
    elif fmt == "delta":
        rows = DeltaTable(str(path)).to_pyarrow_table().to_pylist()
    elif fmt == "csv":
        rows = []
        for f in part_files(path, ".csv"):
            with open(f, newline="") as h:
                rows += [
                    {"id": int(r["id"]), "g": r["g"], "x": float(r["x"]) if r["x"] else None}
                    for r in csv.DictReader(h)
                ]
    else:
        rows = [json.loads(line) for f in part_files(path, ".json") for line in f.open()]
    return sorted((r["id"], r["g"], r.get("x")) for r in rows)


# --------------------------------------------------------------------------- engine


def test_a_failing_overwrite_leaves_the_old_data_in_place(spark, engine, tmp_path: Path):
    from pyspark.sql import functions as F

    loc = LocalStorage(base_path=str(tmp_path)).location("t.parquet")
    engine.write(frame(spark), loc, "parquet", "overwrite")
    failing = spark.range(3).select(F.raise_error(F.lit("bad row")).alias("id"))
    with pytest.raises(OdibiRunError, match=r"node n: writing parquet to .*t\.parquet' failed"):
        engine.write(failing, loc, "parquet", "overwrite", where="node n")
    assert read_back(tmp_path / "t.parquet", "parquet") == sorted(ROWS)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.parquet"]  # no leftovers


def test_an_overwrite_replaces_the_partition_folders_of_a_partitioned_write(
    spark, engine, tmp_path: Path
):
    storage = LocalStorage(base_path=str(tmp_path))
    engine.write(
        frame(spark), storage.location("parts"), "parquet", "overwrite", {"partition_by": "g"}
    )
    engine.write(frame(spark, [(8, "h", 8.0)]), storage.location("parts"), "parquet", "overwrite")
    assert read_back(tmp_path / "parts", "parquet") == [(8, "h", 8.0)]


def test_csv_reads_like_pandas_header_types_dtype_and_separator(engine, tmp_path: Path):
    (tmp_path / "in.csv").write_text("id;name;amount\n007;x;1.5\n008;y;2\n")
    loc = LocalStorage(base_path=str(tmp_path)).location("in.csv")
    df = engine.read(loc, "csv", {"sep": ";", "dtype": {"id": "str"}})
    assert engine.column_schema(df) == [("id", "string"), ("name", "string"), ("amount", "double")]
    assert [tuple(r) for r in df.collect()] == [("007", "x", 1.5), ("008", "y", 2.0)]
    plain = engine.read(loc, "csv", {"sep": ";", "header": False, "inferSchema": False})
    assert plain.count() == 3  # the header line is data now
    with pytest.raises(OdibiRunError, match=r"dtype names column.*nope"):
        engine.read(loc, "csv", {"sep": ";", "dtype": {"nope": "str"}})


def test_partition_by_writes_one_directory_per_value(spark, engine, tmp_path: Path):
    loc = LocalStorage(base_path=str(tmp_path)).location("parts")
    engine.write(frame(spark), loc, "delta", "overwrite", {"partition_by": ["g"]})
    assert sorted(p.name for p in (tmp_path / "parts").glob("g=*")) == ["g=a", "g=b"]
    assert DeltaTable(str(tmp_path / "parts")).metadata().partition_columns == ["g"]
    with pytest.raises(
        OdibiRunError, match=r"partition_by names column.*missing.*Columns: id, g, x"
    ):
        engine.write(frame(spark), loc, "delta", "overwrite", {"partition_by": "missing"})


def test_delta_time_travel_and_column_selection(spark, engine, tmp_path: Path):
    loc = LocalStorage(base_path=str(tmp_path)).location("tt")
    engine.write(frame(spark), loc, "delta", "overwrite")
    engine.write(frame(spark, [(7, "q", 0.0)]), loc, "delta", "overwrite")
    old = engine.read(loc, "delta", {"versionAsOf": 0, "columns": ["id"]})
    assert old.columns == ["id"]
    assert sorted(r["id"] for r in old.collect()) == [1, 2, 3]
    assert [r["id"] for r in engine.read(loc, "delta").collect()] == [7]


def test_delta_written_by_spark_is_read_by_delta_rs_and_back(spark, engine, tmp_path: Path):
    storage = LocalStorage(base_path=str(tmp_path))
    engine.write(frame(spark), storage.location("by_spark"), "delta", "overwrite")
    engine.write(frame(spark, [(4, "c", 4.0)]), storage.location("by_spark"), "delta", "append")
    table = DeltaTable(str(tmp_path / "by_spark"))
    assert table.version() == 1
    assert sorted(tuple(r.values()) for r in table.to_pyarrow_table().to_pylist()) == sorted(
        [*ROWS, (4, "c", 4.0)]
    )

    pdf = pd.DataFrame({"id": [10, 11], "g": ["m", "n"], "x": [0.5, None]})
    write_deltalake(str(tmp_path / "by_rs"), pdf)
    write_deltalake(str(tmp_path / "by_rs"), pdf.assign(id=[12, 13]), mode="append")
    got = engine.read(storage.location("by_rs"), "delta").orderBy("id").collect()
    assert [(r["id"], r["g"], r["x"]) for r in got] == [
        (10, "m", 0.5),
        (11, "n", None),
        (12, "m", 0.5),
        (13, "n", None),
    ]
    # and the pandas engine (delta-rs) reads what Spark wrote
    back = PandasEngine().read(storage.location("by_spark"), "delta")
    assert sorted(back["id"].tolist()) == [1, 2, 3, 4]


def test_sql_steps_see_nodes_as_temp_views_and___result__(spark, engine):
    class Step:
        def __init__(self, sql: str):
            self.sql, self.function, self.params = sql, None, {}

    steps = [
        Step("SELECT id, g, x * 10 AS y FROM src WHERE x IS NOT NULL"),
        Step(
            "SELECT r.g, SUM(r.y) AS total FROM __result__ r JOIN other o ON r.g = o.g GROUP BY r.g"
        ),
    ]
    other = spark.createDataFrame([("a",), ("b",)], "g string")
    out = run_steps(engine, steps, {"src": frame(spark), "other": other}, node="n", where="node n")
    assert sorted((r["g"], r["total"]) for r in out.collect()) == [("a", 15.0), ("b", 25.0)]
    # the views are gone; the result still computes from the plans it captured
    assert not {"src", "other", "__result__"} & {t.name for t in spark.catalog.listTables()}
    with pytest.raises(OdibiRunError, match=r"refers to table 'missing'.*Available tables: src"):
        run_steps(
            engine, [Step("SELECT * FROM missing")], {"src": frame(spark)}, node="n", where="n"
        )


def test_a_local_session_without_the_jars_says_how_to_get_them(tmp_path: Path):
    res = SparkSessionResource(jars_dir=str(tmp_path), use_active_session=False)
    with pytest.raises(OdibiRunError) as info:
        res.get_session()
    text = str(info.value)
    assert str(tmp_path) in text and "odibi-dagster spark-jars" in text
    assert "delta-spark_4.2_2.13-4.4.0.jar" in text


# --------------------------------------------------------------------------- pipelines


def spark_copy_of(tmp_path: Path, name: str) -> Path:
    root = copy_tree(EXAMPLES / name, tmp_path / name)
    project = root / "project.yaml"
    project.write_text(
        project.read_text().replace("${ODIBI_ENGINE:-pandas}", "spark", 1), encoding="utf-8"
    )
    return root


def normalised(df: pd.DataFrame) -> list[tuple[Any, ...]]:
    df = df[sorted(df.columns)]
    return sorted(
        tuple(None if pd.isna(v) else (round(v, 6) if isinstance(v, float) else v) for v in row)
        for row in df.itertuples(index=False)
    )


@pytest.mark.slow
def test_the_same_yaml_gives_the_same_answer_on_pandas_and_spark(spark, tmp_path: Path):
    roots = {
        "pandas": copy_tree(EXAMPLES / "retail", tmp_path / "pandas" / "retail"),
        "spark": spark_copy_of(tmp_path / "spark", "retail"),
    }
    for name, root in roots.items():
        defs = odibi_dagster.load_definitions(root)
        for job in ("ingest", "analytics"):
            result = run_job(defs, job)
            assert result.success, f"{name}/{job}: {failure_text(result)}"
    reader = PandasEngine()  # reads single files and Spark's directories of part files
    outputs = [
        ("data", "silver/orders.parquet", "parquet", {}),
        ("data", "silver/customers", "delta", {}),
        ("outputs", "gold/revenue_by_country.csv", "csv", {}),
        ("outputs", "gold/top_customers.json", "json", {}),
    ]
    for base, path, fmt, opts in outputs:
        got = {
            name: reader.read(LocalStorage(base_path=str(root / base)).location(path), fmt, opts)
            for name, root in roots.items()
        }
        assert len(got["pandas"]) > 0
        assert sorted(got["spark"].columns) == sorted(got["pandas"].columns), path
        assert normalised(got["spark"]) == normalised(got["pandas"]), path
    # Spark wrote directories of part files where pandas wrote single files
    assert (roots["spark"] / "outputs/gold/revenue_by_country.csv").is_dir()


def test_spark_materializations_carry_row_count_schema_uri_preview_and_story(spark, tmp_path):
    root = spark_copy_of(tmp_path, "retail")
    result = run_job(odibi_dagster.load_definitions(root), "ingest")
    assert result.success, failure_text(result)
    mats = {
        tuple(m.asset_key.path): m.metadata
        for node in ("ingest__save_orders", "ingest__clean_orders")
        for m in result.asset_materializations_for_node(node)
    }
    meta = mats[("ingest", "save_orders")]
    assert meta["dagster/row_count"].value == 13
    schema = {c.name: c.type for c in meta["dagster/column_schema"].schema.columns}
    assert schema["order_id"] == "string" and schema["amount"] == "double"
    assert meta["dagster/uri"].value == str(root / "data" / "silver" / "orders.parquet")
    assert "| order_id |" in meta["preview"].value
    # a node without write: kept as Parquet for its consumers, counted while stored
    assert mats[("ingest", "clean_orders")]["dagster/row_count"].value == 13
    assert "odibi/stored_at" in mats[("ingest", "clean_orders")]
    checks = {
        (e.asset_key.path[-1], e.check_name): e.passed for e in result.get_asset_check_evaluations()
    }
    assert checks == {
        ("raw_orders", "not_empty"): True,
        ("raw_orders", "no_nulls_order_id"): True,
        ("clean_orders", "no_nulls_customer_id"): True,
        ("clean_orders", "schema"): True,
    }

    story = next((root / "outputs" / "stories" / "ingest").glob("*/nodes/save_orders.json"))
    node = json.loads(story.read_text())
    assert node["status"] == "success" and node["rows"] == 13
    assert len(node["sample"]) == 5 and node["sample"][0]["order_id"] == "1001"
    assert node["write"]["format"] == "parquet"


def test_a_validated_node_is_computed_once_and_a_failure_keeps_the_previous_results(
    spark, tmp_path: Path
):
    (tmp_path / "in.csv").write_text("id,v\n1,4\n2,5\n")
    (tmp_path / "p.yaml").write_text(
        """
project: v
engine: spark
connections: {fs: {type: local, base_path: .}}
pipelines:
  - pipeline: p
    nodes:
      - name: src
        read: {connection: fs, path: in.csv, format: csv}
      - name: checked
        depends_on: [src]
        transform: {steps: ["SELECT id, v FROM src"]}
        validation: {not_empty: true, no_nulls: [v]}
      - name: out
        depends_on: [src]
        transform: {steps: ["SELECT id, v FROM src"]}
        validation: {not_empty: true, no_nulls: [v]}
        write: {connection: fs, path: out, format: delta}
"""
    )
    defs = odibi_dagster.load_definitions(tmp_path / "p.yaml")
    instance = dg.DagsterInstance.ephemeral()
    first = run_job(defs, "p", instance=instance)
    assert first.success
    counts = {
        e.asset_key.path[-1]: e.materialization.metadata["dagster/row_count"].value
        for e in first.get_asset_materialization_events()
    }
    assert counts == {"checked": 2, "out": 2}  # counted while the result was stored
    store = Path(instance.storage_directory()) / "odibi_spark" / "p"
    # `checked` has no target: its result is kept, for this run; `out` is read from its
    # Delta table
    kept = store / "checked" / first.run_id
    assert sorted(r["v"] for r in pq.read_table(kept).to_pylist()) == [4, 5]
    assert [p.name for p in (store / "checked").iterdir()] == [first.run_id]
    assert not any((store / "out").iterdir())  # staged for the checks, dropped once written

    (tmp_path / "in.csv").write_text("id,v\n1,\n2,5\n")
    result = run_job(defs, "p", instance=instance)
    assert not result.success
    assert "validation failed, nothing was written: no_nulls_v: column 'v' has 1 null values" in (
        failure_text(result)
    )
    # the table is that of the last good run; the failed run kept nothing, not even a
    # staged copy, and the last good run's result stays
    assert sorted(
        r["v"] for r in DeltaTable(str(tmp_path / "out")).to_pyarrow_table().to_pylist()
    ) == [4, 5]
    assert sorted(r["v"] for r in pq.read_table(kept).to_pylist()) == [4, 5]
    assert [p.name for p in (store / "checked").iterdir()] == [first.run_id]
    assert not any((store / "out").iterdir())

    # a newer good run's result supersedes the first's, which is deleted
    (tmp_path / "in.csv").write_text("id,v\n1,6\n")
    third = run_job(defs, "p", instance=instance)
    assert third.success
    assert [p.name for p in (store / "checked").iterdir()] == [third.run_id]
    assert [r["v"] for r in pq.read_table(store / "checked" / third.run_id).to_pylist()] == [6]


def test_function_steps_get_spark_dataframes_and_must_return_one(spark, tmp_path: Path):
    (tmp_path / "in.csv").write_text("id,v\n1,2\n3,4\n")
    (tmp_path / "transforms.py").write_text(
        """
from odibi_dagster import transform

@transform
def doubled(context, source: str):
    df = context.get(source)
    assert context.engine == "spark" and type(df).__module__.startswith("pyspark")
    return df.withColumn("v", df["v"] * 2)

@transform
def to_pandas(context, source: str):
    return context.get(source).toPandas()
"""
    )
    (tmp_path / "project.yaml").write_text(
        """
project: f
engine: spark
connections: {fs: {type: local, base_path: .}}
pipelines:
  - pipeline: p
    nodes:
      - name: src
        read: {connection: fs, path: in.csv, format: csv}
      - name: good
        depends_on: [src]
        transform: {steps: [{function: doubled, params: {source: src}}]}
        write: {connection: fs, path: good.parquet, format: parquet}
  - pipeline: bad
    nodes:
      - name: src
        read: {connection: fs, path: in.csv, format: csv}
      - name: wrong
        depends_on: [src]
        transform: {steps: [{function: to_pandas, params: {source: src}}]}
"""
    )
    defs = odibi_dagster.load_definitions(tmp_path)
    assert run_job(defs, "p").success
    assert sorted(pq.read_table(tmp_path / "good.parquet").to_pylist(), key=lambda r: r["id"]) == [
        {"id": 1, "v": 4},
        {"id": 3, "v": 8},
    ]
    result = run_job(defs, "bad")
    assert not result.success
    assert (
        "function 'to_pandas' returned a DataFrame; a function step on engine spark must return a pyspark DataFrame"
        in (failure_text(result))
    )


MULTIPROCESS_PROJECT = """
project: mp
engine: spark
executor: multiprocess
connections: {fs: {type: local, base_path: .}}
pipelines:
  - pipeline: mp
    nodes:
      - name: src
        read: {connection: fs, path: in.csv, format: csv}
      - name: mid
        depends_on: [src]
        transform: {steps: ["SELECT g, SUM(v) AS total FROM src GROUP BY g"]}
      - name: out
        depends_on: [mid]
        transform: {steps: ["SELECT g, total * 2 AS doubled FROM mid"]}
        write: {connection: fs, path: out.csv, format: csv}
"""


@pytest.mark.spark  # each step process of the CLI run starts a Spark session of its own
@pytest.mark.slow
def test_multiprocess_runs_hand_intermediates_across_step_processes(tmp_path, dagster_home):
    (tmp_path / "in.csv").write_text("g,v\na,1\nb,2\na,3\n")
    (tmp_path / "project.yaml").write_text(MULTIPROCESS_PROJECT)
    (tmp_path / "definitions.py").write_text(
        "import odibi_dagster\ndefs = odibi_dagster.load_definitions(__file__.rsplit('/', 1)[0])\n"
    )
    out = run_cli("dagster", "job", "execute", "-f", tmp_path / "definitions.py", "-j", "mp")
    assert "RUN_SUCCESS" in out.stdout + out.stderr, out.stderr[-3000:]
    rows = []
    for f in part_files(tmp_path / "out.csv", ".csv"):
        rows += list(csv.DictReader(f.open()))
    assert sorted((r["g"], int(r["doubled"])) for r in rows) == [("a", 8), ("b", 4)]
    # mid has no write: target; it crossed processes as Parquet in the instance's storage,
    # in a directory of this run's
    (run,) = dg.DagsterInstance.get().get_runs()
    stored = dagster_home / "storage" / "odibi_spark" / "mp" / "mid"
    assert [p.name for p in stored.iterdir()] == [run.run_id]
    assert pq.read_table(stored / run.run_id).num_rows == 2
    shutil.rmtree(tmp_path / "out.csv")


def test_mode_error_fails_before_computing_and_ignore_keeps_the_first_write(spark, tmp_path):
    (tmp_path / "in.csv").write_text("id,v\n1,2\n")
    (tmp_path / "p.yaml").write_text(
        """
project: modes
engine: spark
connections: {fs: {type: local, base_path: .}}
pipelines:
  - pipeline: p
    nodes:
      - name: src
        read: {connection: fs, path: in.csv, format: csv}
      - name: once
        depends_on: [src]
        transform: {steps: ["SELECT id, v * 10 AS v FROM src"]}
        write: {connection: fs, path: once.csv, format: csv, mode: error}
      - name: kept
        depends_on: [src]
        transform: {steps: ["SELECT id, v FROM src"]}
        write: {connection: fs, path: kept.json, format: json, mode: ignore}
"""
    )
    defs = odibi_dagster.load_definitions(tmp_path / "p.yaml")
    assert run_job(defs, "p").success
    (tmp_path / "in.csv").write_text("id,v\n1,3\n")
    result = run_job(defs, "p")
    assert not result.success
    assert "once.csv' already exists and the write mode is 'error'" in failure_text(result)
    mats = {
        tuple(m.asset_key.path): m.metadata
        for m in result.asset_materializations_for_node("p__kept")
    }
    assert mats[("p", "kept")]["written"].value is False
    assert mats[("p", "kept")]["dagster/row_count"].value == 1
    rows = [
        json.loads(line) for f in part_files(tmp_path / "kept.json", ".json") for line in f.open()
    ]
    assert rows == [{"id": 1, "v": 2}]  # the first run's
    rows = [r for f in part_files(tmp_path / "once.csv", ".csv") for r in csv.DictReader(f.open())]
    assert rows == [{"id": "1", "v": "20"}]


def test_appends_to_one_delta_table_at_once_all_land_once(spark, engine, tmp_path: Path):
    # Delta's optimistic concurrency: blind appends never conflict, so none is lost or
    # retried into a double (two writers in one session, as two runs of one code location)
    import threading

    storage = LocalStorage(base_path=str(tmp_path))
    loc = storage.location("t")
    engine.write(frame(spark, [(0, "seed", 0.0)]), loc, "delta", "append")
    errors: list[BaseException] = []

    def writer(w: int) -> None:
        try:
            for i in range(4):
                rows = [(w * 100 + i * 10 + j, f"w{w}", float(j)) for j in range(3)]
                engine.write(frame(spark, rows), loc, "delta", "append")
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(w,)) for w in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert errors == []
    ids = sorted(r[0] for r in read_back(tmp_path / "t", "delta"))
    expected = sorted(
        [0] + [w * 100 + i * 10 + j for w in (1, 2) for i in range(4) for j in range(3)]
    )
    assert ids == expected
