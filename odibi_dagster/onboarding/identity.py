"""Who this code runs as: where it runs (Databricks or not) and the Azure identity that
``DefaultAzureCredential`` signs in as, read from a real Key Vault token."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from odibi_dagster.resources.keyvault import decode_token_claims, vault_scope

_WORKSPACE_URL_CONF = "spark.databricks.workspaceUrl"
_CLUSTER_NAME_CONF = "spark.databricks.clusterUsageTags.clusterName"


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


def _folded(exc: BaseException, limit: int = 300) -> str:
    """``<Type>: <message>`` on one line: DefaultAzureCredential says why each of its
    sources failed on a line of its own, and every one of them is worth showing."""
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
        return {}, _folded(exc)
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
