"""Time to load a generated 1,000-node project, beside 1,000 hand-written Dagster assets.

Run: `.venv/bin/python benchmarks/load_time.py`. Compilation does no I/O, so this is
the cost a code location pays at every (re)load, and every step process of the
multiprocess executor at its start.

Both sides are timed alternately, 7 times each, and each figure is the median, so a busy
moment of the machine falls on both. Two comparisons:

- in one warm process: ``load_definitions`` + resolving the asset graph and every job,
  beside the same chain written as ``@asset``s + resolving (Dagster's import and ours
  already paid);
- in a fresh process each time: ``import`` + load + resolve, which is what a code
  location or a step process pays.

``load_definitions`` pauses CPython's cyclic garbage collector while it builds (see
``compile._no_cyclic_gc``); the hand-written side is also shown with the collector
paused the same way, so the share of that one trick is visible.
"""

from __future__ import annotations

import gc
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import dagster as dg

sys.path.insert(0, str(Path(__file__).parent))
from _projects import chain_project

import odibi_dagster
from odibi_dagster.compile import build_definitions
from odibi_dagster.config.loader import load_project

PIPELINES, NODES = 10, 100
REPEAT = 7


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


def without_gc(fn: Callable[[], object]) -> Callable[[], object]:
    def run() -> object:
        gc.disable()
        try:
            return fn()
        finally:
            gc.enable()

    return run


def medians(fns: dict[str, Callable[[], object]]) -> dict[str, float]:
    """The median time of each function, the functions taking turns."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(REPEAT):
        for name, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    return {name: statistics.median(ts) for name, ts in times.items()}


FRESH = {
    "odibi": "import odibi_dagster as o; d = o.load_definitions({path!r}); "
    "d.resolve_asset_graph(); d.resolve_all_job_defs()",
    "hand": "import sys; sys.path.insert(0, {here!r}); import load_time as l; "
    "l.resolve(l.hand_written({p}, {n}))",
}


def fresh_process(code: str) -> Callable[[], object]:
    return lambda: subprocess.run([sys.executable, "-c", code], check=True)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = chain_project(Path(tmp), NODES, pipelines=PIPELINES)
        project = load_project(path)
        warm = medians(
            {
                "parse": lambda: load_project(path),
                "compile": lambda: build_definitions(project),
                "odibi": lambda: resolve(odibi_dagster.load_definitions(path)),
                "hand": lambda: resolve(hand_written(PIPELINES, NODES)),
                "hand_nogc": without_gc(lambda: resolve(hand_written(PIPELINES, NODES))),
            }
        )
        here = str(Path(__file__).parent)
        fresh = medians(
            {
                name: fresh_process(code.format(path=str(path), here=here, p=PIPELINES, n=NODES))
                for name, code in FRESH.items()
            }
        )
    n = PIPELINES * NODES
    print(f"{n} nodes in {PIPELINES} pipelines, median of {REPEAT}, taking turns")
    print(f"  parse + validate YAML                 : {warm['parse']:6.2f} s")
    print(f"  compile to Definitions (gc on)        : {warm['compile']:6.2f} s")
    print(f"  load_definitions + resolve            : {warm['odibi']:6.2f} s")
    print(
        f"  hand-written assets + resolve         : {warm['hand']:6.2f} s   "
        f"(odibi = {warm['odibi'] / warm['hand']:.2f}x)"
    )
    print(
        f"  hand-written, gc paused as odibi does : {warm['hand_nogc']:6.2f} s   "
        f"(odibi = {warm['odibi'] / warm['hand_nogc']:.2f}x)"
    )
    print(
        f"  fresh process, import + load + resolve: odibi {fresh['odibi']:.2f} s, hand-written "
        f"{fresh['hand']:.2f} s   (odibi = {fresh['odibi'] / fresh['hand']:.2f}x)"
    )


if __name__ == "__main__":
    main()
