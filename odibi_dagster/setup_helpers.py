"""Onboarding helpers for Databricks and Azure: who am I, what to grant, do my connections work.

In a Databricks notebook::

    from odibi_dagster import setup_helpers as sh
    info = sh.get_databricks_identity_info(spark)
    print(info["message"])
    sh.print_keyvault_setup_instructions("kv-data", ["rawdata-key"], storage_accounts=["rawdata"])
    sh.print_connection_report(sh.check_connections("/Workspace/Repos/me/lake/project.yaml"))

Nothing here imports Spark or the Azure SDK until a function needs it, so the module imports
fast anywhere. No function prints or returns a secret value.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any

from odibi_dagster.resources.azure import SECRETS_USER_ROLE, decode_token_claims, vault_scope

if TYPE_CHECKING:
    from odibi_dagster.resources.azure import AzureADLS
    from odibi_dagster.resources.local import LocalStorage

__all__ = [
    "ConnectionStatus",
    "check_connections",
    "check_spark_access",
    "get_databricks_identity_info",
    "print_connection_report",
    "print_keyvault_setup_instructions",
]

OBJECT_ID_PLACEHOLDER = "<object-id>"

_WORKSPACE_URL_CONF = "spark.databricks.workspaceUrl"
_CLUSTER_NAME_CONF = "spark.databricks.clusterUsageTags.clusterName"


# --------------------------------------------------------------------------- identity


def _credential_kind(env: Mapping[str, str]) -> str:
    """Which credential DefaultAzureCredential would pick, inferred from the environment."""
    if env.get("AZURE_CLIENT_ID") and env.get("AZURE_TENANT_ID"):
        if env.get("AZURE_CLIENT_SECRET"):
            return "service principal (environment)"
        if env.get("AZURE_CLIENT_CERTIFICATE_PATH"):
            return "service principal certificate (environment)"
    if env.get("AZURE_FEDERATED_TOKEN_FILE"):
        return "workload identity"
    if env.get("IDENTITY_ENDPOINT") or env.get("MSI_ENDPOINT"):
        return "managed identity"
    return "Azure CLI / developer login"


def _active_spark() -> Any:
    """The active Spark session, or None (without importing pyspark when it is absent)."""
    import importlib.util

    if importlib.util.find_spec("pyspark") is None:
        return None
    try:
        from pyspark.sql import SparkSession

        return SparkSession.getActiveSession()
    except Exception:
        return None


def _spark_conf(spark: Any, key: str) -> str | None:
    try:
        value = spark.conf.get(key, None)
    except Exception:
        return None
    return str(value) if value else None


def _one_line(exc: BaseException, limit: int = 300) -> str:
    text = " ".join(str(exc).split()) or "no details"
    line = f"{type(exc).__name__}: {text}"
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _token_claims() -> tuple[dict[str, Any], str | None]:
    """Claims of a Key Vault token from a fresh DefaultAzureCredential, or an error line."""
    try:
        from azure.identity import DefaultAzureCredential

        credential = DefaultAzureCredential()
        try:
            token = credential.get_token(vault_scope("")).token
        finally:
            credential.close()
    except Exception as exc:
        return {}, _one_line(exc)
    claims = decode_token_claims(token)
    if not claims:
        return {}, "the access token could not be decoded"
    return claims, None


def _claim(claims: Mapping[str, Any], *names: str) -> str | None:
    for name in names:
        value = claims.get(name)
        if isinstance(value, str) and value:
            return value
    return None


def get_databricks_identity_info(spark: Any = None) -> dict[str, Any]:
    """Where this code runs and which Azure identity it reaches Key Vault as.

    Keys: ``on_databricks``, ``runtime_version``, ``workspace_url``, ``cluster_name``,
    ``credential`` (which DefaultAzureCredential source the environment selects),
    ``object_id``, ``app_id``, ``tenant_id``, ``upn`` (from a real Key Vault token's
    claims), ``token_error`` (one line, or None) and ``message`` (one sentence).
    """
    runtime = os.environ.get("DATABRICKS_RUNTIME_VERSION") or None
    session = spark if spark is not None else _active_spark()
    workspace = _spark_conf(session, _WORKSPACE_URL_CONF) if session is not None else None
    workspace = workspace or os.environ.get("DATABRICKS_HOST") or None
    cluster = _spark_conf(session, _CLUSTER_NAME_CONF) if session is not None else None
    credential = _credential_kind(os.environ)
    claims, token_error = _token_claims()

    info: dict[str, Any] = {
        "on_databricks": runtime is not None,
        "runtime_version": runtime,
        "workspace_url": workspace,
        "cluster_name": cluster,
        "credential": credential,
        "object_id": _claim(claims, "oid"),
        "app_id": _claim(claims, "appid", "azp"),
        "tenant_id": _claim(claims, "tid"),
        "upn": _claim(claims, "upn", "unique_name", "preferred_username"),
        "token_error": token_error,
    }
    info["message"] = _identity_message(info)
    return info


def _identity_message(info: Mapping[str, Any]) -> str:
    if info["token_error"]:
        who = f"could not get a Key Vault token ({info['token_error']})"
    else:
        ids = [
            f"{label} {info[key]}"
            for label, key in (("upn", "upn"), ("object id", "object_id"), ("app id", "app_id"))
            if info[key]
        ]
        who = "signs in as " + (", ".join(ids) if ids else "an identity without id claims")
    via = f"DefaultAzureCredential ({info['credential']})"
    if info["on_databricks"]:
        where = [f"runtime {info['runtime_version']}"]
        if info["workspace_url"]:
            where.append(f"workspace {info['workspace_url']}")
        if info["cluster_name"]:
            where.append(f"cluster '{info['cluster_name']}'")
        return f"Running on Databricks ({', '.join(where)}); {via} {who}."
    return (
        "Not running on Databricks (DATABRICKS_RUNTIME_VERSION is not set): this is a local "
        f"run, and local runs reach Key Vault with {via}, which {who}."
    )


# --------------------------------------------------------------------------- Key Vault setup


def print_keyvault_setup_instructions(
    key_vault_name: str,
    secrets: Iterable[str] | None = None,
    *,
    object_id: str | None = None,
    storage_accounts: Iterable[str] = (),
    resource_group: str = "<resource-group>",
    rbac: bool = True,
    file: IO[str] | None = None,
) -> str:
    """Print (and return) the ``az`` commands that let an identity use Key Vault secrets.

    First the grant: the ``Key Vault Secrets User`` role on the vault (``rbac=True``) or an
    access policy with secret get (``rbac=False``). Then one ``az keyvault secret set``
    per storage account, storing that account's key; ``storage_accounts`` and ``secrets``
    pair up in order (a missing secret name defaults to ``<account>-key``, a missing
    account to ``<storage-account>``). Without ``object_id`` the identity this code runs
    as is used (see :func:`get_databricks_identity_info`), else a placeholder.
    """
    principal_type = "ServicePrincipal"
    lines: list[str] = []
    if object_id is None:
        info = get_databricks_identity_info()
        object_id = info.get("object_id") or None
        if object_id and info.get("upn"):
            principal_type = "User"  # a person signed in with az login
        if object_id:
            lines.append(f"# The identity this code runs as: {info['message']}")
        else:
            object_id = OBJECT_ID_PLACEHOLDER
            lines += [
                f"# Replace {OBJECT_ID_PLACEHOLDER} with the object id of the identity that runs",
                "# the pipelines: run get_databricks_identity_info() on that cluster, or",
                "#   az ad sp show --id <application-client-id> --query id -o tsv   (service "
                "principal)",
                "#   az ad signed-in-user show --query id -o tsv                   (yourself)",
            ]

    scope = f"$(az keyvault show --name {key_vault_name} --query id -o tsv)"
    if rbac:
        lines += [
            f"# 1. Let the identity read secrets in Key Vault '{key_vault_name}' (Azure RBAC; "
            "takes a few minutes to apply):",
            f'az role assignment create --role "{SECRETS_USER_ROLE}" --assignee-object-id '
            f"{object_id} --assignee-principal-type {principal_type} --scope {scope}",
        ]
    else:
        lines += [
            f"# 1. Let the identity read secrets in Key Vault '{key_vault_name}' (access "
            "policies):",
            f"az keyvault set-policy --name {key_vault_name} --object-id {object_id} "
            "--secret-permissions get",
        ]

    accounts = list(storage_accounts)
    names = list(secrets or ())
    pairs: list[tuple[str, str]] = []
    for i in range(max(len(accounts), len(names))):
        account = accounts[i] if i < len(accounts) else "<storage-account>"
        name = names[i] if i < len(names) else f"{account}-key"
        pairs.append((account, name))
    if pairs:
        lines.append("# 2. Store each storage account's key as a secret (the key never shows):")
        for account, name in pairs:
            lines.append(
                f"az keyvault secret set --vault-name {key_vault_name} --name {name} "
                f'--value "$(az storage account keys list --account-name {account} '
                f'--resource-group {resource_group} --query [0].value -o tsv)"'
            )
    text = "\n".join(lines) + "\n"
    print(text, end="", file=file if file is not None else sys.stdout)
    return text


# --------------------------------------------------------------------------- connection checks


@dataclass(frozen=True)
class ConnectionStatus:
    """The outcome of checking one connection; ``detail`` never holds a secret."""

    name: str
    kind: str
    ok: bool
    detail: str
    seconds: float


def _load_resources(connections: Any) -> Mapping[str, Any]:
    if isinstance(connections, (str, os.PathLike)):
        from odibi_dagster.compile import load_definitions

        return dict(load_definitions(connections).resources or {})
    if isinstance(connections, Mapping):
        return connections
    raise TypeError(
        "check_connections() takes a project path or a mapping of connection name -> "
        f"resource, not {type(connections).__name__}"
    )


def _key_source(res: AzureADLS) -> str:
    """Where the resource's key comes from, for the report."""
    import dagster as dg

    if res.auth_mode == "key_vault":
        return f"key from Key Vault {res.vault_url} secret '{res.secret_name}'"
    if isinstance(res.account_key, dg.EnvVar):
        return f"key from environment variable {res.account_key.env_var_name}"
    return "key from account_key (direct_key)"


