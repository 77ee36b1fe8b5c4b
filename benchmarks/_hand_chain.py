"""The benchmark chain written by hand as Dagster assets (pandas, Dagster's own IO manager).

A module of its own so that Dagster's step processes can rebuild the job from it
(``executors.py`` puts this directory on ``PYTHONPATH``).
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pandas as pd


def chain_job(data: str, n: int, executor: str) -> dg.JobDefinition:
    """``n`` assets: read ``in.csv``, add 1 to ``amount`` in each, Parquet every 10th."""
    root = Path(data)
    assets = []

    @dg.asset(name="n0")
    def first() -> pd.DataFrame:
        return pd.read_csv(root / "in.csv")

    assets.append(first)
    for i in range(1, n):

        def make(i: int) -> dg.AssetsDefinition:
            @dg.asset(name=f"n{i}", ins={"up": dg.AssetIn(f"n{i - 1}")})
            def step(up: pd.DataFrame) -> pd.DataFrame:
                out = up.assign(amount=up["amount"] + 1)
                if i % 10 == 0 or i == n - 1:
                    (root / "hand").mkdir(exist_ok=True)
                    out.to_parquet(root / "hand" / f"n{i}.parquet", index=False)
                return out

            return step

        assets.append(make(i))
    executor_def = dg.in_process_executor if executor == "in_process" else dg.multiprocess_executor
    defs = dg.Definitions(
        assets=assets, jobs=[dg.define_asset_job("chain", executor_def=executor_def)]
    )
    return defs.resolve_job_def("chain")
