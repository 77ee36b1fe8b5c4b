"""Built-ins over several frames or reshaping one: join, union, pivot, unpivot, aggregate
(Odibi v3's ``odibi/transformers/relational.py``), all SQL over the engine's seam."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from odibi_dagster.builtins import BuiltinContext, Params, register
from odibi_dagster.errors import OdibiRunError

Frame = Any

_RIGHT = "__odibi_right__"


class JoinParams(Params):
    right_dataset: str = Field(description="An upstream node (in depends_on) to join with.")
    on: list[str] | None = None
    how: Literal["inner", "left", "right", "full", "cross", "anti", "semi"] = "left"
    prefix: str | None = None

    @field_validator("on", mode="before")
    @classmethod
    def _one_key(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v

    @model_validator(mode="after")
    def _keys(self) -> JoinParams:
        if self.how != "cross" and not self.on:
            raise ValueError(f"a {self.how} join needs `on:` (the key column or columns)")
        return self


def join(ctx: BuiltinContext, p: JoinParams) -> Frame:
    """Join the current frame with an upstream node on key columns. The keys appear once;
    a right column whose name the left has too is named <prefix or right_dataset>_<col>;
    anti/semi keep the left rows without/with a match."""
    right = ctx.frame(p.right_dataset, "right_dataset")
    keys = p.on or []
    ctx.require(keys, "on")
    right_cols = [c for c, _ in ctx.engine.column_schema(right)]
    missing = [k for k in keys if k not in right_cols]
    if missing:
        raise OdibiRunError(
            f"{ctx.where}: join key(s) {', '.join(missing)} are not columns of "
            f"'{p.right_dataset}' (columns: {', '.join(right_cols)})"
        )
    q = ctx.q
    cond = " AND ".join(f"l.{q(k)} = r.{q(k)}" for k in keys)
    if p.how in ("anti", "semi"):
        neg = "NOT " if p.how == "anti" else ""
        return ctx.sql(
            f"SELECT l.* FROM df AS l WHERE {neg}EXISTS (SELECT 1 FROM {_RIGHT} AS r WHERE {cond})",
            **{_RIGHT: right},
        )
    left_cols = ctx.columns()
    proj = []
    for c in left_cols:
        if c in keys and p.how in ("right", "full"):
            proj.append(f"COALESCE(l.{q(c)}, r.{q(c)}) AS {q(c)}")
        else:
            proj.append(f"l.{q(c)}")
    prefix = p.prefix or p.right_dataset
    for c in right_cols:
        if c in keys and p.how != "cross":
            continue
        proj.append(f"r.{q(c)} AS {q(f'{prefix}_{c}' if c in left_cols else c)}")
    if p.how == "cross":
        clause = f"CROSS JOIN {_RIGHT} AS r"
    else:
        kind = {"full": "FULL OUTER"}.get(p.how, p.how.upper())
        clause = f"{kind} JOIN {_RIGHT} AS r ON {cond}"
    return ctx.sql(f"SELECT {', '.join(proj)} FROM df AS l {clause}", **{_RIGHT: right})


class UnionParams(Params):
    datasets: list[str] = Field(min_length=1, description="Upstream nodes to append.")
    by_name: bool = True


def union(ctx: BuiltinContext, p: UnionParams) -> Frame:
    """Append the rows of upstream nodes to the current frame. by_name: columns matched by
    name, every column of any of them kept (null where a frame lacks it); otherwise by
    position."""
    others = {f"__odibi_union_{i}__": ctx.frame(n, "datasets") for i, n in enumerate(p.datasets)}
    if not p.by_name:
        parts = ["SELECT * FROM df", *(f"SELECT * FROM {t}" for t in others)]
        return ctx.sql(" UNION ALL ".join(parts), **others)
    cols_of = {"df": ctx.columns()}
    cols_of.update({t: [c for c, _ in ctx.engine.column_schema(f)] for t, f in others.items()})
    every: list[str] = []
    for cols in cols_of.values():
        every += [c for c in cols if c not in every]
    parts = []
    for table, cols in cols_of.items():
        sel = [ctx.q(c) if c in cols else f"NULL AS {ctx.q(c)}" for c in every]
        parts.append(f"SELECT {', '.join(sel)} FROM {table}")
    return ctx.sql(" UNION ALL ".join(parts), **others)


_AGG = Literal["sum", "count", "avg", "max", "min", "first"]


class PivotParams(Params):
    group_by: list[str]
    pivot_col: str
    agg_col: str
    agg_func: _AGG = "sum"
    values: list[Any] | None = None


_MAX_PIVOT_VALUES = 1000


def pivot(ctx: BuiltinContext, p: PivotParams) -> Frame:
    """One row per group_by value, one column per value of pivot_col (those of `values`,
    else every value found, sorted) holding agg_func(agg_col) of its rows; rows ordered
    by group_by."""
    ctx.require([*p.group_by, p.pivot_col, p.agg_col], "group_by/pivot_col/agg_col")
    q = ctx.q
    values = p.values
    if values is None:
        found = ctx.sql(
            f"SELECT DISTINCT {q(p.pivot_col)} AS v FROM df WHERE {q(p.pivot_col)} IS NOT NULL "
            "ORDER BY 1"
        )
        rows = ctx.engine.head(found, _MAX_PIVOT_VALUES + 1)
        if len(rows) > _MAX_PIVOT_VALUES:
            raise OdibiRunError(
                f"{ctx.where}: pivot_col {p.pivot_col} has more than {_MAX_PIVOT_VALUES} "
                "values; list the ones to keep in `values:`"
            )
        values = [r["v"] for r in rows]
    groups = ", ".join(q(c) for c in p.group_by)
    aggs = [
        f"{p.agg_func.upper()}({q(p.agg_col)}) FILTER (WHERE {q(p.pivot_col)} = {ctx.lit(v)}) "
        f"AS {q(str(v))}"
        for v in values
    ]
    return ctx.sql(
        f"SELECT {', '.join([groups, *aggs])} FROM df GROUP BY {groups} ORDER BY {groups}"
    )


class UnpivotParams(Params):
    id_cols: list[str]
    value_vars: list[str] = Field(min_length=1)
    var_name: str = "variable"
    value_name: str = "value"


def unpivot(ctx: BuiltinContext, p: UnpivotParams) -> Frame:
    """One row per row and value_vars column: id_cols, var_name (the column's name) and
    value_name (its value)."""
    ctx.require([*p.id_cols, *p.value_vars], "id_cols/value_vars")
    q = ctx.q
    ids = [q(c) for c in p.id_cols]
    parts = [
        f"SELECT {', '.join([*ids, f'{ctx.lit(v)} AS {q(p.var_name)}', f'{q(v)} AS {q(p.value_name)}'])} "
        "FROM df"
        for v in p.value_vars
    ]
    return ctx.sql(" UNION ALL ".join(parts))


class AggregateParams(Params):
    group_by: list[str]
    aggregations: dict[str, _AGG] = Field(description="Column -> sum, avg, min, max, count, first.")


def aggregate(ctx: BuiltinContext, p: AggregateParams) -> Frame:
    """One row per group_by value, each aggregated column keeping its name; rows ordered by
    group_by."""
    ctx.require([*p.group_by, *p.aggregations], "group_by/aggregations")
    q = ctx.q
    groups = ", ".join(q(c) for c in p.group_by)
    aggs = [f"{f.upper()}({q(c)}) AS {q(c)}" for c, f in p.aggregations.items()]
    sel = ", ".join([groups, *aggs]) if groups else ", ".join(aggs)
    tail = f" GROUP BY {groups} ORDER BY {groups}" if groups else ""
    return ctx.sql(f"SELECT {sel} FROM df{tail}")


for _fn, _model in (
    (join, JoinParams),
    (union, UnionParams),
    (pivot, PivotParams),
    (unpivot, UnpivotParams),
    (aggregate, AggregateParams),
):
    register(_fn.__name__, _fn, _model)
