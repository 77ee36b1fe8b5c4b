"""The Spark engine against Azure storage, emulated by Azurite, with the suite's one session.

What this exercises, for real: hadoop-azure's ``wasb`` (blob) driver talking to Azurite;
Spark's Parquet, CSV, JSON and Delta writers and readers over a Hadoop Azure filesystem
(``SparkEngine`` with every write mode); the mapping from an ``azure_adls`` connection to
the URI Spark opens (``AzureADLS.spark_uri``: ``wasb://`` for Azurite's devstoreaccount1
at 127.0.0.1:10000, a clear error for any other ``blob_endpoint``); Delta tables shared
with the pandas engine (delta-rs) through the same container; a compiled project run by
Dagster with a Key Vault secret; and ``SparkSessionResource.configure_connections`` on
the live session.

What it does not exercise: the ``abfss://`` (dfs) driver, which cannot reach Azurite;
OAuth or any other credential than an account key; and account-scoped key
authentication against a named account, because hadoop-azure's emulator mode signs every
request with the emulator's well-known key, not with the key the connection put in the
Spark conf (``configure_connections`` is checked on the conf it sets instead).
"""

from __future__ import annotations

import io
import json
import re
import uuid
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable

from odibi_dagster.engines.pandas import PandasEngine
from odibi_dagster.engines.spark import SparkEngine
from odibi_dagster.errors import OdibiRunError
from odibi_dagster.resources.azure_adls import AzureADLS
from odibi_dagster.resources.keyvault import clear_secret_cache
from odibi_dagster.resources.local import LocalStorage
from odibi_dagster.resources.spark import SparkSessionResource
from odibi_dagster_tests.emulators.azurite import AzuriteService
from odibi_dagster_tests.emulators.fixtures import DEV_ACCOUNT, DEV_KEY, random_key
from odibi_dagster_tests.emulators.keyvault import KeyVaultService
from odibi_dagster_tests.support.runs import failure_text, run_job

SCHEMA = "id long, name string, amount double"
FIRST = [(1, "ann", 10.5), (2, "bob", -3.0)]
SECOND = [(3, "cy", 7.25)]
ORDERS_CSV = "order_id,customer,amount\n1,ann,10.5\n2,bob,-3.0\n3,ann,7.25\n4,cy,12.0\n"


def tag() -> str:
    return uuid.uuid4().hex[:10]


def devstore(azurite: AzuriteService, container: str, **kw: Any) -> AzureADLS:
    """A connection to Azurite's devstoreaccount1, the account Spark reaches (emulator mode)."""
    azurite.create_container(DEV_ACCOUNT, container)
    fields: dict[str, Any] = {
        "account": DEV_ACCOUNT,
        "container": container,
        "auth_mode": "direct_key",
        "account_key": DEV_KEY,
        "blob_endpoint": azurite.blob_endpoint(DEV_ACCOUNT),
        "connection_name": "dev",
    }
    return AzureADLS(**{**fields, **kw})


@pytest.fixture
def engine(spark: Any) -> SparkEngine:
    return SparkEngine(spark)


@pytest.fixture
def dev(spark: Any, azurite_devstore: AzuriteService) -> AzureADLS:
    """A fresh container in devstoreaccount1, its connection configured on the session."""
    conn = devstore(azurite_devstore, f"spark-{tag()}")
    SparkSessionResource().configure_connections(spark, [conn])
    return conn


def frame(spark: Any, rows: list[tuple[Any, ...]]) -> Any:
    # one partition: one part file per write, and fewer blob calls
    return spark.createDataFrame(rows, SCHEMA).coalesce(1)


def rows_of(df: Any) -> list[tuple[Any, ...]]:
    """The rows of a Spark DataFrame as (id, name, amount), sorted."""
    return rows_of_pylist(df.collect())


def rows_of_pylist(rows: Any) -> list[tuple[Any, ...]]:
    return sorted((r["id"], r["name"], r["amount"]) for r in rows)


# --------------------------------------------------------------------------- the engine


