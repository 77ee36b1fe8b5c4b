"""OdibiTranslator: a user's subclass changes asset keys, groups and tags; dependencies,
jobs, checks and runs follow."""

from __future__ import annotations

import csv
from pathlib import Path

import dagster as dg
import pytest

import odibi_dagster
from odibi_dagster import OdibiConfigError, OdibiNode, OdibiTranslator


class LakeTranslator(OdibiTranslator):
    """Keys under "lake", one group per layer, a team tag."""

    def get_asset_key(self, node: OdibiNode) -> dg.AssetKey:
        return dg.AssetKey(["lake", node.pipeline, node.name])

    def get_group_name(self, node: OdibiNode) -> str | None:
        return node.pipeline_config.layer

    def get_tags(self, node: OdibiNode) -> dict[str, str]:
        return {**super().get_tags(node), "team": "retail"}

    def get_automation_condition(self, node: OdibiNode) -> dg.AutomationCondition | None:
        return dg.AutomationCondition.eager() if node.pipeline == "analytics" else None


def key(*parts: str) -> dg.AssetKey:
    return dg.AssetKey(["lake", *parts])


@pytest.fixture
def retail_defs(example) -> tuple[Path, dg.Definitions]:
    root = example("retail")
    return root, odibi_dagster.load_definitions(root, translator=LakeTranslator())


def test_a_translator_subclass_changes_keys_groups_tags_and_automation(retail_defs):
    _, defs = retail_defs
    graph = defs.resolve_asset_graph()
    assert set(graph.get_all_asset_keys()) == {
        key("ingest", n)
        for n in ("raw_orders", "raw_customers", "clean_orders", "save_orders", "save_customers")
    } | {
        key("analytics", n) for n in ("orders", "customers", "revenue_by_country", "top_customers")
    } | {key("arrivals", n) for n in ("landed_orders", "arrived_orders")} | {
        key("daily", n) for n in ("day_orders", "orders_current", "daily_revenue")
    }
    clean = graph.get(key("ingest", "clean_orders"))
    assert clean.group_name == "silver"
    assert {k: v for k, v in clean.tags.items() if not k.startswith("dagster/kind/")} == {
        "odibi/layer": "silver",
        "team": "retail",
    }
    assert clean.automation_condition is None
    report = graph.get(key("analytics", "revenue_by_country"))
    assert report.group_name == "gold"
    assert report.automation_condition is not None


def test_dependencies_and_lineage_follow_the_new_keys(retail_defs):
    _, defs = retail_defs
    graph = defs.resolve_asset_graph()
    assert graph.get(key("ingest", "clean_orders")).parent_keys == {key("ingest", "raw_orders")}
    assert graph.get(key("analytics", "orders")).parent_keys == {key("ingest", "save_orders")}
    assert graph.get(key("analytics", "revenue_by_country")).parent_keys == {
        key("analytics", "orders"),
        key("analytics", "customers"),
    }
    checks = {(k.asset_key, k.name) for k in graph.asset_check_keys}
    assert (key("ingest", "raw_orders"), "no_nulls_order_id") in checks
    assert (key("analytics", "revenue_by_country"), "not_empty") in checks


def test_jobs_keep_their_pipelines_assets_whatever_the_groups(retail_defs):
    root, defs = retail_defs
    ingest = defs.resolve_job_def("ingest")
    assert set(ingest.asset_layer.executable_asset_keys) == {
        key("ingest", "clean_orders"),
        key("ingest", "save_orders"),
        key("ingest", "save_customers"),
    }
    instance = dg.DagsterInstance.ephemeral()
    assert ingest.execute_in_process(instance=instance).success
    result = defs.resolve_job_def("analytics").execute_in_process(instance=instance)
    assert result.success
    materialized = {e.asset_key for e in result.get_asset_materialization_events()}
    assert materialized == {
        key("analytics", "revenue_by_country"),
        key("analytics", "top_customers"),
    }
    with open(root / "outputs" / "gold" / "revenue_by_country.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows and {"country", "orders", "revenue"} <= set(rows[0])


def test_a_key_changed_only_in_get_asset_spec_is_refused_with_what_to_do(example):
    class SpecOnly(OdibiTranslator):
        def get_asset_spec(self, node: OdibiNode) -> dg.AssetSpec:
            spec = super().get_asset_spec(node)
            return spec.replace_attributes(key=dg.AssetKey(["x", node.name]))

    with pytest.raises(OdibiConfigError, match="Change keys in get_asset_key"):
        odibi_dagster.load_definitions(example("retail"), translator=SpecOnly())


def test_two_nodes_given_one_key_are_named_at_the_node(example):
    class Clash(OdibiTranslator):
        def get_asset_key(self, node: OdibiNode) -> dg.AssetKey:
            return dg.AssetKey(["all", node.name.split("_")[-1]])  # customers ~ top_customers

    with pytest.raises(OdibiConfigError) as err:
        odibi_dagster.load_definitions(example("retail"), translator=Clash())
    (problem,) = err.value.problems
    assert problem.file.endswith("analytics.yaml") and problem.line
    assert problem.message.startswith(
        "Clash: node 'top_customers': get_asset_key gives it all/customers, the key of node "
        "'analytics.customers' too"
    )


def test_a_group_dagster_refuses_is_named_at_the_node(example):
    class Spaced(OdibiTranslator):
        def get_group_name(self, node: OdibiNode) -> str | None:
            return f"{node.pipeline} layer"

    with pytest.raises(OdibiConfigError) as err:
        odibi_dagster.load_definitions(example("retail"), translator=Spaced())
    (problem,) = err.value.problems
    assert problem.file.endswith("analytics.yaml") and problem.line
    assert problem.message.startswith(
        "Spaced: node 'orders': Dagster refused its asset: \"analytics layer\" is not a valid "
        "asset group name"
    )
