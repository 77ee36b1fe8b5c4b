"""Azure Key Vault: the process's secret cache, who the code runs as, and advice on errors.

One ``DefaultAzureCredential`` per process, one ``SecretClient`` per vault URL, and each
(vault, secret) fetched once and shared by every connection that names it
(:data:`SECRETS`). Nothing here imports the Azure SDK until a secret is asked for.
"""

from __future__ import annotations

import base64
import binascii
import json
import threading
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from odibi_dagster.errors import first_line

if TYPE_CHECKING:
    from azure.keyvault.secrets import SecretClient

# Hosts of the public and sovereign Key Vault clouds. The SDK checks that the resource
# a vault's challenge names matches the vault's host; for any other host (an emulator, a
# private DNS name) that check cannot pass and is switched off.
PUBLIC_KEY_VAULT_SUFFIXES = (
    ".vault.azure.net",
    ".vault.azure.cn",
    ".vault.usgovcloudapi.net",
    ".vault.microsoftazure.de",
    ".managedhsm.azure.net",
)

# Key Vault requests: per-attempt timeout (s), and retries with exponential backoff on
# transient failures (connection errors, 408, 429, 5xx) by the SDK's retry policy.
KEY_VAULT_TIMEOUT = 10.0
KEY_VAULT_RETRIES = 3
KEY_VAULT_BACKOFF = 0.5

SECRETS_USER_ROLE = "Key Vault Secrets User"


def default_vault_url(key_vault_name: str) -> str:
    return f"https://{key_vault_name}.vault.azure.net"


def is_public_vault_url(url: str) -> bool:
    host = (urlparse(url).hostname or "").lower()
    return host.endswith(PUBLIC_KEY_VAULT_SUFFIXES)


def vault_scope(vault_url: str) -> str:
    """The token scope for a vault: its cloud's Key Vault resource (public cloud otherwise)."""
    host = (urlparse(vault_url).hostname or "").lower()
    for suffix in PUBLIC_KEY_VAULT_SUFFIXES:
        if host.endswith(suffix):
            return f"https://{suffix.lstrip('.')}/.default"
    return "https://vault.azure.net/.default"


class SecretCache:
    """Secrets of this process: fetched once per (vault, secret), shared by all connections.

    Concurrent callers asking for the same secret wait for one fetch. ``fetch_count``
    counts the requests made (one per secret, unless a rotated key is fetched again).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._secret_locks: dict[tuple[str, str], threading.Lock] = {}
        self._secrets: dict[tuple[str, str], str] = {}
        self._clients: dict[str, SecretClient] = {}
        self._credential: Any = None
        self.fetch_count = 0

    def clear(self) -> None:
        """Forget every secret, client and credential (the next use starts over)."""
        with self._lock:
            self._secrets.clear()
            self._secret_locks.clear()
            self._clients.clear()
            self._credential = None
            self.fetch_count = 0

    def credential(self) -> Any:
        """The process's ``DefaultAzureCredential``, made at first use."""
        with self._lock:
            if self._credential is None:
                from azure.identity import DefaultAzureCredential

                self._credential = DefaultAzureCredential()
            return self._credential

    def client(self, vault_url: str) -> SecretClient:
        with self._lock:
            client = self._clients.get(vault_url)
        if client is not None:
            return client
        from azure.keyvault.secrets import SecretClient

        client = SecretClient(
            vault_url=vault_url,
            credential=self.credential(),
            verify_challenge_resource=is_public_vault_url(vault_url),
            retry_total=KEY_VAULT_RETRIES,
            retry_backoff_factor=KEY_VAULT_BACKOFF,
            connection_timeout=KEY_VAULT_TIMEOUT,
            read_timeout=KEY_VAULT_TIMEOUT,
        )
        with self._lock:
            return self._clients.setdefault(vault_url, client)

    def fetch(self, vault_url: str, secret_name: str, *, refresh: bool = False) -> str:
        """The value of ``secret_name`` in the vault (the SDK's exceptions pass through:
        :func:`explain_vault_error` turns them into advice)."""
        key = (vault_url.rstrip("/"), secret_name)
        with self._lock:
            lock = self._secret_locks.setdefault(key, threading.Lock())
        with lock:
            with self._lock:
                if not refresh and key in self._secrets:
                    return self._secrets[key]
            value = self.client(key[0]).get_secret(secret_name).value
            with self._lock:
                self.fetch_count += 1
                if value:
                    self._secrets[key] = value
            return value or ""

    def identity_claims(self, vault_url: str = "") -> dict[str, Any]:
        """Claims of the token the credential gets for Key Vault (best effort, {})."""
        try:
            token = self.credential().get_token(vault_scope(vault_url)).token
        except Exception:
            return {}
        return decode_token_claims(token)


