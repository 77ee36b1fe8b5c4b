"""Odibi v3 ``pattern:`` on a node, in real Dagster runs on pandas: each test writes a
project, materializes it (often twice, as the next day's load), and reads the tables back
without odibi_dagster (delta-rs, pyarrow). The same patterns on Spark: see
test_engine_contract.py."""

from __future__ import annotations

import shutil
import textwrap
from datetime import date, datetime
from pathlib import Path
from typing import Any

import dagster as dg
import pyarrow.parquet as pq
import pytest
import yaml
from deltalake import DeltaTable

import odibi_dagster
from odibi_dagster import OdibiConfigError, load_project
from odibi_dagster_tests.support.runs import failure_text, run_job

CORPUS = Path(__file__).parent / "odibi_v3_corpus"

CUSTOMERS_V1 = """customer_id,name,email,tier,city,updated_at
1,Alice,alice@example.com,Gold,NYC,2025-01-01
2,Bob,bob@example.com,Silver,LA,2025-01-01
"""
# Odibi's docs/examples/canonical/runnable/03_scd2_demo/customers_v2.csv: Alice's tier changed
CUSTOMERS_V2 = """customer_id,name,email,tier,city,updated_at
1,Alice,alice@example.com,Platinum,NYC,2025-01-15
2,Bob,bob@example.com,Silver,LA,2025-01-01
"""


def project(tmp_path: Path, nodes: str, *, pipeline: str = "p") -> Path:
    """A project over ``tmp_path/src`` (inputs) and ``tmp_path/out`` (tables)."""
    (tmp_path / "src").mkdir(exist_ok=True)
    (tmp_path / "out").mkdir(exist_ok=True)
    text = textwrap.dedent(
        f"""\
        project: patterns
        connections:
          src: {{type: local, base_path: {tmp_path / "src"}}}
          out: {{type: local, base_path: {tmp_path / "out"}}}
        story: {{enabled: false}}
        pipelines:
          - pipeline: {pipeline}
            nodes:
        """
    ) + textwrap.indent(textwrap.dedent(nodes), " " * 6)
    path = tmp_path / "p.yaml"
    path.write_text(text)
    return path


def run(path: Path, job: str = "p") -> dg.ExecuteInProcessResult:
    result = run_job(odibi_dagster.load_definitions(path), job)
    assert result.success, failure_text(result)
    return result


def delta_rows(path: Path) -> list[dict[str, Any]]:
    return DeltaTable(str(path)).to_pyarrow_table().to_pylist()


def materialized(result: dg.ExecuteInProcessResult, node: str) -> dict[str, Any]:
    (mat,) = [m for m in result.asset_materializations_for_node(f"p__{node}")]
    return {k: v.value for k, v in mat.metadata.items()}


DIMENSION = """\
- name: dim_customer
  read: {connection: src, format: csv, path: customers.csv}
  pattern:
    type: dimension
    params:
      natural_key: customer_id
      surrogate_key: customer_sk
      scd_type: 2
      track_cols: [name, email, tier, city]
      unknown_member: true
  write: {connection: out, format: delta, path: dim_customer, mode: overwrite}
"""


