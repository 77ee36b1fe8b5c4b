"""Kept so ``odibi_dagster.resources.azure`` imports keep working: the connection is in
:mod:`odibi_dagster.resources.azure_adls`, the Key Vault cache in
:mod:`odibi_dagster.resources.keyvault`."""

from odibi_dagster.resources.azure_adls import AzureADLS
from odibi_dagster.resources.keyvault import clear_secret_cache

__all__ = ["AzureADLS", "clear_secret_cache"]
