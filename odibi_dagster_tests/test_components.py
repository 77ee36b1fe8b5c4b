"""OdibiProject as a Dagster component, through the real `dg` CLI and in process.

Every test works on a copy of examples/dg_project in tmp_path (nothing is written into
the repository) with a fresh DAGSTER_HOME whose dagster.yaml disables telemetry.
Expected results are computed from the CSV with the csv module, and the parquet output
is read back with pyarrow, independently of the engine.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
from collections import defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import pyarrow.parquet as pq
import pytest
from dagster.components.core.component_tree import ComponentTree
from dagster.components.testing import DefsFolderSandbox
from pydantic import ValidationError

import odibi_dagster
from odibi_dagster import OdibiConfigError, OdibiProject
from odibi_dagster_tests.support.paths import EXAMPLES

EXAMPLE = EXAMPLES / "dg_project"
VENV_BIN = Path(sys.executable).parent
DG = VENV_BIN / "dg"
SALES = Path("src/odibi_dg_example/defs/sales")
ODIBI = SALES / "odibi"
PIPELINE = ODIBI / "pipelines" / "sales_daily.yaml"
CSV_IN = ODIBI / "data" / "raw" / "sales.csv"
PARQUET_OUT = ODIBI / "data" / "processed" / "daily_sales.parquet"
TIMEOUT = 180
ANSI = re.compile(r"\x1b\[[0-9;]*m")

# ----------------------------------------------------------------------------- helpers


def copy_example(dest: Path) -> Path:
    shutil.copytree(
        EXAMPLE,
        dest,
        ignore=shutil.ignore_patterns("__pycache__", "processed", ".venv"),
    )
    return dest


def dg_env(tmp: Path, project: Path) -> dict[str, str]:
    home = tmp / "dagster_home"
    home.mkdir(exist_ok=True)
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = dict(os.environ)
    env.update(
        DAGSTER_HOME=str(home),
        PATH=f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}",
        # The example is not installed: its module is found through src/ (see its README).
        PYTHONPATH=str(project / "src"),
        NO_COLOR="1",
        TERM="dumb",
        COLUMNS="200",
        PYTHONWARNINGS="ignore",
    )
    env.pop("VIRTUAL_ENV", None)
    return env


def run_dg(project: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [str(DG), *args],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        stdin=subprocess.DEVNULL,
    )
    proc.stdout = ANSI.sub("", proc.stdout)
    proc.stderr = ANSI.sub("", proc.stderr)
    return proc


def show(proc: subprocess.CompletedProcess[str]) -> str:
    return f"exit {proc.returncode}\n--- stdout\n{proc.stdout[-6000:]}\n--- stderr\n{proc.stderr[-6000:]}"


def expected_daily_sales(csv_path: Path) -> list[dict[str, Any]]:
    """The pipeline's result, computed from the CSV without the engine."""
    groups: dict[tuple[str, str], dict[str, Any]] = defaultdict(
        lambda: {"sales": 0, "units": 0, "revenue": 0.0}
    )
    with open(csv_path, newline="") as f:
        for row in csv.DictReader(f):
            if row["status"] != "completed":
                continue
            g = groups[(row["sale_date"], row["store"])]
            g["sales"] += 1
            g["units"] += int(row["quantity"])
            g["revenue"] += int(row["quantity"]) * float(row["unit_price"])
    return [
        {
            "sale_date": day,
            "store": store,
            "sales": g["sales"],
            "units": g["units"],
            "revenue": round(g["revenue"], 2),
        }
        for (day, store), g in sorted(groups.items())
    ]


# ----------------------------------------------------------------------------- real CLI


def break_pipeline(proj: Path) -> int:
    """Misspell the first `format:` key of sales_daily.yaml; return its 1-based line."""
    pipeline = proj / PIPELINE
    lines = pipeline.read_text().splitlines(keepends=True)
    idx = next(i for i, line in enumerate(lines) if line.strip() == "format: csv")
    lines[idx] = lines[idx].replace("format:", "formt:")
    pipeline.write_text("".join(lines))
    return idx + 1


def add_unknown_attribute(proj: Path) -> None:
    (proj / SALES / "defs.yaml").write_text(
        "type: odibi_dagster.OdibiProject\nattributes:\n  path: odibi\n  pth: odibi\n"
    )


# name -> (how to change the copy before the run, dg arguments)
CLI_RUNS: dict[str, tuple[Callable[[Path], Any] | None, tuple[str, ...]]] = {
    "components": (None, ("list", "components", "--json")),
    "check": (None, ("check", "defs")),
    "launch": (None, ("launch", "--job", "sales_daily")),
    "list": (None, ("list", "defs", "--json")),
    "broken": (break_pipeline, ("check", "defs")),
    "bad_attr": (add_unknown_attribute, ("check", "yaml")),
}


@dataclass
class CliRun:
    project: Path
    prepared: Any
    future: Future[subprocess.CompletedProcess[str]]

    def result(self) -> subprocess.CompletedProcess[str]:
        return self.future.result(timeout=TIMEOUT + 30)


@pytest.fixture(scope="module")
def cli(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, CliRun]]:
    """Every dg run of this module, started at once: each takes seconds, mostly imports.

    Each run has its own copy of the example and its own DAGSTER_HOME, so they cannot
    interfere; each test below waits for its own run.
    """
    runs: dict[str, CliRun] = {}
    with ThreadPoolExecutor(max_workers=3) as pool:
        for name, (prepare, args) in CLI_RUNS.items():
            tmp = tmp_path_factory.mktemp(name)
            proj = copy_example(tmp / "dg_project")
            prepared = prepare(proj) if prepare else None
            future = pool.submit(run_dg, proj, dg_env(tmp, proj), *args)
            runs[name] = CliRun(proj, prepared, future)
        yield runs


