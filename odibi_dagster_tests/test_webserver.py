"""End to end: the examples served by a real dagster-webserver, read through GraphQL and a browser.

One webserver for the module, started from a copy of ``examples/`` and ``workspace.yaml`` in a
temporary directory with its own DAGSTER_HOME; nothing is written into the repository.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from odibi_dagster_tests.support import webserver as ws

LOCATIONS = ["retail", "quickstart", "spark_databricks"]
RETAIL = "retail"

needs_chromium = pytest.mark.skipif(
    not Path(ws.CHROMIUM).exists(),
    reason=f"browser tests need Debian's Chromium at {ws.CHROMIUM} (no Playwright browser here)",
)


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("webserver")


@pytest.fixture(scope="module")
def workspace_file(workdir: Path) -> Path:
    return ws.copy_workspace(workdir / "workspace")


@pytest.fixture(scope="module")
def retail_dir(workspace_file: Path) -> Path:
    return workspace_file.parent / "examples" / "retail"


@pytest.fixture(scope="module")
def server(workdir: Path, workspace_file: Path) -> Iterator[ws.Webserver]:
    home = ws.make_dagster_home(workdir / "dagster_home")
    srv = ws.start_webserver(
        workspace_file, home, log_path=workdir / "webserver.log", locations=LOCATIONS
    )
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def gql(server: ws.Webserver) -> ws.GraphQLClient:
    return server.graphql


REPOSITORY_QUERY = """
query Retail($selector: RepositorySelector!) {
  repositoryOrError(repositorySelector: $selector) {
    __typename
    ... on Repository {
      jobs { name }
      schedules { name cronSchedule pipelineName }
      sensors { name minIntervalSeconds targets { pipelineName } sensorState { status } }
      assetGroups { groupName }
      assetNodes {
        assetKey { path }
        groupName
        description
        isExecutable
        jobNames
        dependencyKeys { path }
        assetChecksOrError {
          __typename
          ... on AssetChecks { checks { name } }
        }
      }
    }
    ... on PythonError { message }
    ... on RepositoryNotFoundError { message }
  }
}
"""


@pytest.fixture(scope="module")
def retail_repo(gql: ws.GraphQLClient) -> dict[str, Any]:
    selector = {"repositoryLocationName": RETAIL, "repositoryName": ws.REPOSITORY_NAME}
    repo = gql.query(REPOSITORY_QUERY, {"selector": selector})["repositoryOrError"]
    assert repo["__typename"] == "Repository", repo
    return dict(repo)


@pytest.fixture(scope="module")
def retail_assets(retail_repo: dict[str, Any]) -> dict[tuple[str, ...], dict[str, Any]]:
    return {tuple(n["assetKey"]["path"]): n for n in retail_repo["assetNodes"]}


def check_names(node: dict[str, Any]) -> set[str]:
    checks = node["assetChecksOrError"]
    assert checks["__typename"] == "AssetChecks", checks
    return {c["name"] for c in checks["checks"]}


# --------------------------------------------------------------------------- GraphQL: definitions


def test_retail_location_has_one_asset_group_per_pipeline(retail_repo: dict[str, Any]) -> None:
    assert {g["groupName"] for g in retail_repo["assetGroups"]} == {
        "ingest",
        "analytics",
        "arrivals",
        "daily",
    }


def test_retail_assets_are_keyed_pipeline_then_node(
    retail_assets: dict[tuple[str, ...], dict[str, Any]],
) -> None:
    assert {
        ("ingest", "raw_orders"),
        ("ingest", "clean_orders"),
        ("ingest", "save_orders"),
        ("ingest", "save_customers"),
        ("analytics", "orders"),
        ("analytics", "customers"),
        ("analytics", "revenue_by_country"),
    } <= set(retail_assets)
    assert {k[0] for k in retail_assets} == {"ingest", "analytics", "arrivals", "daily"}
    assert all(len(k) == 2 for k in retail_assets)
    assert all(n["groupName"] == n["assetKey"]["path"][0] for n in retail_assets.values())


def test_reads_of_written_paths_are_lineage_edges_across_pipelines(
    retail_assets: dict[tuple[str, ...], dict[str, Any]],
) -> None:
    def deps(key: tuple[str, ...]) -> list[list[str]]:
        return sorted(d["path"] for d in retail_assets[key]["dependencyKeys"])

    assert deps(("analytics", "orders")) == [["ingest", "save_orders"]]
    assert deps(("analytics", "customers")) == [["ingest", "save_customers"]]
    assert deps(("analytics", "revenue_by_country")) == [
        ["analytics", "customers"],
        ["analytics", "orders"],
    ]
    # within a pipeline too: the daily revenue reads the table orders_current upserts into
    assert deps(("daily", "daily_revenue")) == [["daily", "orders_current"]]


def test_read_only_nodes_are_external_assets(
    retail_assets: dict[tuple[str, ...], dict[str, Any]],
) -> None:
    def executable(*key: str) -> bool:
        return bool(retail_assets[key]["isExecutable"])

    assert not executable("ingest", "raw_orders")
    assert not executable("ingest", "raw_customers")
    assert not executable("analytics", "orders")
    assert not executable("analytics", "customers")
    assert executable("ingest", "clean_orders")
    assert executable("ingest", "save_orders")
    assert executable("analytics", "revenue_by_country")


def test_one_job_per_pipeline(
    retail_repo: dict[str, Any], retail_assets: dict[tuple[str, ...], dict[str, Any]]
) -> None:
    jobs = {j["name"] for j in retail_repo["jobs"]}
    assert {"ingest", "analytics", "arrivals", "daily"} <= jobs
    assert jobs - {"ingest", "analytics", "arrivals", "daily"} <= {"__ASSET_JOB"}
    assert "ingest" in retail_assets[("ingest", "clean_orders")]["jobNames"]
    assert "analytics" not in retail_assets[("ingest", "clean_orders")]["jobNames"]
    assert "analytics" in retail_assets[("analytics", "revenue_by_country")]["jobNames"]


def test_pipeline_schedule_is_a_schedule_of_its_job(retail_repo: dict[str, Any]) -> None:
    assert retail_repo["schedules"] == [
        {"name": "analytics_schedule", "cronSchedule": "0 6 * * *", "pipelineName": "analytics"}
    ]


def test_sensors_are_listed_with_their_jobs_and_status(retail_repo: dict[str, Any]) -> None:
    sensors = {s["name"]: s for s in retail_repo["sensors"]}
    arrived = sensors["orders_arrived"]
    assert arrived["targets"] == [{"pipelineName": "arrivals"}]
    assert arrived["minIntervalSeconds"] == 10
    assert arrived["sensorState"]["status"] == "RUNNING"  # enabled: true
    after = sensors["analytics_run_after_sensor"]
    assert after["targets"] == [{"pipelineName": "analytics"}]
    assert after["sensorState"]["status"] == "RUNNING"


def test_validation_blocks_are_asset_checks(
    retail_assets: dict[tuple[str, ...], dict[str, Any]],
) -> None:
    assert check_names(retail_assets[("ingest", "clean_orders")]) == {
        "no_nulls_customer_id",
        "schema",
    }
    assert check_names(retail_assets[("ingest", "raw_orders")]) == {
        "not_empty",
        "no_nulls_order_id",
    }
    assert check_names(retail_assets[("analytics", "revenue_by_country")]) == {"not_empty"}
    assert check_names(retail_assets[("ingest", "save_orders")]) == set()


def test_asset_description_comes_from_the_yaml(
    retail_assets: dict[tuple[str, ...], dict[str, Any]],
) -> None:
    description = retail_assets[("ingest", "clean_orders")]["description"]
    assert "Drop cancelled and empty lines" in description


COLUMN_METADATA = """
    metadataEntries {
      __typename
      label
      ... on TableColumnLineageMetadataEntry {
        lineage { columnName columnDeps { assetKey { path } columnName } }
      }
      ... on TableSchemaMetadataEntry { schema { columns { name type } } }
    }
