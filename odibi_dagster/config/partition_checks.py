"""Checks of ``partitions:`` and the ``${partition}`` placeholders, at load (see
odibi_dagster.partitions for what they mean at run time)."""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections.abc import Iterator
from typing import Any

from odibi_dagster.config.models import NodeConfig, PartitionsConfig, PipelineConfig
from odibi_dagster.config.yaml_source import KeyPath, SourceMap
from odibi_dagster.engines.delta_options import DELTA_WRITE_ALIASES
from odibi_dagster.errors import Problem
from odibi_dagster.partitions import (
    PARTITION_COLUMN,
    PARTITION_PARTS,
    PARTITION_REF,
    effective,
    parse_start,
    uses_partition,
)

_PREDICATE_KEYS = ("predicate", *(k for k, v in DELTA_WRITE_ALIASES.items() if v == "predicate"))


def check_partitions(pipe: PipelineConfig, ppath: KeyPath, smap: SourceMap) -> list[Problem]:
    """The pipeline's and its nodes' ``partitions:`` blocks, the placeholders the nodes
    use, partitioned writes, and what a partitioned pipeline cannot have."""
    problems: list[Problem] = []
    if pipe.partitions is not None:
        problems += _check_block(pipe.partitions, (*ppath, "partitions"), smap)
    computing: list[tuple[int, NodeConfig, PartitionsConfig | None]] = []
    for ni, node in enumerate(pipe.nodes):
        npath: KeyPath = (*ppath, "nodes", ni)
        if node.partitions is not None:
            problems += _check_block(node.partitions, (*npath, "partitions"), smap)
        parts = effective(pipe, node)
        problems += _check_placeholders(pipe, node, parts, npath, smap)
        problems += _check_write(pipe, node, parts, npath, smap)
        if not _is_read_only(node):
            computing.append((ni, node, parts))
    parts_of = {node.name: effective(pipe, node) for node in pipe.nodes}
    problems += _check_one_partitioning(pipe, computing, parts_of, ppath, smap)
    if any(parts is not None for _, _, parts in computing):
        why = (
            "a partitioned pipeline runs one partition per run, and {what} would start runs "
            "without one; run it on a `schedule:` (each tick runs the latest partition) or "
            "backfill partitions from the UI or `dagster job backfill`"
        )
        if pipe.sensors:
            problems.append(
                smap.problem((*ppath, "sensors"), why.format(what="a new-files sensor"))
            )
        if pipe.run_after:
            problems.append(smap.problem((*ppath, "run_after"), why.format(what="run_after")))
    return problems


def _is_read_only(node: NodeConfig) -> bool:
    return (
        node.read is not None
        and node.transform is None
        and node.transformer is None
        and node.pattern is None
        and node.write is None
        and not node.depends_on
    )


