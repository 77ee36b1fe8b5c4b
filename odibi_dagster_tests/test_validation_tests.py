"""Odibi v3 ``validation.tests``, quarantine and gate: real materializations (pandas, local
disk), asserting the asset checks, the rows written, the rows quarantined and the
materialization metadata."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd
import pytest

import odibi_dagster
from odibi_dagster.cli import main
from odibi_dagster_tests.support.runs import failure_text, run_job
from odibi_dagster_tests.support.webhook import serving

ORDERS = (
    "order_id,customer_id,status,total,email\n"
    "1,10,paid,5.0,a@x.com\n"
    "2,,paid,7.5,b@x.com\n"
    "3,12,lost,3.0,c@x.com\n"
    "4,13,paid,-1.0,not-an-email\n"
    "5,14,open,9.0,e@x.com\n"
)


def project(tmp_path: Path, validation: str, *, downstream: bool = True) -> dg.Definitions:
    (tmp_path / "orders.csv").write_text(ORDERS)
    text = f"""
connections: {{fs: {{type: local, base_path: .}}}}
pipelines:
  - pipeline: p
    nodes:
      - name: src
        read: {{connection: fs, path: orders.csv, format: csv}}
      - name: clean
        depends_on: [src]
        transform: {{steps: ["SELECT * FROM src"]}}
        validation:
{validation}
        write: {{connection: fs, path: clean.parquet, format: parquet}}
"""
    if downstream:
        text += """      - name: report
        depends_on: [clean]
        write: {connection: fs, path: report.csv, format: csv}
