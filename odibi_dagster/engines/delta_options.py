"""The Delta read and write options a node may give, and the one map of their aliases.

YAML written for Spark (``partitionBy``, ``replaceWhere``, ``mergeSchema``,
``overwriteSchema``) and for delta-rs (``partition_by``, ``predicate``, ``schema_mode``)
means the same on both engines: :func:`delta_write_options` turns either spelling into
one :class:`DeltaWrite`, which each engine renders in its own library's terms.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from odibi_dagster.engines.messages import column_list, fail, truthy

# Spark's spelling -> delta-rs's, the name used from here on
DELTA_WRITE_ALIASES = {"partitionBy": "partition_by", "replaceWhere": "predicate"}
# schema options: each sets schema_mode
SCHEMA_FLAGS = {"mergeSchema": "merge", "overwriteSchema": "overwrite"}
# options only delta-rs (the pandas engine) has
DELTA_RS_ONLY = ("target_file_size", "name", "description", "configuration")
# every write option name either engine knows
DELTA_WRITE_OPTION_NAMES = (
    *DELTA_WRITE_ALIASES.values(),
    *DELTA_WRITE_ALIASES,
    "schema_mode",
    *SCHEMA_FLAGS,
    *DELTA_RS_ONLY,
)
# read options, per engine
DELTA_READ_OPTIONS = {
    "pandas": ("versionAsOf", "timestampAsOf", "columns", "filters"),
    "spark": ("versionAsOf", "timestampAsOf", "columns"),
}


@dataclass(frozen=True)
class DeltaWrite:
    """A node's Delta write options, in one spelling."""

    partition_by: list[str] = field(default_factory=list)
    predicate: str | None = None
    schema_mode: str | None = None  # "merge" | "overwrite"
    delta_rs: dict[str, Any] = field(default_factory=dict)  # DELTA_RS_ONLY options given
    other: dict[str, Any] = field(default_factory=dict)  # anything else, as written


def delta_write_options(options: Mapping[str, Any], mode: str, where: str) -> DeltaWrite:
    """Read a node's Delta write ``options`` (either spelling) for a write in ``mode``."""
    opts: dict[str, Any] = {}
    for key, value in options.items():
        opts[DELTA_WRITE_ALIASES.get(key, key)] = value
    schema_mode = opts.pop("schema_mode", None)
    for flag, meaning in SCHEMA_FLAGS.items():
        if truthy(opts.pop(flag, False)):
            schema_mode = meaning
    if schema_mode not in (None, "merge", "overwrite"):
        fail(
            where,
            f"write option schema_mode must be 'merge' or 'overwrite', got {schema_mode!r}. "
            "Fix the value",
        )
    predicate = opts.pop("predicate", None)
    if predicate is not None and mode != "overwrite":
        fail(
            where,
            f"write option replaceWhere/predicate needs mode overwrite, not '{mode}'. "
            "Use mode overwrite or remove the option",
        )
    partition_by = opts.pop("partition_by", None)
    return DeltaWrite(
        partition_by=column_list(partition_by) if partition_by else [],
        predicate=None if predicate is None else str(predicate),
        schema_mode=schema_mode,
        delta_rs={k: opts.pop(k) for k in DELTA_RS_ONLY if k in opts},
        other=opts,
    )


def check_delta_read_options(options: Mapping[str, Any], engine: str, where: str) -> None:
    """Refuse a Delta read option ``engine`` does not know, and contradictory ones."""
    accepted = DELTA_READ_OPTIONS[engine]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        fail(
            where,
            f"read option '{unknown[0]}' is not accepted for delta on {engine}. Remove it or "
            f"use one of: {', '.join(accepted)}",
        )
    if "versionAsOf" in options and "timestampAsOf" in options:
        fail(where, "read options versionAsOf and timestampAsOf cannot both be set. Keep one")


def reshapes(fmt: str, options: Mapping[str, Any]) -> bool:
    """Whether writing with ``options`` leaves a target that differs from the data written:
    partition columns move into folder names, rows outside a predicate stay, a merged
    schema keeps the old columns."""
    keys = {DELTA_WRITE_ALIASES.get(k, k) for k in options}
    if "partition_by" in keys or (fmt == "delta" and "predicate" in keys):
        return True
    schema_mode = options.get("schema_mode")
    return schema_mode == "merge" or truthy(options.get("mergeSchema", False))
