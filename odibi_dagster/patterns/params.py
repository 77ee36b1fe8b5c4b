"""The parameters of each pattern (Odibi v3 ``pattern: {type, params}``), as strict models.

One model per pattern type. The loader validates a node's ``pattern.params`` against its
type's model (see :mod:`odibi_dagster.patterns.checks`), so a missing or misspelt key is
reported at ``file:line``; the runtime reads the same model.
"""

from __future__ import annotations

import datetime as _dt
from typing import Annotated, Any, Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from odibi_dagster.config.notes import PATTERN_PARAMS_NOT_APPLIED
from odibi_dagster.vocabulary import PATTERN_NAMES


def _as_list(v: Any) -> Any:
    """``keys: id`` means ``keys: [id]`` (Odibi accepts both)."""
    return [v] if isinstance(v, str) else v


def _as_date_text(v: Any) -> Any:
    """``start_date: 2020-01-01`` arrives from YAML as a date: keep it as text."""
    if isinstance(v, _dt.datetime):
        return v.date().isoformat()
    if isinstance(v, _dt.date):
        return v.isoformat()
    return v


Columns = Annotated[list[str], BeforeValidator(_as_list)]


class Params(BaseModel):
    """Strict: a key a pattern does not know is an error (with "did you mean")."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class TargetParams(Params):
    """Where a pattern reads the table it maintains: ``target: <connection>.<path>``, or
    ``connection:`` + ``path:``; neither: the node's own ``write:``."""

    target: str | None = Field(
        default=None,
        description="The table the pattern maintains, as <connection>.<path> "
        "(default: the node's write:).",
    )
    connection: str | None = Field(default=None, description="With path: instead of target.")
    path: str | None = Field(default=None, description="With connection: instead of target.")

    @model_validator(mode="after")
    def _one_target(self) -> TargetParams:
        if (self.connection is None) != (self.path is None):
            given = "connection" if self.connection is not None else "path"
            other = "path" if given == "connection" else "connection"
            raise ValueError(
                f"`{given}` needs `{other}` too (or write target: <connection>.<path>)"
            )
        if self.target is not None and self.connection is not None:
            raise ValueError("use `target` or `connection` + `path`, not both")
        if self.target is not None and not self.target.strip():
            raise ValueError("`target` is empty: write <connection>.<path>")
        return self


class AuditParams(Params):
    """Odibi's ``audit:`` block: a load time and a source system name on every row."""

    load_timestamp: bool = Field(default=True, description="Add a load_timestamp column.")
    source_system: str | None = Field(
        default=None, description="Add a source_system column holding this value."
    )


class AuditOffParams(AuditParams):
    """``audit:`` of the fact and aggregation patterns: no load_timestamp unless asked."""

    load_timestamp: bool = Field(default=False, description="Add a load_timestamp column.")


class Scd2Params(TargetParams):
    """``type: scd2`` (and the ``scd2`` transformer): history kept by versions."""

    keys: Columns = Field(min_length=1, description="The business key columns.")
    track_cols: Columns = Field(
        min_length=1, description="A change in any of these opens a new version."
    )
    effective_time_col: str = Field(
        validation_alias=AliasChoices("effective_time_col", "time_col"),
        description="Source column saying when the change happened: the new version's "
        "start, and the end of the version it replaces.",
    )
    end_time_col: str = Field(
        default="valid_to",
        validation_alias=AliasChoices("end_time_col", "valid_to_col"),
        description="Column holding when a version ended (null: current).",
    )
    current_flag_col: str = Field(
        default="is_current",
        validation_alias=AliasChoices("current_flag_col", "is_current_col"),
        description="Column that is true on the current version of each key.",
    )
    delete_col: str | None = Field(
        default=None,
        description="A boolean source column: true closes the key's current version and "
        "opens none.",
    )


class DimensionParams(TargetParams):
    """``type: dimension``: surrogate keys and SCD type 0, 1 or 2."""

    natural_key: str = Field(min_length=1, description="The business key column.")
    surrogate_key: str = Field(min_length=1, description="The surrogate key column to generate.")
    scd_type: Literal[0, 1, 2] = Field(
        default=1, description="0: static, 1: overwrite, 2: history."
    )
    track_cols: Columns | None = Field(
        default=None, description="Columns whose change is tracked (scd_type 1 and 2)."
    )
    unknown_member: bool = Field(
        default=False, description="Add a row with surrogate key 0 for facts without a match."
    )
    audit: AuditParams = Field(default_factory=AuditParams, description="Audit columns.")
    valid_from_col: str = Field(default="valid_from", description="scd_type 2: version start.")
    valid_to_col: str = Field(default="valid_to", description="scd_type 2: version end.")
    is_current_col: str = Field(default="is_current", description="scd_type 2: current flag.")

    @field_validator("audit", mode="before")
    @classmethod
    def _audit_empty(cls, v: Any) -> Any:
        return {} if v is None else v

    @model_validator(mode="after")
    def _tracked(self) -> DimensionParams:
        if self.scd_type in (1, 2) and not self.track_cols:
            raise ValueError(
                f"scd_type {self.scd_type} needs `track_cols`: the columns whose change is "
                "tracked, e.g. track_cols: [name, email]"
            )
        return self


