"""Kept so ``odibi_dagster.formats`` imports keep working: see :mod:`odibi_dagster.vocabulary`."""

from odibi_dagster.vocabulary import (
    FORMATS,
    WRITE_MODES,
    ExecutorName,
    Format,
    WriteMode,
)

__all__ = ["FORMATS", "WRITE_MODES", "ExecutorName", "Format", "WriteMode"]
