"""Local disk as an Odibi connection (``type: local``)."""

from __future__ import annotations

import os

import dagster as dg
from fsspec.implementations.local import LocalFileSystem
from pydantic import Field

from odibi_dagster.resources.base import Location


class LocalStorage(dg.ConfigurableResource):
    """A directory on local disk; node paths are relative to ``base_path``.

    Example::

        LocalStorage(base_path="/data/lake").location("silver/sales.parquet").uri
        # '/data/lake/silver/sales.parquet'
    """

    base_path: str = Field(
        description="Directory that node paths are relative to. A relative base_path in "
        "YAML is resolved against the directory of the YAML file that declares it."
    )
    connection_name: str = Field(
        default="", description="The name of this connection in the Odibi project."
    )

    def full_path(self, path: str) -> str:
        """Absolute OS path of ``path`` under ``base_path``."""
        return os.path.normpath(os.path.join(os.path.abspath(self.base_path), path))

    def uri(self, path: str) -> str:
        """The user-facing address of ``path``: its absolute local path."""
        return self.full_path(path)

    def location(self, path: str) -> Location:
        full = self.full_path(path)
        return Location(
            uri=full,
            fs=LocalFileSystem(),
            fs_path=full,
            delta_uri=full,
            storage_options={},
            connection=self.connection_name,
            spark_uri=full,
        )
