"""The files a run was started for: set by a new-files sensor through run config.

A run a sensor starts carries, in its run config::

    resources:
      odibi_new_files:
        config: {connection: raw, path: landing/orders, files: [landing/orders/a.csv]}

and the node that reads ``raw:landing/orders`` reads just those files (paths relative to
the connection), not the whole folder. Re-executing the run in the web UI reuses its run
config, so it processes the same files again. A run started any other way leaves
``files`` empty and every node reads its whole ``read.path``.
"""

from __future__ import annotations

from typing import Any

import dagster as dg
from pydantic import Field

NEW_FILES_KEY = "odibi_new_files"

__all__ = ["NEW_FILES_KEY", "NewFilesResource", "files_for", "files_metadata", "same_path"]


def same_path(a: str, b: str) -> bool:
    """Whether two paths on a connection name the same folder (``x/`` is ``/x``)."""
    return a.strip().strip("/") == b.strip().strip("/")


class NewFilesResource(dg.ConfigurableResource):  # type: ignore[type-arg]
    """The files this run processes at one watched connection and path (none: everything)."""

    connection: str = Field(default="", description="The connection the files are on.")
    path: str = Field(default="", description="The watched folder or prefix (a node's read.path).")
    files: list[str] = Field(
        default_factory=list,
        description="Paths relative to the connection; empty: read the whole path.",
    )

    def files_for(self, connection: str, path: str) -> list[str]:
        """The files a node reading ``connection:path`` reads instead of the whole path."""
        if self.files and self.connection == connection and same_path(self.path, path):
            return list(self.files)
        return []


def files_for(resources: dict[str, Any], read: Any) -> list[str]:
    """The files of this run for a node's ``read:`` (a model or its metadata dict)."""
    chosen = resources.get(NEW_FILES_KEY)
    if not isinstance(chosen, NewFilesResource) or read is None:
        return []
    if isinstance(read, dict):
        return chosen.files_for(str(read["connection"]), str(read["path"]))
    return chosen.files_for(read.connection, read.path)


def files_metadata(files: list[str]) -> dict[str, Any]:
    """The files a node read, as asset metadata (nothing when it read its whole path)."""
    if not files:
        return {}
    return {
        "odibi/files": dg.MetadataValue.md("\n".join(f"- `{f}`" for f in files)),
        "odibi/file_count": len(files),
    }
