"""Deduplicating, mapping, hashing and key built-ins (Odibi v3's
``odibi/transformers/advanced.py``), SQL over the engine's seam."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field

from odibi_dagster.builtins import BuiltinContext, Params, register

Frame = Any

_RN = "__odibi_rn__"


def nulls_last(order_by: str) -> str:
    """``order_by`` (SQL) with NULLS LAST on each term that does not say where nulls go:
    DuckDB puts nulls last and Spark first (ascending), so both engines then agree, and
    agree with ``sort``."""
    terms, depth, quote, start = [], 0, "", 0
    for i, ch in enumerate(order_by):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"`":
            quote = ch
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "," and depth == 0:
            terms.append(order_by[start:i])
            start = i + 1
    terms.append(order_by[start:])
    out = []
    for term in (t.strip() for t in terms):
        if term and not re.search(r"\bnulls\s+(first|last)\s*$", term, re.IGNORECASE):
            term += " NULLS LAST"
        out.append(term)
    return ", ".join(out)


class DeduplicateParams(Params):
    keys: list[str] = Field(min_length=1, description="Columns that identify a row.")
    order_by: str | None = Field(
        default=None,
        description="SQL ORDER BY of the rows of one key; the first is kept, e.g. "
        "`updated_at DESC` (nulls last unless it says NULLS FIRST).",
    )


def deduplicate(ctx: BuiltinContext, p: DeduplicateParams) -> Frame:
    """One row per keys: the first by order_by (without it, any one)."""
    ctx.require(p.keys, "keys")
    q = ctx.q
    cols = ctx.columns()
    order = nulls_last(p.order_by) if p.order_by else ", ".join(q(k) for k in p.keys)
    return ctx.sql(
        f"SELECT {', '.join(q(c) for c in cols)} FROM (SELECT *, ROW_NUMBER() OVER "
        f"(PARTITION BY {', '.join(q(k) for k in p.keys)} ORDER BY {order}) AS {q(_RN)} "
        f"FROM df) AS t WHERE {q(_RN)} = 1"
    )


class DictMappingParams(Params):
    column: str
    mapping: dict[str, str | int | float | bool | None]
    default: str | int | float | bool | None = None
    output_column: str | None = None


def dict_based_mapping(ctx: BuiltinContext, p: DictMappingParams) -> Frame:
    """Set output_column (default: column itself) to mapping[column's value as text];
    default (or null) where the value is not in mapping."""
    ctx.require([p.column], "column")
    if not p.mapping:
        return ctx.project({p.output_column or p.column: ctx.lit(p.default)})
    key = f"CAST({ctx.q(p.column)} AS STRING)"
    whens = " ".join(f"WHEN {ctx.lit(k)} THEN {ctx.lit(v)}" for k, v in p.mapping.items())
    return ctx.project(
        {p.output_column or p.column: f"CASE {key} {whens} ELSE {ctx.lit(p.default)} END"}
    )


class RegexReplaceParams(Params):
    column: str
    pattern: str
    replacement: str


def regex_replace(ctx: BuiltinContext, p: RegexReplaceParams) -> Frame:
    """Replace every match of a regular expression in a text column."""
    ctx.require([p.column], "column")
    args = f"{ctx.q(p.column)}, {ctx.lit(p.pattern)}, {ctx.lit(p.replacement)}"
    expr = f"regexp_replace({args})" if ctx.dialect == "spark" else f"regexp_replace({args}, 'g')"
    return ctx.project({p.column: expr})


class HashParams(Params):
    columns: list[str] = Field(min_length=1)
    algorithm: Literal["sha256", "md5"] = "sha256"


def hash_columns(ctx: BuiltinContext, p: HashParams) -> Frame:
    """Replace each column by the hex sha256 (or md5) of its text; null stays null."""
    ctx.require(p.columns, "columns")

    def h(c: str) -> str:
        text = f"CAST({ctx.q(c)} AS STRING)"
        if p.algorithm == "md5":
            return f"md5({text})"
        return f"sha2({text}, 256)" if ctx.dialect == "spark" else f"sha256({text})"

    return ctx.project({c: h(c) for c in p.columns})


class SurrogateKeyParams(Params):
    columns: list[str] = Field(min_length=1)
    separator: str = "-"
    output_col: str = "surrogate_key"


def generate_surrogate_key(ctx: BuiltinContext, p: SurrogateKeyParams) -> Frame:
    """Add output_col: md5 of the columns' text joined by separator (null as empty)."""
    ctx.require(p.columns, "columns")
    parts = ", ".join(f"COALESCE(CAST({ctx.q(c)} AS STRING), '')" for c in p.columns)
    return ctx.project({p.output_col: f"md5(concat_ws({ctx.lit(p.separator)}, {parts}))"})


class WindowCalculationParams(Params):
    target_col: str
    function: str = Field(description="A SQL window function, e.g. `sum(amount)`, `rank()`.")
    partition_by: list[str] = Field(default_factory=list)
    order_by: str | None = Field(
        default=None,
        description="SQL ORDER BY, e.g. `day ASC` (nulls last unless it says NULLS FIRST).",
    )


def window_calculation(ctx: BuiltinContext, p: WindowCalculationParams) -> Frame:
    """Add (or replace) target_col: function OVER (PARTITION BY ... ORDER BY ...)."""
    ctx.require(p.partition_by, "partition_by")
    over = []
    if p.partition_by:
        over.append("PARTITION BY " + ", ".join(ctx.q(c) for c in p.partition_by))
    if p.order_by:
        over.append(f"ORDER BY {nulls_last(p.order_by)}")
    return ctx.project({p.target_col: f"{p.function} OVER ({' '.join(over)})"})


class ValidateAndFlagParams(Params):
    rules: dict[str, str] = Field(
        min_length=1, description="Rule name -> SQL condition a valid row meets."
    )
    flag_col: str = "_issues"


def validate_and_flag(ctx: BuiltinContext, p: ValidateAndFlagParams) -> Frame:
    """Add flag_col: the names of the rules a row fails, joined by ', ' (null: none)."""
    fails = ", ".join(
        f"CASE WHEN NOT ({cond}) THEN {ctx.lit(name)} END" for name, cond in p.rules.items()
    )
    return ctx.project({p.flag_col: f"NULLIF(concat_ws(', ', {fails}), '')"})


for _fn, _model in (
    (window_calculation, WindowCalculationParams),
    (validate_and_flag, ValidateAndFlagParams),
    (deduplicate, DeduplicateParams),
    (dict_based_mapping, DictMappingParams),
    (regex_replace, RegexReplaceParams),
    (hash_columns, HashParams),
    (generate_surrogate_key, SurrogateKeyParams),
):
    register(_fn.__name__, _fn, _model)