class DimensionLookup(Params):
    """One surrogate key lookup of the fact pattern."""

    source_column: str = Field(description="The fact's column holding the business key.")
    dimension_table: str = Field(description="The dimension node (in depends_on).")
    dimension_key: str = Field(description="The dimension's business key column.")
    surrogate_key: str = Field(description="The dimension's surrogate key column to add.")
    scd2: bool = Field(default=False, description="Match only the current versions.")
    current_flag_col: str = Field(
        default="is_current",
        description="scd2: the dimension's column that is true on its current versions.",
    )


class QuarantineColumns(Params):
    rejection_reason: bool = Field(default=False, alias="_rejection_reason")
    rejected_at: bool = Field(default=False, alias="_rejected_at")
    source_dimension: bool = Field(default=False, alias="_source_dimension")


class QuarantineParams(Params):
    """Where orphan fact rows go with ``orphan_handling: quarantine``."""

    connection: str = Field(description="Connection of the quarantine table.")
    path: str | None = Field(default=None, description="Path of the quarantine table.")
    table: str | None = Field(default=None, description="Same as path.")
    add_columns: QuarantineColumns = Field(default_factory=QuarantineColumns)

    @model_validator(mode="after")
    def _somewhere(self) -> QuarantineParams:
        if not (self.path or self.table):
            raise ValueError("quarantine needs `path` (where orphan rows are appended)")
        return self

    @property
    def where_to(self) -> str:
        return str(self.path or self.table)


class FactParams(Params):
    """``type: fact``: surrogate key lookups, orphans, measures, grain."""

    grain: Columns | None = Field(default=None, description="Columns no two rows share.")
    dimensions: list[DimensionLookup] = Field(default_factory=list)
    orphan_handling: Literal["unknown", "reject", "quarantine"] = "unknown"
    quarantine: QuarantineParams | None = None
    measures: list[str | dict[str, str]] = Field(default_factory=list)
    deduplicate: bool = False
    keys: Columns | None = None
    audit: AuditOffParams = Field(default_factory=AuditOffParams)

    @model_validator(mode="after")
    def _consistent(self) -> FactParams:
        if self.deduplicate and not self.keys:
            raise ValueError("`deduplicate: true` needs `keys`: the columns of a duplicate")
        if self.orphan_handling == "quarantine" and self.quarantine is None:
            raise ValueError(
                "orphan_handling quarantine needs `quarantine: {connection: ..., path: ...}`"
            )
        for m in self.measures:
            if isinstance(m, dict) and len(m) != 1:
                raise ValueError(
                    "a measure is a column name, or one `name: expression` (or `new: old`) pair"
                )
        return self


class MergeAudit(Params):
    created_col: str | None = Field(default=None, description="Set when a row is inserted.")
    updated_col: str | None = Field(default=None, description="Set on every write of a row.")


class MergeParams(TargetParams):
    """``type: merge`` (and the ``merge`` transformer): a keyed write into ``target``."""

    keys: Columns = Field(min_length=1, description="Columns that identify a row.")
    strategy: Literal["upsert", "append_only", "delete_match"] = "upsert"
    audit_cols: MergeAudit | None = None


class AggMeasure(Params):
    name: str = Field(description="The output column.")
    expr: str = Field(description="An aggregate SQL expression, e.g. SUM(amount).")


class AggIncremental(Params):
    timestamp_column: str = Field(description="Column that tracks when rows arrived.")
    merge_strategy: Literal["replace", "sum", "min", "max"] = "replace"


class AggregationParams(Params):
    """``type: aggregation``: GROUP BY grain with measures."""

    grain: Columns = Field(min_length=1, description="The GROUP BY columns.")
    measures: list[AggMeasure] = Field(min_length=1)
    having: str | None = None
    incremental: AggIncremental | None = None
    target: str | None = Field(
        default=None, description="incremental: the table merged with (default: write:)."
    )
    audit: AuditOffParams = Field(default_factory=AuditOffParams)


class DateDimensionParams(Params):
    """``type: date_dimension``: a generated calendar."""

    start_date: Annotated[str, BeforeValidator(_as_date_text)]
    end_date: Annotated[str, BeforeValidator(_as_date_text)]
    fiscal_year_start_month: int = Field(default=1, ge=1, le=12)
    unknown_member: bool = False

    @model_validator(mode="after")
    def _dates(self) -> DateDimensionParams:
        try:
            start = _dt.date.fromisoformat(self.start_date)
            end = _dt.date.fromisoformat(self.end_date)
        except ValueError:
            raise ValueError(
                "start_date and end_date are dates written YYYY-MM-DD, e.g. 2020-01-01"
            ) from None
        if end < start:
            raise ValueError(f"end_date {end} is before start_date {start}")
        return self


PARAMS: dict[str, type[Params]] = {
    "dimension": DimensionParams,
    "fact": FactParams,
    "scd2": Scd2Params,
    "merge": MergeParams,
    "aggregation": AggregationParams,
    "date_dimension": DateDimensionParams,
}
PATTERN_TYPES = tuple(PARAMS)
assert set(PATTERN_TYPES) == set(PATTERN_NAMES), "vocabulary.PATTERN_NAMES lists the patterns"

# Odibi keys taken for compatibility and given no effect (reported by ``validate``)
NOT_APPLIED = PATTERN_PARAMS_NOT_APPLIED
