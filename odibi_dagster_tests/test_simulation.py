"""``read.format: simulation`` (Odibi v3's synthetic data generator): Odibi's own example
projects run here and give the rows Odibi publishes or documents; every generator, the
derived-expression language (and what it refuses), incremental continuation across runs,
and the same rows on Spark.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd
import pytest
import yaml

from odibi_dagster import OdibiConfigError, load_project
from odibi_dagster.config.simulation import SimulationRead, SimulationSpec
from odibi_dagster.engines.pandas import PandasEngine
from odibi_dagster.errors import OdibiRunError
from odibi_dagster.incremental import MARK_KEY
from odibi_dagster.simulation import STATE_KEY, WALKS_KEY, generate, read_simulation
from odibi_dagster.simulation_expr import ExpressionError, parse_expression
from odibi_dagster_tests.support.runs import failure_text, run_job

CORPUS = Path(__file__).resolve().parent / "odibi_v3_corpus"
T0 = datetime(2026, 1, 1)


def spec(columns: list[dict[str, Any]], **kw: Any) -> SimulationSpec:
    """A simulation of ``columns`` (one entity, 10 rows a minute apart unless ``kw`` says)."""
    data: dict[str, Any] = {
        "scope": {
            "start_time": "2026-01-01T00:00:00Z",
            "timestep": kw.pop("timestep", "1m"),
            "seed": kw.pop("seed", 42),
        },
        "entities": kw.pop("entities", {"count": 1}),
        "columns": columns,
        **kw,
    }
    if "end_time" in kw:
        data["scope"]["end_time"] = data.pop("end_time")
    else:
        data["scope"]["row_count"] = data.pop("row_count", 10)
    return SimulationSpec.model_validate(data)


def gen(columns: list[dict[str, Any]], **kw: Any) -> pd.DataFrame:
    return generate(spec(columns, **kw), where="node 't'").frame


def project_from_corpus(name: str, tmp_path: Path) -> Path:
    """The corpus file with its connections replaced by one local connection at
    ``tmp_path/out`` (Odibi's local connections there carry path:/format:, which Odibi
    ignores and this project checks); the pipelines are the file's, unchanged."""
    data = yaml.safe_load((CORPUS / name).read_text(encoding="utf-8"))
    (conn,) = data["connections"]
    data["connections"] = {conn: {"type": "local", "base_path": str(tmp_path / "out")}}
    project = tmp_path / "project.yaml"
    project.write_text(yaml.safe_dump(data, sort_keys=False))
    return project


# --------------------------------------------------------------------------- Odibi's examples


def test_odibis_tank_example_runs_and_gives_odibis_published_rows(
    tmp_path: Path, dagster_home: Path
) -> None:
    project = project_from_corpus("cheme_L00_tank_data.yaml", tmp_path)
    result = run_job(project, "tank_data_pipeline")
    assert result.success, failure_text(result)
    text = (tmp_path / "out" / "tank_data.csv").read_text().splitlines()
    assert text[0] == "entity_id,timestamp,inlet_flow_gpm,outlet_flow_gpm,tank_level_ft"
    assert len(text) == 101  # row_count 100, one entity
    # Odibi publishes this example's output (examples/cheme_course/L00_setup/data/
    # tank_data.csv @ 8ca38d6): the same values, to the last digit; Odibi writes the
    # timestamp as ISO text, here it is a timestamp column
    assert text[1] == "TK-01,2024-01-01 00:00:00,50.0,45.0,10.05"
    assert text[2] == "TK-01,2024-01-01 00:01:00,50.0,45.0,10.100000000000001"
    assert text[51] == "TK-01,2024-01-01 00:50:00,50.0,45.0,12.550000000000036"
    assert text[100] == "TK-01,2024-01-01 01:39:00,50.0,45.0,15.000000000000071"


def test_odibis_pi_control_example_runs_with_its_ignored_keys_noted(
    tmp_path: Path, dagster_home: Path
) -> None:
    project = project_from_corpus("cheme_L06_tank_pi.yaml", tmp_path)
    notes = [str(n) for n in load_project(project).notes]
    assert any("generator.drift: Odibi's random_walk ignores it" in n for n in notes), notes
    assert any("generator.noise: Odibi's random_walk ignores it" in n for n in notes), notes
    result = run_job(project, "tank_pi_pipeline")
    assert result.success, failure_text(result)
    df = pd.read_parquet(tmp_path / "out" / "tank_pi.parquet")
    assert len(df) == 240
    assert list(df["row_num"]) == list(range(240))  # prev('row_num', -1) + 1
    assert set(df.loc[df.row_num < 30, "level_sp_ft"]) == {10.0}  # the step at row 30
    assert set(df.loc[df.row_num >= 30, "level_sp_ft"]) == {12.0}
    assert df["outlet_flow_gpm"].between(45, 55).all()  # the random walk's bounds
    assert df["valve_pct"].between(0, 100).all()  # pid(): output_min / output_max
    assert (df["inlet_flow_gpm"] == df["valve_pct"]).all()
    # the level integrates last row's inflow minus this row's outflow
    level, inflow, out = df["level_pv_ft"], df["inlet_flow_gpm"], df["outlet_flow_gpm"]
    expected = level.shift(1, fill_value=10.0) + (inflow.shift(1, fill_value=50.0) - out) / 100
    assert (level - expected).abs().max() < 1e-9


