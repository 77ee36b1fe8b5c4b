"""Incremental reads on the pandas engine: a :class:`~odibi_dagster.engines.base.RowFilter`
as a pyarrow predicate of a parquet or Delta scan (files and row groups whose min/max
statistics rule the rows out are skipped), or as a filter of a frame already read (csv,
json, and the one case a predicate cannot say: times kept as text)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads

from odibi_dagster.engines.base import RowFilter
from odibi_dagster.engines.messages import fail


def is_time(value: Any) -> bool:
    return isinstance(value, (date, datetime, pd.Timestamp))


def pd_date(value: Any) -> date:
    """The date of ``value`` (a date, a datetime or its text)."""
    day: date = pd.Timestamp(value).date()
    return day


def utc_naive(value: Any) -> pd.Timestamp:
    """``value`` as a timestamp without a zone, in UTC (a naive one is UTC already)."""
    ts = pd.Timestamp(value)
    if ts.tzinfo is not None:
        ts = ts.tz_convert("UTC").tz_localize(None)
    return ts


def missing_columns(names: list[str], rows: RowFilter, where: str, uri: str) -> None:
    wanted = [c for c in (rows.column, rows.fallback) if c]
    lacking = [c for c in wanted if c not in names]
    if lacking:
        fail(
            where,
            f"read.incremental filters on column '{lacking[0]}', which '{uri}' does not "
            f"have (its columns: {', '.join(names)}). Name one of its columns",
        )


def _numbers_not_times(rows: RowFilter, where: str) -> None:
    fail(
        where,
        f"read.incremental compares column '{rows.column}', which holds numbers, with a "
        f"time ({rows.describe()}). Use a date or timestamp column for a rolling_window or "
        "a watermark_lag",
    )


def arrow_predicate(schema: pa.Schema, rows: RowFilter, where: str) -> pads.Expression | None:
    """``rows`` as a predicate on data of ``schema``; None where it cannot be one (times
    kept as text: the frame is filtered once read)."""
    typ = schema.field(rows.column).type
    lower = rows.lower
    scalar: pa.Scalar
    if pa.types.is_timestamp(typ):
        ts = utc_naive(lower)
        if typ.tz is not None:
            ts = ts.tz_localize("UTC")
        scalar = pa.scalar(ts.to_pydatetime(), type=pa.timestamp("us", typ.tz))
    elif pa.types.is_date(typ):
        scalar = pa.scalar(pd_date(lower), type=typ)
    elif pa.types.is_integer(typ) or pa.types.is_floating(typ) or pa.types.is_decimal(typ):
        if is_time(lower):
            _numbers_not_times(rows, where)
        scalar = pa.scalar(lower)
    elif (pa.types.is_string(typ) or pa.types.is_large_string(typ)) and isinstance(lower, str):
        scalar = pa.scalar(lower, type=typ)
    else:
        return None
    key = pc.field(rows.column)
    if rows.fallback:
        key = pc.coalesce(key, pc.field(rows.fallback))
    predicate: pads.Expression = key >= scalar if rows.inclusive else key > scalar
    return predicate


def filter_frame(df: pd.DataFrame, rows: RowFilter, where: str, uri: str) -> pd.DataFrame:
    """The rows of ``df`` that ``rows`` selects (a null key is never selected)."""
    missing_columns([str(c) for c in df.columns], rows, where, uri)
    key = df[rows.column]
    if rows.fallback:
        key = key.combine_first(df[rows.fallback])
    lower: Any = rows.lower
    if pd.api.types.is_datetime64_any_dtype(key.dtype):
        ts = utc_naive(lower)
        lower = ts.tz_localize("UTC") if getattr(key.dt, "tz", None) is not None else ts
    elif is_time(lower):
        if pd.api.types.is_numeric_dtype(key.dtype):
            _numbers_not_times(rows, where)
        key = pd.to_datetime(key, errors="coerce", utc=True, format="mixed")
        lower = utc_naive(lower).tz_localize("UTC")
    elif isinstance(lower, str):
        key = key.astype("string")
    mask = (key >= lower) if rows.inclusive else (key > lower)
    return df[mask.fillna(False).astype(bool)].reset_index(drop=True)


def key_summary(df: pd.DataFrame, rows: RowFilter) -> tuple[int, Any]:
    """Row count and the largest key, as a Python value (None: no rows or all null)."""
    key = df[rows.column]
    if rows.fallback:
        key = key.combine_first(df[rows.fallback])
    key = key.dropna()
    if key.empty:
        return len(df), None
    top = key.max()
    if isinstance(top, pd.Timestamp):
        return len(df), top.to_pydatetime()
    if hasattr(top, "item"):  # a numpy scalar
        top = top.item()
    return len(df), top
