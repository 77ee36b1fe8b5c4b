"""Pipelines run end to end through Dagster; outputs are checked against an independent
computation with the csv/json modules (never against odibi_dagster's own output)."""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq
import pytest

import odibi_dagster
from odibi_dagster_tests.support.cli import run_cli
from odibi_dagster_tests.support.runs import failure_text, run_job


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# --------------------------------------------------------------------------- reference configs


def expected_example_local_gold(sales_csv: Path) -> dict[str, tuple[int, float, float, str]]:
    per_customer: dict[str, list[tuple[float, str]]] = defaultdict(list)
    for row in read_csv(sales_csv):
        amount = float(row["amount"])
        if amount > 0 and row["transaction_date"]:
            per_customer[row["customer_id"]].append((amount, row["transaction_date"]))
    out = {}
    for cust, items in per_customer.items():
        total = sum(a for a, _ in items)
        if total > 100:
            out[cust] = (len(items), total, total / len(items), max(d for _, d in items))
    return out


def test_example_local_runs_unchanged_through_the_cli(reference):
    config = reference("example_local.yaml")
    result = run_cli("odibi-dagster", "run", config)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert "pipeline bronze_to_silver" in result.stdout
    assert result.stdout.index("bronze_to_silver") < result.stdout.index("silver_to_gold")

    gold = pq.read_table(config.parent / "data" / "gold" / "customer_summary.parquet").to_pylist()
    got = {
        r["customer_id"]: (
            r["transaction_count"],
            r["total_spent"],
            r["avg_transaction"],
            str(r["last_purchase_date"]),
        )
        for r in gold
    }
    expected = expected_example_local_gold(config.parent / "data" / "bronze" / "sales.csv")
    assert set(got) == set(expected)
    for cust, (n, total, avg, last) in expected.items():
        assert got[cust][0] == n
        assert got[cust][1] == pytest.approx(total)
        assert got[cust][2] == pytest.approx(avg)
        assert got[cust][3] == last
    # the story block of the file writes a story per run
    stories = list((config.parent / "outputs" / "stories").rglob("story.html"))
    assert len(stories) == 2


def test_getting_started_runs_its_three_pipelines(reference):
    project = reference("getting_started")
    result = run_cli("odibi-dagster", "run", project)
    assert result.returncode == 0, result.stdout + result.stderr

    sales = read_csv(project / "data" / "sales.csv")
    customers = {c["customer_id"]: c for c in read_csv(project / "data" / "customers.csv")}
    electronics = [r for r in sales if r["category"] == "Electronics"]
    got = read_csv(project / "output" / "electronics_sales.csv")
    assert [r["id"] for r in got] == [r["id"] for r in electronics]
    for g, s in zip(got, electronics, strict=True):
        assert float(g["revenue"]) == pytest.approx(int(s["quantity"]) * float(s["price"]))

    by_product: dict[str, list[float]] = defaultdict(lambda: [0, 0.0])
    for r in sales:
        by_product[r["product"]][0] += int(r["quantity"])
        by_product[r["product"]][1] += int(r["quantity"]) * float(r["price"])
    summary = {r["product"]: r for r in read_csv(project / "output" / "product_summary.csv")}
    assert set(summary) == set(by_product)
    for product, (qty, revenue) in by_product.items():
        assert int(summary[product]["total_quantity"]) == qty
        assert float(summary[product]["total_revenue"]) == pytest.approx(revenue)

    enriched = read_csv(project / "output" / "enriched_sales.csv")
    assert len(enriched) == len(sales)
    for row in enriched:
        assert row["name"] == customers[row["customer_id"]]["name"]
    assert pq.read_table(project / "output" / "sales.parquet").num_rows == len(sales)


# --------------------------------------------------------------------------- the retail example


def expected_revenue_by_country(raw: Path) -> dict[str, tuple[int, float]]:
    countries = {}
    for line in (raw / "customers.jsonl").read_text().splitlines():
        c = json.loads(line)
        countries[c["customer_id"]] = (c["country"] or "NL").strip().upper()
    orders: dict[str, set[str]] = defaultdict(set)
    revenue: dict[str, float] = defaultdict(float)
    for r in read_csv(raw / "orders.csv"):
        if r["status"] == "cancelled" or int(r["quantity"]) <= 0:
            continue
        country = countries[r["customer_id"]]
        orders[country].add(r["order_id"])
        revenue[country] += round(int(r["quantity"]) * float(r["unit_price"]), 2)
    return {c: (len(orders[c]), round(revenue[c], 2)) for c in orders}


