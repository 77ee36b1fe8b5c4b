"""The intermediate store by run: which run's result an input reads, and which results
of other runs can go.

Each run keeps its result of an asset at a place of its own: the engine's place for the
key ``(*asset_key, run_id)`` (pandas: ``<base>/<asset key...>/<run id>.parquet``; Spark:
the Parquet directory ``<base>/<asset key...>/<run id>/``). Two runs of one job at the
same time never read each other's results, and a re-execution reads the results of the
run it re-executes.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from datetime import datetime, timezone

import dagster as dg

from odibi_dagster.engines.base import Engine
from odibi_dagster.errors import OdibiRunError, first_line

# What Dagster gives as the run of an output it did not see produced: an input loaded
# from outside the run (an asset not selected in it), or a context built for a direct
# call (``dagster._core.execution.context.output.RUN_ID_PLACEHOLDER``).
NO_RUN = "__EPHEMERAL_RUN_ID"

# the tag Dagster gives a run of one partition
PARTITION_TAG = "dagster/partition"

# How long the results of a run that failed or was canceled are kept after it ended:
# long enough to re-execute it from failure.
KEEP_FAILED_S = 7 * 24 * 3600
# How long the results of a run the instance does not know are kept after they were
# written: the run was deleted, or belongs to another instance writing to the same
# directory (an ephemeral one, say), which may still be using them.
KEEP_UNKNOWN_S = 24 * 3600

_FINISHED = frozenset(
    {dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED}
)
# run ids asked for in one query (SQLite takes a few hundred parameters at least)
_QUERY_SIZE = 200
# Dagster's run ids; any other name in a key's folder is not a run's result (a longer
# asset key's folder, say) and is left alone
_RUN_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


@dataclass(frozen=True)
class SourceRun:
    """The run whose stored result an input reads, and why that one (for messages)."""

    run_id: str
    why: str


def source_run(context: dg.InputContext, this_run: str, where: str) -> SourceRun:
    """The run whose result of the upstream asset ``context`` loads.

    Dagster names the run that produced the upstream output: this run when the upstream
    step ran in it; on a re-execution, the earlier run that produced it when the step
    was not run again. An upstream asset that is not part of the run at all (a subset
    materialized from the UI) comes with no run: its latest materialization's run is
    read then, for a partitioned one the latest materialization of the partition read
    (a run computes one partition, so keying by run keys by partition too)."""
    upstream = context.upstream_output
    run_id: str | None = None
    if upstream is not None:
        try:
            run_id = upstream.run_id
        except dg.DagsterInvariantViolationError:  # not given to the context
            run_id = None
    if run_id and run_id != NO_RUN:
        if run_id == this_run:
            return SourceRun(run_id, "this run")
        return SourceRun(run_id, "the earlier run that produced it; this run re-executes it")
    try:
        instance = context.instance
    except dg.DagsterInvariantViolationError:  # a direct call: what it stored itself
        if run_id:
            return SourceRun(run_id, "a call outside a run")
        raise OdibiRunError(f"{where}: no run to load the stored result of") from None
    partition = _partition_read(context)
    if partition is not None:  # the latest result of that partition, not of another
        records = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=context.asset_key, asset_partitions=[partition]),
            limit=1,
        ).records
        if not records:
            raise OdibiRunError(
                f"{where}: no stored result of partition '{partition}' yet (it was never "
                "materialized in this Dagster instance). Materialize that partition of this "
                "upstream node first, or run the whole pipeline job for it."
            )
        return SourceRun(records[0].run_id, f"the latest materialization of '{partition}'")
    event = instance.get_latest_materialization_event(context.asset_key)
    if event is None:
        raise OdibiRunError(
            f"{where}: no stored result yet (it was never materialized in this Dagster "
            "instance). Materialize this upstream node first, or run the whole pipeline job."
        )
    return SourceRun(event.run_id, "its latest materialization")


def _partition_read(context: dg.InputContext) -> str | None:
    """The one partition of the upstream asset this input reads (None: not partitioned)."""
    try:
        if context.has_asset_partitions:
            return context.asset_partition_key
    except Exception:  # several partitions: not a single partition's result
        return None
    return None


def prune(
    engine: Engine,
    base: str,
    key: tuple[str, ...],
    run_id: str,
    instance: dg.DagsterInstance,
    now: float | None = None,
    partition: str | None = None,
) -> list[str]:
    """Delete the stored results of asset ``key`` that no one will read again, now that
    run ``run_id`` kept a result of it; return the runs whose results were deleted.

    A run's result goes when the run ended in SUCCESS (``run_id``'s result is the newer
    one, the asset's latest materialization; for a partitioned asset, ``partition``, only
    a run of the same partition: the others hold their partitions' latest results), ended in FAILURE or CANCELED more than
    :data:`KEEP_FAILED_S` ago (until then it can be re-executed from failure), or is not
    in the instance and was written more than :data:`KEEP_UNKNOWN_S` ago. Results of
    runs not finished are kept, and so are those of every run in the group of a run not
    finished (a re-execution of a run reads its results, or its parent's).

    The candidates are found by listing the key's folder (one listing), then one query
    of the instance for their runs (one per 200), and one for the runs not finished when
    there is anything to delete. Listing, rather than asking the instance which runs
    materialized the asset, also finds results of runs deleted from the instance (their
    events are deleted with them), of runs older than any window of recent records, and
    staged copies a dead process left behind.
    """
    now = time.time() if now is None else now
    stored = {
        name: written
        for name, written in engine.stored_intermediates(base, key).items()
        if name != run_id and _RUN_ID.match(name)
    }
    if not stored:
        return []
    names = list(stored)
    records = {
        r.dagster_run.run_id: r
        for i in range(0, len(names), _QUERY_SIZE)
        for r in instance.get_run_records(filters=dg.RunsFilter(run_ids=names[i : i + _QUERY_SIZE]))
    }
    doomed = []
    for name, written in stored.items():
        record = records.get(name)
        if record is None:
            if now - written > KEEP_UNKNOWN_S:
                doomed.append(name)
            continue
        status = record.dagster_run.status
        if status == dg.DagsterRunStatus.SUCCESS:
            if partition is None or record.dagster_run.tags.get(PARTITION_TAG) == partition:
                doomed.append(name)
        elif status in _FINISHED:
            ended = record.end_time or _epoch(record.update_timestamp)
            if now - ended > KEEP_FAILED_S:
                doomed.append(name)
    if not doomed:
        return []
    in_use = _runs_in_use(instance, run_id)
    deleted = []
    for name in doomed:
        record = records.get(name)
        group = record.dagster_run.root_run_id if record else None
        if name in in_use or (group is not None and group in in_use):
            continue
        engine.delete_intermediate(base, (*key, name))
        deleted.append(name)
    return deleted


def _epoch(moment: datetime) -> float:
    """Seconds since the epoch of a time the run storage may keep without a zone (UTC)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def _runs_in_use(instance: dg.DagsterInstance, this_run: str) -> set[str]:
    """The runs not finished (but ``this_run``), their parents and the roots of their
    groups: a run not finished may read the results of any of them."""
    statuses = [s for s in dg.DagsterRunStatus if s not in _FINISHED]
    out: set[str] = set()
    for run in instance.get_runs(filters=dg.RunsFilter(statuses=statuses)):
        if run.run_id == this_run:
            continue
        out.update(r for r in (run.run_id, run.parent_run_id, run.root_run_id) if r)
    return out


def prune_quietly(
    engine: Engine,
    base: str,
    key: tuple[str, ...],
    run_id: str,
    instance: dg.DagsterInstance,
    log: logging.Logger,
    where: str,
    partition: str | None = None,
) -> list[str]:
    """:func:`prune`, what it deleted and its errors logged: pruning never fails a node."""
    try:
        deleted = prune(engine, base, key, run_id, instance, partition=partition)
    except Exception as exc:
        log.warning(
            f"{where}: stored results of other runs were not pruned from {base} "
            f"({type(exc).__name__}: {first_line(exc)})"
        )
        return []
    if deleted:
        log.debug(f"{where}: deleted the stored results of runs {', '.join(deleted)}")
    return deleted
