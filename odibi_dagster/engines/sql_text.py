"""SQL text literals that each engine's SQL reads back as written, shared by the built-in
transformers, the patterns and the validation tests."""

from __future__ import annotations


def string_literal(text: str, *, spark: bool) -> str:
    """``text`` as a SQL string literal: Spark SQL reads backslash escapes in literals (so a
    backslash and a quote are escaped), DuckDB does not (a quote is doubled)."""
    if spark:
        return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return "'" + text.replace("'", "''") + "'"
