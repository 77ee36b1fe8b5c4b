"""Partitions: a pipeline's (or a node's) ``partitions:`` as a Dagster partitions
definition, and the ``${partition}`` placeholders filled in where a run executes.

One run computes one partition. Its key, and for time windows the window's bounds, fill
these placeholders in ``read:`` and ``write:`` (path and options), in SQL steps and in
function parameters:

- ``${partition}``: the partition key (``2024-01-05`` for daily; a static value);
- ``${partition.start}`` / ``${partition.end}``: the time window, start included and end
  excluded, in the partitions' time zone: ``YYYY-MM-DD`` for daily, weekly and monthly,
  ``YYYY-MM-DDTHH:MM:SS`` for hourly.

Environment references (``${VAR}``) are filled in at load; these are not (see
``env_refs.ENV_REF``), and a node with no partitions may not use them (config.semantics).

A Delta write with ``write.options.partition_column: <col>`` replaces just the run's
partition: the write becomes an overwrite with the predicate ``<col> >= '<start>' AND
<col> < '<end>'`` (time windows) or ``<col> = '<key>'`` (static), which both engines
apply (delta-rs ``predicate``, Spark ``replaceWhere``).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import dagster as dg

from odibi_dagster.config.models import NodeConfig, PartitionsConfig, PipelineConfig
from odibi_dagster.errors import OdibiRunError

# ${partition}, ${partition.start}, ${partition.end} (and, to be refused at load, any
# other ${partition.<word>})
PARTITION_REF = re.compile(r"\$\{partition(?:\.([A-Za-z_][A-Za-z0-9_]*))?\}")
PARTITION_PARTS = ("start", "end")
# the write option naming the column a partitioned Delta write replaces rows by
PARTITION_COLUMN = "partition_column"

T = TypeVar("T")
_TIME_DEFS: dict[str, Any] = {
    "hourly": dg.HourlyPartitionsDefinition,
    "daily": dg.DailyPartitionsDefinition,
    "weekly": dg.WeeklyPartitionsDefinition,
    "monthly": dg.MonthlyPartitionsDefinition,
}
_START_FORMATS = ("%Y-%m-%d", "%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M:%S")


def parse_start(text: str) -> dt.datetime | None:
    """``start:`` as a (naive) datetime, or None when it is not a date we read."""
    for fmt in _START_FORMATS:
        try:
            return dt.datetime.strptime(text.strip(), fmt)
        except ValueError:
            continue
    return None


def effective(pipe: PipelineConfig, node: NodeConfig) -> PartitionsConfig | None:
    """The partitions a node has: its own ``partitions:``, else its pipeline's."""
    return node.partitions if node.partitions is not None else pipe.partitions


def partitions_definition(cfg: PartitionsConfig | None) -> dg.PartitionsDefinition | None:
    """The Dagster partitions definition of a valid ``partitions:`` block."""
    if cfg is None:
        return None
    if cfg.type == "static":
        return dg.StaticPartitionsDefinition(list(cfg.values or []))
    start = parse_start(cfg.start or "")
    assert start is not None, "checked at load"
    kwargs: dict[str, Any] = {"start_date": start, "timezone": cfg.timezone}
    if cfg.end_offset:
        kwargs["end_offset"] = cfg.end_offset
    if cfg.fmt:
        kwargs["fmt"] = cfg.fmt
    definition: dg.PartitionsDefinition = _TIME_DEFS[cfg.type](**kwargs)
    return definition


# --------------------------------------------------------------------------- placeholders


@dataclass(frozen=True)
class Partition:
    """The partition a run computes: its key, and its time window (None: static)."""

    key: str
    start: str | None = None
    end: str | None = None

    def value(self, part: str | None, where: str) -> str:
        if part is None:
            return self.key
        if self.start is None or self.end is None:
            raise OdibiRunError(
                f"{where}: ${{partition.{part}}} needs time-window partitions; partition "
                f"'{self.key}' has no time window"
            )
        return self.start if part == "start" else self.end

    @property
    def label(self) -> str:
        """How stories and metadata name it."""
        return self.key

    def predicate(self, column: str) -> str:
        """The rows of this partition in a table, as a SQL predicate on ``column``."""
        if self.start is not None and self.end is not None:
            return f"{column} >= '{self.start}' AND {column} < '{self.end}'"
        return f"{column} = '{_sql_text(self.key)}'"


def _sql_text(value: str) -> str:
    return value.replace("'", "''")


def _window_text(moment: dt.datetime, hourly: bool) -> str:
    naive = moment.replace(tzinfo=None)
    return naive.isoformat(timespec="seconds") if hourly else naive.date().isoformat()


def partition_of(
    key: str, window: dg.TimeWindow | None, definition: dg.PartitionsDefinition | None
) -> Partition:
    """A :class:`Partition` from a key and its time window (if any)."""
    if window is None:
        return Partition(key)
    hourly = isinstance(definition, dg.TimeWindowPartitionsDefinition) and (
        definition.cron_schedule.split()[1] == "*"
    )
    return Partition(key, _window_text(window.start, hourly), _window_text(window.end, hourly))


