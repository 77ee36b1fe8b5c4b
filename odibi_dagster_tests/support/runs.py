"""A job run in process, and every error message of a failed run."""

from __future__ import annotations

import os
from typing import Any

import dagster as dg

import odibi_dagster


def run_job(
    target: dg.Definitions | str | os.PathLike[str],
    job: str = "p",
    *,
    instance: dg.DagsterInstance | None = None,
    **kwargs: Any,
) -> dg.ExecuteInProcessResult:
    """Execute ``job`` in process; the result comes back whether the run failed or not.

    ``target`` is either Definitions already loaded, run on an ephemeral instance, or an
    Odibi project (a YAML file or a directory), loaded with ``load_definitions`` and run on
    the current instance (``DAGSTER_HOME``, which the ``dagster_home`` fixture sets), so the
    test can read the run's records back. ``instance`` replaces either default; other
    keyword arguments go to ``execute_in_process``.
    """
    if isinstance(target, dg.Definitions):
        defs = target
        if instance is None:
            instance = dg.DagsterInstance.ephemeral()
    else:
        defs = odibi_dagster.load_definitions(target)
        if instance is None:
            instance = dg.DagsterInstance.get()
    return defs.resolve_job_def(job).execute_in_process(
        instance=instance, raise_on_error=False, **kwargs
    )


def failure_text(result: dg.ExecuteInProcessResult) -> str:
    """Every error message of a run's events, causes included, and every failure's
    description (a failed asset check's, for one)."""
    out = []
    for event in result.all_events:
        data = event.event_specific_data
        err = getattr(data, "error", None)
        while err is not None:
            out.append(err.message)
            err = err.cause
        ufd = getattr(data, "user_failure_data", None)
        if ufd is not None and ufd.description:
            out.append(ufd.description)
    return "\n".join(out)
