"""The azure_pandas example in the real dagster-webserver, against the emulators.

What a user of the web UI sees: the connection resources show the key's environment
variable by name, never its value; a run launched from the UI reads one account and
writes the other; a broken connection fails the run with one readable message.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from typing import Any

import pytest

from odibi_dagster_tests.emulators.azurite import AzuriteService
from odibi_dagster_tests.emulators.keyvault import KeyVaultService
from odibi_dagster_tests.support import webserver as ws
from odibi_dagster_tests.support.paths import EXAMPLES

LOCATION = "azure_pandas"
RAW, CUR = "odibiraw", "odibicurated"

RESOURCE_QUERY = """
query Resource($selector: ResourceSelector!) {
  topLevelResourceDetailsOrError(resourceSelector: $selector) {
    __typename
    ... on ResourceDetails {
      name
      configuredValues { key value type }
    }
    ... on PythonError { message }
  }
}
"""


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory, azurite: AzuriteService, keyvault: KeyVaultService
) -> Iterator[tuple[ws.Webserver, AzuriteService, KeyVaultService]]:
    work = tmp_path_factory.mktemp("webserver_azure")
    project = work / "azure_pandas"
    shutil.copytree(EXAMPLES / "azure_pandas", project, ignore=shutil.ignore_patterns("outputs"))
    (work / "workspace.yaml").write_text(
        "load_from:\n  - python_file:\n      relative_path: azure_pandas/definitions.py\n"
        f"      location_name: {LOCATION}\n      working_directory: azure_pandas\n"
    )
    keyvault.set_secret("odibiraw-key", azurite.accounts[RAW])
    for account, container in ((RAW, "landing"), (CUR, "lake")):
        azurite.delete_container(account, container)
        azurite.create_container(account, container)
    for f in (project / "data").iterdir():
        azurite.upload_blob(RAW, "landing", f"retail/{f.name}", f.read_bytes())
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ODIBI_KEY_VAULT_URL", keyvault.url)
        mp.setenv("AZURITE_BLOB_ENDPOINT_ODIBIRAW", azurite.blob_endpoint(RAW))
        mp.setenv("AZURITE_BLOB_ENDPOINT_ODIBICURATED", azurite.blob_endpoint(CUR))
        mp.setenv("AZURITE_KEY_ODIBICURATED", azurite.accounts[CUR])
        server = ws.start_webserver(
            work / "workspace.yaml",
            ws.make_dagster_home(work / "dagster_home"),
            log_path=work / "webserver.log",
            locations=[LOCATION],
        )
    try:
        yield server, azurite, keyvault
    finally:
        server.stop()


def resource(server: ws.Webserver, name: str) -> dict[str, Any]:
    selector = {
        "repositoryLocationName": LOCATION,
        "repositoryName": ws.REPOSITORY_NAME,
        "resourceName": name,
    }
    answer = server.graphql.query(RESOURCE_QUERY, {"selector": selector})
    details = answer["topLevelResourceDetailsOrError"]
    assert details["__typename"] == "ResourceDetails", details
    return dict(details)


def run_messages(server: ws.Webserver, run_id: str) -> list[str]:
    """Each event's message, then the error it carries (as the UI shows it), if any."""
    answer = server.graphql.query(ws.RUN_FAILURE_EVENTS, {"runId": run_id})
    events = answer["logsForRun"]["events"]
    out = []
    for e in events:
        out.append(e.get("message") or "")
        error = e.get("error")
        if error:
            out.append(error["message"])
            out.extend(c["message"] for c in error["causes"])
    return out


def test_the_ui_shows_the_key_variable_by_name_never_its_value(served: Any) -> None:
    server, azurite, _ = served
    curated = resource(server, "curated")
    values = {v["key"]: v for v in curated["configuredValues"]}
    assert values["account_key"]["type"] == "ENV_VAR"
    assert values["account_key"]["value"] == "AZURITE_KEY_ODIBICURATED"
    assert values["account"]["value"] == json.dumps(CUR)
    raw = {v["key"]: v["value"] for v in resource(server, "raw")["configuredValues"]}
    assert raw["auth_mode"] == '"key_vault"' and raw["secret_name"] == '"odibiraw-key"'
    text = json.dumps([curated, raw])
    assert azurite.accounts[CUR] not in text and azurite.accounts[RAW] not in text


def test_a_run_launched_from_the_ui_moves_data_between_accounts(served: Any) -> None:
    server, azurite, _ = served
    run_id = ws.launch_run(server.graphql, LOCATION, "orders")
    status = ws.wait_for_run(server.graphql, run_id, timeout=180)
    assert status == "SUCCESS", run_messages(server, run_id)[-20:]
    blobs = azurite.list_blobs(CUR, "lake")
    assert "gold/revenue_by_country.csv" in blobs and "silver/customers.parquet" in blobs
    assert any(b.startswith("silver/orders/_delta_log/") for b in blobs)
    assert azurite.accounts[CUR] not in json.dumps(run_messages(server, run_id))


def test_a_forbidden_secret_fails_the_ui_run_with_one_readable_message(served: Any) -> None:
    server, azurite, keyvault = served
    azurite.delete_container(CUR, "lake")
    azurite.create_container(CUR, "lake")
    keyvault.forbid("odibiraw-key")
    try:
        run_id = ws.launch_run(server.graphql, LOCATION, "orders")
        status = ws.wait_for_run(server.graphql, run_id, timeout=180)
    finally:
        keyvault.allow("odibiraw-key")
    assert status == "FAILURE"
    messages = run_messages(server, run_id)
    wanted = (
        "connection 'raw' (account 'odibiraw', container 'landing'): could not read secret "
        f"'odibiraw-key' in Key Vault {keyvault.url}: access denied (403)"
    )
    assert any(wanted in m for m in messages), messages
    assert azurite.list_blobs(CUR, "lake") == []  # nothing was written