def test_odibis_simulation_example_gives_what_its_comments_promise() -> None:
    data = yaml.safe_load((CORPUS / "simulation_example.yaml").read_text(encoding="utf-8"))
    read = SimulationRead.model_validate(data["pipelines"][0]["nodes"][0]["read"])
    df = generate(read.options.simulation, where="node 'sensor_telemetry'").frame
    # "10 sensors x 288 rows", less sensor_03's 2-hour outage (10:00 to 12:00 inclusive:
    # 25 five-minute rows), plus 0.5% duplicated rows
    base = 10 * 288 - 25
    assert base < len(df) <= base + 40
    assert len(df.drop_duplicates()) == base
    assert sorted(df["sensor_id"].unique()) == [f"sensor_{i:02d}" for i in range(1, 11)]
    s3 = df[df.sensor_id == "sensor_03"]["timestamp"]
    assert not s3.between(pd.Timestamp("2026-01-01 10:00"), pd.Timestamp("2026-01-01 12:00")).any()
    assert df["timestamp"].is_monotonic_increasing
    assert df["timestamp"].max() == pd.Timestamp("2026-01-01 23:55")  # 24 hours of 5m rows
    # temperatures in range but for the 1% outliers (x3) and the 2% nulls; sensor_05 hotter
    temp = df["temperature"]
    assert 0.01 < temp.isna().mean() < 0.035
    hot = df.sensor_id == "sensor_05"
    in_range = temp[hot].dropna().between(30, 40).mean(), temp[~hot].dropna().between(18, 28).mean()
    assert in_range[0] > 0.97 and in_range[1] > 0.97
    assert df["humidity"].dropna().between(30, 70 * 3).all()
    assert set(df["status"]) <= {"active", "idle", "maintenance", "error"}
    assert (df["status"] == "active").mean() > 0.8
    assert df["is_online"].mean() > 0.95
    assert str(df["is_online"].dtype) == "boolean"
    # record_id counts 1..288 per sensor; as a number it takes outliers too (x3), as in Odibi
    ids = df[~df.duplicated()]["record_id"]
    assert str(ids.dtype) == "Int64" and ids.between(1, 288).mean() > 0.97
    assert set(ids[ids > 288]) <= {3 * i for i in range(1, 289)}
    # deterministic: the same seed gives the same rows, another seed others
    again = generate(read.options.simulation, where="x").frame
    pd.testing.assert_frame_equal(df, again)
    other = read.options.simulation.model_copy(
        update={"scope": read.options.simulation.scope.model_copy(update={"seed": 7})}
    )
    assert not generate(other, where="x").frame["humidity"].equals(df["humidity"])


# Odibi's docs/features/stateful_simulation.md @ 2917eb8, "Complete Example: Battery Energy
# Storage" (the YAML block, unchanged)
BATTERY = """\
simulation:
  scope:
    start_time: "2026-01-01T00:00:00Z"
    timestep: "5m"
    row_count: 100  # ~8 hours
    seed: 42

  entities:
    count: 1
    id_prefix: "BESS_Module_"

  columns:
    # Time tracking
    - name: timestamp
      data_type: timestamp
      generator: {type: timestamp}

    - name: row_num
      data_type: int
      generator:
        type: derived
        expression: "prev('row_num', -1) + 1"

    # Battery constants
    - name: capacity_ah
      data_type: float
      generator: {type: constant, value: 100.0}

    # Operating cycle (charge → discharge → idle)
    - name: charge_current_a
      data_type: float
      generator:
        type: derived
        expression: "20.0 if row_num < 40 else (-15.0 if row_num < 80 else 0.0)"

    # SOC INTEGRATION (requires prev!)
    - name: soc_pct
      data_type: float
      generator:
        type: derived
        expression: >
          max(0, min(100,
            prev('soc_pct', 50) +
            (charge_current_a * (5/60)) / capacity_ah * 100
          ))

    # Thermal model
    - name: ambient_temp_c
      data_type: float
      generator: {type: range, min: 20, max: 30}

    - name: temp_setpoint_c
      data_type: float
      generator: {type: constant, value: 25.0}

    - name: heat_gen_w
      data_type: float
      generator:
        type: derived
        expression: "0.01 * charge_current_a * charge_current_a"

    - name: module_temp_c
      data_type: float
      generator:
        type: derived
        expression: >
          prev('module_temp_c', 25) +
          0.03 * (heat_gen_w / 100) +
          0.05 * (ambient_temp_c - prev('module_temp_c', 25)) -
          0.04 * (prev('cooling_pct', 0) / 100) * (prev('module_temp_c', 25) - 20)

    # PID COOLING CONTROL
    - name: cooling_pct
      data_type: float
      generator:
        type: derived
        expression: >
          pid(
            pv=module_temp_c,
            sp=temp_setpoint_c,
            Kp=4.0,
            Ki=0.15,
            Kd=0.8,
            dt=300
          )

    # Smoothed temperature for dashboards
    - name: temp_display_c
      data_type: float
      generator:
        type: derived
        expression: "ema('module_temp_c', alpha=0.2, default=25)"
"""