def _check_block(cfg: PartitionsConfig, path: KeyPath, smap: SourceMap) -> list[Problem]:
    problems: list[Problem] = []
    if cfg.type == "static":
        if not cfg.values:
            problems.append(
                smap.problem(path, "static partitions need `values:`, e.g. values: [eu, us]")
            )
        elif len(set(cfg.values)) != len(cfg.values):
            dup = next(v for v in cfg.values if cfg.values.count(v) > 1)
            problems.append(
                smap.problem((*path, "values"), f"partition value '{dup}' is listed twice")
            )
        for key in ("start", "fmt"):
            if getattr(cfg, key) is not None:
                problems.append(
                    smap.problem(
                        (*path, key),
                        f"`{key}:` applies to time-window partitions (hourly, daily, weekly, "
                        "monthly), not static ones; remove it",
                    )
                )
        if cfg.end_offset:
            problems.append(
                smap.problem(
                    (*path, "end_offset"),
                    "`end_offset:` applies to time-window partitions, not static ones; remove it",
                )
            )
        return problems
    if cfg.values is not None:
        problems.append(
            smap.problem(
                (*path, "values"),
                f"`values:` applies to static partitions; {cfg.type} partitions are time "
                "windows from `start:` on. Remove it, or use type: static",
            )
        )
    if cfg.start is None:
        problems.append(
            smap.problem(
                path,
                f"{cfg.type} partitions need `start:`, the first partition, e.g. start: 2024-01-01",
            )
        )
        return problems
    start = parse_start(cfg.start)
    if start is None:
        problems.append(
            smap.problem(
                (*path, "start"),
                f"start '{cfg.start}' is not a date; write it as YYYY-MM-DD (or 'YYYY-MM-DD "
                "HH:MM' for hourly)",
            )
        )
        return problems
    today = dt.datetime.now(zoneinfo.ZoneInfo(cfg.timezone)).replace(tzinfo=None)
    if start > today:
        problems.append(
            smap.problem(
                (*path, "start"),
                f"start {cfg.start} is after today ({today.date().isoformat()} in "
                f"{cfg.timezone}), so there is no partition to run yet; give the first "
                "partition's date, in the past",
            )
        )
    if cfg.fmt is not None:
        try:
            shown = start.strftime(cfg.fmt)
            ok = dt.datetime.strptime(shown, cfg.fmt) == start
        except ValueError:
            ok = False
        if not ok:
            problems.append(
                smap.problem(
                    (*path, "fmt"),
                    f"fmt '{cfg.fmt}' does not name each {cfg.type} partition uniquely (a "
                    "key must read back as its date); use e.g. %Y-%m-%d for daily, "
                    "%Y-%m-%dT%H for hourly",
                )
            )
    return problems


