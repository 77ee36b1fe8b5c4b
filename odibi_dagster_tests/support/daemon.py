"""A private ``dagster-daemon run`` and what a test waits on: ticks and runs, read back from
the daemon's own instance (sqlite under its DAGSTER_HOME).

Every wait polls the instance and is bounded by a timeout; a test never sleeps hoping that
something has happened. The daemon runs in its own process group (runs it launches too),
so ``stop`` leaves nothing behind, and ``kill`` stops it the hard way, as a crash would.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import dagster as dg
from dagster._core.scheduler.instigation import InstigatorType, TickStatus

T = TypeVar("T")

FINISHED = {
    dg.DagsterRunStatus.SUCCESS,
    dg.DagsterRunStatus.FAILURE,
    dg.DagsterRunStatus.CANCELED,
}


def wait_for(
    what: str, check: Callable[[], T | None], timeout: float, log: Path | None = None
) -> T:
    """``check()``'s first truthy answer, polled every 0.25 s; fails after ``timeout`` s
    saying what it waited for (and the end of the daemon's log)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            tail = ""
            if log is not None and log.exists():
                tail = "\n--- daemon log (end) ---\n" + log.read_text(errors="replace")[-4000:]
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}{tail}")
        time.sleep(0.25)


def write_workspace(project_dir: Path) -> Path:
    """A definitions.py loading ``project_dir`` and a workspace.yaml serving it."""
    (project_dir / "definitions.py").write_text(
        'import odibi_dagster\n\ndefs = odibi_dagster.load_definitions("project.yaml")\n'
    )
    workspace = project_dir / "workspace.yaml"
    workspace.write_text(
        "load_from:\n  - python_file:\n      relative_path: definitions.py\n"
        "      location_name: project\n      working_directory: .\n"
    )
    return workspace


@dataclass
class Daemon:
    """``dagster-daemon run`` over one workspace, with its own DAGSTER_HOME."""

    workspace: Path
    home: Path
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def log_path(self) -> Path:
        return self.home / f"daemon-{self.starts}.log"

    def start(self) -> Daemon:
        self.starts += 1
        exe = Path(sys.executable).parent / "dagster-daemon"
        env = {**os.environ, **self.env, "DAGSTER_HOME": str(self.home), "PYTHONUNBUFFERED": "1"}
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [str(exe), "run", "-w", str(self.workspace)],
                cwd=self.workspace.parent,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    def kill(self) -> None:
        """Stop the daemon and everything it started at once (SIGKILL), like a crash."""
        self._signal(signal.SIGKILL)

    def stop(self) -> None:
        self._signal(signal.SIGTERM)
        self._signal(signal.SIGKILL)

    def _signal(self, sig: int) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=15)
        if sig == signal.SIGKILL:
            self.proc = None

    # ------------------------------------------------------------------ reading back

    @property
    def instance(self) -> dg.DagsterInstance:
        return dg.DagsterInstance.from_config(str(self.home))

    def ticks(self, instigator: str) -> list[Any]:
        """The ticks of a sensor or schedule, oldest first."""
        instance = self.instance
        for kind in (InstigatorType.SENSOR, InstigatorType.SCHEDULE):
            for state in instance.all_instigator_state(instigator_type=kind):
                if state.instigator_name == instigator:
                    ticks = instance.get_ticks(state.instigator_origin_id, state.selector_id)
                    return sorted(ticks, key=lambda t: t.timestamp)
        return []

    def wait_for_ticks(self, instigator: str, count: int, after: float, timeout: float) -> None:
        """Until ``count`` ticks of ``instigator`` finished after time ``after``."""

        def done() -> bool:
            finished = [
                t
                for t in self.ticks(instigator)
                if t.timestamp > after and t.status != TickStatus.STARTED
            ]
            return len(finished) >= count

        wait_for(f"{count} ticks of {instigator}", done, timeout, self.log_path)

    def runs(self, job: str, tags: dict[str, str] | None = None) -> list[dg.DagsterRun]:
        """The runs of ``job``, oldest first."""
        records = self.instance.get_run_records(dg.RunsFilter(job_name=job, tags=tags or {}))
        return [r.dagster_run for r in sorted(records, key=lambda r: r.create_timestamp)]

    def wait_for_runs(
        self, job: str, count: int, timeout: float, finished: bool = True
    ) -> Sequence[dg.DagsterRun]:
        """Until ``job`` has ``count`` runs (all finished, unless ``finished`` is False)."""

        def enough() -> Sequence[dg.DagsterRun] | None:
            runs = self.runs(job)
            if len(runs) < count:
                return None
            if finished and any(r.status not in FINISHED for r in runs):
                return None
            return runs

        return wait_for(f"{count} finished run(s) of {job}", enough, timeout, self.log_path)
