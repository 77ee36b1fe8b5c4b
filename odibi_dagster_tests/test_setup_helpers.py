"""setup_helpers against the real emulators: Azurite for storage, the Key Vault stand-in with
its managed-identity token endpoint for DefaultAzureCredential."""

from __future__ import annotations

import dataclasses
import io
import textwrap
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from odibi_dagster import AzureADLS, LocalStorage
from odibi_dagster.onboarding.identity import _credential_kind
from odibi_dagster.resources import keyvault as vault_module
from odibi_dagster.resources.keyvault import clear_secret_cache
from odibi_dagster.setup_helpers import (
    ConnectionStatus,
    check_connections,
    get_databricks_identity_info,
    print_connection_report,
    print_keyvault_setup_instructions,
)
from odibi_dagster_tests.emulators.azurite import AzuriteService
from odibi_dagster_tests.emulators.fixtures import azurite, keyvault  # noqa: F401
from odibi_dagster_tests.emulators.keyvault import (
    IDENTITY_CLIENT_ID,
    IDENTITY_OBJECT_ID,
    TENANT_ID,
    KeyVaultService,
)

VAULT = "kv"


@pytest.fixture(autouse=True)
def _clean_process(keyvault: KeyVaultService, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    """Each test starts off Databricks, with no cached secret and a credential built now
    (so it sees the emulator's IDENTITY_ENDPOINT even if another test built one earlier)."""
    for name in ("DATABRICKS_RUNTIME_VERSION", "DATABRICKS_HOST"):
        monkeypatch.delenv(name, raising=False)
    clear_secret_cache()
    keyvault.reset_counts()


def adls(
    azurite: AzuriteService,  # noqa: F811
    keyvault: KeyVaultService,  # noqa: F811
    account: str,
    container: str,
    secret: str,
    name: str,
) -> AzureADLS:
    return AzureADLS(
        account=account,
        container=container,
        key_vault_name=VAULT,
        key_vault_url=keyvault.url,
        secret_name=secret,
        blob_endpoint=azurite.blob_endpoint(account),
        connection_name=name,
    )


class _Conf:
    def __init__(self, values: dict[str, str]) -> None:
        self.values = values

    def get(self, key: str, default: Any = None) -> Any:
        return self.values.get(key, default)


class _Spark:
    """Just the ``spark.conf.get`` a Databricks session answers."""

    def __init__(self, values: dict[str, str]) -> None:
        self.conf = _Conf(values)


# --------------------------------------------------------------------------- identity


def test_identity_off_databricks_reads_the_emulator_token(keyvault: KeyVaultService) -> None:  # noqa: F811
    info = get_databricks_identity_info()

    assert info["on_databricks"] is False
    assert info["runtime_version"] is None
    assert info["workspace_url"] is None and info["cluster_name"] is None
    assert info["credential"] == "managed identity"
    assert info["object_id"] == IDENTITY_OBJECT_ID
    assert info["app_id"] == IDENTITY_CLIENT_ID
    assert info["tenant_id"] == TENANT_ID
    assert info["upn"] is None
    assert info["token_error"] is None
    assert keyvault.token_requests == 1  # a real token was fetched
    message = info["message"]
    assert message.startswith("Not running on Databricks")
    assert "local run" in message and "managed identity" in message
    assert IDENTITY_OBJECT_ID in message
    assert "\n" not in message


def test_identity_on_databricks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABRICKS_RUNTIME_VERSION", "15.4")
    monkeypatch.setenv("DATABRICKS_HOST", "https://adb-from-env.azuredatabricks.net")
    spark = _Spark(
        {
            "spark.databricks.workspaceUrl": "adb-123.4.azuredatabricks.net",
            "spark.databricks.clusterUsageTags.clusterName": "odibi-etl",
        }
    )

    info = get_databricks_identity_info(spark)

    assert info["on_databricks"] is True
    assert info["runtime_version"] == "15.4"
    assert info["workspace_url"] == "adb-123.4.azuredatabricks.net"  # Spark conf wins
    assert info["cluster_name"] == "odibi-etl"
    assert info["object_id"] == IDENTITY_OBJECT_ID
    assert info["message"].startswith("Running on Databricks (runtime 15.4")
    assert "cluster 'odibi-etl'" in info["message"]
    assert "Not running" not in info["message"]

    # No Spark session: the workspace comes from DATABRICKS_HOST, the cluster is unknown.
    info = get_databricks_identity_info()
    assert info["workspace_url"] == "https://adb-from-env.azuredatabricks.net"
    assert info["cluster_name"] is None


def test_identity_token_failure_is_one_line_and_instructions_use_a_placeholder(
    keyvault: KeyVaultService,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The emulator's token endpoint rejects a wrong identity header (401).
    monkeypatch.setenv("IDENTITY_HEADER", "not-the-right-header")

    info = get_databricks_identity_info()

    assert keyvault.token_requests >= 1
    assert info["object_id"] is None and info["app_id"] is None
    error = info["token_error"]
    assert error and "\n" not in error and "Traceback" not in error
    assert "could not get a Key Vault token" in info["message"]
    assert info["message"].startswith("Not running on Databricks")

    text = print_keyvault_setup_instructions(VAULT, ["raw-key"], file=io.StringIO())
    assert "--assignee-object-id <object-id> " in text
    assert "az ad signed-in-user show --query id -o tsv" in text
    assert "get_databricks_identity_info()" in text


def test_credential_kind_follows_default_azure_credential_order() -> None:
    sp = {"AZURE_CLIENT_ID": "c", "AZURE_TENANT_ID": "t", "AZURE_CLIENT_SECRET": "s"}
    assert _credential_kind(sp) == "service principal (environment)"
    assert _credential_kind({**sp, "IDENTITY_ENDPOINT": "x"}) == "service principal (environment)"
    assert _credential_kind({"AZURE_FEDERATED_TOKEN_FILE": "/f"}) == "workload identity"
    assert _credential_kind({"IDENTITY_ENDPOINT": "http://x"}) == "managed identity"
    assert _credential_kind({"MSI_ENDPOINT": "http://x"}) == "managed identity"
    assert _credential_kind({}) == "Azure CLI / developer login"


# --------------------------------------------------------------------------- instructions


def test_keyvault_instructions_rbac_use_the_running_identity(keyvault: KeyVaultService) -> None:  # noqa: F811
    out = io.StringIO()

    text = print_keyvault_setup_instructions(
        "kv-odibi",
        ["raw-key", "curated-key"],
        storage_accounts=["odibiraw", "odibicurated"],
        resource_group="rg-data",
        file=out,
    )

    assert out.getvalue() == text
    commands = [line for line in text.splitlines() if line.startswith("az ")]
    assert commands == [
        'az role assignment create --role "Key Vault Secrets User" --assignee-object-id '
        f"{IDENTITY_OBJECT_ID} --assignee-principal-type ServicePrincipal "
        "--scope $(az keyvault show --name kv-odibi --query id -o tsv)",
        "az keyvault secret set --vault-name kv-odibi --name raw-key --value "
        '"$(az storage account keys list --account-name odibiraw --resource-group rg-data '
        '--query [0].value -o tsv)"',
        "az keyvault secret set --vault-name kv-odibi --name curated-key --value "
        '"$(az storage account keys list --account-name odibicurated --resource-group rg-data '
        '--query [0].value -o tsv)"',
    ]
    assert keyvault.token_requests == 1  # the object id came from a real token
    assert all(line.startswith(("#", "az ")) for line in text.splitlines())


def test_keyvault_instructions_access_policy_with_given_object_id(
    keyvault: KeyVaultService,  # noqa: F811
) -> None:
    text = print_keyvault_setup_instructions(
        "kv-legacy",
        object_id="0000-oid",
        storage_accounts=["lakeraw"],
        rbac=False,
        file=io.StringIO(),
    )

    assert (
        "az keyvault set-policy --name kv-legacy --object-id 0000-oid --secret-permissions get"
    ) in text
    assert "role assignment" not in text
    # No secret name given: it defaults to <account>-key; the resource group to a placeholder.
    assert (
        "az keyvault secret set --vault-name kv-legacy --name lakeraw-key --value "
        '"$(az storage account keys list --account-name lakeraw '
        '--resource-group <resource-group> --query [0].value -o tsv)"'
    ) in text
    assert keyvault.token_requests == 0  # an explicit object id needs no identity lookup


def test_keyvault_instructions_print_to_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    text = print_keyvault_setup_instructions(VAULT, object_id="abc")
    assert capsys.readouterr().out == text
    assert "secret set" not in text  # no accounts, no secrets: only the grant


# --------------------------------------------------------------------------- checks


def test_check_connections_shares_one_fetch_and_explains_a_denied_secret(
    azurite: AzuriteService,  # noqa: F811
    keyvault: KeyVaultService,  # noqa: F811
) -> None:
    for account, container in (("odibiraw", "sh-landing"), ("odibiraw", "sh-archive")):
        azurite.create_container(account, container)
    azurite.create_container("odibicurated", "sh-gold")
    keyvault.set_secret("sh-raw-key", azurite.accounts["odibiraw"])
    keyvault.set_secret("sh-curated-key", azurite.accounts["odibicurated"])
    keyvault.forbid("sh-curated-key")
    clear_secret_cache()
    keyvault.reset_counts()
    conns = {
        "raw_landing": adls(
            azurite, keyvault, "odibiraw", "sh-landing", "sh-raw-key", "raw_landing"
        ),
        "curated": adls(azurite, keyvault, "odibicurated", "sh-gold", "sh-curated-key", "curated"),
        "raw_archive": adls(
            azurite, keyvault, "odibiraw", "sh-archive", "sh-raw-key", "raw_archive"
        ),
    }
    try:
        statuses = check_connections(conns)
    finally:
        keyvault.allow("sh-curated-key")

    assert [s.name for s in statuses] == ["raw_landing", "curated", "raw_archive"]
    assert [s.kind for s in statuses] == ["azure_adls"] * 3
    assert [s.ok for s in statuses] == [True, False, True]
    landing, curated, archive = statuses
    assert landing.detail.startswith(f"key from Key Vault {keyvault.url} secret 'sh-raw-key'; ")
    assert "container 'sh-landing' reachable" in landing.detail
    assert "container 'sh-archive' reachable" in archive.detail
    assert "connection 'curated'" in curated.detail
    assert "secret 'sh-curated-key'" in curated.detail and keyvault.url in curated.detail
    assert "access denied (403)" in curated.detail
    assert "Key Vault Secrets User" in curated.detail
    assert f"--name {VAULT} " in curated.detail
    assert all(s.seconds >= 0 for s in statuses)
    for s in statuses:
        for key in azurite.accounts.values():
            assert key not in s.detail

    # The shared secret was read from the vault once; the denied one was tried once.
    gets = [
        (path.rstrip("/"), status) for method, path, status in keyvault.requests if method == "GET"
    ]
    assert gets.count(("/secrets/sh-raw-key", 200)) == 1
    assert gets.count(("/secrets/sh-curated-key", 403)) == 1
    assert keyvault.secret_gets == 2
    assert vault_module.SECRETS.fetch_count == 1


def test_check_connections_local_paths(tmp_path: Path) -> None:
    good = tmp_path / "lake"
    good.mkdir()
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    missing = tmp_path / "nowhere"
    conns: dict[str, Any] = {
        "lake": LocalStorage(base_path=str(good), connection_name="lake"),
        "missing": LocalStorage(base_path=str(missing), connection_name="missing"),
        "io_manager": object(),  # not a connection: skipped
        "file": LocalStorage(base_path=str(a_file), connection_name="file"),
    }

    statuses = check_connections(conns, max_workers=1)

    assert [(s.name, s.kind, s.ok) for s in statuses] == [
        ("lake", "local", True),
        ("missing", "local", False),
        ("file", "local", False),
    ]
    assert statuses[0].detail == f"{good} exists and is writable"
    assert list(good.iterdir()) == []  # the write probe cleaned up after itself
    assert statuses[1].detail == (
        f"connection 'missing': base_path {missing} does not exist. "
        f"Create it (mkdir -p {missing}) or fix base_path."
    )
    assert "is not a directory" in statuses[2].detail
    assert not missing.exists()  # checking never creates anything

    with pytest.raises(ValueError, match="max_workers"):
        check_connections(conns, max_workers=0)
    with pytest.raises(TypeError, match="project path or a mapping"):
        check_connections(42)


def test_check_connections_from_a_project_file(
    tmp_path: Path,
    azurite: AzuriteService,  # noqa: F811
    keyvault: KeyVaultService,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    azurite.create_container("odibiraw", "sh-project")
    azurite.create_container("odibicurated", "sh-project")
    keyvault.set_secret("sh-project-raw", azurite.accounts["odibiraw"])
    curated_key = azurite.accounts["odibicurated"]
    monkeypatch.setenv("SH_CURATED_KEY", curated_key)
    (tmp_path / "lake").mkdir()
    project = tmp_path / "project.yaml"
    project.write_text(
        textwrap.dedent(
            f"""\
            project: setup_check
            engine: pandas
            connections:
              lake:
                type: local
                base_path: ./lake
              raw:
                type: azure_adls
                account: odibiraw
                container: sh-project
                key_vault_name: {VAULT}
                key_vault_url: {keyvault.url}
                secret_name: sh-project-raw
                blob_endpoint: {azurite.blob_endpoint("odibiraw")}
              curated:
                type: azure_adls
                account: odibicurated
                container: sh-project
                auth_mode: direct_key
                account_key: ${{SH_CURATED_KEY}}
                blob_endpoint: {azurite.blob_endpoint("odibicurated")}
            pipelines:
              - pipeline: copy
                nodes:
                  - name: src
                    read: {{connection: lake, path: in.csv, format: csv}}
                    write: {{connection: raw, path: out.csv, format: csv, mode: overwrite}}
            """
        )
    )

    statuses = check_connections(project)

    assert [(s.name, s.kind, s.ok) for s in statuses] == [
        ("lake", "local", True),
        ("raw", "azure_adls", True),
        ("curated", "azure_adls", True),
    ], [s.detail for s in statuses]
    assert statuses[0].detail == f"{tmp_path / 'lake'} exists and is writable"
    assert "secret 'sh-project-raw'" in statuses[1].detail
    assert statuses[2].detail.startswith("key from environment variable SH_CURATED_KEY; ")
    assert all(curated_key not in s.detail for s in statuses)

    # The key variable is read where the check runs, not when the project is loaded.
    monkeypatch.delenv("SH_CURATED_KEY")
    curated = check_connections(project)[2]
    assert not curated.ok
    assert "environment variable SH_CURATED_KEY, which is not set" in curated.detail


def test_check_connections_direct_key_from_env_var(
    azurite: AzuriteService,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    azurite.create_container("odibicurated", "sh-direct")
    key = azurite.accounts["odibicurated"]
    conn = AzureADLS(
        account="odibicurated",
        container="sh-direct",
        auth_mode="direct_key",
        account_key=dg.EnvVar("SH_DIRECT_KEY"),
        blob_endpoint=azurite.blob_endpoint("odibicurated"),
        connection_name="direct",
    )

    monkeypatch.delenv("SH_DIRECT_KEY", raising=False)
    [missing] = check_connections({"direct": conn})
    assert not missing.ok
    assert missing.detail == (
        "connection 'direct' (account 'odibicurated', container 'sh-direct'): account_key "
        "reads the environment variable SH_DIRECT_KEY, which is not set. Export it with the "
        "storage account key."
    )

    wrong_key = ("AAAA" if not key.startswith("AAAA") else "BBBB") + key[4:]
    monkeypatch.setenv("SH_DIRECT_KEY", wrong_key)
    [wrong] = check_connections({"direct": conn})
    assert not wrong.ok
    assert "rejected the account key" in wrong.detail
    assert wrong_key not in wrong.detail

    monkeypatch.setenv("SH_DIRECT_KEY", key)
    [good] = check_connections({"direct": conn})
    assert good.ok, good.detail
    assert good.detail.startswith("key from environment variable SH_DIRECT_KEY; ")
    assert key not in good.detail


# --------------------------------------------------------------------------- report


def test_connection_report_table() -> None:
    statuses = [
        ConnectionStatus("raw", "azure_adls", True, "key from Key Vault; container ok", 0.1234),
        ConnectionStatus("a_long_name", "local", False, "base_path /x does not exist", 2.0),
    ]
    out = io.StringIO()

    assert print_connection_report(statuses, file=out) is False

    lines = out.getvalue().splitlines()
    assert len(lines) == 4
    header, first, second, summary = lines
    assert header.split() == ["CONNECTION", "KIND", "STATUS", "SECONDS", "DETAIL"]
    assert first.split()[:4] == ["raw", "azure_adls", "OK", "0.12"]
    assert second.split()[:4] == ["a_long_name", "local", "FAILED", "2.00"]
    # Aligned columns: every field starts at the same offset on every row.
    for col in ("KIND", "STATUS", "DETAIL"):
        start = header.index(col)
        assert first[start - 2 : start] == "  " and first[start] != " "
        assert second[start - 2 : start] == "  " and second[start] != " "
    assert first.endswith("key from Key Vault; container ok")
    assert second.endswith("base_path /x does not exist")
    assert summary == "2 connection(s): 1 OK, 1 FAILED"

    out = io.StringIO()
    assert print_connection_report(statuses[:1], file=out) is True
    assert out.getvalue().splitlines()[-1] == "1 connection(s): 1 OK, 0 FAILED"
    assert print_connection_report([], file=io.StringIO()) is True

    with pytest.raises(dataclasses.FrozenInstanceError):
        statuses[0].ok = False  # type: ignore[misc]
