"""Shared fixtures (copies of the examples, a throwaway DAGSTER_HOME, one Spark session, the
Azure lake on the emulators) and the markers a test gets from the fixtures it uses.
Helpers that tests import live in ``support``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from odibi_dagster.resources.keyvault import clear_secret_cache
from odibi_dagster_tests.emulators.azurite import AzuriteService
from odibi_dagster_tests.emulators.keyvault import KeyVaultService
from odibi_dagster_tests.support.lake import CUR, RAW, Lake
from odibi_dagster_tests.support.paths import EXAMPLES, copy_tree, reference_dir

pytest_plugins = ["odibi_dagster_tests.emulators.fixtures"]

# The marker (registered in pyproject.toml) of every test using the fixture, directly or
# through another fixture. Tests that start these things some other way (a subprocess, a
# CLI run) carry the marker themselves.
FIXTURE_MARKERS = {
    "spark": "spark",
    "spark_connect": "spark",
    "azurite": "azure",
    "azurite_devstore": "azure",
    "keyvault": "azure",
    "lake": "azure",
    "browser": "browser",
    "page": "browser",
    "server": "slow",  # test_webserver: dagster-webserver serving the examples
    "served": "slow",  # test_webserver_azure: dagster-webserver serving azure_pandas
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        used = FIXTURE_MARKERS.keys() & set(getattr(item, "fixturenames", ()))
        for marker in sorted({FIXTURE_MARKERS[name] for name in used}):
            item.add_marker(marker)


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


@pytest.fixture(scope="session")
def spark_connect_server() -> Iterator[Any]:
    """A Spark Connect server on 127.0.0.1 (a free port; Delta + hadoop-azure jars), for
    the whole suite: started by pip's PySpark, stopped at the end."""
    from odibi_dagster.resources.spark_connect_server import start_server
    from odibi_dagster.resources.spark_jars import download_jars

    download_jars(log=lambda _msg: None)
    server = start_server()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def spark_connect(spark_connect_server: Any, spark: Any) -> Iterator[Any]:
    """A Spark Connect session on that server: what ``spark: {remote: sc://...}`` gives.

    The local session starts first: a process with only a Connect session is marked as
    Connect-only (PySpark's rule), and the local session's tests share this process."""
    from odibi_dagster.resources.spark import SparkSessionResource
    from odibi_dagster.resources.spark_connect import forget_sessions

    session = SparkSessionResource(remote=spark_connect_server.url).get_session()
    yield session
    forget_sessions()


@pytest.fixture
def lake(
    azurite: AzuriteService,
    keyvault: KeyVaultService,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    dagster_home: Path,
) -> Lake:
    """A fresh ``Lake``: containers in both Azurite accounts, the raw account's key in Key
    Vault, the curated account's in an environment variable; a DAGSTER_HOME of its own."""
    clear_secret_cache()
    keyvault.reset_counts()
    lk = Lake(azurite, keyvault, tmp_path)
    azurite.create_container(RAW, lk.raw_container)
    azurite.create_container(CUR, lk.cur_container)
    keyvault.set_secret(lk.secret, lk.key(RAW))
    monkeypatch.setenv(lk.env_var, lk.key(CUR))
    return lk
