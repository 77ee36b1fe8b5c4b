"""What column lineage at load costs: a generated 1,000-node project (10 pipelines x 100
SQL nodes) loaded with ``column_lineage: load`` beside ``column_lineage: run``.

Run: `.venv/bin/python benchmarks/column_lineage_load.py`. Both are built from the same
parsed project in one warm process (``build_definitions`` + resolving the asset graph and
every job), alternately, 7 times each; each figure is the median. The first node of each
chain reads a CSV (columns unknown at load), so the second goes through sqlglot's
optimizer and the other 98 are single-table SELECTs over known columns.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).parent))
from _projects import chain_project

from odibi_dagster.compile import build_definitions
from odibi_dagster.config.loader import load_project

PIPELINES, NODES = 10, 100
REPEAT = 7


def project_with(root: Path, mode: str) -> Path:
    path = chain_project(root, NODES, PIPELINES)
    raw = yaml.safe_load(path.read_text())
    raw["column_lineage"] = mode
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        projects = {m: load_project(project_with(Path(tmp) / m, m)) for m in ("load", "run")}
        times: dict[str, list[float]] = {m: [] for m in projects}
        for _ in range(REPEAT):
            for mode, project in projects.items():
                t0 = time.perf_counter()
                defs = build_definitions(project)
                defs.resolve_asset_graph()
                defs.resolve_all_job_defs()
                times[mode].append(time.perf_counter() - t0)
        load, run = (statistics.median(times[m]) for m in ("load", "run"))
        print(f"{PIPELINES * NODES} nodes, median of {REPEAT}:")
        print(f"  column_lineage: load  {load:.2f} s")
        print(f"  column_lineage: run   {run:.2f} s")
        print(
            f"  ratio                 {load / run:.2f}x ({(load - run) * 1000 / (PIPELINES * NODES):.2f} ms per node)"
        )


if __name__ == "__main__":
    main()