def test_dg_lists_the_component_type(cli):
    proc = cli["components"].result()
    assert proc.returncode == 0, show(proc)
    keys = {c["key"] for c in json.loads(proc.stdout)["items"]}
    assert "odibi_dagster.OdibiProject" in keys, keys


def test_dg_check_defs_passes(cli):
    proc = cli["check"].result()
    assert proc.returncode == 0, show(proc)
    assert "All definitions loaded successfully." in proc.stdout, show(proc)


def test_dg_launch_runs_the_pipeline_and_writes_the_expected_parquet(cli):
    run = cli["launch"]
    proc = run.result()
    assert proc.returncode == 0, show(proc)
    out = run.project / PARQUET_OUT
    assert out.is_file(), show(proc)

    rows = pq.read_table(out).to_pylist()
    want = expected_daily_sales(run.project / CSV_IN)
    assert len(want) == 6  # the CSV has 6 (day, store) groups with completed sales
    assert [r["sale_date"] for r in rows] == [w["sale_date"] for w in want]
    assert [r["store"] for r in rows] == [w["store"] for w in want]
    assert [r["sales"] for r in rows] == [w["sales"] for w in want]
    assert [r["units"] for r in rows] == [w["units"] for w in want]
    assert [r["revenue"] for r in rows] == pytest.approx([w["revenue"] for w in want])
    # Outputs stay inside the Odibi project's data dir, which git-ignores them.
    assert "/processed/" in (run.project / ODIBI / "data" / ".gitignore").read_text()
    assert not (EXAMPLE / PARQUET_OUT).exists()  # the repository's example is untouched


def test_dg_list_defs_shows_the_pipeline_assets_and_job(cli):
    proc = cli["list"].result()
    assert proc.returncode == 0, show(proc)
    listed = json.loads(proc.stdout)
    asset_keys = [a["asset_key_parts"] for a in listed["assets"]]
    assert ["sales_daily", "daily_sales"] in asset_keys
    assert ["sales_daily", "raw_sales"] in asset_keys
    assert "sales_daily" in [j["name"] for j in listed["jobs"]]
    checks = {c["key"] for c in listed["asset_checks"]}
    assert "sales_daily/daily_sales:not_empty" in checks


def test_dg_check_defs_reports_an_odibi_mistake_with_file_line_and_key(cli):
    run = cli["broken"]
    line = run.prepared
    proc = run.result()
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, show(proc)
    assert "OdibiConfigError" in out, show(proc)
    assert re.search(
        rf"sales_daily\.yaml:{line}: \S*formt: node 'raw_sales': unknown key 'formt'", out
    ), show(proc)


def test_dg_check_yaml_rejects_an_unknown_attribute(cli):
    proc = cli["bad_attr"].result()
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, show(proc)
    assert "defs.yaml:4" in out, show(proc)
    assert "'pth' was unexpected" in out, show(proc)


# ----------------------------------------------------------------------------- in process


def test_component_is_exported_for_the_dg_registry():
    assert odibi_dagster.OdibiProject is OdibiProject
    assert "OdibiProject" in odibi_dagster.__all__
    assert "defs.yaml" in (OdibiProject.__doc__ or "")


def test_component_loaded_from_defs_yaml_builds_the_job(tmp_path):
    proj = copy_example(tmp_path / "dg_project")
    sandbox = DefsFolderSandbox(
        project_root=proj,
        defs_folder_path=proj / "src" / "odibi_dg_example" / "defs",
        project_name="odibi_dg_example",
    )
    try:
        with sandbox.load_component_and_build_defs(defs_path=Path("sales")) as (component, defs):
            assert isinstance(component, OdibiProject)
            assert component.path == "odibi"
            assert defs.resolve_job_def("sales_daily").name == "sales_daily"
            keys = {tuple(k.path) for k in defs.resolve_asset_graph().get_all_asset_keys()}
            assert keys == {("sales_daily", "raw_sales"), ("sales_daily", "daily_sales")}
    finally:  # the sandbox imported the copy's package: forget it
        for name in [m for m in sys.modules if m.split(".")[0] == "odibi_dg_example"]:
            del sys.modules[name]


def test_component_with_an_absolute_path(tmp_path):
    proj = copy_example(tmp_path / "dg_project")
    defs = dg.component_defs(component=OdibiProject(path=str((proj / ODIBI).resolve())))
    assert defs.resolve_job_def("sales_daily").name == "sales_daily"


def test_relative_path_resolves_against_the_component_folder(tmp_path, monkeypatch):
    proj = copy_example(tmp_path / "dg_project")
    monkeypatch.chdir(tmp_path)  # not the component folder: the path must not use the cwd
    context = ComponentTree.for_test().load_context.for_path(proj / SALES)
    component = OdibiProject(path="odibi")
    assert component.resolved_path(context) == (proj / ODIBI).resolve()
    assert component.build_defs(context).resolve_job_def("sales_daily").name == "sales_daily"


def test_unknown_attribute_is_rejected():
    with pytest.raises(ValidationError, match="pth"):
        OdibiProject.model_validate({"path": "odibi", "pth": "x"})


def test_config_mistake_raises_odibi_config_error(tmp_path):
    proj = copy_example(tmp_path / "dg_project")
    pipeline = proj / PIPELINE
    pipeline.write_text(pipeline.read_text().replace("format: parquet", "format: parquett"))
    with pytest.raises(OdibiConfigError, match=r"sales_daily\.yaml:\d+: .*format"):
        dg.component_defs(component=OdibiProject(path=str(proj / ODIBI)))