# The process's one cache: every AzureADLS of the process reads its key through it.
SECRETS = SecretCache()


def clear_secret_cache() -> None:
    """Forget every secret, client and credential of this process."""
    SECRETS.clear()


def decode_token_claims(token: str) -> dict[str, Any]:
    """The claims of a JWT access token, read without verifying it (for messages only)."""
    try:
        payload = token.split(".")[1]
        payload += "=" * (-len(payload) % 4)
        claims = json.loads(base64.urlsafe_b64decode(payload))
    except (IndexError, ValueError, binascii.Error):
        return {}
    return claims if isinstance(claims, dict) else {}


def identity_summary(claims: dict[str, Any]) -> str:
    """Who ``DefaultAzureCredential`` runs as, from its Key Vault token's claims."""
    if not claims:
        return "the identity DefaultAzureCredential runs as"
    parts = [
        f"{k}={claims[k]}" for k in ("upn", "appid", "oid", "tid") if isinstance(claims.get(k), str)
    ]
    return f"the running identity ({', '.join(parts)})" if parts else "the running identity"


def explain_vault_error(
    exc: Exception, head: str, *, vault_url: str, vault: str, secret_name: str
) -> str:
    """What failed reading ``secret_name`` from the vault at ``vault_url`` (named ``vault``
    in the advice) and what to do, after ``head`` (which names the connection and the
    secret). Never holds the secret."""
    from azure.core.exceptions import (
        ClientAuthenticationError,
        HttpResponseError,
        ResourceNotFoundError,
        ServiceRequestError,
        ServiceResponseError,
    )

    status = getattr(exc, "status_code", None)
    if isinstance(exc, ResourceNotFoundError) or status == 404:
        return (
            f"{head}: the secret does not exist. Create it with the storage account key "
            f"(az keyvault secret set --vault-name {vault} --name {secret_name} "
            f"--value <key>), or fix secret_name / key_vault_name."
        )
    if isinstance(exc, ClientAuthenticationError) and status is None:
        return (
            f"{head}: DefaultAzureCredential found no identity to sign in with "
            f"({first_line(exc)}). Locally run `az login`; on Databricks or Azure, give "
            "the compute a managed identity or set AZURE_CLIENT_ID, AZURE_TENANT_ID and "
            "AZURE_CLIENT_SECRET for a service principal."
        )
    if status in (401, 403):
        claims = SECRETS.identity_claims(vault_url)
        who = identity_summary(claims)
        oid = claims.get("oid") if isinstance(claims.get("oid"), str) else "<object id>"
        kind = "User" if claims.get("upn") else "ServicePrincipal"
        return (
            f"{head}: access denied ({status}). {who[0].upper()}{who[1:]} may not read "
            f"secrets in vault '{vault}'. Grant it the '{SECRETS_USER_ROLE}' role on the "
            f'vault (az role assignment create --role "{SECRETS_USER_ROLE}" '
            f"--assignee-object-id {oid} --assignee-principal-type {kind} --scope "
            f"$(az keyvault show --name {vault} --query id -o tsv)), or, for a vault that "
            f"uses access policies, the secret 'get' permission (az keyvault set-policy "
            f"--name {vault} --object-id {oid} --secret-permissions get)."
        )
    if isinstance(exc, ServiceRequestError):
        return (
            f"{head}: the vault could not be reached ({first_line(exc)}). Check "
            "key_vault_name / key_vault_url, DNS and the network path to the vault "
            "(firewall, private endpoint)."
        )
    if isinstance(exc, ServiceResponseError):
        return (
            f"{head}: the vault did not answer in time ({KEY_VAULT_TIMEOUT:g} s per "
            f"attempt, {KEY_VAULT_RETRIES + 1} attempts: {first_line(exc)}). Check the "
            "network path to the vault, or try again if Azure reports an outage."
        )
    if isinstance(exc, HttpResponseError):
        return f"{head}: Key Vault answered {status}: {first_line(exc)}"
    return f"{head}: {type(exc).__name__}: {first_line(exc)}"
