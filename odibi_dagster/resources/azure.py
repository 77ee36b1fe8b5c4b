"""Azure Data Lake Storage Gen2 as an Odibi connection (``type: azure_adls``).

One resource per connection, one storage account and container each. The account key
comes from Azure Key Vault (``auth_mode: key_vault``, the default) through
``DefaultAzureCredential``, or from an environment variable (``auth_mode: direct_key``,
kept as a Dagster ``EnvVar`` so only the variable's name is ever shown). The key is
rendered into each form a library needs: adlfs options, delta-rs options, and
account-scoped Spark conf.

When a run starts, Dagster sets the resource up and it checks itself: it obtains the
key and makes one authenticated call to the container. A broken connection fails the
run there, before any node has written anything, with a message that names the
connection, the account, the container, what failed and what to do.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import posixpath
import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlparse

import dagster as dg
from pydantic import ConfigDict, Field, PrivateAttr, field_validator, model_validator

from odibi_dagster.errors import OdibiConnectionError
from odibi_dagster.resources.base import Location

if TYPE_CHECKING:
    from azure.keyvault.secrets import SecretClient

DEFAULT_ENDPOINT_SUFFIX = "core.windows.net"
# hadoop-azure's emulator mode: its wasb driver talks to this one account, at this address
EMULATOR_ACCOUNT = "devstoreaccount1"
EMULATOR_BLOB_ENDPOINTS = (
    "http://127.0.0.1:10000/devstoreaccount1",
    "http://localhost:10000/devstoreaccount1",
)

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
STORAGE_TIMEOUT = 10.0
STORAGE_RETRIES = 2

SECRETS_USER_ROLE = "Key Vault Secrets User"


# --------------------------------------------------------------------------- secrets

_lock = threading.Lock()
_secret_locks: dict[tuple[str, str], threading.Lock] = {}
_secrets: dict[tuple[str, str], str] = {}
_clients: dict[str, SecretClient] = {}
_credential: Any = None
# Counts Key Vault secret fetches made by this process (one per (vault, secret) unless
# a key is refetched after the storage account rejected a cached one).
fetch_count = 0


def clear_secret_cache() -> None:
    """Forget every secret, client and credential of this process (the next use starts over)."""
    global fetch_count, _credential
    with _lock:
        _secrets.clear()
        _secret_locks.clear()
        _clients.clear()
        _credential = None
        fetch_count = 0


def _get_credential() -> Any:
    global _credential
    with _lock:
        if _credential is None:
            from azure.identity import DefaultAzureCredential

            _credential = DefaultAzureCredential()
        return _credential


def is_public_vault_url(url: str) -> bool:
    host = (urlparse(url).hostname or "").lower()
    return host.endswith(PUBLIC_KEY_VAULT_SUFFIXES)


def _secret_client(vault_url: str) -> SecretClient:
    with _lock:
        client = _clients.get(vault_url)
    if client is not None:
        return client
    from azure.keyvault.secrets import SecretClient

    client = SecretClient(
        vault_url=vault_url,
        credential=_get_credential(),
        verify_challenge_resource=is_public_vault_url(vault_url),
        retry_total=KEY_VAULT_RETRIES,
        retry_backoff_factor=KEY_VAULT_BACKOFF,
        connection_timeout=KEY_VAULT_TIMEOUT,
        read_timeout=KEY_VAULT_TIMEOUT,
    )
    with _lock:
        return _clients.setdefault(vault_url, client)


def fetch_secret(vault_url: str, secret_name: str, *, refresh: bool = False) -> str:
    """The value of ``secret_name`` in the vault, fetched once per process and shared.

    Concurrent callers asking for the same (vault, secret) wait for one fetch. Raises
    the SDK's exceptions; :meth:`AzureADLS.get_storage_key` turns them into advice.
    """
    global fetch_count
    key = (vault_url.rstrip("/"), secret_name)
    with _lock:
        lock = _secret_locks.setdefault(key, threading.Lock())
    with lock:
        with _lock:
            if not refresh and key in _secrets:
                return _secrets[key]
        value = _secret_client(key[0]).get_secret(secret_name).value
        with _lock:
            fetch_count += 1
            if value:
                _secrets[key] = value
        return value or ""


def vault_scope(vault_url: str) -> str:
    """The token scope for a vault: its cloud's Key Vault resource (public cloud otherwise)."""
    host = (urlparse(vault_url).hostname or "").lower()
    for suffix in PUBLIC_KEY_VAULT_SUFFIXES:
        if host.endswith(suffix):
            return f"https://{suffix.lstrip('.')}/.default"
    return "https://vault.azure.net/.default"


