"""Rows kept when several processes append to one target at the same time.

Run: `.venv/bin/python benchmarks/concurrent_appends.py [probe ...]` (probes: local-parquet,
local-csv, local-json, azurite-parquet, azurite-csv, spark-parquet, spark-csv; default all
but the Spark ones). The Azurite probes start Azurite (`make services`); the Spark ones a
local Spark session in each writer process (Java 17 or 21).

Each probe writes one row to the target, then starts ``--writers`` processes that wait at
a barrier and each append ``--appends`` frames of ``--rows`` rows, one after the other,
through the engine's ``write(..., mode="append")``. It then reads the target back without
the engine (pyarrow / pandas / a listing of Spark's part files) and prints the rows
expected (1 + every append that reported success) beside the rows found, and the appends
that failed with their first message. A write that reports success must have landed:
found == expected, and no process may exit 0 having dropped rows.
"""

from __future__ import annotations

import argparse
import glob
import io
import multiprocessing
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd

LOCAL = ("local-parquet", "local-csv", "local-json")
AZURITE = ("azurite-parquet", "azurite-csv")
SPARK = ("spark-parquet", "spark-csv")
ACCOUNT = "odibiprobe"
CONTAINER = "probe"


def frame(writer: int, seq: int, rows: int) -> pd.DataFrame:
    return pd.DataFrame({"writer": writer, "seq": seq, "i": range(rows), "pad": "x" * 16}).astype(
        {"writer": "int64", "seq": "int64", "i": "int64"}
    )


def location(probe: str, target: str, azurite: dict[str, str] | None) -> Any:
    if probe.startswith("azurite"):
        from odibi_dagster.resources.azure_adls import AzureADLS

        assert azurite is not None
        conn = AzureADLS(
            account=ACCOUNT,
            container=CONTAINER,
            auth_mode="direct_key",
            account_key=azurite["key"],
            blob_endpoint=azurite["endpoint"],
        )
        return conn.location(target)
    from odibi_dagster.resources.local import LocalStorage

    return LocalStorage(base_path=str(Path(target).parent)).location(Path(target).name)


def writer(
    probe: str,
    target: str,
    azurite: dict[str, str] | None,
    index: int,
    appends: int,
    rows: int,
    barrier: Any,
) -> tuple[int, list[str]]:
    """Append ``appends`` frames; (appends that reported success, error messages)."""
    fmt = probe.split("-")[1]
    if probe.startswith("spark"):
        from odibi_dagster.engines.spark import SparkEngine
        from odibi_dagster.resources.spark import SparkSessionResource

        spark = SparkSessionResource(
            master="local[1]", spark_conf={"spark.ui.enabled": "false"}
        ).get_session()
        engine: Any = SparkEngine(spark)
        make = lambda df: spark.createDataFrame(df)  # noqa: E731
    else:
        from odibi_dagster.engines.pandas import PandasEngine

        engine = PandasEngine()
        make = lambda df: df  # noqa: E731
    loc = location(probe, target, azurite)
    frames = [make(frame(index, seq, rows)) for seq in range(appends)]
    barrier.wait()
    ok, errors = 0, []
    for df in frames:
        try:
            engine.write(df, loc, fmt, "append", where=f"node 'w{index}' (probe.yaml:1)")
            ok += 1
        except Exception as exc:
            errors.append(f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}")
    return ok, errors


def count(probe: str, target: str, azurite: dict[str, str] | None) -> int:
    fmt = probe.split("-")[1]
    if probe.startswith("spark"):
        parts = [p for p in glob.glob(f"{target}/part-*") if not p.endswith(".crc")]
        if fmt == "parquet":
            import pyarrow.parquet as pq

            return sum(pq.ParquetFile(p).metadata.num_rows for p in parts)
        return sum(len(pd.read_csv(p)) for p in parts)
    if probe.startswith("azurite"):
        from azure.storage.blob import BlobClient

        assert azurite is not None
        blob = BlobClient.from_connection_string(azurite["conn"], CONTAINER, target)
        data = io.BytesIO(blob.download_blob().readall())
    else:
        data = io.BytesIO(Path(target).read_bytes())
    if fmt == "parquet":
        import pyarrow.parquet as pq

        return int(pq.read_table(data).num_rows)
    if fmt == "csv":
        return len(pd.read_csv(data))
    return len(pd.read_json(data, lines=True))


def run_probe(
    probe: str,
    root: Path,
    azurite: dict[str, str] | None,
    writers: int,
    appends: int,
    rows: int,
    ctx: Any,
) -> dict[str, Any]:
    fmt = probe.split("-")[1]
    name = f"{probe}.{fmt}"
    target = name if probe.startswith("azurite") else str(root / name)
    first = frame(-1, 0, 1)
    if probe.startswith("spark"):
        os.makedirs(target)
        if fmt == "parquet":
            first.to_parquet(f"{target}/part-00000-first.parquet", index=False)
        else:
            first.to_csv(f"{target}/part-00000-first.csv", index=False)
    else:
        from odibi_dagster.engines.pandas import PandasEngine

        PandasEngine().write(first, location(probe, target, azurite), fmt, "overwrite")
    started = time.monotonic()
    with ctx.Manager() as manager:
        barrier = manager.Barrier(writers, timeout=300)
        with ctx.Pool(writers) as pool:
            results = pool.starmap(
                writer,
                [(probe, target, azurite, i, appends, rows, barrier) for i in range(writers)],
            )
    seconds = time.monotonic() - started
    landed = sum(ok for ok, _ in results)
    errors = [e for _, errs in results for e in errs]
    return {
        "probe": probe,
        "appends": writers * appends,
        "reported_ok": landed,
        "expected": 1 + landed * rows,
        "found": count(probe, target, azurite),
        "errors": errors,
        "seconds": seconds,
    }


def start_azurite(root: Path) -> tuple[Any, dict[str, str]]:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from odibi_dagster_tests.emulators.azurite import start_azurite as start
    from odibi_dagster_tests.emulators.fixtures import random_key

    key = random_key()
    svc = start(root / "azurite", {ACCOUNT: key})
    svc.create_container(ACCOUNT, CONTAINER)
    return svc, {
        "key": key,
        "endpoint": svc.blob_endpoint(ACCOUNT),
        "conn": svc.connection_string(ACCOUNT),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("probes", nargs="*", default=[*LOCAL, *AZURITE])
    parser.add_argument("--writers", type=int, default=2)
    parser.add_argument("--appends", type=int, default=5)
    parser.add_argument("--rows", type=int, default=200_000)
    args = parser.parse_args()
    ctx = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        svc, azurite = None, None
        if any(p.startswith("azurite") for p in args.probes):
            svc, azurite = start_azurite(root)
        try:
            for probe in args.probes:
                rows = args.rows if not probe.startswith("spark") else min(args.rows, 50_000)
                r = run_probe(probe, root, azurite, args.writers, args.appends, rows, ctx)
                lost = r["expected"] - r["found"]
                print(
                    f"{r['probe']:16} {args.writers} writers x {args.appends} appends of "
                    f"{rows:,} rows: {r['reported_ok']}/{r['appends']} reported written; "
                    f"rows expected {r['expected']:,}, found {r['found']:,} "
                    f"({'LOST ' + format(lost, ',') if lost else 'none lost'}); "
                    f"{len(r['errors'])} failed; {r['seconds']:.1f} s",
                    flush=True,
                )
                for error in sorted(set(r["errors"]))[:3]:
                    print(f"    failed: {error}", flush=True)
        finally:
            if svc is not None:
                svc.stop()


if __name__ == "__main__":
    main()
