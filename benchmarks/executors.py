"""In-process vs multiprocess executor on a 20-node pandas chain, and odibi vs hand-written.

Run: `.venv/bin/python benchmarks/executors.py` (about a minute on 2 cores).
All three runs happen in this one script, so the ratios compare like with like.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import dagster as dg
import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))
from _projects import chain_project

N = 20


def hand_written_chain(data: Path) -> dg.Definitions:
    """The same chain written directly in Dagster with pandas (fs IO manager in between)."""
    assets = []

    @dg.asset(name="n0")
    def first() -> pd.DataFrame:
        return pd.read_csv(data / "in.csv")

    assets.append(first)
    for i in range(1, N):

        def make(i: int):
            @dg.asset(name=f"n{i}", ins={"up": dg.AssetIn(f"n{i - 1}")})
            def step(up: pd.DataFrame) -> pd.DataFrame:
                out = up.assign(amount=up["amount"] + 1)
                if i % 10 == 0 or i == N - 1:
                    (data / "hand").mkdir(exist_ok=True)
                    out.to_parquet(data / "hand" / f"n{i}.parquet", index=False)
                return out

            return step

        assets.append(make(i))
    return dg.Definitions(
        assets=assets, jobs=[dg.define_asset_job("chain", executor_def=dg.in_process_executor)]
    )


def timed_job(defs_file: str, job: str, instance: dg.DagsterInstance, args: tuple) -> float:
    recon = dg.build_reconstructable_job(
        "odibi_dagster.cli", "pipeline_job", reconstructable_args=args
    )
    quiet = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}
    t = time.perf_counter()
    result = dg.execute_job(recon, instance=instance, run_config=quiet)
    elapsed = time.perf_counter() - t
    assert result.success, defs_file
    return elapsed


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        home = tmp_path / "home"
        home.mkdir()
        instance = dg.DagsterInstance.local_temp(
            str(home), overrides={"telemetry": {"enabled": False}}
        )
        inproc = chain_project(tmp_path / "inproc", N, executor="in_process")
        multi = chain_project(tmp_path / "multi", N, executor="multiprocess")

        t_in = timed_job(str(inproc), "p0", instance, (str(inproc), "p0"))
        t_multi = timed_job(str(multi), "p0", instance, (str(multi), "p0"))

        hand = hand_written_chain(tmp_path / "inproc" / "data")
        t = time.perf_counter()
        quiet = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}
        ok = (
            hand.resolve_job_def("chain")
            .execute_in_process(instance=instance, run_config=quiet)
            .success
        )
        t_hand = time.perf_counter() - t
        assert ok

        print(f"{N}-node pandas chain, 1,000 rows")
        print(f"  odibi, in_process executor   : {t_in:6.2f} s")
        print(
            f"  odibi, multiprocess executor : {t_multi:6.2f} s   ({t_multi / t_in:.1f}x in_process)"
        )
        print(
            f"  hand-written Dagster assets  : {t_hand:6.2f} s   (odibi in_process = {t_in / t_hand:.2f}x)"
        )
        instance.dispose()


if __name__ == "__main__":
    main()
