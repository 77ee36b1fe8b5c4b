"""A 20-node pandas chain, odibi beside the same chain hand-written, on both executors.

Run: `.venv/bin/python benchmarks/executors.py` (a few minutes on 2 cores).
All runs happen in this one script, on one Dagster instance, so the ratios compare like
with like: odibi in_process vs hand-written in_process (each after one untimed run, so
neither pays the first import of pandas), and odibi multiprocess vs hand-written
multiprocess (where every step is a new process that imports everything and rebuilds
the job).
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import dagster as dg

sys.path.insert(0, str(Path(__file__).parent))
from _projects import chain_project

HERE = Path(__file__).parent
N = 20
QUIET = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}


def timed(recon: dg.ReconstructableJob, instance: dg.DagsterInstance, label: str) -> float:
    t = time.perf_counter()
    result = dg.execute_job(recon, instance=instance, run_config=QUIET)
    elapsed = time.perf_counter() - t
    assert result.success, label
    return elapsed


def odibi_job(project: Path) -> dg.ReconstructableJob:
    return dg.build_reconstructable_job(
        "odibi_dagster.cli", "pipeline_job", reconstructable_args=(str(project), "p0")
    )


def hand_job(data: Path, executor: str) -> dg.ReconstructableJob:
    return dg.build_reconstructable_job(
        "_hand_chain", "chain_job", reconstructable_args=(str(data), N, executor)
    )


def main() -> None:
    # step processes import _hand_chain from here
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(HERE), os.environ.get("PYTHONPATH", "")) if p
    )
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        home = tmp_path / "home"
        home.mkdir()
        instance = dg.DagsterInstance.local_temp(
            str(home), overrides={"telemetry": {"enabled": False}}
        )
        inproc = chain_project(tmp_path / "inproc", N, executor="in_process")
        multi = chain_project(tmp_path / "multi", N, executor="multiprocess")
        data = tmp_path / "inproc" / "data"

        # one untimed run each first: pandas, DuckDB and the rest are imported once
        timed(odibi_job(inproc), instance, "warm-up")
        timed(hand_job(data, "in_process"), instance, "warm-up")
        t_in = timed(odibi_job(inproc), instance, "odibi in_process")
        t_hand_in = timed(hand_job(data, "in_process"), instance, "hand in_process")
        # the multiprocess runs vary most (about 20 new processes each): taking turns,
        # median of 3
        multi_runs: list[float] = []
        hand_runs: list[float] = []
        for _ in range(3):
            multi_runs.append(timed(odibi_job(multi), instance, "odibi multiprocess"))
            hand_runs.append(timed(hand_job(data, "multiprocess"), instance, "hand multiprocess"))
        t_multi, t_hand_multi = statistics.median(multi_runs), statistics.median(hand_runs)
        instance.dispose()

    print(f"{N}-node pandas chain, 1,000 rows")
    print(f"  odibi, in_process          : {t_in:6.2f} s")
    print(f"  hand-written, in_process   : {t_hand_in:6.2f} s   (odibi = {t_in / t_hand_in:.2f}x)")
    print(f"  odibi, multiprocess        : {t_multi:6.2f} s   (median of 3)")
    print(
        f"  hand-written, multiprocess : {t_hand_multi:6.2f} s   "
        f"(odibi = {t_multi / t_hand_multi:.2f}x)"
    )


if __name__ == "__main__":
    main()
