"""Keys accepted so that a project written for Odibi loads unchanged, but given no effect here.

Such a key is never dropped silently: each one found becomes a :class:`Note`, collected while
the project loads (``LoadedProject.notes``), printed by ``odibi-dagster validate`` and logged
once when definitions load. A note never fails validation.

To accept another key this way, add its key path pattern and the reason to
:data:`ACCEPTED_NOT_APPLIED` (``"*"`` stands for any mapping key or list index); the loader
then removes the key before the models see it. A key the models keep but apply only in part
records its note itself, with :func:`note_at`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from odibi_dagster.config.yaml_source import KeyPath, SourceMap, format_path
from odibi_dagster.vocabulary import PATTERN_NAMES

__all__ = [
    "ACCEPTED_NOT_APPLIED",
    "PIPELINE_KEYS",
    "Note",
    "log_notes",
    "note_at",
    "take_accepted",
]

_log = logging.getLogger("odibi_dagster.config")

_NODE = ("pipelines", "*", "nodes", "*")

# key path pattern -> why it has no effect here. Every entry is a key of Odibi v3.
ACCEPTED_NOT_APPLIED: dict[tuple[str, ...], str] = {
    ("performance",): "Odibi's engine tuning (use_arrow, spark_config, delta_table_properties, "
    "skip_null_profiling); set Spark options on the Spark resource instead",
    ("lineage",): "OpenLineage export is not sent; Dagster records asset lineage itself",
    ("connections", "*", "validation_mode"): "connections are checked when a run uses them",
    ("story", "retention_count"): "stories are kept by age (retention_days) only",
    ("story", "generate_lineage"): "Dagster shows asset lineage itself",
    ("story", "async_generation"): "a node's story is written by the step that ran it",
    ("story", "theme"): "stories have one look",
    ("story", "include_samples"): "set max_sample_rows: 0 for stories without samples",
    ("pipelines", "*", "owner"): "asset owners come from the project's owner: (an e-mail)",
    ("pipelines", "*", "freshness_sla"): "no freshness policy is set on the assets",
    ("pipelines", "*", "freshness_anchor"): "no freshness policy is set on the assets",
    ("story", "failure_sample_size"): "stories hold no failed-row samples",
    ("story", "max_failure_samples"): "stories hold no failed-row samples",
    ("story", "max_sampled_validations"): "stories hold no failed-row samples",
    (*_NODE, "enabled"): "every node is compiled into an asset; to skip one, leave it out of "
    "the run (select assets in Dagster) or remove it from the YAML",
    (*_NODE, "log_level"): "Dagster sets the log level of a run",
    (*_NODE, "privacy"): "columns are not anonymised; apply hashing or masking in a transform step",
    (*_NODE, "sensitive"): "story samples are not masked; set story max_sample_rows: 0 to "
    "write none",
    (*_NODE, "schema_policy"): "schema drift is not handled; a write with new columns "
    "follows the format's own rules",
    (*_NODE, "pre_sql"): "SQL hooks are not run",
    (*_NODE, "post_sql"): "SQL hooks are not run",
    (*_NODE, "materialized"): "every node with write: is materialized as a table/file",
    (*_NODE, "streaming"): "nodes run as batches",
    (*_NODE, "validation", "on_fail"): "a failing test fails the run, which sends the "
    "project's on_failure alerts; set alerts: to choose who hears",
    (*_NODE, "validation", "fail_fast"): "every test runs, in one pass over the result",
    (*_NODE, "validation", "cache_df"): "the result is computed once for all checks already",
    (*_NODE, "validation", "quarantine", "retention_days"): "quarantined rows are kept until "
    "deleted",
    (*_NODE, "validation", "quarantine", "max_rows"): "every failing row is quarantined (none "
    "is lost)",
    (*_NODE, "validation", "quarantine", "sample_fraction"): "every failing row is quarantined "
    "(none is lost)",
}
# Odibi's merge maintenance and registration keys, under `pattern.params` (and under the
# `params:` of a `transformer:` naming a pattern)
PATTERN_PARAMS_NOT_APPLIED: dict[str, str] = {
    "optimize_write": "Delta maintenance is not run after the merge",
    "zorder_by": "Delta maintenance is not run after the merge",
    "vacuum_hours": "Delta maintenance is not run after the merge",
    "cluster_by": "the target is created as a plain Delta table",
    "register_table": "tables are not registered in a metastore",
}
ACCEPTED_NOT_APPLIED.update(
    {(*_NODE, "pattern", "params", k): why for k, why in PATTERN_PARAMS_NOT_APPLIED.items()}
)


@dataclass(frozen=True)
class Note:
    """A key accepted for compatibility with Odibi but not applied here, and why."""

    file: str
    line: int | None
    key: str
    why: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: accepted, not applied: {self.key}: {self.why}"


def note_at(smap: SourceMap, path: KeyPath, why: str) -> Note:
    """The note for the key at ``path`` of the merged document."""
    file, line = smap.locate(path)
    return Note(file, line, format_path(path), why)


def take_accepted(data: Any, smap: SourceMap, notes: list[Note]) -> Any:
    """``data`` without the keys of :data:`ACCEPTED_NOT_APPLIED`; a note for each one found."""
    for pattern, why in ACCEPTED_NOT_APPLIED.items():
        data = _take(data, pattern, (), smap, why, notes)
    return _take_pattern_transformer_params(data, smap, notes)


def _take_pattern_transformer_params(data: Any, smap: SourceMap, notes: list[Note]) -> Any:
    """The same keys as under `pattern.params`, under the `params:` of a node whose
    `transformer:` names a pattern (`transformer: merge`). Other transformers' params are
    their functions' own, whatever their names."""
    if not isinstance(data, dict) or not isinstance(data.get("pipelines"), list):
        return data
    pipelines = []
    for pi, pipe in enumerate(data["pipelines"]):
        if isinstance(pipe, dict) and isinstance(pipe.get("nodes"), list):
            nodes = []
            for ni, node in enumerate(pipe["nodes"]):
                if isinstance(node, dict) and node.get("transformer") in PATTERN_NAMES:
                    for key, why in PATTERN_PARAMS_NOT_APPLIED.items():
                        path = ("pipelines", pi, "nodes", ni)
                        node = _take(node, ("params", key), path, smap, why, notes)
                nodes.append(node)
            pipe = {**pipe, "nodes": nodes}
        pipelines.append(pipe)
    return {**data, "pipelines": pipelines}