def test_odibis_battery_example_integrates_charge_as_its_docs_describe() -> None:
    sim = SimulationSpec.model_validate(yaml.safe_load(BATTERY)["simulation"])
    df = generate(sim, where="x").frame
    assert len(df) == 100 and list(df["row_num"]) == list(range(100))
    soc = df["soc_pct"]
    # charging at 20 A: +20 * 5/60 / 100 * 100 = 1.667 % per 5 minutes from 50 %, held at 100
    assert soc[0] == pytest.approx(50 + 20 * 5 / 60)
    assert soc[:40].is_monotonic_increasing and soc[39] == 100
    # discharging at 15 A: -1.25 % per step for 40 steps, then idle
    assert soc[79] == pytest.approx(100 - 40 * 1.25)
    assert set(soc[80:]) == {soc[79]}
    assert df["cooling_pct"].between(0, 100).all()  # pid's default output limits
    assert df["temp_display_c"][0] == 25  # ema's default first
    temp, shown = df["module_temp_c"], df["temp_display_c"]
    assert shown[1:].to_numpy() == pytest.approx((0.2 * temp + 0.8 * shown.shift(1))[1:].to_numpy())


# --------------------------------------------------------------------------- generators


def test_scope_rows_entities_and_timestamps() -> None:
    df = gen(
        [
            {
                "name": "id",
                "data_type": "string",
                "generator": {"type": "constant", "value": "{entity_id}"},
            },
            {"name": "ts", "data_type": "timestamp", "generator": {"type": "timestamp"}},
        ],
        entities={"count": 3, "id_prefix": "pump_"},
        timestep="15m",
        end_time="2026-01-01T01:00:00Z",
    )
    assert len(df) == 3 * 5  # 00:00 to 01:00 every 15 minutes, inclusive
    assert sorted(df["id"].unique()) == ["pump_01", "pump_02", "pump_03"]
    assert list(df["ts"].unique()) == [T0 + timedelta(minutes=15 * i) for i in range(5)]
    assert str(df["ts"].dtype) == "datetime64[ns]"
    named = gen(
        [
            {
                "name": "id",
                "data_type": "string",
                "generator": {
                    "type": "constant",
                    "value": "{entity_id}#{entity_index}/{row_number}",
                },
            }
        ],
        entities={"names": ["b_pump", "a_pump"]},
        row_count=2,
    )
    # sorted by time; at one time, entities by name
    assert list(named["id"]) == ["a_pump#0/0", "b_pump#1/0", "a_pump#0/1", "b_pump#1/1"]


def test_number_generators_stay_in_their_bounds() -> None:
    df = gen(
        [
            {"name": "u", "data_type": "float", "generator": {"type": "range", "min": 5, "max": 6}},
            {
                "name": "n",
                "data_type": "float",
                "generator": {
                    "type": "range",
                    "min": 0,
                    "max": 10,
                    "distribution": "normal",
                    "std_dev": 50,
                },
            },
            {
                "name": "w",
                "data_type": "float",
                "generator": {
                    "type": "random_walk",
                    "start": 50,
                    "min": 49,
                    "max": 51,
                    "volatility": 5,
                    "precision": 1,
                    "shock_rate": 1.0,
                    "shock_bias": 1.0,
                    "mean_reversion": 0.5,
                },
            },
            {
                "name": "seq",
                "data_type": "int",
                "generator": {"type": "sequential", "start": 100, "step": 10},
            },
            {
                "name": "b",
                "data_type": "boolean",
                "generator": {"type": "boolean", "true_probability": 1.0},
            },
            {
                "name": "c",
                "data_type": "string",
                "generator": {"type": "categorical", "values": ["x", "y"], "weights": [0.0, 1.0]},
            },
        ],
        row_count=200,
    )
    assert df["u"].between(5, 6).all() and df["u"].nunique() > 150
    assert df["n"].between(0, 10).all() and {0.0, 10.0} <= set(df["n"])  # clipped
    assert df["w"].between(49, 51).all() and (df["w"] * 10 % 1 == 0).all()
    assert list(df["seq"][:3]) == [100, 110, 120] and str(df["seq"].dtype) == "Int64"
    assert df["b"].all() and set(df["c"]) == {"y"}


