"""The run story is kept by a Dagster resource, and lists every node of a run, also when
the multiprocess executor runs several nodes at once in separate processes: the sources
it read, the nodes that failed (also before they computed, when an input could not be
loaded), and the nodes that did not run because a node they depend on failed."""

from __future__ import annotations

import html
import json
from pathlib import Path

import dagster as dg
import pytest
import yaml

import odibi_dagster
from odibi_dagster_tests.support.cli import run_cli
from odibi_dagster_tests.support.runs import run_job

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
    nodes = {n["node"]: n for n in story["nodes"]}
    assert set(nodes) == {"src", *(f"branch{b}" for b in range(BRANCHES))}
    # every branch read the source in its own process; each says what it read
    assert nodes["src"]["status"] == "success" and nodes["src"]["rows"] == 6
    for b in range(BRANCHES):
        node = nodes[f"branch{b}"]
        assert node["status"] == "success"
        assert node["rows"] == 6 - b
        assert [row["amount"] for row in node["sample"]] == [i * 10 + b for i in range(b, 6)]
    page = (tmp_path / "fan" / "data" / "stories" / "fan" / run_id / "story.html").read_text()
    assert all(f"branch{b}" in page for b in range(BRANCHES))


# --------------------------------------------------------------------------- stories that tell
# what went wrong: a source that cannot be read, a node whose input failed to load, the
# nodes that never ran because of it


def story_of(root: Path, run_id: str, pipeline: str = "p") -> tuple[dict, str]:
    """The run's story.json (parsed) and story.html (text)."""
    run_dir = root / "stories" / pipeline / run_id
    return (
        json.loads((run_dir / "story.json").read_text()),
        (run_dir / "story.html").read_text(),
    )


def by_node(story: dict) -> dict[str, dict]:
    return {n["node"]: n for n in story["nodes"]}


BROKEN_SOURCES = {
    # name: (file, its content or None for no file, format)
    "empty": ("in.csv", "", "csv"),
    "missing": ("absent.csv", None, "csv"),
    "bad json": ("in.json", '{"x": 1,,\n', "json"),
}


@pytest.mark.parametrize("broken", list(BROKEN_SOURCES))
def test_a_source_that_cannot_be_read_fails_the_story_of_the_run(tmp_path: Path, broken: str):
    name, content, fmt = BROKEN_SOURCES[broken]
    if content is not None:
        (tmp_path / name).write_text(content)
    (tmp_path / "good.csv").write_text("x\n1\n2\n")
    (tmp_path / "p.yaml").write_text(
        f"""
connections: {{fs: {{type: local, base_path: .}}}}
story: {{connection: fs, path: stories}}
pipelines:
  - pipeline: p
    nodes:
      - name: src
        read: {{connection: fs, path: {name}, format: {fmt}}}
      - name: uses_src
        depends_on: [src]
        transform: {{steps: ["SELECT * FROM src"]}}
      - name: after
        depends_on: [uses_src]
        transform: {{steps: ["SELECT * FROM uses_src"]}}
      - name: good_src
        read: {{connection: fs, path: good.csv, format: csv}}
      - name: uses_good
        depends_on: [good_src]
        transform: {{steps: ["SELECT * FROM good_src"]}}
"""
    )
    result = run_job(odibi_dagster.load_definitions(tmp_path / "p.yaml"), "p")
    assert not result.success
    # what Dagster reports for the consuming node's step
    (failure,) = result.get_step_failure_events()
    assert failure.step_key == "p__uses_src"
    load_error = failure.event_specific_data.user_failure_data.description.splitlines()[0]
    assert name in load_error
    story, page = story_of(tmp_path, result.run_id)
    nodes = by_node(story)
    assert story["status"] == "failed"
    # the consumer never computed: it is listed as failed, with the load error
    assert nodes["uses_src"]["status"] == "failed"
    assert name in nodes["uses_src"]["error"] and load_error in nodes["uses_src"]["error"]
    assert "'src'" in nodes["uses_src"]["error"]  # which input
    # the source itself: failed, with its path and the error
    assert nodes["src"]["status"] == "failed" and name in nodes["src"]["error"]
    assert nodes["src"]["read"]["uri"] == str(tmp_path / name)
    # what depends on the failed node did not run, and says why
    assert nodes["after"]["status"] == "not run" and "uses_src" in nodes["after"]["error"]
    # only what did succeed says so
    assert {n for n, e in nodes.items() if e["status"] == "success"} == {"good_src", "uses_good"}
    assert nodes["good_src"]["rows"] == 2 and nodes["uses_good"]["rows"] == 2
    assert "uses_src" in page and html.escape(load_error) in page
    assert "not run" in page and "<span class='failed'>failed</span></h1>" in page


