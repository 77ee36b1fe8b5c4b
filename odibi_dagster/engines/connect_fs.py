"""The filesystem work of the Spark engine where Spark has no JVM in this process (Spark
Connect, Databricks Connect).

A classic session moves, lists and deletes through Hadoop's FileSystem in its own JVM.
Over Spark Connect the JVM is the server's, out of reach; the engine does that work on
the client instead, through the connection's fsspec filesystem (adlfs for Azure, with
the connection's own credentials; the local disk when the server runs on this machine).
Spark addresses a path by its ``spark_uri`` (``abfss://container@account.../p``), fsspec
by its ``fs_path`` (``container/p``): :class:`ClientMover` turns one into the other.

Where the client cannot reach the data (a local path with the server on another
machine, a ``dbfs:/`` path), there is no mover, and the engine does what needs none:
writes in place, and asks Spark whether a path exists.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from odibi_dagster.engines.replace import FsspecMover
from odibi_dagster.resources.base import Location


def _parent(path: str) -> str:
    return path.rstrip("/").rsplit("/", 1)[0] if "/" in path.rstrip("/") else ""


def client_reaches(loc: Location, shares_local_paths: bool) -> bool:
    """Whether this process reaches the data at ``loc`` as Spark does: remote storage
    through the connection's filesystem, or a local path when the server is local."""
    from fsspec.implementations.local import LocalFileSystem

    if loc.fs is None or not loc.fs_path or not loc.spark_uri:
        return False
    if isinstance(loc.fs, LocalFileSystem):
        # a dbfs:/ or abfss:// address given as a local path is not on this disk
        return shares_local_paths and "://" not in loc.fs_path and "://" not in loc.spark_uri
    return True


@dataclass
class ClientMover:
    """A :class:`~odibi_dagster.engines.replace.Mover` over Spark addresses beside
    ``loc`` (the target, its hidden siblings, its children), done by fsspec."""

    loc: Location
    replaces_files = True

    def __post_init__(self) -> None:
        self._fs = FsspecMover(self.loc.fs)
        self._spark_parent = _parent(self.loc.spark_uri)
        self._fs_parent = _parent(self.loc.fs_path)

    def fs_path(self, spark_path: str) -> str:
        """The fsspec path of a Spark address under the target's folder."""
        if not spark_path.startswith(self._spark_parent):
            raise ValueError(f"{spark_path} is not beside {self.loc.uri}")
        return self._fs_parent + spark_path[len(self._spark_parent) :]

    def exists(self, path: str) -> bool:
        return self._fs.exists(self.fs_path(path))

    def is_dir(self, path: str) -> bool:
        return self._fs.is_dir(self.fs_path(path))

    def children(self, path: str) -> list[tuple[str, bool]]:
        return self._fs.children(self.fs_path(path))

    def move(self, src: str, dst: str) -> None:
        self._fs.move(self.fs_path(src), self.fs_path(dst))

    def delete(self, path: str) -> None:
        self._fs.delete(self.fs_path(path))

    def listing(self, path: str) -> list[tuple[str, bool, float]]:
        """(name, is a directory, modification time in epoch seconds) of each entry."""
        fs = self.loc.fs
        out = []
        for entry in fs.ls(self.fs_path(path), detail=True):
            name = str(entry["name"]).rstrip("/").rsplit("/", 1)[-1]
            out.append((name, entry.get("type") == "directory", _mtime(entry)))
        return out


def _mtime(entry: dict[str, Any]) -> float:
    """An fsspec entry's modification time (local: ``mtime``; adlfs: ``last_modified``)."""
    value = entry.get("mtime", entry.get("last_modified"))
    if isinstance(value, datetime):
        return value.timestamp()
    try:
        return float(value) if value is not None else 0.0
    except (TypeError, ValueError):
        return 0.0
