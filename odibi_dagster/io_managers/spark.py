"""SparkIOManager: the IO manager of ``engine: spark`` assets."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from odibi_dagster.io_managers.base import OdibiIOManager

INTERMEDIATE_ENV = "ODIBI_SPARK_INTERMEDIATE_DIR"


class SparkIOManager(OdibiIOManager):
    """Persists Spark DataFrames to Odibi connections and loads them back.

    Example::

        SparkIOManager(connections={"lake": LocalStorage(base_path="/data/lake")})

    The session comes from the step's ``odibi_spark`` resource (a
    :class:`~odibi_dagster.SparkSessionResource`), configured for every connection among
    the step's resources. Consumers get a lazy scan of what was written, never a plan
    computed again; the data never passes through the driver. Results with no faithful
    copy on storage are kept as Parquet, one directory per run, at
    ``<intermediate_dir>/<asset key...>/<run id>/``; a consumer reads the result of the
    run that produced its input, and results no one will read again are deleted (see
    :class:`~odibi_dagster.io_managers.base.OdibiIOManager`).
    """

    engine: str = Field(default="spark", description="The engine: spark.")
    intermediate_dir: str | None = Field(
        default=None,
        description="Where results with no faithful copy on storage are kept as Parquet, "
        "one directory per run of each asset (<dir>/<asset key...>/<run id>/), for one "
        "Dagster instance: a local directory, or on a cluster a URI every executor "
        "reaches (dbfs:/..., abfss://...). Default: $ODIBI_SPARK_INTERMEDIATE_DIR, else "
        "<DAGSTER_HOME>/storage/odibi_spark.",
    )

    intermediate_env: ClassVar[str | None] = INTERMEDIATE_ENV