def test_a_run_whose_every_node_fails_to_load_still_writes_its_story(tmp_path: Path):
    (tmp_path / "empty.csv").write_text("")
    (tmp_path / "p.yaml").write_text(
        """
project: broken
connections: {fs: {type: local, base_path: .}}
story: {connection: fs, path: stories}
pipelines:
  - pipeline: p
    nodes:
      - name: orders
        read: {connection: fs, path: orders.csv, format: csv}
      - name: customers
        read: {connection: fs, path: empty.csv, format: csv}
      - name: clean_orders
        depends_on: [orders]
        transform: {steps: ["SELECT * FROM orders"]}
      - name: clean_customers
        depends_on: [customers]
        transform: {steps: ["SELECT * FROM customers"]}
      - name: joined
        depends_on: [clean_orders, clean_customers]
        transform: {steps: ["SELECT * FROM clean_orders JOIN clean_customers USING (id)"]}
"""
    )
    # as a user runs it: the command names the story, and the story tells what failed
    out = run_cli("odibi-dagster", "run", tmp_path / "p.yaml")
    assert out.returncode == 1
    (run_dir,) = (tmp_path / "stories" / "p").iterdir()
    assert f"story {run_dir / 'story.html'}" in out.stdout
    story, page = story_of(tmp_path, run_dir.name)
    nodes = by_node(story)
    assert story["status"] == "failed"
    assert {n: e["status"] for n, e in nodes.items()} == {
        "orders": "failed",
        "customers": "failed",
        "clean_orders": "failed",
        "clean_customers": "failed",
        "joined": "not run",
    }
    assert "orders.csv" in nodes["clean_orders"]["error"]
    assert "empty.csv" in nodes["clean_customers"]["error"]
    for node in nodes:
        assert f"id='{node}'" in page
    assert "orders.csv" in page and "empty.csv" in page


def test_read_only_sources_appear_in_the_story_with_what_was_read(tmp_path: Path):
    landing = tmp_path / "landing"
    landing.mkdir()
    (landing / "a.csv").write_text("id,v\n1,10\n2,20\n")
    (landing / "b.csv").write_text("id,v\n3,30\n")
    (tmp_path / "p.yaml").write_text(
        """
connections: {fs: {type: local, base_path: .}}
story: {connection: fs, path: stories, max_sample_rows: 1}
pipelines:
  - pipeline: p
    sensors:
      - new_files: {connection: fs, path: landing, pattern: "*.csv"}
    nodes:
      - name: arrivals
        description: Orders as they land
        read: {connection: fs, path: landing, format: csv}
      - name: total
        depends_on: [arrivals]
        transform: {steps: ["SELECT SUM(v) AS v FROM arrivals"]}
"""
    )
    defs = odibi_dagster.load_definitions(tmp_path / "p.yaml")
    # a run started any other way reads the whole folder
    result = run_job(defs, "p")
    assert result.success
    story, page = story_of(tmp_path, result.run_id)
    src = by_node(story)["arrivals"]
    assert src["status"] == "success" and src["rows"] == 3
    assert src["description"] == "Orders as they land"
    assert src["read"] == {"uri": str(landing), "format": "csv"}
    assert src["files"] == [] and src["sample"] == [{"id": 1, "v": 10}]
    assert src["columns"] == [["id", "int64"], ["v", "int64"]]
    assert story["nodes"][0]["node"] == "arrivals"  # read before its consumer ran
    assert f"Read csv from <code>{landing}</code>" in page

    # a run a new-files sensor started reads just its files, and the source says which
    files = {"connection": "fs", "path": "landing", "files": ["landing/b.csv"]}
    result = run_job(defs, "p", run_config={"resources": {"odibi_new_files": {"config": files}}})
    assert result.success
    story, page = story_of(tmp_path, result.run_id)
    src = by_node(story)["arrivals"]
    assert src["status"] == "success" and src["rows"] == 1
    assert src["files"] == ["landing/b.csv"]
    assert "landing/b.csv" in page


def test_nodes_after_a_failed_node_are_listed_as_not_run(tmp_path: Path):
    (tmp_path / "in.csv").write_text("x\n1\n")
    (tmp_path / "taken.csv").write_text("x\n9\n")
    text = """
connections: {fs: {type: local, base_path: .}}
story: {connection: fs, path: stories}
pipelines:
  - pipeline: p
    nodes:
      - name: src
        read: {connection: fs, path: in.csv, format: csv}
      - name: broken
        depends_on: [src]
        transform: {steps: ["SELECT nope FROM src"]}
      - name: next
        depends_on: [broken]
        transform: {steps: ["SELECT * FROM broken"]}
      - name: last
        depends_on: [next, src]
        transform: {steps: ["SELECT * FROM next"]}
      - name: no_write
        depends_on: [src]
        write: {connection: fs, path: taken.csv, format: csv, mode: error}
      - name: after_write
        depends_on: [no_write]
        transform: {steps: ["SELECT * FROM no_write"]}
      - name: fine
        depends_on: [src]
        transform: {steps: ["SELECT x + 1 AS x FROM src"]}
"""
    (tmp_path / "p.yaml").write_text(text)
    defs = odibi_dagster.load_definitions(tmp_path / "p.yaml")
    result = run_job(defs, "p")
    assert not result.success
    story, page = story_of(tmp_path, result.run_id)
    nodes = by_node(story)
    assert story["status"] == "failed"
    assert {n: e["status"] for n, e in nodes.items()} == {
        "src": "success",
        "broken": "failed",
        "next": "not run",
        "last": "not run",
        "no_write": "failed",
        "after_write": "not run",
        "fine": "success",
    }
    assert "node 'broken'" in nodes["next"]["error"] and "node 'broken'" in nodes["last"]["error"]
    assert "node 'no_write'" in nodes["after_write"]["error"]
    assert page.count("<span class='not-run'>not run</span>") == 3

    # a run of some nodes lists those, not the nodes it was not asked to run
    result = run_job(defs, "p", asset_selection=[dg.AssetKey(["p", "broken"])])
    assert not result.success
    story, _ = story_of(tmp_path, result.run_id)
    assert {n: e["status"] for n, e in by_node(story).items()} == {
        "src": "success",
        "broken": "failed",
    }
