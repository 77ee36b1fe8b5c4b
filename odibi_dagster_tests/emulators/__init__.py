"""Local Azure emulators for the tests: Azurite (blob) and a Key Vault secrets stand-in."""

from __future__ import annotations

from .azurite import AzuriteService, azurite_binary, start_azurite
from .keyvault import IDENTITY_OBJECT_ID, KeyVaultService, start_keyvault

__all__ = [
    "IDENTITY_OBJECT_ID",
    "AzuriteService",
    "KeyVaultService",
    "azurite_binary",
    "start_azurite",
    "start_keyvault",
]
