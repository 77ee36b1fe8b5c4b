"""The one place that lists the data formats, write modes and engines odibi_dagster supports."""

from __future__ import annotations

from typing import Literal, get_args

Format = Literal["csv", "parquet", "json", "delta"]
WriteMode = Literal["overwrite", "append", "error", "ignore"]
EngineName = Literal["pandas", "spark"]
ExecutorName = Literal["in_process", "multiprocess"]

FORMATS: tuple[str, ...] = get_args(Format)
WRITE_MODES: tuple[str, ...] = get_args(WriteMode)