def test_daily_profile_interpolates_between_its_anchors() -> None:
    df = gen(
        [
            {"name": "ts", "data_type": "timestamp", "generator": {"type": "timestamp"}},
            {
                "name": "load",
                "data_type": "float",
                "generator": {
                    "type": "daily_profile",
                    "min": 0,
                    "max": 100,
                    "profile": {"00:00": 0, "12:00": 100},
                },
            },
            {
                "name": "shift",
                "data_type": "int",
                "generator": {
                    "type": "daily_profile",
                    "min": 0,
                    "max": 10,
                    "interpolation": "step",
                    "precision": 0,
                    "profile": {"06:00": 8, "18:00": 2},
                },
            },
        ],
        timestep="3h",
        row_count=8,
    )
    assert list(df["load"]) == [0, 25, 50, 75, 100, 75, 50, 25]  # wraps to midnight
    assert list(df["shift"]) == [2, 2, 8, 8, 8, 8, 2, 2]


def test_identity_and_network_generators() -> None:
    df = gen(
        [
            {"name": "u4", "data_type": "string", "generator": {"type": "uuid"}},
            {
                "name": "u5",
                "data_type": "string",
                "generator": {"type": "uuid", "version": 5, "namespace": "acme"},
            },
            {
                "name": "mail",
                "data_type": "string",
                "generator": {"type": "email", "domain": "x.org", "pattern": "user_{row}"},
            },
            {
                "name": "ip",
                "data_type": "string",
                "generator": {"type": "ipv4", "subnet": "10.1.0.0/16"},
            },
            {
                "name": "loc",
                "data_type": "string",
                "generator": {"type": "geo", "bbox": [37, -122.5, 37.8, -122]},
            },
        ],
        row_count=20,
    )
    assert all(uuid.UUID(v).version == 4 for v in df["u4"]) and df["u4"].nunique() == 20
    ns = uuid.uuid5(uuid.NAMESPACE_DNS, "acme")
    assert df["u5"][3] == str(uuid.uuid5(ns, "entity_01:3"))
    assert df["mail"][5] == "user.5@x.org"
    assert all(IPv4Address(v) in IPv4Network("10.1.0.0/16") for v in df["ip"])
    lat, lon = (float(x) for x in df["loc"][0].strip("()").split(","))
    assert 37 <= lat <= 37.8 and -122.5 <= lon <= -122


def test_nulls_overrides_scheduled_values_and_chaos() -> None:
    df = gen(
        [
            {
                "name": "id",
                "data_type": "string",
                "generator": {"type": "constant", "value": "{entity_id}"},
            },
            {"name": "ts", "data_type": "timestamp", "generator": {"type": "timestamp"}},
            {
                "name": "p",
                "data_type": "float",
                "generator": {"type": "constant", "value": 1.0},
                "entity_overrides": {"big": {"type": "constant", "value": 100.0}},
            },
            {
                "name": "gone",
                "data_type": "float",
                "generator": {"type": "constant", "value": 1.0},
                "null_rate": 1.0,
            },
        ],
        entities={"names": ["big", "small"]},
        scheduled_events=[
            {
                "type": "forced_value",
                "entity": "small",
                "column": "p",
                "value": 0.0,
                "start_time": "2026-01-01T00:02:00Z",
                "end_time": "2026-01-01T00:03:00Z",
            }
        ],
        chaos={
            "downtime_events": [
                {
                    "entity": "big",
                    "start_time": "2026-01-01T00:05:00Z",
                    "end_time": "2026-01-01T00:09:00Z",
                }
            ]
        },
    )
    big, small = df[df.id == "big"], df[df.id == "small"]
    assert len(big) == 5 and set(big["p"]) == {100.0}  # offline from 00:05
    assert list(small["p"]) == [1.0, 1.0, 0.0, 0.0] + [1.0] * 6
    assert df["gone"].isna().all()
    out = gen(
        [{"name": "v", "data_type": "float", "generator": {"type": "constant", "value": 2.0}}],
        row_count=1000,
        chaos={"outlier_rate": 0.1, "outlier_factor": 5.0, "duplicate_rate": 0.1},
    )
    assert set(out["v"]) == {2.0, 10.0} and 0.05 < (out["v"] == 10.0).mean() < 0.15
    assert 1050 < len(out) < 1150


