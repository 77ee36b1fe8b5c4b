"""Odibi v3 transformers: node ``transformer:`` + ``params:``, step ``operation:``, the
built-in functions (odibi_dagster.builtins), ``df`` in SQL steps and functions taking
``current``. Real runs through Dagster on pandas; the built-ins' results on pandas and
(a representative subset) on Spark; load-time errors with file:line."""

from __future__ import annotations

import datetime as dt
import math
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from odibi_dagster import OdibiConfigError, load_project, transform
from odibi_dagster.builtins import BuiltinContext, Params, builtin_names, get_builtin, register
from odibi_dagster.cli import main
from odibi_dagster.config.models import Step
from odibi_dagster.engines.base import Engine
from odibi_dagster.engines.registry import get_engine
from odibi_dagster.errors import OdibiRunError
from odibi_dagster.resources.local import LocalStorage
from odibi_dagster.transforms import run_steps
from odibi_dagster_tests.support.runs import run_job

WHERE = "node 'n' (p.yaml:3)"

HEAD = """\
project: xform
engine: pandas
connections:
  data: {type: local, base_path: ./data}
story: {connection: data, path: stories}
"""

# --------------------------------------------------------------------------- frames

SCHEMA = pa.schema(
    [
        ("id", pa.int64()),
        ("name", pa.string()),
        ("grp", pa.string()),
        ("amount", pa.float64()),
        ("qty", pa.int64()),
        ("email", pa.string()),
        ("day", pa.date32()),
        ("due", pa.date32()),
    ]
)
ROWS = [
    {
        "id": 1,
        "name": " Ann ",
        "grp": "a",
        "amount": 10.0,
        "qty": 1,
        "email": "ann@x.com",
        "day": dt.date(2024, 1, 1),
        "due": dt.date(2024, 1, 11),
    },
    {
        "id": 2,
        "name": "bob",
        "grp": "b",
        "amount": None,
        "qty": 2,
        "email": "bob@y.org",
        "day": dt.date(2024, 1, 3),
        "due": dt.date(2024, 1, 4),
    },
    {
        "id": 3,
        "name": "Cy",
        "grp": "a",
        "amount": 5.0,
        "qty": 3,
        "email": "cy@x.com",
        "day": dt.date(2024, 2, 10),
        "due": dt.date(2024, 2, 10),
    },
]
REGIONS = pa.Table.from_pylist(
    [{"grp": "a", "region": "EU", "amount": 1.0}, {"grp": "c", "region": "US", "amount": 2.0}]
)
MORE = pa.Table.from_pylist([{"id": 4, "extra": "x"}])
# dates as text (as a CSV read on pandas gives them), and a null to order by
TEXTS = pa.Table.from_pylist(
    [
        {"id": 1, "d": "2024-01-31", "k": "a", "v": None},
        {"id": 2, "d": "2024-03-01", "k": "a", "v": 2.0},
        {"id": 3, "d": "2024-02-29", "k": "b", "v": 1.0},
    ],
    schema=pa.schema(
        [("id", pa.int64()), ("d", pa.string()), ("k", pa.string()), ("v", pa.float64())]
    ),
)


def frames(engine: Engine, root: Path) -> dict[str, Any]:
    """The input frames, read by the engine from Parquet files it did not write."""
    storage = LocalStorage(base_path=str(root), connection_name="lake")
    out = {}
    for name, table in (
        ("src", pa.Table.from_pylist(ROWS, schema=SCHEMA)),
        ("regions", REGIONS),
        ("more", MORE),
        ("texts", TEXTS),
    ):
        pq.write_table(table, root / f"{name}.parquet")
        out[name] = engine.read(storage.location(f"{name}.parquet"), "parquet")
    return out