"""
    (tmp_path / "p.yaml").write_text(text)
    return odibi_dagster.load_definitions(tmp_path / "p.yaml")


def checks(result: dg.ExecuteInProcessResult) -> dict[str, Any]:
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def test_each_test_is_an_asset_check_with_counts_and_samples(tmp_path: Path) -> None:
    defs = project(
        tmp_path,
        """          tests:
            - {type: not_null, columns: [customer_id], on_fail: warn}
            - {type: unique, columns: [order_id]}
            - {type: accepted_values, column: status, values: [paid, open], on_fail: warn}
            - {type: range, column: total, min: 0, on_fail: warn}
            - {type: regex_match, column: email, pattern: '^[^@]+@[^@]+\\.com$', on_fail: warn}
            - {type: custom_sql, name: small_orders, condition: "total < 9", threshold: 0.25,
               on_fail: warn}
            - {type: row_count, min: 1, max: 10}
            - {type: distribution, column: total, metric: max, threshold: "<=9"}""",
    )
    result = run_job(defs, "p")
    assert result.success, failure_text(result)
    found = checks(result)
    assert {n: c.passed for n, c in found.items()} == {
        "not_null": False,
        "unique": True,
        "accepted_values": False,
        "range": False,
        "regex_match": False,
        "small_orders": True,  # 1 of 5 fails: 20% <= 25%
        "row_count": True,
        "distribution": True,
    }
    assert found["not_null"].severity == dg.AssetCheckSeverity.WARN
    assert found["unique"].severity == dg.AssetCheckSeverity.ERROR
    nulls = found["not_null"].metadata
    assert nulls["failing_rows"].value == 1 and nulls["row_count"].value == 5
    values = found["accepted_values"].metadata
    assert values["failing_rows"].value == 1
    assert values["sample_failing_rows"].data == [{"status": "lost"}]
    assert found["regex_match"].metadata["sample_failing_rows"].data == [{"email": "not-an-email"}]
    assert found["range"].metadata["failing_rows"].value == 1
    # warn: every row is written, the downstream node ran
    assert len(pd.read_parquet(tmp_path / "clean.parquet")) == 5
    assert (tmp_path / "report.csv").exists()


def test_a_failing_fail_test_stops_the_node_and_downstream(tmp_path: Path) -> None:
    defs = project(
        tmp_path,
        """          tests:
            - {type: accepted_values, column: status, values: [paid, open]}""",
    )
    result = run_job(defs, "p")
    assert not result.success
    (check,) = result.get_asset_check_evaluations()
    assert not check.passed and check.severity == dg.AssetCheckSeverity.ERROR
    assert "1 of 5 rows fail" in failure_text(result)
    assert "node 'clean'" in failure_text(result)
    assert not (tmp_path / "clean.parquet").exists()
    assert not (tmp_path / "report.csv").exists()


def test_quarantine_moves_failing_rows_aside_and_keeps_the_rest(tmp_path: Path) -> None:
    defs = project(
        tmp_path,
        """          tests:
            - {type: not_null, columns: [customer_id], on_fail: quarantine}
            - {type: range, column: total, min: 0, on_fail: quarantine}
            - {type: accepted_values, column: status, values: [paid, open, lost], on_fail: warn}
          quarantine:
            connection: fs
            path: quarantine/orders
            add_columns: {_original_node: true}""",
    )
    result = run_job(defs, "p")
    assert result.success, failure_text(result)
    found = checks(result)
    assert not found["not_null"].passed and not found["range"].passed
    assert found["not_null"].severity == dg.AssetCheckSeverity.WARN
    kept = pd.read_parquet(tmp_path / "clean.parquet")
    assert sorted(kept["order_id"]) == [1, 3, 5]
    assert sorted(pd.read_csv(tmp_path / "report.csv")["order_id"]) == [1, 3, 5]
    quarantined = pd.read_parquet(tmp_path / "quarantine" / "orders")
    assert sorted(quarantined["order_id"]) == [2, 4]
    by_id = quarantined.set_index("order_id")
    assert by_id.loc[2, "_failed_tests"] == "not_null"
    assert by_id.loc[4, "_failed_tests"] == "range"
    assert by_id.loc[4, "_rejection_reason"].startswith("Failed: range: total within [0, None]")
    assert set(quarantined["_source_batch_id"]) == {result.run_id}
    assert set(quarantined["_original_node"]) == {"clean"}
    assert quarantined["_rejected_at"].str.endswith("+00:00").all()
    (mat,) = [
        m
        for m in result.get_asset_materialization_events()
        if m.asset_key == dg.AssetKey(["p", "clean"])
    ]
    meta = mat.materialization.metadata
    assert meta["odibi/rows_quarantined"].value == 2
    assert meta["dagster/row_count"].value == 3
    assert meta["odibi/quarantine_path"].value.endswith("quarantine/orders")

    # a second run appends: nothing of the first is lost
    again = run_job(defs, "p")
    assert again.success
    assert len(pd.read_parquet(tmp_path / "quarantine" / "orders")) == 4


def test_a_failing_gate_stops_the_node_and_downstream(tmp_path: Path) -> None:
    defs = project(
        tmp_path,
        """          tests:
            - {type: not_null, columns: [customer_id], on_fail: warn}
            - {type: range, column: total, min: 0, on_fail: warn}
          gate:
            require_pass_rate: 0.9""",
    )
    result = run_job(defs, "p")
    assert not result.success
    gate = checks(result)["gate"]
    assert not gate.passed and gate.severity == dg.AssetCheckSeverity.ERROR
    assert gate.metadata["pass_rate"].value == pytest.approx(0.6)
    assert "pass rate 60.0% < required 90.0%" in failure_text(result)
    assert not (tmp_path / "clean.parquet").exists()
    assert not (tmp_path / "report.csv").exists()


def test_gate_write_valid_only_quarantines_rows_failing_any_test(tmp_path: Path) -> None:
    defs = project(
        tmp_path,
        """          tests:
            - {type: not_null, columns: [customer_id], on_fail: warn}
            - {type: range, column: total, min: 0, on_fail: warn}
          quarantine: {connection: fs, path: q.parquet}
          gate:
            require_pass_rate: 0.9
            on_fail: write_valid_only
            thresholds: [{test: not_null, min_pass_rate: 0.99}]""",
    )
    result = run_job(defs, "p")
    assert result.success, failure_text(result)
    gate = checks(result)["gate"]
    assert not gate.passed and gate.severity == dg.AssetCheckSeverity.WARN
    assert "test 'not_null' pass rate 80.0%" in (gate.description or "")
    assert sorted(pd.read_parquet(tmp_path / "clean.parquet")["order_id"]) == [1, 3, 5]
    assert sorted(pd.read_parquet(tmp_path / "q.parquet")["order_id"]) == [2, 4]


def test_mode_warn_and_gate_warn_and_write_write_every_row(tmp_path: Path) -> None:
    defs = project(
        tmp_path,
        """          mode: warn
          tests:
            - {type: unique, columns: [status]}
          gate: {require_pass_rate: 1.0, on_fail: warn_and_write}""",
    )
    result = run_job(defs, "p")
    assert result.success, failure_text(result)
    found = checks(result)
    assert not found["unique"].passed and found["unique"].severity == dg.AssetCheckSeverity.WARN
    assert found["unique"].metadata["failing_rows"].value == 3  # the three 'paid'
    assert not found["gate"].passed
    assert len(pd.read_parquet(tmp_path / "clean.parquet")) == 5


def test_volume_drop_compares_with_earlier_materializations(
    tmp_path: Path, dagster_home: Path
) -> None:
    project(
        tmp_path,
        """          tests:
            - {type: volume_drop, threshold: 0.5, lookback_days: 7}""",
        downstream=False,
    )
    first = run_job(tmp_path / "p.yaml", "p")
    assert first.success
    assert "no earlier results" in (checks(first)["volume_drop"].description or "")
    (tmp_path / "orders.csv").write_text(ORDERS.splitlines()[0] + "\n1,10,paid,5.0,a@x.com\n")
    second = run_job(tmp_path / "p.yaml", "p")
    assert not second.success
    check = checks(second)["volume_drop"]
    assert not check.passed
    assert "80.0% below the average 5" in (check.description or "")


def test_freshness_and_schema_tests(tmp_path: Path) -> None:
    (tmp_path / "events.csv").write_text(
        "id,updated_at\n1,2020-01-01 00:00:00\n2,2020-01-02 00:00:00\n"
    )
    (tmp_path / "p.yaml").write_text(
        """
