"""Incremental reads (Odibi v3 ``read.incremental``): which rows a node reads, and where a
stateful read keeps its high-water mark.

Two modes:

- ``rolling_window``: the rows whose ``column`` is at or after now minus ``lookback``
  ``unit``s (a month is 30 days, a year 365, as in Odibi). Stateless.
- ``stateful``: the rows whose ``column`` is above the high-water mark of the last
  successful run, minus ``watermark_lag`` when given (late rows are read again). The first
  run (no mark) reads everything. The new mark is the largest value of the column among the
  rows read (never the wall clock); a run that reads no rows keeps the old mark.

Where the mark lives: in the metadata of the materialization of the asset that reads
(``odibi/high_water_mark``; for a read-only source node, on the asset of each node that
consumes it, ``odibi/high_water_mark/<source>``), read back with
``instance.get_latest_materialization_event``. Dagster records a materialization only once
the step has computed *and* written its result, so the mark moves exactly when the rows
read are safely processed: a run that fails records none, and the rerun reads the same
rows again. It lives in the instance's event log, so it survives any process, needs no
extra table, write permission or lock on the connection (a state table there could be
advanced by a run whose write then failed, and would be one more thing to keep in step
with Dagster's record of what succeeded), and shows in the UI next to the rows it belongs
to. Wiping the asset's materializations resets it.

Both the node runner (a node with ``read:``) and the IO manager (a read-only source read
for its consumer) call :func:`read`; the engines apply the filter
(:meth:`~odibi_dagster.engines.base.Engine.read_rows`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Any

import dagster as dg
import pandas as pd

from odibi_dagster.config.models import WATERMARK_LAG_PATTERN
from odibi_dagster.engines.base import Engine, Frame, RowFilter
from odibi_dagster.errors import OdibiRunError
from odibi_dagster.resources.base import Location

MARK_KEY = "odibi/high_water_mark"  # the mark after the run (what the next run starts from)
MARK_BEFORE_KEY = "odibi/high_water_mark_before"  # the mark the run started from
ROWS_READ_KEY = "odibi/rows_read"  # the rows the incremental read kept
FILTER_KEY = "odibi/incremental_filter"  # the filter applied, as SQL, or why none

UNITS = {
    "hour": timedelta(hours=1),
    "day": timedelta(days=1),
    "month": timedelta(days=30),
    "year": timedelta(days=365),
}
_LAG_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def watermark_lag(text: str) -> timedelta:
    """``"2h"`` -> 2 hours (the pattern was checked when the YAML was loaded)."""
    m = re.match(WATERMARK_LAG_PATTERN, text)
    if m is None:
        raise ValueError(f"not a watermark_lag: {text!r}")
    return timedelta(**{_LAG_UNITS[m.group(2)]: float(m.group(1))})


@dataclass(frozen=True)
class Mark:
    """A high-water mark: the largest value of ``column`` a successful run read."""

    column: str
    value: Any  # int, float, str, date or datetime (naive: UTC)

    def as_json(self) -> dict[str, Any]:
        v = self.value
        out: Any
        if isinstance(v, bool):
            kind, out = "integer", int(v)
        elif isinstance(v, int):
            kind, out = "integer", v
        elif isinstance(v, float):
            kind, out = "float", v
        elif isinstance(v, datetime):
            kind, out = "timestamp", v.isoformat()
        elif isinstance(v, date):
            kind, out = "date", v.isoformat()
        else:
            kind, out = "string", str(v)
        return {"column": self.column, "value": out, "type": kind}

    @classmethod
    def from_json(cls, data: Any) -> Mark | None:
        if not isinstance(data, Mapping) or "value" not in data or "column" not in data:
            return None
        kind, v = data.get("type"), data["value"]
        if kind == "timestamp":
            v = pd.Timestamp(v).to_pydatetime()
        elif kind == "date":
            v = date.fromisoformat(str(v))
        return cls(str(data["column"]), v)

    def shown(self) -> str:
        return str(self.as_json()["value"])


@dataclass(frozen=True)
class IncrementalRead:
    """What one incremental read did."""

    mode: str
    rows_filter: RowFilter | None
    before: Mark | None
    after: Mark | None
    rows: int | None  # None: not counted (a rolling window on Spark: counting runs a job)
    note: str = ""  # why no filter was applied

    @property
    def filter_text(self) -> str:
        return self.rows_filter.describe() if self.rows_filter is not None else self.note

    def metadata(self, source: str = "") -> dict[str, Any]:
        """The metadata keys of the asset that read; ``source``: the read-only node read."""
        suffix = f"/{source}" if source else ""
        meta: dict[str, Any] = {FILTER_KEY + suffix: f"{self.mode}: {self.filter_text}"}
        if self.rows is not None:
            meta[ROWS_READ_KEY + suffix] = self.rows
        if self.mode == "stateful":
            meta[MARK_BEFORE_KEY + suffix] = (
                dg.MetadataValue.json(self.before.as_json())
                if self.before is not None
                else dg.MetadataValue.text("none (first run: read everything)")
            )
            if self.after is not None:
                meta[MARK_KEY + suffix] = dg.MetadataValue.json(self.after.as_json())
        return meta

    def label(self) -> str:
        """For the run story: ``incremental stateful: id > 42``."""
        return f"incremental {self.mode}: {self.filter_text}"


def previous_mark(
    instance: dg.DagsterInstance | None, key: dg.AssetKey | None, source: str = ""
) -> Mark | None:
    """The mark recorded by the last materialization of ``key`` (None: there is none)."""
    if instance is None or key is None:
        return None
    event = instance.get_latest_materialization_event(key)
    mat = event.asset_materialization if event is not None else None
    if mat is None:
        return None
    value = mat.metadata.get(MARK_KEY + (f"/{source}" if source else ""))
    data = getattr(value, "data", None)
    return Mark.from_json(data)


def _above(value: Any, mark: Any) -> bool:
    """Whether ``value`` is past ``mark`` (times compared in UTC)."""
    if isinstance(value, (date, datetime)) or isinstance(mark, (date, datetime)):
        try:
            return bool(_utc(value) > _utc(mark))
        except (TypeError, ValueError):
            return True
    try:
        return bool(value > mark)
    except TypeError:
        return True


def _utc(value: Any) -> pd.Timestamp:
    ts = pd.Timestamp(value)
    return ts.tz_convert("UTC").tz_localize(None) if ts.tzinfo is not None else ts


def _filter(
    spec: Mapping[str, Any], before: Mark | None, now: datetime, where: str
) -> tuple[RowFilter | None, str]:
    column, fallback = str(spec["column"]), spec.get("fallback_column")
    if spec.get("mode", "rolling_window") == "rolling_window":
        lookback = int(spec.get("lookback") or 1)
        unit = str(spec.get("unit") or "day")
        lower = now - lookback * UNITS[unit]
        return RowFilter(column, lower.replace(microsecond=0), True, fallback), ""
    if before is None:
        return None, "no mark yet: read everything"
    if before.column != column:
        return None, f"the mark is of column '{before.column}', not '{column}': read everything"
    lower = before.value
    lag = spec.get("watermark_lag")
    if lag:
        if isinstance(lower, (int, float)):
            raise OdibiRunError(
                f"{where}: read.incremental.watermark_lag {lag!r} is a time, but the mark of "
                f"column '{column}' is a number ({lower}); remove watermark_lag, or track a "
                "date or timestamp column"
            )
        try:
            lower = pd.Timestamp(lower).to_pydatetime() - watermark_lag(str(lag))
        except (TypeError, ValueError) as exc:
            raise OdibiRunError(
                f"{where}: read.incremental.watermark_lag needs a date or timestamp column; "
                f"the mark of column '{column}' is {before.shown()!r} ({exc})"
            ) from None
    return RowFilter(column, lower, False, fallback), ""


def read(
    engine: Engine,
    loc: Location,
    fmt: str,
    options: Mapping[str, Any] | None,
    spec: Mapping[str, Any],
    before: Mark | None,
    *,
    where: str,
    now: datetime | None = None,
) -> tuple[Frame, IncrementalRead]:
    """Read what ``spec`` (a ``read.incremental`` block as a dict) selects, given the mark
    of the last successful run (``before``); the frame and what was read."""
    mode = str(spec.get("mode") or "rolling_window")
    rows_filter, note = _filter(spec, before, now or datetime.now(timezone.utc), where)
    if rows_filter is None:
        df = engine.read(loc, fmt, options, where=where)
    else:
        df = engine.read_rows(loc, fmt, options, rows_filter, where=where)
    if mode != "stateful":
        return df, IncrementalRead(mode, rows_filter, None, None, engine.cheap_row_count(df))
    column = str(spec["column"])
    key = RowFilter(column, None, fallback=spec.get("fallback_column"))
    if rows_filter is None:  # no filter ran: the columns are not checked yet
        names = [name for name, _ in engine.column_schema(df)]
        for c in (column, key.fallback):
            if c and c not in names:
                raise OdibiRunError(
                    f"{where}: read.incremental filters on column '{c}', which '{loc.uri}' "
                    f"does not have (its columns: {', '.join(names)}). Name one of its columns"
                )
    count, top = engine.key_summary(df, key)
    after = before
    if top is not None:
        # with a watermark_lag the rows read may all be older than the mark: it never
        # moves back
        later = before is None or before.column != column or _above(top, before.value)
        after = Mark(column, top) if later else before
    return df, IncrementalRead(mode, rows_filter, before, after, count, note)
