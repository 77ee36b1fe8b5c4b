"""Peak memory of a 10-node pandas chain over 1,000,000 rows: odibi vs hand-written assets.

Run: `.venv/bin/python benchmarks/memory.py`. Each variant runs in a fresh child process
(the same script with an argument) and reports its peak RSS, so the two are compared
under the same interpreter, data and machine.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

ROWS, NODES = 1_000_000, 10


def make_data(root: Path) -> None:
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(0)
    df = pd.DataFrame(
        {"id": np.arange(ROWS), "amount": rng.random(ROWS), "g": rng.integers(0, 100, ROWS)}
    )
    df.to_parquet(root / "in.parquet", index=False)


def odibi(root: Path) -> None:
    import dagster as dg

    import odibi_dagster

    nodes: list[dict] = [
        {"name": "n0", "read": {"connection": "fs", "path": "in.parquet", "format": "parquet"}}
    ]
    for i in range(1, NODES):
        nodes.append(
            {
                "name": f"n{i}",
                "depends_on": [f"n{i - 1}"],
                "transform": {"steps": [f"SELECT id, amount * 1.01 AS amount, g FROM n{i - 1}"]},
            }
        )
    nodes.append(
        {
            "name": "out",
            "depends_on": [f"n{NODES - 1}"],
            "write": {"connection": "fs", "path": "out.parquet", "format": "parquet"},
        }
    )
    project = {
        "connections": {"fs": {"type": "local", "base_path": str(root)}},
        "pipelines": [{"pipeline": "p", "nodes": nodes}],
    }
    (root / "p.yaml").write_text(yaml.safe_dump(project))
    defs = odibi_dagster.load_definitions(root / "p.yaml")
    quiet = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}
    assert (
        defs.resolve_job_def("p")
        .execute_in_process(instance=dg.DagsterInstance.ephemeral(), run_config=quiet)
        .success
    )


def hand_written(root: Path) -> None:
    import dagster as dg
    import duckdb
    import pandas as pd

    assets = []

    @dg.asset(name="n0")
    def first():
        return pd.read_parquet(root / "in.parquet")

    assets.append(first)
    for i in range(1, NODES):

        def make(i: int):
            @dg.asset(name=f"n{i}", ins={"up": dg.AssetIn(f"n{i - 1}")})
            def step(up):
                con = duckdb.connect()
                con.register("up", up)
                return con.execute("SELECT id, amount * 1.01 AS amount, g FROM up").df()

            return step

        assets.append(make(i))

    @dg.asset(name="out", ins={"up": dg.AssetIn(f"n{NODES - 1}")})
    def out(up):
        up.to_parquet(root / "hand_out.parquet", index=False)

    assets.append(out)
    defs = dg.Definitions(
        assets=assets,
        resources={"io_manager": dg.FilesystemIOManager(base_dir=str(root / "store"))},
    )
    job = dg.define_asset_job("chain", executor_def=dg.in_process_executor)
    defs = dg.Definitions.merge(defs, dg.Definitions(jobs=[job]))
    quiet = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}
    assert (
        defs.resolve_job_def("chain")
        .execute_in_process(instance=dg.DagsterInstance.ephemeral(), run_config=quiet)
        .success
    )


def main() -> None:
    if len(sys.argv) == 3:
        {"odibi": odibi, "hand": hand_written}[sys.argv[1]](Path(sys.argv[2]))
        return
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_data(root)
        results = {}
        for variant in ("hand", "odibi"):
            out = subprocess.run(
                [
                    sys.executable,
                    "-c",
                    f"import runpy,resource,sys; sys.argv=['m','{variant}','{root}']; runpy.run_path('{__file__}', run_name='__main__'); print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)",
                ],
                check=True,
                capture_output=True,
                text=True,
            )
            results[variant] = int(out.stdout.strip().splitlines()[-1]) / 1024
    print(f"{NODES}-node chain over {ROWS:,} rows (3 columns), peak RSS of the whole process")
    print(f"  hand-written assets (FilesystemIOManager): {results['hand']:7.0f} MiB")
    print(
        f"  odibi (PandasIOManager, in_process)      : {results['odibi']:7.0f} MiB   ({results['odibi'] / results['hand']:.2f}x)"
    )


if __name__ == "__main__":
    main()