def test_retail_example_produces_the_expected_reports(example):
    root = example("retail")
    defs = odibi_dagster.load_definitions(root)
    assert run_job(defs, "ingest").success
    assert run_job(defs, "analytics").success

    expected = expected_revenue_by_country(root / "data" / "raw")
    got = read_csv(root / "outputs" / "gold" / "revenue_by_country.csv")
    assert {r["country"]: (int(r["orders"]), float(r["revenue"])) for r in got} == expected
    revenues = [float(r["revenue"]) for r in got]
    assert revenues == sorted(revenues, reverse=True)

    top = [
        json.loads(line)
        for line in (root / "outputs" / "gold" / "top_customers.json").read_text().splitlines()
    ]
    spent: dict[str, float] = defaultdict(float)
    for r in read_csv(root / "data" / "raw" / "orders.csv"):
        if r["status"] != "cancelled" and int(r["quantity"]) > 0:
            spent[r["customer_id"]] += round(int(r["quantity"]) * float(r["unit_price"]), 2)
    best = sorted(spent.items(), key=lambda kv: -kv[1])[:3]
    assert [(t["customer_id"], t["spent"]) for t in top] == [(c, round(s, 2)) for c, s in best]


def test_materializations_carry_row_count_schema_uri_and_preview(example):
    root = example("retail")
    result = run_job(odibi_dagster.load_definitions(root), "ingest")
    mats = {
        tuple(m.asset_key.path): m.metadata
        for m in result.asset_materializations_for_node("ingest__save_orders")
    }
    meta = mats[("ingest", "save_orders")]
    assert meta["dagster/row_count"].value == 13
    cols = [c.name for c in meta["dagster/column_schema"].schema.columns]
    assert cols == [
        "order_id",
        "customer_id",
        "product",
        "quantity",
        "unit_price",
        "order_date",
        "amount",
    ]
    assert meta["dagster/uri"].value == str(root / "data" / "silver" / "orders.parquet")
    assert "| order_id |" in meta["preview"].value


def test_chained_sql_steps_see_the_previous_result_as___result__(tmp_path: Path):
    (tmp_path / "in.csv").write_text("x\n1\n2\n3\n4\n")
    (tmp_path / "p.yaml").write_text(
        """
project: chain
connections: {fs: {type: local, base_path: .}}
pipelines:
  - pipeline: p
    nodes:
      - name: src
        read: {connection: fs, path: in.csv, format: csv}
      - name: out
        depends_on: [src]
        transform:
          steps:
            - SELECT x * 10 AS y FROM src
            - SELECT y + 1 AS z FROM __result__ WHERE y > 15
            - SELECT SUM(z) AS total FROM __result__
        write: {connection: fs, path: out.csv, format: csv}
"""
    )
    assert run_job(odibi_dagster.load_definitions(tmp_path / "p.yaml"), "p").success
    assert read_csv(tmp_path / "out.csv") == [{"total": str(21 + 31 + 41)}]


def test_a_node_with_read_and_steps_sees_its_own_data_as___result__(tmp_path: Path):
    (tmp_path / "in.csv").write_text("x\n1\n2\n")
    (tmp_path / "p.yaml").write_text(
        """
connections: {fs: {type: local, base_path: .}}
pipelines:
  - pipeline: p
    nodes:
      - name: both
        read: {connection: fs, path: in.csv, format: csv}
        transform: {steps: ["SELECT x + 100 AS x FROM __result__"]}
        write: {connection: fs, path: out.csv, format: csv}
"""
    )
    assert run_job(odibi_dagster.load_definitions(tmp_path / "p.yaml"), "p").success
    assert [r["x"] for r in read_csv(tmp_path / "out.csv")] == ["101", "102"]


