"""What one node's asset does when it runs: read, transform, validate, hand over the result.

The compile layer builds one ``NodeRunner`` per node and wraps it in a Dagster asset;
writing the result is the IO manager's job. Everything engine-specific goes through the
:class:`~odibi_dagster.engines.base.Engine` the node's ``engine:`` names.
"""

from __future__ import annotations

import time
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from typing import Any

import dagster as dg

from odibi_dagster import checks, incremental, quality
from odibi_dagster.api_read import last_fetch, shown_url
from odibi_dagster.column_lineage import ColumnPlan
from odibi_dagster.config.models import NodeConfig
from odibi_dagster.engines.base import Engine, Profile
from odibi_dagster.engines.registry import ENGINES, get_engine, resources_by_key
from odibi_dagster.errors import OdibiRunError, as_failure, storage_errors
from odibi_dagster.io_managers.base import OdibiIOManager, not_run_after
from odibi_dagster.partitions import Partition, fill, step_partition
from odibi_dagster.resources.base import Location
from odibi_dagster.resources.connection import ConnectionResource
from odibi_dagster.resources.new_files import files_for, files_metadata
from odibi_dagster.simulation import read_simulation
from odibi_dagster.story import STORY_RESOURCE_KEY, NodeStory, RunStoryResource, now
from odibi_dagster.transforms import run_steps

__all__ = ["NodeRunner", "check_results", "get_engine"]


def check_results(
    engine: Engine,
    df: Any,
    node: NodeConfig,
    key: dg.AssetKey,
    stats: Profile | None = None,
    *,
    with_tests: bool = True,
) -> list[tuple[dg.AssetCheckResult, checks.CheckOutcome]]:
    """The node's ``validation:`` evaluated on ``df``, as Dagster check results."""
    assert node.validation is not None
    outcomes = checks.evaluate(engine, df, node.validation, stats)
    if with_tests:  # a source's: nothing can be taken out of it
        tests, gate = checks.v3_plan(node.validation)
        if tests or gate:
            found = quality.evaluate(engine, df, node, tests, gate, can_remove=False)
            outcomes += [
                checks.CheckOutcome(o.name, o.passed, o.description, o.metadata, o.severity)
                for o in found.outcomes
            ]
    return [(_check_result(key, outcome), outcome) for outcome in outcomes]


def _check_result(key: dg.AssetKey, outcome: checks.CheckOutcome) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        check_name=outcome.name,
        passed=outcome.passed,
        asset_key=key,
        description=outcome.description,
        metadata=outcome.metadata,
        severity=dg.AssetCheckSeverity(outcome.severity),
    )


