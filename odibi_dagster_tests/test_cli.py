"""The command lines a user types: odibi-dagster validate|schema|init|run, dagster job execute."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import jsonschema
import pyarrow.parquet as pq
import pytest
import yaml

from odibi_dagster_tests.support.cli import run_cli
from odibi_dagster_tests.support.paths import EXAMPLES, reference_dir


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_validate_accepts_the_examples_and_the_reference_configs():
    result = run_cli(
        "odibi-dagster",
        "validate",
        EXAMPLES / "retail",
        EXAMPLES / "quickstart" / "pipeline.yaml",
        reference_dir() / "example_local.yaml",
        reference_dir() / "getting_started",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("ok: ") == 4
    assert "project 'retail', 4 pipeline(s), 14 node(s), 2 connection(s)" in result.stdout


def test_validate_prints_one_located_line_per_problem_and_exits_1(tmp_path: Path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "connections:\n"
        "  data: {type: local, base_path: .}\n"
        "pipelines:\n"
        "  - pipeline: p\n"
        "    nodes:\n"
        "      - name: a\n"
        "        read: {connection: dta, path: x.csv, format: excel}\n"
    )
    result = run_cli("odibi-dagster", "validate", bad, cwd=tmp_path)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        "bad.yaml:7: pipelines[0].nodes[0].read.format: node 'a': unsupported format 'excel'; "
        "use one of: 'csv', 'parquet', 'json', 'delta', 'api'",
    ]
    bad.write_text(bad.read_text().replace("excel", "csv"))
    result = run_cli("odibi-dagster", "validate", bad, cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "bad.yaml:7: pipelines[0].nodes[0].read.connection: unknown connection 'dta' "
        "(did you mean 'data'?); defined connections: data",
    ]
    assert "Traceback" not in result.stderr


def test_validate_accepts_azure_connections_without_reaching_azure():
    result = run_cli("odibi-dagster", "validate", reference_dir() / "template_full_adls.yaml")
    assert result.returncode == 0, result.stderr
    assert "connections.bronze" not in result.stderr


def test_schema_is_a_json_schema_that_accepts_the_examples_and_rejects_typos(tmp_path: Path):
    result = run_cli("odibi-dagster", "schema")
    assert result.returncode == 0
    schema = json.loads(result.stdout)
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    project = yaml.safe_load((EXAMPLES / "quickstart" / "pipeline.yaml").read_text())
    assert list(validator.iter_errors(project)) == []
    project["pipelines"][0]["nodes"][0]["read"]["formt"] = "csv"
    errors = list(validator.iter_errors(project))
    assert errors and any("formt" in e.message for e in errors)
    pipeline_schema = {**schema["$defs"]["PipelineConfig"], "$defs": schema["$defs"]}
    ingest = yaml.safe_load((EXAMPLES / "retail" / "pipelines" / "ingest.yaml").read_text())
    assert list(jsonschema.Draft202012Validator(pipeline_schema).iter_errors(ingest)) == []


def test_init_creates_a_project_that_runs(tmp_path: Path):
    target = tmp_path / "new_project"
    result = run_cli("odibi-dagster", "init", target)
    assert result.returncode == 0, result.stderr
    assert (target / "project.yaml").is_file() and (target / "definitions.py").is_file()
    run = run_cli("odibi-dagster", "run", target)
    assert run.returncode == 0, run.stdout + run.stderr

    totals: dict[str, float] = {}
    for row in read_csv(target / "data" / "raw" / "sales.csv"):
        totals[row["day"]] = totals.get(row["day"], 0.0) + int(row["quantity"]) * float(
            row["price"]
        )
    grand = sum(totals.values())
    out = {
        r["day"]: r
        for r in pq.read_table(target / "data" / "out" / "daily_totals.parquet").to_pylist()
    }
    assert set(out) == set(totals)
    for day, revenue in totals.items():
        assert abs(out[day]["revenue"] - revenue) < 1e-9
        assert abs(out[day]["revenue_share"] - revenue / grand) < 1e-9
    assert "story " in run.stdout


def test_init_refuses_a_directory_that_is_not_empty(tmp_path: Path):
    (tmp_path / "keep.txt").write_text("mine")
    result = run_cli("odibi-dagster", "init", tmp_path)
    assert result.returncode == 1
    assert "not empty" in result.stderr
    assert (tmp_path / "keep.txt").read_text() == "mine"


def test_run_names_an_unknown_pipeline(example):
    root = example("quickstart")
    result = run_cli("odibi-dagster", "run", root / "pipeline.yaml", "--pipeline", "silver_to_gld")
    assert result.returncode == 1
    assert "no pipeline named silver_to_gld" in result.stderr
    assert "bronze_to_silver, silver_to_gold" in result.stderr


def test_run_of_one_pipeline_runs_only_that_one(example):
    root = example("quickstart")
    result = run_cli("odibi-dagster", "run", root / "pipeline.yaml", "-p", "bronze_to_silver")
    assert result.returncode == 0, result.stderr
    assert (root / "data" / "silver" / "sales.parquet").exists()
    assert not (root / "data" / "gold").exists()


def test_dagster_job_execute_runs_a_pipeline_in_process(example, dagster_home):
    root = example("quickstart")
    result = run_cli(
        "dagster", "job", "execute", "-f", "definitions.py", "-j", "bronze_to_silver", cwd=root
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Executing steps in process" in result.stderr
    rows = pq.read_table(root / "data" / "silver" / "sales.parquet").to_pylist()
    expected = [
        r
        for r in read_csv(root / "data" / "bronze" / "sales.csv")
        if float(r["amount"]) > 0 and r["sale_date"]
    ]
    assert [r["sale_id"] for r in rows] == [int(r["sale_id"]) for r in expected]


@pytest.mark.slow
def test_multiprocess_executor_passes_intermediate_results_between_processes(example, dagster_home):
    """Nodes without write: reach downstream step processes through the intermediate store."""
    root = example("quickstart")
    yaml_path = root / "pipeline.yaml"
    yaml_path.write_text(
        yaml_path.read_text().replace("engine: pandas", "engine: pandas\nexecutor: multiprocess")
    )
    for job in ("bronze_to_silver", "silver_to_gold"):
        result = run_cli("dagster", "job", "execute", "-f", "definitions.py", "-j", job, cwd=root)
        assert result.returncode == 0, result.stderr[-3000:]
        assert "in subprocess" in result.stderr
    (run,) = dg.DagsterInstance.get().get_runs(dg.RunsFilter(job_name="bronze_to_silver"))
    stored = dagster_home / "storage" / "odibi" / "bronze_to_silver" / "clean_sales"
    assert [p.name for p in stored.iterdir()] == [f"{run.run_id}.parquet"]

    sums: dict[str, list[float]] = {}
    for r in read_csv(root / "data" / "bronze" / "sales.csv"):
        if float(r["amount"]) > 0 and r["sale_date"]:
            sums.setdefault(r["store"], []).append(float(r["amount"]))
    got = {r["store"]: r for r in read_csv(root / "data" / "gold" / "sales_by_store.csv")}
    assert set(got) == set(sums)
    for store, amounts in sums.items():
        assert int(got[store]["sales"]) == len(amounts)
        assert float(got[store]["revenue"]) == sum(amounts)


def test_a_config_mistake_under_dagster_cli_prints_the_problem_not_a_traceback(
    example, dagster_home
):
    root = example("quickstart")
    yaml_path = root / "pipeline.yaml"
    yaml_path.write_text(
        yaml_path.read_text().replace(
            "format: parquet\n          mode", "formt: parquet\n          mode"
        )
    )
    result = run_cli(
        "dagster", "job", "execute", "-f", "definitions.py", "-j", "bronze_to_silver", cwd=root
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert (
        "pipeline.yaml:28: pipelines[0].nodes[2].write.formt: node 'save_silver': unknown key "
        "'formt' (did you mean 'format'?)" in result.stderr
    )


OPEN_AT = """\
import os, sys, time
from pathlib import Path
from odibi_dagster.cli import open_instance
start = float(sys.argv[1])
while time.time() < start:
    time.sleep(0.001)
instance = open_instance(Path(os.environ["DAGSTER_HOME"]))
print(len(instance.get_runs(limit=1)))
"""


@pytest.mark.slow
def test_runs_starting_at_once_on_a_fresh_dagster_home_create_its_storage_once(
    tmp_path: Path,
) -> None:
    # Without the lock, 4 processes opening a fresh sqlite DAGSTER_HOME at the same instant
    # failed in 4 of 5 trials (IntegrityError on alembic_version, "table ... already
    # exists", "more than one head"), some leaving the schema stamped twice.
    for trial in range(2):
        home = tmp_path / f"home{trial}"
        start = time.time() + 6  # after every process has imported Dagster
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", OPEN_AT, str(start)],
                env={**os.environ, "DAGSTER_HOME": str(home)},
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(4)
        ]
        outs = [p.communicate(timeout=120) for p in procs]
        assert [p.returncode for p in procs] == [0, 0, 0, 0], [err[-2000:] for _, err in outs]
        assert [out.strip() for out, _ in outs] == ["0"] * 4
