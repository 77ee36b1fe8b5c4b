"""The run story is kept by a Dagster resource, and lists every node of a run, also when
the multiprocess executor runs several nodes at once in separate processes."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import pytest
import yaml

BRANCHES = 4


def fan_out_project(root: Path) -> Path:
    """One source and BRANCHES nodes reading it, which the multiprocess executor runs at
    the same time, each writing its story from its own process."""
    (root / "data").mkdir(parents=True)
    (root / "data" / "in.csv").write_text(
        "id,amount\n" + "".join(f"{i},{i * 10}\n" for i in range(6))
    )
    nodes: list[dict] = [
        {"name": "src", "read": {"connection": "fs", "path": "in.csv", "format": "csv"}}
    ]
    for b in range(BRANCHES):
        nodes.append(
            {
                "name": f"branch{b}",
                "depends_on": ["src"],
                "transform": {
                    "steps": [f"SELECT id, amount + {b} AS amount FROM src WHERE id >= {b}"]
                },
            }
        )
    project = {
        "project": "fan",
        "executor": "multiprocess",
        "connections": {"fs": {"type": "local", "base_path": "./data"}},
        "story": {"connection": "fs", "path": "stories"},
        "pipelines": [{"pipeline": "fan", "nodes": nodes}],
    }
    path = root / "project.yaml"
    path.write_text(yaml.safe_dump(project, sort_keys=False))
    return path


@pytest.mark.slow
def test_a_multiprocess_run_with_parallel_nodes_has_every_node_in_its_story(tmp_path: Path):
    project = fan_out_project(tmp_path / "fan")
    recon = dg.build_reconstructable_job(
        "odibi_dagster.cli", "pipeline_job", reconstructable_args=(str(project), "fan")
    )
    with dg.instance_for_test() as instance:
        result = dg.execute_job(recon, instance=instance)
        assert result.success
        run_id = result.run_id
    story = json.loads(
        (tmp_path / "fan" / "data" / "stories" / "fan" / run_id / "story.json").read_text()
    )
    assert story["status"] == "success"
    by_node = {n["node"]: n for n in story["nodes"]}
    assert set(by_node) == {f"branch{b}" for b in range(BRANCHES)}
    for b in range(BRANCHES):
        node = by_node[f"branch{b}"]
        assert node["status"] == "success"
        assert node["rows"] == 6 - b
        assert [row["amount"] for row in node["sample"]] == [i * 10 + b for i in range(b, 6)]
    html = (tmp_path / "fan" / "data" / "stories" / "fan" / run_id / "story.html").read_text()
    assert all(f"branch{b}" in html for b in range(BRANCHES))
