"""Shared fixtures: copies of the examples, a throwaway DAGSTER_HOME, the real CLIs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"
REFERENCE = REPO.parent / "shared" / "odibi_reference"
BIN = Path(sys.executable).parent

pytest_plugins = ["odibi_dagster_tests.emulators.fixtures"]


def reference_dir() -> Path:
    """The Odibi reference configs (shipped beside the repository, read-only)."""
    env = os.environ.get("ODIBI_REFERENCE_DIR")
    path = Path(env) if env else REFERENCE
    if not path.is_dir():
        pytest.skip(f"Odibi reference configs not found at {path} (set ODIBI_REFERENCE_DIR)")
    return path


def copy_tree(src: Path, dst: Path) -> Path:
    shutil.copytree(
        src,
        dst,
        ignore=shutil.ignore_patterns("__pycache__", "outputs", "output", "silver", "gold"),
    )
    for p in dst.rglob("*"):
        p.chmod(p.stat().st_mode | 0o200)
    dst.chmod(dst.stat().st_mode | 0o200)
    return dst


@pytest.fixture
def example(tmp_path: Path):
    """``example("retail")`` -> a private, writable copy of examples/retail."""

    def make(name: str) -> Path:
        return copy_tree(EXAMPLES / name, tmp_path / name)

    return make


@pytest.fixture
def reference(tmp_path: Path):
    """``reference("example_local.yaml")`` -> a writable copy of the reference dir, and the path in it."""

    def make(rel: str = "") -> Path:
        root = copy_tree(reference_dir(), tmp_path / "odibi_reference")
        return root / rel

    return make


@pytest.fixture
def dagster_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    yield home


def cli_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("PYTHONUNBUFFERED", "1")
    env.update(extra)
    return env


def run_cli(
    *args: str | os.PathLike[str], cwd: Path | None = None, timeout: float = 300, **env: str
) -> subprocess.CompletedProcess[str]:
    """Run a console script of the venv (odibi-dagster, dagster, dg) and capture its output."""
    cmd = [str(BIN / str(args[0])), *map(str, args[1:])]
    return subprocess.run(
        cmd,
        cwd=cwd,
        env=cli_env(**env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture(scope="session")
def spark() -> Iterator[Any]:
    """One local Spark session (Delta + hadoop-azure jars) for the whole suite.

    Compiled projects run in-process reuse it: ``SparkSessionResource`` takes the session
    already active in the process. The jars are downloaded once if missing.
    """
    from odibi_dagster.resources.spark import SparkSessionResource, forget_configured
    from odibi_dagster.resources.spark_jars import download_jars

    download_jars(log=lambda _msg: None)
    session = SparkSessionResource(
        master="local[2]",
        spark_conf={"spark.sql.shuffle.partitions": "2", "spark.default.parallelism": "2"},
    ).get_session()
    yield session
    session.stop()
    forget_configured()
