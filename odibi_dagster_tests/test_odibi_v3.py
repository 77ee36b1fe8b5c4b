"""The Odibi v3 project shell: system:, notes, imports, vars, dates, environments, local
default base_path, story retention and the v3 node keys (tags, columns, retry, on_error)."""

from __future__ import annotations

import datetime as dt
import logging
import os
import textwrap
import time
from pathlib import Path

import dagster as dg
import pytest

from odibi_dagster import OdibiConfigError, load_definitions, load_project
from odibi_dagster.cli import main
from odibi_dagster.config.v3 import date_value
from odibi_dagster.config.yaml_source import display_name
from odibi_dagster.resources.local import LocalStorage
from odibi_dagster.story.retention import prune_stories
from odibi_dagster.story.writer import StoryTarget
from odibi_dagster_tests.support.lake import RAW, Lake

HEAD = """\
project: v3demo
engine: pandas
connections:
  data:
    type: local
    base_path: ./data
story:
  connection: data
  path: stories
system:
  connection: data
  path: _odibi_system
"""

NODE = """\
pipelines:
  - pipeline: p
    nodes:
      - name: raw
        read: {connection: data, format: csv, path: in.csv}
"""


def write(dir: Path, name: str, text: str) -> Path:
    path = dir / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def test_system_block_is_accepted_and_reported_once_by_validate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    project = write(tmp_path, "project.yaml", HEAD + NODE)
    assert main(["validate", str(project)]) == 0
    out = capsys.readouterr().out.splitlines()
    notes = [line for line in out if "accepted, not applied" in line]
    assert notes == [
        f"note: {display_name(project)}:10: accepted, not applied: system: the System Catalog is not written; odibi_dagster "
        "keeps run state (runs, materializations, asset checks) in Dagster's instance"
    ]
    assert out[-1].startswith("ok: ")


def test_keys_accepted_not_applied_become_notes_with_file_and_line(tmp_path: Path) -> None:
    text = HEAD + textwrap.dedent("""\
        performance: {use_arrow: true}
        pipelines:
          - pipeline: p
            nodes:
              - name: raw
                privacy: {method: hash}
                on_error: ignore
                read: {connection: data, format: csv, path: in.csv}
        """)
    project = load_project(write(tmp_path, "project.yaml", text))
    got = [(n.line, n.key) for n in project.notes]
    assert got == [
        (10, "system"),
        (13, "performance"),
        (18, "pipelines[0].nodes[0].privacy"),
        (19, "pipelines[0].nodes[0].on_error"),
    ]
    assert all(n.file.endswith("project.yaml") for n in project.notes)


