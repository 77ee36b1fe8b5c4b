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
import os
import re
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar, Literal
from urllib.parse import urlparse

import dagster as dg
from pydantic import ConfigDict, Field, PrivateAttr, field_validator, model_validator

from odibi_dagster.errors import OdibiConnectionError, first_line, redact
from odibi_dagster.resources.base import Location
from odibi_dagster.resources.connection import ConnectionResource, StoredFile, join, listed
from odibi_dagster.resources.keyvault import (
    SECRETS,
    default_vault_url,
    explain_vault_error,
)

DEFAULT_ENDPOINT_SUFFIX = "core.windows.net"
# hadoop-azure's emulator mode: its wasb driver talks to this one account, at this address
EMULATOR_ACCOUNT = "devstoreaccount1"
EMULATOR_BLOB_ENDPOINTS = (
    "http://127.0.0.1:10000/devstoreaccount1",
    "http://localhost:10000/devstoreaccount1",
)
STORAGE_TIMEOUT = 10.0
STORAGE_RETRIES = 2
LISTING_PAGE_SIZE = 5000  # blobs per listing request (the service's maximum)

VAULT_FIELDS = ("key_vault_name", "secret_name", "key_vault_url")


def valid_account_name(v: Any) -> Any:
    if (
        isinstance(v, str)
        and not isinstance(v, dg.EnvVar)
        and not re.fullmatch(r"[a-z0-9]{3,24}", v)
    ):
        raise ValueError(
            f"storage account name '{v}' is invalid: use 3-24 lowercase letters and digits"
        )
    return v


def valid_container_name(v: Any) -> Any:
    if (
        isinstance(v, str)
        and not isinstance(v, dg.EnvVar)
        and not re.fullmatch(r"[a-z0-9](?!.*--)[a-z0-9-]{1,61}[a-z0-9]", v)
    ):
        raise ValueError(
            f"container name '{v}' is invalid: use 3-63 lowercase letters, digits and "
            "single hyphens, starting and ending with a letter or digit"
        )
    return v