def test_derived_expressions_read_columns_state_and_other_entities() -> None:
    df = gen(
        [
            {"name": "ts", "data_type": "timestamp", "generator": {"type": "timestamp"}},
            {
                "name": "tag",
                "data_type": "string",
                "generator": {"type": "constant", "value": "{entity_id}"},
            },
            # out of order on purpose: columns are computed after what they read
            {
                "name": "f",
                "data_type": "float",
                "generator": {"type": "derived", "expression": "c * 1.8 + 32"},
            },
            {
                "name": "c",
                "data_type": "float",
                "generator": {"type": "derived", "expression": "_row_index * 10.0"},
            },
            {
                "name": "hot",
                "data_type": "string",
                "generator": {
                    "type": "derived",
                    "expression": "'HOT' if c > 50 and not false else 'OK'",
                },
            },
            {
                "name": "total",
                "data_type": "float",
                "generator": {"type": "derived", "expression": "prev('total', 0) + c"},
            },
            {
                "name": "avg",
                "data_type": "float",
                "generator": {"type": "derived", "expression": "ema('c', 0.5, 0)"},
            },
            {
                "name": "safe",
                "data_type": "float",
                "generator": {"type": "derived", "expression": "safe_div(c, _row_index, -1)"},
            },
            {
                "name": "first",
                "data_type": "float",
                "generator": {"type": "derived", "expression": "coalesce(None, max(1, 2, c), 3)"},
            },
            {
                "name": "minute",
                "data_type": "int",
                "generator": {"type": "derived", "expression": "_timestamp.minute"},
            },
            {
                "name": "half_of_a",
                "data_type": "float",
                "generator": {
                    "type": "derived",
                    "expression": "tank_a.c * 0.5 if entity_id == 'tank_b' else 0",
                },
            },
        ],
        entities={"names": ["tank_b", "tank_a"]},
        row_count=8,
    )
    a, b = df[df.tag == "tank_a"].reset_index(), df[df.tag == "tank_b"].reset_index()
    assert list(a["f"][:2]) == [32.0, 50.0]
    assert list(a["hot"]) == ["OK"] * 6 + ["HOT"] * 2
    assert list(a["total"][:4]) == [0.0, 10.0, 30.0, 60.0]
    assert list(a["avg"][:3]) == [0.0, 5.0, 12.5]  # the default first, then 0.5 of each
    assert list(a["safe"][:2]) == [-1.0, 10.0]
    assert list(a["first"][:3]) == [2.0, 10.0, 20.0]
    assert list(a["minute"][:3]) == [0, 1, 2]
    assert list(b["half_of_a"][:3]) == [0.0, 5.0, 10.0] and set(a["half_of_a"]) == {0.0}


@pytest.mark.parametrize(
    ("expression", "refused"),
    [
        ("__import__('os').system('echo hi')", "calling the method '.system()'"),
        ("__import__('os')", "calling '__import__'"),
        ("open('/etc/passwd')", "calling 'open'"),
        ("(1).__class__", "the attribute '.__class__'"),
        ("[x for x in range(3)]", "'ListComp'"),
        ("(lambda: 1)()", "calling"),
        ("c[0]", "'Subscript'"),
        ("_timestamp.replace(year=1)", "calling"),
        ("prev(c, 0)", "prev() takes a column name in quotes"),
        ("round(c, digits=2)", "round() has no argument 'digits'"),
        ("1 +", "is not valid"),
        ("1" + "+1" * 3000, "is nested too deeply"),  # Python's parser gives up here
        ("-" * 500 + "1", "is nested too deeply"),  # parses, but too deep to evaluate
    ],
)
def test_expressions_outside_the_grammar_are_refused(expression: str, refused: str) -> None:
    with pytest.raises(ExpressionError) as exc:
        parse_expression(expression)
    assert refused in str(exc.value)


@pytest.mark.parametrize(
    "expression",
    [
        "((10 ** 1000) ** 1000) ** 1000",
        "'x' * 1000000000",
        "[0] * 10 ** 9",
        "str(round(1, -10 ** 9))",
        "str(round(1.5, 10 ** 9))",
    ],
)
def test_expressions_that_would_exhaust_time_or_memory_fail_fast(expression: str) -> None:
    bad = spec(
        [
            {
                "name": "x",
                "data_type": "string",
                "generator": {"type": "derived", "expression": expression},
            }
        ],
        row_count=1,
    )
    with pytest.raises(OdibiRunError, match=r"is too large|is too long|use at most 400"):
        generate(bad, where="node 'gen'")


@pytest.mark.parametrize(
    ("data_type", "expression", "message"),
    [
        ("float", "prev('x', 3) * prev('x', 3)", "the result is too large (more than 100000 bits)"),
        ("float", "safe_mul(prev('x', 3), prev('x', 3))", "the result is too large"),
        ("string", "prev('x', 'a') + prev('x', 'a')", "the result is too long"),
    ],
)
def test_a_value_growing_row_after_row_fails_once_too_large(
    data_type: str, expression: str, message: str
) -> None:
    grows = spec(
        [
            {
                "name": "x",
                "data_type": data_type,
                "generator": {"type": "derived", "expression": expression},
            }
        ],
        row_count=40,
    )
    with pytest.raises(OdibiRunError) as exc:
        generate(grows, where="node 'gen' (p.yaml:3)")
    msg = str(exc.value)
    # squaring passes 100000 bits at row 17 (3 ** 2 ** 16), doubling 100000 letters at row 18
    assert msg.startswith(
        "node 'gen' (p.yaml:3): simulation column 'x' (entity 'entity_01', 2026-01-01T00:1"
    ), msg
    assert message in msg, msg


