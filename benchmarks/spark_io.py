"""SparkIOManager write and read of 1,000,000 rows beside the same work hand-written in Spark.

Run: `.venv/bin/python benchmarks/spark_io.py` (about 4 minutes on 2 cores; Java 17 or 21,
the Delta jars are downloaded once). Everything runs in one local Spark session
(`local[2]`), so every variant meets the same JVM, caches and data.

The data: `spark.range(1_000_000)` with a double `amount` (`rand(0)`), an int `g` and a
string `s`, written once as Parquet. A generated project (`engine: spark`, one local
connection) has an external source node reading that Parquet and one node per format
(`parquet`, `delta`) that depends on it and writes it with mode overwrite.

What is measured, each 3 times (median and minimum; the variants take turns in each
round, after one unmeasured warm-up round that also creates every target):

- write, odibi run: wall time of the pipeline job run (`execute_in_process`) with only
  the writing node selected: run start, loading the source through the IO manager, the
  node, `SparkIOManager.handle_output`, events.
- write, odibi handle_output: the part of that run between the step's STEP_OUTPUT and
  HANDLED_OUTPUT events in the run's event log, which is `handle_output` alone: the write
  (with its row count observed during the write job), reading the target back, the
  schema and the 5-row preview.
- write, hand-written: `spark.read.parquet(src).write.format(X).mode("overwrite").save(path)`.
- write, hand-written + preview: the same, then `limit(5).collect()` of what was written,
  the read-back the IO manager does for its preview.
- read, odibi: `SparkIOManager.load_input` (fresh IO manager, the node's metadata from the
  compiled asset) then `count()`; read, hand-written: `spark.read.format(X).load(path)
  .count()`. Both read the same target, already read once (for Delta the snapshot of the
  table version is then loaded, so neither pays for it).

The `dagster/row_count` the IO manager reports is checked to be 1,000,000 in every run.

Ratios to the hand-written variant are what to read: absolute seconds depend on the
machine, while the ratio says what the IO manager adds to the same Spark work.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dagster as dg
import yaml

import odibi_dagster
from odibi_dagster.io_managers.spark import SparkIOManager
from odibi_dagster.resources.local import LocalStorage
from odibi_dagster.resources.spark import SparkSessionResource
from odibi_dagster.resources.spark_jars import download_jars

ROWS, REPEATS = 1_000_000, 7
# what the validated node computes: a join back to the source (a shuffle), so computing
# it twice costs what it would in a real pipeline
VALIDATED_SQL = (
    "SELECT s.g, s.id, s.amount, t.total FROM {src} s "
    "JOIN (SELECT g, SUM(amount) AS total FROM {src} GROUP BY g) t ON s.g = t.g"
)
FORMATS = ("parquet", "delta")
QUIET = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}


def make_source(spark: Any, path: Path) -> None:
    from pyspark.sql import functions as F

    df = (
        spark.range(ROWS)
        .withColumn("amount", F.rand(seed=0))
        .withColumn("g", (F.col("id") % 100).cast("int"))
        .withColumn("s", F.concat(F.lit("c"), (F.col("id") % 1000).cast("string")))
    )
    df.write.mode("overwrite").parquet(str(path))


def make_project(root: Path, data: Path) -> Path:
    nodes: list[dict] = [
        {"name": "source", "read": {"connection": "fs", "path": "src.parquet", "format": "parquet"}}
    ]
    for fmt in FORMATS:
        nodes.append(
            {
                "name": f"out_{fmt}",
                "depends_on": ["source"],
                "write": {
                    "connection": "fs",
                    "path": f"odibi_{fmt}",
                    "format": fmt,
                    "mode": "overwrite",
                },
            }
        )
    # a node with a transform and checks: computed once (its plan is cached for the write)
    nodes.append(
        {
            "name": "validated",
            "depends_on": ["source"],
            "transform": {"steps": [VALIDATED_SQL.format(src="source")]},
            "validation": {"not_empty": True, "no_nulls": ["g", "total"]},
            "write": {"connection": "fs", "path": "odibi_validated", "format": "parquet"},
        }
    )
    project = {
        "project": "spark_io",
        "engine": "spark",
        "connections": {"fs": {"type": "local", "base_path": str(data)}},
        "pipelines": [{"pipeline": "pipe", "nodes": nodes}],
    }
    path = root / "project.yaml"
    path.write_text(yaml.safe_dump(project, sort_keys=False))
    return path


def timed(fn: Callable[[], Any]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


class Bench:
    def __init__(self, spark: Any, root: Path):
        self.spark = spark
        self.data = root / "data"
        self.data.mkdir()
        self.src = self.data / "src.parquet"
        make_source(spark, self.src)
        self.defs = odibi_dagster.load_definitions(make_project(root, self.data))
        self.job = self.defs.resolve_job_def("pipe")
        self.instance = dg.DagsterInstance.ephemeral()
        self.times: dict[tuple[str, str], list[float]] = {}
        self.row_counts: list[int] = []

    def record(self, variant: str, fmt: str, seconds: float) -> None:
        self.times.setdefault((variant, fmt), []).append(seconds)

    # ------------------------------------------------------------------ write

    def odibi_write(self, fmt: str) -> tuple[float, float]:
        """(wall time of the run, handle_output time from the event log)."""
        key = dg.AssetKey(["pipe", f"out_{fmt}"])
        t = time.perf_counter()
        result = self.job.execute_in_process(
            instance=self.instance, run_config=QUIET, asset_selection=[key]
        )
        wall = time.perf_counter() - t
        assert result.success
        stamps = {
            e.dagster_event_type: e.timestamp
            for e in self.instance.all_logs(result.run_id)
            if e.step_key == f"pipe__out_{fmt}"
        }
        handle = (
            stamps[dg.DagsterEventType.HANDLED_OUTPUT] - stamps[dg.DagsterEventType.STEP_OUTPUT]
        )
        (mat,) = result.get_asset_materialization_events()
        rows = mat.materialization.metadata["dagster/row_count"].value
        assert rows == ROWS, f"{fmt}: dagster/row_count is {rows}, expected {ROWS}"
        self.row_counts.append(int(rows))
        return wall, handle

    def odibi_validated(self) -> float:
        key = dg.AssetKey(["pipe", "validated"])
        t = time.perf_counter()
        result = self.job.execute_in_process(
            instance=self.instance, run_config=QUIET, asset_selection=[key]
        )
        wall = time.perf_counter() - t
        assert result.success
        evaluations = result.get_asset_check_evaluations()
        assert len(evaluations) == 3 and all(e.passed for e in evaluations)
        return wall

    def hand_validated(self, cache: bool) -> float:
        """The same node as a hand-written Dagster asset, run the same way: the query, the
        checks (one aggregation), the write; with ``cache`` the query's result is cached
        for the write, else the write computes it again."""
        from pyspark.sql import functions as F

        def node() -> None:
            self.spark.read.parquet(str(self.src)).createOrReplaceTempView("src")
            df = self.spark.sql(VALIDATED_SQL.format(src="src"))
            if cache:
                df.persist()
            row = df.agg(
                F.count(F.lit(1)).alias("n"),
                F.sum(F.col("g").isNull().cast("int")).alias("g"),
                F.sum(F.col("total").isNull().cast("int")).alias("t"),
            ).collect()[0]
            assert row["n"] > 0 and not row["g"] and not row["t"]
            df.write.mode("overwrite").parquet(str(self.data / "hand_validated"))
            if cache:
                df.unpersist()

        @dg.asset(name=f"hand_validated_{'cached' if cache else 'twice'}")
        def hand() -> None:
            node()

        job = dg.Definitions(assets=[hand]).resolve_implicit_global_asset_job_def()
        return timed(
            lambda: job.execute_in_process(instance=self.instance, run_config=QUIET).success
        )

    def hand_asset_run(self, fmt: str) -> float:
        """The write as a hand-written Dagster asset, run the same way (the run overhead
        of Dagster, without odibi)."""
        src, path, spark = str(self.src), str(self.data / f"hand_asset_{fmt}"), self.spark

        @dg.asset(name=f"hand_{fmt}")
        def hand() -> None:
            spark.read.parquet(src).write.format(fmt).mode("overwrite").save(path)

        job = dg.Definitions(assets=[hand]).resolve_implicit_global_asset_job_def()
        return timed(
            lambda: job.execute_in_process(instance=self.instance, run_config=QUIET).success
        )

    def hand_write(self, fmt: str, preview: bool) -> float:
        path = str(self.data / (f"hand_preview_{fmt}" if preview else f"hand_{fmt}"))

        def run() -> None:
            self.spark.read.parquet(str(self.src)).write.format(fmt).mode("overwrite").save(path)
            if preview:
                self.spark.read.format(fmt).load(path).limit(5).collect()

        return timed(run)

    # ------------------------------------------------------------------- read

    def odibi_read(self, fmt: str) -> float:
        key = dg.AssetKey(["pipe", f"out_{fmt}"])
        meta = dict(self.defs.resolve_assets_def(key).metadata_by_key[key])
        io = SparkIOManager(connections={"fs": LocalStorage(base_path=str(self.data))})
        upstream = dg.build_output_context(asset_key=key, definition_metadata=meta)
        context = dg.build_input_context(asset_key=key, upstream_output=upstream)

        def run() -> None:
            assert io.load_input(context).count() == ROWS

        return timed(run)

    def hand_read(self, fmt: str) -> float:
        path = str(self.data / f"odibi_{fmt}")

        def run() -> None:
            assert self.spark.read.format(fmt).load(path).count() == ROWS

        return timed(run)

    # -------------------------------------------------------------------- run

    def round(self, measured: bool) -> None:
        for fmt in FORMATS:
            wall, handle = self.odibi_write(fmt)
            hand_run = self.hand_asset_run(fmt)
            hand = self.hand_write(fmt, preview=False)
            hand_preview = self.hand_write(fmt, preview=True)
            # alternate which read goes first
            if len(self.times.get(("read, odibi", fmt), [])) % 2:
                hand_r, odibi_r = self.hand_read(fmt), self.odibi_read(fmt)
            else:
                odibi_r, hand_r = self.odibi_read(fmt), self.hand_read(fmt)
            if measured:
                self.record("write, odibi run", fmt, wall)
                self.record("write, hand-written asset run", fmt, hand_run)
                self.record("write, odibi handle_output", fmt, handle)
                self.record("write, hand-written", fmt, hand)
                self.record("write, hand-written + preview", fmt, hand_preview)
                self.record("read, odibi", fmt, odibi_r)
                self.record("read, hand-written", fmt, hand_r)
        validated = self.odibi_validated()
        twice = self.hand_validated(cache=False)
        once = self.hand_validated(cache=True)
        if measured:
            self.record("validated, odibi run", "parquet", validated)
            self.record("validated, hand-written", "parquet", twice)
            self.record("validated, hand-written, cached", "parquet", once)

    def table(self) -> list[str]:
        lines = [
            f"{ROWS:,} rows (id, amount, g, s), local[2], {REPEATS} runs each",
            f"  {'variant':32} {'format':8} {'median s':>9} {'min s':>7} {'ratio':>6}",
        ]
        for kind in ("write", "read", "validated"):
            for fmt in FORMATS:
                if (f"{kind}, hand-written", fmt) not in self.times:
                    continue
                base = statistics.median(self.times[(f"{kind}, hand-written", fmt)])
                for (variant, f), secs in self.times.items():
                    if f != fmt or not variant.startswith(kind):
                        continue
                    med = statistics.median(secs)
                    lines.append(
                        f"  {variant:32} {fmt:8} {med:9.2f} {min(secs):7.2f} {med / base:5.2f}x"
                    )
        return lines


def main() -> None:
    started = time.perf_counter()
    download_jars(log=lambda _msg: None)
    spark = SparkSessionResource(
        master="local[2]", spark_conf={"spark.sql.shuffle.partitions": "2"}
    ).get_session()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            bench = Bench(spark, Path(tmp))
            bench.round(measured=False)  # warm-up: JIT, Delta classes, every target created
            for _ in range(REPEATS):
                bench.round(measured=True)
            bench.instance.dispose()
            print("\n".join(bench.table()))
            print(
                f"  dagster/row_count of every odibi run: {sorted(set(bench.row_counts))} "
                f"({len(bench.row_counts)} runs)"
            )
    finally:
        spark.stop()
    print(f"  total {time.perf_counter() - started:.0f} s (incl. session start and warm-up)")


if __name__ == "__main__":
    main()
