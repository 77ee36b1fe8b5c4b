"""The local Azure emulators, driven by the real SDKs (tests of the stand-ins themselves)."""

from __future__ import annotations

import base64
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
from azure.core.credentials import AccessToken
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceNotFoundError,
)
from azure.identity import DefaultAzureCredential
from azure.keyvault.secrets import SecretClient
from azure.storage.blob import BlobServiceClient
from deltalake import DeltaTable, write_deltalake

from odibi_dagster_tests.emulators import (
    IDENTITY_OBJECT_ID,
    AzuriteService,
    KeyVaultService,
    fixtures,
)
from odibi_dagster_tests.emulators.fixtures import CLEARED_ENV, random_key
from odibi_dagster_tests.support.paths import REPO

# Session fixtures (also fine when conftest registers the plugin: the services are shared).
azurite = fixtures.azurite
keyvault = fixtures.keyvault


def client(kv: KeyVaultService) -> SecretClient:
    return SecretClient(kv.url, DefaultAzureCredential(), verify_challenge_resource=False)


def test_get_and_set_secret_with_default_credential(keyvault: KeyVaultService) -> None:
    keyvault.set_secret("db-password", "s3cr3t")
    keyvault.reset_counts()
    c = client(keyvault)
    assert c.get_secret("db-password").value == "s3cr3t"
    # an unauthenticated challenge first (unless the SDK already cached this vault's
    # challenge earlier in the process), then one token, then the real GET
    assert [status for _, _, status in keyvault.requests] in ([401, 200], [200])
    assert (keyvault.secret_gets, keyvault.token_requests) == (1, 1)

    first = c.set_secret("api-key", "v1")
    c.set_secret("api-key", "v2")
    assert c.get_secret("api-key").value == "v2"
    assert c.get_secret("api-key", first.properties.version).value == "v1"
    assert ("PUT", "/secrets/api-key", 200) in keyvault.requests
    assert keyvault.secret_gets == 3 and keyvault.token_requests == 1

    keyvault.delete_secret("api-key")
    with pytest.raises(ResourceNotFoundError):
        c.get_secret("api-key")


def test_token_names_the_identity(keyvault: KeyVaultService) -> None:
    token = DefaultAzureCredential().get_token("https://vault.azure.net/.default").token
    payload = token.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    assert claims["oid"] == IDENTITY_OBJECT_ID
    assert claims["aud"] == "https://vault.azure.net"
    assert {"tid", "appid", "exp"} <= claims.keys()


def test_missing_secret_is_404(keyvault: KeyVaultService) -> None:
    with pytest.raises(ResourceNotFoundError) as err:
        client(keyvault).get_secret("no-such-secret")
    assert err.value.status_code == 404
    assert err.value.error is not None and err.value.error.code == "SecretNotFound"
    assert "A secret with (name/id) no-such-secret was not found in this key vault." in str(
        err.value
    )


@pytest.mark.parametrize(
    ("rbac", "inner", "text"),
    [
        (
            True,
            "ForbiddenByRbac",
            "Action: 'Microsoft.KeyVault/vaults/secrets/getSecret/action'",
        ),
        (False, "ForbiddenByPolicy", "does not have secrets get permission on key vault"),
    ],
)
def test_forbidden_secret_is_403(
    keyvault: KeyVaultService, rbac: bool, inner: str, text: str
) -> None:
    keyvault.set_secret("locked", "x")
    keyvault.forbid("locked", rbac=rbac)
    c = client(keyvault)
    try:
        with pytest.raises(HttpResponseError) as err:
            c.get_secret("locked")
    finally:
        keyvault.allow("locked")
    assert err.value.status_code == 403
    assert err.value.error is not None and err.value.error.code == "Forbidden"
    assert f'"code": "{inner}"' in str(err.value)
    assert text in str(err.value) and f"oid={IDENTITY_OBJECT_ID}" in str(err.value)
    if rbac:
        assert "Caller is not authorized to perform action on resource." in str(err.value)
    assert c.get_secret("locked").value == "x"