@dataclass(frozen=True)
class NodeRunner:
    node: NodeConfig
    pipeline: str
    key: dg.AssetKey
    engine: str
    step_labels: tuple[str, ...] = ()
    # (input name, its read:) for inputs that are read-only nodes: the IO manager reads
    # them, and this node's story and metadata name the files a sensor's run read
    source_reads: tuple[tuple[str, Any], ...] = ()
    # how to tell the lineage of the result's columns from its inputs' (column_lineage.py)
    columns: ColumnPlan | None = None

    def run(self, context: Any, inputs: dict[str, Any]) -> Iterator[Any]:
        """Compute the node. Its story is saved here if the computation fails, otherwise by
        the IO manager once the result is written (so it can tell how the write went)."""
        node = self.node
        resources = resources_by_key(context.resources)
        recorder = resources.get(STORY_RESOURCE_KEY)
        if not isinstance(recorder, RunStoryResource):
            recorder = None
        t0 = time.perf_counter()
        story = NodeStory(
            pipeline=self.pipeline,
            node=node.name,
            status="failed",
            started=now(),
            duration_s=0.0,
            where=node.where,
            description=node.description,
            steps=list(self.step_labels),
        )
        meta: dict[str, Any] = {}  # what incremental reads and column lineage add
        try:
            partition = step_partition(context)
            story.partition = partition.key if partition is not None else None
            current = yield from self._compute(
                context, resources, recorder, inputs, story, meta, partition
            )
        except OdibiRunError as exc:
            story.error = str(exc)
            self._save_failed(context, recorder, resources, story, t0)
            raise as_failure(exc) from None
        except dg.Failure as exc:
            story.error = exc.description
            self._save_failed(context, recorder, resources, story, t0)
            raise
        except Exception as exc:
            story.error = f"{node.where}: {type(exc).__name__}: {exc}"
            self._save_failed(context, recorder, resources, story, t0)
            raise
        story.duration_s = round(time.perf_counter() - t0, 4)
        if recorder is not None:
            recorder.hold(context.run_id, tuple(self.key.path), story)
        # recorded with the materialization, once the write succeeded: a stateful read's new
        # mark takes effect only then (see odibi_dagster.incremental)
        yield dg.Output(current, metadata={**files_metadata(story.files), **meta})

    def _compute(
        self,
        context: Any,
        resources: dict[str, Any],
        recorder: RunStoryResource | None,
        inputs: dict[str, Any],
        story: NodeStory,
        meta: dict[str, Any],
        partition: Partition | None = None,
    ) -> Generator[Any, None, Any]:
        """Read, transform and validate; yields check results, returns the result. What
        incremental reads did and the column lineage found go into ``meta``;
        ``${partition...}`` in the read, the SQL and the parameters name ``partition``."""
        node = self.node
        eng = get_engine(self.engine, resources)
        frames = {dep: inputs[dep] for dep in node.depends_on}
        story.inputs = {name: eng.cheap_row_count(df) for name, df in frames.items()}
        io_manager = resources.get(ENGINES[self.engine].io_manager_key)
        for name, _ in self.source_reads:  # read-only sources the IO manager read
            if not isinstance(io_manager, OdibiIOManager):
                continue
            took = io_manager.take_incremental(context.run_id, tuple(self.key.path), name)
            if took is not None:
                meta.update(took.metadata(name))
                story.inputs[f"{name} ({took.label()})"] = story.inputs.pop(name, None)
        for _, read in self.source_reads:
            story.files += files_for(resources, read)
        current = None
        read = node.read
        if read is not None:
            read = read.model_copy(
                update={
                    "path": fill(read.path, partition, node.where),
                    "options": fill(read.options, partition, node.where),
                }
            )
            conn = resources[read.connection]
            assert isinstance(conn, ConnectionResource)
            loc = conn.location(read.path)
            files = files_for(resources, read)
            done: incremental.IncrementalRead | None = None
            with storage_errors(node.where, "reading", loc.uri, loc.storage_options):
                if files:  # a sensor started this run for these files
                    current = eng.read_files(
                        [conn.location(f) for f in files],
                        read.format,
                        read.options,
                        where=node.where,
                    )
                elif read.incremental is not None:
                    spec = read.incremental.model_dump()
                    before = None
                    if spec["mode"] == "stateful":
                        before = incremental.previous_mark(context.instance, self.key)
                    current, done = incremental.read(
                        eng,
                        loc,
                        read.format,
                        read.options,
                        spec,
                        before,
                        where=node.where,
                    )
                else:
                    current = eng.read(loc, read.format, read.options, where=node.where)
            label = f"read {read.path}"
            if read.format == "api":  # a query value named like a secret is masked
                label = f"read {shown_url(read.path, None, [])}"
            if done is not None:
                meta.update(done.metadata())
                label += f" ({done.label()})"
            fetched = last_fetch() if read.format == "api" else None
            if fetched is not None:  # Odibi v3 format: api: pages and requests
                meta.update(fetched.metadata())
                label += f" ({fetched.label()})"
            story.inputs[label] = eng.cheap_row_count(current)
            story.files += files
        elif node.simulation is not None:
            current, sim_meta, label = read_simulation(
                eng, node.simulation, where=node.where, instance=context.instance, key=self.key
            )
            meta.update(sim_meta)
            story.inputs[label] = eng.cheap_row_count(current)
        read_columns = [c for c, _ in eng.column_schema(current)] if current is not None else None
        step_columns: list[list[str]] = []  # each step's columns, for column lineage
        if node.pattern_transformer is not None:  # Odibi v3: `transformer: scd2` and the like
            from odibi_dagster.patterns import run_pattern

            if current is None and node.depends_on:
                current = frames[node.depends_on[0]]
            current, done_meta = run_pattern(
                eng,
                node,
                resources,
                frames,
                current,
                node.pattern_transformer,
                fill(node.params, partition, node.where),
            )
            meta.update(done_meta)
            story.steps.append(f"transformer {node.pattern_transformer}")
        node_steps = node.steps()  # `transformer:` (Odibi v3) first, then transform.steps
        if node_steps:
            steps = [
                step.model_copy(
                    update={
                        "sql": fill(step.sql, partition, node.where),
                        "params": fill(step.params, partition, node.where),
                    }
                )
                for step in node_steps
            ]
            current = run_steps(
                eng,
                steps,
                frames,
                current,
                node=node.name,
                where=node.where,
                on_step=(
                    (lambda _, df: step_columns.append([c for c, _ in eng.column_schema(df)]))
                    if self.columns is not None
                    else None
                ),
            )
        elif current is None and node.depends_on:
            current = frames[node.depends_on[0]]
        if node.pattern is not None:  # Odibi v3: the pattern builds the node's table
            from odibi_dagster.patterns import run_pattern

            pattern = node.pattern.model_copy(
                update={"params": fill(node.pattern.params, partition, node.where)}
            )
            current, done_meta = run_pattern(
                eng, node, resources, frames, current, pattern.type, pattern.params
            )
            meta.update(done_meta)
            story.steps.append(f"pattern {pattern.type}")
        story.rows = eng.cheap_row_count(current)
        story.columns = eng.column_schema(current)
        if self.columns is not None:
            meta.update(
                self._column_lineage(
                    context, eng, frames, read_columns, step_columns, story.columns
                )
            )
        samples = recorder.max_sample_rows if recorder is not None else 0
        if story.rows is not None and samples:  # in memory: the story's sample costs nothing
            story.sample = eng.head(current, samples)
        if node.validation is None:
            return current
        current, stats, staged, io_manager = self._materialize(context, resources, eng, current)
        try:
            story.rows = stats.rows
            if staged is not None and samples:
                story.sample = eng.head(current, samples, written_at=staged, fmt="parquet")
            failed = []
            results = check_results(eng, current, node, self.key, stats, with_tests=False)
            tests, gate = checks.v3_plan(node.validation)
            found = None
            if tests or gate:
                found = quality.evaluate(
                    eng, current, node, tests, gate, history=self._row_counts(context, partition)
                )
                results += [
                    (_check_result(self.key, c), c)
                    for c in (
                        checks.CheckOutcome(o.name, o.passed, o.description, o.metadata, o.severity)
                        for o in found.outcomes
                    )
                ]
            for result, outcome in results:
                story.checks.append(
                    {
                        "name": outcome.name,
                        "passed": outcome.passed,
                        "description": outcome.description,
                    }
                )
                yield result
                if outcome.passed:
                    continue
                if outcome.severity == "ERROR":
                    failed.append(f"{outcome.name}: {outcome.description}")
                else:
                    context.log.warning(f"{node.where}: {outcome.name}: {outcome.description}")
            if failed:
                raise dg.Failure(
                    description=f"{node.where}: validation failed, nothing was written: "
                    + "; ".join(failed),
                    allow_retries=False,
                )
            if found is not None:
                current, stats, staged = self._set_aside(
                    context, resources, eng, current, stats, staged, found, meta
                )
                story.rows = stats.rows
        except BaseException:
            if staged is not None:  # nothing of a failed node is kept
                eng.drop_intermediate(staged)
            raise
        if staged is not None and io_manager is not None:
            io_manager.hold_materialized(context.run_id, tuple(self.key.path), staged, stats.rows)
        return current

    def _set_aside(
        self,
        context: Any,
        resources: dict[str, Any],
        eng: Engine,
        current: Any,
        stats: Profile,
        staged: Location | None,
        found: quality.QualityResult,
        meta: dict[str, Any],
    ) -> tuple[Any, Profile, Location | None]:
        """Take out the rows quarantine tests (or a write_valid_only gate) reject: append
        them to the quarantine first, then go on with the others (Spark: staged again, then
        the first staged copy dropped). Returns the result, its profile and where it is staged."""
        node = self.node
        assert node.validation is not None
        q = node.validation.quarantine
        meta.update(found.metadata)
        if q is not None:
            meta[quality.ROWS_QUARANTINED] = 0
        if found.keep is None:
            return current, stats, staged
        keep, reject = quality.split(eng, current, found, context.run_id, node.where)
        if q is not None:
            meta[quality.QUARANTINE_PATH] = quality.write_quarantine(
                eng, resources, q, reject, node.where
            )
            meta[quality.ROWS_QUARANTINED] = found.removed_rows
            context.log.warning(
                f"{node.where}: {found.removed_rows} of {found.total_rows} rows quarantined "
                f"to {meta[quality.QUARANTINE_PATH]}"
            )
        else:
            context.log.warning(
                f"{node.where}: the gate (write_valid_only) left out {found.removed_rows} of "
                f"{found.total_rows} rows; set validation.quarantine to keep them"
            )
        # the rows kept are read from the first staged copy: it is dropped once they are
        # staged in turn (if that fails, the caller drops it)
        current, stats, kept, _ = self._materialize(context, resources, eng, keep)
        if staged is not None:
            eng.drop_intermediate(staged)
        return current, stats, kept

    def _row_counts(self, context: Any, partition: Partition | None) -> Any:
        """What tells the row counts of this asset's materializations (of the same
        partition) since a time (epoch seconds), newest first: the history volume_drop and
        the gate's change_threshold compare with."""
        key = self.key
        parts = [partition.key] if partition is not None else None

        def counts(since: float) -> list[int]:
            try:
                records = context.instance.fetch_materializations(
                    dg.AssetRecordsFilter(
                        asset_key=key, asset_partitions=parts, after_timestamp=since or None
                    ),
                    limit=100,
                ).records
            except Exception:
                return []
            out = []
            for r in records:
                m = r.asset_materialization
                v = m.metadata.get("dagster/row_count") if m is not None else None
                if v is not None and isinstance(v.value, int):
                    out.append(v.value)
            return out

        return counts

    def _column_lineage(
        self,
        context: Any,
        eng: Engine,
        frames: dict[str, Any],
        read_columns: list[str] | None,
        step_columns: list[list[str]],
        output: list[tuple[str, str]],
    ) -> dict[str, Any]:
        """``dagster/column_lineage`` from the columns the node actually saw. Never fails
        the node: lineage it cannot tell is left out, with a warning for a SQL step."""
        assert self.columns is not None
        try:
            found, warning = self.columns.metadata(
                {n: [c for c, _ in eng.column_schema(df)] for n, df in frames.items()},
                read_columns,
                [c for c, _ in output],
                step_columns,
            )
        except Exception as exc:
            found, warning = {}, f"{self.node.where}: column lineage left out: {exc}"
        if warning:
            context.log.warning(warning)
        return found

    def _materialize(
        self, context: Any, resources: dict[str, Any], eng: Engine, current: Any
    ) -> tuple[Any, Profile, Location | None, OdibiIOManager | None]:
        """The result computed once for the checks and everything after them (Spark:
        staged in the intermediate store while the same job counts its rows and nulls),
        its profile, where it was staged, and the IO manager of this step, which keeps
        the staged copy only once the node's write has succeeded."""
        assert self.node.validation is not None
        names = [name for name, _ in eng.column_schema(current)]
        counted = checks.counted_columns(self.node.validation, names)
        io_manager = resources.get(ENGINES[self.engine].io_manager_key)
        if not isinstance(io_manager, OdibiIOManager):  # a user's own IO manager
            return current, eng.profile(current, counted), None, None
        base = io_manager.intermediate_base(lambda: context.instance, eng)
        # staged at this run's place, as the IO manager keeps it (see io_managers.run_store)
        current, stats, staged = eng.materialize(
            current, base, (*self.key.path, context.run_id), counted, where=self.node.where
        )
        return current, stats, staged, io_manager

    def _save_failed(
        self,
        context: Any,
        recorder: RunStoryResource | None,
        resources: dict[str, Any],
        story: NodeStory,
        t0: float,
    ) -> None:
        story.duration_s = round(time.perf_counter() - t0, 4)
        if recorder is None:
            return
        try:
            # the nodes that depend on this one will not run: the story says so
            not_run = not_run_after(getattr(context, "job_def", None), self.key, story)
            recorder.save(resources, context.run_id, story, not_run)
        except Exception as exc:  # a story must never hide the node's own error
            context.log.warning(f"{self.node.where}: the run story was not written: {exc}")