def test_scd2_dimension_closes_the_changed_version_and_opens_a_new_one(tmp_path: Path):
    path = project(tmp_path, DIMENSION)
    (tmp_path / "src" / "customers.csv").write_text(CUSTOMERS_V1)
    first = run(path)
    meta = materialized(first, "dim_customer")
    assert meta["odibi/pattern"] == "dimension"
    assert meta["odibi/pattern_target"] == "out.dim_customer (delta)"
    day1 = {r["customer_sk"]: r for r in delta_rows(tmp_path / "out" / "dim_customer")}
    assert sorted((sk, r["customer_id"], r["tier"], r["is_current"]) for sk, r in day1.items()) == [
        (0, -1, "Unknown", True),
        (1, 1, "Gold", True),
        (2, 2, "Silver", True),
    ]

    (tmp_path / "src" / "customers.csv").write_text(CUSTOMERS_V2)
    run(path)
    day2 = {r["customer_sk"]: r for r in delta_rows(tmp_path / "out" / "dim_customer")}
    assert sorted((sk, r["customer_id"], r["tier"], r["is_current"]) for sk, r in day2.items()) == [
        (0, -1, "Unknown", True),
        (1, 1, "Gold", False),  # closed ...
        (2, 2, "Silver", True),
        (3, 1, "Platinum", True),  # ... when this version opened
    ]
    assert day2[1]["valid_from"] == day1[1]["valid_from"]
    assert day2[1]["valid_to"] == day2[3]["valid_from"] > day2[1]["valid_from"]
    assert day2[2]["valid_to"] is None and day2[2]["valid_from"] == day1[2]["valid_from"]

    run(path)  # the same input again: no new version
    day3 = delta_rows(tmp_path / "out" / "dim_customer")
    assert sorted((r["customer_sk"], r["tier"], r["is_current"]) for r in day3) == sorted(
        (r["customer_sk"], r["tier"], r["is_current"]) for r in day2.values()
    )


def test_scd2_pattern_versions_by_the_source_effective_time_on_parquet(tmp_path: Path):
    path = project(
        tmp_path,
        """\
        - name: customer_history
          read: {connection: src, format: csv, path: customers.csv}
          pattern:
            type: scd2
            params:
              target: out.history.parquet
              keys: [customer_id]
              track_cols: [tier, city]
              effective_time_col: updated_at
          write: {connection: out, format: parquet, path: history.parquet}
        """,
    )
    (tmp_path / "src" / "customers.csv").write_text(CUSTOMERS_V1)
    run(path)
    (tmp_path / "src" / "customers.csv").write_text(CUSTOMERS_V2)
    run(path)
    rows = pq.read_table(tmp_path / "out" / "history.parquet").to_pylist()
    assert sorted(
        (r["customer_id"], r["tier"], r["updated_at"], r["valid_to"], r["is_current"]) for r in rows
    ) == [
        (1, "Gold", "2025-01-01", "2025-01-15", False),
        (1, "Platinum", "2025-01-15", None, True),
        (2, "Silver", "2025-01-01", None, True),
    ]


def test_scd1_updates_in_place_and_scd0_never_changes_a_row(tmp_path: Path):
    nodes = ""
    for kind in (0, 1):
        nodes += textwrap.dedent(f"""\
        - name: dim_{kind}
          read: {{connection: src, format: csv, path: customers.csv}}
          pattern:
            type: dimension
            params:
              natural_key: customer_id
              surrogate_key: sk
              scd_type: {kind}
              track_cols: [tier]
              audit: {{load_timestamp: false}}
          write: {{connection: out, format: delta, path: dim_{kind}}}
        """)
    path = project(tmp_path, nodes)
    (tmp_path / "src" / "customers.csv").write_text(CUSTOMERS_V1)
    run(path)
    (tmp_path / "src" / "customers.csv").write_text(
        CUSTOMERS_V2 + "3,Cleo,cleo@example.com,Bronze,SF,2025-01-15\n"
    )
    run(path)
    expect = {
        0: [(1, 1, "Gold"), (2, 2, "Silver"), (3, 3, "Bronze")],  # Alice stays Gold
        1: [(1, 1, "Platinum"), (2, 2, "Silver"), (3, 3, "Bronze")],  # same key, new tier
    }
    for kind, rows in expect.items():
        got = delta_rows(tmp_path / "out" / f"dim_{kind}")
        assert sorted((r["sk"], r["customer_id"], r["tier"]) for r in got) == rows
        assert "load_timestamp" not in got[0]