def step_partition(context: Any) -> Partition | None:
    """The partition an asset's step computes (None: the run has no partition)."""
    if not getattr(context, "has_partition_key", False):
        return None
    key = context.partition_key
    definition = _definition_of(context)
    window = None
    if isinstance(definition, dg.TimeWindowPartitionsDefinition):
        window = definition.time_window_for_partition_key(key)
    return partition_of(key, window, definition)


def _definition_of(context: Any) -> dg.PartitionsDefinition | None:
    try:
        definition: dg.PartitionsDefinition | None = context.assets_def.partitions_def
        return definition
    except Exception:
        return None


def io_partition(context: dg.InputContext | dg.OutputContext) -> Partition | None:
    """The partition of the asset an IO manager call serves (an input: the upstream
    asset's partition this run reads; None: not partitioned). An input of a step without
    partitions of its own (the checks on a partitioned source), which Dagster gives every
    partition, reads the run's partition."""
    key: str | None
    definition: dg.PartitionsDefinition | None
    try:
        if context.has_asset_partitions and _one_partition(context):
            key = context.asset_partition_key
            definition = context.asset_partitions_def
        else:
            key, definition = _run_partition(context)
    except Exception:  # no run around the call (a direct call)
        return None
    if key is None or definition is None:
        return None
    window = None
    if isinstance(definition, dg.TimeWindowPartitionsDefinition):
        window = definition.time_window_for_partition_key(key)
    return partition_of(key, window, definition)


def _one_partition(context: dg.InputContext | dg.OutputContext) -> bool:
    try:
        return len(context.asset_partition_keys) == 1
    except Exception:
        return False


def _run_partition(
    context: dg.InputContext | dg.OutputContext,
) -> tuple[str | None, dg.PartitionsDefinition | None]:
    """The run's partition, when the asset served has partitions that hold it."""
    step = context.step_context
    if not context.has_asset_key or not step.has_partition_key:
        return None, None
    key = step.partition_key
    graph = step.job_def.asset_layer.asset_graph
    if not graph.has(context.asset_key):
        return None, None
    definition = graph.get(context.asset_key).partitions_def
    if definition is None or not definition.has_partition_key(key):
        return None, None
    return key, definition


def uses_partition(value: Any) -> bool:
    """Whether a value (string, dict, list) holds a ``${partition...}`` placeholder."""
    if isinstance(value, str):
        return PARTITION_REF.search(value) is not None
    if isinstance(value, Mapping):
        return any(uses_partition(v) for v in value.values())
    if isinstance(value, list | tuple):
        return any(uses_partition(v) for v in value)
    return False


def fill(value: T, partition: Partition | None, where: str) -> T:
    """``value`` with its ``${partition...}`` placeholders filled in for ``partition``."""
    if isinstance(value, dict):
        return cast(T, {k: fill(v, partition, where) for k, v in value.items()})
    if isinstance(value, list):
        return cast(T, [fill(v, partition, where) for v in value])
    if not isinstance(value, str) or not PARTITION_REF.search(value):
        return value
    if partition is None:
        raise OdibiRunError(
            f"{where}: '{value}' names the partition, but this run computes none; launch it "
            "for a partition (e.g. `dagster job execute ... --partition <key>`)"
        )
    return cast(T, PARTITION_REF.sub(lambda m: partition.value(m.group(1), where), value))


def partitioned_write(
    write: dict[str, Any] | None, partition: Partition | None, where: str
) -> dict[str, Any] | None:
    """A node's ``write:`` for this run's partition: placeholders filled in, and
    ``partition_column`` turned into the overwrite predicate of just this partition."""
    if not write:
        return write
    write = fill(write, partition, where)
    options = dict(write.get("options") or {})
    column = options.pop(PARTITION_COLUMN, None)
    if column is None:
        return write
    if partition is None:
        raise OdibiRunError(
            f"{where}: write option {PARTITION_COLUMN} replaces one partition, but this run "
            "computes none; launch it for a partition"
        )
    options["predicate"] = partition.predicate(str(column))
    return {**write, "options": options}


# --------------------------------------------------------------------------- dependencies


def dependency_mapping(
    downstream: dg.PartitionsDefinition | None, upstream: dg.PartitionsDefinition | None
) -> dg.PartitionMapping | None:
    """How a node's partitions map to those of a node it depends on (None: Dagster's
    default). Like partitions map key to key, time windows by time (a daily node over an
    hourly one: its 24 hours); any other pair of partitioned nodes (static values over a
    time window, or different static values) depends on every upstream partition."""
    if downstream is None or upstream is None or downstream == upstream:
        return None
    if isinstance(downstream, dg.TimeWindowPartitionsDefinition) and isinstance(
        upstream, dg.TimeWindowPartitionsDefinition
    ):
        return None
    return dg.AllPartitionMapping()
