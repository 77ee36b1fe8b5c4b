"""Time to load a generated 1,000-node project, beside 1,000 hand-written Dagster assets.

Run: `.venv/bin/python benchmarks/load_time.py`. Compilation does no I/O, so this is
the cost a code location pays at every (re)load.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import dagster as dg

sys.path.insert(0, str(Path(__file__).parent))
from _projects import chain_project

import odibi_dagster
from odibi_dagster.compile import build_definitions
from odibi_dagster.config.loader import load_project

PIPELINES, NODES = 10, 100


def resolve(defs: dg.Definitions) -> None:
    defs.resolve_asset_graph()
    defs.resolve_all_job_defs()


def hand_written(n_pipelines: int, n_nodes: int) -> dg.Definitions:
    assets = []
    for p in range(n_pipelines):
        for i in range(n_nodes):
            ins = {"up": dg.AssetIn(key=[f"p{p}", f"n{i - 1}"])} if i else {}

            def fn(**kwargs):  # pragma: no cover - never executed
                return None

            assets.append(dg.asset(key=[f"p{p}", f"n{i}"], ins=ins, group_name=f"p{p}")(fn))
    jobs = [
        dg.define_asset_job(f"p{p}", selection=dg.AssetSelection.groups(f"p{p}"))
        for p in range(n_pipelines)
    ]
    return dg.Definitions(assets=assets, jobs=jobs)


def best_of(fn, repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = chain_project(Path(tmp), NODES, pipelines=PIPELINES)
        n = PIPELINES * NODES
        t_load = best_of(lambda: load_project(path))
        project = load_project(path)
        t_compile = best_of(lambda: build_definitions(project))
        t_resolve = best_of(lambda: resolve(build_definitions(project)))
        t_total = best_of(lambda: resolve(odibi_dagster.load_definitions(path)))
        t_hand = best_of(lambda: resolve(hand_written(PIPELINES, NODES)))
    print(f"{n} nodes in {PIPELINES} pipelines")
    print(f"  parse + validate YAML          : {t_load:6.2f} s")
    print(f"  compile to Definitions         : {t_compile:6.2f} s")
    print(f"  compile + resolve (graph, jobs): {t_resolve:6.2f} s")
    print(f"  load_definitions + resolve     : {t_total:6.2f} s")
    print(f"  hand-written assets + resolve  : {t_hand:6.2f} s   (odibi = {t_total / t_hand:.2f}x)")


if __name__ == "__main__":
    main()
