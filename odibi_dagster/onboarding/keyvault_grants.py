"""The ``az`` commands that let an identity read the storage account keys in Key Vault."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import IO

from odibi_dagster.onboarding.identity import get_databricks_identity_info
from odibi_dagster.resources.keyvault import SECRETS_USER_ROLE

OBJECT_ID_PLACEHOLDER = "<object-id>"


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
