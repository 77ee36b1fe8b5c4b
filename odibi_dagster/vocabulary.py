"""The words of the YAML format with a fixed set of values: data formats, write modes,
executors, and the kinds and events of alerts. The one place each list lives; the config models, the engines and the docs'
tests read them from here. (Engines are listed by their registry,
``odibi_dagster.engines.registry``.)"""

from __future__ import annotations

from typing import Literal, get_args

Format = Literal["csv", "parquet", "json", "delta"]
# what a read may name: a file format, or api (Odibi v3: an http connection's JSON API)
ReadFormat = Literal["csv", "parquet", "json", "delta", "api"]
WriteMode = Literal["overwrite", "append", "error", "ignore", "upsert", "append_once", "merge"]
ExecutorName = Literal["in_process", "multiprocess"]
PartitionType = Literal["hourly", "daily", "weekly", "monthly", "static"]

FORMATS: tuple[str, ...] = get_args(Format)
WRITE_MODES: tuple[str, ...] = get_args(WriteMode)
# the modes that match incoming rows to the target's by `options.keys` (Odibi v3)
KEYED_MODES: tuple[str, ...] = ("upsert", "append_once", "merge")
PARTITION_TYPES: tuple[str, ...] = get_args(PartitionType)

# Odibi v3's patterns (`pattern: {type: ...}`, or `transformer: <name>`), see odibi_dagster/patterns
PATTERN_NAMES: tuple[str, ...] = (
    "dimension",
    "fact",
    "scd2",
    "merge",
    "aggregation",
    "date_dimension",
)

AlertType = Literal["webhook", "slack", "teams"]
# The events an alert is sent on: a Dagster run status, or (Odibi v3) what a run did to
# its data: a failed quality gate, rows quarantined (see odibi_dagster/alerts.py).
AlertEvent = Literal["on_failure", "on_success", "on_start", "on_gate_block", "on_quarantine"]

ALERT_TYPES: tuple[str, ...] = get_args(AlertType)
ALERT_EVENTS: tuple[str, ...] = get_args(AlertEvent)
# Odibi's other events, and what they would need that a project here does not have.
ODIBI_EVENTS_NOT_SENT: dict[str, str] = {
    "on_threshold_breach": "thresholds",
}
