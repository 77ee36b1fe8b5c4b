"""The YAML -> Dagster mapping: assets, groups, jobs, lineage, checks, schedules."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

import odibi_dagster
from odibi_dagster_tests.support.paths import EXAMPLES, reference_dir


def key(*parts: str) -> dg.AssetKey:
    return dg.AssetKey(list(parts))


@pytest.fixture(scope="module")
def retail() -> dg.Definitions:
    return odibi_dagster.load_definitions(EXAMPLES / "retail")


def specs_by_key(defs: dg.Definitions) -> dict[dg.AssetKey, dg.AssetSpec]:
    graph = defs.resolve_asset_graph()
    return {k: graph.get(k) for k in graph.get_all_asset_keys()}  # type: ignore[misc]


def test_every_node_becomes_an_asset_keyed_by_pipeline_and_node(retail):
    keys = set(retail.resolve_asset_graph().get_all_asset_keys())
    assert keys == {
        key("ingest", "raw_orders"),
        key("ingest", "raw_customers"),
        key("ingest", "clean_orders"),
        key("ingest", "save_orders"),
        key("ingest", "save_customers"),
        key("analytics", "orders"),
        key("analytics", "customers"),
        key("analytics", "revenue_by_country"),
        key("analytics", "top_customers"),
        key("arrivals", "landed_orders"),
        key("arrivals", "arrived_orders"),
        key("daily", "day_orders"),
        key("daily", "orders_current"),
        key("daily", "daily_revenue"),
    }


def test_read_only_nodes_are_external_assets(retail):
    graph = retail.resolve_asset_graph()
    external = {k for k in graph.get_all_asset_keys() if not graph.get(k).is_materializable}
    assert external == {
        key("ingest", "raw_orders"),
        key("ingest", "raw_customers"),
        key("analytics", "orders"),
        key("analytics", "customers"),
        key("arrivals", "landed_orders"),
        key("daily", "day_orders"),
    }


def test_each_pipeline_is_a_group_and_a_job(retail):
    graph = retail.resolve_asset_graph()
    groups = {k.path[0]: graph.get(k).group_name for k in graph.get_all_asset_keys()}
    assert groups == {
        "ingest": "ingest",
        "analytics": "analytics",
        "arrivals": "arrivals",
        "daily": "daily",
    }
    assert {j.name for j in retail.resolve_all_job_defs()} >= {"ingest", "analytics"}
    ingest_job = retail.resolve_job_def("ingest")
    assert {k.path[1] for k in ingest_job.asset_layer.executable_asset_keys} == {
        "clean_orders",
        "save_orders",
        "save_customers",
    }


def test_depends_on_becomes_asset_inputs(retail):
    graph = retail.resolve_asset_graph()
    assert graph.get(key("ingest", "clean_orders")).parent_keys == {key("ingest", "raw_orders")}
    assert graph.get(key("analytics", "revenue_by_country")).parent_keys == {
        key("analytics", "orders"),
        key("analytics", "customers"),
    }


def test_reading_a_path_another_pipeline_writes_draws_lineage(retail):
    graph = retail.resolve_asset_graph()
    assert graph.get(key("analytics", "orders")).parent_keys == {key("ingest", "save_orders")}
    assert graph.get(key("analytics", "customers")).parent_keys == {key("ingest", "save_customers")}


def test_validation_blocks_become_asset_checks(retail):
    graph = retail.resolve_asset_graph()
    checks = {(c.asset_key.path[1], c.name) for c in graph.asset_check_keys}
    assert checks == {
        ("raw_orders", "not_empty"),
        ("raw_orders", "no_nulls_order_id"),
        ("clean_orders", "no_nulls_customer_id"),
        ("clean_orders", "schema"),
        ("revenue_by_country", "not_empty"),
    }


def test_yaml_descriptions_show_on_assets_and_jobs(retail):
    graph = retail.resolve_asset_graph()
    desc = graph.get(key("ingest", "clean_orders")).description
    assert desc.startswith("Drop cancelled and empty lines, price each line")
    assert "ingest.yaml:30" in desc
    assert (
        "Revenue reports from the silver layer" in retail.resolve_job_def("analytics").description
    )


def test_pipeline_schedule_targets_its_job(retail):
    schedule = retail.resolve_schedule_def("analytics_schedule")
    assert schedule.cron_schedule == "0 6 * * *"
    assert schedule.job_name == "analytics"


def test_retry_block_becomes_a_retry_policy(retail):
    graph = retail.resolve_asset_graph()
    assets_def = graph.get(key("ingest", "clean_orders")).assets_def
    policy = assets_def.op.retry_policy
    assert policy is not None and policy.max_retries == 1 and policy.delay == 1


def test_in_process_is_the_default_executor_and_yaml_can_choose(tmp_path: Path):
    text = (EXAMPLES / "quickstart" / "pipeline.yaml").read_text()
    text = text.replace(
        "  - pipeline: silver_to_gold\n",
        "  - pipeline: silver_to_gold\n    executor: multiprocess\n",
    )
    (tmp_path / "data").mkdir()
    (tmp_path / "p.yaml").write_text(text)
    defs = odibi_dagster.load_definitions(tmp_path / "p.yaml")
    assert defs.resolve_job_def("bronze_to_silver").executor_def.name == "in_process"
    assert defs.resolve_job_def("silver_to_gold").executor_def.name == "multiprocess"


def test_node_names_repeat_across_pipelines_in_getting_started():
    defs = odibi_dagster.load_definitions(reference_dir() / "getting_started")
    keys = set(defs.resolve_asset_graph().get_all_asset_keys())
    for pipeline in ("simple_etl", "transform_etl", "advanced_etl"):
        assert key(pipeline, "load_sales") in keys
    assert {j.name for j in defs.resolve_all_job_defs()} >= {
        "simple_etl",
        "transform_etl",
        "advanced_etl",
    }


def test_compiling_touches_no_data(tmp_path: Path):
    """Data directories need not exist to load definitions, and loading creates nothing."""
    (tmp_path / "p.yaml").write_text((EXAMPLES / "quickstart" / "pipeline.yaml").read_text())
    defs = odibi_dagster.load_definitions(tmp_path / "p.yaml")
    defs.resolve_all_job_defs()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.yaml"]


def test_azure_connections_compile_offline_to_azure_resources():
    """No vault, no storage account: loading stays offline; the vault is reached at run time."""
    defs = odibi_dagster.load_definitions(reference_dir() / "template_full_adls.yaml")
    bronze = defs.resources["bronze"]
    assert isinstance(bronze, odibi_dagster.AzureADLS)
    assert (bronze.account, bronze.container, bronze.path_prefix) == (
        "mystorageaccount1",
        "bronze",
        "raw",
    )
    assert (bronze.key_vault_name, bronze.secret_name) == ("company-keyvault", "bronze-storage-key")
    assert bronze.vault_url == "https://company-keyvault.vault.azure.net"
    spec = defs.resolve_assets_def(dg.AssetKey(["ingest_and_clean", "clean_sales"]))
    # each step sets up every connection of its pipeline, so a run checks them all first
    assert {"bronze", "silver"} <= spec.required_resource_keys
    save_key = dg.AssetKey(["ingest_and_clean", "save_clean_sales"])
    description = defs.resolve_assets_def(save_key).descriptions_by_key[save_key]
    assert "`abfss://silver@mystorageaccount2.dfs.core.windows.net/cleaned/" in description


def load_text(tmp_path: Path, text: str) -> dg.Definitions:
    (tmp_path / "p.yaml").write_text(text)
    return odibi_dagster.load_definitions(tmp_path / "p.yaml")


def test_reading_what_the_same_pipeline_writes_runs_after_the_writer(tmp_path: Path):
    defs = load_text(
        tmp_path,
        """