def test_notes_are_logged_once_when_definitions_load(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    project = write(tmp_path, "project.yaml", HEAD + NODE)
    with caplog.at_level(logging.INFO, logger="odibi_dagster.config"):
        load_definitions(project)
        load_definitions(project)
    lines = [r.getMessage() for r in caplog.records if "accepted, not applied" in r.getMessage()]
    assert len(lines) == 1 and ": system: " in lines[0]


def test_local_connection_without_base_path_is_data_of_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = HEAD.replace("    base_path: ./data\n", "") + NODE
    (tmp_path / "yaml").mkdir()
    project_file = write(tmp_path / "yaml", "project.yaml", text)
    monkeypatch.chdir(tmp_path)
    project = load_project(project_file)
    assert project.config.connections["data"].base_path == str(tmp_path / "data")


def test_date_placeholder_forms() -> None:
    now = dt.datetime(2024, 1, 15, 14, 30, 45)
    assert date_value("today", None, now) == "2024-01-15"
    assert date_value("yesterday", None, now) == "2024-01-14"
    assert date_value("now", None, now) == "2024-01-15 14:30:45"
    assert date_value("-7d", None, now) == "2024-01-08"
    assert date_value("+30d", None, now) == "2024-02-14"
    assert date_value("-1w", None, now) == "2024-01-08"
    assert date_value("-1m", None, now) == "2023-12-15"
    assert date_value("-1y", None, now) == "2023-01-15"
    assert date_value("start_of_month", None, now) == "2024-01-01"
    assert date_value("end_of_month", None, now) == "2024-01-31"
    assert date_value("start_of_year", None, now) == "2024-01-01"
    assert date_value("today", "%Y%m%d", now) == "20240115"
    assert date_value("now", "%Y-%m-%dT%H:%M:%S", now) == "2024-01-15T14:30:45"
    assert date_value("-1m", None, dt.datetime(2024, 3, 31)) == "2024-02-29"
    assert date_value("fortnight", None, now) is None


def test_vars_dates_and_env_prefix_are_filled_in_at_load(tmp_path: Path) -> None:
    text = HEAD + textwrap.dedent("""\
        vars:
          folder: landing
          keep: 90
        pipelines:
          - pipeline: p
            description: "from ${date:-7d} to ${date:today}"
            nodes:
              - name: raw
                read:
                  connection: data
                  format: csv
                  path: "${vars.folder}/${date:today:%Y%m%d}/${env:ODIBI_V3_TEST_NAME}.csv"
                  options: {keep: "${vars.keep}"}
        """)
    project = load_project(
        write(tmp_path, "project.yaml", text), environ={"ODIBI_V3_TEST_NAME": "orders"}
    )
    pipe = project.config.pipelines[0]
    today = dt.date.today()
    week_ago = today - dt.timedelta(days=7)
    assert pipe.description == f"from {week_ago:%Y-%m-%d} to {today:%Y-%m-%d}"
    read = pipe.nodes[0].read
    assert read is not None
    assert read.path == f"landing/{today:%Y%m%d}/orders.csv"
    assert read.options == {"keep": 90}  # a whole-value ${vars.x} keeps its type


def test_date_minus_days_is_not_an_environment_default(tmp_path: Path) -> None:
    """${date:-7d} once read as the variable 'date' with the default '7d'."""
    text = HEAD + NODE.replace("in.csv", '"in_${date:-7d}.csv"')
    project = load_project(write(tmp_path, "project.yaml", text), environ={})
    read = project.config.pipelines[0].nodes[0].read
    assert read is not None
    assert read.path == f"in_{dt.date.today() - dt.timedelta(days=7):%Y-%m-%d}.csv"


def test_imports_are_relative_to_the_importing_file_and_append_pipelines(
    tmp_path: Path,
) -> None:
    write(tmp_path, "pipelines/bronze.yaml", "imports: [silver/silver.yaml]\n" + NODE)
    write(
        tmp_path,
        "pipelines/silver/silver.yaml",
        """\
        pipeline: s
        nodes:
          - name: clean
            read: {connection: data, format: csv, path: in.csv}
            bogus_key: 1
        """,
    )
    project_file = write(tmp_path, "main.yaml", HEAD + "imports:\n  - pipelines/bronze.yaml\n")
    with pytest.raises(OdibiConfigError) as err:
        load_project(project_file)
    (problem,) = err.value.problems
    assert problem.file.endswith("pipelines/silver/silver.yaml") and problem.line == 5
    assert "bogus_key" in problem.message

    (tmp_path / "pipelines/silver/silver.yaml").write_text(
        "pipeline: s\nnodes:\n  - name: clean\n    read: {connection: data, format: csv, path: b.csv}\n"
    )
    project = load_project(project_file)
    assert [p.pipeline for p in project.config.pipelines] == ["p", "s"]
    assert [f.name for f in project.files] == ["main.yaml", "bronze.yaml", "silver.yaml"]


def test_a_project_directory_reads_an_imported_pipeline_file_once(tmp_path: Path) -> None:
    write(tmp_path, "pipelines/p.yaml", NODE)
    write(tmp_path, "project.yaml", HEAD + "imports: [pipelines/p.yaml]\n")
    project = load_project(tmp_path)
    assert [p.pipeline for p in project.config.pipelines] == ["p"]


ENVS = """\
environments:
  prod:
    story:
      max_sample_rows: 3
    connections:
      data:
        base_path: ./prod_data
"""


def test_environment_selected_by_argument_or_odibi_env(tmp_path: Path) -> None:
    project_file = write(tmp_path, "project.yaml", HEAD + ENVS + NODE)
    plain = load_project(project_file, environ={})
    assert plain.config.connections["data"].base_path == str(tmp_path / "data")
    prod = load_project(project_file, env="prod")
    assert prod.config.connections["data"].base_path == str(tmp_path / "prod_data")
    assert prod.config.story is not None and prod.config.story.max_sample_rows == 3
    by_var = load_project(project_file, environ={"ODIBI_ENV": "prod"})
    assert by_var.env == "prod"
    assert by_var.config.connections["data"].base_path == str(tmp_path / "prod_data")


def test_environment_file_beside_the_project_and_unknown_environment(tmp_path: Path) -> None:
    project_file = write(tmp_path, "project.yaml", HEAD + ENVS + NODE)
    write(tmp_path, "env.qa.yaml", "story:\n  max_sample_rows: 7\n")
    qa = load_project(project_file, env="qa")
    assert qa.config.story is not None and qa.config.story.max_sample_rows == 7
    with pytest.raises(OdibiConfigError) as err:
        load_project(project_file, env="staging")
    assert "environment 'staging'" in str(err.value) and "(defined: prod)" in str(err.value)


def test_validate_takes_env(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    project_file = write(tmp_path, "project.yaml", HEAD + ENVS + NODE)
    assert main(["validate", "--env", "staging", str(project_file)]) == 1
    assert "environment 'staging'" in capsys.readouterr().err
    assert main(["validate", "--env", "prod", str(project_file)]) == 0


def test_node_tags_columns_and_retry_reach_the_asset(tmp_path: Path) -> None:
    text = HEAD + textwrap.dedent("""\
        retry: {max_attempts: 4}
        pipelines:
          - pipeline: p
            nodes:
              - name: raw
                tags: [daily, critical]
                retry: {max_attempts: 2, backoff: constant, backoff_seconds: 0.5}
                columns:
                  id: {description: the order id, pii: false, tags: [business_key]}
                  email: {description: who ordered, pii: true}
                read: {connection: data, format: csv, path: in.csv}
                write: {connection: data, format: parquet, path: raw.parquet}
              - name: other
                depends_on: [raw]
                write: {connection: data, format: parquet, path: out.parquet}
        """)
    defs = load_definitions(write(tmp_path, "project.yaml", text))
    raw = defs.resolve_assets_def(dg.AssetKey(["p", "raw"]))
    spec = next(iter(raw.specs))
    assert {"daily": "", "critical": ""}.items() <= dict(spec.tags).items()
    schema = spec.metadata["dagster/column_schema"]
    assert [(c.name, c.description, dict(c.tags)) for c in schema.columns] == [
        ("id", "the order id", {"business_key": ""}),
        ("email", "who ordered", {"pii": "true"}),
    ]
    assert raw.op.retry_policy == dg.RetryPolicy(max_retries=1, delay=0.5, backoff=None)
    other = defs.resolve_assets_def(dg.AssetKey(["p", "other"]))
    assert other.op.retry_policy is not None and other.op.retry_policy.max_retries == 3


def test_column_descriptions_stay_on_the_materialized_schema(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "in.csv").write_text("id,amount\n1,2.5\n2,3.5\n")
    text = HEAD + textwrap.dedent("""\
        pipelines:
          - pipeline: p
            nodes:
              - name: raw
                columns:
                  id: {description: the order id}
                read: {connection: data, format: csv, path: in.csv}
                write: {connection: data, format: parquet, path: out.parquet}
        """)
    defs = load_definitions(write(tmp_path, "project.yaml", text))
    result = defs.resolve_job_def("p").execute_in_process()
    assert result.success
    (mat,) = result.asset_materializations_for_node("p__raw")
    schema = mat.metadata["dagster/column_schema"].schema
    assert [(c.name, c.type, c.description) for c in schema.columns] == [
        ("id", "int64", "the order id"),
        ("amount", "float64", None),
    ]


def test_bad_tag_is_a_config_problem(tmp_path: Path) -> None:
    text = HEAD + NODE.replace("      - name: raw\n", "      - name: raw\n        tags: [a b]\n")
    with pytest.raises(OdibiConfigError) as err:
        load_project(write(tmp_path, "project.yaml", text))
    (problem,) = err.value.problems
    assert problem.line == 17 and "tag 'a b' cannot be a Dagster tag" in problem.message


def test_story_retention_days_prunes_old_runs_only(tmp_path: Path) -> None:
    target = StoryTarget(
        locate=LocalStorage(base_path=str(tmp_path)).location, path="stories", project="x"
    )
    runs = tmp_path / "stories" / "p"
    for run, age_days in [("old", 10), ("recent", 1), ("current", 30)]:
        write(runs / run, "story.json", "{}")
        t = time.time() - age_days * 86400
        os.utime(runs / run / "story.json", (t, t))
    (runs / "starting").mkdir()  # no story.json yet
    assert prune_stories(target, "p", "current", retention_days=7) == ["old"]
    assert sorted(p.name for p in runs.iterdir()) == ["current", "recent", "starting"]


def test_run_applies_the_environment_in_the_job_it_executes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "in.csv").write_text("id\n1\n2\n")
    text = HEAD + textwrap.dedent("""\
        vars:
          out: dev_out
        environments:
          prod:
            vars:
              out: prod_out
        pipelines:
          - pipeline: p
            nodes:
              - name: raw
                read: {connection: data, format: csv, path: in.csv}
                write: {connection: data, format: parquet, path: "${vars.out}.parquet"}
        """)
    project_file = write(tmp_path, "project.yaml", text)
    assert main(["run", str(project_file), "--env", "prod"]) == 0
    assert "prod_out.parquet" in capsys.readouterr().out
    assert (tmp_path / "data" / "prod_out.parquet").is_file()
    assert not (tmp_path / "data" / "dev_out.parquet").exists()


def test_a_pipeline_file_may_hold_odibi_v3_pipeline_keys(tmp_path: Path) -> None:
    write(tmp_path, "project.yaml", HEAD)
    write(
        tmp_path,
        "pipelines/p.yaml",
        """\
        pipeline: p
        owner: data-team
        freshness_sla: 6h
        nodes:
          - name: raw
            read: {connection: data, format: csv, path: in.csv}
        """,
    )
    project = load_project(tmp_path)
    assert [(Path(n.file).name, n.line, n.key) for n in project.notes] == [
        ("project.yaml", 10, "system"),
        ("p.yaml", 2, "pipelines[0].owner"),
        ("p.yaml", 3, "pipelines[0].freshness_sla"),
    ]


def test_story_retention_days_prunes_on_adls(lake: Lake) -> None:
    conn = lake.resource(RAW)
    target = StoryTarget(locate=conn.location, path="stories", project="x")
    for run in ("old", "current"):
        loc = conn.location(f"stories/p/{run}/story.json")
        loc.fs.pipe(loc.fs_path, b"{}")
    soon = dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=10)
    assert prune_stories(target, "p", "current", retention_days=30, now=soon) == []
    assert prune_stories(target, "p", "current", retention_days=7, now=soon) == ["old"]
    assert sorted(lake.blobs(RAW)) == ["stories/p/current/story.json"]


