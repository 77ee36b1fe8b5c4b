"""What an engine needs to know about a place where data lives, whatever the storage."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # fsspec is imported where files are touched, not to load definitions
    from fsspec import AbstractFileSystem


@dataclass(frozen=True)
class Location:
    """One data path on one connection, in every form the engines need.

    ``uri`` is what users see (and what lineage compares); ``fs``/``fs_path`` serve
    file formats through fsspec; ``delta_uri``/``storage_options`` serve delta-rs.
    ``spark_uri`` serves the Spark engine. ``storage_options`` may hold credentials: it is never logged or put in metadata.
    """

    uri: str
    fs: AbstractFileSystem
    fs_path: str
    delta_uri: str
    storage_options: dict[str, Any] = field(default_factory=dict, repr=False)
    connection: str = ""
    # what Spark opens (a local path, abfss:// or an emulator's wasb://); empty when Spark
    # cannot reach this place, and ``spark_note`` says why
    spark_uri: str = ""
    spark_note: str = ""
