"""Azure connections against the real emulators: Azurite (two storage accounts) and an
HTTPS Key Vault reached by the real SecretClient and DefaultAzureCredential.

Every test gets its own containers and secrets, so tests share the services but no data.
Outputs are checked with readers independent of the engine: raw blob bytes parsed by
pandas/pyarrow, and delta-rs with storage options built here.
"""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable, write_deltalake

import odibi_dagster
from odibi_dagster.engines.pandas import PandasEngine
from odibi_dagster.errors import OdibiConnectionError
from odibi_dagster.resources import keyvault as vault_module
from odibi_dagster.resources.azure_adls import AzureADLS
from odibi_dagster.resources.keyvault import clear_secret_cache
from odibi_dagster_tests.emulators.keyvault import IDENTITY_OBJECT_ID
from odibi_dagster_tests.support.cli import cli_env, run_cli
from odibi_dagster_tests.support.lake import CUR, RAW, Lake
from odibi_dagster_tests.support.paths import EXAMPLES
from odibi_dagster_tests.support.runs import failure_text, run_job

ORDERS = pd.DataFrame(
    {
        "order_id": [1, 2, 3, 4],
        "customer": ["ann", "bob", "ann", "cy"],
        "amount": [10.5, -3.0, 7.25, 12.0],
    }
)


def parquet_bytes(df: pd.DataFrame) -> bytes:
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), buf)
    return buf.getvalue()


# --------------------------------------------------------------------------- happy paths


def test_reads_in_one_account_and_writes_in_the_other_for_every_format(lake: Lake):
    lake.upload("in/orders.csv", ORDERS.to_csv(index=False).encode())
    lake.upload("in/orders.parquet", parquet_bytes(ORDERS))
    lake.upload("in/orders.json", ORDERS.to_json(orient="records", lines=True).encode())
    write_deltalake(
        f"az://{lake.raw_container}/in/orders_delta",
        ORDERS,
        storage_options=lake.delta_options(RAW),
    )
    nodes = []
    for fmt, path in (
        ("csv", "in/orders.csv"),
        ("parquet", "in/orders.parquet"),
        ("json", "in/orders.json"),
        ("delta", "in/orders_delta"),
    ):
        nodes.append(
            f"""
      - name: src_{fmt}
        read: {{connection: raw, path: {path}, format: {fmt}}}
      - name: out_{fmt}
        depends_on: [src_{fmt}]
        transform: {{steps: ["SELECT order_id, customer, amount FROM src_{fmt} WHERE amount > 0 ORDER BY order_id"]}}
        write: {{connection: cur, path: out/orders.{fmt}, format: {fmt}}}"""
        )
    project = lake.project("pipelines:\n  - pipeline: p\n    nodes:" + "".join(nodes) + "\n")
    result = run_job(project)
    assert result.success, failure_text(result)

    expected = ORDERS[ORDERS.amount > 0].reset_index(drop=True)
    got = {
        "csv": pd.read_csv(io.BytesIO(lake.read_blob("gold/out/orders.csv"))),
        "parquet": pq.read_table(io.BytesIO(lake.read_blob("gold/out/orders.parquet"))).to_pandas(),
        "json": pd.read_json(io.BytesIO(lake.read_blob("gold/out/orders.json")), lines=True),
        "delta": DeltaTable(
            f"az://{lake.cur_container}/gold/out/orders.delta",
            storage_options=lake.delta_options(CUR),
        )
        .to_pandas()
        .sort_values("order_id")
        .reset_index(drop=True),
    }
    for fmt, df in got.items():
        pd.testing.assert_frame_equal(df, expected, check_dtype=False, obj=fmt)
    # nothing was written into the raw account
    assert all(b.startswith("in/") for b in lake.blobs(RAW))
    # the materialization names the abfss address, never the emulator endpoint or a key
    mats = result.asset_materializations_for_node("p__out_parquet")
    uri = mats[0].metadata["dagster/uri"].value
    assert uri == f"abfss://{lake.cur_container}@{CUR}.dfs.core.windows.net/gold/out/orders.parquet"
    assert mats[0].metadata["dagster/row_count"].value == 3


@pytest.mark.parametrize("fmt", ["csv", "parquet", "json", "delta"])
def test_write_modes_on_adls(lake: Lake, fmt: str):
    engine = PandasEngine()
    loc = lake.resource(CUR).location(f"modes/t.{fmt}")
    first = ORDERS.iloc[:2].reset_index(drop=True)
    second = ORDERS.iloc[2:].reset_index(drop=True)

    def read() -> pd.DataFrame:
        df = engine.read(loc, fmt)
        return df.sort_values("order_id").reset_index(drop=True)

    assert engine.write(first, loc, fmt, "error") is True
    with pytest.raises(Exception, match="exists"):
        engine.write(second, loc, fmt, "error")
    assert engine.write(second, loc, fmt, "ignore") is False
    pd.testing.assert_frame_equal(read(), first, check_dtype=False)
    engine.write(second, loc, fmt, "append")
    pd.testing.assert_frame_equal(read(), ORDERS, check_dtype=False)
    engine.write(second, loc, fmt, "overwrite")
    pd.testing.assert_frame_equal(read(), second, check_dtype=False)
    # no temporary siblings left behind in the container
    assert all("tmp" not in b for b in lake.blobs()), lake.blobs()


