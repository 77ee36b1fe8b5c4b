"""SparkIOManager: where Dagster meets the Spark engine.

``handle_output`` writes a Spark DataFrame to its node's ``write:`` target;
``load_input`` gives the consumer a DataFrame over what was written (a lazy scan, so
the upstream plan is not computed again). The data never passes through the driver.

Each output costs one pass over the data, and the row count rides along with it: the
DataFrame carries a Spark ``Observation`` (a ``count`` computed during the write job),
so ``dagster/row_count`` never needs a second read. When the target is not a faithful
copy of the result (no ``write:``, csv/json, append/ignore, partitioned or merged
writes), the result is first written once as Parquet under ``intermediate_dir``
(default ``$DAGSTER_HOME/storage/odibi_spark``; on a cluster, a path every executor
reaches, such as ``dbfs:/...`` or ``abfss://...``, from ``$ODIBI_SPARK_INTERMEDIATE_DIR``)
and the target is written from that copy. Consumers in other step processes (the
multiprocess executor) read the target or that copy, never a DataFrame object.
"""

from __future__ import annotations

import os
import posixpath
from typing import Any

import dagster as dg
from pydantic import Field

from odibi_dagster.config.yaml_source import resolve_env
from odibi_dagster.engines.spark import first_message
from odibi_dagster.errors import OdibiRunError, storage_errors
from odibi_dagster.io_managers.base import WRITE_KEY, OdibiIOManager, faithful_copy
from odibi_dagster.resources.base import Location
from odibi_dagster.resources.local import LocalStorage
from odibi_dagster.story import PendingStory

INTERMEDIATE_ENV = "ODIBI_SPARK_INTERMEDIATE_DIR"


class SparkIOManager(OdibiIOManager):
    """Persists Spark DataFrames to Odibi connections and loads them back.

    Example::

        SparkIOManager(connections={"lake": LocalStorage(base_path="/data/lake")})

    The session comes from the step's ``odibi_spark`` resource (a
    :class:`~odibi_dagster.SparkSessionResource`), configured for every Azure connection
    among the step's resources. A connection is looked up among the step's resources,
    then in ``connections``.
    """

    intermediate_dir: str | None = Field(
        default=None,
        description="Where results with no faithful copy on storage are kept as Parquet: a "
        "local directory, or on a cluster a URI every executor reaches (dbfs:/..., "
        "abfss://...). Default: $ODIBI_SPARK_INTERMEDIATE_DIR, else "
        "<DAGSTER_HOME>/storage/odibi_spark.",
    )

    def _engine_for(self, context: dg.InputContext | dg.OutputContext) -> Any:
        from odibi_dagster.engines.spark import SparkEngine, session_for

        try:
            resources = context.step_context.resources
        except Exception:  # no step context (a direct call, as in tests)
            resources = None
        return SparkEngine(session_for(resources))

    # ------------------------------------------------------------------ output

    def _handle_output(
        self,
        context: dg.OutputContext,
        key: tuple[str, ...],
        obj: Any,
        pending: PendingStory | None,
    ) -> dict[str, Any] | None:
        if obj is None:
            return None
        meta = dict(context.definition_metadata or {})
        where = self._where(meta, key)
        engine = self._engine_for(context)
        if not engine.is_frame(obj):
            raise OdibiRunError(
                f"{where}: produced a {type(obj).__name__}, not a Spark DataFrame; on engine "
                "spark a function step must return a pyspark DataFrame"
            )
        write = resolve_env(meta.get(WRITE_KEY), where)
        loc = self._location(context, write, where) if write else None
        if write and loc is not None and write.get("mode") == "error":
            with storage_errors(where, "checking", loc.uri, loc.storage_options):
                if engine.exists(loc, write["format"]):  # before computing anything
                    engine.write(obj, loc, write["format"], "error", where=where)
        observed, obs = engine.observe(obj)
        out_meta: dict[str, Any] = {}
        outcome = None
        result = None  # a DataFrame over the stored result, for consumers and the preview
        if not faithful_copy(write):
            stored = self._intermediate(context, key)
            engine.write(observed, stored, "parquet", "overwrite", where=where)
            out_meta["odibi/stored_at"] = dg.MetadataValue.path(stored.uri)
            result = engine.read(stored, "parquet", where=where)
            observed = result
        if write and loc is not None:
            mode = write.get("mode", "overwrite")
            with storage_errors(where, "writing", loc.uri, loc.storage_options):
                written = engine.write(
                    observed, loc, write["format"], mode, write.get("options") or {}, where=where
                )
            outcome = {"uri": loc.uri, "format": write["format"], "mode": mode, "written": written}
            out_meta["dagster/uri"] = dg.MetadataValue.path(loc.uri)
            out_meta["written"] = written
            if not written:
                context.log.info(f"{where}: {loc.uri} exists and mode is ignore; not written")
            if result is None:
                result = engine.read(loc, write["format"], where=where)
        assert result is not None
        try:
            rows = engine.observed_rows(obs)
            self._remember(context, key, result)
            out_meta["dagster/row_count"] = rows
            out_meta["dagster/column_schema"] = self._schema_metadata(engine.column_schema(result))
            out_meta["preview"] = dg.MetadataValue.md(
                engine.preview_markdown(result, self.preview_rows)
            )
            context.add_output_metadata({k: v for k, v in out_meta.items() if v is not None})
            if pending is not None:
                pending.story.rows = rows
                pending.story.sample = engine.sample(result, pending.target.max_sample_rows)
        except Exception as exc:
            if outcome and outcome["written"] and outcome["mode"] == "append":
                # a retry would append the same rows a second time
                raise OdibiRunError(
                    f"{where}: the rows were appended to {outcome['uri']}, but describing the "
                    f"result failed ({type(exc).__name__}: {first_message(exc)}); not retried, "
                    "so the rows are not appended twice"
                ) from exc
            raise
        return outcome

    # ------------------------------------------------------------------ input

    def _load_intermediate(self, context: dg.InputContext, key: tuple[str, ...], where: str) -> Any:
        engine = self._engine_for(context)
        stored = self._intermediate(context, key)
        if not engine.exists(stored, "parquet"):
            raise OdibiRunError(
                f"{where}: no stored result yet (looked in {stored.uri}). Materialize this "
                "upstream node first, or run the whole pipeline job."
            )
        return engine.read(stored, "parquet", where=where)

    # ------------------------------------------------------------------ helpers

    def _intermediate(
        self, context: dg.InputContext | dg.OutputContext, key: tuple[str, ...]
    ) -> Location:
        base = self.intermediate_dir or os.environ.get(INTERMEDIATE_ENV)
        if not base:
            base = self._base_dir(context, "odibi_spark")
        if "://" in base or base.startswith("dbfs:"):
            uri = posixpath.join(base, *key)
            local = LocalStorage(base_path=".").location(".")
            return Location(
                uri=uri,
                fs=local.fs,
                fs_path=uri,
                delta_uri=uri,
                spark_uri=uri,
            )
        return LocalStorage(base_path=base).location(os.path.join(*key))