def identity_claims(vault_url: str = "") -> dict[str, Any]:
    """Claims of the token ``DefaultAzureCredential`` gets for Key Vault (best effort, {})."""
    try:
        token = _get_credential().get_token(vault_scope(vault_url)).token
    except Exception:
        return {}
    return decode_token_claims(token)


def identity_summary(claims: dict[str, Any] | None = None, vault_url: str = "") -> str:
    """Who ``DefaultAzureCredential`` runs as, from its Key Vault token (best effort)."""
    claims = identity_claims(vault_url) if claims is None else claims
    if not claims:
        return "the identity DefaultAzureCredential runs as"
    parts = [
        f"{k}={claims[k]}" for k in ("upn", "appid", "oid", "tid") if isinstance(claims.get(k), str)
    ]
    return f"the running identity ({', '.join(parts)})" if parts else "the running identity"


def decode_token_claims(token: str) -> dict[str, Any]:
    """The claims of a JWT access token, read without verifying it (for messages only)."""
    try:
        payload = token.split(".")[1]
        payload += "=" * (-len(payload) % 4)
        claims = json.loads(base64.urlsafe_b64decode(payload))
    except (IndexError, ValueError, binascii.Error):
        return {}
    return claims if isinstance(claims, dict) else {}


# --------------------------------------------------------------------------- resource


