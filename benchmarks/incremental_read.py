"""A stateful incremental read of the 1% newest rows beside a full read of the same data.

Run: `.venv/bin/python benchmarks/incremental_read.py` (about 2 minutes on 2 cores
without Spark; add `--spark` for the Spark engine too, a few minutes more).

The data: 1,000,000 rows (`id` 0..999,999, a double `amount`, a string `s`) landed in
100 batches of 10,000 in id order: a Delta table of 100 appends (delta-rs, one file
each, min/max statistics in the log), and a folder of 100 Parquet files (pyarrow, one
row group each). That is how data lands in a table read incrementally: each batch
newer than the last, so each file covers its own range of the column.

What is measured, for each of Delta and Parquet, on the engine's own read:

- incremental: `engine.read_rows(..., RowFilter("id", 989_999))`, what a stateful read
  with the mark at 989,999 reads (the last batch, 10,000 rows = 1%), plus its new mark
  (`engine.key_summary`), as `odibi_dagster.incremental.read` does it;
- full: `engine.read(...)` of the same path, what the node read before.

On Spark a read is lazy: both then go through the rows they read (a count and a sum of
`amount`, one job), as a node's steps would; the incremental one also runs the job of its
new mark.

Each 5 times, taking turns, after one unmeasured round; median and minimum. The rows
each read returns are checked (10,000 and 1,000,000).

Bytes: what the scan reads beside what the path holds. Delta: the sizes (from the log)
of the files the filtered pyarrow dataset of delta-rs still lists
(`dataset.get_fragments(filter=...)`, the files whose statistics do not rule the rows
out), beside all the table's files. Parquet: the compressed size of the row groups
whose statistics do not rule the rows out (`fragment.split_by_row_group(filter=...)`),
beside all row groups; every file's footer is still read (a few kB each). Spark: the
`filesSize` / `numFiles` metrics of the file scan of the executed plan (after Delta's
data skipping) of that row count and largest id; Spark's Parquet scan lists every file
(its row-group skipping happens inside the tasks and is not in these metrics).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq
from deltalake import DeltaTable, write_deltalake

from odibi_dagster.engines.base import Engine, RowFilter
from odibi_dagster.engines.pandas import PandasEngine
from odibi_dagster.resources.local import LocalStorage

ROWS, BATCHES, REPEATS = 1_000_000, 100, 5
PER_BATCH = ROWS // BATCHES
MARK = ROWS - PER_BATCH - 1  # the last run read up to here: 1% is new


def batch(i: int) -> pa.Table:
    ids = pa.array(range(i * PER_BATCH, (i + 1) * PER_BATCH), pa.int64())
    return pa.table(
        {
            "id": ids,
            "amount": pc.multiply(pc.cast(ids, pa.float64()), 0.5),
            "s": pa.array([f"row-{j % 997}" for j in range(PER_BATCH)]),
        }
    )


def land(root: Path) -> None:
    (root / "parquet").mkdir()
    for i in range(BATCHES):
        t = batch(i)
        write_deltalake(str(root / "delta"), t, mode="append")
        pq.write_table(t, root / "parquet" / f"part-{i:05d}.parquet")


def delta_bytes(path: Path) -> tuple[int, int, int, int]:
    """(bytes of the files the filter keeps, files kept, bytes of all files, all files)."""
    dt = DeltaTable(str(path))
    sizes = {
        p: int(s)
        for p, s in zip(
            dt.get_add_actions(flatten=True).column("path").to_pylist(),
            dt.get_add_actions(flatten=True).column("size_bytes").to_pylist(),
            strict=True,
        )
    }
    dataset = dt.to_pyarrow_dataset()
    kept = [f.path for f in dataset.get_fragments(filter=pc.field("id") > MARK)]
    kept_bytes = sum(size for p, size in sizes.items() if any(k.endswith(p) for k in kept))
    return kept_bytes, len(kept), sum(sizes.values()), len(sizes)


def parquet_bytes(path: Path) -> tuple[int, int, int, int]:
    """(bytes of the row groups the filter keeps, row groups kept, all bytes, all groups)."""
    dataset = pads.dataset(str(path), format="parquet")
    kept_bytes = total = groups = kept_groups = 0
    for frag in dataset.get_fragments():
        md = frag.metadata

        def size(rg: int, md: Any = md) -> int:
            g = md.row_group(rg)
            return sum(g.column(c).total_compressed_size for c in range(g.num_columns))

        total += sum(size(i) for i in range(md.num_row_groups))
        groups += md.num_row_groups
        for piece in frag.split_by_row_group(filter=pc.field("id") > MARK):
            for rg in piece.row_groups:
                kept_bytes += size(rg.id)
                kept_groups += 1
    return kept_bytes, kept_groups, total, groups


def timed(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def compare(engine: Engine, loc: Any, fmt: str, consume: Callable[[Any], int]) -> dict[str, float]:
    rows = RowFilter("id", MARK)
    key = RowFilter("id", None)

    def incremental() -> None:
        df = engine.read_rows(loc, fmt, {}, rows)
        n, top = engine.key_summary(df, key)
        assert (n, top) == (PER_BATCH, ROWS - 1), (n, top)
        assert consume(df) == PER_BATCH

    def full() -> None:
        assert consume(engine.read(loc, fmt, {})) == ROWS

    variants = {"incremental": incremental, "full": full}
    for fn in variants.values():  # warm-up
        fn()
    times: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(REPEATS):
        for name, fn in variants.items():
            times[name].append(timed(fn))
    out = {}
    for name, ts in times.items():
        out[name] = statistics.median(ts)
        out[f"{name}_min"] = min(ts)
    return out


def spark_consume(df: Any) -> int:
    """What a node does with the rows it read, at least: go through all of them (a count
    alone would be answered from Delta's statistics without reading a file)."""
    from pyspark.sql import functions as F

    n, _ = df.agg(F.count(F.lit(1)), F.sum("amount")).collect()[0]
    return int(n)


def spark_scan(df: Any) -> tuple[int, int]:
    """(filesSize, numFiles) of the file scan of the executed plan of :func:`spark_consume`."""
    from pyspark.sql import functions as F

    agg = df.agg(F.count(F.lit(1)), F.sum("amount"))
    agg.collect()
    plan = agg._jdf.queryExecution().executedPlan()
    if plan.getClass().getSimpleName() == "AdaptiveSparkPlanExec":
        plan = plan.executedPlan()
    size = files = 0
    stack = [plan]
    while stack:
        node = stack.pop()
        metrics = node.metrics()
        if metrics.contains("filesSize"):
            size += int(metrics.get("filesSize").get().value())
            files += int(metrics.get("numFiles").get().value())
        children = node.children()
        for i in range(children.size()):
            stack.append(children.apply(i))
        if node.getClass().getSimpleName().endswith("QueryStageExec"):
            stack.append(node.plan())
    return size, files


def line(label: str, t: dict[str, float]) -> str:
    return (
        f"  {label:<8} incremental {t['incremental']:.3f} s (min {t['incremental_min']:.3f}), "
        f"full {t['full']:.3f} s (min {t['full_min']:.3f}): "
        f"{t['incremental'] / t['full']:.3f}x"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--spark", action="store_true", help="also on the Spark engine")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        land(root)
        print(f"landed {ROWS:,} rows in {BATCHES} batches ({time.perf_counter() - t0:.1f} s)")
        kb, kf, tb, tf = delta_bytes(root / "delta")
        print(
            f"Delta bytes read: {kb:,} of {tb:,} ({kb / tb:.2%}); files {kf} of {tf} "
            "(the rest skipped on min/max statistics)"
        )
        pb, pg, ptb, ptg = parquet_bytes(root / "parquet")
        print(
            f"Parquet bytes read: {pb:,} of {ptb:,} ({pb / ptb:.2%}); row groups {pg} of "
            f"{ptg} (plus every file's footer)"
        )
        storage = LocalStorage(base_path=str(root), connection_name="lake")
        pandas = PandasEngine()
        print(f"pandas engine, median of {REPEATS}:")
        for fmt, rel in (("delta", "delta"), ("parquet", "parquet")):
            t = compare(pandas, storage.location(rel), fmt, len)
            print(line(fmt, t))
        if args.spark:
            from odibi_dagster.engines.spark import SparkEngine
            from odibi_dagster.resources.spark import SparkSessionResource
            from odibi_dagster.resources.spark_jars import download_jars

            download_jars()
            session = SparkSessionResource(master="local[2]").get_session()
            spark = SparkEngine(session)
            print(f"Spark engine (local[2]), median of {REPEATS}:")
            for fmt, rel in (("delta", "delta"), ("parquet", "parquet")):
                loc = storage.location(rel)
                inc = spark_scan(spark.read_rows(loc, fmt, {}, RowFilter("id", MARK)))
                full = spark_scan(spark.read(loc, fmt, {}))
                print(
                    f"  {fmt:<8} scan bytes: incremental {inc[0]:,} in {inc[1]} files, "
                    f"full {full[0]:,} in {full[1]} files ({inc[0] / max(full[0], 1):.2%})"
                )
                t = compare(spark, loc, fmt, spark_consume)
                print(line(fmt, t))
            session.stop()


if __name__ == "__main__":
    main()