"""

ASSET_NODE_COLUMNS_QUERY = (
    """
query Columns($key: AssetKeyInput!) {
  assetNodeOrError(assetKey: $key) {
    __typename
    ... on AssetNode {"""
    + COLUMN_METADATA
    + """    }
  }
}
"""
)

MATERIALIZED_COLUMNS_QUERY = (
    """
query MaterializedColumns($key: AssetKeyInput!) {
  assetOrError(assetKey: $key) {
    ... on Asset {
      assetMaterializations(limit: 1) {"""
    + COLUMN_METADATA
    + """      }
    }
  }
}
"""
)

GOLD_LINEAGE = {
    "country": {("analytics/customers", "country")},
    "orders": {("analytics/orders", "order_id")},
    "revenue": {("analytics/orders", "amount")},
}


def column_entries(entries: list[dict[str, Any]]) -> tuple[dict[str, set[Any]], list[Any]]:
    """The ``dagster/column_lineage`` (column -> {(asset, column)}) and the column schema
    [(name, type)] among metadata entries."""
    by_label = {e["label"]: e for e in entries}
    lineage = by_label["dagster/column_lineage"]
    assert lineage["__typename"] == "TableColumnLineageMetadataEntry"
    schema = by_label["dagster/column_schema"]
    assert schema["__typename"] == "TableSchemaMetadataEntry"
    return (
        {
            e["columnName"]: {
                ("/".join(d["assetKey"]["path"]), d["columnName"]) for d in e["columnDeps"]
            }
            for e in lineage["lineage"]
        },
        [(c["name"], c["type"]) for c in schema["schema"]["columns"]],
    )


def test_gold_asset_definition_has_column_lineage_and_schema(gql: ws.GraphQLClient) -> None:
    """Known at load, from the YAML: the gold columns through the read of what ``ingest``
    writes, before any run."""
    node = gql.query(
        ASSET_NODE_COLUMNS_QUERY, {"key": {"path": ["analytics", "revenue_by_country"]}}
    )["assetNodeOrError"]
    assert node["__typename"] == "AssetNode", node
    lineage, schema = column_entries(node["metadataEntries"])
    assert lineage == GOLD_LINEAGE
    assert schema == [("country", "unknown"), ("orders", "unknown"), ("revenue", "unknown")]
    orders = gql.query(ASSET_NODE_COLUMNS_QUERY, {"key": {"path": ["analytics", "orders"]}})
    lineage, _ = column_entries(orders["assetNodeOrError"]["metadataEntries"])
    assert lineage["amount"] == {("ingest/save_orders", "amount")}  # across pipelines


# --------------------------------------------------------------------------- GraphQL: runs

MATERIALIZATION_QUERY = """
query Latest($key: AssetKeyInput!) {
  assetOrError(assetKey: $key) {
    __typename
    ... on Asset {
      assetMaterializations(limit: 1) {
        runId
        metadataEntries {
          __typename
          label
          ... on IntMetadataEntry { intValue }
        }
      }
    }
  }
}
"""


@pytest.fixture(scope="module")
def retail_runs(gql: ws.GraphQLClient, retail_dir: Path) -> dict[str, str]:
    """Run ``ingest`` then ``analytics`` through GraphQL; job name -> run id (both succeeded)."""
    assert not (retail_dir / "outputs").exists(), "the copy must start without outputs"
    runs: dict[str, str] = {}
    for job in ("ingest", "analytics"):
        run_id = ws.launch_run(gql, RETAIL, job)
        status = ws.wait_for_run(gql, run_id, timeout=120)
        assert status == "SUCCESS", (job, status, ws.run_error_messages(gql, run_id))
        runs[job] = run_id
    return runs


def expected_revenue_by_country(raw: Path) -> list[dict[str, Any]]:
    """revenue_by_country computed from the raw files with the csv and json modules."""
    with open(raw / "orders.csv", newline="") as f:
        orders = [
            r for r in csv.DictReader(f) if r["status"] != "cancelled" and int(r["quantity"]) > 0
        ]
    country_of: dict[str, str] = {}
    for line in (raw / "customers.jsonl").read_text().splitlines():
        if line.strip():
            c = json.loads(line)
            country_of[c["customer_id"]] = (c.get("country") or "NL").strip().upper()
    ids: dict[str, set[str]] = {}
    revenue: dict[str, float] = {}
    for o in orders:
        if o["customer_id"] not in country_of:  # inner join
            continue
        country = country_of[o["customer_id"]]
        amount = round(int(o["quantity"]) * float(o["unit_price"]), 2)
        ids.setdefault(country, set()).add(o["order_id"])
        revenue[country] = revenue.get(country, 0.0) + amount
    rows = [{"country": c, "orders": len(ids[c]), "revenue": round(revenue[c], 2)} for c in revenue]
    return sorted(rows, key=lambda r: -r["revenue"])


def test_expected_rows_are_not_trivial(retail_dir: Path) -> None:
    """Guards the independent computation itself against the raw data (5 countries)."""
    rows = expected_revenue_by_country(retail_dir / "data" / "raw")
    assert [r["country"] for r in rows] == ["NL", "PT", "FR", "CZ", "DK"]


def test_runs_of_both_pipelines_succeed_via_graphql(
    gql: ws.GraphQLClient, retail_runs: dict[str, str]
) -> None:
    for job, run_id in retail_runs.items():
        run = gql.query(ws.RUN_STATUS, {"runId": run_id})["runOrError"]
        assert run["status"] == "SUCCESS", job


def test_materialization_reports_row_count(
    gql: ws.GraphQLClient, retail_runs: dict[str, str]
) -> None:
    asset = gql.query(MATERIALIZATION_QUERY, {"key": {"path": ["analytics", "revenue_by_country"]}})
    mats = asset["assetOrError"]["assetMaterializations"]
    assert len(mats) == 1
    assert mats[0]["runId"] == retail_runs["analytics"]
    row_counts = [
        e["intValue"] for e in mats[0]["metadataEntries"] if e["label"] == "dagster/row_count"
    ]
    assert row_counts == [5]


def test_materialization_reports_column_lineage_and_typed_schema(
    gql: ws.GraphQLClient, retail_runs: dict[str, str]
) -> None:
    asset = gql.query(
        MATERIALIZED_COLUMNS_QUERY, {"key": {"path": ["analytics", "revenue_by_country"]}}
    )
    (mat,) = asset["assetOrError"]["assetMaterializations"]
    lineage, schema = column_entries(mat["metadataEntries"])
    assert lineage == GOLD_LINEAGE
    assert [name for name, _ in schema] == ["country", "orders", "revenue"]
    assert all(t != "unknown" for _, t in schema)  # the run knows the types


CHECK_EXECUTIONS_QUERY = """
query Checks($key: AssetKeyInput!, $check: String!) {
  assetCheckExecutions(assetKey: $key, checkName: $check, limit: 5) { runId status }
}
"""


@pytest.mark.parametrize(
    ("asset", "check"),
    [
        (("ingest", "raw_orders"), "not_empty"),
        (("ingest", "raw_orders"), "no_nulls_order_id"),
        (("ingest", "clean_orders"), "no_nulls_customer_id"),
        (("ingest", "clean_orders"), "schema"),
    ],
)
def test_pipeline_job_runs_its_checks_and_they_pass(
    gql: ws.GraphQLClient, retail_runs: dict[str, str], asset: tuple[str, str], check: str
) -> None:
    executions = gql.query(CHECK_EXECUTIONS_QUERY, {"key": {"path": list(asset)}, "check": check})
    assert executions["assetCheckExecutions"] == [
        {"runId": retail_runs["ingest"], "status": "SUCCEEDED"}
    ]


def test_run_writes_revenue_by_country_csv(retail_runs: dict[str, str], retail_dir: Path) -> None:
    written = retail_dir / "outputs" / "gold" / "revenue_by_country.csv"
    with open(written, newline="") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == ["country", "orders", "revenue"]
        got = [
            {"country": r["country"], "orders": int(r["orders"]), "revenue": float(r["revenue"])}
            for r in reader
        ]
    expected = expected_revenue_by_country(retail_dir / "data" / "raw")
    assert [r["country"] for r in got] == [r["country"] for r in expected]
    assert [r["orders"] for r in got] == [r["orders"] for r in expected]
    assert [r["revenue"] for r in got] == pytest.approx([r["revenue"] for r in expected], abs=1e-9)


# --------------------------------------------------------------------------- browser

# Dagster 1.13 UI routes.
GLOBAL_LINEAGE = "/asset-groups"
GROUP_LINEAGE = "/locations/{location}/asset-groups/{group}/lineage"
ASSET_CHECKS = "/assets/{path}?view=checks"
ASSET_OVERVIEW = "/assets/{path}"
UI_TIMEOUT_MS = 60_000


@pytest.fixture(scope="module")
def browser(server: ws.Webserver) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    # The "Join the Dagster community" dialog would cover the graph in the screenshots.
    assert server.graphql.query("mutation { setNuxSeen }")["setNuxSeen"] is True
    pw = sync_playwright().start()
    try:
        b = pw.chromium.launch(executable_path=ws.CHROMIUM, args=ws.CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()
    finally:
        pw.stop()


@pytest.fixture
def page(browser: Any, server: ws.Webserver) -> Iterator[Any]:
    context = browser.new_context(
        base_url=server.base_url, viewport={"width": 1600, "height": 1000}
    )
    context.set_default_timeout(UI_TIMEOUT_MS)
    try:
        yield context.new_page()
    finally:
        context.close()


@pytest.fixture(scope="module")
def screenshots(workdir: Path) -> Path:
    path = workdir / "screenshots"
    path.mkdir()
    return path


def graph_label(page: Any, text: str) -> Any:
    """A node label drawn inside the lineage graph (SVG foreignObject), not in a side list."""
    return page.locator("svg foreignObject").get_by_text(text, exact=True).first


def open_graph(page: Any, url: str, labels: list[str], shot: Path) -> str:
    page.goto(url, wait_until="domcontentloaded")
    for label in labels:
        graph_label(page, label).wait_for(state="visible")
    page.wait_for_timeout(500)  # let the edges settle for the screenshot
    page.screenshot(path=str(shot))
    return str(page.inner_text("body"))


@needs_chromium
def test_global_lineage_page_draws_every_group(page: Any, screenshots: Path) -> None:
    text = open_graph(
        page,
        GLOBAL_LINEAGE,
        ["ingest", "analytics", "bronze_to_silver", "silver_to_gold"],
        screenshots / "global_lineage.png",
    )
    assert "Global asset lineage" in text


@needs_chromium
def test_ingest_group_lineage_draws_its_nodes(page: Any, screenshots: Path) -> None:
    text = open_graph(
        page,
        GROUP_LINEAGE.format(location=RETAIL, group="ingest"),
        ["raw_orders", "clean_orders", "save_orders"],
        screenshots / "ingest_lineage.png",
    )
    assert "clean_orders" in text
    assert "save_orders" in text


@needs_chromium
def test_analytics_group_lineage_draws_its_nodes_and_upstream_pipeline(
    page: Any, screenshots: Path
) -> None:
    # save_orders / save_customers are drawn as links to the other group: cross-pipeline lineage.
    text = open_graph(
        page,
        GROUP_LINEAGE.format(location=RETAIL, group="analytics"),
        ["revenue_by_country", "orders", "save_orders", "save_customers"],
        screenshots / "analytics_lineage.png",
    )
    assert "revenue_by_country" in text


@needs_chromium
def test_asset_page_lists_its_checks(page: Any, screenshots: Path) -> None:
    page.goto(ASSET_CHECKS.format(path="ingest/clean_orders"), wait_until="domcontentloaded")
    page.get_by_text("schema", exact=True).first.wait_for(state="visible")
    page.get_by_text("no_nulls_customer_id", exact=True).first.wait_for(state="visible")
    page.screenshot(path=str(screenshots / "clean_orders_checks.png"))
    assert "schema" in page.inner_text("body")


@needs_chromium
def test_gold_asset_page_shows_its_columns(
    page: Any, screenshots: Path, retail_runs: dict[str, str]
) -> None:
    """The Columns table of the asset page, from ``dagster/column_schema``. The open-source
    UI draws no column lineage (it hides the ``dagster/column_lineage`` entry and leaves
    its column links to Dagster+): GraphQL, which the UI reads, is checked above."""
    page.goto(
        ASSET_OVERVIEW.format(path="analytics/revenue_by_country"), wait_until="domcontentloaded"
    )
    page.get_by_text("Columns", exact=True).first.wait_for(state="visible")
    for column in ("country", "orders", "revenue"):
        page.get_by_text(column, exact=True).first.wait_for(state="visible")
    page.screenshot(path=str(screenshots / "revenue_by_country_columns.png"), full_page=True)
    text = page.inner_text("body")
    assert "float64" in text  # the type the run found (the definition says "unknown")


@needs_chromium
def test_automation_page_shows_the_sensors_and_the_schedule(page: Any, screenshots: Path) -> None:
    page.goto("/automation", wait_until="domcontentloaded")
    for name in ("orders_arrived", "analytics_run_after_sensor", "analytics_schedule"):
        page.get_by_text(name, exact=True).first.wait_for(state="visible")
    page.screenshot(path=str(screenshots / "automation.png"))
    text = page.inner_text("body")
    assert "orders_arrived" in text and "analytics_schedule" in text