connections: {fs: {type: local, base_path: .}}
pipelines:
  - pipeline: p
    nodes:
      - name: src
        read: {connection: fs, path: in.csv, format: csv}
      - name: write_silver
        depends_on: [src]
        write: {connection: fs, path: silver.parquet, format: parquet}
      - name: read_silver
        read: {connection: fs, path: silver.parquet, format: parquet}
""",
    )
    graph = defs.resolve_asset_graph()
    reader = graph.get(key("p", "read_silver"))
    assert reader.is_materializable
    assert reader.parent_keys == {key("p", "write_silver")}
    assert key("p", "read_silver") in defs.resolve_job_def("p").asset_layer.executable_asset_keys


def test_nodes_that_read_and_write_one_path_do_not_make_a_cycle(tmp_path: Path):
    """Two appenders of one table each read it: lineage keeps the first edge only."""
    defs = load_text(
        tmp_path,
        """
connections: {fs: {type: local, base_path: .}}
pipelines:
  - pipeline: p1
    nodes:
      - name: n
        read: {connection: fs, path: d.csv, format: csv}
        write: {connection: fs, path: d.csv, format: csv, mode: append}
  - pipeline: p2
    nodes:
      - name: m
        read: {connection: fs, path: d.csv, format: csv}
        write: {connection: fs, path: d.csv, format: csv, mode: append}
""",
    )
    graph = defs.resolve_asset_graph()
    assert graph.get(key("p1", "n")).parent_keys == {key("p2", "m")}
    assert graph.get(key("p2", "m")).parent_keys == set()


def test_names_dagster_restricts_are_made_valid(tmp_path: Path):
    defs = load_text(
        tmp_path,
        """
connections: {fs: {type: local, base_path: .}}
pipelines:
  - pipeline: p
    layer: "Bronze → Silver"
    nodes:
      - name: src
        read: {connection: fs, path: in.csv, format: csv}
      - name: out
        depends_on: [src]
        transform: {steps: ["SELECT * FROM src"]}
        validation: {no_nulls: ["prénom", "a b", "a-b"]}
""",
    )
    graph = defs.resolve_asset_graph()
    assert graph.get(key("p", "out")).tags["odibi/layer"] == "Bronze___Silver"
    names = sorted(c.name for c in graph.asset_check_keys)
    assert names == ["no_nulls_a_b", "no_nulls_a_b_2", "no_nulls_pr_nom"]


def test_values_from_the_environment_show_as_written_in_metadata(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("ODIBI_TEST_SEPARATOR", "sep-secret-value")
    defs = load_text(
        tmp_path,
        """
connections: {fs: {type: local, base_path: .}}
pipelines:
  - pipeline: p
    nodes:
      - name: src
        read: {connection: fs, path: in.csv, format: csv, options: {sep: "${ODIBI_TEST_SEPARATOR}"}}
      - name: out
        depends_on: [src]
        write: {connection: fs, path: out.csv, format: csv, options: {sep: "${ODIBI_TEST_SEPARATOR}"}}
""",
    )
    graph = defs.resolve_asset_graph()
    for node in ("src", "out"):
        text = str(graph.get(key("p", node)).metadata)
        assert "sep-secret-value" not in text
        assert "${ODIBI_TEST_SEPARATOR}" in text