def test_two_connections_sharing_one_secret_fetch_it_once(lake: Lake):
    a = lake.resource(RAW)
    b = lake.resource(RAW, connection_name="raw_again", path_prefix="other")
    a.check()
    b.check()
    assert a.get_storage_key() == b.get_storage_key() == lake.key(RAW)
    assert lake.keyvault.secret_gets == 1
    assert vault_module.SECRETS.fetch_count == 1


def test_twenty_node_run_over_three_connections_sharing_two_secrets(
    lake: Lake, monkeypatch: pytest.MonkeyPatch
):
    """A whole run fetches each (vault, secret) once, however many nodes use it."""
    cur_secret = f"cur-key-{lake.tag}"
    lake.keyvault.set_secret(cur_secret, lake.key(CUR))
    lake.upload("in/orders.csv", ORDERS.to_csv(index=False).encode())
    extra = f"""  cur_b: {{type: azure_adls, account: {CUR}, container: {lake.cur_container}, path_prefix: b, key_vault_name: odibi-kv, key_vault_url: "{lake.keyvault.url}", secret_name: {cur_secret}, blob_endpoint: "{lake.azurite.blob_endpoint(CUR)}"}}
"""
    cur = f"""  cur: {{type: azure_adls, account: {CUR}, container: {lake.cur_container}, path_prefix: gold, key_vault_name: odibi-kv, key_vault_url: "{lake.keyvault.url}", secret_name: {cur_secret}, blob_endpoint: "{lake.azurite.blob_endpoint(CUR)}"}}
"""
    conns = lake.connections().splitlines(keepends=True)
    text = conns[0] + conns[1] + cur + extra
    nodes = [
        "      - name: n0\n        read: {connection: raw, path: in/orders.csv, format: csv}\n"
    ]
    for i in range(1, 20):
        target = "cur" if i % 2 else "cur_b"
        nodes.append(
            f"      - name: n{i}\n        depends_on: [n{i - 1}]\n"
            f'        transform: {{steps: ["SELECT * FROM n{i - 1}"]}}\n'
            f"        write: {{connection: {target}, path: t/n{i}.parquet, format: parquet}}\n"
        )
    project = lake.tmp / "twenty.yaml"
    project.write_text(text + "pipelines:\n  - pipeline: p\n    nodes:\n" + "".join(nodes))
    lake.keyvault.reset_counts()
    result = run_job(project)
    assert result.success, failure_text(result)
    assert len(lake.blobs()) == 19
    # two secrets -> two authenticated GETs (plus one unauthenticated challenge each)
    assert lake.keyvault.secret_gets == 2
    assert sum(1 for r in lake.keyvault.requests if r[2] == 401) <= 2
    assert lake.keyvault.token_requests <= 1


def test_a_rotated_key_is_fetched_again_when_the_account_rejects_the_cached_one(lake: Lake):
    stale = lake.key(CUR)  # a valid key, but of the other account
    lake.keyvault.set_secret(lake.secret, stale)
    assert lake.resource(RAW).get_storage_key() == stale  # cached now
    lake.keyvault.set_secret(lake.secret, lake.key(RAW))  # the secret is rotated
    conn = lake.resource(RAW)
    conn.check()
    assert conn.get_storage_key() == lake.key(RAW)
    assert lake.keyvault.secret_gets == 2


def test_storage_options_for_each_library(lake: Lake):
    conn = lake.resource(RAW)
    opts = conn.pandas_storage_options()
    assert opts["account_name"] == RAW and lake.key(RAW) in opts["connection_string"]
    lake.upload("x/a.csv", b"a\n1\n")
    assert pd.read_csv(f"abfs://{lake.raw_container}/x/a.csv", storage_options=opts).a.tolist() == [
        1
    ]
    delta = conn.delta_storage_options()
    assert delta == lake.delta_options(RAW)
    spark = {**conn.spark_conf(), **lake.resource(CUR).spark_conf()}
    assert set(spark) == {
        f"fs.azure.account.key.{RAW}.dfs.core.windows.net",
        f"fs.azure.account.key.{RAW}.blob.core.windows.net",
        f"fs.azure.account.key.{CUR}.dfs.core.windows.net",
        f"fs.azure.account.key.{CUR}.blob.core.windows.net",
    }
    assert "fs.azure.account.key" not in spark  # never an account-agnostic key