@pytest.mark.parametrize("fmt", ["parquet", "csv", "json", "delta"])
def test_every_format_and_write_mode_through_wasb(
    spark: Any, engine: SparkEngine, dev: AzureADLS, azurite_devstore: AzuriteService, fmt: str
):
    loc = dev.location(f"modes/t.{fmt}")
    assert loc.spark_uri == (
        f"wasb://{dev.container}@{DEV_ACCOUNT}.blob.core.windows.net/modes/t.{fmt}"
    )
    assert not engine.exists(loc, fmt)
    assert engine.write(frame(spark, FIRST), loc, fmt, "overwrite") is True
    assert engine.exists(loc, fmt)
    assert engine.write(frame(spark, SECOND), loc, fmt, "ignore") is False
    with pytest.raises(OdibiRunError, match=r"node t: output path .* already exists.*'error'"):
        engine.write(frame(spark, SECOND), loc, fmt, "error", where="node t")
    assert engine.write(frame(spark, SECOND), loc, fmt, "append") is True
    assert rows_of(engine.read(loc, fmt)) == sorted(FIRST + SECOND)
    # overwrite replaces what the earlier writes left (checked without Spark: one job less)
    assert engine.write(frame(spark, SECOND), loc, fmt, "overwrite") is True

    prefix = f"modes/t.{fmt}/"
    blobs = azurite_devstore.list_blobs(DEV_ACCOUNT, dev.container, prefix)
    parts = [b for b in blobs if b.rsplit("/", 1)[-1].startswith("part-")]
    if fmt == "delta":
        commits = sorted(b for b in blobs if b.startswith(f"{prefix}_delta_log/"))
        assert [b for b in commits if b.endswith(".json")] == [
            f"{prefix}_delta_log/{v:020d}.json" for v in range(3)
        ]
        assert parts and all(p.endswith(".parquet") for p in parts)
        table = DeltaTable(f"az://{dev.container}/{prefix}", storage_options=loc.storage_options)
        assert table.version() == 2
        assert rows_of_pylist(table.to_pyarrow_table().to_pylist()) == SECOND
        return
    # a directory of part files: one now (one partition), the earlier ones deleted
    suffix = ".snappy.parquet" if fmt == "parquet" else f".{fmt}"
    assert f"{prefix}_SUCCESS" in blobs
    assert len(parts) == 1 and parts[0].endswith(suffix), blobs
    data = azurite_devstore.read_blob(DEV_ACCOUNT, dev.container, parts[0])
    if fmt == "parquet":
        got = pq.read_table(io.BytesIO(data)).to_pylist()
    elif fmt == "csv":
        got = pd.read_csv(io.BytesIO(data)).to_dict("records")
    else:
        got = [json.loads(line) for line in data.decode().splitlines()]
    assert rows_of_pylist(got) == SECOND


def test_delta_tables_cross_between_the_pandas_and_spark_engines(
    spark: Any, engine: SparkEngine, dev: AzureADLS, azurite_devstore: AzuriteService
):
    pandas = PandasEngine()
    expected = pd.DataFrame(FIRST + SECOND, columns=["id", "name", "amount"])

    # delta-rs writes through the blob endpoint; Spark reads it through wasb
    from_pandas = dev.location("interop/from_pandas")
    assert pandas.write(expected, from_pandas, "delta", "overwrite") is True
    assert "interop/from_pandas/_delta_log/00000000000000000000.json" in (
        azurite_devstore.list_blobs(DEV_ACCOUNT, dev.container, "interop/from_pandas/")
    )
    assert rows_of(engine.read(from_pandas, "delta")) == sorted(FIRST + SECOND)

    # and the other way round
    from_spark = dev.location("interop/from_spark")
    assert engine.write(frame(spark, FIRST + SECOND), from_spark, "delta", "overwrite") is True
    got = pandas.read(from_spark, "delta").sort_values("id").reset_index(drop=True)
    pd.testing.assert_frame_equal(got, expected, check_dtype=False)