connections: {fs: {type: local, base_path: .}}
pipelines:
  - pipeline: p
    nodes:
      - name: events
        read: {connection: fs, path: events.csv, format: csv}
        columns: {id: {description: key}}
        validation:
          tests:
            - {type: freshness, column: updated_at, max_age: 7d, on_fail: warn}
            - {type: schema, strict: true, on_fail: warn}
            - {type: schema, name: loose, strict: false}
        write: {connection: fs, path: events.parquet, format: parquet}
"""
    )
    result = run_job(odibi_dagster.load_definitions(tmp_path / "p.yaml"), "p")
    assert result.success, failure_text(result)
    found = checks(result)
    assert not found["freshness"].passed
    assert "newest updated_at is 2020-01-02T00:00:00+00:00" in (
        found["freshness"].description or ""
    )
    assert not found["schema"].passed
    assert "unexpected column 'updated_at'" in (found["schema"].description or "")
    assert found["loose"].passed


@pytest.mark.parametrize(
    ("tests", "message"),
    [
        (
            "- {type: not_nul, columns: [a]}",
            "node 'clean': unknown test type 'not_nul' (did you mean 'not_null'?)",
        ),
        ("- {type: accepted_values, column: status}", "missing required key 'values'"),
        ("- {type: range, column: total}", "range needs `min:` or `max:`"),
        (
            "- {type: not_null, columns: [a], on_fail: quarantine}",
            "node 'clean': not_null test has on_fail: quarantine but `quarantine:` is not set",
        ),
        ("- {type: freshness, max_age: soon}", "max_age 'soon' is not a duration"),
    ],
)
def test_bad_tests_fail_at_load_with_file_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], tests: str, message: str
) -> None:
    (tmp_path / "p.yaml").write_text(
        f"""connections: {{fs: {{type: local, base_path: .}}}}
pipelines:
  - pipeline: p
    nodes:
      - name: clean
        read: {{connection: fs, path: orders.csv, format: csv}}
        validation:
          tests:
            {tests}
"""
    )
    assert main(["validate", str(tmp_path / "p.yaml")]) == 1
    err = capsys.readouterr().err
    assert "p.yaml:9: pipelines[0].nodes[0].validation.tests[0]" in err
    assert message in err


def test_gate_block_and_quarantine_alerts_are_sent_for_the_runs_that_had_them(
    tmp_path: Path, dagster_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "orders.csv").write_text(ORDERS)
    (tmp_path / "p.yaml").write_text(
        """
connections: {fs: {type: local, base_path: .}}
alerts:
  - type: webhook
    url: ${ODIBI_TEST_QUALITY_URL}
    on_events: [on_gate_block, on_quarantine]
    metadata: {throttle_minutes: 0}
pipelines:
  - pipeline: p
    nodes:
      - name: clean
        read: {connection: fs, path: orders.csv, format: csv}
        validation:
          tests:
            - {type: not_null, columns: [customer_id], on_fail: quarantine}
            - {type: range, column: total, min: 0, on_fail: warn}
          quarantine: {connection: fs, path: q.parquet}
          gate: {require_pass_rate: 0.9}
        write: {connection: fs, path: clean.parquet, format: parquet}
  - pipeline: fine
    nodes:
      - name: copy
        read: {connection: fs, path: orders.csv, format: csv}
        write: {connection: fs, path: copy.parquet, format: parquet}