def test_sovereign_cloud_and_default_addresses():
    conn = AzureADLS(
        account="lake1",
        container="c01",
        path_prefix="/p/",
        key_vault_name="kv1",
        secret_name="s",
        endpoint_suffix="core.chinacloudapi.cn",
    )
    assert conn.uri("a/b.parquet") == "abfss://c01@lake1.dfs.core.chinacloudapi.cn/p/a/b.parquet"
    assert conn.blob_url == "https://lake1.blob.core.chinacloudapi.cn"
    assert conn.uri("./a//b/../c.csv") == "abfss://c01@lake1.dfs.core.chinacloudapi.cn/p/a/c.csv"
    assert (
        vault_module.vault_scope("https://kv1.vault.azure.cn") == "https://vault.azure.cn/.default"
    )
    direct = AzureADLS(
        account="lake1",
        container="c01",
        auth_mode="direct_key",
        account_key="a2V5",
        endpoint_suffix="core.chinacloudapi.cn",
    )
    assert direct.delta_storage_options() == {
        "azure_storage_account_name": "lake1",
        "azure_storage_account_key": "a2V5",
        "azure_storage_endpoint": "https://lake1.blob.core.chinacloudapi.cn",
    }
    assert direct.pandas_storage_options()["connection_string"].endswith(
        "AccountKey=a2V5;EndpointSuffix=core.chinacloudapi.cn"
    )
    # `endpoint_suffix: ${VAR:-}` left empty means the public cloud
    assert AzureADLS(**{**direct.model_dump(), "endpoint_suffix": ""}).blob_url == (
        "https://lake1.blob.core.windows.net"
    )
    assert conn.vault_url == "https://kv1.vault.azure.net"
    assert vault_module.is_public_vault_url("https://kv1.vault.azure.cn/")
    assert not vault_module.is_public_vault_url("https://127.0.0.1:8443")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"account_key": "k"}, "account_key is only for auth_mode direct_key"),
        ({"secret_name": None}, "auth_mode key_vault needs secret_name"),
        (
            {"auth_mode": "direct_key", "account_key": "k"},
            "key_vault_name and secret_name apply only to auth_mode key_vault",
        ),
        (
            {"auth_mode": "direct_key", "key_vault_name": None, "secret_name": None},
            "needs account_key",
        ),
    ],
)
def test_invalid_auth_combinations_cannot_be_constructed(kwargs: dict[str, Any], message: str):
    base = {"account": "acct1", "container": "c01", "key_vault_name": "kv", "secret_name": "s"}
    with pytest.raises(ValueError, match=message):
        AzureADLS(**{**base, **kwargs})


