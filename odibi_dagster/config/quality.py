"""Odibi v3's typed validation tests, quarantine and quality gate (a node's ``validation:``
block: ``tests:``, ``quarantine:``, ``gate:``), as YAML models.

Spellings follow Odibi 3 (its ``odibi/config.py``): each test has ``type:``, an optional
``name:`` and ``on_fail: fail | warn | quarantine``. What they do at run time is in
:mod:`odibi_dagster.quality`.
"""

from __future__ import annotations

import datetime as _dt
import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

OnFail = Literal["fail", "warn", "quarantine"]

# the tests that judge each row (a failing row can be quarantined); the others judge the
# whole result (row_count, volume_drop, schema, freshness, distribution)
ROW_TESTS = ("not_null", "unique", "accepted_values", "custom_sql", "range", "regex_match")

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)\s*$")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def duration_seconds(text: str) -> float | None:
    """``24h`` -> 86400.0 (s, m, h, d, w); None when it is not such a duration."""
    m = _DURATION.match(str(text))
    return float(m.group(1)) * _SECONDS[m.group(2)] if m else None


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class _Test(_Strict):
    name: str | None = Field(
        default=None, description="The test's name: its asset check's name (default: its type)."
    )
    on_fail: OnFail = Field(
        default="fail",
        description="fail (the node fails, nothing is written), warn (a warning check, all "
        "rows written) or quarantine (failing rows go to validation.quarantine).",
    )


class NotNullTest(_Test):
    type: Literal["not_null"]
    columns: list[str] = Field(min_length=1, description="Columns that must not be null.")


class UniqueTest(_Test):
    type: Literal["unique"]
    columns: list[str] = Field(
        min_length=1, description="Columns whose values (together) must be unique."
    )


class AcceptedValuesTest(_Test):
    type: Literal["accepted_values"]
    column: str = Field(description="Column to check (nulls pass).")
    values: list[Any] = Field(min_length=1, description="The allowed values.")


class RowCountTest(_Test):
    type: Literal["row_count"]
    min: int | None = Field(default=None, description="Fewest rows allowed.")
    max: int | None = Field(default=None, description="Most rows allowed.")

    @model_validator(mode="after")
    def _bound(self) -> RowCountTest:
        if self.min is None and self.max is None:
            raise ValueError("row_count needs `min:` or `max:` (or both)")
        return self


class CustomSqlTest(_Test):
    type: Literal["custom_sql"]
    condition: str = Field(description="SQL condition true for valid rows, e.g. 'amount > 0'.")
    threshold: float = Field(
        default=0.0, ge=0.0, le=1.0, description="Share of rows allowed to fail (0.05: 5%)."
    )


class RangeTest(_Test):
    type: Literal["range"]
    column: str = Field(description="Column to check (nulls pass).")
    min: int | float | _dt.datetime | _dt.date | str | None = Field(
        default=None, description="Smallest value (inclusive): a number, date or text."
    )
    max: int | float | _dt.datetime | _dt.date | str | None = Field(
        default=None, description="Largest value (inclusive): a number, date or text."
    )

    @model_validator(mode="after")
    def _bound(self) -> RangeTest:
        if self.min is None and self.max is None:
            raise ValueError("range needs `min:` or `max:` (or both)")
        return self


class RegexMatchTest(_Test):
    type: Literal["regex_match"]
    column: str = Field(description="Column to check (nulls pass).")
    pattern: str = Field(description="Regular expression a value must contain a match of.")

    @model_validator(mode="after")
    def _compiles(self) -> RegexMatchTest:
        try:
            re.compile(self.pattern)
        except re.error as exc:
            raise ValueError(
                f"pattern {self.pattern!r} is not a regular expression: {exc}"
            ) from None
        return self


class VolumeDropTest(_Test):
    type: Literal["volume_drop"]
    threshold: float = Field(
        default=0.5,
        ge=0.0,
        le=1.0,
        description="Largest drop allowed (0.5: 50%) below the "
        "average row count of the node's results of the last lookback_days.",
    )
    lookback_days: int = Field(default=7, ge=1, description="Days of history averaged.")


class SchemaTest(_Test):
    type: Literal["schema"]
    strict: bool = Field(
        default=True, description="Also fail on columns the node's `columns:` does not list."
    )


class DistributionTest(_Test):
    type: Literal["distribution"]
    column: str = Field(description="Column to measure.")
    metric: Literal["mean", "min", "max", "null_percentage"] = Field(
        description="mean, min, max or null_percentage (0-1)."
    )
    threshold: str = Field(description="The condition on the metric, e.g. '>100' or '<=0.05'.")
    on_fail: OnFail = "warn"

    @model_validator(mode="after")
    def _threshold(self) -> DistributionTest:
        if threshold_parts(self.threshold) is None:
            raise ValueError(
                f"threshold '{self.threshold}' is not a comparison: write e.g. '>100' or '<=0.05'"
            )
        return self


class FreshnessTest(_Test):
    type: Literal["freshness"]
    column: str = Field(default="updated_at", description="Timestamp column.")
    max_age: str = Field(description="Newest value at most this old: e.g. 30m, 24h, 7d.")

    @model_validator(mode="after")
    def _age(self) -> FreshnessTest:
        if duration_seconds(self.max_age) is None:
            raise ValueError(
                f"max_age '{self.max_age}' is not a duration: write a number and a unit "
                "(s, m, h, d, w), e.g. 24h or 7d"
            )
        return self