FACT_PIPELINE = """\
- name: dim_customer
  read: {connection: src, format: csv, path: customers.csv}
  pattern:
    type: dimension
    params:
      natural_key: customer_id
      surrogate_key: customer_sk
      scd_type: 2
      track_cols: [tier]
      unknown_member: true
  write: {connection: out, format: delta, path: dim_customer}
- name: fact_orders
  depends_on: [dim_customer]
  read: {connection: src, format: csv, path: orders.csv}
  pattern:
    type: fact
    params:
      grain: [order_id]
      dimensions:
        - source_column: customer_id
          dimension_table: dim_customer
          dimension_key: customer_id
          surrogate_key: customer_sk
          scd2: true
      orphan_handling: ORPHANS
      quarantine:
        connection: out
        path: orphans
        add_columns: {_rejection_reason: true, _source_dimension: true}
      measures:
        - quantity
        - revenue: "quantity * price"
        - unit_price: price
  write: {connection: out, format: delta, path: fact_orders}
"""
ORDERS = """order_id,customer_id,quantity,price
10,1,2,5.0
11,2,1,7.5
12,9,3,1.0
"""


@pytest.mark.parametrize("orphans", ["unknown", "quarantine", "reject"])
def test_fact_looks_up_current_surrogate_keys_and_handles_orphans(tmp_path: Path, orphans: str):
    path = project(tmp_path, FACT_PIPELINE.replace("ORPHANS", orphans))
    (tmp_path / "src" / "customers.csv").write_text(CUSTOMERS_V1)
    (tmp_path / "src" / "orders.csv").write_text(ORDERS)
    if orphans == "reject":
        result = run_job(odibi_dagster.load_definitions(path), "p")
        assert not result.success
        text = failure_text(result)
        assert "node 'fact_orders' (" in text
        assert "customer_id (9, ...) is not a customer_id of 'dim_customer'" in text
        assert not (tmp_path / "out" / "fact_orders").exists()
        return
    run(path)
    (tmp_path / "src" / "customers.csv").write_text(CUSTOMERS_V2)  # Alice gets version 3
    run(path)
    facts = delta_rows(tmp_path / "out" / "fact_orders")
    got = sorted((r["order_id"], r["customer_sk"], r["revenue"], r["unit_price"]) for r in facts)
    current = [(10, 3, 10.0, 5.0), (11, 2, 7.5, 7.5)]  # Alice's current version: key 3
    if orphans == "unknown":
        assert got == [*current, (12, 0, 3.0, 1.0)]  # no customer 9: the unknown member
    else:
        assert got == current
        quarantined = delta_rows(tmp_path / "out" / "orphans")
        assert [(r["order_id"], r["_source_dimension"]) for r in quarantined] == [
            (12, "dim_customer"),
            (12, "dim_customer"),  # appended by each run
        ]
        assert "no match in dimension 'dim_customer'" in quarantined[0]["_rejection_reason"]


MERGE = """\
- name: merge_orders
  read: {connection: src, format: csv, path: orders.csv}
  pattern:
    type: merge
    params:
      target: out.orders
      keys: [order_id]
      strategy: STRATEGY
      audit_cols: {created_col: _created_at, updated_col: _updated_at}
"""


def test_merge_pattern_upserts_into_its_target_and_keeps_created_times(tmp_path: Path):
    path = project(tmp_path, MERGE.replace("STRATEGY", "upsert"))
    (tmp_path / "src" / "orders.csv").write_text(ORDERS)
    first = run(path)
    assert materialized(first, "merge_orders")["odibi/merge_inserted"] == 3
    before = {r["order_id"]: r for r in delta_rows(tmp_path / "out" / "orders")}
    (tmp_path / "src" / "orders.csv").write_text(
        "order_id,customer_id,quantity,price\n11,2,4,7.5\n13,1,1,2.0\n"
    )
    second = run(path)
    meta = materialized(second, "merge_orders")
    assert (meta["odibi/merge_inserted"], meta["odibi/merge_updated"]) == (1, 1)
    after = {r["order_id"]: r for r in delta_rows(tmp_path / "out" / "orders")}
    assert {k: r["quantity"] for k, r in after.items()} == {10: 2, 11: 4, 12: 3, 13: 1}
    assert after[11]["_created_at"] == before[11]["_created_at"]  # created once
    assert after[11]["_updated_at"] > before[11]["_updated_at"]  # updated now
    assert after[10] == before[10]  # not in the input: untouched
    assert after[13]["_created_at"] == after[13]["_updated_at"]


