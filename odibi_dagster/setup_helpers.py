"""Onboarding helpers for Databricks and Azure: who am I, what to grant, do my connections work.

In a Databricks notebook::

    from odibi_dagster import setup_helpers as sh
    info = sh.get_databricks_identity_info(spark)
    print(info["message"])
    sh.print_keyvault_setup_instructions("kv-data", ["rawdata-key"], storage_accounts=["rawdata"])
    sh.print_connection_report(sh.check_connections("/Workspace/Repos/me/lake/project.yaml"))

Nothing here imports Spark or the Azure SDK until a function needs it, so the module imports
fast anywhere. No function prints or returns a secret value. The code lives in
:mod:`odibi_dagster.onboarding`, one module per question.
"""

from __future__ import annotations

from odibi_dagster.onboarding.connection_checks import (
    ConnectionStatus,
    check_connections,
    check_spark_access,
    print_connection_report,
)
from odibi_dagster.onboarding.identity import get_databricks_identity_info
from odibi_dagster.onboarding.keyvault_grants import (
    OBJECT_ID_PLACEHOLDER,
    print_keyvault_setup_instructions,
)

__all__ = [
    "OBJECT_ID_PLACEHOLDER",
    "ConnectionStatus",
    "check_connections",
    "check_spark_access",
    "get_databricks_identity_info",
    "print_connection_report",
    "print_keyvault_setup_instructions",
]