_COMPARISON = re.compile(r"^\s*(>=|<=|==|!=|=|>|<)\s*(-?\d+(?:\.\d+)?)\s*$")


def threshold_parts(text: str) -> tuple[str, float] | None:
    """``'>=0.5'`` -> ``('>=', 0.5)``; None when it is not a comparison with a number."""
    m = _COMPARISON.match(str(text))
    return (m.group(1), float(m.group(2))) if m else None


TEST_MODELS: dict[str, type[_Test]] = {
    "not_null": NotNullTest,
    "unique": UniqueTest,
    "accepted_values": AcceptedValuesTest,
    "row_count": RowCountTest,
    "custom_sql": CustomSqlTest,
    "range": RangeTest,
    "regex_match": RegexMatchTest,
    "volume_drop": VolumeDropTest,
    "schema": SchemaTest,
    "distribution": DistributionTest,
    "freshness": FreshnessTest,
}


def _known_type(v: Any) -> Any:
    """An entry of ``tests:`` names a known ``type:`` (else a clear error, with a hint)."""
    if not isinstance(v, dict):
        raise ValueError("a test is a mapping with `type:` (e.g. `type: not_null`)")
    t = v.get("type")
    names = ", ".join(TEST_MODELS)
    if t is None:
        raise ValueError(f"a test needs `type:`; one of: {names}")
    if t not in TEST_MODELS:
        from odibi_dagster.config.semantics import suggest

        raise ValueError(
            f"unknown test type '{t}'{suggest(str(t), list(TEST_MODELS))}; use one of: {names}"
        )
    return v


AnyTest = Annotated[
    NotNullTest
    | UniqueTest
    | AcceptedValuesTest
    | RowCountTest
    | CustomSqlTest
    | RangeTest
    | RegexMatchTest
    | VolumeDropTest
    | SchemaTest
    | DistributionTest
    | FreshnessTest,
    Field(discriminator="type"),
]
TestEntry = Annotated[AnyTest, BeforeValidator(_known_type)]


class QuarantineColumns(_Strict):
    """The columns added to each quarantined row (Odibi spells them with or without the
    leading underscore)."""

    rejection_reason: bool = Field(
        default=True,
        alias="_rejection_reason",
        description="_rejection_reason: 'Failed: <tests>' naming the tests the row failed.",
    )
    rejected_at: bool = Field(
        default=True, alias="_rejected_at", description="_rejected_at: UTC time (ISO 8601)."
    )
    source_batch_id: bool = Field(
        default=True, alias="_source_batch_id", description="_source_batch_id: the Dagster run id."
    )
    failed_tests: bool = Field(
        default=True,
        alias="_failed_tests",
        description="_failed_tests: the names of the tests the row failed, comma-separated.",
    )
    original_node: bool = Field(
        default=False, alias="_original_node", description="_original_node: the node's name."
    )

    @model_validator(mode="before")
    @classmethod
    def _either_spelling(cls, v: Any) -> Any:
        if isinstance(v, dict):
            return {(k if str(k).startswith("_") else f"_{k}"): x for k, x in v.items()}
        return v


class QuarantineConfig(_Strict):
    """Where rows failing ``on_fail: quarantine`` tests are appended."""

    connection: str = Field(description="Connection the quarantined rows are written to.")
    path: str | None = Field(default=None, description="Path under the connection.")
    table: str | None = Field(
        default=None, description="Odibi's metastore table: not supported here, use `path:`."
    )
    format: Literal["parquet", "delta", "csv", "json"] = Field(
        default="parquet",
        description="odibi_dagster's own: the quarantine's format (Odibi writes parquet).",
    )
    add_columns: QuarantineColumns = Field(
        default_factory=QuarantineColumns, description="Columns added to each quarantined row."
    )

    @model_validator(mode="after")
    def _path(self) -> QuarantineConfig:
        if self.table is not None:
            raise ValueError(
                "quarantine `table:` (a metastore table) is not supported here; give `path:` "
                "under the connection instead"
            )
        if not self.path:
            raise ValueError("quarantine needs `path:` (where failing rows are appended)")
        return self


class GateThreshold(_Strict):
    test: str = Field(description="A test's name, or its type.")
    min_pass_rate: float = Field(ge=0.0, le=1.0, description="Share of rows that must pass it.")


class RowCountGate(_Strict):
    min: int | None = Field(default=None, ge=0, description="Fewest rows.")
    max: int | None = Field(default=None, ge=0, description="Most rows.")
    change_threshold: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        description="Largest change (0.5: 50%) from the node's previous result's row count.",
    )


class GateConfig(_Strict):
    """The quality gate: the whole result judged before it is written."""

    require_pass_rate: float = Field(
        default=0.95,
        ge=0.0,
        le=1.0,
        description="Share of rows that must pass every row test.",
    )
    on_fail: Literal["abort", "warn_and_write", "write_valid_only"] = Field(
        default="abort",
        description="abort (the node fails, nothing written), warn_and_write, or "
        "write_valid_only (rows failing a row test are left out; quarantined when "
        "`quarantine:` is set).",
    )
    thresholds: list[GateThreshold] = Field(default_factory=list, description="Per-test rates.")
    row_count: RowCountGate | None = Field(default=None, description="Row count bounds.")