def test_merge_pattern_append_only_and_delete_match(tmp_path: Path):
    path = project(tmp_path, MERGE.replace("STRATEGY", "append_only"))
    (tmp_path / "src" / "orders.csv").write_text(ORDERS)
    run(path)
    (tmp_path / "src" / "orders.csv").write_text(
        "order_id,customer_id,quantity,price\n11,2,4,7.5\n"
    )
    run(path)
    rows = delta_rows(tmp_path / "out" / "orders")
    assert sorted((r["order_id"], r["quantity"]) for r in rows) == [(10, 2), (11, 1), (12, 3)]
    path = project(tmp_path, MERGE.replace("STRATEGY", "delete_match"))
    run(path)
    rows = delta_rows(tmp_path / "out" / "orders")
    assert sorted(r["order_id"] for r in rows) == [10, 12]


def test_aggregation_adds_each_run_to_the_table_it_keeps(tmp_path: Path):
    path = project(
        tmp_path,
        """\
        - name: sales_by_customer
          read: {connection: src, format: csv, path: orders.csv}
          pattern:
            type: aggregation
            params:
              grain: [customer_id]
              measures:
                - {name: units, expr: "SUM(quantity)"}
                - {name: orders, expr: "COUNT(*)"}
              having: "SUM(quantity) > 1"
              incremental: {timestamp_column: order_id, merge_strategy: sum}
          write: {connection: out, format: delta, path: sales}
        """,
    )
    (tmp_path / "src" / "orders.csv").write_text(ORDERS)
    run(path)
    day1 = sorted(
        (r["customer_id"], r["units"], r["orders"]) for r in delta_rows(tmp_path / "out" / "sales")
    )
    assert day1 == [(1, 2, 1), (9, 3, 1)]  # customer 2 bought 1 unit: below `having`
    (tmp_path / "src" / "orders.csv").write_text(
        "order_id,customer_id,quantity,price\n13,1,5,1.0\n14,2,2,1.0\n"
    )
    run(path)
    day2 = sorted(
        (r["customer_id"], r["units"], r["orders"]) for r in delta_rows(tmp_path / "out" / "sales")
    )
    assert day2 == [(1, 7, 2), (2, 2, 1), (9, 3, 1)]


def test_date_dimension_generates_a_calendar_with_a_fiscal_year(tmp_path: Path):
    path = project(
        tmp_path,
        """\
        - name: dim_date
          pattern:
            type: date_dimension
            params:
              start_date: 2024-06-29
              end_date: "2024-07-01"
              fiscal_year_start_month: 7
              unknown_member: true
          write: {connection: out, format: delta, path: dim_date}
        """,
    )
    run(path)
    rows = {r["date_sk"]: r for r in delta_rows(tmp_path / "out" / "dim_date")}
    assert sorted(rows) == [0, 20240629, 20240630, 20240701]
    sat, mon = rows[20240629], rows[20240701]
    day = sat["full_date"]  # pandas holds a date as a timestamp at midnight
    assert (day.date() if isinstance(day, datetime) else day) == date(2024, 6, 29)
    assert (sat["day_of_week"], sat["day_of_week_num"], sat["is_weekend"]) == (
        "Saturday",
        6,
        True,
    )
    assert (sat["fiscal_year"], sat["fiscal_quarter"], sat["quarter_name"]) == (2024, 4, "Q2")
    assert (mon["day_of_week"], mon["fiscal_year"], mon["fiscal_quarter"]) == ("Monday", 2025, 1)
    assert (mon["is_month_start"], rows[20240630]["is_month_end"], mon["week_of_year"]) == (
        True,
        True,
        27,
    )
    assert str(rows[0]["full_date"])[:10] == "1900-01-01"
    assert (rows[0]["day_of_week"], rows[0]["year"]) == ("Unknown", 0)
    assert len(sat) == 19