def test_the_json_schema_accepts_the_keys_validate_accepts(tmp_path: Path) -> None:
    import jsonschema
    import yaml

    from odibi_dagster.config.schema import json_schema

    text = HEAD.replace("    base_path: ./data\n", "") + textwrap.dedent("""\
        performance: {use_arrow: true}
        vars: {x: 1}
        pipelines:
          - pipeline: p
            owner: someone
            nodes:
              - name: raw
                tags: [daily]
                privacy: {method: hash}
                on_error: ignore
                read: {connection: data, format: csv, path: in.csv}
        """)
    project = write(tmp_path, "project.yaml", text)
    load_project(project)  # validate accepts it
    validator = jsonschema.Draft202012Validator(json_schema())
    assert list(validator.iter_errors(yaml.safe_load(text))) == []
    bad = yaml.safe_load(text.replace("privacy:", "privacyy:"))
    assert [e.message for e in validator.iter_errors(bad)] != []


def test_odibi_env_naming_a_deployment_is_no_error_in_a_project_without_environments(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    # ODIBI_ENV=production also turns on the direct-key warnings: a project that defines
    # no environments loads as it is; --env with a name it does not define is an error
    project = tmp_path / "p.yaml"
    project.write_text(
        "connections: {lake: {type: local, base_path: .}}\n"
        "pipelines:\n"
        "  - pipeline: p\n"
        "    nodes:\n"
        "      - name: a\n"
        "        read: {connection: lake, path: a.csv, format: csv}\n"
    )
    monkeypatch.setenv("ODIBI_ENV", "production")
    assert load_project(project).config.pipelines[0].pipeline == "p"
    with pytest.raises(OdibiConfigError, match="environment 'production'"):
        load_project(project, env="production")
