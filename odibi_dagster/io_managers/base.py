"""What the pandas and Spark IO managers share: the asset metadata they read, the story
they complete, where a connection is found, and the in-process cache of results.

What to read and write comes from the asset's definition metadata (``odibi/read``,
``odibi/write``), so the IO managers know nothing about YAML and serve any asset that
carries that metadata.
"""

from __future__ import annotations

import os
import time
from typing import Any

import dagster as dg
from pydantic import Field, PrivateAttr

from odibi_dagster.config.yaml_source import resolve_env
from odibi_dagster.errors import OdibiRunError, as_failure, storage_errors
from odibi_dagster.resources.base import Location
from odibi_dagster.resources.local import LocalStorage
from odibi_dagster.story import PendingStory, record, take_story

READ_KEY = "odibi/read"
WRITE_KEY = "odibi/write"
NODE_KEY = "odibi/node"


# Write options after which the target no longer equals the node's result (partition
# columns move, rows outside the predicate stay, columns merge with the old schema).
_RESHAPING_OPTIONS = frozenset(
    {"partition_by", "partitionBy", "replaceWhere", "predicate", "mergeSchema", "schema_mode"}
)


def consumer_count(context: dg.OutputContext) -> int:
    """How many assets of this job load this output (-1 when it cannot be told)."""
    try:
        graph = context.step_context.job_def.asset_layer.asset_graph
        return len(graph.get(context.asset_key).child_keys)
    except Exception:
        return -1


def faithful_copy(write: dict[str, Any] | None) -> bool:
    """Whether the write target holds exactly the node's result, with its column types."""
    return bool(
        write
        and write.get("mode", "overwrite") in ("overwrite", "error")
        and write.get("format") in ("parquet", "delta")
        and not _RESHAPING_OPTIONS & set(write.get("options") or {})
    )