def test_bad_pattern_params_are_reported_at_load_with_file_and_line(tmp_path: Path):
    path = project(
        tmp_path,
        """\
        - name: dim_a
          read: {connection: src, format: csv, path: a.csv}
          pattern:
            type: dimensoin
        - name: dim_b
          read: {connection: src, format: csv, path: b.csv}
          pattern:
            type: dimension
            params:
              surrogate_key: sk
              scd_type: 2
              track_col: [x]
          write: {connection: out, format: delta, path: b}
        - name: history
          read: {connection: src, format: csv, path: c.csv}
          pattern:
            type: scd2
            params: {target: nowhere.c, keys: id, track_cols: [x], effective_time_col: t}
        - name: fact
          read: {connection: src, format: csv, path: d.csv}
          pattern:
            type: fact
            params:
              orphan_handling: drop
              dimensions:
                - {source_column: c, dimension_table: dim_b, dimension_key: c, surrogate_key: sk}
        - name: merged
          read: {connection: src, format: csv, path: e.csv}
          pattern:
            type: merge
            params: {target: out.e, keys: [id]}
          write: {connection: out, format: delta, path: e}
        """,
    )
    with pytest.raises(OdibiConfigError) as info:
        load_project(path)
    got = {(p.line, p.key_path): p.message for p in info.value.problems}
    base = "pipelines[0].nodes"
    assert got == {
        (12, f"{base}[0].pattern.type"): "node 'dim_a': unknown pattern type 'dimensoin' (did "
        "you mean 'dimension'?); types: dimension, fact, scd2, merge, aggregation, date_dimension",
        (17, f"{base}[1].pattern.params.natural_key"): "node 'dim_b': pattern dimension: "
        "missing required "
        "key 'natural_key'",
        (20, f"{base}[1].pattern.params.track_col"): "node 'dim_b': pattern dimension: unknown "
        "key 'track_col' (did you mean 'track_cols'?)",
        (26, f"{base}[2].pattern.params.target"): "node 'history': pattern scd2: target "
        "'nowhere.c' names no connection: write it as <connection>.<path> (connections: src, "
        "out), or give `connection:` and `path:`",
        (32, f"{base}[3].pattern.params.orphan_handling"): "node 'fact': pattern fact: "
        "unsupported value 'drop' for 'orphan_handling'; use one of: 'unknown', 'reject', "
        "'quarantine'",
        (40, f"{base}[4].write"): "node 'merged': pattern merge writes out.e itself (a keyed "
        "merge); remove this `write:`, which would replace the merged table with the incoming "
        "rows",
    }


def test_a_fact_names_dimensions_that_are_its_inputs(tmp_path: Path):
    path = project(
        tmp_path,
        FACT_PIPELINE.replace("ORPHANS", "unknown").replace("  depends_on: [dim_customer]\n", ""),
    )
    with pytest.raises(OdibiConfigError) as info:
        load_project(path)
    (problem,) = info.value.problems
    assert problem.key_path == "pipelines[0].nodes[1].pattern.params.dimensions[0].dimension_table"
    assert (
        "dimension_table 'dim_customer' is not in the node's depends_on (none)" in problem.message
    )


def test_odibi_merge_maintenance_keys_are_noted_not_applied(tmp_path: Path):
    path = project(
        tmp_path,
        MERGE.replace("STRATEGY", "upsert").replace(
            "      keys: [order_id]\n", "      keys: [order_id]\n      zorder_by: [order_id]\n"
        ),
    )
    notes = [str(n) for n in load_project(path).notes]
    assert any("pattern.params.zorder_by: Delta maintenance is not run" in n for n in notes)


# --------------------------------------------------------------------------- Odibi's own configs