"""
    )
    with serving() as receiver:
        monkeypatch.setenv("ODIBI_TEST_QUALITY_URL", receiver.url("/hook"))
        defs = odibi_dagster.load_definitions(tmp_path / "p.yaml")
        sensors = {s.name: s for s in defs.sensors or []}
        assert sorted(sensors) == [
            "odibi_alert_0_webhook_on_gate_block_failure",
            "odibi_alert_0_webhook_on_gate_block_success",
            "odibi_alert_0_webhook_on_quarantine_failure",
            "odibi_alert_0_webhook_on_quarantine_success",
        ]
        instance = dg.DagsterInstance.get()
        cursors: dict[str, str | None] = {}

        def tick_all() -> None:
            for name, sensor in sensors.items():
                ctx = dg.build_sensor_context(instance=instance, cursor=cursors.get(name))
                cursors[name] = sensor.evaluate_tick(ctx).cursor

        tick_all()  # the first tick sets the cursors
        blocked = run_job(defs, "p", instance=instance)
        assert not blocked.success  # the gate (abort) failed: 60% pass
        assert not (tmp_path / "q.parquet").exists()  # nothing of a failed node is kept
        assert run_job(defs, "fine", instance=instance).success
        tick_all()
        tick_all()
        [body] = receiver.bodies
        assert (body["event"], body["pipeline"], body["status"]) == (
            "on_gate_block",
            "p",
            "FAILURE",
        )
        assert body["failed_nodes"] == ["p/clean"]
        assert "pass rate 60.0% < required 90.0%" in body["error"]

        # the same node without the gate: rows quarantined, the run succeeds
        text = (tmp_path / "p.yaml").read_text().replace("gate: {require_pass_rate: 0.9}", "")
        (tmp_path / "p.yaml").write_text(text)
        defs = odibi_dagster.load_definitions(tmp_path / "p.yaml")
        sensors = {s.name: s for s in defs.sensors or []}
        assert run_job(defs, "p", instance=instance).success
        tick_all()
        tick_all()
        assert [b["event"] for b in receiver.bodies] == ["on_gate_block", "on_quarantine"]
        body = receiver.bodies[1]
        assert body["status"] == "SUCCESS" and body["failed_nodes"] == ["p/clean"]
        assert body["error"].startswith("p/clean: 1 rows quarantined to ")
        assert body["error"].endswith("q.parquet")


@pytest.mark.spark
def test_quarantine_on_spark_writes_the_same_rows_and_keeps_one_staged_result(
    spark: Any, tmp_path: Path
) -> None:
    (tmp_path / "orders.csv").write_text(ORDERS)
    (tmp_path / "p.yaml").write_text(
        """
engine: spark
connections: {fs: {type: local, base_path: .}}
pipelines:
  - pipeline: p
    nodes:
      - name: src
        read: {connection: fs, path: orders.csv, format: csv}
      - name: checked
        depends_on: [src]
        transform: {steps: ["SELECT * FROM src"]}
        validation:
          tests:
            - {type: not_null, columns: [customer_id], on_fail: quarantine}
            - {type: regex_match, column: email, pattern: '^[^@]+@[^@]+\\.com$',
               on_fail: quarantine}
          quarantine: {connection: fs, path: quarantine, format: delta}
      - name: report
        depends_on: [checked]
        write: {connection: fs, path: report, format: delta}
"""
    )
    instance = dg.DagsterInstance.ephemeral()
    result = run_job(odibi_dagster.load_definitions(tmp_path / "p.yaml"), "p", instance=instance)
    assert result.success, failure_text(result)
    from deltalake import DeltaTable

    assert sorted(DeltaTable(str(tmp_path / "report")).to_pandas()["order_id"]) == [1, 3, 5]
    rows = DeltaTable(str(tmp_path / "quarantine")).to_pandas().sort_values("order_id")
    assert list(rows["order_id"]) == [2, 4]
    assert list(rows["_failed_tests"]) == ["not_null", "regex_match"]
    (mat,) = [
        m.materialization.metadata
        for m in result.get_asset_materialization_events()
        if m.asset_key.path[-1] == "checked"
    ]
    assert mat["odibi/rows_quarantined"].value == 2 and mat["dagster/row_count"].value == 3
    # the result staged before the split was dropped: only the kept one is there
    store = Path(instance.storage_directory()) / "odibi_spark" / "p" / "checked"
    assert [p.name for p in store.iterdir()] == [result.run_id]


def test_old_keys_and_tests_together_and_pii_values_are_not_shown(tmp_path: Path) -> None:
    (tmp_path / "orders.csv").write_text(ORDERS)
    (tmp_path / "p.yaml").write_text(
        """
