"""PandasIOManager: where Dagster meets the pandas engine.

``handle_output`` writes an asset to its node's ``write:`` target; ``load_input`` reads an
upstream asset (or an external source) back. What to read and write comes from the
asset's definition metadata (``odibi/read``, ``odibi/write``), so the IO manager knows
nothing about YAML and serves any asset that carries that metadata.

Results that have no faithful copy on storage (nodes without ``write:``, or written as
CSV/JSON or in append/ignore mode) are kept for downstream steps in an intermediate
store: in memory within one process, and as Parquet under ``intermediate_dir``
(default ``$DAGSTER_HOME/storage/odibi``) so that the multiprocess executor and later
runs of a subset of assets can load them.
"""

from __future__ import annotations

import os
import pickle
import time
from typing import TYPE_CHECKING, Any

import dagster as dg
from pydantic import Field, PrivateAttr

from odibi_dagster.config.yaml_source import resolve_env
from odibi_dagster.errors import OdibiRunError, as_failure, storage_errors
from odibi_dagster.resources.base import Location
from odibi_dagster.resources.local import LocalStorage
from odibi_dagster.story import PendingStory, record, take_story

if TYPE_CHECKING:
    import pandas as pd

    from odibi_dagster.engines.pandas import PandasEngine

READ_KEY = "odibi/read"
WRITE_KEY = "odibi/write"
NODE_KEY = "odibi/node"


# Write options after which the target no longer equals the node's result (partition
# columns move, rows outside the predicate stay, columns merge with the old schema).
_RESHAPING_OPTIONS = frozenset(
    {"partition_by", "partitionBy", "replaceWhere", "predicate", "mergeSchema", "schema_mode"}
)


def _consumer_count(context: dg.OutputContext) -> int:
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


