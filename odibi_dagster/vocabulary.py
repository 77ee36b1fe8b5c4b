"""The words of the YAML format with a fixed set of values: data formats, write modes and
executors. The one place each list lives; the config models, the engines and the docs'
tests read them from here. (Engines are listed by their registry,
``odibi_dagster.engines.registry``.)"""

from __future__ import annotations

from typing import Literal, get_args

Format = Literal["csv", "parquet", "json", "delta"]
WriteMode = Literal["overwrite", "append", "error", "ignore"]
ExecutorName = Literal["in_process", "multiprocess"]

FORMATS: tuple[str, ...] = get_args(Format)
WRITE_MODES: tuple[str, ...] = get_args(WriteMode)
