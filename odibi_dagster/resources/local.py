"""Local disk as an Odibi connection (``type: local``)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from typing import ClassVar

from pydantic import Field

from odibi_dagster.errors import OdibiConnectionError
from odibi_dagster.resources.base import Location
from odibi_dagster.resources.connection import ConnectionResource, StoredFile, listed


class LocalStorage(ConnectionResource):
    """A directory on local disk (or a mounted volume such as /dbfs); node paths are
    relative to ``base_path``.

    Example::

        LocalStorage(base_path="/data/lake").location("silver/sales.parquet").uri
        # '/data/lake/silver/sales.parquet'
    """

    yaml_type: ClassVar[str] = "local"
    path_fields: ClassVar[tuple[str, ...]] = ("base_path",)

    base_path: str = Field(
        description="Directory that node paths are relative to; a relative path is "
        "resolved against the directory of the YAML file that declares it."
    )

    def full_path(self, path: str) -> str:
        """Absolute OS path of ``path`` under ``base_path``."""
        return os.path.normpath(os.path.join(os.path.abspath(self.base_path), path))

    def uri(self, path: str) -> str:
        """The user-facing address of ``path``: its absolute local path."""
        return self.full_path(path)

    def location(self, path: str) -> Location:
        from fsspec.implementations.local import LocalFileSystem

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

    def check(self) -> str:
        """``base_path`` exists, is a directory, and a file can be created in it."""
        path = os.path.abspath(self.base_path)
        head = f"{self.describe()}: base_path {path}"
        if not os.path.exists(path):
            raise OdibiConnectionError(
                f"{head} does not exist. Create it (mkdir -p {path}) or fix base_path."
            )
        if not os.path.isdir(path):
            raise OdibiConnectionError(
                f"{head} is not a directory. Point base_path at a directory."
            )
        try:
            fd, probe = tempfile.mkstemp(prefix=".odibi-check-", dir=path)
            os.close(fd)
            os.remove(probe)
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            raise OdibiConnectionError(
                f"{head} is not writable ({reason}). Fix its permissions or base_path."
            ) from None
        return f"{path} exists and is writable"

    def list_files(self, path: str = "", pattern: str = "*") -> Iterator[StoredFile]:
        root = os.path.abspath(self.base_path)
        prefix = path.strip("/")
        full = self.full_path(prefix)
        # a folder is walked whole; a name prefix walks the folder it is in
        top = full if os.path.isdir(full) else os.path.dirname(full)
        for folder, dirs, files in os.walk(top):
            dirs[:] = sorted(d for d in dirs if not d.startswith((".", "_")))
            for name in sorted(files):
                file = os.path.join(folder, name)
                rel = os.path.relpath(file, root).replace(os.sep, "/")
                if not rel.startswith(prefix) or not listed(rel, pattern):
                    continue
                try:
                    st = os.stat(file)
                except FileNotFoundError:  # removed while listing
                    continue
                # a file moved in keeps its old mtime, but its ctime says when it came
                changed = max(st.st_mtime, st.st_ctime)
                yield StoredFile(rel, st.st_size, changed, f"{st.st_size}-{st.st_mtime_ns}")
