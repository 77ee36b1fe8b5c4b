"""Row and column built-ins, each one SQL query over the current frame (``df``).

Names and parameters are Odibi v3's (``odibi/transformers/sql_core.py``); the last four
(drop_nulls, rename_columns, select_columns, drop_columns) are odibi_dagster's own.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from odibi_dagster.builtins import BuiltinContext, Params, register
from odibi_dagster.errors import OdibiRunError

Frame = Any


class FilterRowsParams(Params):
    condition: str = Field(description="A SQL WHERE condition, e.g. `age > 18`.")


def filter_rows(ctx: BuiltinContext, p: FilterRowsParams) -> Frame:
    """Keep the rows meeting a SQL condition."""
    return ctx.sql(f"SELECT * FROM df WHERE {p.condition}")


class DeriveColumnsParams(Params):
    derivations: dict[str, str] = Field(description="New column -> SQL expression.")


def derive_columns(ctx: BuiltinContext, p: DeriveColumnsParams) -> Frame:
    """Add (or replace) columns computed by SQL expressions."""
    return ctx.project(p.derivations)


_TYPES = {
    "int": "INTEGER",
    "integer": "INTEGER",
    "long": "BIGINT",
    "bigint": "BIGINT",
    "str": "STRING",
    "string": "STRING",
    "float": "DOUBLE",
    "double": "DOUBLE",
    "bool": "BOOLEAN",
    "boolean": "BOOLEAN",
    "date": "DATE",
    "timestamp": "TIMESTAMP",
}


class CastColumnsParams(Params):
    casts: dict[str, str] = Field(
        description="Column -> type: int, integer, long, str, string, float, double, bool, "
        "boolean, date, timestamp, or a SQL type of the engine."
    )


def cast_columns(ctx: BuiltinContext, p: CastColumnsParams) -> Frame:
    """Change the type of some columns."""
    ctx.require(list(p.casts), "casts")
    return ctx.project(
        {c: f"CAST({ctx.q(c)} AS {_TYPES.get(t.lower(), t)})" for c, t in p.casts.items()}
    )


class CleanTextParams(Params):
    columns: list[str]
    trim: bool = True
    case: Literal["lower", "upper", "preserve"] = "preserve"


def clean_text(ctx: BuiltinContext, p: CleanTextParams) -> Frame:
    """Trim text columns and change their case."""
    ctx.require(p.columns, "columns")
    exprs = {}
    for c in p.columns:
        e = ctx.q(c)
        if p.trim:
            e = f"TRIM({e})"
        if p.case != "preserve":
            e = f"{p.case.upper()}({e})"
        exprs[c] = e
    return ctx.project(exprs)


class ExtractDateParams(Params):
    source_col: str
    prefix: str | None = None
    parts: list[Literal["year", "month", "day", "hour"]] = ["year", "month", "day"]


def extract_date_parts(ctx: BuiltinContext, p: ExtractDateParams) -> Frame:
    """Add <prefix>_year, _month, _day, _hour columns of a date or timestamp column."""
    ctx.require([p.source_col], "source_col")
    prefix = p.prefix or p.source_col
    col = _as_time(ctx, p.source_col)
    return ctx.project({f"{prefix}_{part}": f"{part.upper()}({col})" for part in p.parts})


class NormalizeSchemaParams(Params):
    rename: dict[str, str] = Field(default_factory=dict)
    drop: list[str] = Field(default_factory=list)
    select_order: list[str] | None = None


def normalize_schema(ctx: BuiltinContext, p: NormalizeSchemaParams) -> Frame:
    """Rename, drop and reorder columns (with select_order: only the columns listed, by
    their new names)."""
    ctx.require(list(p.rename), "rename")
    kept = [c for c in ctx.columns() if c not in p.drop]
    named = {p.rename.get(c, c): c for c in kept}
    order = p.select_order if p.select_order is not None else list(named)
    missing = [c for c in order if c not in named]
    if missing:
        ctx.require(missing, "select_order")
    cols = [ctx.q(named[c]) + (f" AS {ctx.q(c)}" if named[c] != c else "") for c in order]
    return ctx.sql(f"SELECT {', '.join(cols)} FROM df")


class SortParams(Params):
    by: str | list[str]
    ascending: bool = True


def sort(ctx: BuiltinContext, p: SortParams) -> Frame:
    """Sort the rows by columns (all ascending or all descending), nulls last."""
    cols = [p.by] if isinstance(p.by, str) else p.by
    ctx.require(cols, "by")
    direction = "ASC" if p.ascending else "DESC"
    order = ", ".join(f"{ctx.q(c)} {direction} NULLS LAST" for c in cols)
    return ctx.sql(f"SELECT * FROM df ORDER BY {order}")


class LimitParams(Params):
    n: int = Field(ge=0)
    offset: int = Field(default=0, ge=0)


def limit(ctx: BuiltinContext, p: LimitParams) -> Frame:
    """Keep n rows (after skipping offset)."""
    return ctx.sql(f"SELECT * FROM df LIMIT {p.n} OFFSET {p.offset}")


class SampleParams(Params):
    fraction: float = Field(ge=0, le=1)
    seed: int | None = None


def sample(ctx: BuiltinContext, p: SampleParams) -> Frame:
    """Keep a random fraction of the rows (about fraction x rows)."""
    if ctx.dialect == "spark":
        seed = "" if p.seed is None else str(p.seed)
        return ctx.sql(f"SELECT * FROM df WHERE rand({seed}) < {p.fraction}")
    seed = "" if p.seed is None else f", {p.seed}"
    return ctx.sql(f"SELECT * FROM df USING SAMPLE {p.fraction * 100} PERCENT (bernoulli{seed})")


class DistinctParams(Params):
    columns: list[str] | None = None


def distinct(ctx: BuiltinContext, p: DistinctParams) -> Frame:
    """The distinct rows (of some columns only, when columns is given)."""
    if p.columns:
        ctx.require(p.columns, "columns")
        return ctx.sql(f"SELECT DISTINCT {', '.join(ctx.q(c) for c in p.columns)} FROM df")
    return ctx.sql("SELECT DISTINCT * FROM df")


class FillNullsParams(Params):
    values: dict[str, str | int | float | bool]


def fill_nulls(ctx: BuiltinContext, p: FillNullsParams) -> Frame:
    """Replace nulls of some columns by a value each."""
    ctx.require(list(p.values), "values")
    return ctx.project({c: f"COALESCE({ctx.q(c)}, {ctx.lit(v)})" for c, v in p.values.items()})


class SplitPartParams(Params):
    col: str
    delimiter: str
    index: int = Field(ge=1)


def split_part(ctx: BuiltinContext, p: SplitPartParams) -> Frame:
    """Add <col>_part_<index>: the index-th (from 1) piece of col split by delimiter."""
    ctx.require([p.col], "col")
    expr = f"split_part({ctx.q(p.col)}, {ctx.lit(p.delimiter)}, {p.index})"
    return ctx.project({f"{p.col}_part_{p.index}": expr})


def _as_time(ctx: BuiltinContext, column: str) -> str:
    """``column`` for a date function: a text column (a CSV's, on pandas) read as a
    timestamp, as Spark does; a date or timestamp column as it is."""
    types = dict(ctx.engine.column_schema(ctx.df))
    if ctx.engine.type_family(types.get(column, "")) == "string":
        return f"CAST({ctx.q(column)} AS TIMESTAMP)"
    return ctx.q(column)


_UNITS = Literal["day", "month", "year", "hour", "minute", "second"]


class DateAddParams(Params):
    col: str
    value: int
    unit: _UNITS


def date_add(ctx: BuiltinContext, p: DateAddParams) -> Frame:
    """Add <col>_future: col plus value units."""
    ctx.require([p.col], "col")
    sign = "-" if p.value < 0 else "+"
    expr = f"{_as_time(ctx, p.col)} {sign} INTERVAL {abs(p.value)} {p.unit}"
    return ctx.project({f"{p.col}_future": expr})


class DateTruncParams(Params):
    col: str
    unit: _UNITS


def date_trunc(ctx: BuiltinContext, p: DateTruncParams) -> Frame:
    """Add <col>_trunc: col truncated to the unit (a timestamp)."""
    ctx.require([p.col], "col")
    expr = f"CAST(date_trunc('{p.unit}', {_as_time(ctx, p.col)}) AS TIMESTAMP)"
    return ctx.project({f"{p.col}_trunc": expr})


class DateDiffParams(Params):
    start_col: str
    end_col: str
    unit: Literal["day", "hour", "minute", "second"] = "day"


def date_diff(ctx: BuiltinContext, p: DateDiffParams) -> Frame:
    """Add diff_<unit>: end_col - start_col in days (whole) or hours/minutes/seconds."""
    ctx.require([p.start_col, p.end_col], "start_col/end_col")
    s, e = ctx.q(p.start_col), ctx.q(p.end_col)
    if p.unit == "day":
        if ctx.dialect == "spark":
            expr = f"datediff({e}, {s})"
        else:
            expr = f"date_diff('day', CAST({s} AS DATE), CAST({e} AS DATE))"
    else:
        if ctx.dialect == "spark":
            secs = f"(unix_timestamp({e}) - unix_timestamp({s}))"
        else:
            secs = f"date_diff('second', CAST({s} AS TIMESTAMP), CAST({e} AS TIMESTAMP))"
        expr = {"hour": f"({secs} / 3600.0)", "minute": f"({secs} / 60.0)"}.get(
            p.unit, f"CAST({secs} AS DOUBLE)"
        )
    return ctx.project(
        {f"diff_{p.unit}": f"CAST({expr} AS {'BIGINT' if p.unit == 'day' else 'DOUBLE'})"}
    )


class CaseWhenCase(Params):
    condition: str
    value: str


class CaseWhenParams(Params):
    cases: list[CaseWhenCase] = Field(min_length=1)
    default: str = "NULL"
    output_col: str


def case_when(ctx: BuiltinContext, p: CaseWhenParams) -> Frame:
    """Add (or replace) output_col: the value of the first case whose condition holds
    (conditions and values are SQL: quote text values, e.g. "'Minor'")."""
    whens = " ".join(f"WHEN {c.condition} THEN {c.value}" for c in p.cases)
    return ctx.project({p.output_col: f"CASE {whens} ELSE {p.default} END"})


class ConvertTimezoneParams(Params):
    col: str
    source_tz: str = "UTC"
    target_tz: str
    output_col: str | None = None


def convert_timezone(ctx: BuiltinContext, p: ConvertTimezoneParams) -> Frame:
    """Add output_col (default <col>_converted): col's local time in source_tz as the
    local time in target_tz."""
    ctx.require([p.col], "col")
    c = ctx.q(p.col)
    src, tgt = ctx.lit(p.source_tz), ctx.lit(p.target_tz)
    if ctx.dialect == "spark":
        expr = f"from_utc_timestamp(to_utc_timestamp({c}, {src}), {tgt})"
    else:
        expr = f"(CAST({c} AS TIMESTAMP) AT TIME ZONE {src}) AT TIME ZONE {tgt}"
    return ctx.project({p.output_col or f"{p.col}_converted": expr})


class ConcatColumnsParams(Params):
    columns: list[str] = Field(min_length=1)
    separator: str = ""
    output_col: str


def concat_columns(ctx: BuiltinContext, p: ConcatColumnsParams) -> Frame:
    """Add output_col: the columns' text joined by separator (nulls skipped)."""
    ctx.require(p.columns, "columns")
    cols = ", ".join(f"CAST({ctx.q(c)} AS STRING)" for c in p.columns)
    return ctx.project({p.output_col: f"concat_ws({ctx.lit(p.separator)}, {cols})"})


# ------------------------------------------------------------------ odibi_dagster's own


class ColumnsParams(Params):
    columns: list[str] | None = None


def drop_nulls(ctx: BuiltinContext, p: ColumnsParams) -> Frame:
    """Drop the rows with a null in any of columns (default: any column)."""
    cols = p.columns if p.columns else ctx.columns()
    ctx.require(cols, "columns")
    cond = " AND ".join(f"{ctx.q(c)} IS NOT NULL" for c in cols)
    return ctx.sql(f"SELECT * FROM df WHERE {cond}")


class RenameParams(Params):
    columns: dict[str, str] = Field(description="Old name -> new name.")


def rename_columns(ctx: BuiltinContext, p: RenameParams) -> Frame:
    """Rename columns."""
    ctx.require(list(p.columns), "columns")
    cols = [
        ctx.q(c) + (f" AS {ctx.q(p.columns[c])}" if c in p.columns else "") for c in ctx.columns()
    ]
    return ctx.sql(f"SELECT {', '.join(cols)} FROM df")


class ListParams(Params):
    columns: list[str] = Field(min_length=1)


def select_columns(ctx: BuiltinContext, p: ListParams) -> Frame:
    """Keep only these columns, in this order."""
    ctx.require(p.columns, "columns")
    return ctx.sql(f"SELECT {', '.join(ctx.q(c) for c in p.columns)} FROM df")


def drop_columns(ctx: BuiltinContext, p: ListParams) -> Frame:
    """Drop these columns (a column not there is ignored)."""
    keep = [ctx.q(c) for c in ctx.columns() if c not in p.columns]
    if not keep:
        raise OdibiRunError(
            f"{ctx.where}: drop_columns would drop every column ({', '.join(ctx.columns())}); "
            "keep at least one (or leave the node out)"
        )
    return ctx.sql(f"SELECT {', '.join(keep)} FROM df")


for _fn, _model in (
    (filter_rows, FilterRowsParams),
    (derive_columns, DeriveColumnsParams),
    (cast_columns, CastColumnsParams),
    (clean_text, CleanTextParams),
    (extract_date_parts, ExtractDateParams),
    (normalize_schema, NormalizeSchemaParams),
    (sort, SortParams),
    (limit, LimitParams),
    (sample, SampleParams),
    (distinct, DistinctParams),
    (fill_nulls, FillNullsParams),
    (split_part, SplitPartParams),
    (date_add, DateAddParams),
    (date_trunc, DateTruncParams),
    (date_diff, DateDiffParams),
    (case_when, CaseWhenParams),
    (convert_timezone, ConvertTimezoneParams),
    (concat_columns, ConcatColumnsParams),
):
    register(_fn.__name__, _fn, _model)

for _own, _own_model in (
    (drop_nulls, ColumnsParams),
    (rename_columns, RenameParams),
    (select_columns, ListParams),
    (drop_columns, ListParams),
):
    register(_own.__name__, _own, _own_model, origin="odibi_dagster")