def test_sql_naming_an_unknown_table_fails_the_node_with_the_available_tables(reference):
    """Odibi's own ADLS template chains to a table 'clean_temp' that never exists."""
    root = reference()
    (root / "data" / "bronze" / "sales.csv").write_text(
        "sale_id,amount,customer_name\n1,5,ann\n2,-1,bob\n"
    )
    (root / "p.yaml").write_text(
        """
connections: {data: {type: local, base_path: ./data}}
pipelines:
  - pipeline: p
    nodes:
      - name: load_raw_sales
        read: {connection: data, path: bronze/sales.csv, format: csv}
      - name: clean_sales
        depends_on: [load_raw_sales]
        transform:
          steps:
            - "SELECT * FROM load_raw_sales WHERE amount > 0"
            - "SELECT *, UPPER(customer_name) AS customer FROM clean_temp"
"""
    )
    result = run_cli("odibi-dagster", "run", root / "p.yaml")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "node 'clean_sales'" in result.stderr and "p.yaml:8" in result.stderr
    assert "step 2" in result.stderr and "'clean_temp'" in result.stderr
    assert "load_raw_sales" in result.stderr and "__result__" in result.stderr


def test_failed_validation_blocks_the_write_and_the_downstream_nodes(tmp_path: Path):
    (tmp_path / "in.csv").write_text("id,amount\n1,5\n2,\n3,7\n")
    (tmp_path / "p.yaml").write_text(
        """
connections: {fs: {type: local, base_path: .}}
pipelines:
  - pipeline: p
    nodes:
      - name: src
        read: {connection: fs, path: in.csv, format: csv}
      - name: checked
        depends_on: [src]
        transform: {steps: ["SELECT * FROM src"]}
        validation:
          not_empty: true
          no_nulls: [amount]
        write: {connection: fs, path: checked.csv, format: csv}
      - name: downstream
        depends_on: [checked]
        write: {connection: fs, path: downstream.csv, format: csv}
"""
    )
    result = run_job(odibi_dagster.load_definitions(tmp_path / "p.yaml"), "p")
    assert not result.success
    evaluations = {
        e.event_specific_data.check_name: e.event_specific_data.passed
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
    }
    assert evaluations == {"not_empty": True, "no_nulls_amount": False}
    assert "column 'amount' has 1 null values" in failure_text(result)
    assert not (tmp_path / "checked.csv").exists()
    assert not (tmp_path / "downstream.csv").exists()


def test_checks_on_a_read_only_source_run_with_its_pipeline(tmp_path: Path):
    (tmp_path / "in.csv").write_text("id\n1\n\n3\n")
    (tmp_path / "p.yaml").write_text(
        """
connections: {fs: {type: local, base_path: .}}
pipelines:
  - pipeline: p
    nodes:
      - name: src
        read: {connection: fs, path: in.csv, format: csv, options: {skip_blank_lines: false}}
        validation: {no_nulls: [id]}
      - name: copy
        depends_on: [src]
        write: {connection: fs, path: out.csv, format: csv}
"""
    )
    result = run_job(odibi_dagster.load_definitions(tmp_path / "p.yaml"), "p")
    evaluations = [
        (e.event_specific_data.check_name, e.event_specific_data.passed)
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
    ]
    assert evaluations == [("no_nulls_id", False)]


def test_downstream_assets_rematerialize_alone_from_the_intermediate_store(example, dagster_home):
    root = example("quickstart")
    defs = odibi_dagster.load_definitions(root / "pipeline.yaml")
    instance = dg.DagsterInstance.get()
    job = defs.resolve_job_def("bronze_to_silver")
    first = job.execute_in_process(instance=instance)
    assert first.success
    stored = dagster_home / "storage" / "odibi" / "bronze_to_silver" / "clean_sales"
    assert pq.read_table(stored / f"{first.run_id}.parquet").num_rows == 4
    (root / "data" / "silver" / "sales.parquet").unlink()
    # a second run of only the writer loads clean_sales from the store
    result = job.execute_in_process(
        instance=instance, asset_selection=[dg.AssetKey(["bronze_to_silver", "save_silver"])]
    )
    assert result.success
    assert pq.read_table(root / "data" / "silver" / "sales.parquet").num_rows == 4