def test_odibi_scd2_canonical_examples_run_and_give_the_documented_tables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """Odibi's docs/examples/canonical/03_scd2_dimension.md runs unchanged (the corpus copy
    of its YAML), over the documented input, then over Alice's tier change (step 2's
    customers_v2.csv, read by the step-1 config). The documented tables, except: valid_from
    is the run's time (as Odibi's code does; the page shows updated_at) and the unknown
    member's customer_id is -1 (Odibi's code; the page shows _UNKNOWN)."""
    proj = tmp_path / "proj"
    proj.mkdir()
    (tmp_path / "sample_data").mkdir()
    for name in (
        "docs_canonical_03_scd2_dimension.yaml",
        "canonical_03_scd2_step1_initial_load.yaml",
    ):
        shutil.copy(CORPUS / name, proj / name)
    monkeypatch.chdir(proj)
    (proj / "data" / "silver").mkdir(parents=True)
    (tmp_path / "sample_data" / "customers.csv").write_text(CUSTOMERS_V1)

    def documented(table: Path) -> list[tuple[Any, ...]]:
        rows = delta_rows(table)
        return sorted(
            (r["customer_sk"], r["customer_id"], r["name"], r["tier"], r["city"], r["is_current"])
            for r in rows
        )

    run(proj / "docs_canonical_03_scd2_dimension.yaml", "dimensions")
    assert documented(proj / "data" / "silver" / "dim_customer") == [
        (0, -1, "Unknown", "Unknown", "Unknown", True),
        (1, 1, "Alice", "Gold", "NYC", True),
        (2, 2, "Bob", "Silver", "LA", True),
    ]
    (tmp_path / "sample_data" / "customers.csv").write_text(CUSTOMERS_V2)
    run(proj / "docs_canonical_03_scd2_dimension.yaml", "dimensions")
    table = proj / "data" / "silver" / "dim_customer"
    assert documented(table) == [
        (0, -1, "Unknown", "Unknown", "Unknown", True),
        (1, 1, "Alice", "Gold", "NYC", False),
        (2, 2, "Bob", "Silver", "LA", True),
        (3, 1, "Alice", "Platinum", "NYC", True),
    ]
    by_sk = {r["customer_sk"]: r for r in delta_rows(table)}
    assert by_sk[0]["valid_from"] == datetime(1900, 1, 1) and by_sk[0]["valid_to"] is None
    assert by_sk[1]["valid_to"] == by_sk[3]["valid_from"]

    # the runnable demo's step 1 (target: target.dim_customer, its own write)
    (proj / "customers_v1.csv").write_text(CUSTOMERS_V1)
    (proj / "data" / "stories").mkdir(parents=True, exist_ok=True)
    run(proj / "canonical_03_scd2_step1_initial_load.yaml", "dimensions")
    assert documented(proj / "data" / "dim_customer")[1:] == [
        (1, 1, "Alice", "Gold", "NYC", True),
        (2, 2, "Bob", "Silver", "LA", True),
    ]
    config = yaml.safe_load((proj / "canonical_03_scd2_step1_initial_load.yaml").read_text())
    assert (
        config["pipelines"][0]["nodes"][0]["pattern"]["params"]["target"] == "target.dim_customer"
    )


def test_a_whole_history_written_with_mode_append_is_refused_at_load(tmp_path: Path):
    path = project(tmp_path, DIMENSION.replace("mode: overwrite", "mode: append"))
    with pytest.raises(OdibiConfigError) as info:
        load_project(path)
    (problem,) = info.value.problems
    assert (problem.line, problem.key_path) == (19, "pipelines[0].nodes[0].write.mode")
    assert problem.message.startswith(
        "node 'dim_customer': pattern dimension returns the whole table it keeps"
    )


