"""Spark over Spark Connect: ``spark: {remote: ...}`` in the YAML, the session it gives,
what is hidden of its URL, and the retail example run on a local Spark Connect server.

The engine itself runs the whole contract suite over Connect (test_engine_contract.py,
engine ``spark_connect``); the server is the ``spark_connect_server`` fixture.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import odibi_dagster
from odibi_dagster.engines.pandas import PandasEngine
from odibi_dagster.errors import OdibiRunError
from odibi_dagster.resources.local import LocalStorage
from odibi_dagster.resources.spark import SparkSessionResource
from odibi_dagster.resources.spark_connect import display_remote, redact_remote
from odibi_dagster_tests.support.cli import run_cli
from odibi_dagster_tests.support.paths import EXAMPLES, copy_tree
from odibi_dagster_tests.support.runs import failure_text, run_job

TOKEN = "dapi-0c7e5e1b9f2a"
URL = f"sc://spark.example.com:443/;use_ssl=true;token={TOKEN}"

PROJECT = """
project: remote
engine: spark
spark:
  remote: ${SPARK_REMOTE}
connections:
  lake: {type: local, base_path: ./data}
pipelines:
  - pipeline: shared
    nodes:
      - name: a
        read: {connection: lake, path: a.csv, format: csv}
        write: {connection: lake, path: a.parquet, format: parquet}
  - pipeline: own
    spark:
      remote: ${OTHER_SPARK_REMOTE}
    nodes:
      - name: b
        read: {connection: lake, path: b.csv, format: csv}
        write: {connection: lake, path: b.parquet, format: parquet}
"""


def test_the_remote_url_stays_as_written_and_each_pipeline_gets_its_session(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("SPARK_REMOTE", URL)
    monkeypatch.setenv("OTHER_SPARK_REMOTE", "sc://other.example.com:15002")
    (tmp_path / "project.yaml").write_text(PROJECT, encoding="utf-8")
    defs = odibi_dagster.load_definitions(tmp_path / "project.yaml")
    resources = defs.resources or {}
    project_res = resources["odibi_spark"]
    own_res = resources["odibi_spark__own"]
    assert isinstance(project_res, SparkSessionResource)
    assert isinstance(own_res, SparkSessionResource)
    # as written: the token is filled in only where the run executes
    assert project_res.remote == "${SPARK_REMOTE}"
    assert own_res.remote == "${OTHER_SPARK_REMOTE}"
    assert project_res.remote_url() == URL
    assert TOKEN not in repr(resources)
    graph = defs.resolve_asset_graph()
    required = {
        tuple(key.path): graph.get(key).assets_def.required_resource_keys
        for key in graph.get_all_asset_keys()
        if graph.get(key).is_materializable
    }
    assert "odibi_spark" in required[("shared", "a")]
    assert "odibi_spark__own" in required[("own", "b")]
    assert "odibi_spark" not in required[("own", "b")]


def test_an_unset_remote_variable_means_a_local_session(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("ODIBI_SPARK_REMOTE", raising=False)
    assert SparkSessionResource(remote="${ODIBI_SPARK_REMOTE:-}").remote_url() == ""


def test_the_token_of_a_remote_url_is_never_shown():
    shown = display_remote(URL)
    assert shown == "sc://spark.example.com:443/;use_ssl=true;token=***"
    message = f"connect to {URL} failed: bad token {TOKEN}"
    redacted = redact_remote(message, URL)
    assert TOKEN not in redacted and "spark.example.com:443" in redacted
    assert display_remote("sc://user:pw@host:1") == "sc://***@host:1"


def test_a_url_that_is_not_spark_connect_is_refused_without_its_token():
    res = SparkSessionResource(remote=f"https://spark.example.com/;token={TOKEN}")
    with pytest.raises(OdibiRunError) as info:
        res.get_session()
    assert "not a Spark Connect URL" in str(info.value) and TOKEN not in str(info.value)


@pytest.mark.skipif(
    importlib.util.find_spec("databricks") is not None
    and importlib.util.find_spec("databricks.connect") is not None,
    reason="databricks-connect is installed here",
)
def test_databricks_connect_missing_says_what_to_install():
    with pytest.raises(OdibiRunError) as info:
        SparkSessionResource(remote="databricks").get_session()
    text = str(info.value)
    assert "databricks-connect" in text and "DATABRICKS_HOST" in text
    assert "replaces pyspark" in text


# ------------------------------------------------------------- on a real server


def test_settings_of_one_connect_session_stay_in_that_session(spark_connect_server: Any):
    """An account-scoped key set on a run's session (configure_connections) is not seen by
    another session on the same server."""
    from pyspark.sql.connect.session import SparkSession

    key = "fs.azure.account.key.odibiexample.dfs.core.windows.net"
    one = SparkSession.builder.remote(spark_connect_server.url).create()
    other = SparkSession.builder.remote(spark_connect_server.url).create()
    try:
        one.conf.set(key, "secret-of-one")
        assert one.conf.get(key) == "secret-of-one"
        assert other.conf.get(key, None) is None
    finally:
        one.stop()
        other.stop()


def _normalised(df: pd.DataFrame) -> list[tuple[Any, ...]]:
    df = df[sorted(df.columns)]
    return sorted(
        tuple(None if pd.isna(v) else (round(v, 6) if isinstance(v, float) else v) for v in row)
        for row in df.itertuples(index=False)
    )


@pytest.mark.spark
def test_the_retail_example_over_spark_connect_gives_the_pandas_answer(
    tmp_path: Path, dagster_home: Path
):
    """`make connect-demo`: a local Spark Connect server, and `odibi-dagster run` of the
    retail example on it (a Dagster run of both pipelines); the outputs are pandas'."""
    pandas_root = copy_tree(EXAMPLES / "retail", tmp_path / "pandas" / "retail")
    for job in ("ingest", "analytics"):
        result = run_job(odibi_dagster.load_definitions(pandas_root), job)
        assert result.success, failure_text(result)
    connect_root = copy_tree(EXAMPLES / "retail", tmp_path / "connect" / "retail")
    env = {k: v for k, v in os.environ.items() if k.startswith(("SPARK_", "ODIBI_"))}
    assert not any(k in env for k in ("ODIBI_SPARK_REMOTE", "SPARK_REMOTE"))
    done = run_cli(
        Path(sys.executable).name,
        "-m",
        "odibi_dagster.resources.spark_connect_server",
        "odibi-dagster",
        "run",
        connect_root,
        timeout=900,
    )
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-4000:]
    assert "Spark Connect server at sc://127.0.0.1:" in out
    reader = PandasEngine()
    for base, path, fmt in [
        ("data", "silver/orders.parquet", "parquet"),
        ("data", "silver/customers", "delta"),
        ("outputs", "gold/revenue_by_country.csv", "csv"),
        ("outputs", "gold/top_customers.json", "json"),
    ]:
        got = {
            name: reader.read(LocalStorage(base_path=str(root / base)).location(path), fmt, {})
            for name, root in (("pandas", pandas_root), ("connect", connect_root))
        }
        assert len(got["pandas"]) > 0
        assert sorted(got["connect"].columns) == sorted(got["pandas"].columns), path
        assert _normalised(got["connect"]) == _normalised(got["pandas"]), path
    # Spark (on the server) wrote directories of part files where pandas wrote files
    assert (connect_root / "outputs/gold/revenue_by_country.csv").is_dir()


