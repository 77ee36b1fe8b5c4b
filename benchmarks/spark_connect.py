"""The Spark engine over Spark Connect beside the same engine on a local session.

Run: `.venv/bin/python benchmarks/spark_connect.py` (about 5 minutes on 2 cores; Java 17
or 21, the Delta jars are downloaded once). Two Sparks on this machine, each `local[2]`
with the same jars and defaults: a classic session in this process, and a Spark Connect
server started by pip's PySpark (`odibi_dagster.resources.spark_connect_server`), reached
over gRPC on 127.0.0.1. So the ratio is what Connect itself adds (the gRPC round trips,
Arrow batches to the client, plans analysed on the server), not a network.

The data: `spark.range(1_000_000)` with a double `amount`, an int `g` and a string `s`,
written once as Parquet. What is measured, median of 5 rounds after one unmeasured
warm-up round, the two sessions taking turns in each round:

- write: `SparkEngine.write(engine.read(src), target, fmt, "overwrite")`, Parquet and
  Delta (the engine's whole write: existence check, write beside the old data and swap
  for Parquet, the Delta commit).
- read: `SparkEngine.read(target, fmt).count()`.
- node: one Dagster run (`execute_in_process`) of a compiled project with one trivial
  node (reads a 3-row CSV, writes Parquet): the per-node overhead of Connect in a run
  (session lookup, read analysed at once, the write, the row count observed, the
  preview).

Ratios Connect / local are what to read.
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
from odibi_dagster.engines.spark import SparkEngine
from odibi_dagster.resources.local import LocalStorage
from odibi_dagster.resources.spark import SparkSessionResource
from odibi_dagster.resources.spark_connect import forget_sessions
from odibi_dagster.resources.spark_connect_server import start_server
from odibi_dagster.resources.spark_jars import download_jars

ROWS, REPEATS = 1_000_000, 5
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


def make_project(root: Path, remote: str | None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "data").mkdir(exist_ok=True)
    (root / "data" / "tiny.csv").write_text("id,name\n1,a\n2,b\n3,c\n", encoding="utf-8")
    project: dict[str, Any] = {
        "project": "bench",
        "engine": "spark",
        "connections": {"fs": {"type": "local", "base_path": str(root / "data")}},
        "pipelines": [
            {
                "pipeline": "p",
                "nodes": [
                    {
                        "name": "trivial",
                        "read": {"connection": "fs", "path": "tiny.csv", "format": "csv"},
                        "write": {"connection": "fs", "path": "out", "format": "parquet"},
                    }
                ],
            }
        ],
    }
    if remote:
        project["spark"] = {"remote": remote}
    path = root / "project.yaml"
    path.write_text(yaml.safe_dump(project, sort_keys=False), encoding="utf-8")
    return path


def timed(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    download_jars(log=lambda _msg: None)
    local = SparkSessionResource(
        master="local[2]", spark_conf={"spark.sql.shuffle.partitions": "2"}
    ).get_session()
    server = start_server()
    try:
        remote = SparkSessionResource(remote=server.url).get_session()
        with tempfile.TemporaryDirectory() as tmp:
            run(Path(tmp), local, remote, server.url)
    finally:
        forget_sessions()
        server.stop()
        local.stop()


def run(tmp: Path, local: Any, remote: Any, url: str) -> None:
    store = LocalStorage(base_path=str(tmp), connection_name="fs")
    make_source(local, tmp / "src.parquet")
    engines = {"local": SparkEngine(local), "connect": SparkEngine(remote)}
    tasks: dict[str, Callable[[], Any]] = {}
    for name, eng in engines.items():
        for fmt in FORMATS:
            target = store.location(f"{name}-{fmt}")

            def write(eng: SparkEngine = eng, target: Any = target, fmt: str = fmt) -> None:
                df = eng.read(store.location("src.parquet"), "parquet")
                eng.write(df, target, fmt, "overwrite")

            def read(eng: SparkEngine = eng, target: Any = target, fmt: str = fmt) -> None:
                assert eng.read(target, fmt).count() == ROWS

            tasks[f"write {fmt} {name}"] = write
            tasks[f"read {fmt} {name}"] = read
        defs = odibi_dagster.load_definitions(
            make_project(tmp / f"node-{name}", url if name == "connect" else None)
        )
        job = defs.resolve_job_def("p")

        def node(job: Any = job) -> None:
            result = job.execute_in_process(
                instance=dg.DagsterInstance.ephemeral(), run_config=QUIET
            )
            assert result.success

        tasks[f"node {name}"] = node

    times: dict[str, list[float]] = {k: [] for k in tasks}
    for round_ in range(REPEATS + 1):
        for key, fn in tasks.items():
            t = timed(fn)
            if round_:
                times[key].append(t)

    print(f"{ROWS:,} rows; median (min) of {REPEATS} rounds, seconds; connect / local")
    for what in [f"{op} {fmt}" for fmt in FORMATS for op in ("write", "read")] + ["node"]:
        lo, co = times[f"{what} local"], times[f"{what} connect"]
        ml, mc = statistics.median(lo), statistics.median(co)
        print(
            f"  {what:14s} local {ml:6.3f} ({min(lo):.3f})   connect {mc:6.3f} "
            f"({min(co):.3f})   {mc / ml:5.2f}x   (+{(mc - ml) * 1000:.0f} ms)"
        )


if __name__ == "__main__":
    main()
