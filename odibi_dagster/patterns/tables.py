"""Keyed merges into a target, aggregates at a grain, and a generated calendar."""

from __future__ import annotations

from typing import Any

from odibi_dagster.engines.base import Frame
from odibi_dagster.engines.messages import fail
from odibi_dagster.errors import storage_errors
from odibi_dagster.patterns.context import PatternContext
from odibi_dagster.patterns.dimensional import add_audit
from odibi_dagster.patterns.params import (
    AggregationParams,
    DateDimensionParams,
    MergeParams,
)

# Odibi's merge strategies, as the keyed write modes that do them
_MODES = {"upsert": "upsert", "append_only": "append_once", "delete_match": "merge"}


def merge(ctx: PatternContext, **params: Any) -> Frame:
    """Odibi's ``merge`` (pattern and transformer): writes the node's rows into ``target``
    by ``keys`` with the keyed write modes (``upsert``: update and insert;
    ``append_only``: insert new keys only; ``delete_match``: delete the target's rows with
    these keys, Delta only), and returns the rows it merged. ``audit_cols``: the
    ``updated_col`` is this run's time; the ``created_col`` keeps the target's value for
    keys already there."""
    p = MergeParams.model_validate(params)
    s = ctx.dialect
    df = ctx.current("merge")
    target = ctx.target(p.target, p.connection, p.path, use_write=False)
    if target is None:
        fail(ctx.where, "merge needs `target` (or `connection` + `path`)")
    loc = ctx.location(target)
    cols = ctx.columns(df)
    missing = [k for k in p.keys if k not in cols]
    if missing:
        fail(
            ctx.where,
            f"merge key '{missing[0]}' is not a column of the input (columns: "
            f"{', '.join(cols)}); nothing was written. Fix keys",
        )
    with storage_errors(ctx.where, "reading", loc.uri, loc.storage_options):
        exists = ctx.engine.exists(loc, target.format)
    audit = p.audit_cols
    if audit is not None and (audit.created_col or audit.updated_col):
        now = s.ts(ctx.now)
        drop = {c for c in (audit.created_col, audit.updated_col) if c}
        select = [f"s.{s.q(c)}" for c in cols if c not in drop]
        tables: dict[str, Frame] = {"s": df}
        join = ""
        if audit.updated_col:
            select.append(f"{now} AS {s.q(audit.updated_col)}")
        if audit.created_col:
            created = s.q(audit.created_col)
            if audit.created_col in cols:
                select.append(f"s.{created}")
            else:
                existing = ctx.read_target(target) if exists else None
                if existing is not None and audit.created_col in ctx.columns(existing):
                    on = " AND ".join(f"s.{s.q(k)} = t.{s.q(k)}" for k in p.keys)
                    join = (
                        f" LEFT JOIN (SELECT {s.cols(p.keys)}, MIN({created}) AS {created} "
                        f"FROM tgt GROUP BY {s.cols(p.keys)}) t ON {on}"
                    )
                    tables["tgt"] = existing
                    select.append(f"COALESCE(t.{created}, {now}) AS {created}")
                else:
                    select.append(f"{now} AS {created}")
        df = ctx.engine.sql(f"SELECT {', '.join(select)} FROM s{join}", tables, where=ctx.where)
    mode = _MODES[p.strategy]
    options: dict[str, Any] = {"keys": list(p.keys)}
    if p.strategy == "delete_match":
        if target.format != "delta":
            fail(
                ctx.where,
                f"merge strategy delete_match needs a Delta target, not {target.format} "
                f"({target.describe()})",
            )
        options.update(delete_condition="TRUE", insert=False)
    ctx.metadata["odibi/pattern_target"] = target.describe()
    if p.strategy == "delete_match" and not exists:
        ctx.metadata["odibi/merge_deleted"] = 0
        return df
    with storage_errors(ctx.where, "writing", loc.uri, loc.storage_options):
        outcome = ctx.engine.merge(df, loc, target.format, mode, options, where=ctx.where)
    ctx.metadata.update(
        {
            "odibi/merge_inserted": outcome.inserted,
            "odibi/merge_updated": outcome.updated,
            "odibi/merge_deleted": outcome.deleted,
        }
    )
    return df


def aggregation(ctx: PatternContext, **params: Any) -> Frame:
    """Odibi's ``aggregation`` pattern: ``measures`` by ``grain`` (and ``having``); with
    ``incremental``, merged into the existing table: ``replace`` replaces the grains the
    input has, ``sum`` / ``min`` / ``max`` combine each measure with the table's."""
    p = AggregationParams.model_validate(params)
    s = ctx.dialect
    df = ctx.current("the aggregation pattern")
    cols = ctx.columns(df)
    for g in p.grain:
        if g not in cols:
            fail(
                ctx.where,
                f"aggregation grain column '{g}' is not a column of the input "
                f"(columns: {', '.join(cols)})",
            )
    grain = s.cols(p.grain)
    measures = ", ".join(f"{m.expr} AS {s.q(m.name)}" for m in p.measures)
    having = f" HAVING {p.having}" if p.having else ""
    result = ctx.sql(f"SELECT {grain}, {measures} FROM d GROUP BY {grain}{having}", d=df)
    if p.incremental is not None:
        target = ctx.target(p.target)
        existing = ctx.read_target(target)
        if target is not None:
            ctx.metadata["odibi/pattern_target"] = target.describe()
        if existing is not None:
            result = _merge_aggregates(ctx, existing, result, p)
    return add_audit(ctx, result, p.audit)


