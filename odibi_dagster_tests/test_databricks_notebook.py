"""setup/databricks_setup.ipynb, executed top to bottom in a real Jupyter kernel, with the
emulators standing in for Azure: Azurite for the two storage accounts of
examples/spark_databricks, the Key Vault stand-in (and its managed-identity endpoint) for
the vault the real DefaultAzureCredential and SecretClient read the keys from."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import nbformat
import pytest
from ipykernel.kernelspec import write_kernel_spec
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from odibi_dagster.config.loader import load_project
from odibi_dagster.config.models import AzureAdlsConnection
from odibi_dagster_tests.emulators.azurite import AzuriteService
from odibi_dagster_tests.emulators.fixtures import azurite, keyvault  # noqa: F401
from odibi_dagster_tests.emulators.keyvault import IDENTITY_OBJECT_ID, KeyVaultService
from odibi_dagster_tests.support.paths import EXAMPLES, REPO

NOTEBOOK = REPO / "setup" / "databricks_setup.ipynb"
PROJECT = EXAMPLES / "spark_databricks"
VAULT = "kv-odibi-data"
RAW, CURATED = "odibiraw", "odibicurated"
RAW_SECRET, CURATED_SECRET = "odibiraw-key", "odibicurated-key"
KERNEL = "odibi-test-python"


def _run_notebook(tmp_path: Path, env: dict[str, str]) -> tuple[Any, CellExecutionError | None]:
    """Execute the notebook in a fresh kernel of this interpreter, working directory setup/
    (as on Databricks, where a notebook runs in its own folder). Returns the executed
    notebook (outputs filled in up to the failing cell) and the error, if a cell failed."""
    kernels = tmp_path / "kernels"
    write_kernel_spec(kernels / KERNEL)  # argv: this interpreter -m ipykernel_launcher
    km = KernelManager(
        kernel_name=KERNEL, kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(kernels)])
    )
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(
        nb,
        km=km,
        kernel_name=KERNEL,
        timeout=120,
        startup_timeout=60,
        resources={"metadata": {"path": str(NOTEBOOK.parent)}},
    )
    try:
        client.execute(env=env)
    except CellExecutionError as exc:
        return nb, exc
    return nb, None


def _kernel_env(azurite: AzuriteService, keyvault: KeyVaultService) -> dict[str, str]:  # noqa: F811
    """The test process's environment (the keyvault fixture put the managed-identity
    endpoint and the CA bundle in it) plus the example's emulator overrides."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DATABRICKS_")}
    env.pop("ODIBI_PROJECT", None)  # the notebook's default: the example of this repository
    env.pop("ODIBI_KEYVAULT_RBAC", None)  # default: a vault with Azure RBAC
    env.update(
        {
            "ODIBI_KEY_VAULT_URL": keyvault.url,
            "AZURITE_BLOB_ENDPOINT_ODIBIRAW": azurite.blob_endpoint(RAW),
            "AZURITE_BLOB_ENDPOINT_ODIBICURATED": azurite.blob_endpoint(CURATED),
            "ODIBI_RESOURCE_GROUP": "rg-odibi",
        }
    )
    return env


def _text(cell: Any) -> str:
    """Everything a code cell printed (stdout and stderr)."""
    return "".join(o.get("text", "") for o in cell.get("outputs", []) if o.output_type == "stream")


def _code_cells(nb: Any) -> list[Any]:
    return [c for c in nb.cells if c.cell_type == "code"]


@pytest.fixture
def lake(azurite: AzuriteService, keyvault: KeyVaultService) -> AzuriteService:  # noqa: F811
    """The example's containers, and both account keys stored in the vault."""
    azurite.create_container(RAW, "landing")
    azurite.create_container(CURATED, "lake")
    keyvault.set_secret(RAW_SECRET, azurite.accounts[RAW])
    keyvault.set_secret(CURATED_SECRET, azurite.accounts[CURATED])
    keyvault.reset_counts()
    return azurite


def test_notebook_is_stored_without_outputs() -> None:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    cells = _code_cells(nb)
    assert len(cells) == 6
    assert all(c.outputs == [] and c.execution_count is None for c in cells)


