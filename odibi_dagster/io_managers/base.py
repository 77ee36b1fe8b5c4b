"""Where Dagster meets an engine: one IO manager for every engine, named by ``engine``.

``handle_output`` writes an asset to its node's ``write:`` target; ``load_input`` hands a
consumer the upstream result. What to read and write comes from the asset's definition
metadata (``odibi/read``, ``odibi/write``), so the IO manager knows nothing about YAML
and serves any asset that carries that metadata. The engine does the data work; the
rules about targets (what is a faithful copy, appends are not retried) are in
``write_rules``. A write in a keyed mode (upsert, append_once, merge) goes through
:meth:`Engine.merge`, and its materialization carries the rows it inserted, updated and
deleted (``odibi/rows_inserted``, ``odibi/rows_updated``, ``odibi/rows_deleted``).

Each output costs one pass over the data, and its row count rides along (the engine
counts while writing). A result with no faithful copy on storage (no ``write:``,
CSV/JSON, append/ignore, the keyed modes, partitioned or merged writes) is kept in the intermediate store
(``$DAGSTER_HOME/storage/<engine's dir>`` unless ``intermediate_dir`` says otherwise),
so consumers in other step processes (the multiprocess executor), re-executions and
later runs of a subset of assets find it. The store is keyed by run (``run_store``):
run R keeps asset K's result at the engine's place for ``(*K, R)``, e.g.
``<base>/<pipeline>/<node>/<R>.parquet``, so runs at the same time never read each
other's results. A result is staged beside that place, the target is written from it,
and it is kept only once the node has succeeded (a node that fails leaves nothing for
anyone to read). An input reads the result of the run Dagster names as the producer of
the upstream output (this run, or on a re-execution the run re-executed), else, for an
upstream asset outside the run, that of its latest materialization. When K succeeds in
R, the results of K that no one will read again are deleted (``run_store.prune``).
Within one process, results are also kept in memory for their consumers in the same
run, and dropped after the last one.

Run stories: ``handle_output`` completes a node's story with how its write went and
saves it. ``load_input`` saves the stories of what never reaches a node's computation: a
read-only node it read (what it read) or failed to read (the error), and a consumer
whose input failed to load (failed, with the first line of the load's error). After any
failure, the nodes of the run below the failed one get a ``not run`` story
(:func:`not_run_after`). Which node of which pipeline an asset is comes from its
``odibi/story`` metadata.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import dagster as dg
from pydantic import Field, PrivateAttr

from odibi_dagster import incremental
from odibi_dagster.engines.base import Engine
from odibi_dagster.engines.messages import exists_error, markdown_table
from odibi_dagster.engines.registry import get_engine, resources_by_key
from odibi_dagster.env_refs import resolve_env
from odibi_dagster.errors import OdibiRunError, as_failure, first_line, storage_errors
from odibi_dagster.incremental import IncrementalRead
from odibi_dagster.io_managers.run_store import prune_quietly, source_run
from odibi_dagster.io_managers.write_rules import (
    faithful_copy,
    merge_metadata,
    not_retried_after_append,
)
from odibi_dagster.partitions import fill, io_partition, partitioned_write
from odibi_dagster.resources.base import Location
from odibi_dagster.resources.connection import ConnectionResource
from odibi_dagster.resources.local import LocalStorage
from odibi_dagster.resources.new_files import files_for, files_metadata
from odibi_dagster.story import (
    FAILED,
    NOT_RUN,
    STORY_RESOURCE_KEY,
    SUCCESS,
    NodeStory,
    RunStoryResource,
    now,
)
from odibi_dagster.vocabulary import KEYED_MODES

READ_KEY = "odibi/read"
WRITE_KEY = "odibi/write"
NODE_KEY = "odibi/node"
STORED_KEY = "odibi/stored_at"
# which node of which pipeline an asset is, for run stories: {"pipeline", "node"} and the
# node's "description" if it has one
STORY_KEY = "odibi/story"


def consumer_count(context: dg.OutputContext) -> int:
    """How many assets of this job load this output (-1 when it cannot be told)."""
    try:
        graph = context.step_context.job_def.asset_layer.asset_graph
        return len(graph.get(context.asset_key).child_keys)
    except Exception:
        return -1


def _run_of(context: dg.InputContext) -> str:
    """The run loading an input ("" for a direct call, outside a run)."""
    try:
        return context.step_context.run_id
    except dg.DagsterInvariantViolationError:
        return ""


def _job_of(context: dg.InputContext | dg.OutputContext) -> dg.JobDefinition | None:
    """The job of the run being served (None for a direct call, outside a run)."""
    try:
        return context.step_context.job_def
    except dg.DagsterInvariantViolationError:
        return None


def _instance_of(context: dg.OutputContext) -> dg.DagsterInstance | None:
    """The instance of the run being served (None for a direct call, outside a run)."""
    try:
        return context.step_context.instance
    except dg.DagsterInvariantViolationError:
        return None


def _consumer_key(context: dg.InputContext) -> dg.AssetKey | None:
    """The asset whose step loads this input (None: a step of checks, not an asset)."""
    try:
        assets = context.step_context.assets_def
    except Exception:  # a direct call, outside a run
        return None
    keys = list(assets.keys) if assets is not None else []
    return keys[0] if len(keys) == 1 else None


def step_resources(context: dg.InputContext | dg.OutputContext) -> dict[str, Any]:
    """The resources of the step being served, by key ({} outside a run, as in tests)."""
    try:
        return resources_by_key(context.step_context.resources)
    except Exception:  # no step context (a direct call)
        return {}


def story_node(meta: Mapping[str, Any]) -> dict[str, Any] | None:
    """What a story tells of an Odibi asset before it runs (pipeline, node, where,
    description), from its definition metadata (None: an asset that is not a node)."""
    ref = meta.get(STORY_KEY)
    if not isinstance(ref, Mapping):
        return None
    return {
        "pipeline": str(ref["pipeline"]),
        "node": str(ref["node"]),
        "where": str(meta.get(NODE_KEY) or ""),
        "description": ref.get("description"),
    }


def not_run_after(
    job_def: dg.JobDefinition | None, key: dg.AssetKey, failed: NodeStory
) -> list[NodeStory]:
    """The stories of the nodes of this run that depend on ``key``, directly or through
    other assets of the run: ``failed`` failed, so none of them will run. Assets the run
    was not asked to materialize are not followed (a node after one of those reads that
    one's last result)."""
    if job_def is None:  # a direct call, outside a run
        return []
    layer = job_def.asset_layer
    graph, selected = layer.asset_graph, layer.selected_asset_keys
    if not graph.has(key):
        return []
    below = list(graph.get(key).child_keys)
    why = f"not run: it depends on {failed.where or repr(failed.node)}, which failed"
    seen: set[dg.AssetKey] = set()
    stories = []
    while below:
        k = below.pop()
        if k in seen or k not in selected:
            continue
        seen.add(k)
        node = graph.get(k)
        below.extend(node.child_keys)
        known = story_node(node.metadata or {})
        if known is not None:
            stories.append(
                NodeStory(**known, status=NOT_RUN, started=now(), duration_s=0.0, error=why)
            )
    return sorted(stories, key=lambda st: (st.pipeline, st.node))


class OdibiIOManager(dg.ConfigurableIOManager):
    """Persists an engine's DataFrames to Odibi connections and loads them back.

    Example::

        OdibiIOManager(engine="pandas", connections={"lake": LocalStorage(base_path="/lake")})

    A connection is looked up first among the resources of the step being served (a
    compiled project gives every asset its connections as required resources, local or
    Azure), then in ``connections``. An asset with metadata ``{"odibi/write":
    {"connection": "lake", "path": "gold/x.parquet", "format": "parquet", "mode":
    "overwrite"}}`` is written there.

    A result with no faithful copy on storage is kept under ``intermediate_dir``, one
    per run: the engine's place for ``(*asset_key, run_id)`` (pandas:
    ``<intermediate_dir>/<asset key...>/<run id>.parquet``). A consumer reads the result
    of the run that produced its input: the same run, the run a re-execution
    re-executes, or for an asset outside the run its latest materialization. Once an
    asset succeeds, its results of runs that ended in success, of runs that failed or
    were canceled more than 7 days ago, and of runs the instance no longer knows are
    deleted; results of runs not finished are never deleted.
    """

    engine: str = Field(default="pandas", description="The engine that reads and writes.")
    connections: dict[str, LocalStorage] = Field(
        default_factory=dict, description="The project's connections, by name."
    )
    intermediate_dir: str | None = Field(
        default=None,
        description="Where results with no faithful copy on storage are kept, one per "
        "run of each asset (<dir>/<asset key...>/<run id>...), for one Dagster instance. "
        "Default: <DAGSTER_HOME>/storage/<odibi or odibi_spark> (a temporary directory "
        "for ephemeral instances).",
    )
    preview_rows: int = Field(default=5, description="Rows shown in the preview metadata.")

    # an environment variable that sets intermediate_dir (for a cluster: a URI every
    # executor reaches)
    intermediate_env: ClassVar[str | None] = None

    # Results kept in memory for the consumers in this process, by (run id, asset key),
    # with how many loads are still expected; an entry is dropped after its last consumer
    # (everything cached is also on storage, so a miss only costs a read).
    _cache: dict[tuple[str, tuple[str, ...]], Any] = PrivateAttr(default_factory=dict)
    _pending_loads: dict[tuple[str, tuple[str, ...]], int] = PrivateAttr(default_factory=dict)
    # results a node computed once for its checks, staged and counted, waiting for
    # handle_output in the same step: (run id, key) -> (staged location, row count)
    _held: dict[tuple[str, tuple[str, ...]], tuple[Location, int]] = PrivateAttr(
        default_factory=dict
    )

    # incremental reads of read-only sources for their consumer in this process, waiting
    # for the consumer's computation: (run id, consumer key, input name) -> what was read
    _incremental: dict[tuple[str, tuple[str, ...], str], IncrementalRead] = PrivateAttr(
        default_factory=dict
    )

    def take_incremental(
        self, run_id: str, consumer: tuple[str, ...], input_name: str
    ) -> IncrementalRead | None:
        """What the incremental read of input ``input_name`` of ``consumer`` read in this
        run (the consumer records it, and its mark, with its materialization)."""
        return self._incremental.pop((run_id, consumer, input_name), None)

    def hold_materialized(
        self, run_id: str, key: tuple[str, ...], staged: Location, rows: int
    ) -> None:
        """Keep, for this output's handle_output, a result the node already computed once
        and staged (see :meth:`Engine.materialize`), and its row count."""
        self._held[(run_id, key)] = (staged, rows)

    # ------------------------------------------------------------------ Dagster API

    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        key = tuple(context.asset_key.path)
        resources = step_resources(context)
        recorder = resources.get(STORY_RESOURCE_KEY)
        story = (
            recorder.take(context.run_id, key) if isinstance(recorder, RunStoryResource) else None
        )
        t0 = time.perf_counter()
        try:
            written = self._handle_output(context, resources, key, obj, story)
        except Exception as exc:
            if story is not None:
                message = (
                    str(exc) if isinstance(exc, OdibiRunError) else f"{type(exc).__name__}: {exc}"
                )
                self._finish_story(context, resources, story, t0, error=message)
            if isinstance(exc, OdibiRunError):
                raise as_failure(exc) from None
            raise
        if story is not None:
            self._finish_story(context, resources, story, t0, written=written)

    def load_input(self, context: dg.InputContext) -> Any:
        started, t0 = now(), time.perf_counter()
        try:
            df = self._load_input(context)
        except Exception as exc:
            self._story_of_failed_load(context, exc, started, t0)
            if isinstance(exc, OdibiRunError):
                raise as_failure(exc) from None
            raise
        return self._engine(step_resources(context)).handoff(df)

    # ------------------------------------------------------------------ output

    def _handle_output(
        self,
        context: dg.OutputContext,
        resources: dict[str, Any],
        key: tuple[str, ...],
        obj: Any,
        story: NodeStory | None,
    ) -> dict[str, Any] | None:
        """Persist ``obj``; return what was written (uri, format, mode, written) or None."""
        if obj is None:
            return None
        meta = dict(context.definition_metadata or {})
        where = self._where(meta, key)
        engine = self._engine(resources)
        if not engine.is_frame(obj):
            raise OdibiRunError(
                f"{where}: produced a {type(obj).__name__}, not a {engine.frame_kind}; a "
                f"function step on engine {engine.name} must return a {engine.frame_kind}"
            )
        return self._persist(context, resources, engine, key, obj, where, meta, story)

    def _persist(
        self,
        context: dg.OutputContext,
        resources: dict[str, Any],
        engine: Engine,
        key: tuple[str, ...],
        obj: Any,
        where: str,
        meta: dict[str, Any],
        story: NodeStory | None,
    ) -> dict[str, Any] | None:
        partition = io_partition(context)
        write = partitioned_write(resolve_env(meta.get(WRITE_KEY), where), partition, where)
        loc = self._location(resources, write, where) if write else None
        mode = str(write.get("mode", "overwrite")) if write else ""
        run_id = context.run_id
        stored_key = (*key, run_id)  # this run's place in the intermediate store
        kept_base: str | None = None  # where this run's result was kept, if it was
        held = self._held.pop((run_id, key), None)
        staged = held[0] if held else None
        try:
            if write and loc is not None and mode == "error":
                with storage_errors(where, "checking", loc.uri, loc.storage_options):
                    if engine.exists(loc, write["format"]):  # before writing anything
                        exists_error(where, loc.uri)
            out_meta: dict[str, Any] = {}
            outcome = None
            result = None  # what consumers and the preview read
            result_at: tuple[Location, str] | None = None  # and where it was written
            rows: Callable[[], int | None]
            if held is not None:
                # computed once for the node's checks (NodeRunner): staged and counted then
                result, result_at = obj, (held[0], "parquet")
                counted, rows = obj, lambda: held[1]
            else:
                counted, rows = engine.count_while_writing(obj)
                if not faithful_copy(write):
                    base = self._intermediate_base(context, engine)
                    staged, result = engine.store_intermediate(
                        counted, base, stored_key, where=where
                    )
                    result_at = (staged, "parquet")
            if write and loc is not None:
                source = counted if result is None else result
                with storage_errors(where, "writing", loc.uri, loc.storage_options):
                    if mode in KEYED_MODES:
                        merged = engine.merge(
                            source,
                            loc,
                            write["format"],
                            mode,
                            write.get("options") or {},
                            where=where,
                        )
                        written = True
                        out_meta.update(merge_metadata(merged))
                    else:
                        written = engine.write(
                            source,
                            loc,
                            write["format"],
                            mode,
                            write.get("options") or {},
                            where=where,
                        )
                outcome = {
                    "uri": loc.uri,
                    "format": write["format"],
                    "mode": mode,
                    "written": written,
                }
                out_meta["dagster/uri"] = dg.MetadataValue.path(loc.uri)
                out_meta["written"] = written
                if partition is not None and (write.get("options") or {}).get("predicate"):
                    out_meta["replaced_where"] = write["options"]["predicate"]
                if not written:
                    context.log.info(f"{where}: {loc.uri} exists and mode is ignore; not written")
                if faithful_copy(write):  # consumers read the target: nothing to keep
                    if staged is not None:
                        engine.drop_intermediate(staged)
                        staged = None
                    result = engine.after_write(obj, loc, write["format"], where=where)
                    result_at = (loc, write["format"])
            if staged is not None:
                # the node succeeded: its result is this run's to read
                kept_base = self._intermediate_base(context, engine)
                kept, result = engine.keep_intermediate(
                    result, staged, kept_base, stored_key, where=where
                )
                staged = None
                result_at = (kept, "parquet")
                out_meta[STORED_KEY] = dg.MetadataValue.path(kept.uri)
        finally:
            if staged is not None:  # failed on the way: nothing is kept
                engine.drop_intermediate(staged)
        with not_retried_after_append(outcome, where, "describing the result"):
            count = rows()
            self._remember(context, key, result)
            columns = engine.column_schema(result)
            sample_rows = resources[STORY_RESOURCE_KEY].max_sample_rows if story else 0
            loc_at, fmt_at = result_at or (None, "")
            # one look at the first rows serves the preview and the story
            first = engine.head(
                result, max(self.preview_rows, sample_rows), written_at=loc_at, fmt=fmt_at
            )
            out_meta["dagster/row_count"] = count
            described = _declared_columns(context)
            out_meta["dagster/column_schema"] = dg.TableSchema(
                columns=[
                    dg.TableColumn(
                        name=c,
                        type=t,
                        description=described[c].description if c in described else None,
                        tags=described[c].tags if c in described else None,
                    )
                    for c, t in columns
                ]
            )
            out_meta["preview"] = dg.MetadataValue.md(
                markdown_table(
                    [c for c, _ in columns],
                    ([row.get(c) for c, _ in columns] for row in first[: self.preview_rows]),
                )
            )
            context.add_output_metadata({k: v for k, v in out_meta.items() if v is not None})
            if story is not None:
                story.rows = count
                story.sample = first[:sample_rows]
        instance = _instance_of(context)
        if kept_base is not None and instance is not None:
            # the node succeeded: results of other runs no one reads again may go
            prune_quietly(
                engine,
                kept_base,
                key,
                run_id,
                instance,
                context.log,
                where,
                partition=partition.key if partition is not None else None,
            )
        return outcome

    def _finish_story(
        self,
        context: dg.OutputContext,
        resources: dict[str, Any],
        story: NodeStory,
        t0: float,
        written: dict[str, Any] | None = None,
        error: str | None = None,
    ) -> None:
        """Complete the node's story with how the write went, and save it."""
        story.duration_s = round(story.duration_s + time.perf_counter() - t0, 4)
        story.write = written
        story.status = FAILED if error else SUCCESS
        story.error = error
        try:
            not_run = not_run_after(_job_of(context), context.asset_key, story) if error else []
            resources[STORY_RESOURCE_KEY].save(resources, context.run_id, story, not_run)
        except Exception as exc:  # a story must never fail the node it describes
            context.log.warning(f"the run story was not written: {exc}")

    # ------------------------------------------------------------------ input

    def _load_input(self, context: dg.InputContext) -> Any:
        """This process's copy of the upstream result for this run, else what the
        upstream node reads, or wrote as a faithful copy, else the stored intermediate
        of the run that produced it (see :func:`run_store.source_run`)."""
        upstream = context.upstream_output
        if upstream is None or not context.has_asset_key:
            raise OdibiRunError(f"{type(self).__name__} only loads assets")
        key = tuple(context.asset_key.path)
        this_run = _run_of(context)
        found, df = self._recall((this_run, key))
        if found:
            return df
        meta = dict(upstream.definition_metadata or {})
        where = self._where(meta, key)
        partition = io_partition(context)  # the upstream's partition this run reads
        read = fill(resolve_env(meta.get(READ_KEY), where), partition, where)
        write = partitioned_write(resolve_env(meta.get(WRITE_KEY), where), partition, where)
        resources = step_resources(context)
        engine = self._engine(resources)
        files = files_for(resources, read)
        started, t0 = now(), time.perf_counter()
        note = ""  # what an incremental read of a source read, for its story
        if files:  # a sensor started this run for these files of the source
            conn = self._connection(resources, read, where)
            locs = [conn.location(f) for f in files]
            with storage_errors(where, "reading", locs[0].uri, locs[0].storage_options):
                df = engine.read_files(locs, read["format"], read.get("options") or {}, where=where)
            context.add_input_metadata(files_metadata(files))
        elif read and read.get("incremental"):
            df, stateful, note = self._read_incremental(context, resources, engine, read, where)
            if stateful:  # each consumer reads from its own mark: nothing to share
                self._story_of_source_read(context, resources, engine, df, started, t0, note)
                return df
        elif read or (write and faithful_copy(write)):
            spec = read or write
            assert spec is not None
            loc = self._location(resources, spec, where)
            with storage_errors(where, "reading", loc.uri, loc.storage_options):
                df = engine.read(
                    loc, spec["format"], (spec.get("options") or {}) if read else {}, where=where
                )
        else:
            source = source_run(context, this_run, where)
            df = engine.load_intermediate(
                self._intermediate_base(context, engine),
                (*key, source.run_id),
                where=f"{where}, the result of run {source.run_id} ({source.why})",
            )
        self._cache[(this_run, key)] = df
        if read:  # a read-only node: this read is its part of the run
            self._story_of_source_read(context, resources, engine, df, started, t0, note)
        return df

    def _read_incremental(
        self,
        context: dg.InputContext,
        resources: dict[str, Any],
        engine: Engine,
        read: dict[str, Any],
        where: str,
    ) -> tuple[Any, bool, str]:
        """A read-only source with ``incremental:`` read for the consumer of this input
        (see :mod:`odibi_dagster.incremental`); whether the read was stateful, and what it
        read (for the story). A stateful
        read starts from the mark the consumer's last materialization recorded for this
        input; a consumer that is not an asset (the source's checks) reads everything."""
        spec = dict(read["incremental"])
        consumer = _consumer_key(context)
        stateful = spec.get("mode") == "stateful"
        loc = self._location(resources, read, where)
        before = None
        if stateful and consumer is not None:
            before = incremental.previous_mark(context.instance, consumer, context.name)
        with storage_errors(where, "reading", loc.uri, loc.storage_options):
            if stateful and consumer is None:
                df = engine.read(loc, read["format"], read.get("options") or {}, where=where)
                return df, True, "incremental stateful: read everything (not for a node)"
            df, done = incremental.read(
                engine, loc, read["format"], read.get("options") or {}, spec, before, where=where
            )
        if consumer is not None:
            key = (_run_of(context), tuple(consumer.path), context.name)
            self._incremental[key] = done
        context.add_input_metadata(done.metadata())
        return df, stateful, done.label()

    # ------------------------------------------------------------------ stories of inputs

    def _source_story(
        self, context: dg.InputContext, resources: dict[str, Any], started: str, t0: float
    ) -> NodeStory | None:
        """The story of the read-only node this input reads, as far as its definition
        tells (None: the input is not such a node)."""
        upstream = context.upstream_output
        meta = dict(upstream.definition_metadata or {}) if upstream is not None else {}
        known = story_node(meta)
        if known is None or not meta.get(READ_KEY):
            return None
        where = known["where"]
        story = NodeStory(
            **known, status=FAILED, started=started, duration_s=round(time.perf_counter() - t0, 4)
        )
        try:  # the address needs no credentials: nothing is fetched to tell it
            partition = io_partition(context)
            story.partition = partition.key if partition is not None else None
            read = fill(resolve_env(meta[READ_KEY], where), partition, where)
            uri = self._connection(resources, read, where).uri(read["path"])
            story.read = {"uri": uri, "format": read["format"]}
            story.files = files_for(resources, read)
        except Exception:  # the read's own error tells what is wrong with it
            pass
        return story

    def _story_of_source_read(
        self,
        context: dg.InputContext,
        resources: dict[str, Any],
        engine: Engine,
        df: Any,
        started: str,
        t0: float,
        note: str = "",
    ) -> None:
        """Save the story of a read-only node read for this input: what it read (``note``:
        what an incremental read kept)."""
        recorder = resources.get(STORY_RESOURCE_KEY)
        if not isinstance(recorder, RunStoryResource):
            return
        try:
            story = self._source_story(context, resources, started, t0)
            if story is None:
                return
            story.status = SUCCESS
            if note and story.read is not None:
                story.read["incremental"] = note
            story.rows = engine.cheap_row_count(df)
            story.columns = engine.column_schema(df)
            if story.rows is not None and recorder.max_sample_rows:  # in memory: free
                story.sample = engine.head(df, recorder.max_sample_rows)
            recorder.save(resources, _run_of(context), story)
        except Exception as exc:  # a story must never fail the node it describes
            context.log.warning(f"the run story was not written: {exc}")

    def _story_of_failed_load(
        self, context: dg.InputContext, exc: Exception, started: str, t0: float
    ) -> None:
        """Save the stories an input that failed to load leaves: the consumer's (failed:
        it never computed), the source's when the input is a read-only node (failed), and
        those of the nodes that will not run."""
        resources = step_resources(context)
        recorder = resources.get(STORY_RESOURCE_KEY)
        if not isinstance(recorder, RunStoryResource):
            return
        try:
            run_id = _run_of(context)
            upstream = context.upstream_output
            where = self._where(
                dict(upstream.definition_metadata or {}) if upstream is not None else {},
                tuple(context.asset_key.path) if context.has_asset_key else (context.name,),
            )
            # Odibi errors are written for users, storage option values redacted
            message = (
                str(exc)
                if isinstance(exc, OdibiRunError)
                else f"{where}: {type(exc).__name__}: {first_line(exc)}"
            )
            source = self._source_story(context, resources, started, t0)
            if source is not None:
                source.error = message
                recorder.save(resources, run_id, source)
            assets = context.step_context.assets_def  # the consumer (None: not an asset)
            metadata = assets.metadata_by_key if assets is not None else {}
            for key, meta in metadata.items():
                known = story_node(meta)
                if known is None:
                    continue
                story = NodeStory(
                    **known,
                    status=FAILED,
                    started=started,
                    duration_s=round(time.perf_counter() - t0, 4),
                    error=f"input '{context.name}' could not be loaded: {first_line(message)}",
                )
                recorder.save(resources, run_id, story, not_run_after(_job_of(context), key, story))
        except Exception as err:  # a story must never hide the load's own error
            context.log.warning(f"the run story was not written: {err}")

    # ------------------------------------------------------------------ helpers

    def _engine(self, resources: dict[str, Any]) -> Engine:
        return get_engine(self.engine, resources)

    @staticmethod
    def _where(meta: dict[str, Any], key: tuple[str, ...]) -> str:
        return str(meta.get(NODE_KEY) or "/".join(key))

    def _remember(self, context: dg.OutputContext, key: tuple[str, ...], obj: Any) -> None:
        """Keep ``obj`` for the consumers of this output that run in this process."""
        consumers = consumer_count(context)
        if consumers != 0:
            self._cache[(context.run_id, key)] = obj
            self._pending_loads[(context.run_id, key)] = consumers

    def _recall(self, key: tuple[str, tuple[str, ...]]) -> tuple[bool, Any]:
        """(True, result) when this process still holds the result ``key`` (run id,
        asset key)."""
        if key not in self._cache:
            return False, None
        obj = self._cache[key]
        left = self._pending_loads.get(key, -1) - 1
        if left == 0:
            del self._cache[key], self._pending_loads[key]
        elif left > 0:
            self._pending_loads[key] = left
        return True, obj

    def _location(self, resources: dict[str, Any], spec: dict[str, Any], where: str) -> Location:
        """The node path on its connection."""
        return self._connection(resources, spec, where).location(spec["path"])

    def _connection(
        self, resources: dict[str, Any], spec: dict[str, Any], where: str
    ) -> ConnectionResource:
        """The connection ``spec`` names: a resource of the running step (how compiled
        projects provide them), else one given to this IO manager."""
        name = spec["connection"]
        conn = resources.get(name)
        if not isinstance(conn, ConnectionResource):
            conn = self.connections.get(name)
        if conn is None:
            raise OdibiRunError(
                f"{where}: connection '{name}' is not a resource of this step. An asset that "
                f"loads this one must require it: add a parameter `{name}: AzureADLS` to the "
                f"asset function, or required_resource_keys={{'{name}'}}"
            )
        return conn

    def intermediate_base(self, instance: Callable[[], dg.DagsterInstance], engine: Engine) -> str:
        """Where results are kept: ``intermediate_dir``, else the environment variable,
        else under the Dagster instance's storage (``instance`` is asked only then)."""
        base = self.intermediate_dir
        if not base and self.intermediate_env:
            base = os.environ.get(self.intermediate_env)
        if base:
            return base
        return os.path.join(instance().storage_directory(), engine.intermediate_dir_name)

    def _intermediate_base(
        self, context: dg.InputContext | dg.OutputContext, engine: Engine
    ) -> str:
        return self.intermediate_base(lambda: context.step_context.instance, engine)


def _declared_columns(context: dg.OutputContext) -> dict[str, dg.TableColumn]:
    """The columns the node's ``columns:`` (Odibi v3) describes, by name: their description
    and tags are kept on the schema each materialization records."""
    try:
        schema = (context.definition_metadata or {}).get("dagster/column_schema")
    except Exception:
        return {}
    schema = getattr(schema, "schema", schema)  # TableSchemaMetadataValue -> TableSchema
    if not isinstance(schema, dg.TableSchema):
        return {}
    return {col.name: col for col in schema.columns}