def test_ema_reads_the_current_row_whatever_the_column_order() -> None:
    level = {
        "name": "level",
        "data_type": "float",
        "generator": {"type": "derived", "expression": "_row_index * 10.0"},
    }
    smooth = {
        "name": "smooth",
        "data_type": "float",
        "generator": {"type": "derived", "expression": "ema('level', 0.5, 0)"},
    }
    expected = [0.0, 5.0, 12.5, 21.25, 30.625]
    for columns in ([level, smooth], [smooth, level]):
        df = gen(columns, row_count=5)
        assert list(df.columns) == [c["name"] for c in columns]  # the YAML's order
        assert list(df["smooth"]) == expected


STATEFUL_COLUMNS: list[dict[str, Any]] = [
    {"name": "ts", "data_type": "timestamp", "generator": {"type": "timestamp"}},
    {
        "name": "level",
        "data_type": "float",
        "generator": {"type": "derived", "expression": "prev('level', 0) + 1.5"},
    },
    {
        "name": "smooth",
        "data_type": "float",
        "generator": {"type": "derived", "expression": "ema('level', 0.3, 0)"},
    },
    {
        "name": "before",
        "data_type": "timestamp",
        "generator": {"type": "derived", "expression": "prev('ts', None)"},
    },
    {
        "name": "valve",
        "data_type": "float",
        "generator": {
            "type": "derived",
            "expression": "pid(pv=level, sp=20, Kp=0.2, Ki=0.4, Kd=0.1, output_max=1000)",
        },
    },
    {
        "name": "valve2",  # the same call in another column: a state of its own
        "data_type": "float",
        "generator": {
            "type": "derived",
            "expression": "pid(pv=level, sp=20, Kp=0.2, Ki=0.4, Kd=0.1, output_max=1000)",
        },
    },
]


def test_runs_one_after_another_continue_prev_ema_and_pid() -> None:
    whole = generate(spec(STATEFUL_COLUMNS, row_count=8, entities={"count": 2}), where="t")
    part = spec(STATEFUL_COLUMNS, row_count=4, entities={"count": 2})
    first = generate(part, where="t")
    second = generate(
        part, where="t", after=first.last_timestamp, walks=first.walks, state=first.state
    )
    joined = pd.concat([first.frame, second.frame], ignore_index=True)
    pd.testing.assert_frame_equal(joined, whole.frame)
    assert list(whole.frame["valve"]) == list(whole.frame["valve2"])
    # the state is JSON (it goes into the materialization metadata)
    state = first.state["entity_01"]
    assert state["level"] == 6.0 and state["ts"] == {"timestamp": "2026-01-01T00:03:00"}
    pids = sorted(k.split(":")[0] for k in state if k.startswith("_pid_"))
    assert pids == ["_pid_valve", "_pid_valve2"]  # one per column, named by it
    assert set(state) == {"level", "ts", "_ema_level", *(k for k in state if "_pid_" in k)}
    # without the state a run starts over: prev() from its default
    fresh = generate(part, where="t", after=first.last_timestamp, walks=first.walks)
    assert list(fresh.frame["level"][:2]) == [1.5, 1.5]


def test_values_that_do_not_fit_the_data_type_name_the_column() -> None:
    bad = spec(
        [
            {
                "name": "level",
                "data_type": "float",
                "generator": {"type": "derived", "expression": "'HIGH'"},
            }
        ]
    )
    with pytest.raises(OdibiRunError) as exc:
        generate(bad, where="node 'gen' (p.yaml:3)")
    assert str(exc.value).startswith(
        "node 'gen' (p.yaml:3): simulation column 'level' is data_type float, but its "
        "generator gives values like 'HIGH'"
    )


def test_an_expression_failing_at_run_time_names_the_node_column_and_row() -> None:
    bad = spec(
        [
            {
                "name": "x",
                "data_type": "float",
                "generator": {"type": "derived", "expression": "1 / _row_index"},
            }
        ]
    )
    with pytest.raises(OdibiRunError) as exc:
        generate(bad, where="node 'gen' (p.yaml:3)")
    msg = str(exc.value)
    assert msg.startswith(
        "node 'gen' (p.yaml:3): simulation column 'x' (entity 'entity_01', 2026-01-01T00:00:00Z)"
    )
    assert "ZeroDivisionError" in msg


# --------------------------------------------------------------------------- loading


def load_problems(tmp_path: Path, read: str) -> list[str]:
    text = f"""\
project: p
connections:
  lake: {{type: local, base_path: {tmp_path}}}
pipelines:
  - pipeline: p
    nodes:
      - name: gen
        read:
{read}
        write: {{connection: lake, path: out.parquet, format: parquet}}
"""
    (tmp_path / "p.yaml").write_text(text)
    with pytest.raises(OdibiConfigError) as exc:
        load_project(tmp_path / "p.yaml")
    return [str(p) for p in exc.value.problems]