def _check_azure(name: str, res: AzureADLS) -> tuple[bool, str]:
    from odibi_dagster.errors import OdibiConnectionError

    try:
        source = _key_source(res)
        res.check()
    except OdibiConnectionError as exc:
        return False, str(exc)
    except Exception as exc:  # unexpected: keep one line, and never the key
        known: list[str] = []
        with contextlib.suppress(Exception):
            known = res.secrets()
        text = _one_line(exc)
        for secret in known:
            if secret:
                text = text.replace(secret, "***")
        return False, f"{res.describe()}: {text}"
    return True, f"{source}; container '{res.container}' reachable at {res.blob_url}"


def _check_local(name: str, res: LocalStorage) -> tuple[bool, str]:
    path = os.path.abspath(res.base_path)
    head = f"connection '{name}': base_path {path}"
    if not os.path.exists(path):
        return False, f"{head} does not exist. Create it (mkdir -p {path}) or fix base_path."
    if not os.path.isdir(path):
        return False, f"{head} is not a directory. Point base_path at a directory."
    try:
        fd, probe = tempfile.mkstemp(prefix=".odibi-check-", dir=path)
        os.close(fd)
        os.remove(probe)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        return False, f"{head} is not writable ({reason}). Fix its permissions or base_path."
    return True, f"{path} exists and is writable"