def test_wrong_identity_header_fails_authentication(
    keyvault: KeyVaultService, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IDENTITY_HEADER", "not-the-header")
    keyvault.reset_counts()
    with pytest.raises(ClientAuthenticationError):
        client(keyvault).get_secret("anything")
    assert keyvault.token_requests >= 1 and keyvault.secret_gets == 0


def test_wrong_bearer_token_gets_the_challenge(keyvault: KeyVaultService) -> None:
    class Forged:
        def get_token(self, *scopes: str, **kwargs: object) -> AccessToken:
            return AccessToken("a.b.c", int(time.time()) + 3600)

    keyvault.reset_counts()
    c = SecretClient(keyvault.url, Forged(), verify_challenge_resource=False)  # type: ignore[arg-type]
    with pytest.raises(ClientAuthenticationError):
        c.get_secret("anything")
    assert {status for _, _, status in keyvault.requests} == {401}
    assert keyvault.secret_gets == 0


def test_adlfs_parquet_round_trip(azurite: AzuriteService) -> None:
    azurite.create_container("odibiraw", "landing")
    df = pd.DataFrame({"id": [1, 2, 3], "name": ["a", "b", "c"]})
    options = {"connection_string": azurite.connection_string("odibiraw")}
    df.to_parquet("abfs://landing/orders/part-0.parquet", storage_options=options)
    assert azurite.list_blobs("odibiraw", "landing", "orders/") == ["orders/part-0.parquet"]
    back = pd.read_parquet("abfs://landing/orders/part-0.parquet", storage_options=options)
    pd.testing.assert_frame_equal(back, df)
    assert azurite.read_blob("odibiraw", "landing", "orders/part-0.parquet")[:4] == b"PAR1"


def test_delta_round_trip(azurite: AzuriteService) -> None:
    account = "odibicurated"
    azurite.create_container(account, "curated")
    azurite.create_container(account, "curated")  # idempotent
    options = {
        "azure_storage_account_name": account,
        "azure_storage_account_key": azurite.accounts[account],
        "azure_storage_endpoint": azurite.blob_endpoint(account),
        "allow_http": "true",
    }
    df = pd.DataFrame({"id": [1, 2], "amount": [9.5, 3.25]})
    write_deltalake("az://curated/orders", df, storage_options=options)
    write_deltalake("az://curated/orders", df, storage_options=options, mode="append")
    table = DeltaTable("az://curated/orders", storage_options=options)
    assert table.version() == 1
    assert len(table.to_pandas()) == 4
    assert "orders/_delta_log/00000000000000000001.json" in azurite.list_blobs(
        account, "curated", "orders/_delta_log/"
    )
    azurite.delete_container(account, "curated")
    azurite.delete_container(account, "curated")  # idempotent


def test_wrong_key_is_403(azurite: AzuriteService) -> None:
    for key in (random_key(), azurite.accounts["odibicurated"]):
        conn = azurite.connection_string("odibiraw", key=key)
        with pytest.raises(HttpResponseError) as err:
            list(BlobServiceClient.from_connection_string(conn).list_containers())
        assert err.value.status_code == 403
        assert err.value.error_code == "AuthorizationFailure"


def _read_line(proc: subprocess.Popen[str], timeout: float) -> str:
    stdout = proc.stdout
    assert stdout is not None
    result: list[str] = []
    reader = threading.Thread(target=lambda: result.append(stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    return result[0] if result else ""


def _refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return True
    return False


CHECK = """
import os
from azure.identity import DefaultAzureCredential
from azure.keyvault.secrets import SecretClient
from azure.storage.blob import BlobServiceClient
c = SecretClient(os.environ["ODIBI_KEY_VAULT_URL"], DefaultAzureCredential(),
                 verify_challenge_resource=False)
print(c.get_secret("greeting").value)
conn = ("DefaultEndpointsProtocol=http;AccountName=acctb;"
        f"AccountKey={os.environ['AZURITE_KEY_ACCTB']};"
        f"BlobEndpoint={os.environ['AZURITE_BLOB_ENDPOINT_ACCTB']};")
print(",".join(c.name for c in BlobServiceClient.from_connection_string(conn).list_containers()))
"""


@pytest.mark.azure  # the emulators CLI starts Azurite and the Key Vault stand-in
def test_cli_up_writes_env_file_and_stops_on_sigterm(tmp_path: Path) -> None:
    env_file = tmp_path / "emulators.env"
    cmd = [
        sys.executable,
        "-m",
        "odibi_dagster_tests.emulators",
        "up",
        "--dir",
        str(tmp_path / "work"),
        "--account",
        f"accta={random_key()}",
        "--account",
        "acctb=",
        "--secret",
        "greeting=hello world",
        "--container",
        "acctb/bronze",
        "--env-file",
        str(env_file),
    ]
    with subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, text=True) as proc:
        try:
            assert _read_line(proc, 60).strip() == "emulators ready"
            env: dict[str, str] = {}
            for line in env_file.read_text().splitlines():
                export, assignment = shlex.split(line)
                assert export == "export"
                name, _, value = assignment.partition("=")
                env[name] = value
            assert {
                "IDENTITY_ENDPOINT",
                "IDENTITY_HEADER",
                "REQUESTS_CA_BUNDLE",
                "ODIBI_KEY_VAULT_URL",
                "AZURITE_BLOB_PORT",
                "AZURITE_BLOB_ENDPOINT_ACCTA",
                "AZURITE_BLOB_ENDPOINT_ACCTB",
                "AZURITE_KEY_ACCTB",
            } <= env.keys()
            assert "AZURITE_KEY_ACCTA" not in env
            child_env = {k: v for k, v in os.environ.items() if k not in CLEARED_ENV} | env
            out = subprocess.run(
                [sys.executable, "-c", CHECK],
                env=child_env,
                capture_output=True,
                text=True,
                timeout=60,
                check=True,
            ).stdout.splitlines()
            assert out == ["hello world", "bronze"]
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(20) == 0
            assert _refused(int(env["AZURITE_BLOB_PORT"]))
        finally:
            if proc.poll() is None:  # SIGTERM first: a SIGKILL would leave Azurite behind
                proc.terminate()
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