def _take(
    data: Any,
    pattern: tuple[str, ...],
    path: KeyPath,
    smap: SourceMap,
    why: str,
    notes: list[Note],
) -> Any:
    head, rest = pattern[0], pattern[1:]
    if isinstance(data, dict):
        keys = list(data) if head == "*" else [head] if head in data else []
        if not rest:
            for k in keys:
                notes.append(note_at(smap, (*path, k), why))
            return {k: v for k, v in data.items() if k not in keys} if keys else data
        out = dict(data)
        for k in keys:
            out[k] = _take(data[k], rest, (*path, k), smap, why, notes)
        return out
    if isinstance(data, list) and head == "*" and rest:
        return [_take(v, rest, (*path, i), smap, why, notes) for i, v in enumerate(data)]
    return data


# Keys of a pipeline (not of the project) among the patterns above: a pipeline file may
# hold them at its top.
PIPELINE_KEYS = frozenset(
    p[2] for p in ACCEPTED_NOT_APPLIED if p[:2] == ("pipelines", "*") and p[2] != "nodes"
)

_logged: set[Note] = set()


def log_notes(notes: Iterable[Note]) -> None:
    """Log each note at INFO, once per process (definitions may be loaded many times)."""
    for n in notes:
        if n not in _logged:
            _logged.add(n)
            _log.info("%s", n)