def test_the_merge_transformer_merges_into_its_target_called_as_a_function(tmp_path: Path):
    """``TRANSFORMERS['merge'](context, **params)``: Odibi's transformer spelling of the
    same function, here called directly with a node's context (connection + path, and an
    Odibi maintenance key it leaves out)."""
    import pandas as pd

    from odibi_dagster.config.models import NodeConfig
    from odibi_dagster.engines.pandas import PandasEngine
    from odibi_dagster.patterns import TRANSFORMERS, PatternContext, run_pattern
    from odibi_dagster.resources.local import LocalStorage

    lake = LocalStorage(base_path=str(tmp_path), connection_name="lake")
    node = NodeConfig.model_validate(
        {"name": "n", "read": {"connection": "lake", "path": "x", "format": "csv"}}
    )
    params = {"connection": "lake", "path": "silver/orders", "keys": "id"}
    for rows in ([(1, "a"), (2, "b")], [(2, "B"), (3, "c")]):
        df = pd.DataFrame(rows, columns=["id", "v"])
        ctx = PatternContext(engine=PandasEngine(), node=node, resources={"lake": lake}, df=df)
        out = TRANSFORMERS["merge"](ctx, **params)
        assert out.equals(df)  # the input goes on; the target took it
    got = delta_rows(tmp_path / "silver" / "orders")
    assert sorted((r["id"], r["v"]) for r in got) == [(1, "a"), (2, "B"), (3, "c")]
    _, meta = run_pattern(
        PandasEngine(),
        node,
        {"lake": lake},
        {},
        pd.DataFrame({"id": [4], "v": ["d"]}),
        "merge",
        {**params, "zorder_by": ["id"]},
    )
    assert (meta["odibi/merge_inserted"], meta["odibi/pattern"]) == (1, "merge")


def test_a_transformer_naming_a_pattern_runs_it_before_the_steps(tmp_path: Path):
    """Odibi's docs also write a pattern as `transformer: <type>` with `params:`; it runs
    first, then the node's steps (Odibi's order), and its maintenance keys are noted."""
    nodes = (
        DIMENSION.replace(
            "  pattern:\n    type: dimension\n    params:\n",
            "  transformer: dimension\n  params:\n",
        )
        .replace("      ", "    ")
        .replace(
            "    unknown_member: true\n",
            "    unknown_member: true\n    zorder_by: [customer_id]\n"
            "  transform:\n    steps:\n"
            # is_current exists only once the dimension has run
            "      - sql: SELECT * FROM df WHERE is_current OR customer_sk < 3\n",
        )
    )
    path = project(tmp_path, nodes)
    notes = [str(n) for n in load_project(path).notes]
    assert any("params.zorder_by: Delta maintenance is not run" in n for n in notes)
    (tmp_path / "src" / "customers.csv").write_text(CUSTOMERS_V1)
    meta = materialized(run(path), "dim_customer")
    assert meta["odibi/pattern"] == "dimension"
    (tmp_path / "src" / "customers.csv").write_text(CUSTOMERS_V2)
    run(path)
    rows = delta_rows(tmp_path / "out" / "dim_customer")
    assert sorted((r["customer_sk"], r["tier"], r["is_current"]) for r in rows) == [
        (0, "Unknown", True),
        (1, "Gold", False),
        (2, "Silver", True),
        (3, "Platinum", True),
    ]


def test_a_transformer_naming_a_pattern_has_its_params_checked_at_load(tmp_path: Path):
    path = project(
        tmp_path,
        """\
        - name: dim
          read: {connection: src, format: csv, path: customers.csv}
          transformer: scd2
          params: {keys: [customer_id]}
          write: {connection: out, format: delta, path: dim}
        """,
    )
    with pytest.raises(OdibiConfigError) as err:
        load_project(path)
    problems = str(err.value).splitlines()[1:]
    assert [p.split(": ", 2)[1:] for p in problems] == [
        [
            "pipelines[0].nodes[0].params.track_cols",
            "node 'dim': transformer scd2: missing required key 'track_cols'",
        ],
        [
            "pipelines[0].nodes[0].params.effective_time_col",
            "node 'dim': transformer scd2: missing required key 'effective_time_col'",
        ],
    ]
    assert all(p.strip().startswith(f"{path}:") for p in problems)


NULL_KEY_PATTERNS = {
    "dimension scd_type 0": "type: dimension\nparams: {natural_key: customer_id, "
    "surrogate_key: sk, scd_type: 0}",
    "dimension scd_type 1": "type: dimension\nparams: {natural_key: customer_id, "
    "surrogate_key: sk, scd_type: 1, track_cols: [tier]}",
    "dimension scd_type 2": "type: dimension\nparams: {natural_key: customer_id, "
    "surrogate_key: sk, scd_type: 2, track_cols: [tier]}",
    "scd2": "type: scd2\nparams: {keys: [customer_id], track_cols: [tier], "
    "effective_time_col: updated_at}",
}


