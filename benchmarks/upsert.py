"""Upsert of 100,000 changed rows into a 1,000,000-row Delta table: the engines' keyed
write beside the raw merge call it makes, on pandas (delta-rs) and on Spark (Delta Lake).

Run: `.venv/bin/python benchmarks/upsert.py` (about 5 minutes on 2 cores; Spark needs
Java and the Delta jars, downloaded once).

The table: `id` (0..999,999), a double `amount` and a string `s`, written once with
delta-rs. The changes: 100,000 rows, 90,000 of them ids already in the table (every
tenth id, new values) and 10,000 new ids. Before each measured write the table is put
back as it was (a copy of the original directory, not timed), so every write merges
the same changes into the same 1,000,000 rows.

- pandas, odibi: `PandasEngine().merge(changes, loc, "delta", "upsert", {"keys": ["id"]})`
  (the key check, the table's schema, the merge, its counts).
- pandas, raw: `DeltaTable(path).merge(arrow, "t.id = s.id", ...)
  .when_matched_update_all().when_not_matched_insert_all().execute()`.
- Spark, odibi: `SparkEngine(spark).merge(changes, ...)` with the changes a DataFrame
  over a Parquet file: the key check (one aggregation job over the 100,000 rows), then
  one SQL ``MERGE INTO delta.`<path>` `` (what also runs over Spark Connect).
- Spark, raw: `DeltaTable.forPath(spark, path).alias("t").merge(changes.alias("s"),
  "t.id = s.id").whenMatchedUpdateAll().whenNotMatchedInsertAll().execute()`.

Median and minimum of REPEATS writes, odibi and raw taking turns (one unmeasured round
first). Each write's result is checked: 1,010,000 rows, the counts 10,000 inserted and
90,000 updated. The ratio odibi / raw is what to read.
"""

from __future__ import annotations

import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
from deltalake import DeltaTable, write_deltalake

from odibi_dagster.engines.pandas import PandasEngine
from odibi_dagster.resources.local import LocalStorage

ROWS, CHANGED, NEW, REPEATS = 1_000_000, 90_000, 10_000, 5
KEYS = {"keys": ["id"]}


def base_table(path: Path) -> None:
    ids = np.arange(ROWS, dtype="int64")
    df = pd.DataFrame({"id": ids, "amount": ids * 0.5, "s": [f"c{i % 1000}" for i in ids]})
    write_deltalake(str(path), df)


def changes() -> pd.DataFrame:
    ids = np.concatenate(
        [np.arange(0, CHANGED * 10, 10, dtype="int64"), np.arange(ROWS, ROWS + NEW, dtype="int64")]
    )
    return pd.DataFrame({"id": ids, "amount": ids * 2.0, "s": ["changed"] * len(ids)})


def fresh(original: Path, target: Path) -> None:
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(original, target)


def check(path: Path, inserted: int, updated: int) -> None:
    assert DeltaTable(str(path)).to_pyarrow_dataset().count_rows() == ROWS + NEW
    assert (inserted, updated) == (NEW, CHANGED), (inserted, updated)


def measure(
    variants: dict[str, Callable[[], tuple[int, int]]], original: Path, target: Path
) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {name: [] for name in variants}
    for round_ in range(REPEATS + 1):
        order = list(variants) if round_ % 2 == 0 else list(reversed(variants))
        for name in order:
            fresh(original, target)
            t0 = time.perf_counter()
            inserted, updated = variants[name]()
            elapsed = time.perf_counter() - t0
            check(target, inserted, updated)
            if round_:  # the first round warms up
                times[name].append(elapsed)
    return times


def report(engine: str, times: dict[str, list[float]]) -> None:
    ours, raw = (statistics.median(times[k]) for k in ("odibi", "raw"))
    for name, values in times.items():
        print(
            f"{engine:7} {name:6} median {statistics.median(values):6.2f} s  "
            f"min {min(values):6.2f} s"
        )
    print(
        f"{engine:7} odibi / raw: {ours / raw:.2f}x (median), "
        f"{min(times['odibi']) / min(times['raw']):.2f}x (min)"
    )


def pandas_variants(target: Path, df: pd.DataFrame) -> dict[str, Callable[[], tuple[int, int]]]:
    loc = LocalStorage(base_path=str(target.parent)).location(target.name)
    engine = PandasEngine()

    def odibi() -> tuple[int, int]:
        outcome = engine.merge(df, loc, "delta", "upsert", KEYS)
        return outcome.inserted, outcome.updated

    def raw() -> tuple[int, int]:
        source = pa.Table.from_pandas(df, preserve_index=False)
        metrics = (
            DeltaTable(str(target))
            .merge(source, "t.id = s.id", source_alias="s", target_alias="t")
            .when_matched_update_all()
            .when_not_matched_insert_all()
            .execute()
        )
        return metrics["num_target_rows_inserted"], metrics["num_target_rows_updated"]

    return {"odibi": odibi, "raw": raw}


def spark_variants(
    spark: Any, target: Path, source: Path
) -> dict[str, Callable[[], tuple[int, int]]]:
    from delta.tables import DeltaTable as SparkDeltaTable

    from odibi_dagster.engines.spark import SparkEngine

    loc = LocalStorage(base_path=str(target.parent)).location(target.name)
    engine = SparkEngine(spark)
    df = spark.read.parquet(str(source))

    def odibi() -> tuple[int, int]:
        outcome = engine.merge(df, loc, "delta", "upsert", KEYS)
        return outcome.inserted, outcome.updated

    def raw() -> tuple[int, int]:
        row = (
            SparkDeltaTable.forPath(spark, str(target))
            .alias("t")
            .merge(df.alias("s"), "t.id = s.id")
            .whenMatchedUpdateAll()
            .whenNotMatchedInsertAll()
            .execute()
            .collect()[0]
        )
        return row["num_inserted_rows"], row["num_updated_rows"]

    return {"odibi": odibi, "raw": raw}


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        original, target = root / "original", root / "table"
        base_table(original)
        df = changes()
        df.to_parquet(root / "changes.parquet", index=False)
        report("pandas", measure(pandas_variants(target, df), original, target))

        from odibi_dagster.resources.spark import SparkSessionResource

        spark = SparkSessionResource().get_session()
        spark.sparkContext.setLogLevel("ERROR")
        report(
            "spark",
            measure(spark_variants(spark, target, root / "changes.parquet"), original, target),
        )


if __name__ == "__main__":
    main()