def test_spark_refuses_a_blob_endpoint_it_cannot_reach(
    spark: Any, engine: SparkEngine, azurite: AzuriteService
):
    container = f"raw-{tag()}"
    azurite.create_container("odibiraw", container)
    conn = AzureADLS(
        account="odibiraw",
        container=container,
        auth_mode="direct_key",
        account_key=azurite.accounts["odibiraw"],
        blob_endpoint=azurite.blob_endpoint("odibiraw"),
        connection_name="raw",
    )
    loc = conn.location("in/orders.csv")
    assert loc.spark_uri == ""  # the pandas engine still has its blob endpoint
    expected = (
        f"node src: connection 'raw' (account 'odibiraw', container '{container}'): Spark "
        f"cannot use blob_endpoint {azurite.blob_endpoint('odibiraw')}"
    )
    with pytest.raises(OdibiRunError, match=re.escape(expected)) as err:
        engine.read(loc, "csv", where="node src")
    assert "or use engine: pandas" in str(err.value)
    with pytest.raises(OdibiRunError, match=re.escape(expected)):
        engine.write(frame(spark, FIRST), loc, "parquet", where="node src")


# --------------------------------------------------------------------------- the session


def test_configure_connections_sets_each_accounts_own_key_once(spark: Any):
    t = tag()[:8]
    accounts = {f"odibia{t}": random_key(), f"odibib{t}": random_key()}
    conns = [
        AzureADLS(account=a, container="c01", auth_mode="direct_key", account_key=k)
        for a, k in accounts.items()
    ]
    resource = SparkSessionResource()
    names = [
        f"fs.azure.account.key.{a}.{kind}.core.windows.net"
        for a in accounts
        for kind in ("dfs", "blob")
    ]
    try:
        resource.configure_connections(spark, conns)
        for account, key in accounts.items():
            assert spark.conf.get(f"fs.azure.account.key.{account}.dfs.core.windows.net") == key
            assert spark.conf.get(f"fs.azure.account.key.{account}.blob.core.windows.net") == key
        assert spark.conf.get("fs.azure.account.key", None) is None  # never account-agnostic

        # a second time it sets nothing: what was removed meanwhile stays removed
        first = names[0]
        spark.conf.unset(first)
        resource.configure_connections(spark, conns)
        assert spark.conf.get(first, None) is None

        # a rotated key is a different configuration: set again
        a = next(iter(accounts))
        rotated = random_key()
        resource.configure_connections(
            spark,
            [AzureADLS(account=a, container="c01", auth_mode="direct_key", account_key=rotated)],
        )
        assert spark.conf.get(first) == rotated

        # Spark's redaction covers these names (Spark's own default does not)
        regex = spark.conf.get("spark.redaction.regex")
        assert re.search(regex, "fs.azure.account.key.x.dfs.core.windows.net")
        shown = {r["key"]: r["value"] for r in spark.sql("SET").collect()}
        assert shown[first] != rotated and "redacted" in shown[first]
        assert not any(k in str(shown) for k in (rotated, *accounts.values()))
    finally:
        for name in names:
            spark.conf.unset(name)


def test_a_rotated_key_replaces_the_filesystem_hadoop_cached_for_the_container(
    spark: Any, engine: SparkEngine, dev: AzureADLS
):
    """Hadoop caches one filesystem per container for the life of the JVM, holding the
    conf it was opened with: after a rotation that handle must go, or it keeps the old key."""
    engine.write(frame(spark, [(1, "a", 1.0)]), dev.location("t"), "parquet", "overwrite")
    jvm = spark.sparkContext._jvm
    uri = dev.spark_uri("")

    def filesystem() -> Any:
        conf = spark._jsparkSession.sessionState().newHadoopConf()
        return jvm.org.apache.hadoop.fs.Path(uri).getFileSystem(conf)

    before = filesystem()
    SparkSessionResource().configure_connections(spark, [dev])  # same key: kept
    assert filesystem().equals(before)
    rotated = dev.model_copy(update={"account_key": random_key()})
    SparkSessionResource().configure_connections(spark, [rotated])
    after = filesystem()
    assert not after.equals(before)
    key_name = f"fs.azure.account.key.{DEV_ACCOUNT}.blob.core.windows.net"
    assert after.getConf().get(key_name) == rotated.account_key
    SparkSessionResource().configure_connections(spark, [dev])  # and back, for the others
    assert filesystem().getConf().get(key_name) == DEV_KEY