@pytest.mark.parametrize("kind", list(NULL_KEY_PATTERNS))
def test_a_null_business_key_fails_the_node_and_leaves_the_table_as_it_was(
    tmp_path: Path, kind: str
):
    """A row without a key matches no row of the table: it would be added again by every
    run. The node fails naming the key column and how many rows, and writes nothing."""
    node = (
        "- name: dim\n"
        "  read: {connection: src, format: csv, path: customers.csv}\n"
        "  pattern:\n"
        + textwrap.indent(NULL_KEY_PATTERNS[kind], "    ")
        + "\n  write: {connection: out, format: delta, path: dim, mode: overwrite}\n"
    )
    path = project(tmp_path, node)
    (tmp_path / "src" / "customers.csv").write_text(CUSTOMERS_V1)
    run(path)
    before = delta_rows(tmp_path / "out" / "dim")
    (tmp_path / "src" / "customers.csv").write_text(
        CUSTOMERS_V1 + ",Nobody,n@example.com,Gold,NYC,2025-01-01\n"
    )
    for _ in range(2):
        result = run_job(odibi_dagster.load_definitions(path), "p")
        assert not result.success
        text = failure_text(result)
        assert "node 'dim' (" in text
        assert "key column 'customer_id' is null in 1 row(s) of the input" in text
        assert "nothing was written" in text
        assert delta_rows(tmp_path / "out" / "dim") == before


def test_a_fact_picks_current_versions_by_the_dimensions_own_flag_column(tmp_path: Path):
    """A dimension whose current flag is not called is_current: a scd2 lookup names it
    with current_flag_col, and fails (writing nothing) when it names no column."""
    dim = FACT_PIPELINE.replace(
        "      unknown_member: true\n", "      unknown_member: true\n      is_current_col: active\n"
    )
    good = dim.replace("scd2: true", "scd2: true\n          current_flag_col: active")
    path = project(tmp_path, good.replace("ORPHANS", "unknown"))
    (tmp_path / "src" / "customers.csv").write_text(CUSTOMERS_V1)
    (tmp_path / "src" / "orders.csv").write_text(ORDERS)
    run(path)
    (tmp_path / "src" / "customers.csv").write_text(CUSTOMERS_V2)  # Alice gets version 3
    run(path)
    facts = delta_rows(tmp_path / "out" / "fact_orders")
    assert sorted((r["order_id"], r["customer_sk"]) for r in facts) == [(10, 3), (11, 2), (12, 0)]

    shutil.rmtree(tmp_path / "out")
    path = project(tmp_path, dim.replace("ORPHANS", "unknown"))  # the flag left unnamed
    result = run_job(odibi_dagster.load_definitions(path), "p")
    assert not result.success
    text = failure_text(result)
    assert "node 'fact_orders' (" in text
    assert "'dim_customer' has no column 'is_current'" in text
    assert "current_flag_col" in text
    assert not (tmp_path / "out" / "fact_orders").exists()


def test_audit_text_is_stored_as_written(tmp_path: Path):
    """Backslashes and quotes in audit.source_system reach the table unchanged."""
    path = project(
        tmp_path,
        """\
        - name: dim
          read: {connection: src, format: csv, path: customers.csv}
          pattern:
            type: dimension
            params:
              natural_key: customer_id
              surrogate_key: sk
              scd_type: 0
              unknown_member: true
              audit: {source_system: 'CORP\\svc_etl ''eu'''}
          write: {connection: out, format: delta, path: dim}
        """,
    )
    (tmp_path / "src" / "customers.csv").write_text(CUSTOMERS_V1)
    run(path)
    rows = delta_rows(tmp_path / "out" / "dim")
    assert len(rows) == 3  # with the unknown member
    assert {r["source_system"] for r in rows} == {"CORP\\svc_etl 'eu'"}
