"""PandasIOManager: the IO manager of ``engine: pandas`` assets."""

from __future__ import annotations

from pydantic import Field

from odibi_dagster.io_managers.base import OdibiIOManager


class PandasIOManager(OdibiIOManager):
    """Persists pandas DataFrames to Odibi connections and loads them back.

    Example::

        PandasIOManager(connections={"lake": LocalStorage(base_path="/data/lake")})

    Results with no faithful copy on storage are kept in memory within a process, and as
    Parquet, one file per run, at ``<intermediate_dir>/<asset key...>/<run id>.parquet``
    (default ``intermediate_dir``: ``$DAGSTER_HOME/storage/odibi``); a consumer reads the
    result of the run that produced its input, and results no one will read again are
    deleted (see :class:`~odibi_dagster.io_managers.base.OdibiIOManager`). Each consumer
    gets its own copy-on-write view of a result.
    """

    engine: str = Field(default="pandas", description="The engine: pandas.")