def test_check_spark_access_reports_what_spark_reaches_and_what_it_cannot(
    spark: Any, dev: AzureADLS, azurite: AzuriteService, tmp_path: Path
):
    from odibi_dagster.setup_helpers import check_spark_access, print_connection_report

    azurite.create_container("odibiraw", "landing")
    other = AzureADLS(
        account="odibiraw",
        container="landing",
        auth_mode="direct_key",
        account_key=azurite.accounts["odibiraw"],
        blob_endpoint=azurite.blob_endpoint("odibiraw"),
        connection_name="raw",
    )
    local = LocalStorage(base_path=str(tmp_path), connection_name="disk")
    statuses = check_spark_access(spark, {"dev": dev, "raw": other, "disk": local})
    by_name = {s.name: s for s in statuses}
    assert by_name["dev"].ok and by_name["dev"].detail.startswith(
        f"Spark reaches wasb://{dev.container}@devstoreaccount1.blob.core.windows.net"
    )
    assert by_name["disk"].ok and str(tmp_path) in by_name["disk"].detail
    assert not by_name["raw"].ok
    assert "connection 'raw'" in by_name["raw"].detail
    assert "Spark cannot use blob_endpoint" in by_name["raw"].detail
    out = io.StringIO()
    assert print_connection_report(statuses, file=out) is False
    assert azurite.accounts["odibiraw"] not in out.getvalue()
    assert "3 connection(s): 2 OK, 1 FAILED" in out.getvalue()


# --------------------------------------------------------------------------- a project