def _check_one(name: str, res: Any) -> ConnectionStatus:
    from odibi_dagster.resources.azure import AzureADLS

    start = time.perf_counter()
    if isinstance(res, AzureADLS):
        kind = "azure_adls"
        ok, detail = _check_azure(name, res)
    else:
        kind = "local"
        ok, detail = _check_local(name, res)
    return ConnectionStatus(name, kind, ok, detail, round(time.perf_counter() - start, 3))


def check_connections(connections: Any, *, max_workers: int = 8) -> list[ConnectionStatus]:
    """Check every connection of a project (path) or of a mapping name -> resource.

    An ``AzureADLS`` is checked with :meth:`AzureADLS.check` (key + one container call), a
    ``LocalStorage`` by creating and removing a file in ``base_path``; other resources
    (IO managers, ...) are skipped. Checks run in parallel threads; a Key Vault secret
    shared by several connections is fetched once. Results keep the input order.
    """
    from odibi_dagster.resources.azure import AzureADLS
    from odibi_dagster.resources.local import LocalStorage

    if max_workers < 1:
        raise ValueError("max_workers must be at least 1")
    items = [
        (str(name), res)
        for name, res in _load_resources(connections).items()
        if isinstance(res, (AzureADLS, LocalStorage))
    ]
    if not items:
        return []
    with ThreadPoolExecutor(
        max_workers=min(max_workers, len(items)), thread_name_prefix="odibi-check"
    ) as pool:
        futures = [pool.submit(_check_one, name, res) for name, res in items]
        return [f.result() for f in futures]