def test_the_story_records_every_node_and_the_error_of_a_failed_one(tmp_path: Path):
    (tmp_path / "in.csv").write_text("x\n1\n2\n")
    (tmp_path / "p.yaml").write_text(
        """
connections: {fs: {type: local, base_path: .}}
story: {connection: fs, path: stories, max_sample_rows: 1}
pipelines:
  - pipeline: p
    nodes:
      - name: src
        read: {connection: fs, path: in.csv, format: csv}
      - name: good
        depends_on: [src]
        transform: {steps: ["SELECT x * 2 AS y FROM src"]}
      - name: bad
        depends_on: [good]
        transform: {steps: ["SELECT nope FROM good"]}
"""
    )
    result = run_job(odibi_dagster.load_definitions(tmp_path / "p.yaml"), "p")
    assert not result.success
    run_dir = tmp_path / "stories" / "p" / result.run_id
    story = json.loads((run_dir / "story.json").read_text())
    nodes = {n["node"]: n for n in story["nodes"]}
    assert story["status"] == "failed"
    assert nodes["good"]["status"] == "success" and nodes["good"]["rows"] == 2
    assert nodes["good"]["sample"] == [{"y": 2}]
    assert nodes["bad"]["status"] == "failed" and "nope" in nodes["bad"]["error"]
    page = (run_dir / "story.html").read_text()
    assert "good" in page and "bad" in page and "nope" in page


def write_project(tmp_path: Path, text: str) -> dg.Definitions:
    (tmp_path / "p.yaml").write_text(text)
    return odibi_dagster.load_definitions(tmp_path / "p.yaml")


def test_a_read_of_what_the_pipeline_just_wrote_sees_this_runs_data(tmp_path: Path):
    text = """
connections: {fs: {type: local, base_path: .}}
pipelines:
  - pipeline: p
    nodes:
      - name: z_src
        read: {connection: fs, path: in.csv, format: csv}
      - name: z_write_silver
        depends_on: [z_src]
        write: {connection: fs, path: silver.parquet, format: parquet}
      - name: a_read_silver
        read: {connection: fs, path: silver.parquet, format: parquet}
      - name: b_gold
        depends_on: [a_read_silver]
        transform: {steps: ["SELECT COUNT(*) AS n FROM a_read_silver"]}
        write: {connection: fs, path: gold.csv, format: csv}
"""
    for rows in (2, 3):
        (tmp_path / "in.csv").write_text("x\n" + "".join(f"{i}\n" for i in range(rows)))
        assert run_job(write_project(tmp_path, text), "p").success
        assert read_csv(tmp_path / "gold.csv") == [{"n": str(rows)}]


def test_a_node_changing_its_input_in_place_does_not_change_its_siblings_input(tmp_path: Path):
    (tmp_path / "in.csv").write_text("x\n1\n2\n")
    (tmp_path / "steps.py").write_text(
        "from odibi_dagster import transform\n\n"
        "@transform\n"
        "def odibi_test_times_100_in_place(context, source):\n"
        "    df = context.get(source)\n"
        "    df['x'] *= 100\n"
        "    return df\n"
    )
    defs = write_project(
        tmp_path,
        """
transforms: [steps.py]
connections: {fs: {type: local, base_path: .}}
pipelines:
  - pipeline: p
    nodes:
      - name: src
        read: {connection: fs, path: in.csv, format: csv}
      - name: big
        depends_on: [src]
        transform: {steps: [{function: odibi_test_times_100_in_place, params: {source: src}}]}
        write: {connection: fs, path: big.csv, format: csv}
      - name: total
        depends_on: [src, big]
        transform: {steps: ["SELECT SUM(x) AS s FROM src"]}
        write: {connection: fs, path: total.csv, format: csv}
""",
    )
    assert run_job(defs, "p").success
    assert [r["x"] for r in read_csv(tmp_path / "big.csv")] == ["100", "200"]
    assert read_csv(tmp_path / "total.csv") == [{"s": "3"}]