class PandasIOManager(dg.ConfigurableIOManager):
    """Persists pandas DataFrames to Odibi connections and loads them back.

    Example::

        PandasIOManager(connections={"lake": LocalStorage(base_path="/data/lake")})

    A connection is looked up first among the resources of the step being served (a
    compiled project gives every asset its connections as required resources, local or
    Azure), then in ``connections``. An asset with metadata ``{"odibi/write": {"connection": "lake", "path":
    "gold/x.parquet", "format": "parquet", "mode": "overwrite"}}`` is written there.
    """

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

    @property
    def engine(self) -> PandasEngine:
        # imported here: pandas, DuckDB, delta-rs and pyarrow are not needed to load
        # definitions
        import pandas as pd

        from odibi_dagster.engines.pandas import PandasEngine

        # Copy-on-write (pandas 3's default) makes the shallow copies handed to each
        # consumer independent.
        pd.set_option("mode.copy_on_write", True)
        return PandasEngine()

    # ------------------------------------------------------------------ Dagster API

    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        key = tuple(context.asset_key.path)
        pending = take_story(context.run_id, key)
        t0 = time.perf_counter()
        try:
            written = self._handle_output(context, key, obj)
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
            df = self._load_input(context)
        except OdibiRunError as exc:
            raise as_failure(exc) from None
        # Each consumer gets its own view: with copy-on-write, a node that changes its
        # input in place changes only its copy, as it would in a separate process.
        return df.copy(deep=False)

    def _handle_output(
        self, context: dg.OutputContext, key: tuple[str, ...], obj: Any
    ) -> dict[str, Any] | None:
        """Persist ``obj``; return what was written (uri, format, mode, written) or None."""
        if obj is None:
            return None
        meta = dict(context.definition_metadata or {})
        where = str(meta.get(NODE_KEY) or "/".join(key))
        import pandas as pd

        if not isinstance(obj, pd.DataFrame):
            raise OdibiRunError(
                f"{where}: produced a {type(obj).__name__}, not a pandas DataFrame; a "
                "function step must return a DataFrame"
            )
        write = resolve_env(meta.get(WRITE_KEY), where)
        engine = self.engine
        out_meta: dict[str, Any] = {}
        outcome = None
        if write:
            loc = self._location(context, write, where)
            mode = write.get("mode", "overwrite")
            with storage_errors(where, "writing", loc.uri, loc.storage_options):
                written = engine.write(
                    obj, loc, write["format"], mode, write.get("options") or {}, where=where
                )
            outcome = {"uri": loc.uri, "format": write["format"], "mode": mode, "written": written}
            out_meta["dagster/uri"] = dg.MetadataValue.path(loc.uri)
            out_meta["written"] = written
            if not written:
                context.log.info(f"{where}: {loc.uri} exists and mode is ignore; not written")
        if not faithful_copy(write):
            try:
                stored = self._store_intermediate(context, key, obj)
            except Exception as exc:
                if outcome and outcome["written"] and outcome["mode"] == "append":
                    # a retry would append the same rows a second time
                    raise OdibiRunError(
                        f"{where}: the rows were appended to {outcome['uri']}, but keeping the "
                        f"result for downstream nodes failed ({type(exc).__name__}: {exc}); "
                        "not retried, so the rows are not appended twice"
                    ) from exc
                raise
            out_meta["odibi/stored_at"] = dg.MetadataValue.path(stored)
        consumers = _consumer_count(context)
        if consumers != 0:
            self._cache[key] = obj
            self._pending_loads[key] = consumers
        out_meta.update(self._describe(obj))
        context.add_output_metadata(out_meta)
        return outcome

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

    def _load_input(self, context: dg.InputContext) -> Any:
        upstream = context.upstream_output
        if upstream is None or not context.has_asset_key:
            raise OdibiRunError("PandasIOManager only loads assets")
        key = tuple(context.asset_key.path)
        if key in self._cache:
            df = self._cache[key]
            left = self._pending_loads.get(key, -1) - 1
            if left == 0:
                del self._cache[key], self._pending_loads[key]
            elif left > 0:
                self._pending_loads[key] = left
            return df
        meta = dict(upstream.definition_metadata or {})
        where = str(meta.get(NODE_KEY) or "/".join(key))
        read = resolve_env(meta.get(READ_KEY), where)
        write = resolve_env(meta.get(WRITE_KEY), where)
        if read or (write and faithful_copy(write)):
            spec = read or write
            loc = self._location(context, spec, where)
            with storage_errors(where, "reading", loc.uri, loc.storage_options):
                df = self.engine.read(
                    loc, spec["format"], (spec.get("options") or {}) if read else {}, where=where
                )
        else:
            df = self._load_intermediate(context, key, where)
        self._cache[key] = df
        return df

    # ------------------------------------------------------------------ helpers

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

    def _describe(self, df: pd.DataFrame) -> dict[str, Any]:
        engine = self.engine
        schema = dg.TableSchema(
            columns=[dg.TableColumn(name=str(c), type=t) for c, t in engine.column_schema(df)]
        )
        return {
            "dagster/row_count": engine.row_count(df),
            "dagster/column_schema": schema,
            "preview": dg.MetadataValue.md(engine.preview_markdown(df, self.preview_rows)),
        }

    def _base_dir(self, context: dg.InputContext | dg.OutputContext) -> str:
        if self.intermediate_dir:
            return self.intermediate_dir
        return os.path.join(context.step_context.instance.storage_directory(), "odibi")

    def _paths(self, base: str, key: tuple[str, ...]) -> tuple[str, str]:
        stem = os.path.join(base, *key)
        return stem + ".parquet", stem + ".pickle"

    def _store_intermediate(
        self, context: dg.OutputContext, key: tuple[str, ...], df: pd.DataFrame
    ) -> str:
        base = self._base_dir(context)
        parquet, pickled = self._paths(base, key)
        storage = LocalStorage(base_path=base)
        rel = os.path.relpath(parquet, base)
        try:
            self.engine.write(df, storage.location(rel), "parquet", "overwrite")
            if os.path.exists(pickled):
                os.remove(pickled)
            return parquet
        except Exception as exc:  # a column Parquet cannot hold (mixed Python objects)
            context.log.debug(f"intermediate Parquet failed ({exc}); pickling instead")
        os.makedirs(os.path.dirname(pickled), exist_ok=True)
        tmp = f"{pickled}.tmp-{os.getpid()}"
        with open(tmp, "wb") as f:
            pickle.dump(df, f, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, pickled)
        if os.path.exists(parquet):
            os.remove(parquet)
        return pickled

    def _load_intermediate(
        self, context: dg.InputContext, key: tuple[str, ...], where: str
    ) -> pd.DataFrame:
        base = self._base_dir(context)
        parquet, pickled = self._paths(base, key)
        if os.path.exists(parquet):
            storage = LocalStorage(base_path=base)
            return self.engine.read(storage.location(os.path.relpath(parquet, base)), "parquet")
        if os.path.exists(pickled):
            with open(pickled, "rb") as f:
                df: pd.DataFrame = pickle.load(f)
            return df
        raise OdibiRunError(
            f"{where}: no stored result yet (looked in {parquet}). Materialize this upstream "
            "node first, or run the whole pipeline job."
        )
