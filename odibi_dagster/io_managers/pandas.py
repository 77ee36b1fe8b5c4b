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
from typing import TYPE_CHECKING, Any

import dagster as dg

from odibi_dagster.config.yaml_source import resolve_env
from odibi_dagster.errors import OdibiRunError, storage_errors
from odibi_dagster.io_managers.base import (
    WRITE_KEY,
    OdibiIOManager,
    faithful_copy,
)
from odibi_dagster.resources.local import LocalStorage
from odibi_dagster.story import PendingStory

if TYPE_CHECKING:
    import pandas as pd

    from odibi_dagster.engines.pandas import PandasEngine


class PandasIOManager(OdibiIOManager):
    """Persists pandas DataFrames to Odibi connections and loads them back.

    Example::

        PandasIOManager(connections={"lake": LocalStorage(base_path="/data/lake")})

    A connection is looked up first among the resources of the step being served (a
    compiled project gives every asset its connections as required resources, local or
    Azure), then in ``connections``. An asset with metadata ``{"odibi/write": {"connection": "lake", "path":
    "gold/x.parquet", "format": "parquet", "mode": "overwrite"}}`` is written there.
    """

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

    def load_input(self, context: dg.InputContext) -> Any:
        df = super().load_input(context)
        # Each consumer gets its own view: with copy-on-write, a node that changes its
        # input in place changes only its copy, as it would in a separate process.
        return df.copy(deep=False)

    def _handle_output(
        self,
        context: dg.OutputContext,
        key: tuple[str, ...],
        obj: Any,
        pending: PendingStory | None,
    ) -> dict[str, Any] | None:
        """Persist ``obj``; return what was written (uri, format, mode, written) or None."""
        if obj is None:
            return None
        meta = dict(context.definition_metadata or {})
        where = self._where(meta, key)
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
        self._remember(context, key, obj)
        out_meta.update(self._describe(obj))
        context.add_output_metadata(out_meta)
        return outcome

    def _engine_for(self, context: dg.InputContext | dg.OutputContext) -> PandasEngine:
        return self.engine

    # ------------------------------------------------------------------ helpers

    def _describe(self, df: pd.DataFrame) -> dict[str, Any]:
        engine = self.engine
        return {
            "dagster/row_count": engine.row_count(df),
            "dagster/column_schema": self._schema_metadata(engine.column_schema(df)),
            "preview": dg.MetadataValue.md(engine.preview_markdown(df, self.preview_rows)),
        }

    def _paths(self, base: str, key: tuple[str, ...]) -> tuple[str, str]:
        stem = os.path.join(base, *key)
        return stem + ".parquet", stem + ".pickle"

    def _store_intermediate(
        self, context: dg.OutputContext, key: tuple[str, ...], df: pd.DataFrame
    ) -> str:
        base = self._base_dir(context, "odibi")
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
        base = self._base_dir(context, "odibi")
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