class AzureADLS(dg.ConfigurableResource):
    """One ADLS Gen2 container in one storage account, with its account key.

    Example::

        AzureADLS(account="rawdata", container="landing",
                  key_vault_name="kv-data", secret_name="rawdata-key")
        AzureADLS(account="curated", container="gold", auth_mode="direct_key",
                  account_key=dg.EnvVar("CURATED_KEY"))

    ``auth_mode`` decides which fields apply: ``key_vault`` needs ``secret_name`` and
    ``key_vault_name`` (or ``key_vault_url``) and refuses ``account_key``;
    ``direct_key`` needs ``account_key`` and refuses the vault fields. Any other mix
    cannot be constructed.
    """

    account: str = Field(description="Storage account name.")
    container: str = Field(description="Container (file system) name.")
    path_prefix: str = Field(default="", description="Prefix put before every node path.")
    auth_mode: Literal["key_vault", "direct_key"] = Field(
        default="key_vault", description="Where the account key comes from."
    )
    key_vault_name: str | None = Field(default=None, description="Key Vault name (key_vault).")
    secret_name: str | None = Field(
        default=None, description="Secret holding the account key (key_vault)."
    )
    account_key: str | None = Field(
        default=None,
        repr=False,
        description="The account key (direct_key); pass dg.EnvVar('NAME') so only the "
        "variable's name is shown.",
    )
    endpoint_suffix: str = Field(
        default=DEFAULT_ENDPOINT_SUFFIX, description="Storage endpoint suffix (sovereign clouds)."
    )
    blob_endpoint: str | None = Field(
        default=None, description="Full blob endpoint URL, e.g. an emulator's."
    )
    key_vault_url: str | None = Field(
        default=None, description="Vault URL; default https://<key_vault_name>.vault.azure.net."
    )
    connection_name: str = Field(default="", description="The connection's name in the project.")
    validate_on_start: bool = Field(
        default=True,
        description="Check the key and the container when a run sets the resource up.",
    )

    # a resolved key must not reach a repr or a validation error's text
    model_config = ConfigDict(hide_input_in_errors=True)

    _checked: bool = PrivateAttr(default=False)

    @field_validator("endpoint_suffix", mode="before")
    @classmethod
    def _default_suffix(cls, v: Any) -> Any:
        # `endpoint_suffix: ${VAR:-}` left empty means the public cloud
        return v if v else DEFAULT_ENDPOINT_SUFFIX

    @model_validator(mode="after")
    def _auth_fields(self) -> AzureADLS:
        # account_key may be an unresolved EnvVar here: only its presence is checked.
        if self.auth_mode == "key_vault":
            if self.account_key:
                raise ValueError(
                    f"{self.describe()}: account_key is only for auth_mode='direct_key'; "
                    "with key_vault the key is read from secret_name in the vault"
                )
            if not self.secret_name or not (self.key_vault_name or self.key_vault_url):
                raise ValueError(
                    f"{self.describe()}: auth_mode='key_vault' needs secret_name and "
                    "key_vault_name (or key_vault_url)"
                )
        else:
            extra = [
                k for k in ("key_vault_name", "secret_name", "key_vault_url") if getattr(self, k)
            ]
            if extra:
                verb = "apply" if len(extra) > 1 else "applies"
                raise ValueError(
                    f"{self.describe()}: {', '.join(extra)} {verb} only to auth_mode='key_vault'"
                )
            if not self.account_key:
                raise ValueError(
                    f"{self.describe()}: auth_mode='direct_key' needs account_key, e.g. "
                    "account_key=dg.EnvVar('STORAGE_KEY')"
                )
        return self

    # ------------------------------------------------------------------ naming

    def describe(self) -> str:
        name = f"connection '{self.connection_name}' " if self.connection_name else ""
        return f"{name}(account '{self.account}', container '{self.container}')"

    @property
    def vault_url(self) -> str:
        return (self.key_vault_url or f"https://{self.key_vault_name}.vault.azure.net").rstrip("/")

    @property
    def blob_url(self) -> str:
        """The account's blob endpoint (what adlfs, delta-rs and the checks talk to)."""
        if self.blob_endpoint:
            return self.blob_endpoint.rstrip("/")
        return f"https://{self.account}.blob.{self.endpoint_suffix}"

    def _key_source(self) -> str:
        if self.auth_mode == "key_vault":
            return f"secret '{self.secret_name}' in Key Vault {self.vault_url}"
        return "account_key (auth_mode direct_key)"

    def _full_path(self, path: str) -> str:
        """``<prefix>/<path>`` inside the container, normalized (no ``//`` or ``.``)."""
        joined = "/".join(p.strip("/") for p in (self.path_prefix, path) if p and p.strip("/"))
        full = posixpath.normpath(joined) if joined else ""
        return "" if full == "." else full

    def uri(self, path: str) -> str:
        """``abfss://<container>@<account>.dfs.<suffix>/<prefix>/<path>``."""
        return (
            f"abfss://{self.container}@{self.account}.dfs.{self.endpoint_suffix}/"
            f"{self._full_path(path)}"
        )

    # ------------------------------------------------------------------ the key

    def get_storage_key(self, *, refresh: bool = False) -> str:
        """The storage account key: from Key Vault (cached per process) or account_key."""
        if self.auth_mode == "direct_key":
            key = self.account_key or ""
            if isinstance(key, dg.EnvVar):  # not resolved by Dagster (used outside a run)
                name = key.env_var_name
                key = key.get_value() or ""
                if not key.strip():
                    raise OdibiConnectionError(
                        f"{self.describe()}: account_key reads the environment variable {name}, "
                        "which is not set. Export it with the storage account key."
                    )
            if not key.strip():
                raise OdibiConnectionError(
                    f"{self.describe()}: account_key is empty. Set the environment variable "
                    "it names to the storage account key."
                )
            return self._valid_key(key.strip())
        assert self.secret_name is not None
        try:
            key = fetch_secret(self.vault_url, self.secret_name, refresh=refresh)
        except Exception as exc:
            raise OdibiConnectionError(self._explain_vault_error(exc)) from None
        if not key.strip():
            raise OdibiConnectionError(
                f"{self.describe()}: {self._key_source()} is empty. Store the storage "
                f"account key in it: az keyvault secret set --vault-name "
                f"{self._vault_label()} --name {self.secret_name} --value <key>"
            )
        return self._valid_key(key.strip())

    def _valid_key(self, key: str) -> str:
        """``key`` if it looks like a storage account key (base64), else a clear error."""
        hint = ""
        if ";" in key or "AccountKey=" in key:
            hint = " It looks like a connection string: store only the AccountKey part."
        elif key.startswith(("?", "sv=", "se=")) or "sig=" in key:
            hint = " It looks like a SAS token; odibi needs the account key."
        try:
            if hint:
                raise ValueError
            base64.b64decode(key, validate=True)
        except (ValueError, binascii.Error):
            raise OdibiConnectionError(
                f"{self.describe()}: the value of {self._key_source()} is not a storage "
                f"account key (a base64 string, as `az storage account keys list --account-name "
                f"{self.account}` prints).{hint}"
            ) from None
        return key

    def _vault_label(self) -> str:
        return self.key_vault_name or urlparse(self.vault_url).hostname or self.vault_url

    def _explain_vault_error(self, exc: Exception) -> str:
        from azure.core.exceptions import (
            ClientAuthenticationError,
            HttpResponseError,
            ResourceNotFoundError,
            ServiceRequestError,
            ServiceResponseError,
        )

        head = f"{self.describe()}: could not read {self._key_source()}"
        vault = self._vault_label()
        status = getattr(exc, "status_code", None)
        if isinstance(exc, ResourceNotFoundError) or status == 404:
            return (
                f"{head}: the secret does not exist. Create it with the storage account key "
                f"(az keyvault secret set --vault-name {vault} --name {self.secret_name} "
                f"--value <key>), or fix secret_name / key_vault_name."
            )
        if isinstance(exc, ClientAuthenticationError) and status is None:
            return (
                f"{head}: DefaultAzureCredential found no identity to sign in with "
                f"({_first_line(exc)}). Locally run `az login`; on Databricks or Azure, give "
                "the compute a managed identity or set AZURE_CLIENT_ID, AZURE_TENANT_ID and "
                "AZURE_CLIENT_SECRET for a service principal."
            )
        if status in (401, 403):
            claims = identity_claims(self.vault_url)
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
                f"{head}: the vault could not be reached ({_first_line(exc)}). Check "
                "key_vault_name / key_vault_url, DNS and the network path to the vault "
                "(firewall, private endpoint)."
            )
        if isinstance(exc, ServiceResponseError):
            return (
                f"{head}: the vault did not answer in time ({KEY_VAULT_TIMEOUT:g} s per "
                f"attempt, {KEY_VAULT_RETRIES + 1} attempts: {_first_line(exc)}). Check the "
                "network path to the vault, or try again if Azure reports an outage."
            )
        if isinstance(exc, HttpResponseError):
            return f"{head}: Key Vault answered {status}: {_first_line(exc)}"
        return f"{head}: {type(exc).__name__}: {_first_line(exc)}"

    # ------------------------------------------------------------------ renderings

    def _connection_string(self, key: str) -> str:
        if self.blob_endpoint:
            scheme = urlparse(self.blob_url).scheme or "https"
            return (
                f"DefaultEndpointsProtocol={scheme};AccountName={self.account};"
                f"AccountKey={key};BlobEndpoint={self.blob_url};"
            )
        return (
            f"DefaultEndpointsProtocol=https;AccountName={self.account};AccountKey={key};"
            f"EndpointSuffix={self.endpoint_suffix}"
        )

    def pandas_storage_options(self) -> dict[str, Any]:
        """adlfs / fsspec ``storage_options`` (e.g. for ``pd.read_parquet('abfs://...')``)."""
        key = self.get_storage_key()
        return {"account_name": self.account, "connection_string": self._connection_string(key)}

    def delta_storage_options(self) -> dict[str, str]:
        """delta-rs ``storage_options`` (for ``deltalake.DeltaTable`` / ``write_deltalake``)."""
        opts = {
            "azure_storage_account_name": self.account,
            "azure_storage_account_key": self.get_storage_key(),
        }
        if self.blob_endpoint or self.endpoint_suffix != DEFAULT_ENDPOINT_SUFFIX:
            opts["azure_storage_endpoint"] = self.blob_url
            if self.blob_url.startswith("http://"):
                opts["allow_http"] = "true"
        return opts

    def spark_conf(self) -> dict[str, str]:
        """The account-scoped Hadoop settings that give Spark this account's key."""
        key = self.get_storage_key()
        conf = {
            f"fs.azure.account.key.{self.account}.dfs.{self.endpoint_suffix}": key,
            f"fs.azure.account.key.{self.account}.blob.{self.endpoint_suffix}": key,
        }
        if self._spark_emulated():
            # hadoop-azure sends wasb:// URIs for this account name to the local emulator
            conf["fs.azure.storage.emulator.account.name"] = (
                f"{EMULATOR_ACCOUNT}.blob.{DEFAULT_ENDPOINT_SUFFIX}"
            )
        return conf

    def _spark_emulated(self) -> bool:
        endpoint = (self.blob_endpoint or "").rstrip("/")
        return self.account == EMULATOR_ACCOUNT and endpoint in EMULATOR_BLOB_ENDPOINTS

    def spark_uri(self, path: str) -> str:
        """What Spark opens: ``uri(path)`` (abfss), or for Azurite's ``devstoreaccount1`` at
        127.0.0.1:10000 the ``wasb://`` URI of hadoop-azure's emulator mode.

        Raises OdibiConnectionError for any other ``blob_endpoint``: hadoop-azure has no
        endpoint override, so only the pandas engine honours one.
        """
        if not self.blob_endpoint:
            return self.uri(path)
        if self._spark_emulated():
            return (
                f"wasb://{self.container}@{EMULATOR_ACCOUNT}.blob.{DEFAULT_ENDPOINT_SUFFIX}/"
                f"{self._full_path(path)}"
            )
        raise OdibiConnectionError(
            f"{self.describe()}: Spark cannot use blob_endpoint {self.blob_endpoint}: "
            f"hadoop-azure reaches an account only at {self.account}.dfs.{self.endpoint_suffix} "
            "(abfss), or Azurite's account devstoreaccount1 at http://127.0.0.1:10000 (its "
            "emulator mode). Remove blob_endpoint for Spark, or use engine: pandas"
        )

    def configure_spark(self, spark: Any) -> None:
        """Give a Spark session this account's key, scoped to the account.

        Only ``fs.azure.account.key.<account>.(dfs|blob).<suffix>`` is set, never an
        account-agnostic key, so several accounts work side by side in one session.
        """
        for k, v in self.spark_conf().items():
            spark.conf.set(k, v)

    def location(self, path: str) -> Location:
        from adlfs import AzureBlobFileSystem

        full = self._full_path(path)
        spark_uri, spark_note = "", ""
        try:
            spark_uri = self.spark_uri(path)
        except OdibiConnectionError as exc:
            spark_note = str(exc)
        return Location(
            uri=self.uri(path),
            fs=AzureBlobFileSystem(**self.pandas_storage_options()),
            fs_path=f"{self.container}/{full}",
            delta_uri=f"az://{self.container}/{full}",
            storage_options=self.delta_storage_options(),
            connection=self.connection_name,
            spark_uri=spark_uri,
            spark_note=spark_note,
        )

    def secrets(self) -> list[str]:
        """Values that must never be shown (the key, if it was obtained)."""
        try:
            return [self.get_storage_key()]
        except OdibiConnectionError:
            return []

    # ------------------------------------------------------------------ checks

    def check(self) -> None:
        """Obtain the key and make one authenticated call to the container.

        Raises :class:`OdibiConnectionError` saying what failed and what to do. A key
        from Key Vault that the account rejects is fetched again once, in case it was
        rotated since this process cached it.
        """
        key = self.get_storage_key()
        try:
            self._probe_container(key)
        except OdibiConnectionError as first:
            if self.auth_mode != "key_vault" or not first.key_rejected:
                raise
            fresh = self.get_storage_key(refresh=True)
            if fresh == key:
                raise
            self._probe_container(fresh)
        self._checked = True

    def _probe_container(self, key: str) -> None:
        from azure.core.exceptions import (
            ClientAuthenticationError,
            HttpResponseError,
            ServiceRequestError,
        )
        from azure.storage.blob import ContainerClient, ExponentialRetry

        head = f"{self.describe()} at {self.blob_url}"
        try:
            client = ContainerClient.from_connection_string(
                self._connection_string(key),
                self.container,
                # the SDK's default waits 15 s, then 60 s, before telling the endpoint is down
                retry_policy=ExponentialRetry(
                    initial_backoff=1, increment_base=2, retry_total=STORAGE_RETRIES
                ),
                connection_timeout=STORAGE_TIMEOUT,
                read_timeout=STORAGE_TIMEOUT,
            )
            with client:
                client.get_container_properties(timeout=int(STORAGE_TIMEOUT))
        except (ClientAuthenticationError, HttpResponseError) as exc:
            status = getattr(exc, "status_code", None)
            raw_code = getattr(exc, "error_code", None) or ""
            code = str(getattr(raw_code, "value", raw_code))
            if status == 404 or code in ("ContainerNotFound", "ResourceNotFound"):
                raise OdibiConnectionError(
                    f"{head}: container '{self.container}' does not exist. Create it (az "
                    f"storage container create --account-name {self.account} --name "
                    f"{self.container} --auth-mode login) or fix `container:`."
                ) from None
            if status == 403 and code == "KeyBasedAuthenticationNotPermitted":
                raise OdibiConnectionError(
                    f"{head}: the account does not allow account-key access (403 "
                    f"{code}). Allow it (az storage account update --name {self.account} "
                    "--allow-shared-key-access true), if your organisation permits it."
                ) from None
            if status == 403 and code in ("AuthenticationFailed", ""):
                raise OdibiConnectionError(
                    f"{head}: the storage account rejected the account key from "
                    f"{self._key_source()} (403 {code or 'Forbidden'}). Put a current key of "
                    f"account '{self.account}' there (az storage account keys list "
                    f"--account-name {self.account} --query [0].value -o tsv).",
                    key_rejected=True,
                ) from None
            if status == 403 and code == "AuthorizationFailure":
                # Azure says so when a firewall or network rule blocks the caller; the
                # storage emulator says so for a wrong key too
                raise OdibiConnectionError(
                    f"{head}: the storage account rejected the account key from "
                    f"{self._key_source()} or the network (403 {code}). If the account's "
                    "firewall allows this network, put a current key of account "
                    f"'{self.account}' there (az storage account keys list --account-name "
                    f"{self.account} --query [0].value -o tsv); else add this network to the "
                    "account's firewall rules or use a private endpoint.",
                    key_rejected=True,
                ) from None
            raise OdibiConnectionError(
                f"{head}: the storage account answered {status} {code}: "
                f"{_redact(_first_line(exc), [key])}"
            ) from None
        except ServiceRequestError as exc:
            raise OdibiConnectionError(
                f"{head}: the blob endpoint could not be reached "
                f"({_redact(_first_line(exc), [key])}). Check `account`, `endpoint_suffix` / "
                "`blob_endpoint` and the network path to the account."
            ) from None

    def production_warning(self) -> str | None:
        """A warning when a direct key is used where ODIBI_ENV says production."""
        env = os.environ.get("ODIBI_ENV", "")
        if self.auth_mode != "direct_key" or env.lower() not in ("prod", "production"):
            return None
        return (
            f"{self.describe()} uses auth_mode direct_key with ODIBI_ENV={env}: keep "
            "production keys in Key Vault (auth_mode: key_vault)."
        )

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        warning = self.production_warning()
        if warning:
            context.log.warning(warning)  # type: ignore[union-attr]
        if self.validate_on_start and not self._checked:
            self.check()


# --------------------------------------------------------------------------- helpers


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _redact(text: str, secrets: Iterable[str]) -> str:
    for s in secrets:
        if s:
            text = text.replace(s, "***")
    return text