def test_direct_key_in_production_warns(lake: Lake, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("ODIBI_ENV", "production")
    lake.upload("in/orders.csv", ORDERS.to_csv(index=False).encode())
    project = lake.project(
        """pipelines:
  - pipeline: p
    nodes:
      - name: src
        read: {connection: raw, path: in/orders.csv, format: csv}
      - name: out
        depends_on: [src]
        write: {connection: cur, path: o.csv, format: csv}
"""
    )
    result = run_job(project)
    assert result.success
    texts = [r.user_message for r in dg.DagsterInstance.get().all_logs(result.run_id)]
    warned = [t for t in texts if "direct_key with ODIBI_ENV=production" in t]
    assert len(warned) == 1 and "connection 'cur'" in warned[0], texts


# --------------------------------------------------------------------------- failures


SIMPLE = """pipelines:
  - pipeline: p
    nodes:
      - name: src
        read: {connection: raw, path: in/orders.csv, format: csv}
      - name: out
        depends_on: [src]
        write: {connection: cur, path: out.parquet, format: parquet}
      - name: local_too
        depends_on: [src]
        write: {connection: cur, path: out2.csv, format: csv}
"""


def assert_failed_before_writing(lake: Lake, result: dg.ExecuteInProcessResult) -> str:
    assert not result.success
    text = failure_text(result)
    assert lake.blobs() == []  # no node wrote anything
    started = [e for e in result.all_events if e.event_type_value == "STEP_START"]
    assert started == []
    # the run fails on the connection's own error, not an SDK exception
    assert "odibi_dagster.errors.OdibiConnectionError: connection '" in text
    return text


def test_wrong_account_key_fails_the_run_before_any_write(
    lake: Lake, monkeypatch: pytest.MonkeyPatch
):
    wrong = lake.key(RAW)  # a real key of the other account
    monkeypatch.setenv(lake.env_var, wrong)
    lake.upload("in/orders.csv", ORDERS.to_csv(index=False).encode())
    text = assert_failed_before_writing(lake, run_job(lake.project(SIMPLE)))
    assert (
        f"connection 'cur' (account '{CUR}', container '{lake.cur_container}') at "
        f"{lake.azurite.blob_endpoint(CUR)}: the storage account rejected the account key "
        "from account_key (auth_mode direct_key) or the network (403 AuthorizationFailure)"
    ) in text
    assert f"az storage account keys list --account-name {CUR}" in text
    assert wrong not in text


def test_missing_container(lake: Lake):
    lake.upload("in/orders.csv", ORDERS.to_csv(index=False).encode())
    lake.azurite.delete_container(CUR, lake.cur_container)
    text = assert_failed_before_writing(lake, run_job(lake.project(SIMPLE)))
    assert (
        f"connection 'cur' (account '{CUR}', container '{lake.cur_container}') at "
        f"{lake.azurite.blob_endpoint(CUR)}: container '{lake.cur_container}' does not exist. "
        f"Create it (az storage container create --account-name {CUR} --name "
        f"{lake.cur_container} --auth-mode login)"
    ) in text


def test_missing_secret(lake: Lake):
    lake.keyvault.delete_secret(lake.secret)
    text = assert_failed_before_writing(lake, run_job(lake.project(SIMPLE)))
    assert (
        f"connection 'raw' (account '{RAW}', container '{lake.raw_container}'): could not "
        f"read secret '{lake.secret}' in Key Vault {lake.keyvault.url}: the secret does not "
        f"exist. Create it with the storage account key (az keyvault secret set --vault-name "
        f"odibi-kv --name {lake.secret} --value <key>)"
    ) in text


@pytest.mark.parametrize("rbac", [True, False])
def test_forbidden_secret_names_the_identity_and_the_role(lake: Lake, rbac: bool):
    lake.keyvault.forbid(lake.secret, rbac=rbac)
    try:
        text = assert_failed_before_writing(lake, run_job(lake.project(SIMPLE)))
    finally:
        lake.keyvault.allow(lake.secret)
    assert (
        f"could not read secret '{lake.secret}' in Key Vault {lake.keyvault.url}: access "
        "denied (403)"
    ) in text
    assert f"oid={IDENTITY_OBJECT_ID}" in text
    assert "Grant it the 'Key Vault Secrets User' role on the vault" in text
    assert (
        f"--assignee-object-id {IDENTITY_OBJECT_ID} --assignee-principal-type ServicePrincipal"
    ) in text
    assert (
        f"az keyvault set-policy --name odibi-kv --object-id {IDENTITY_OBJECT_ID} --secret-permissions get"
        in text
    )


def test_unreachable_vault(lake: Lake, unused_port: int):
    project = lake.project(SIMPLE, raw__key_vault_url=f"https://127.0.0.1:{unused_port}")
    text = assert_failed_before_writing(lake, run_job(project))
    assert (
        f"connection 'raw' (account '{RAW}', container '{lake.raw_container}'): could not read "
        f"secret '{lake.secret}' in Key Vault https://127.0.0.1:{unused_port}: the vault could "
        "not be reached"
    ) in text
    assert "Check key_vault_name / key_vault_url" in text


def test_unreachable_storage_endpoint(lake: Lake, unused_port: int):
    project = lake.project(SIMPLE, cur__blob_endpoint=f"http://127.0.0.1:{unused_port}/{CUR}")
    text = assert_failed_before_writing(lake, run_job(project))
    assert f"connection 'cur' (account '{CUR}', container '{lake.cur_container}')" in text
    assert "the blob endpoint could not be reached" in text


def test_unset_key_variable_names_the_connection_and_the_variable(
    lake: Lake, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.delenv(lake.env_var)
    project = lake.project(SIMPLE)
    defs = odibi_dagster.load_definitions(project)  # loading needs no secret
    with pytest.raises(dg.DagsterInvalidConfigError) as err:
        defs.resolve_job_def("p").execute_in_process(instance=dg.DagsterInstance.get())
    text = str(err.value)
    assert "resources:cur:config:account_key" in text and lake.env_var in text
    assert lake.blobs() == []


@pytest.fixture
def unused_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def test_errors_from_get_storage_key_are_connection_errors(lake: Lake):
    lake.keyvault.delete_secret(lake.secret)
    with pytest.raises(OdibiConnectionError, match="the secret does not exist"):
        lake.resource(RAW).get_storage_key()


# --------------------------------------------------------------------------- secrets


@pytest.mark.slow
def test_no_key_reaches_logs_run_config_event_log_metadata_or_stories(
    lake: Lake, dagster_home: Path, monkeypatch: pytest.MonkeyPatch
):
    """Real runs through the dagster CLI (step processes, compute logs, DEBUG console
    logs), one of them failing, then a byte search of everything they left behind."""
    lake.upload("in/orders.csv", ORDERS.to_csv(index=False).encode())
    story_dir = lake.tmp / "stories"
    project = lake.project(
        f"""executor: multiprocess
story: {{output_path: "{story_dir}"}}
pipelines:
  - pipeline: p
    nodes:
      - name: src
        read: {{connection: raw, path: in/orders.csv, format: csv}}
      - name: out
        depends_on: [src]
        transform: {{steps: ["SELECT * FROM src WHERE amount > 0"]}}
        write: {{connection: cur, path: out.parquet, format: parquet}}
      - name: out_delta
        depends_on: [src]
        write: {{connection: cur, path: out_delta, format: delta}}
  - pipeline: fails
    nodes:
      - name: src
        read: {{connection: raw, path: in/orders.csv, format: csv}}
      - name: again
        depends_on: [src]
        write: {{connection: cur, path: out.parquet, format: parquet, mode: error}}
  - pipeline: missing
    nodes:
      - name: src
        read: {{connection: raw, path: in/not_there.csv, format: csv}}
      - name: uses
        depends_on: [src]
        write: {{connection: cur, path: other.parquet, format: parquet}}
"""
    )
    defs_file = lake.tmp / "definitions.py"
    defs_file.write_text(
        f"import odibi_dagster\ndefs = odibi_dagster.load_definitions({str(project)!r})\n"
    )
    outputs = []
    for job, ok in (("p", True), ("fails", False), ("missing", False)):
        result = run_cli("dagster", "job", "execute", "-f", defs_file, "-j", job, timeout=600)
        outputs.append(result.stdout + result.stderr)
        assert (result.returncode == 0) is ok, result.stderr[-3000:]
    assert "exists" in outputs[1] and "out.parquet" in outputs[1]
    assert "not_there.csv" in outputs[2]
    # the source that could not be read, and the node that could not load it, are in
    # their run's story (which the byte search below covers)
    (missing,) = (story_dir / "missing").glob("*/story.json")
    assert {n["node"]: n["status"] for n in json.loads(missing.read_text())["nodes"]} == {
        "src": "failed",
        "uses": "failed",
    }
    # a wrong key (the other account's) fails the run; it must not be echoed either
    monkeypatch.setenv(lake.env_var, lake.key(RAW))
    result = run_cli("dagster", "job", "execute", "-f", defs_file, "-j", "p", timeout=600)
    assert result.returncode != 0
    outputs.append(result.stdout + result.stderr)
    assert "rejected the account key" in outputs[-1]

    keys = [lake.key(RAW), lake.key(CUR)]
    needles = [k.encode() for k in keys] + [base64.b64decode(k) for k in keys]
    files = [p for p in (*dagster_home.rglob("*"), *story_dir.rglob("*")) if p.is_file()]
    assert any(p.suffix == ".db" for p in files)  # the event log and run storage
    assert any("compute_logs" in str(p) for p in files), [str(p) for p in files]
    assert any(p.name == "story.json" for p in files)
    leaks = [str(p) for p in files for n in needles if n in p.read_bytes()]
    leaks += [f"output {i}" for i, out in enumerate(outputs) for k in keys if k in out]
    assert leaks == []
    # and the instance's own view: run config and every event's text
    instance = dg.DagsterInstance.from_config(str(dagster_home))
    runs = instance.get_runs()
    assert len(runs) == 4
    for run in runs:
        assert not any(k in json.dumps(run.run_config) for k in keys)
        for record in instance.all_logs(run.run_id):
            assert not any(k in (record.user_message or "") for k in keys)
    instance.dispose()


# --------------------------------------------------------------------------- the example


@pytest.mark.azure  # run_with_emulators.py starts Azurite and the Key Vault stand-in itself
def test_the_azure_example_runs_with_one_command():
    """What `make azure-demo` runs: its own emulators, the real CLI, then a listing."""
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "azure_pandas" / "run_with_emulators.py")],
        capture_output=True,
        text=True,
        timeout=300,
        env=cli_env(),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    listing = out.split("in account odibicurated, container lake:\n", 1)[1].splitlines()
    blobs = [line.strip() for line in listing if line.startswith("  ")]
    assert blobs[:2] == ["gold/revenue_by_country.csv", "silver/customers.parquet"]
    assert blobs[2] == "silver/orders/_delta_log/00000000000000000000.json"
    assert blobs[3].startswith("silver/orders/part-") and len(blobs) == 4
    assert "Key Vault: 1 secret read(s), 1 token(s)" in out
    assert "done: 1 pipeline(s) succeeded" in out


