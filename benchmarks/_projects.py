"""Generated Odibi projects for the benchmarks."""

from __future__ import annotations

from pathlib import Path

import yaml


def chain_project(
    root: Path, n_nodes: int, pipelines: int = 1, executor: str = "in_process"
) -> Path:
    """``pipelines`` pipelines, each a chain of ``n_nodes`` SQL nodes over a small CSV."""
    (root / "data").mkdir(parents=True, exist_ok=True)
    (root / "data" / "in.csv").write_text(
        "id,amount\n" + "".join(f"{i},{i % 97}\n" for i in range(1000))
    )
    pipes = []
    for p in range(pipelines):
        nodes: list[dict] = [
            {"name": "n0", "read": {"connection": "fs", "path": "in.csv", "format": "csv"}}
        ]
        for i in range(1, n_nodes):
            node: dict = {
                "name": f"n{i}",
                "depends_on": [f"n{i - 1}"],
                "transform": {"steps": [f"SELECT id, amount + 1 AS amount FROM n{i - 1}"]},
            }
            if i % 10 == 0 or i == n_nodes - 1:
                node["write"] = {
                    "connection": "fs",
                    "path": f"out/p{p}/n{i}.parquet",
                    "format": "parquet",
                }
            nodes.append(node)
        pipes.append({"pipeline": f"p{p}", "nodes": nodes})
    project = {
        "project": "bench",
        "executor": executor,
        "connections": {"fs": {"type": "local", "base_path": "./data"}},
        "pipelines": pipes,
    }
    path = root / "project.yaml"
    path.write_text(yaml.safe_dump(project, sort_keys=False))
    return path