def check_spark_access(spark: Any, connections: Any) -> list[ConnectionStatus]:
    """Check that ``spark`` reaches every connection the way a Spark run does.

    Each connection is configured on the session as a run configures it (account-scoped
    key), then Spark looks up the connection's root (``<container>/<path_prefix>``) through
    its own filesystem driver: on Databricks that is the abfss driver with the cluster's
    settings, which :func:`check_connections` (the Azure SDK) does not exercise. A root
    that does not exist yet is fine; an error (403, unknown host, ...) is a failure.
    ``connections`` is a project path or a mapping name -> resource, as for
    :func:`check_connections`. Runs one connection after another.
    """
    from odibi_dagster.engines.spark import SparkEngine, first_message
    from odibi_dagster.errors import OdibiRunError, redact
    from odibi_dagster.resources.azure import AzureADLS
    from odibi_dagster.resources.local import LocalStorage
    from odibi_dagster.resources.spark import SparkSessionResource

    engine = SparkEngine(spark)
    out = []
    for name, res in _load_resources(connections).items():
        if not isinstance(res, (AzureADLS, LocalStorage)):
            continue
        kind = "azure_adls" if isinstance(res, AzureADLS) else "local"
        start = time.perf_counter()
        loc = None
        try:
            SparkSessionResource().configure_connections(spark, [res])
            loc = res.location("")
            found = engine.exists(loc, "parquet")
            ok = True
            detail = f"Spark reaches {loc.spark_uri}" + ("" if found else " (empty so far)")
        except Exception as exc:
            ok = False
            if isinstance(exc, OdibiRunError):
                text = str(exc)
            else:
                text = f"Spark could not list it: {type(exc).__name__}: {first_message(exc)}"
            if loc is not None:
                text = redact(text, loc.storage_options, loc.uri)
            for secret in res.secrets() if isinstance(res, AzureADLS) else []:
                text = text.replace(secret, "***")
            detail = text if text.startswith(f"connection '{name}'") else f"{name}: {text}"
        out.append(
            ConnectionStatus(str(name), kind, ok, detail, round(time.perf_counter() - start, 3))
        )
    return out


def print_connection_report(
    statuses: Iterable[ConnectionStatus], file: IO[str] | None = None
) -> bool:
    """Print an aligned table of connection checks; True when every one is OK."""
    rows = list(statuses)
    out = file if file is not None else sys.stdout
    if not rows:
        print("No connections to check.", file=out)
        return True
    table = [("CONNECTION", "KIND", "STATUS", "SECONDS", "DETAIL")] + [
        (s.name, s.kind, "OK" if s.ok else "FAILED", f"{s.seconds:.2f}", s.detail) for s in rows
    ]
    widths = [max(len(r[i]) for r in table) for i in range(4)]
    for r in table:
        cells = [r[i].rjust(widths[i]) if i == 3 else r[i].ljust(widths[i]) for i in range(4)]
        print("  ".join([*cells, r[4]]).rstrip(), file=out)
    failed = sum(not s.ok for s in rows)
    print(f"{len(rows)} connection(s): {len(rows) - failed} OK, {failed} FAILED", file=out)
    return failed == 0