def test_the_azure_example_computes_revenue_per_country(
    lake: Lake, example: Any, monkeypatch: pytest.MonkeyPatch
):
    project = example("azure_pandas")
    lake.keyvault.set_secret("odibiraw-key", lake.key(RAW))
    lake.azurite.create_container(RAW, "landing")
    lake.azurite.delete_container(CUR, "lake")
    lake.azurite.create_container(CUR, "lake")
    for f in (project / "data").iterdir():
        lake.azurite.upload_blob(RAW, "landing", f"retail/{f.name}", f.read_bytes())
    monkeypatch.setenv("ODIBI_KEY_VAULT_URL", lake.keyvault.url)
    monkeypatch.setenv("AZURITE_BLOB_ENDPOINT_ODIBIRAW", lake.azurite.blob_endpoint(RAW))
    monkeypatch.setenv("AZURITE_BLOB_ENDPOINT_ODIBICURATED", lake.azurite.blob_endpoint(CUR))
    monkeypatch.setenv("AZURITE_KEY_ODIBICURATED", lake.key(CUR))
    result = run_job(project, "orders")
    assert result.success, failure_text(result)

    orders = pd.read_csv(project / "data" / "orders.csv")
    customers = pd.read_json(project / "data" / "customers.jsonl", lines=True)
    paid = orders[orders.status == "paid"].assign(amount=lambda d: d.quantity * d.unit_price)
    customers["country"] = customers.country.str.strip().str.upper()
    expected = (
        paid.merge(customers, on="customer_id")
        .groupby("country", dropna=False)  # a customer without a country is a group too
        .agg(orders=("order_id", "count"), revenue=("amount", "sum"))
        .reset_index()
    )
    got = pd.read_csv(
        io.BytesIO(lake.azurite.read_blob(CUR, "lake", "gold/revenue_by_country.csv"))
    )
    merged = got.merge(expected, on="country", suffixes=("", "_expected"))
    assert len(merged) == len(expected) == len(got)
    assert (merged.orders == merged.orders_expected).all()
    assert (merged.revenue - merged.revenue_expected).abs().max() < 0.01
    silver = DeltaTable("az://lake/silver/orders", storage_options=lake.delta_options(CUR))
    assert silver.to_pandas().order_id.sort_values().tolist() == sorted(paid.order_id)