def test_write_modes_through_the_pipeline(tmp_path: Path):
    (tmp_path / "in.csv").write_text("x\n1\n2\n")
    template = """
connections: {fs: {type: local, base_path: .}}
pipelines:
  - pipeline: p
    nodes:
      - name: src
        read: {connection: fs, path: in.csv, format: csv}
      - name: out
        depends_on: [src]
        write: {connection: fs, path: out.csv, format: csv, mode: MODE}
"""
    defs = write_project(tmp_path, template.replace("MODE", "append"))
    assert run_job(defs, "p").success and run_job(defs, "p").success
    assert [r["x"] for r in read_csv(tmp_path / "out.csv")] == ["1", "2", "1", "2"]

    before = (tmp_path / "out.csv").read_bytes()
    defs = write_project(tmp_path, template.replace("MODE", "ignore"))
    assert run_job(defs, "p").success
    assert (tmp_path / "out.csv").read_bytes() == before

    defs = write_project(tmp_path, template.replace("MODE", "error"))
    result = run_job(defs, "p")
    assert not result.success
    assert "already exists" in failure_text(result) or "exists" in failure_text(result)
    assert (tmp_path / "out.csv").read_bytes() == before

    defs = write_project(tmp_path, template.replace("MODE", "overwrite"))
    assert run_job(defs, "p").success
    assert [r["x"] for r in read_csv(tmp_path / "out.csv")] == ["1", "2"]


def test_the_story_tells_of_a_failed_or_skipped_write(tmp_path: Path):
    (tmp_path / "in.csv").write_text("x\n1\n")
    (tmp_path / "out.csv").write_text("x\n9\n")
    template = """
connections: {fs: {type: local, base_path: .}}
story: {connection: fs, path: stories}
pipelines:
  - pipeline: p
    nodes:
      - name: src
        read: {connection: fs, path: in.csv, format: csv}
      - name: out
        depends_on: [src]
        write: {connection: fs, path: out.csv, format: csv, mode: MODE}
"""
    result = run_job(write_project(tmp_path, template.replace("MODE", "error")), "p")
    assert not result.success
    story = json.loads((tmp_path / "stories" / "p" / result.run_id / "story.json").read_text())
    out = next(n for n in story["nodes"] if n["node"] == "out")
    assert out["status"] == "failed" and "exists" in out["error"]

    result = run_job(write_project(tmp_path, template.replace("MODE", "ignore")), "p")
    assert result.success
    run_dir = tmp_path / "stories" / "p" / result.run_id
    out = next(
        n for n in json.loads((run_dir / "story.json").read_text())["nodes"] if n["node"] == "out"
    )
    assert out["status"] == "success" and out["write"]["written"] is False
    assert "Did not write" in (run_dir / "story.html").read_text()


def test_values_from_the_environment_stay_out_of_stories_and_metadata(tmp_path: Path, monkeypatch):
    secret = "sup3r-s3cret-t0ken"
    monkeypatch.setenv("ODIBI_TEST_API_TOKEN", secret)
    (tmp_path / "in.csv").write_text("x\n1\n")
    (tmp_path / "steps.py").write_text(
        "from odibi_dagster import transform\n\n"
        "@transform\n"
        "def odibi_test_uses_token(context, token):\n"
        "    assert token == 'sup3r-s3cret-t0ken'\n"
        "    return context.get('src')\n"
    )
    defs = write_project(
        tmp_path,
        """
transforms: [steps.py]
connections: {fs: {type: local, base_path: .}}
story: {connection: fs, path: stories}
pipelines:
  - pipeline: p
    nodes:
      - name: src
        read: {connection: fs, path: in.csv, format: csv}
      - name: out
        depends_on: [src]
        transform: {steps: [{function: odibi_test_uses_token, params: {token: "${ODIBI_TEST_API_TOKEN}"}}]}
        write: {connection: fs, path: out.csv, format: csv}
""",
    )
    result = run_job(defs, "p")
    assert result.success
    story_dir = tmp_path / "stories"
    texts = [p.read_text() for p in story_dir.rglob("*") if p.is_file()]
    assert texts and all(secret not in t for t in texts)
    assert any("${ODIBI_TEST_API_TOKEN}" in t for t in texts)
    for event in result.all_events:
        assert secret not in str(event)


def test_a_function_step_that_returns_no_dataframe_names_the_node_and_function(tmp_path: Path):
    (tmp_path / "in.csv").write_text("x\n1\n")
    (tmp_path / "steps.py").write_text(
        "from odibi_dagster import transform\n\n"
        "@transform\n"
        "def odibi_test_returns_dict(context):\n"
        "    return {'x': 1}\n"
    )
    defs = write_project(
        tmp_path,
        """
transforms: [steps.py]
connections: {fs: {type: local, base_path: .}}
pipelines:
  - pipeline: p
    nodes:
      - name: src
        read: {connection: fs, path: in.csv, format: csv}
      - name: out
        depends_on: [src]
        transform: {steps: [{function: odibi_test_returns_dict}]}
""",
    )
    result = run_job(defs, "p")
    assert not result.success
    text = failure_text(result)
    assert "node 'out' (" in text and "p.yaml:9), step 1" in text
    assert "function 'odibi_test_returns_dict' returned a dict" in text