class OdibiIOManager(dg.ConfigurableIOManager):
    """The shared part of PandasIOManager and SparkIOManager (not used on its own)."""

    connections: dict[str, LocalStorage] = Field(
        default_factory=dict, description="The project's connections, by name."
    )
    intermediate_dir: str | None = Field(
        default=None,
        description="Directory for results with no faithful copy on storage. Default: "
        "<DAGSTER_HOME>/storage/odibi (a temporary directory for ephemeral instances).",
    )
    preview_rows: int = Field(default=5, description="Rows shown in the preview metadata.")

    # Results kept in memory for the consumers in this process, with how many loads are
    # still expected; an entry is dropped after its last consumer (everything cached is
    # also on storage, so a miss only costs a read).
    _cache: dict[tuple[str, ...], Any] = PrivateAttr(default_factory=dict)
    _pending_loads: dict[tuple[str, ...], int] = PrivateAttr(default_factory=dict)

    # ------------------------------------------------------------------ Dagster API

    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        key = tuple(context.asset_key.path)
        pending = take_story(context.run_id, key)
        t0 = time.perf_counter()
        try:
            written = self._handle_output(context, key, obj, pending)
        except Exception as exc:
            if pending is not None:
                message = (
                    str(exc) if isinstance(exc, OdibiRunError) else f"{type(exc).__name__}: {exc}"
                )
                self._finish_story(context, pending, t0, error=message)
            if isinstance(exc, OdibiRunError):
                raise as_failure(exc) from None
            raise
        if pending is not None:
            self._finish_story(context, pending, t0, written=written)

    def load_input(self, context: dg.InputContext) -> Any:
        try:
            return self._load_input(context)
        except OdibiRunError as exc:
            raise as_failure(exc) from None

    def _handle_output(
        self,
        context: dg.OutputContext,
        key: tuple[str, ...],
        obj: Any,
        pending: PendingStory | None,
    ) -> dict[str, Any] | None:
        """Persist ``obj``; return what was written (uri, format, mode, written) or None.

        ``pending`` is the node's story (when the project has one), still to be saved."""
        raise NotImplementedError

    def _load_input(self, context: dg.InputContext) -> Any:
        """This process's copy of the upstream result, else what the upstream node reads,
        or wrote as a faithful copy, else its stored intermediate."""
        upstream = context.upstream_output
        if upstream is None or not context.has_asset_key:
            raise OdibiRunError(f"{type(self).__name__} only loads assets")
        key = tuple(context.asset_key.path)
        found, df = self._recall(key)
        if found:
            return df
        meta = dict(upstream.definition_metadata or {})
        where = self._where(meta, key)
        read = resolve_env(meta.get(READ_KEY), where)
        write = resolve_env(meta.get(WRITE_KEY), where)
        if read or (write and faithful_copy(write)):
            spec = read or write
            loc = self._location(context, spec, where)
            with storage_errors(where, "reading", loc.uri, loc.storage_options):
                df = self._engine_for(context).read(
                    loc, spec["format"], (spec.get("options") or {}) if read else {}, where=where
                )
        else:
            df = self._load_intermediate(context, key, where)
        self._cache[key] = df
        return df

    def _engine_for(self, context: dg.InputContext | dg.OutputContext) -> Any:
        """The engine that reads and writes for this step."""
        raise NotImplementedError

    def _load_intermediate(self, context: dg.InputContext, key: tuple[str, ...], where: str) -> Any:
        """The stored result of a node whose output has no faithful copy."""
        raise NotImplementedError

    # ------------------------------------------------------------------ helpers

    def _finish_story(
        self,
        context: dg.OutputContext,
        pending: PendingStory,
        t0: float,
        written: dict[str, Any] | None = None,
        error: str | None = None,
    ) -> None:
        """Complete the node's story with how the write went, and save it."""
        story = pending.story
        story.duration_s = round(story.duration_s + time.perf_counter() - t0, 4)
        story.write = written
        story.status = "failed" if error else "success"
        story.error = error
        try:
            record(pending.target, context.run_id, story)
        except Exception as exc:  # a story must never fail the node it describes
            context.log.warning(f"the run story was not written: {exc}")

    @staticmethod
    def _where(meta: dict[str, Any], key: tuple[str, ...]) -> str:
        return str(meta.get(NODE_KEY) or "/".join(key))

    def _remember(self, context: dg.OutputContext, key: tuple[str, ...], obj: Any) -> None:
        """Keep ``obj`` for the consumers of this output that run in this process."""
        consumers = consumer_count(context)
        if consumers != 0:
            self._cache[key] = obj
            self._pending_loads[key] = consumers

    def _recall(self, key: tuple[str, ...]) -> tuple[bool, Any]:
        """(True, result) when this process still holds the result of ``key``."""
        if key not in self._cache:
            return False, None
        obj = self._cache[key]
        left = self._pending_loads.get(key, -1) - 1
        if left == 0:
            del self._cache[key], self._pending_loads[key]
        elif left > 0:
            self._pending_loads[key] = left
        return True, obj

    def _location(
        self, context: dg.InputContext | dg.OutputContext, spec: dict[str, Any], where: str
    ) -> Location:
        """The node path on its connection: a resource of the running step (how compiled
        projects provide them), else one given to this IO manager."""
        name = spec["connection"]
        conn = None
        try:
            conn = getattr(context.step_context.resources, name, None)
        except Exception:  # no step context (a direct call, as in tests)
            conn = None
        if conn is None or not hasattr(conn, "location"):
            conn = self.connections.get(name)
        if conn is None:
            raise OdibiRunError(
                f"{where}: connection '{name}' is not a resource of this step. An asset that "
                f"loads this one must require it: add a parameter `{name}: AzureADLS` to the "
                f"asset function, or required_resource_keys={{'{name}'}}"
            )
        location: Location = conn.location(spec["path"])
        return location

    def _base_dir(self, context: dg.InputContext | dg.OutputContext, default_name: str) -> str:
        if self.intermediate_dir:
            return self.intermediate_dir
        return os.path.join(context.step_context.instance.storage_directory(), default_name)

    def _schema_metadata(self, columns: list[tuple[str, str]]) -> dg.TableSchema:
        return dg.TableSchema(columns=[dg.TableColumn(name=str(c), type=t) for c, t in columns])
