"""What starts runs when nobody clicks: schedules, new-files sensors and ``run_after``.

- ``schedule:`` -> a Dagster schedule (stopped unless ``enabled: true``).
- ``sensors: - new_files:`` -> a sensor that lists the watched folder once per tick
  (through the connection's own resource), and requests one run for the files that are
  new or changed since the last tick, at most ``max_files_per_run`` of them, oldest
  first. The files go to the run in its run config (:mod:`odibi_dagster.resources.new_files`),
  so the node reading that folder reads just them, the run's tags and the node's metadata
  and story name them, and a re-execution processes the same files.
- ``run_after: [p]`` -> a sensor over Dagster's run records that starts the pipeline
  once after successful runs of ``p`` (never after a failed one).
- ``max_concurrent_runs: n`` -> all of these skip a tick while ``n`` runs of the pipeline
  are in progress; nothing they would have requested is lost (files and upstream runs
  stay unrequested until a later tick).

Why not Dagster's ``@run_status_sensor`` for ``run_after``: it consumes each run event
once, so it could neither hold a request back while the pipeline is at its
``max_concurrent_runs`` nor start one run for several upstream runs that succeeded in
the same interval. Why not automation conditions: they materialize assets through the
implicit asset job (not the pipeline's job, its executor, tags and story), asset by
asset, so an upstream run that failed half way would still start downstream work.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone

import dagster as dg
from dagster._core.storage.dagster_run import IN_PROGRESS_RUN_STATUSES

from odibi_dagster.config.models import PipelineConfig, SensorConfig
from odibi_dagster.config.semantics import sensor_name
from odibi_dagster.errors import first_line, redact
from odibi_dagster.resources.connection import ConnectionResource, StoredFile
from odibi_dagster.resources.new_files import NEW_FILES_KEY

__all__ = [
    "RUN_AFTER_INTERVAL",
    "SETTLE_SECONDS",
    "FileCursor",
    "new_files_sensor",
    "pick_new_files",
    "pipeline_schedule",
    "run_after_sensor",
    "run_after_sensor_name",
]

# Files that changed within this many seconds of the newest file processed are compared
# by version (a file may appear in a listing after a newer one: same-second timestamps,
# a listing that pages while files land); older ones are known to be processed.
SETTLE_SECONDS = 60.0
RUN_AFTER_INTERVAL = 10
# a run's tags name its files up to this length; its run config lists them all
_TAG_CHARS = 240


def _status(enabled: bool) -> dg.DefaultSensorStatus:
    return dg.DefaultSensorStatus.RUNNING if enabled else dg.DefaultSensorStatus.STOPPED


def busy(instance: dg.DagsterInstance, pipe: PipelineConfig) -> str | None:
    """Why no run of ``pipe`` may start now (its ``max_concurrent_runs`` are in
    progress), or None."""
    limit = pipe.max_concurrent_runs
    if limit is None:
        return None
    running = instance.get_runs_count(
        dg.RunsFilter(job_name=pipe.pipeline, statuses=IN_PROGRESS_RUN_STATUSES)
    )
    if running < limit:
        return None
    return f"{running} run(s) of {pipe.pipeline} in progress (max_concurrent_runs: {limit})"


# --------------------------------------------------------------------------- schedules


def pipeline_schedule(
    pipe: PipelineConfig, partitions_def: dg.PartitionsDefinition | None = None
) -> dg.ScheduleDefinition:
    """The pipeline's ``schedule:``, stopped unless ``enabled: true``. A tick of a
    partitioned pipeline runs its latest partition (time windows: the last complete one
    at the tick's time) or, for static partitions, each of its values."""
    s = pipe.schedule
    assert s is not None
    name = f"{pipe.pipeline}_schedule"
    description = f"Runs pipeline {pipe.pipeline} on '{s.cron}' ({s.timezone})."
    status = dg.DefaultScheduleStatus.RUNNING if s.enabled else dg.DefaultScheduleStatus.STOPPED
    if pipe.max_concurrent_runs is None and partitions_def is None:
        return dg.ScheduleDefinition(
            name=name,
            cron_schedule=s.cron,
            execution_timezone=s.timezone,
            job_name=pipe.pipeline,
            description=description,
            default_status=status,
        )
    if pipe.max_concurrent_runs is not None:
        description += f" Skips a tick while {pipe.max_concurrent_runs} run(s) are in progress."
    if isinstance(partitions_def, dg.TimeWindowPartitionsDefinition):
        description += " Each tick runs the latest partition."
    elif partitions_def is not None:
        description += " Each tick runs every partition."

    @dg.schedule(
        name=name,
        cron_schedule=s.cron,
        execution_timezone=s.timezone,
        job_name=pipe.pipeline,
        description=description,
        default_status=status,
    )
    def _schedule(
        context: dg.ScheduleEvaluationContext,
    ) -> dg.RunRequest | list[dg.RunRequest] | dg.SkipReason:
        why = busy(context.instance, pipe)
        if why:
            return dg.SkipReason(f"not started: {why}; the next tick starts it")
        if partitions_def is None:
            return dg.RunRequest()
        return scheduled_partitions(partitions_def, context.scheduled_execution_time)

    return _schedule


def scheduled_partitions(
    partitions_def: dg.PartitionsDefinition, at: datetime | None
) -> list[dg.RunRequest] | dg.SkipReason:
    """The runs a schedule's tick at ``at`` starts on a partitioned pipeline."""
    if isinstance(partitions_def, dg.TimeWindowPartitionsDefinition):
        with dg.partition_loading_context(effective_dt=at):
            key = partitions_def.get_last_partition_key()
        if key is None:
            return dg.SkipReason("no partition has ended yet (see the partitions' start)")
        return [dg.RunRequest(run_key=key, partition_key=key)]
    keys = partitions_def.get_partition_keys()
    stamp = at.isoformat() if at is not None else ""
    return [dg.RunRequest(run_key=f"{stamp}:{k}", partition_key=k) for k in keys]


# --------------------------------------------------------------------------- new files


@dataclass
class FileCursor:
    """What a new-files sensor has requested: the newest change time among the files it
    requested (``mark``), and the version of each requested file that changed within
    :data:`SETTLE_SECONDS` of it (older files are all known)."""

    mark: float | None = None
    seen: dict[str, tuple[str, float]] = field(default_factory=dict)

    def encode(self) -> str:
        """Compact text for Dagster's cursor (compressed: a burst of files that land in
        the same second all stay in ``seen`` until newer files come)."""
        raw = json.dumps(
            {"v": 1, "mark": self.mark, "seen": [[p, v, t] for p, (v, t) in self.seen.items()]},
            separators=(",", ":"),
        ).encode()
        return "z:" + base64.b64encode(zlib.compress(raw, 6)).decode()

    @classmethod
    def decode(cls, text: str | None) -> FileCursor | None:
        if not text:
            return None
        raw = zlib.decompress(base64.b64decode(text[2:])) if text.startswith("z:") else text
        data = json.loads(raw)
        return cls(
            mark=data.get("mark"),
            seen={str(p): (str(v), float(t)) for p, v, t in data.get("seen", [])},
        )

    def is_new(self, f: StoredFile) -> bool:
        if self.mark is None:
            return True
        changed = f.modified or 0.0
        if changed <= self.mark - SETTLE_SECONDS:
            return False
        known = self.seen.get(f.path)
        return known is None or known[0] != f.version

    def after(self, files: Iterable[StoredFile]) -> FileCursor:
        """This cursor once ``files`` are requested too."""
        files = list(files)
        mark = max([self.mark or 0.0, *((f.modified or 0.0) for f in files)])
        seen = dict(self.seen)
        seen.update({f.path: (f.version, f.modified or 0.0) for f in files})
        return FileCursor(
            mark=mark, seen={p: vt for p, vt in seen.items() if vt[1] > mark - SETTLE_SECONDS}
        )


def pick_new_files(
    listing: Iterable[StoredFile], cursor: FileCursor | None, limit: int
) -> tuple[list[StoredFile], int, FileCursor]:
    """The files to request now (new or changed, oldest first, at most ``limit``), how
    many more wait for later ticks, and the cursor once these are requested."""
    cursor = cursor or FileCursor()
    new = sorted(
        (f for f in listing if cursor.is_new(f)), key=lambda f: (f.modified or 0.0, f.path)
    )
    batch = new[:limit]
    return batch, len(new) - len(batch), cursor.after(batch)


def batch_run_key(sensor: str, batch: Sequence[StoredFile]) -> str:
    """The same files in the same versions give the same key, so a tick evaluated again
    (after a daemon restart, say) never starts a second run for them."""
    digest = hashlib.sha256("\n".join(f"{f.path}@{f.version}" for f in batch).encode())
    return f"{sensor}:{digest.hexdigest()[:32]}"


def files_tag(paths: Sequence[str]) -> str:
    """The files of a run in one short tag value."""
    names = [p.rsplit("/", 1)[-1] for p in paths]
    text = ", ".join(names)
    if len(text) > _TAG_CHARS:
        text = text[: _TAG_CHARS - 20].rsplit(", ", 1)[0] + f", ... ({len(paths)} in all)"
    return text


def _innermost(exc: BaseException) -> str:
    """The first line of the error that started it all (Dagster wraps a resource's)."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return f"{type(exc).__name__}: {first_line(exc)}"


def new_files_sensor(
    pipe: PipelineConfig, index: int, conn: ConnectionResource
) -> dg.SensorDefinition:
    """The pipeline's ``index``-th ``sensors:`` entry. ``conn`` is the watched connection
    as compiled: each tick sets it up (secrets resolved, Key Vault answers cached for the
    process as for runs) and lists the folder once, paged."""
    cfg: SensorConfig = pipe.sensors[index]
    watch = cfg.new_files
    name = sensor_name(pipe, index)
    where = conn.uri(watch.path)

    @dg.sensor(
        name=name,
        job_name=pipe.pipeline,
        minimum_interval_seconds=cfg.interval,
        default_status=_status(cfg.enabled),
        description=f"Starts {pipe.pipeline} for new or changed files in {where} matching "
        f"'{watch.pattern}' (at most {cfg.max_files_per_run} per run), checking every "
        f"{cfg.interval} s.",
    )
    def _sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
        why = busy(context.instance, pipe)
        if why:
            return dg.SkipReason(f"waiting: {why}; new files are requested at a later tick")
        cursor = FileCursor.decode(context.cursor)
        t0 = time.perf_counter()
        try:
            # set up here, not as a required resource of the sensor: a connection that
            # cannot start (network, 403, Key Vault) is a skipped tick that says why
            with dg.build_resources({watch.connection: conn}) as built:
                resource: ConnectionResource = getattr(built, watch.connection)
                listing = list(resource.list_files(watch.path, watch.pattern))
        except Exception as exc:
            reason = redact(_innermost(exc), conn.secrets_given())
            context.log.warning(f"{name}: listing {where} failed: {reason}")
            return dg.SkipReason(
                f"could not list {conn.describe()} at '{watch.path}': {reason}. Nothing "
                "was requested; new files are requested once listing works again"
            )
        listed_s = time.perf_counter() - t0
        if cursor is None and cfg.skip_existing:
            return dg.SensorResult(
                skip_reason=f"skip_existing: the {len(listing)} file(s) already in {where} "
                "count as processed; files that arrive from now on start runs",
                cursor=FileCursor().after(listing).encode(),
            )
        batch, waiting, after = pick_new_files(listing, cursor, cfg.max_files_per_run)
        if not batch:
            return dg.SkipReason(
                f"no new or changed files in {where} ({len(listing)} listed in {listed_s:.2f} s)"
            )
        paths = [f.path for f in batch]
        context.log.info(
            f"{name}: {len(batch)} new or changed file(s) in {where}"
            + (f"; {waiting} more wait for later ticks" if waiting else "")
        )
        request = dg.RunRequest(
            run_key=batch_run_key(name, batch),
            run_config={
                "resources": {
                    NEW_FILES_KEY: {
                        "config": {
                            "connection": watch.connection,
                            "path": watch.path,
                            "files": paths,
                        }
                    }
                }
            },
            tags={
                "odibi/sensor": name,
                "odibi/files": files_tag(paths),
                "odibi/file_count": str(len(paths)),
            },
        )
        return dg.SensorResult(run_requests=[request], cursor=after.encode())

    return _sensor


# --------------------------------------------------------------------------- run_after


def run_after_sensor_name(pipe: PipelineConfig) -> str:
    return f"{pipe.pipeline}_run_after_sensor"


@dataclass
class _AfterCursor:
    after: float  # upstream runs that ended before this (minus the settle time) are known
    ids: dict[str, float]  # ... and these (run id -> end time), which ended after that

    def encode(self) -> str:
        return json.dumps({"after": self.after, "ids": self.ids}, separators=(",", ":"))

    @classmethod
    def decode(cls, text: str | None) -> _AfterCursor | None:
        if not text:
            return None
        data = json.loads(text)
        ids = {str(k): float(v) for k, v in (data.get("ids") or {}).items()}
        return cls(float(data["after"]), ids)


def _succeeded_since(
    instance: dg.DagsterInstance, jobs: Sequence[str], cursor: _AfterCursor
) -> list[dg.RunRecord]:
    since = datetime.fromtimestamp(cursor.after - SETTLE_SECONDS, tz=timezone.utc)
    known = set(cursor.ids)
    found = []
    for job in jobs:
        records = instance.get_run_records(
            filters=dg.RunsFilter(
                job_name=job, statuses=[dg.DagsterRunStatus.SUCCESS], updated_after=since
            ),
            limit=1000,
        )
        found += [
            r
            for r in records
            if r.dagster_run.run_id not in known
            and (r.end_time or 0.0) > cursor.after - SETTLE_SECONDS
        ]
    return sorted(found, key=lambda r: (r.end_time or 0.0, r.dagster_run.run_id))


def run_after_sensor(pipe: PipelineConfig) -> dg.SensorDefinition:
    """Start ``pipe`` once after successful runs of the pipelines in its ``run_after``."""
    ups = list(dict.fromkeys(pipe.run_after))
    name = run_after_sensor_name(pipe)

    @dg.sensor(
        name=name,
        job_name=pipe.pipeline,
        minimum_interval_seconds=RUN_AFTER_INTERVAL,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Starts {pipe.pipeline} once after successful runs of "
        f"{', '.join(ups)} (never after a failed one).",
    )
    def _sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
        cursor = _AfterCursor.decode(context.cursor)
        if cursor is None:  # the first tick: upstream runs from now on count
            return dg.SensorResult(
                skip_reason=f"watching runs of {', '.join(ups)} that succeed from now on",
                cursor=_AfterCursor(time.time(), {}).encode(),
            )
        new = _succeeded_since(context.instance, ups, cursor)
        if not new:
            return dg.SkipReason(f"no new successful run of {', '.join(ups)}")
        why = busy(context.instance, pipe)
        if why:
            return dg.SkipReason(
                f"waiting: {why}; {len(new)} successful upstream run(s) are taken at a later tick"
            )
        after = max([cursor.after, *((r.end_time or 0.0) for r in new)])
        ended = {**cursor.ids, **{r.dagster_run.run_id: (r.end_time or 0.0) for r in new}}
        ids = {i: t for i, t in ended.items() if t > after - SETTLE_SECONDS}
        run_ids = [r.dagster_run.run_id for r in new]
        digest = hashlib.sha256("\n".join(run_ids).encode()).hexdigest()[:32]
        request = dg.RunRequest(
            run_key=f"{name}:{digest}",
            tags={
                "odibi/run_after": ", ".join(
                    f"{r.dagster_run.job_name} {r.dagster_run.run_id[:8]}" for r in new
                )[:_TAG_CHARS]
            },
        )
        return dg.SensorResult(run_requests=[request], cursor=_AfterCursor(after, ids).encode())

    return _sensor
