"""PandasIOManager: the IO manager of ``engine: pandas`` assets."""

from __future__ import annotations

from pydantic import Field

from odibi_dagster.io_managers.base import OdibiIOManager


class PandasIOManager(OdibiIOManager):
    """Persists pandas DataFrames to Odibi connections and loads them back.

    Example::

        PandasIOManager(connections={"lake": LocalStorage(base_path="/data/lake")})

    Results with no faithful copy on storage are kept in memory within a process, and as
    Parquet under ``intermediate_dir`` (default ``$DAGSTER_HOME/storage/odibi``). Each
    consumer gets its own copy-on-write view of a result.
    """

    engine: str = Field(default="pandas", description="The engine: pandas.")
