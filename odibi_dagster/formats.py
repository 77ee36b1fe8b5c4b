"""The one place that lists the data formats, write modes and engines odibi_dagster supports."""

from __future__ import annotations

from typing import Literal, get_args

Format = Literal["csv", "parquet", "json", "delta"]
WriteMode = Literal["overwrite", "append", "error", "ignore"]
EngineName = Literal["pandas", "spark"]
ExecutorName = Literal["in_process", "multiprocess"]

FORMATS: tuple[str, ...] = get_args(Format)
WRITE_MODES: tuple[str, ...] = get_args(WriteMode)
ENGINES: tuple[str, ...] = get_args(EngineName)
EXECUTORS: tuple[str, ...] = get_args(ExecutorName)

WRITE_MODE_MEANING = {
    "overwrite": "replace whatever is at the path",
    "append": "add the rows to what is at the path (create it if absent)",
    "error": "fail if something is already at the path",
    "ignore": "leave an existing path untouched and skip the write",
}