connections: {fs: {type: local, base_path: .}}
pipelines:
  - pipeline: p
    nodes:
      - name: clean
        read: {connection: fs, path: orders.csv, format: csv}
        columns: {email: {pii: true}, order_id: {}, customer_id: {}, status: {}, total: {}}
        validation:
          not_empty: true
          no_nulls: [order_id]
          schema: {required_columns: [order_id]}
          tests:
            - {type: schema}
            - {type: regex_match, column: email, pattern: '@', on_fail: warn}
        write: {connection: fs, path: clean.parquet, format: parquet}
"""
    )
    result = run_job(odibi_dagster.load_definitions(tmp_path / "p.yaml"), "p")
    assert result.success, failure_text(result)
    found = checks(result)
    assert {n: c.passed for n, c in found.items()} == {
        "not_empty": True,
        "no_nulls_order_id": True,
        "schema": True,
        "schema_2": True,  # the test, named apart from the schema: check
        "regex_match": False,
    }
    assert found["regex_match"].metadata["sample_failing_rows"].data == [{"email": "***"}]


def test_tests_on_a_read_only_source_report_without_blocking(tmp_path: Path) -> None:
    (tmp_path / "orders.csv").write_text(ORDERS)
    (tmp_path / "p.yaml").write_text(
        """
connections: {fs: {type: local, base_path: .}}
pipelines:
  - pipeline: p
    nodes:
      - name: src
        read: {connection: fs, path: orders.csv, format: csv}
        validation:
          tests:
            - {type: not_null, columns: [customer_id]}
            - {type: unique, columns: [order_id]}
      - name: copy
        depends_on: [src]
        write: {connection: fs, path: copy.parquet, format: parquet}
"""
    )
    result = run_job(odibi_dagster.load_definitions(tmp_path / "p.yaml"), "p")
    found = checks(result)
    assert {n: c.passed for n, c in found.items()} == {"not_null": False, "unique": True}
    assert found["not_null"].metadata["failing_rows"].value == 1
    assert len(pd.read_parquet(tmp_path / "copy.parquet")) == 5


def test_a_condition_that_cannot_run_names_the_test_and_the_columns(tmp_path: Path) -> None:
    defs = project(
        tmp_path,
        """          tests:
            - {type: not_null, columns: [order_id]}
            - {type: custom_sql, name: positive, condition: "amount > 0"}""",
    )
    result = run_job(defs, "p")
    assert not result.success
    text = failure_text(result)
    assert "node 'clean'" in text
    assert "validation test 'positive' (custom_sql): condition 'amount > 0' cannot be" in text
    assert "columns: order_id, customer_id, status, total, email" in text
    assert not (tmp_path / "clean.parquet").exists()


def test_range_takes_a_yaml_date_and_quarantine_keeps_the_row_order(tmp_path: Path) -> None:
    defs = project(
        tmp_path,
        """          tests:
            - {type: unique, columns: [k], on_fail: quarantine}
            - {type: range, column: d, min: 2024-01-01, on_fail: quarantine}
          quarantine: {connection: fs, path: quarantine/orders}""",
        downstream=False,
    )
    keys = [5, 3, 9, 1, 3, 7, 2, 8, 6, 4, 11, 12]
    days = ["2024-02-01"] * 12
    days[6] = "2023-12-31"
    lines = [f"{i},{k},{d}" for i, (k, d) in enumerate(zip(keys, days, strict=True), start=1)]
    (tmp_path / "orders.csv").write_text("order_id,k,d\n" + "\n".join(lines) + "\n")
    result = run_job(defs, "p")
    assert result.success, failure_text(result)
    assert not checks(result)["range"].passed
    kept = pd.read_parquet(tmp_path / "clean.parquet")
    assert list(kept["order_id"]) == [1, 3, 4, 6, 8, 9, 10, 11, 12]
    quarantined = pd.read_parquet(tmp_path / "quarantine" / "orders")
    assert list(quarantined["order_id"]) == [2, 5, 7]
    assert quarantined["_rejection_reason"][2].startswith(
        "Failed: range: d within [2024-01-01, None]"
    )