@pytest.mark.slow
def test_multiprocess_run_with_a_story_on_adls(lake: Lake, monkeypatch: pytest.MonkeyPatch):
    """Each step process sets up the pipeline's connections itself; intermediate results
    travel between processes; the story is written through an Azure connection."""
    lake.upload("in/orders.csv", ORDERS.to_csv(index=False).encode())
    project = lake.project(
        """executor: multiprocess
story: {connection: cur, path: stories}
pipelines:
  - pipeline: p
    nodes:
      - name: src
        read: {connection: raw, path: in/orders.csv, format: csv}
      - name: positive
        depends_on: [src]
        transform: {steps: ["SELECT * FROM src WHERE amount > 0"]}
      - name: by_customer
        depends_on: [positive]
        transform: {steps: ["SELECT customer, SUM(amount) AS total FROM positive GROUP BY customer ORDER BY customer"]}
        write: {connection: cur, path: by_customer.parquet, format: parquet}
"""
    )
    defs = odibi_dagster.load_definitions(project)
    monkeypatch.setenv("ODIBI_TEST_PROJECT", str(project))
    # (not entered as a context manager: that would set the resources up once more here)
    result = dg.execute_job(dg.reconstructable(_job_from_env), instance=dg.DagsterInstance.get())
    assert result.success, [e.message for e in result.all_events if e.is_failure]
    assert defs.resolve_job_def("p").executor_def.name == "multiprocess"
    got = pq.read_table(io.BytesIO(lake.read_blob("gold/by_customer.parquet"))).to_pandas()
    assert got.to_dict("list") == {"customer": ["ann", "cy"], "total": [17.75, 12.0]}
    stories = [b for b in lake.blobs() if b.startswith("gold/stories/")]
    story = json.loads(lake.read_blob(next(b for b in stories if b.endswith("story.json"))))
    assert sorted(n["node"] for n in story["nodes"]) == ["by_customer", "positive", "src"]
    assert {n["status"] for n in story["nodes"]} == {"success"}
    src = next(n for n in story["nodes"] if n["node"] == "src")
    assert src["rows"] == len(ORDERS) and src["read"]["uri"].startswith("abfss://")
    assert src["read"]["uri"].endswith("/in/orders.csv")
    # two step processes, each fetching the raw secret once (the other key is an env var)
    assert lake.keyvault.secret_gets == 2


def _job_from_env() -> dg.JobDefinition:
    return odibi_dagster.load_definitions(os.environ["ODIBI_TEST_PROJECT"]).resolve_job_def("p")