def _strings(value: Any, path: KeyPath) -> Iterator[tuple[KeyPath, str]]:
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _strings(v, (*path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _strings(v, (*path, i))


def _placeholder_places(node: NodeConfig, npath: KeyPath) -> Iterator[tuple[KeyPath, str]]:
    """Every string where a node may name its partition, with its key path."""
    for part in ("read", "write"):
        io = getattr(node, part)
        if io is not None:
            yield (*npath, part, "path"), io.path
            yield from _strings(io.options, (*npath, part, "options"))
    for step, (sub, _) in zip(node.steps(), node.step_paths(), strict=True):
        spath: KeyPath = (*npath, *sub)
        if step.sql is not None:
            yield spath, step.sql
        yield from _strings(step.params, (*spath, "params"))


def _check_placeholders(
    pipe: PipelineConfig,
    node: NodeConfig,
    parts: PartitionsConfig | None,
    npath: KeyPath,
    smap: SourceMap,
) -> list[Problem]:
    problems: list[Problem] = []
    for path, text in _placeholder_places(node, npath):
        for m in PARTITION_REF.finditer(text):
            ref, part = m.group(0), m.group(1)
            if part is not None and part not in PARTITION_PARTS:
                problems.append(
                    smap.problem(
                        path,
                        f"node '{node.name}': unknown placeholder {ref}; use ${{partition}}, "
                        "${partition.start} or ${partition.end}",
                    )
                )
            elif parts is None:
                problems.append(
                    smap.problem(
                        path,
                        f"node '{node.name}' uses {ref}, but pipeline '{pipe.pipeline}' has no "
                        "`partitions:`; add a `partitions:` block (e.g. {type: daily, start: "
                        "2024-01-01}) or remove the placeholder",
                    )
                )
            elif part is not None and parts.type == "static":
                problems.append(
                    smap.problem(
                        path,
                        f"node '{node.name}' uses {ref}, but its partitions are static values, "
                        "which have no time window; use ${partition} (the value)",
                    )
                )
    return problems


def _check_write(
    pipe: PipelineConfig,
    node: NodeConfig,
    parts: PartitionsConfig | None,
    npath: KeyPath,
    smap: SourceMap,
) -> list[Problem]:
    write = node.write
    if write is None:
        return []
    wpath: KeyPath = (*npath, "write")
    column = write.options.get(PARTITION_COLUMN)
    if column is not None:
        cpath: KeyPath = (*wpath, "options", PARTITION_COLUMN)
        if parts is None:
            return [
                smap.problem(
                    cpath,
                    f"node '{node.name}': {PARTITION_COLUMN} replaces the rows of the run's "
                    f"partition, but pipeline '{pipe.pipeline}' has no `partitions:`; add one "
                    "or remove the option",
                )
            ]
        if write.format != "delta":
            return [
                smap.problem(
                    cpath,
                    f"node '{node.name}': {PARTITION_COLUMN} needs format delta; a "
                    f"{write.format} target takes one file or folder per partition: put "
                    "${partition} in write.path instead",
                )
            ]
        if write.mode != "overwrite":
            return [
                smap.problem(
                    cpath,
                    f"node '{node.name}': {PARTITION_COLUMN} replaces a partition's rows, "
                    f"which needs mode overwrite, not '{write.mode}'",
                )
            ]
        given = [k for k in _PREDICATE_KEYS if k in write.options]
        if given:
            return [
                smap.problem(
                    (*wpath, "options", given[0]),
                    f"node '{node.name}': {given[0]} and {PARTITION_COLUMN} both say which "
                    f"rows to replace; keep one ({PARTITION_COLUMN} replaces the run's "
                    "partition)",
                )
            ]
        if not isinstance(column, str) or not column.strip():
            return [smap.problem(cpath, f"{PARTITION_COLUMN} must be a column name")]
        return []
    if parts is None or write.mode != "overwrite":
        return []
    if uses_partition(write.path) or any(k in write.options for k in _PREDICATE_KEYS):
        return []
    return [
        smap.problem(
            (*wpath, "path"),
            f"node '{node.name}' is partitioned ({parts.type}) and overwrites {write.path} "
            "whole in every run, which would delete the other partitions' data. Put "
            "${partition} in the path (one file or folder per partition), or, for delta, "
            f"add `{PARTITION_COLUMN}: <column>` under write.options to replace only the "
            "run's partition",
        )
    ]


def _check_one_partitioning(
    pipe: PipelineConfig,
    computing: list[tuple[int, NodeConfig, PartitionsConfig | None]],
    parts_of: dict[str, PartitionsConfig | None],
    ppath: KeyPath,
    smap: SourceMap,
) -> list[Problem]:
    """A run of the pipeline's job computes one partition: its partitioned nodes share
    one ``partitions:``, read inputs of the same partitions (or none), and no
    unpartitioned node reads a partitioned one."""
    problems: list[Problem] = []
    first: tuple[int, NodeConfig, PartitionsConfig] | None = None
    for ni, node, parts in computing:
        if parts is None:
            for di, dep in enumerate(node.depends_on):
                if parts_of.get(dep) is not None:
                    problems.append(
                        smap.problem(
                            (*ppath, "nodes", ni, "depends_on", di),
                            f"node '{node.name}' has no partitions but depends on node "
                            f"'{dep}', which is partitioned; give it the same `partitions:`",
                        )
                    )
            continue
        for di, dep in enumerate(node.depends_on):
            theirs = parts_of.get(dep)
            if theirs is not None and theirs != parts:
                problems.append(
                    smap.problem(
                        (*ppath, "nodes", ni, "depends_on", di),
                        f"node '{node.name}' depends on node '{dep}', which has other "
                        "partitions; a run reads its inputs' partition of the same key, so "
                        "give both the same `partitions:`",
                    )
                )
        if first is None:
            first = (ni, node, parts)
        elif parts != first[2]:
            file, line = smap.locate((*ppath, "nodes", first[0], "name"))
            problems.append(
                smap.problem(
                    (*ppath, "nodes", ni, "partitions"),
                    f"node '{node.name}' has other partitions than node '{first[1].name}' "
                    f"({file}:{line}); one run of pipeline '{pipe.pipeline}' computes one "
                    "partition, so its nodes share one `partitions:` (move this node into a "
                    "pipeline of its own)",
                )
            )
    return problems