def test_a_node_that_fails_leaves_the_result_kept_before_for_its_consumers(tmp_path: Path):
    (tmp_path / "in.csv").write_text("a,b\n1,2\n")
    defs = write_project(
        tmp_path,
        """
connections: {fs: {type: local, base_path: .}}
pipelines:
  - pipeline: p
    nodes:
      - name: src
        read: {connection: fs, path: in.csv, format: csv}
      - name: log
        depends_on: [src]
        write: {connection: fs, path: log.csv, format: csv, mode: append}
      - name: total
        depends_on: [log]
        transform: {steps: ["SELECT SUM(a) AS a FROM log"]}
""",
    )
    instance = dg.DagsterInstance.ephemeral()
    assert run_job(defs, "p", instance=instance).success
    # other columns: the append of `log` fails, and its kept result must not change
    (tmp_path / "in.csv").write_text("a,c\n7,8\n")
    assert not run_job(defs, "p", instance=instance).success
    assert read_csv(tmp_path / "log.csv") == [{"a": "1", "b": "2"}]
    job = defs.resolve_job_def("p")
    only_total = job.execute_in_process(
        instance=instance, asset_selection=[dg.AssetKey(["p", "total"])]
    )
    assert only_total.success
    (mat,) = only_total.get_asset_materialization_events()
    assert "| 1 |" in mat.materialization.metadata["preview"].value  # 1, not 7


def test_columns_named_by_numbers_are_checked_and_previewed(tmp_path: Path):
    (tmp_path / "in.csv").write_text("k,year,v\na,2023,1.5\na,2024,\n")
    (tmp_path / "steps.py").write_text(
        "from odibi_dagster import transform\n\n"
        "@transform\n"
        "def odibi_test_pivot(context):\n"
        "    df = context.get('src')\n"
        "    return df.pivot(index='k', columns='year', values='v').reset_index(drop=True)\n"
    )
    defs = write_project(
        tmp_path,
        """
transforms: [steps.py]
connections: {fs: {type: local, base_path: .}}
pipelines:
  - pipeline: p
    nodes:
      - name: src
        read: {connection: fs, path: in.csv, format: csv}
      - name: wide
        depends_on: [src]
        transform: {steps: [{function: odibi_test_pivot}]}
        validation: {no_nulls: ["2023", "2024"]}
""",
    )
    result = run_job(defs, "p")
    assert not result.success
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert checks["no_nulls_2023"].passed
    assert not checks["no_nulls_2024"].passed
    assert checks["no_nulls_2024"].metadata["null_count"].value == 1


def test_the_io_manager_serves_a_direct_call_without_a_run(tmp_path: Path):
    import pandas as pd

    from odibi_dagster import LocalStorage, PandasIOManager

    io = PandasIOManager(
        connections={"fs": LocalStorage(base_path=str(tmp_path))},
        intermediate_dir=str(tmp_path / "store"),
    )
    meta = {"odibi/write": {"connection": "fs", "path": "x.parquet", "format": "parquet"}}
    context = dg.build_output_context(asset_key=["p", "x"], definition_metadata=meta)
    io.handle_output(context, pd.DataFrame({"id": [1, 2]}))
    assert pq.read_table(tmp_path / "x.parquet").to_pylist() == [{"id": 1}, {"id": 2}]

    # with no target, the result is stored under the name Dagster gives a call outside
    # a run, and loaded back from there
    io.handle_output(dg.build_output_context(asset_key=["p", "y"]), pd.DataFrame({"id": [3]}))
    stored = [p.name for p in (tmp_path / "store" / "p" / "y").iterdir()]
    assert stored == ["__EPHEMERAL_RUN_ID.parquet"]
    upstream = dg.build_output_context(asset_key=["p", "y"])
    loaded = io.load_input(dg.build_input_context(asset_key=["p", "y"], upstream_output=upstream))
    assert loaded.to_dict("list") == {"id": [3]}