@pytest.mark.parametrize("fmt", ["parquet", "csv", "delta"])
def test_every_write_mode_on_azure_storage_over_spark_connect(
    spark_connect: Any, azurite_devstore: Any, fmt: str
):
    """Over Connect the account key goes to the session on the server, and the client
    moves a finished overwrite into place through adlfs (no Hadoop here)."""
    import uuid

    from odibi_dagster.engines.spark import SparkEngine
    from odibi_dagster_tests.test_spark_azure import DEV_ACCOUNT, SCHEMA, devstore

    engine = SparkEngine(spark_connect)
    assert engine.connect and engine._hadoop() is None
    dev = devstore(azurite_devstore, f"connect-{uuid.uuid4().hex[:10]}")
    SparkSessionResource().configure_connections(spark_connect, [dev])
    loc = dev.location(f"modes/t.{fmt}")

    def frame(rows: list[tuple[Any, ...]]) -> Any:
        return spark_connect.createDataFrame(rows, SCHEMA).coalesce(1)

    def rows(df: Any) -> list[tuple[Any, ...]]:
        return sorted((r["id"], r["name"], r["amount"]) for r in df.collect())

    first, second = [(1, "ann", 10.5), (2, "bob", -3.0)], [(3, "cy", 7.25)]
    assert not engine.exists(loc, fmt)
    assert engine.write(frame(first), loc, fmt, "overwrite") is True
    assert engine.write(frame(second), loc, fmt, "ignore") is False
    with pytest.raises(OdibiRunError, match=r"node t: output path .* already exists"):
        engine.write(frame(second), loc, fmt, "error", where="node t")
    assert engine.write(frame(second), loc, fmt, "append") is True
    assert rows(engine.read(loc, fmt)) == sorted(first + second)
    assert engine.write(frame(second), loc, fmt, "overwrite") is True
    assert rows(engine.read(loc, fmt)) == second
    blobs = azurite_devstore.list_blobs(DEV_ACCOUNT, dev.container, "modes/")
    # nothing left beside the target: no temporary, no old copy, no lock
    assert all(b == f"modes/t.{fmt}" or b.startswith(f"modes/t.{fmt}/") for b in blobs), blobs
