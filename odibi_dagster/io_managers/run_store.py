"""The intermediate store by run: which run's result an input reads.

Each run keeps its result of an asset at a place of its own: the engine's place for the
key ``(*asset_key, run_id)`` (pandas: ``<base>/<asset key...>/<run id>.parquet``; Spark:
the Parquet directory ``<base>/<asset key...>/<run id>/``). Two runs of one job at the
same time never read each other's results, and a re-execution reads the results of the
run it re-executes.
"""

from __future__ import annotations

from dataclasses import dataclass

import dagster as dg

from odibi_dagster.errors import OdibiRunError

# What Dagster gives as the run of an output it did not see produced: an input loaded
# from outside the run (an asset not selected in it), or a context built for a direct
# call (``dagster._core.execution.context.output.RUN_ID_PLACEHOLDER``).
NO_RUN = "__EPHEMERAL_RUN_ID"


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
    read then."""
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
        return SourceRun(run_id, "the run this one re-executes")
    try:
        instance = context.instance
    except dg.DagsterInvariantViolationError:  # a direct call: what it stored itself
        if run_id:
            return SourceRun(run_id, "a call outside a run")
        raise OdibiRunError(f"{where}: no run to load the stored result of") from None
    event = instance.get_latest_materialization_event(context.asset_key)
    if event is None:
        raise OdibiRunError(
            f"{where}: no stored result yet (it was never materialized in this Dagster "
            "instance). Materialize this upstream node first, or run the whole pipeline job."
        )
    return SourceRun(event.run_id, "its latest materialization")