def test_notebook_names_the_identity_prints_grants_and_checks_both_connections(
    tmp_path: Path,
    lake: AzuriteService,
    keyvault: KeyVaultService,  # noqa: F811
) -> None:
    nb, error = _run_notebook(tmp_path, _kernel_env(lake, keyvault))

    assert error is None, str(error)
    params, identity, grants, report, spark, result = (_text(c) for c in _code_cells(nb))

    assert f"project:        {PROJECT.resolve()}" in params
    assert "resource group: rg-odibi" in params
    assert "Key Vault:      Azure RBAC" in params

    assert "on_databricks    False" in identity
    assert "credential       managed identity" in identity
    assert f"object_id        {IDENTITY_OBJECT_ID}" in identity
    assert "token_error      None" in identity
    assert "Not running on Databricks" in identity

    assert "project 'spark_databricks'" in grants and "engine spark" in grants
    commands = [line for line in grants.splitlines() if line.startswith("az ")]
    assert commands == [
        'az role assignment create --role "Key Vault Secrets User" --assignee-object-id '
        f"{IDENTITY_OBJECT_ID} --assignee-principal-type ServicePrincipal "
        f"--scope $(az keyvault show --name {VAULT} --query id -o tsv)",
        f"az keyvault secret set --vault-name {VAULT} --name {RAW_SECRET} --value "
        f'"$(az storage account keys list --account-name {RAW} --resource-group rg-odibi '
        '--query [0].value -o tsv)"',
        f"az keyvault secret set --vault-name {VAULT} --name {CURATED_SECRET} --value "
        f'"$(az storage account keys list --account-name {CURATED} --resource-group rg-odibi '
        '--query [0].value -o tsv)"',
    ]

    rows = {line.split()[0]: line.split() for line in report.splitlines() if line.strip()}
    assert rows["raw"][1:3] == ["azure_adls", "OK"], report
    assert rows["curated"][1:3] == ["azure_adls", "OK"], report
    assert f"key from Key Vault {keyvault.url} secret '{RAW_SECRET}'" in report
    assert "container 'landing' reachable" in report and "container 'lake' reachable" in report
    assert report.rstrip().endswith("2 connection(s): 2 OK, 0 FAILED")

    # no Spark session here (not Databricks): the Spark check says so and checks nothing
    assert spark.strip() == (
        "No active Spark session (not on Databricks): Spark access not checked."
    )
    assert "All 2 connection(s) work" in result
    assert "dagster job execute -f definitions.py -j orders" in result

    # Both keys came from the vault, and no key reached an output.
    secret_gets = {p.rstrip("/") for m, p, s in keyvault.requests if m == "GET" and s == 200}
    assert {f"/secrets/{RAW_SECRET}", f"/secrets/{CURATED_SECRET}"} <= secret_gets
    everything = nbformat.writes(nb)
    for key in lake.accounts.values():
        assert key not in everything


def test_notebook_fails_in_its_last_cell_naming_the_connection_without_a_secret(
    tmp_path: Path,
    lake: AzuriteService,
    keyvault: KeyVaultService,  # noqa: F811
) -> None:
    keyvault.delete_secret(CURATED_SECRET)

    nb, error = _run_notebook(tmp_path, _kernel_env(lake, keyvault))

    assert error is not None, "the notebook ran to the end although a secret is missing"
    assert error.ename == "RuntimeError"
    headline, *details = error.evalue.splitlines()
    assert headline == "1 of 2 check(s) failed: curated"
    [detail] = details
    assert detail.startswith("- connection 'curated' (account 'odibicurated', container 'lake'): ")
    assert f"could not read secret '{CURATED_SECRET}' in Key Vault {keyvault.url}" in detail
    assert "the secret does not exist" in detail
    assert f"az keyvault secret set --vault-name {VAULT} --name {CURATED_SECRET}" in detail

    *_, report, _spark, result = _code_cells(nb)
    assert [o.output_type for o in result.outputs] == ["error"]  # the cell that raised
    rows = {line.split()[0]: line.split() for line in _text(report).splitlines() if line.strip()}
    assert rows["raw"][2] == "OK" and rows["curated"][2] == "FAILED"
    assert "2 connection(s): 1 OK, 1 FAILED" in _text(report)


def test_example_project_loads_with_engine_spark_and_key_vault_connections() -> None:
    project = load_project(PROJECT, environ={})

    config = project.config
    assert project.name == "spark_databricks"
    assert config.engine == "spark"
    assert [p.pipeline for p in config.pipelines] == ["orders"]
    conns = config.connections
    assert set(conns) == {"raw", "curated"}
    for name, account, secret in (("raw", RAW, RAW_SECRET), ("curated", CURATED, CURATED_SECRET)):
        conn = conns[name]
        assert isinstance(conn, AzureAdlsConnection)
        assert (conn.account, conn.auth_mode) == (account, "key_vault")
        assert (conn.key_vault_name, conn.secret_name) == (VAULT, secret)
        assert not conn.key_vault_url and not conn.blob_endpoint  # Azure's own addresses
    formats = {
        n.name: (n.write.connection, n.write.format) for n in config.pipelines[0].nodes if n.write
    }
    assert formats == {
        "paid_orders": ("curated", "delta"),
        "customers": ("curated", "parquet"),
        "revenue_by_country": ("curated", "csv"),
    }


def test_example_data_matches_the_azure_pandas_example() -> None:
    for name in ("orders.csv", "customers.jsonl"):
        assert (PROJECT / "data" / name).read_bytes() == (
            EXAMPLES / "azure_pandas" / "data" / name
        ).read_bytes()
