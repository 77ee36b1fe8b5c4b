"""Two Azurite storage accounts and a Key Vault secret, ready for a project to use.

``Lake`` gives each test fresh containers in both accounts (``RAW`` and ``CUR``), a Key
Vault secret holding the raw account's key and an environment variable holding the
curated one's; the ``lake`` fixture (conftest.py) sets them up.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from odibi_dagster.resources.azure_adls import AzureADLS
from odibi_dagster_tests.emulators.azurite import AzuriteService
from odibi_dagster_tests.emulators.keyvault import KeyVaultService

RAW, CUR = "odibiraw", "odibicurated"


@dataclass
class Lake:
    """Fresh containers in both accounts, a Key Vault secret for the raw account and an
    environment variable for the curated one; ``project()`` writes a project using them."""

    azurite: AzuriteService
    keyvault: KeyVaultService
    tmp: Path
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:10])

    @property
    def raw_container(self) -> str:
        return f"raw{self.tag}"

    @property
    def cur_container(self) -> str:
        return f"cur{self.tag}"

    @property
    def secret(self) -> str:
        return f"raw-key-{self.tag}"

    @property
    def env_var(self) -> str:
        return f"CURATED_KEY_{self.tag.upper()}"

    def key(self, account: str) -> str:
        return self.azurite.accounts[account]

    def connections(self, **override: str) -> str:
        raw = {
            "type": "azure_adls",
            "account": RAW,
            "container": self.raw_container,
            "key_vault_name": "odibi-kv",
            "key_vault_url": self.keyvault.url,
            "secret_name": self.secret,
            "blob_endpoint": self.azurite.blob_endpoint(RAW),
        }
        cur = {
            "type": "azure_adls",
            "account": CUR,
            "container": self.cur_container,
            "path_prefix": "gold",
            "auth_mode": "direct_key",
            "account_key": "${" + self.env_var + "}",
            "blob_endpoint": self.azurite.blob_endpoint(CUR),
        }
        for k, v in override.items():
            conn, _, fld = k.partition("__")
            (raw if conn == "raw" else cur)[fld] = v
        return "connections:\n" + "".join(
            f"  {name}: {json.dumps(body)}\n" for name, body in (("raw", raw), ("cur", cur))
        )

    def project(self, pipelines: str, **override: str) -> Path:
        path = self.tmp / f"project_{uuid.uuid4().hex[:6]}.yaml"
        path.write_text(self.connections(**override) + pipelines)
        return path

    def upload(self, name: str, data: bytes) -> None:
        self.azurite.upload_blob(RAW, self.raw_container, name, data)

    def blobs(self, account: str = CUR) -> list[str]:
        from azure.core.exceptions import ResourceNotFoundError

        container = self.cur_container if account == CUR else self.raw_container
        try:
            return self.azurite.list_blobs(account, container)
        except ResourceNotFoundError:
            return []

    def read_blob(self, name: str, account: str = CUR) -> bytes:
        container = self.cur_container if account == CUR else self.raw_container
        return self.azurite.read_blob(account, container, name)

    def delta_options(self, account: str) -> dict[str, str]:
        return {
            "azure_storage_account_name": account,
            "azure_storage_account_key": self.key(account),
            "azure_storage_endpoint": self.azurite.blob_endpoint(account),
            "allow_http": "true",
        }

    def resource(self, account: str = RAW, **kw: Any) -> AzureADLS:
        if account == RAW:
            base: dict[str, Any] = {
                "account": RAW,
                "container": self.raw_container,
                "key_vault_name": "odibi-kv",
                "key_vault_url": self.keyvault.url,
                "secret_name": self.secret,
                "connection_name": "raw",
            }
        else:
            base = {
                "account": CUR,
                "container": self.cur_container,
                "auth_mode": "direct_key",
                "account_key": self.key(CUR),
                "connection_name": "cur",
            }
        base["blob_endpoint"] = self.azurite.blob_endpoint(account)
        base.update(kw)
        return AzureADLS(**base)
