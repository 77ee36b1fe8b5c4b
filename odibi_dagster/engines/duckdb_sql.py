"""SQL steps on pandas: DuckDB over the node's upstream DataFrames, each visible by name."""

from __future__ import annotations

import re
from collections.abc import Mapping

import duckdb
import pandas as pd

from odibi_dagster.engines.messages import fail
from odibi_dagster.errors import first_line

_MISSING_TABLE = re.compile(r"Table with name (.+?) does not exist", re.IGNORECASE)


def run_sql(query: str, tables: Mapping[str, pd.DataFrame], *, where: str = "") -> pd.DataFrame:
    """Run ``query`` on DuckDB with each DataFrame in ``tables`` visible under its name."""
    con = duckdb.connect()
    try:
        con.execute("SET python_enable_replacements = false")
        for name, frame in tables.items():
            con.register(name, frame)
        try:
            return _narrow_hugeints(con.sql(query)).df()
        except duckdb.Error as exc:
            message = str(exc)
            available = ", ".join(tables) or "(none)"
            match = _MISSING_TABLE.search(message)
            if isinstance(exc, duckdb.CatalogException) and match:
                fail(
                    where,
                    f"SQL step refers to table '{match.group(1)}', which is not available. "
                    f"Available tables: {available}.",
                )
            fail(
                where,
                f"SQL step failed ({type(exc).__name__}: {message.strip()}) in query "
                f"starting '{first_line(query)}'. Fix the SQL; available tables: {available}",
            )
    finally:
        con.close()


def _narrow_hugeints(rel: duckdb.DuckDBPyRelation) -> duckdb.DuckDBPyRelation:
    """DuckDB sums integers into HUGEINT, which pandas can only hold as float64: ``SUM(x)``
    of integers would come back as 93.0. Cast them to BIGINT (an overflow is an error)."""
    huge = {i for i, t in enumerate(rel.types) if str(t) in ("HUGEINT", "UHUGEINT")}
    if not huge:
        return rel
    cols = []
    for i, name in enumerate(rel.columns):
        quoted = '"' + name.replace('"', '""') + '"'
        cols.append(f"CAST({quoted} AS BIGINT) AS {quoted}" if i in huge else quoted)
    return rel.project(", ".join(cols))