def test_cli_run_names_an_unset_key_variable_only_for_the_pipelines_it_runs(
    lake: Lake, monkeypatch: pytest.MonkeyPatch, dagster_home: Path
):
    (lake.tmp / "data").mkdir()
    pd.DataFrame({"a": [1, 2]}).to_csv(lake.tmp / "data" / "a.csv", index=False)
    project = lake.project(
        f"""  disk: {{type: local, base_path: "{lake.tmp / "data"}"}}
pipelines:
  - pipeline: local_only
    nodes:
      - name: a
        read: {{connection: disk, path: a.csv, format: csv}}
      - name: b
        depends_on: [a]
        write: {{connection: disk, path: b.csv, format: csv}}
  - pipeline: to_azure
    nodes:
      - name: a
        read: {{connection: disk, path: a.csv, format: csv}}
      - name: b
        depends_on: [a]
        write: {{connection: cur, path: b.csv, format: csv}}
"""
    )
    monkeypatch.delenv(lake.env_var)
    ok = run_cli("odibi-dagster", "run", project, "--pipeline", "local_only")
    assert ok.returncode == 0, ok.stderr
    assert (lake.tmp / "data" / "b.csv").read_text() == "a\n1\n2\n"
    bad = run_cli("odibi-dagster", "run", project)
    assert bad.returncode == 1
    assert bad.stderr.strip().splitlines() == [
        f"connection 'cur' (account '{CUR}'): account_key names the environment variable "
        f"{lake.env_var}, which is not set. Export it with the storage account key, or use "
        "auth_mode: key_vault."
    ]
    assert lake.blobs() == []
    # set, but in production: the run goes ahead with a warning first
    warned = run_cli(
        "odibi-dagster",
        "run",
        project,
        "--pipeline",
        "to_azure",
        **{lake.env_var: lake.key(CUR), "ODIBI_ENV": "prod"},
    )
    assert warned.returncode == 0, warned.stderr
    assert warned.stderr.splitlines()[0] == (
        f"warning: connection 'cur' (account '{CUR}', container '{lake.cur_container}') uses "
        "auth_mode direct_key with ODIBI_ENV=prod: keep production keys in Key Vault "
        "(auth_mode: key_vault)."
    )
    assert lake.read_blob("gold/b.csv") == b"a\n1\n2\n"


def test_transient_vault_errors_are_retried_with_backoff(lake: Lake):
    lake.keyvault.fail_next(2, status=503)
    assert lake.resource(RAW).get_storage_key() == lake.key(RAW)
    statuses = [status for _, path, status in lake.keyvault.requests if status != 401]
    assert statuses == [503, 503, 200]