def _merge_aggregates(
    ctx: PatternContext, existing: Frame, new: Frame, p: AggregationParams
) -> Frame:
    assert p.incremental is not None
    s = ctx.dialect
    tcols, ncols = ctx.columns(existing), ctx.columns(new)
    names = [m.name for m in p.measures]
    same = " AND ".join(s.same(f"e.{s.q(g)}", f"n.{s.q(g)}") for g in p.grain)
    if p.incremental.merge_strategy == "replace":
        out = [*tcols, *(c for c in ncols if c not in tcols)]
        keep = ", ".join((f"e.{s.q(c)}" if c in tcols else "NULL") + f" AS {s.q(c)}" for c in out)
        add = ", ".join((f"n.{s.q(c)}" if c in ncols else "NULL") + f" AS {s.q(c)}" for c in out)
        return ctx.sql(
            f"SELECT {keep} FROM e WHERE NOT EXISTS (SELECT 1 FROM n WHERE {same}) "
            f"UNION ALL SELECT {add} FROM n",
            e=existing,
            n=new,
        )
    combine = {
        "sum": "COALESCE(e.{c}, 0) + COALESCE(n.{c}, 0)",
        "min": "LEAST(COALESCE(e.{c}, n.{c}), COALESCE(n.{c}, e.{c}))",
        "max": "GREATEST(COALESCE(e.{c}, n.{c}), COALESCE(n.{c}, e.{c}))",
    }[p.incremental.merge_strategy]
    select = [f"COALESCE(e.{s.q(g)}, n.{s.q(g)}) AS {s.q(g)}" for g in p.grain]
    select += [f"{combine.format(c=s.q(m))} AS {s.q(m)}" for m in names]
    select += [f"e.{s.q(c)} AS {s.q(c)}" for c in tcols if c not in p.grain and c not in names]
    return ctx.sql(
        f"SELECT {', '.join(select)} FROM e FULL OUTER JOIN n ON {same}", e=existing, n=new
    )


_DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_MONTHS = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)


def date_dimension(ctx: PatternContext, **params: Any) -> Frame:
    """Odibi's ``date_dimension`` pattern: one row per day from ``start_date`` to
    ``end_date`` with its 19 calendar columns (``date_sk`` is YYYYMMDD), the fiscal year
    starting in ``fiscal_year_start_month``; ``unknown_member`` adds date_sk 0."""
    p = DateDimensionParams.model_validate(params)
    s = ctx.dialect
    start, end = p.start_date, p.end_date
    if s.spark:
        days = f"SELECT explode(sequence(DATE '{start}', DATE '{end}', INTERVAL 1 DAY)) AS d"
        dow = "(MOD(dayofweek(d) + 5, 7) + 1)"  # Spark: 1 is Sunday
    else:
        days = (
            f"SELECT CAST(r AS DATE) AS d FROM range(DATE '{start}', "
            f"DATE '{end}' + INTERVAL 1 DAY, INTERVAL 1 DAY) t(r)"
        )
        dow = "isodow(d)"
    day_name = "CASE " + " ".join(f"WHEN {dow} = {i + 1} THEN '{n}'" for i, n in enumerate(_DAYS))
    month_name = "CASE " + " ".join(
        f"WHEN month(d) = {i + 1} THEN '{n}'" for i, n in enumerate(_MONTHS)
    )
    fm = p.fiscal_year_start_month
    fiscal_year = (
        "year(d)" if fm == 1 else f"(year(d) + CASE WHEN month(d) >= {fm} THEN 1 ELSE 0 END)"
    )
    columns = [
        ("date_sk", "CAST(year(d) * 10000 + month(d) * 100 + dayofmonth(d) AS INT)"),
        ("full_date", "d"),
        ("day_of_week", f"{day_name} END"),
        ("day_of_week_num", f"CAST({dow} AS INT)"),
        ("day_of_month", "CAST(dayofmonth(d) AS INT)"),
        ("day_of_year", "CAST(dayofyear(d) AS INT)"),
        ("is_weekend", f"({dow} >= 6)"),
        ("week_of_year", "CAST(weekofyear(d) AS INT)"),
        ("month", "CAST(month(d) AS INT)"),
        ("month_name", f"{month_name} END"),
        ("quarter", "CAST(quarter(d) AS INT)"),
        ("quarter_name", "CONCAT('Q', CAST(quarter(d) AS STRING))"),
        ("year", "CAST(year(d) AS INT)"),
        ("fiscal_year", f"CAST({fiscal_year} AS INT)"),
        ("fiscal_quarter", f"CAST(FLOOR(MOD(month(d) - {fm} + 12, 12) / 3) + 1 AS INT)"),
        ("is_month_start", "(dayofmonth(d) = 1)"),
        ("is_month_end", "(d = last_day(d))"),
        ("is_year_start", "(month(d) = 1 AND dayofmonth(d) = 1)"),
        ("is_year_end", "(month(d) = 12 AND dayofmonth(d) = 31)"),
    ]
    query = f"SELECT {', '.join(f'{e} AS {s.q(n)}' for n, e in columns)} FROM ({days}) g"
    if p.unknown_member:
        unknown = {
            "date_sk": "CAST(0 AS INT)",
            "full_date": "DATE '1900-01-01'",
            "day_of_week": "'Unknown'",
            "month_name": "'Unknown'",
            "quarter_name": "'Unknown'",
        }
        row = []
        for name, _ in columns:
            if name in unknown:
                row.append(f"{unknown[name]} AS {s.q(name)}")
            elif name.startswith("is_"):
                row.append(f"FALSE AS {s.q(name)}")
            else:
                row.append(f"CAST(0 AS INT) AS {s.q(name)}")
        query = f"SELECT {', '.join(row)} UNION ALL {query}"
    return ctx.sql(query)