SIM = """\
          format: simulation
          options:
            simulation:
              scope: {{start_time: "2026-01-01T00:00:00Z", timestep: "{timestep}", {count}}}
              entities: {{names: [a, b]}}
              columns:
                - name: x
                  data_type: float
                  generator: {generator}
"""


@pytest.mark.parametrize(
    ("fill", "line", "key", "message"),
    [
        (
            {"timestep": "5 minutes"},
            12,
            "read.options.simulation.scope.timestep",
            "timestep '5 minutes' is not a positive duration",
        ),
        (
            {"count": "row_count: 5, end_time: '2026-01-02T00:00:00Z'"},
            12,
            "read.options.simulation.scope",
            "scope needs either `row_count` or `end_time`, not both",
        ),
        (
            {"generator": "{type: range, min: 5, max: 1}"},
            17,
            "read.options.simulation.columns[0].generator",
            "range min (5) must be less than max (1)",
        ),
        (
            {"generator": "{type: gaussian}"},
            17,
            "read.options.simulation.columns[0].generator",
            "unknown generator type; supported: range, random_walk",
        ),
        (
            {"generator": "{type: derived, expression: 'y * 2'}"},
            17,
            "read.options.simulation.columns[0].generator.expression",
            "column 'x': expression 'y * 2' names 'y', which is not a column (x)",
        ),
        (
            {"generator": "{type: derived, expression: 'x + 1'}"},
            17,
            "read.options.simulation.columns[0].generator.expression",
            "circular column references: x -> x; use prev()",
        ),
        (
            {"generator": "{type: derived, expression: 'eval(\"1\")'}"},
            17,
            "read.options.simulation.columns[0].generator.expression",
            "calling 'eval' is not allowed",
        ),
        (
            {"generator": "{type: derived, expression: '1" + "+1" * 3000 + "'}"},
            17,
            "read.options.simulation.columns[0].generator.expression",
            "is nested too deeply (more than 200 levels of operators or brackets); split it",
        ),
        (
            {
                "generator": "{type: random_walk, start: 1, min: 0, max: 2, volatility: 0.1, jitter: 1}"
            },
            17,
            "read.options.simulation.columns[0].generator.jitter",
            "unknown key 'jitter' (allowed here: type, start, min, max, volatility,",
        ),
        (
            {"generator": "{type: random_walk, start: 1, min: 0, max: 2, mean_revert: 0.1}"},
            17,
            "read.options.simulation.columns[0].generator.mean_revert",
            "unknown key 'mean_revert' (did you mean 'mean_reversion'?)",
        ),
    ],
)
def test_bad_generator_options_are_reported_at_load_with_file_and_line(
    tmp_path: Path, fill: dict[str, str], line: int, key: str, message: str
) -> None:
    values = {
        "timestep": "5m",
        "count": "row_count: 5",
        "generator": "{type: range, min: 0, max: 1}",
    }
    problems = load_problems(tmp_path, SIM.format(**{**values, **fill}))
    assert len(problems) == 1, problems
    where = f"{tmp_path / 'p.yaml'}:{line}: pipelines[0].nodes[0].{key}: node 'gen': "
    assert problems[0].startswith(where), problems
    assert message in problems[0], problems


def test_an_override_for_an_unknown_entity_and_a_non_timestamp_incremental_column(
    tmp_path: Path,
) -> None:
    read = SIM.format(
        timestep="5m", count="row_count: 5", generator="{type: range, min: 0, max: 1}"
    )
    bad = read + "                  entity_overrides: {c: {type: range, min: 1, max: 2}}\n"
    (problem,) = load_problems(tmp_path, bad)
    assert problem.startswith(
        f"{tmp_path / 'p.yaml'}:18: pipelines[0].nodes[0].read.options.simulation.columns[0]"
        ".entity_overrides.c: node 'gen': entity_overrides names entity 'c', which is not one "
        "of the entities (a, b)"
    )
    bad = read + "          incremental: {mode: stateful, column: x}\n"
    (problem,) = load_problems(tmp_path, bad)
    where = f"{tmp_path / 'p.yaml'}:18: pipelines[0].nodes[0].read.incremental.column: "
    assert problem.startswith(where + "node 'gen': "), problem
    assert (
        "incremental column 'x' must be the simulation's timestamp column (it has none" in problem
    )
    bad = read + "          incremental: {mode: rolling_window, column: x}\n"
    (problem,) = load_problems(tmp_path, bad)
    assert (
        "read.incremental.mode: node 'gen': a simulation's incremental mode is stateful" in problem
    )


# --------------------------------------------------------------------------- incremental