def test_a_vault_that_hangs_times_out_with_a_message(lake: Lake, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(vault_module, "KEY_VAULT_TIMEOUT", 0.5)
    monkeypatch.setattr(vault_module, "KEY_VAULT_RETRIES", 1)
    monkeypatch.setattr(vault_module, "KEY_VAULT_BACKOFF", 0.1)
    lake.keyvault.fail_next(2, status=200, delay=2.0)
    with pytest.raises(OdibiConnectionError) as err:
        lake.resource(RAW).get_storage_key()
    assert (
        f"connection 'raw' (account '{RAW}', container '{lake.raw_container}'): could not read "
        f"secret '{lake.secret}' in Key Vault {lake.keyvault.url}: the vault did not answer in "
        "time (0.5 s per attempt, 2 attempts"
    ) in str(err.value)


def test_no_identity_for_default_azure_credential(lake: Lake, monkeypatch: pytest.MonkeyPatch):
    for var in ("IDENTITY_ENDPOINT", "IDENTITY_HEADER"):
        monkeypatch.delenv(var)
    monkeypatch.setenv("HOME", str(lake.tmp))  # no developer sign-in cached either
    clear_secret_cache()
    with pytest.raises(OdibiConnectionError) as err:
        lake.resource(RAW).get_storage_key()
    text = str(err.value)
    assert text.startswith(
        f"connection 'raw' (account '{RAW}', container '{lake.raw_container}'): could not read "
        f"secret '{lake.secret}' in Key Vault {lake.keyvault.url}: DefaultAzureCredential found "
        "no identity to sign in with ("
    )
    assert "Locally run `az login`" in text
    clear_secret_cache()  # drop the credential built without an identity


def test_a_connection_string_stored_as_the_key_is_named_as_such(lake: Lake):
    lake.keyvault.set_secret(lake.secret, lake.azurite.connection_string(RAW))
    text = assert_failed_before_writing(lake, run_job(lake.project(SIMPLE)))
    assert (
        f"connection 'raw' (account '{RAW}', container '{lake.raw_container}'): the value of "
        f"secret '{lake.secret}' in Key Vault {lake.keyvault.url} is not a storage account key"
    ) in text
    assert "It looks like a connection string: store only the AccountKey part." in text
    assert lake.key(RAW) not in text


@odibi_dagster.transform
def drop_the_target_container(context: Any, account: str, container: str, conn_str_var: str):
    """A step that removes the container its node is about to write to (a storage
    failure in the middle of a run, after the connections were checked)."""
    from azure.storage.blob import BlobServiceClient

    BlobServiceClient.from_connection_string(os.environ[conn_str_var]).delete_container(container)
    return context.get("src")


def test_a_storage_failure_inside_a_node_names_the_node_and_address(
    lake: Lake, monkeypatch: pytest.MonkeyPatch
):
    lake.upload("in/orders.csv", ORDERS.to_csv(index=False).encode())
    monkeypatch.setenv("ODIBI_TEST_CUR_CONN", lake.azurite.connection_string(CUR))
    project = lake.project(
        f"""pipelines:
  - pipeline: p
    nodes:
      - name: src
        read: {{connection: raw, path: in/orders.csv, format: csv}}
      - name: out
        depends_on: [src]
        transform:
          steps:
            - function: drop_the_target_container
              params: {{account: {CUR}, container: {lake.cur_container}, conn_str_var: ODIBI_TEST_CUR_CONN}}
        write: {{connection: cur, path: out.parquet, format: parquet}}
"""
    )
    result = run_job(project)
    assert not result.success
    text = failure_text(result)
    head = (
        f"node 'out' ({project}:9): writing abfss://{lake.cur_container}@{CUR}.dfs.core."
        "windows.net/gold/out.parquet failed: "
    )
    [message] = {line[line.index(head) :] for line in text.splitlines() if head in line}
    assert "ContainerNotFound" in message or "does not exist" in message, message
    assert "\x1b[" not in message
    text = failure_text(result)
    assert lake.key(CUR) not in text and lake.key(RAW) not in text


def test_a_users_own_asset_loads_odibi_assets_from_both_kinds_of_connection(
    lake: Lake, tmp_path: Path
):
    """A hand-written asset downstream of compiled ones, materialized on its own: a local
    connection needs nothing; an Azure one is required as a resource parameter."""
    lake.upload("in/orders.csv", ORDERS.to_csv(index=False).encode())
    (tmp_path / "disk").mkdir()
    project = lake.project(
        f"""  disk: {{type: local, base_path: "{tmp_path / "disk"}"}}
pipelines:
  - pipeline: p
    nodes:
      - name: src
        read: {{connection: raw, path: in/orders.csv, format: csv}}
      - name: on_disk
        depends_on: [src]
        write: {{connection: disk, path: orders.parquet, format: parquet}}
      - name: on_adls
        depends_on: [src]
        write: {{connection: cur, path: orders.parquet, format: parquet}}
"""
    )
    odibi = odibi_dagster.load_definitions(project)

    @dg.asset(
        ins={"orders": dg.AssetIn(key=["p", "on_disk"])}, io_manager_key="odibi_pandas_io_manager"
    )
    def disk_total(orders: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame({"total": [orders.amount.sum()]})

    @dg.asset(
        ins={"orders": dg.AssetIn(key=["p", "on_adls"])}, io_manager_key="odibi_pandas_io_manager"
    )
    def adls_total(orders: pd.DataFrame, cur: AzureADLS) -> pd.DataFrame:
        return pd.DataFrame({"total": [orders.amount.sum()]})

    defs = dg.Definitions.merge(odibi, dg.Definitions(assets=[disk_total, adls_total]))
    instance = dg.DagsterInstance.get()
    assert defs.resolve_job_def("p").execute_in_process(instance=instance).success
    job = defs.resolve_implicit_global_asset_job_def()
    for name in ("disk_total", "adls_total"):
        result = job.execute_in_process(
            instance=instance, asset_selection=[dg.AssetKey(name)], raise_on_error=False
        )
        assert result.success, failure_text(result)
        mats = result.asset_materializations_for_node(name)
        assert mats[0].metadata["dagster/row_count"].value == 1


def test_a_stateful_read_of_a_delta_table_on_adls_reads_each_batch_once(lake: Lake):
    table = f"az://{lake.raw_container}/in/events"

    def land(ids: list[int]) -> None:
        write_deltalake(
            table, pd.DataFrame({"id": ids}), mode="append", storage_options=lake.delta_options(RAW)
        )

    project = lake.project(
        """
pipelines:
  - pipeline: p
    nodes:
      - name: events
        read:
          connection: raw
          path: in/events
          format: delta
          incremental: {mode: stateful, column: id}
        write: {connection: cur, path: out/events, format: delta, mode: append}
"""
    )
    rows_read = []
    for ids in ([1, 2, 3], [4, 5], [6]):
        land(ids)
        result = run_job(project)
        assert result.success, failure_text(result)
        (mat,) = result.asset_materializations_for_node("p__events")
        rows_read.append(mat.metadata["odibi/rows_read"].value)
        assert mat.metadata["odibi/high_water_mark"].value["value"] == ids[-1]
    assert rows_read == [3, 2, 1]
    out = DeltaTable(
        f"az://{lake.cur_container}/gold/out/events", storage_options=lake.delta_options(CUR)
    )
    assert sorted(out.to_pandas()["id"]) == [1, 2, 3, 4, 5, 6]