def test_compiled_spark_project_reads_and_writes_through_azurite(
    spark: Any,
    azurite_devstore: AzuriteService,
    keyvault: KeyVaultService,
    tmp_path: Path,
    dagster_home: Path,
    monkeypatch: pytest.MonkeyPatch,
):
    t = tag()
    src, out = f"in-{t}", f"out-{t}"
    secret, env_var = f"devstore-key-{t}", f"DEVSTORE_KEY_{t.upper()}"
    for container in (src, out):
        azurite_devstore.create_container(DEV_ACCOUNT, container)
    azurite_devstore.upload_blob(DEV_ACCOUNT, src, "in/orders.csv", ORDERS_CSV.encode())
    clear_secret_cache()
    keyvault.reset_counts()
    keyvault.set_secret(secret, DEV_KEY)
    monkeypatch.setenv(env_var, DEV_KEY)
    endpoint = azurite_devstore.blob_endpoint(DEV_ACCOUNT)
    lake = {
        "type": "azure_adls",
        "account": DEV_ACCOUNT,
        "container": src,
        "auth_mode": "key_vault",
        "key_vault_url": keyvault.url,
        "secret_name": secret,
        "blob_endpoint": endpoint,
    }
    curated = {
        "type": "azure_adls",
        "account": DEV_ACCOUNT,
        "container": out,
        "path_prefix": "gold",
        "auth_mode": "direct_key",
        "account_key": "${" + env_var + "}",
        "blob_endpoint": endpoint,
    }
    project = tmp_path / "project.yaml"
    project.write_text(
        f"""engine: spark
connections:
  lake: {json.dumps(lake)}
  curated: {json.dumps(curated)}
pipelines:
  - pipeline: orders
    nodes:
      - name: raw_orders
        read: {{connection: lake, path: in/orders.csv, format: csv}}
      - name: paid_orders
        depends_on: [raw_orders]
        transform: {{steps: ["SELECT order_id, customer, amount FROM raw_orders WHERE amount > 0"]}}
        write: {{connection: curated, path: silver/paid_orders, format: delta}}
      - name: by_customer
        depends_on: [paid_orders]
        transform:
          steps:
            - "SELECT customer, COUNT(*) AS orders, ROUND(SUM(amount), 2) AS total FROM paid_orders GROUP BY customer"
        write: {{connection: curated, path: by_customer, format: parquet}}
"""
    )
    result = run_job(project, "orders")
    assert result.success, failure_text(result)
    assert keyvault.secret_gets == 1  # the lake connection's key came from the vault

    meta = {
        e.asset_key.path[-1]: e.materialization.metadata
        for e in result.get_asset_materialization_events()
    }
    # raw_orders only reads: an external asset, loaded by its consumer, never materialized
    assert {n: m["dagster/row_count"].value for n, m in meta.items()} == {
        "paid_orders": 3,
        "by_customer": 2,
    }
    assert meta["paid_orders"]["dagster/uri"].value == (
        f"abfss://{out}@{DEV_ACCOUNT}.dfs.core.windows.net/gold/silver/paid_orders"
    )

    # read back without Spark: delta-rs, and pyarrow on the blobs' bytes
    paid = DeltaTable(
        f"az://{out}/gold/silver/paid_orders",
        storage_options={
            "azure_storage_account_name": DEV_ACCOUNT,
            "azure_storage_account_key": DEV_KEY,
            "azure_storage_endpoint": endpoint,
            "allow_http": "true",
        },
    ).to_pyarrow_table()
    assert sorted(tuple(r.values()) for r in paid.to_pylist()) == [
        (1, "ann", 10.5),
        (3, "ann", 7.25),
        (4, "cy", 12.0),
    ]
    parts = [
        b
        for b in azurite_devstore.list_blobs(DEV_ACCOUNT, out, "gold/by_customer/")
        if b.endswith(".parquet")
    ]
    totals = pa.concat_tables(
        pq.read_table(io.BytesIO(azurite_devstore.read_blob(DEV_ACCOUNT, out, p))) for p in parts
    )
    assert sorted(tuple(r.values()) for r in totals.to_pylist()) == [
        ("ann", 2, 17.75),
        ("cy", 1, 12.0),
    ]
    # nothing was written into the source container
    assert azurite_devstore.list_blobs(DEV_ACCOUNT, src) == ["in/orders.csv"]

    # the key is in no event record and not in the run config
    instance = dg.DagsterInstance.get()
    records = instance.all_logs(result.run_id)
    assert records and not [r for r in records if DEV_KEY in str(r)]
    assert DEV_KEY not in str(result.all_events)
    assert DEV_KEY not in str(result.dagster_run.run_config)


def test_compiled_spark_project_fails_clearly_on_a_blob_endpoint_spark_cannot_use(
    spark: Any,
    azurite: AzuriteService,
    tmp_path: Path,
    dagster_home: Path,
    monkeypatch: pytest.MonkeyPatch,
):
    container = f"raw-{tag()}"
    azurite.create_container("odibiraw", container)
    azurite.upload_blob("odibiraw", container, "in/orders.csv", ORDERS_CSV.encode())
    monkeypatch.setenv("ODIBI_TEST_RAW_KEY", azurite.accounts["odibiraw"])
    raw = {
        "type": "azure_adls",
        "account": "odibiraw",
        "container": container,
        "auth_mode": "direct_key",
        "account_key": "${ODIBI_TEST_RAW_KEY}",
        "blob_endpoint": azurite.blob_endpoint("odibiraw"),
    }
    project = tmp_path / "project.yaml"
    project.write_text(
        f"""engine: spark
connections:
  raw: {json.dumps(raw)}
pipelines:
  - pipeline: p
    nodes:
      - name: src
        read: {{connection: raw, path: in/orders.csv, format: csv}}
      - name: positive
        depends_on: [src]
        transform: {{steps: ["SELECT * FROM src WHERE amount > 0"]}}
"""
    )
    result = run_job(project, "p")
    assert not result.success
    text = failure_text(result)
    assert (
        f"connection 'raw' (account 'odibiraw', container '{container}'): Spark cannot use "
        f"blob_endpoint {azurite.blob_endpoint('odibiraw')}"
    ) in text, text
    assert azurite.accounts["odibiraw"] not in text