INCREMENTAL = """\
project: stream
connections:
  lake: {{type: local, base_path: {base}}}
pipelines:
  - pipeline: p
    nodes:
      - name: sensors
        read:
          connection: null
          format: simulation
          options:
            simulation:
              scope: {{start_time: "2026-01-01T00:00:00Z", timestep: "1h", row_count: 24, seed: 1}}
              entities: {{count: 2, id_prefix: s}}
              columns:
                - {{name: sensor, data_type: string, generator: {{type: constant, value: "{{entity_id}}"}}}}
                - {{name: timestamp, data_type: timestamp, generator: {{type: timestamp}}}}
                - {{name: n, data_type: int, generator: {{type: sequential}}}}
                - {{name: total, data_type: int, generator: {{type: derived, expression: "prev('total', 0) + 1"}}}}
                - name: temp
                  data_type: float
                  generator: {{type: random_walk, start: 50, min: 0, max: 100, volatility: 2}}
          incremental: {{mode: stateful, column: timestamp}}
        write: {{connection: lake, path: sensors, format: delta, mode: append}}
"""


def test_a_stateful_simulation_continues_after_the_last_run(
    tmp_path: Path, dagster_home: Path
) -> None:
    project = tmp_path / "stream.yaml"
    project.write_text(INCREMENTAL.format(base=tmp_path / "lake"))
    for _ in range(2):
        result = run_job(project, "p")
        assert result.success, failure_text(result)
    df = PandasEngine().read(
        load_project(project).connection_resources()["lake"].location("sensors"), "delta"
    )
    assert len(df) == 2 * 2 * 24
    first_day = [T0 + timedelta(hours=h) for h in range(48)]
    for sensor in ("s01", "s02"):
        mine = df[df.sensor == sensor].sort_values("timestamp")
        assert list(mine["timestamp"]) == first_day  # day two follows day one
        assert list(mine["n"]) == list(range(1, 49))  # row numbers continue
        assert list(mine["total"]) == list(range(1, 49))  # and prev() with them
    instance = dg.DagsterInstance.get()
    mat = instance.get_latest_materialization_event(dg.AssetKey(["p", "sensors"]))
    assert mat is not None and mat.asset_materialization is not None
    meta = mat.asset_materialization.metadata
    assert meta[MARK_KEY].data == {
        "column": "timestamp",
        "value": "2026-01-02T23:00:00",
        "type": "timestamp",
    }
    # each random walk's last value is kept for the next run to continue from
    last = df.sort_values("timestamp").groupby("sensor")["temp"].last().to_dict()
    assert meta[WALKS_KEY].data == {s: {"temp": v} for s, v in last.items()}
    assert meta[STATE_KEY].data == {"s01": {"total": 48}, "s02": {"total": 48}}


def test_a_continued_random_walk_starts_from_the_value_it_was_given() -> None:
    walk = spec(
        [
            {"name": "ts", "data_type": "timestamp", "generator": {"type": "timestamp"}},
            {
                "name": "v",
                "data_type": "float",
                "generator": {
                    "type": "random_walk",
                    "start": 50,
                    "min": 0,
                    "max": 1000,
                    "volatility": 0.001,
                },
            },
        ],
        row_count=3,
    )
    made = generate(
        walk, where="x", after=T0 + timedelta(minutes=2), walks={"entity_01": {"v": 900.0}}
    )
    assert made.frame["ts"][0] == pd.Timestamp("2026-01-01 00:03")
    assert abs(made.frame["v"][0] - 900.0) < 0.01
    assert made.last_timestamp == T0 + timedelta(minutes=5)


# --------------------------------------------------------------------------- Spark


def test_the_same_rows_on_spark(spark: Any) -> None:
    from odibi_dagster.engines.spark import SparkEngine

    data = yaml.safe_load((CORPUS / "simulation_example.yaml").read_text(encoding="utf-8"))
    read = SimulationRead.model_validate(data["pipelines"][0]["nodes"][0]["read"])
    pdf, _, _ = read_simulation(PandasEngine(), read, where="x")
    sdf, meta, label = read_simulation(SparkEngine(spark), read, where="x")
    assert label.startswith(f"simulation: {len(pdf)} rows") and meta["odibi/rows_generated"] == len(
        pdf
    )
    assert dict(sdf.dtypes) == {
        "sensor_id": "string",
        "timestamp": "timestamp",
        "temperature": "double",
        "humidity": "double",
        "status": "string",
        "is_online": "boolean",
        "record_id": "bigint",
    }
    back = sdf.toPandas()
    assert len(back) == len(pdf)
    for col in pdf.columns:
        left = pdf[col].astype(object).where(pdf[col].notna(), None).tolist()
        right = back[col].astype(object).where(back[col].notna(), None).tolist()
        if col == "timestamp":
            right = [pd.Timestamp(v) for v in right]
            left = [pd.Timestamp(v) for v in left]
        assert left == right, col