class AzureADLS(ConnectionResource):
    """One ADLS Gen2 container in one storage account, with its account key
    (``type: azure_adls``).

    ``auth_mode: key_vault`` (default) reads the account key from Azure Key Vault with
    DefaultAzureCredential; ``direct_key`` takes it from ``account_key``, an environment
    variable (``${MY_KEY}`` in YAML, ``dg.EnvVar("MY_KEY")`` in Python), so the key is
    never in a file.

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

    yaml_type: ClassVar[str] = "azure_adls"
    secret_fields: ClassVar[frozenset[str]] = frozenset({"account_key"})
    runtime_fields: ClassVar[tuple[str, ...]] = ("connection_name", "validate_on_start")

    account: str = Field(description="Storage account name (3-24 lowercase letters/digits).")
    container: str = Field(description="Container (file system) name.")
    path_prefix: str = Field(default="", description="Prefix put before every node path.")
    auth_mode: Literal["key_vault", "direct_key"] = Field(
        default="key_vault", description="How the account key is obtained: key_vault or direct_key."
    )
    key_vault_name: str | None = Field(
        default=None, description="Key Vault name (auth_mode key_vault)."
    )
    secret_name: str | None = Field(
        default=None, description="Name of the Key Vault secret holding the account key."
    )
    account_key: str | None = Field(
        default=None,
        repr=False,
        description="auth_mode direct_key: the account key, as an environment reference "
        "like ${BRONZE_STORAGE_KEY} (dg.EnvVar('BRONZE_STORAGE_KEY') in Python).",
    )
    endpoint_suffix: str = Field(
        default=DEFAULT_ENDPOINT_SUFFIX, description="Storage endpoint suffix (sovereign clouds)."
    )
    blob_endpoint: str | None = Field(
        default=None, description="Full blob endpoint URL (e.g. an emulator's)."
    )
    key_vault_url: str | None = Field(
        default=None, description="Vault URL; default https://<key_vault_name>.vault.azure.net."
    )
    validate_on_start: bool = Field(
        default=True,
        description="Check the key and the container when a run sets the resource up.",
    )

    # a resolved key must not reach a repr or a validation error's text
    model_config = ConfigDict(hide_input_in_errors=True)

    _checked: bool = PrivateAttr(default=False)

    _account_name = field_validator("account")(valid_account_name)
    _container_name = field_validator("container")(valid_container_name)

    @field_validator("endpoint_suffix", mode="before")
    @classmethod
    def _default_suffix(cls, v: Any) -> Any:
        # `endpoint_suffix: ${VAR:-}` left empty means the public cloud
        return v if v else DEFAULT_ENDPOINT_SUFFIX

    @classmethod
    def fields_rule(cls, values: Mapping[str, Any]) -> str | None:
        """Which fields ``auth_mode`` needs and refuses (``account_key`` may still be an
        unresolved variable: only its presence counts)."""
        if values.get("auth_mode", "key_vault") == "key_vault":
            missing = [
                k
                for k, ok in (
                    ("key_vault_name", values.get("key_vault_name") or values.get("key_vault_url")),
                    ("secret_name", values.get("secret_name")),
                )
                if not ok
            ]
            if missing:
                return (
                    f"auth_mode key_vault needs {' and '.join(missing)} (the vault and the "
                    "secret that holds the account key)"
                )
            if values.get("account_key") is not None:
                return (
                    "account_key is only for auth_mode direct_key; with key_vault the key is "
                    "read from secret_name in the vault. Remove account_key or set "
                    "auth_mode: direct_key"
                )
            return None
        if not values.get("account_key"):
            return (
                "auth_mode direct_key needs account_key, an environment variable: "
                "account_key: ${MY_STORAGE_KEY} in YAML, dg.EnvVar('MY_STORAGE_KEY') in Python"
            )
        extra = [k for k in VAULT_FIELDS if values.get(k)]
        if extra:
            them = "them" if len(extra) > 1 else "it"
            return (
                f"{' and '.join(extra)} {'apply' if len(extra) > 1 else 'applies'} only to "
                f"auth_mode key_vault; remove {them} or set auth_mode: key_vault"
            )
        return None

    @model_validator(mode="after")
    def _auth_fields(self) -> AzureADLS:
        why = self.fields_rule(
            {k: getattr(self, k) for k in ("auth_mode", "account_key", *VAULT_FIELDS)}
        )
        if why:
            raise ValueError(f"{self.describe()}: {why}")
        return self

    # ------------------------------------------------------------------ naming

    def describe(self) -> str:
        name = f"connection '{self.connection_name}' " if self.connection_name else ""
        return f"{name}(account '{self.account}', container '{self.container}')"

    @property
    def vault_url(self) -> str:
        return (self.key_vault_url or default_vault_url(str(self.key_vault_name))).rstrip("/")

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
        return join(self.path_prefix, path)

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
            key = SECRETS.fetch(self.vault_url, self.secret_name, refresh=refresh)
        except Exception as exc:
            raise OdibiConnectionError(
                explain_vault_error(
                    exc,
                    f"{self.describe()}: could not read {self._key_source()}",
                    vault_url=self.vault_url,
                    vault=self._vault_label(),
                    secret_name=self.secret_name,
                )
            ) from None
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
        """The account-scoped Hadoop settings that give Spark this account's key: only
        ``fs.azure.account.key.<account>.(dfs|blob).<suffix>``, never an account-agnostic
        key, so several accounts work side by side in one session."""
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

    def check(self) -> str:
        """Obtain the key and make one authenticated call to the container; return what
        was checked.

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
        return (
            f"{self._key_description()}; container '{self.container}' reachable at {self.blob_url}"
        )

    def _key_description(self) -> str:
        """Where the key comes from, by name only (for reports)."""
        if self.auth_mode == "key_vault":
            return f"key from Key Vault {self.vault_url} secret '{self.secret_name}'"
        if isinstance(self.account_key, dg.EnvVar):
            return f"key from environment variable {self.account_key.env_var_name}"
        return "key from account_key (direct_key)"

    def _container_client(self, key: str) -> Any:
        from azure.storage.blob import ContainerClient, ExponentialRetry

        return ContainerClient.from_connection_string(
            self._connection_string(key),
            self.container,
            # the SDK's default waits 15 s, then 60 s, before telling the endpoint is down
            retry_policy=ExponentialRetry(
                initial_backoff=1, increment_base=2, retry_total=STORAGE_RETRIES
            ),
            connection_timeout=STORAGE_TIMEOUT,
            read_timeout=STORAGE_TIMEOUT,
        )

    def list_files(self, path: str = "", pattern: str = "*") -> Iterator[StoredFile]:
        """Blobs under ``<path_prefix>/<path>``, one paged listing (5,000 per request).

        As on local disk, ``path`` names a folder when blobs lie under ``path/``, else a
        prefix of names (one request of one blob tells which)."""
        root = self._full_path("")
        prefix = self._full_path(path) if path.strip("/") else root
        with self._container_client(self.get_storage_key()) as client:
            if prefix and prefix != root:
                folder = f"{prefix}/"
                first = client.list_blobs(name_starts_with=folder, results_per_page=1)
                if path.endswith("/") or next(iter(first), None) is not None:
                    prefix = folder
            blobs = client.list_blobs(
                name_starts_with=prefix or None, results_per_page=LISTING_PAGE_SIZE
            )
            for blob in blobs:
                rel = blob.name[len(root) :].lstrip("/") if root else blob.name
                if not listed(rel, pattern):
                    continue
                modified = blob.last_modified.timestamp() if blob.last_modified else None
                yield StoredFile(rel, int(blob.size or 0), modified, str(blob.etag or ""))

    def _probe_container(self, key: str) -> None:
        from azure.core.exceptions import (
            ClientAuthenticationError,
            HttpResponseError,
            ServiceRequestError,
        )

        head = f"{self.describe()} at {self.blob_url}"
        try:
            with self._container_client(key) as client:
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
                f"{redact(first_line(exc), [key])}"
            ) from None
        except ServiceRequestError as exc:
            raise OdibiConnectionError(
                f"{head}: the blob endpoint could not be reached "
                f"({redact(first_line(exc), [key])}). Check `account`, `endpoint_suffix` / "
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