def plain(v: Any) -> Any:
    """A value as plain Python: a missing value None, numbers int/float, times as text."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    if hasattr(v, "item"):  # numpy scalars
        return plain(v.item())
    if isinstance(v, dt.datetime):
        return v.isoformat(sep=" ")
    if isinstance(v, dt.date):
        return v.isoformat()
    return v


def result(engine: Engine, df: Any) -> tuple[list[str], list[dict[str, Any]]]:
    cols = [c for c, _ in engine.column_schema(df)]
    rows = [{k: plain(v) for k, v in r.items()} for r in engine.head(df, 1000)]
    return cols, rows


def by_id(rows: list[dict[str, Any]], col: str) -> list[Any]:
    return [r[col] for r in sorted(rows, key=lambda r: r["id"])]


Check = Callable[[list[str], list[dict[str, Any]]], Any]

# name -> (function, params, what to look at, expected); on src (upstream: regions, more)
CASES: dict[str, tuple[str, dict[str, Any], Check, Any]] = {
    "filter_rows": ("filter_rows", {"condition": "amount > 6"}, lambda c, r: by_id(r, "id"), [1]),
    "derive_columns": (
        "derive_columns",
        {"derivations": {"twice": "amount * 2", "qty": "qty + 1"}},
        lambda c, r: (c[-1], by_id(r, "twice"), by_id(r, "qty")),
        ("twice", [20.0, None, 10.0], [2, 3, 4]),
    ),
    "derive_columns_case": (
        "derive_columns",
        {"derivations": {"QTY": "qty * 10"}},
        lambda c, r: (c[3:6], by_id(r, "QTY")),
        (["amount", "QTY", "email"], [10, 20, 30]),
    ),
    "cast_columns": (
        "cast_columns",
        {"casts": {"qty": "string", "amount": "int"}},
        lambda c, r: (c, [(x["qty"], x["amount"]) for x in sorted(r, key=lambda x: x["qty"])]),
        (
            ["id", "name", "grp", "amount", "qty", "email", "day", "due"],
            [("1", 10), ("2", None), ("3", 5)],
        ),
    ),
    "clean_text": (
        "clean_text",
        {"columns": ["name"], "case": "upper"},
        lambda c, r: by_id(r, "name"),
        ["ANN", "BOB", "CY"],
    ),
    "extract_date_parts": (
        "extract_date_parts",
        {"source_col": "day", "parts": ["year", "month"]},
        lambda c, r: (c[-2:], by_id(r, "day_month")),
        (["day_year", "day_month"], [1, 1, 2]),
    ),
    "normalize_schema": (
        "normalize_schema",
        {"rename": {"name": "who"}, "drop": ["email", "due", "day"]},
        lambda c, r: (c, by_id(r, "who")),
        (["id", "who", "grp", "amount", "qty"], [" Ann ", "bob", "Cy"]),
    ),
    "sort": (
        "sort",
        {"by": "amount", "ascending": False},
        lambda c, r: [x["id"] for x in r],
        [1, 3, 2],
    ),
    "limit": ("limit", {"n": 2, "offset": 1}, lambda c, r: len(r), 2),
    "sample": ("sample", {"fraction": 1.0, "seed": 3}, lambda c, r: len(r), 3),
    "distinct": (
        "distinct",
        {"columns": ["grp"]},
        lambda c, r: sorted(x["grp"] for x in r),
        ["a", "b"],
    ),
    "fill_nulls": (
        "fill_nulls",
        {"values": {"amount": 0, "name": "it's"}},
        lambda c, r: by_id(r, "amount"),
        [10.0, 0.0, 5.0],
    ),
    "split_part": (
        "split_part",
        {"col": "email", "delimiter": "@", "index": 2},
        lambda c, r: by_id(r, "email_part_2"),
        ["x.com", "y.org", "x.com"],
    ),
    "date_add": (
        "date_add",
        {"col": "day", "value": 1, "unit": "day"},
        lambda c, r: [v[:10] for v in by_id(r, "day_future")],
        ["2024-01-02", "2024-01-04", "2024-02-11"],
    ),
    "date_add_back": (
        "date_add",
        {"col": "day", "value": -1, "unit": "month"},
        lambda c, r: [v[:10] for v in by_id(r, "day_future")],
        ["2023-12-01", "2023-12-03", "2024-01-10"],
    ),
    "date_trunc": (
        "date_trunc",
        {"col": "day", "unit": "month"},
        lambda c, r: by_id(r, "day_trunc"),
        ["2024-01-01 00:00:00", "2024-01-01 00:00:00", "2024-02-01 00:00:00"],
    ),
    "date_diff": (
        "date_diff",
        {"start_col": "day", "end_col": "due"},
        lambda c, r: by_id(r, "diff_day"),
        [10, 1, 0],
    ),
    "date_diff_hours": (
        "date_diff",
        {"start_col": "day", "end_col": "due", "unit": "hour"},
        lambda c, r: by_id(r, "diff_hour"),
        [240.0, 24.0, 0.0],
    ),
    "case_when": (
        "case_when",
        {
            "output_col": "size",
            "cases": [{"condition": "amount >= 10", "value": "'big'"}],
            "default": "'small'",
        },
        lambda c, r: by_id(r, "size"),
        ["big", "small", "small"],
    ),
    "concat_columns": (
        "concat_columns",
        {"columns": ["grp", "amount"], "separator": "|", "output_col": "k"},
        lambda c, r: by_id(r, "k"),
        ["a|10.0", "b", "a|5.0"],
    ),
    "drop_nulls": ("drop_nulls", {"columns": ["amount"]}, lambda c, r: by_id(r, "id"), [1, 3]),
    "rename_columns": (
        "rename_columns",
        {"columns": {"grp": "group"}},
        lambda c, r: c[:3],
        ["id", "name", "group"],
    ),
    "select_columns": ("select_columns", {"columns": ["grp", "id"]}, lambda c, r: c, ["grp", "id"]),
    "drop_columns": (
        "drop_columns",
        {"columns": ["email", "day", "due", "nothing"]},
        lambda c, r: c,
        ["id", "name", "grp", "amount", "qty"],
    ),
    "join_left": (
        "join",
        {"right_dataset": "regions", "on": "grp"},
        lambda c, r: (c[-2:], by_id(r, "region"), by_id(r, "regions_amount")),
        (["region", "regions_amount"], ["EU", None, "EU"], [1.0, None, 1.0]),
    ),
    "join_full": (
        "join",
        {"right_dataset": "regions", "on": ["grp"], "how": "full", "prefix": "r"},
        lambda c, r: sorted((x["grp"], x["id"], x["r_amount"]) for x in r if x["id"] != 3),
        [("a", 1, 1.0), ("b", 2, None), ("c", None, 2.0)],
    ),
    "join_anti": (
        "join",
        {"right_dataset": "regions", "on": "grp", "how": "anti"},
        lambda c, r: (len(c), by_id(r, "id")),
        (8, [2]),
    ),
    "join_semi": (
        "join",
        {"right_dataset": "regions", "on": "grp", "how": "semi"},
        lambda c, r: by_id(r, "id"),
        [1, 3],
    ),
    "union": (
        "union",
        {"datasets": ["more"]},
        lambda c, r: (c[-1], by_id(r, "extra"), by_id(r, "name")),
        ("extra", [None, None, None, "x"], [" Ann ", "bob", "Cy", None]),
    ),
    "pivot": (
        "pivot",
        {"group_by": ["id"], "pivot_col": "grp", "agg_col": "qty"},
        lambda c, r: (c, [(x["id"], x["a"], x["b"]) for x in r]),
        (["id", "a", "b"], [(1, 1, None), (2, None, 2), (3, 3, None)]),
    ),
    "pivot_values": (
        "pivot",
        {
            "group_by": ["grp"],
            "pivot_col": "name",
            "agg_col": "qty",
            "agg_func": "count",
            "values": ["bob", "zed"],
        },
        lambda c, r: (c, [(x["grp"], x["bob"], x["zed"]) for x in r]),
        (["grp", "bob", "zed"], [("a", 0, 0), ("b", 1, 0)]),
    ),
    "unpivot": (
        "unpivot",
        {"id_cols": ["id"], "value_vars": ["amount", "qty"], "var_name": "k", "value_name": "v"},
        lambda c, r: (c, sorted((x["id"], x["k"], x["v"]) for x in r if x["id"] != 2)),
        (
            ["id", "k", "v"],
            [(1, "amount", 10.0), (1, "qty", 1.0), (3, "amount", 5.0), (3, "qty", 3.0)],
        ),
    ),
    "aggregate": (
        "aggregate",
        {"group_by": ["grp"], "aggregations": {"amount": "sum", "id": "count", "qty": "max"}},
        lambda c, r: (c, [(x["grp"], x["amount"], x["id"], x["qty"]) for x in r]),
        (["grp", "amount", "id", "qty"], [("a", 15.0, 2, 3), ("b", None, 1, 2)]),
    ),
    "deduplicate": (
        "deduplicate",
        {"keys": ["grp"], "order_by": "qty DESC"},
        lambda c, r: (len(c), by_id(r, "id")),
        (8, [2, 3]),
    ),
    "window_calculation": (
        "window_calculation",
        {
            "target_col": "running",
            "function": "sum(qty)",
            "partition_by": ["grp"],
            "order_by": "id",
        },
        lambda c, r: by_id(r, "running"),
        [1, 2, 4],
    ),
    "validate_and_flag": (
        "validate_and_flag",
        {"rules": {"has_amount": "amount IS NOT NULL", "small": "qty < 3"}},
        lambda c, r: by_id(r, "_issues"),
        [None, "has_amount", "small"],
    ),
    "dict_based_mapping": (
        "dict_based_mapping",
        {"column": "qty", "mapping": {"1": "one", "3": "three"}, "default": "many"},
        lambda c, r: by_id(r, "qty"),
        ["one", "many", "three"],
    ),
    "regex_replace": (
        "regex_replace",
        {"column": "email", "pattern": "[aeiou]", "replacement": "_"},
        lambda c, r: by_id(r, "email"),
        ["_nn@x.c_m", "b_b@y._rg", "cy@x.c_m"],
    ),
    "hash_columns": (
        "hash_columns",
        {"columns": ["grp", "amount"], "algorithm": "md5"},
        lambda c, r: (by_id(r, "grp"), by_id(r, "amount")[1]),
        (
            [
                "0cc175b9c0f1b6a831c399e269772661",
                "92eb5ffee6ae2fec3ad71c777531578f",
                "0cc175b9c0f1b6a831c399e269772661",
            ],
            None,
        ),
    ),
    "hash_sha256": (
        "hash_columns",
        {"columns": ["grp"]},
        lambda c, r: by_id(r, "grp")[0],
        "ca978112ca1bbdcafac231b39a23dc4da786eff8147c4e72b9807785afee48bb",
    ),
    "generate_surrogate_key": (
        "generate_surrogate_key",
        {"columns": ["grp", "id"], "output_col": "sk"},
        lambda c, r: by_id(r, "sk")[0],
        "737c191aed52450b9c655083c9971bdd",
    ),
}

# the cases run on Spark too (one Spark test over all of them): those whose SQL differs by
# engine, and the relational ones
SPARK_SUBSET = [
    "cast_columns",
    "date_diff",
    "regex_replace",
    "hash_sha256",
    "join_left",
    "union",
    "pivot",
    "unpivot",
    "deduplicate",
    "date_add_back",
    "derive_columns_case",
]

# name -> (function, params, what to look at, expected); on TEXTS
TEXT_CASES: dict[str, tuple[str, dict[str, Any], Check, Any]] = {
    "extract_date_parts": (
        "extract_date_parts",
        {"source_col": "d", "parts": ["year", "month", "day"]},
        lambda c, r: [(x["d_year"], x["d_month"], x["d_day"]) for x in r],
        [(2024, 1, 31), (2024, 3, 1), (2024, 2, 29)],
    ),
    "date_add": (
        "date_add",
        {"col": "d", "value": -1, "unit": "month"},
        lambda c, r: [x["d_future"] for x in r],
        ["2023-12-31 00:00:00", "2024-02-01 00:00:00", "2024-01-29 00:00:00"],
    ),
    "date_trunc": (
        "date_trunc",
        {"col": "d", "unit": "month"},
        lambda c, r: [x["d_trunc"] for x in r],
        ["2024-01-01 00:00:00", "2024-03-01 00:00:00", "2024-02-01 00:00:00"],
    ),
    # nulls last (as sort), on both engines: Spark alone would put the null first
    "deduplicate": (
        "deduplicate",
        {"keys": ["k"], "order_by": "v"},
        lambda c, r: by_id(r, "id"),
        [2, 3],
    ),
    "window_calculation": (
        "window_calculation",
        {"target_col": "n", "function": "row_number()", "partition_by": ["k"], "order_by": "v"},
        lambda c, r: by_id(r, "n"),
        [2, 1, 1],
    ),
    "window_nulls_first": (
        "window_calculation",
        {
            "target_col": "n",
            "function": "row_number()",
            "partition_by": ["k"],
            "order_by": "v ASC NULLS FIRST, id",
        },
        lambda c, r: by_id(r, "n"),
        [1, 2, 1],
    ),
}


def run_text_cases(engine: Engine, root: Path) -> dict[str, Any]:
    texts = frames(engine, root)["texts"]
    got = {}
    for case, (name, params, check, _) in TEXT_CASES.items():
        out = run_steps(
            engine, [Step(function=name, params=params)], {"texts": texts}, node="n", where=WHERE
        )
        cols, rows = result(engine, out)
        got[case] = check(cols, sorted(rows, key=lambda x: x["id"]))
    return got


def test_date_builtins_read_text_dates_and_order_by_puts_nulls_last(tmp_path: Path) -> None:
    got = run_text_cases(get_engine("pandas"), tmp_path)
    assert got == {case: want for case, (_, _, _, want) in TEXT_CASES.items()}


def test_drop_columns_of_every_column_fails_naming_the_node(tmp_path: Path) -> None:
    engine = get_engine("pandas")
    texts = frames(engine, tmp_path)["texts"]
    with pytest.raises(OdibiRunError) as err:
        run_steps(
            engine,
            [Step(function="drop_columns", params={"columns": ["id", "d", "k", "v"]})],
            {"texts": texts},
            node="n",
            where=WHERE,
        )
    assert str(err.value) == (
        f"{WHERE}, step 1: drop_columns would drop every column (id, d, k, v); keep at least "
        "one (or leave the node out)"
    )


def run_case(engine: Engine, inputs: dict[str, Any], case: str) -> Any:
    name, params, check, _ = CASES[case]
    out = run_steps(
        engine,
        [Step(function=name, params=params)],
        {"src": inputs["src"], "regions": inputs["regions"], "more": inputs["more"]},
        node="n",
        where=WHERE,
    )
    cols, rows = result(engine, out)
    return check(cols, rows)


def test_the_surrogate_key_is_the_md5_of_the_joined_text() -> None:
    import hashlib

    assert CASES["generate_surrogate_key"][3] == hashlib.md5(b"a-1").hexdigest()


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_builtin_on_pandas(case: str, tmp_path: Path) -> None:
    engine = get_engine("pandas")
    assert run_case(engine, frames(engine, tmp_path), case) == CASES[case][3]


@pytest.mark.spark
def test_the_builtins_mean_the_same_on_spark(spark: Any, tmp_path: Path) -> None:
    engine = get_engine("spark")
    inputs = frames(engine, tmp_path)
    got = {case: run_case(engine, inputs, case) for case in SPARK_SUBSET}
    assert got == {case: CASES[case][3] for case in SPARK_SUBSET}
    texts = run_text_cases(engine, tmp_path)
    assert texts == {case: want for case, (_, _, _, want) in TEXT_CASES.items()}


# --------------------------------------------------------------------------- df and current


@transform(name="xform_keep_over")
def _keep_over(context: Any, current: Any, limit: float) -> Any:
    if context.engine == "spark":
        return current.where(current.amount > limit)
    assert current is context.df is context.get("df")
    return current[current["amount"] > limit]


def _df_and_current(engine: Engine, inputs: dict[str, Any]) -> dict[str, Any]:
    src, regions = inputs["src"], inputs["regions"]
    # no read: the first step's df is the first upstream node
    first = run_steps(
        engine,
        [
            Step(sql="SELECT id, grp, amount FROM df WHERE amount IS NOT NULL"),
            Step(function="xform_keep_over", params={"limit": 6}),
            Step(sql="SELECT df.id, r.region FROM df JOIN regions r ON df.grp = r.grp"),
        ],
        {"src": src, "regions": regions},
        node="n",
        where=WHERE,
    )
    # with read data, df is what was read (the first step sees it too as __result__)
    read = run_steps(
        engine,
        [Step(sql="SELECT COUNT(*) AS n FROM df JOIN __result__ USING (id)")],
        {"regions": regions},
        src,
        node="n",
        where=WHERE,
    )
    return {"first": result(engine, first)[1], "read": result(engine, read)[1]}


EXPECTED_DF = {"first": [{"id": 1, "region": "EU"}], "read": [{"n": 3}]}


def test_sql_names_the_current_frame_df_and_functions_get_current(tmp_path: Path) -> None:
    engine = get_engine("pandas")
    assert _df_and_current(engine, frames(engine, tmp_path)) == EXPECTED_DF


@pytest.mark.spark
def test_df_and_current_on_spark(spark: Any, tmp_path: Path) -> None:
    engine = get_engine("spark")
    assert _df_and_current(engine, frames(engine, tmp_path)) == EXPECTED_DF


# --------------------------------------------------------------------------- whole runs


def write(dir: Path, name: str, text: str) -> Path:
    path = dir / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


ORDERS = """\
order_id,customer,email,total,updated_at
1,ann,  ANN@X.COM ,10.5,2024-01-01
1,ann,ann@x.com,11.5,2024-01-03
2,bob,Bob@Y.com,0,2024-01-02
3,cy,Cy@z.com,7,2024-01-02
"""
CUSTOMERS = "customer,region\nann,EU\nbob,US\n"


def read_csv(path: Path) -> list[dict[str, Any]]:
    return pacsv.read_csv(path).to_pylist()  # type: ignore[no-any-return]


def test_a_transformer_runs_before_the_steps_then_validation_then_the_write(
    tmp_path: Path, dagster_home: Path
) -> None:
    write(tmp_path, "data/orders.csv", ORDERS)
    write(tmp_path, "data/customers.csv", CUSTOMERS)
    project = write(
        tmp_path,
        "project.yaml",
        HEAD
        + textwrap.dedent("""\
        pipelines:
          - pipeline: p
            nodes:
              - name: customers
                read: {connection: data, format: csv, path: customers.csv}
              - name: orders
                depends_on: [customers]
                read: {connection: data, format: csv, path: orders.csv}
                transformer: deduplicate
                params: {keys: [order_id], order_by: updated_at DESC}
                transform:
                  steps:
                    - sql: SELECT * FROM df WHERE total > 0
                    - function: clean_text
                      params: {columns: [email], case: lower}
                    - operation: join
                      params: {right_dataset: customers, on: customer}
                    - operation: sql
                      query: SELECT *, total * 2 AS double_total FROM df
                validation:
                  no_nulls: [order_id]
                write: {connection: data, format: csv, path: out.csv}
        """),
    )
    result = run_job(project)
    assert result.success
    rows = sorted(read_csv(tmp_path / "data/out.csv"), key=lambda r: r["order_id"])
    # the transformer kept the latest row of order 1 (11.5), then the steps ran in order
    assert [
        (r["order_id"], r["email"], r["total"], r["region"], r["double_total"]) for r in rows
    ] == [(1, "ann@x.com", 11.5, "EU", 23.0), (3, "cy@z.com", 7.0, "", 14.0)]
    (check,) = result.get_asset_check_evaluations()
    assert check.passed


def test_a_transformer_alone_reads_its_first_upstream_node_and_user_functions_take_current(
    tmp_path: Path, dagster_home: Path
) -> None:
    write(tmp_path, "data/orders.csv", ORDERS)
    write(tmp_path, "data/customers.csv", CUSTOMERS)
    # an Odibi project's transforms.py, unchanged: `from odibi import transform`
    write(
        tmp_path,
        "transforms.py",
        """\
        from odibi import transform


        @transform
        def xform_tag_segment(context, current, segment_prefix):
            out = current.copy()
            out["segment"] = segment_prefix + out["customer"]
            return out
        """,
    )
    project = write(
        tmp_path,
        "project.yaml",
        HEAD
        + textwrap.dedent("""\
        pipelines:
          - pipeline: p
            nodes:
              - name: orders
                read: {connection: data, format: csv, path: orders.csv}
              - name: customers
                read: {connection: data, format: csv, path: customers.csv}
              - name: tagged
                depends_on: [orders, customers]
                transformer: xform_tag_segment
                params: {segment_prefix: GLOBAL-}
              - name: totals
                depends_on: [tagged]
                transformer: aggregate
                params: {group_by: [segment], aggregations: {total: sum}}
                write: {connection: data, format: csv, path: totals.csv}
        """),
    )
    assert main(["validate", str(project)]) == 0
    result = run_job(project)
    assert result.success
    assert read_csv(tmp_path / "data/totals.csv") == [
        {"segment": "GLOBAL-ann", "total": 22.0},
        {"segment": "GLOBAL-bob", "total": 0.0},
        {"segment": "GLOBAL-cy", "total": 7.0},
    ]


def test_a_failing_builtin_names_the_node_step_and_columns(
    tmp_path: Path, dagster_home: Path
) -> None:
    write(tmp_path, "data/orders.csv", ORDERS)
    project = write(
        tmp_path,
        "project.yaml",
        HEAD
        + textwrap.dedent("""\
        pipelines:
          - pipeline: p
            nodes:
              - name: orders
                read: {connection: data, format: csv, path: orders.csv}
                transformer: clean_text
                params: {columns: [mail]}
                write: {connection: data, format: csv, path: out.csv}
        """),
    )
    result = run_job(project)
    assert not result.success
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    message = failure.step_failure_data.error.message  # type: ignore[union-attr]
    assert message.startswith("dagster._core.definitions.events.Failure: node 'orders' (")
    assert "project.yaml:9), step 1: " in message
    assert ", step 1: columns names column(s) mail that the data does not have" in message
    assert not (tmp_path / "data/out.csv").exists()


# --------------------------------------------------------------------------- load errors


def problems(tmp_path: Path, nodes: str) -> list[str]:
    project = write(
        tmp_path,
        "project.yaml",
        HEAD
        + "pipelines:\n  - pipeline: p\n    nodes:\n"
        + "      - name: src\n        read: {connection: data, format: csv, path: in.csv}\n"
        + textwrap.indent(textwrap.dedent(nodes), "      "),
    )
    with pytest.raises(OdibiConfigError) as err:
        load_project(project)
    return [f"{p.file.rsplit('/', 1)[-1]}:{p.line}: {p.message}" for p in err.value.problems]


def test_an_unknown_transformer_lists_close_matches_with_file_and_line(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        """\
        - name: a
          depends_on: [src]
          transformer: dedupe
        - name: b
          depends_on: [src]
          transform:
            steps:
              - operation: fill_null
                params: {values: {x: 0}}
        """,
    )
    assert found[0].startswith(
        "project.yaml:13: node 'a': unknown function 'dedupe' (did you mean 'deduplicate'?)"
    )
    assert found[1].startswith(
        "project.yaml:18: node 'b': unknown function 'fill_null' (did you mean 'fill_nulls'"
    )


def test_builtin_params_are_checked_at_load_naming_the_node(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        """\
        - name: a
          depends_on: [src]
          transformer: join
          params: {how: sideways}
        - name: b
          depends_on: [src]
          transform:
            steps:
              - function: deduplicate
                params: {key: [id]}
        """,
    )
    assert found == [
        "project.yaml:14: node 'a': built-in 'join': missing param right_dataset; param how: "
        "Input should be 'inner', 'left', 'right', 'full', 'cross', 'anti' or 'semi' "
        "(it accepts: right_dataset, on, how, prefix)",
        "project.yaml:20: node 'b': built-in 'deduplicate': missing param keys "
        "(it accepts: keys, order_by)",
    ]


def test_a_param_odibi_ignores_is_noted_not_applied(tmp_path: Path) -> None:
    """Odibi's built-ins ignore a param they do not have (pydantic's default), so a config
    written for Odibi loads; `validate` says it is not applied, with the close name."""
    project = write(
        tmp_path,
        "project.yaml",
        HEAD
        + "pipelines:\n  - pipeline: p\n    nodes:\n"
        + "      - name: src\n        read: {connection: data, format: csv, path: in.csv}\n"
        + textwrap.indent(
            textwrap.dedent(
                """\
                - name: b
                  depends_on: [src]
                  transform:
                    steps:
                      - function: clean_text
                        params: {columns: [name], operations: [trim, lower], cse: lower}
                """
            ),
            "      ",
        ),
    )
    notes = [
        f"{n.file.rsplit('/', 1)[-1]}:{n.line}: {n.key}: {n.why}"
        for n in load_project(project).notes
    ]
    assert notes == [
        "project.yaml:16: pipelines[0].nodes[1].transform.steps[0].params.operations: Odibi's "
        "clean_text has no param 'operations' and ignores it; it takes: columns, trim, case",
        "project.yaml:16: pipelines[0].nodes[1].transform.steps[0].params.cse: Odibi's "
        "clean_text has no param 'cse' and ignores it (did you mean 'case'?); it takes: "
        "columns, trim, case",
    ]


def test_params_without_a_transformer_unsupported_builtins_and_no_data_are_named(
    tmp_path: Path,
) -> None:
    found = problems(
        tmp_path,
        """\
        - name: a
          read: {connection: data, format: csv, path: a.csv}
          params: {keys: [id]}
        - name: b
          depends_on: [src]
          transformer: detect_deletes
        - name: c
          transformer: sort
          params: {by: id}
        """,
    )
    assert found == [
        "project.yaml:13: node 'a' has `params:` but no `transformer:` they are for; add "
        "`transformer: <name>` or remove `params:`",
        "project.yaml:16: node 'b': the Odibi built-in 'detect_deletes' is not supported here "
        "(compares with the target's earlier versions); write it as SQL or a @transform "
        "function",
        "project.yaml:18: node 'c': built-in 'sort' works on the node's data, and this node "
        "has none: give it a `read:` or a depends_on",
    ]


def test_an_operation_sql_step_needs_its_query(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        """\
        - name: a
          depends_on: [src]
          transform:
            steps:
              - operation: sql
        """,
    )
    assert "an `operation: sql` step needs its query, in `query:`" in found[0]
    assert found[0].startswith("project.yaml:15:")


# --------------------------------------------------------------------------- the registry


class _ConstParams(Params):
    column: str
    value: int = 1


def _const(ctx: BuiltinContext, p: _ConstParams) -> Any:
    return ctx.project({p.column: ctx.lit(p.value)})


def test_other_modules_register_builtins(tmp_path: Path) -> None:
    register("xform_const", _const, _ConstParams, origin="test")
    register("xform_const", _const, _ConstParams, origin="test")  # the same again: fine
    with pytest.raises(ValueError, match="already registered"):
        register("xform_const", _keep_over, _ConstParams)
    assert "xform_const" in builtin_names()
    assert get_builtin("xform_const") is not None
    engine = get_engine("pandas")
    out = run_steps(
        engine,
        [Step(function="xform_const", params={"column": "one", "value": 7})],
        {"src": frames(engine, tmp_path)["src"]},
        node="n",
        where=WHERE,
    )
    assert result(engine, out)[1][0]["one"] == 7
    with pytest.raises(OdibiRunError, match=r"step 1: built-in 'xform_const': missing param"):
        run_steps(engine, [Step(function="xform_const")], {"src": out}, node="n", where=WHERE)


def test_every_builtin_is_documented() -> None:
    docs = (Path(__file__).resolve().parents[1] / "docs" / "configuration.md").read_text()
    section = docs[docs.index("## Built-in transformers") :]
    for name in builtin_names():
        if not name.startswith("xform_"):
            assert f"`{name}`" in section, name


# --------------------------------------------------------------------------- column lineage


def test_column_lineage_follows_df_to_the_frame_it_names() -> None:
    from odibi_dagster.column_lineage import READ, Relation
    from odibi_dagster.column_lineage import run_steps as lineage_steps

    up = {"orders": Relation.identity("orders", ["id", "total"])}
    sql = [Step(sql="SELECT id, total * 2 AS twice FROM df")]
    # no read: df is the first upstream node
    rel, failure = lineage_steps(sql, up, None, "duckdb")
    assert failure is None
    assert rel.columns == (
        ("id", frozenset({("orders", "id")})),
        ("twice", frozenset({("orders", "total")})),
    )
    # with read data, df is what was read
    rel, failure = lineage_steps(sql, up, Relation.identity(READ, ["id", "total"]), "duckdb")
    assert failure is None
    assert rel.deps("twice") == frozenset({(READ, "total")})
