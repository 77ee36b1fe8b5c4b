"""What a pattern (or a target-aware transformer) works with: the engine, the node, its
inputs, the connections, and the table it maintains.

The patterns are written as SQL run by :meth:`Engine.sql` (DuckDB on pandas, Spark SQL on
Spark), so the same YAML computes the same rows on both engines; :class:`Sql` holds the
little that differs between the two dialects.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from odibi_dagster.config.models import NodeConfig
from odibi_dagster.engines.base import Engine, Frame
from odibi_dagster.engines.messages import fail
from odibi_dagster.engines.sql_text import string_literal
from odibi_dagster.errors import storage_errors
from odibi_dagster.resources.base import Location
from odibi_dagster.resources.connection import ConnectionResource

# formats a target path names by its extension; anything else is a Delta table
_BY_EXTENSION = {".parquet": "parquet", ".csv": "csv", ".json": "json"}


@dataclass(frozen=True)
class Sql:
    """The SQL dialect of an engine: DuckDB (pandas) or Spark SQL."""

    spark: bool

    def q(self, name: str) -> str:
        """``name`` quoted as an identifier."""
        if self.spark:
            return "`" + name.replace("`", "``") + "`"
        return '"' + name.replace('"', '""') + '"'

    def cols(self, names: Sequence[str], alias: str = "") -> str:
        prefix = f"{alias}." if alias else ""
        return ", ".join(prefix + self.q(n) for n in names)

    def differs(self, a: str, b: str) -> str:
        """``a`` and ``b`` differ, a null equal to a null."""
        return f"NOT ({a} <=> {b})" if self.spark else f"({a} IS DISTINCT FROM {b})"

    def same(self, a: str, b: str) -> str:
        return f"({a} <=> {b})" if self.spark else f"({a} IS NOT DISTINCT FROM {b})"

    @staticmethod
    def ts(value: _dt.datetime) -> str:
        return f"TIMESTAMP '{value:%Y-%m-%d %H:%M:%S.%f}'"

    def text(self, value: str) -> str:
        """``value`` as a string literal that the engine reads back as written: Spark SQL
        reads backslash escapes in literals, DuckDB does not."""
        return string_literal(value, spark=self.spark)


@dataclass(frozen=True)
class Target:
    """The table a pattern reads (and, for merge, writes): a path on a connection."""

    connection: str
    path: str
    format: str

    def describe(self) -> str:
        return f"{self.connection}.{self.path} ({self.format})"


def target_of(
    node: NodeConfig,
    target: str | None,
    connection: str | None = None,
    path: str | None = None,
    connections: Sequence[str] | None = None,
    *,
    use_write: bool = True,
) -> Target | str | None:
    """The target ``target`` (``<connection>.<path>``) or ``connection`` + ``path`` names,
    else the node's ``write:`` (if ``use_write``); None when there is none; a message (str)
    when ``target`` names no connection of ``connections``."""
    write = node.write
    if connection is not None and path is not None:
        conn, rel = connection, path
    elif target is not None:
        head, dot, rest = target.partition(".")
        if not dot or not rest or (connections is not None and head not in connections):
            known = ", ".join(connections or [])
            return (
                f"target '{target}' names no connection: write it as <connection>.<path> "
                f"(connections: {known}), or give `connection:` and `path:`"
            )
        conn, rel = head, rest
    elif write is not None and use_write:
        return Target(write.connection, write.path, str(write.format))
    else:
        return None
    if write is not None and write.connection == conn and write.path.strip("/") == rel.strip("/"):
        return Target(conn, rel, str(write.format))
    ext = next((f for e, f in _BY_EXTENSION.items() if rel.lower().endswith(e)), "delta")
    return Target(conn, rel, ext)


@dataclass
class PatternContext:
    """What a pattern or a target-aware transformer gets as its first argument.

    ``df`` is the node's current frame (what it read, or its transform's result; None
    for a node that only generates data), ``frames`` its upstream nodes' results by name,
    ``resources`` the step's resources by key (connections by their names). Odibi's
    ``context.get(name)`` and ``context.df`` work as there."""

    engine: Engine
    node: NodeConfig
    resources: Mapping[str, Any]
    frames: Mapping[str, Frame] = field(default_factory=dict)
    df: Frame | None = None
    # one time for every timestamp the pattern writes in this run (naive, UTC)
    now: _dt.datetime = field(
        default_factory=lambda: _dt.datetime.now(_dt.UTC).replace(tzinfo=None)
    )
    # what the pattern did, for the materialization's metadata
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def where(self) -> str:
        return self.node.where

    @property
    def dialect(self) -> Sql:
        return Sql(spark=self.engine.name == "spark")

    def get(self, name: str) -> Frame:
        """An upstream node's result (Odibi's ``context.get``)."""
        if name not in self.frames:
            known = ", ".join(self.frames) or "none"
            fail(self.where, f"'{name}' is not an input of this node (inputs: {known})")
        return self.frames[name]

    def current(self, what: str) -> Frame:
        """The frame the pattern works on; fails naming the pattern when there is none."""
        if self.df is None:
            fail(
                self.where,
                f"{what} needs input rows: give the node `read:`, or depends_on a node "
                "whose result it works on",
            )
        return self.df

    def sql(self, query: str, **tables: Frame) -> Frame:
        return self.engine.sql(query, tables, where=self.where)

    def columns(self, df: Frame) -> list[str]:
        return [c for c, _ in self.engine.column_schema(df)]

    def families(self, df: Frame) -> dict[str, str]:
        return {c: self.engine.type_family(t) for c, t in self.engine.column_schema(df)}

    def rows(self, query: str, n: int, **tables: Frame) -> list[dict[str, Any]]:
        """The first ``n`` rows of ``query`` (a small answer the pattern checks)."""
        return self.engine.head(self.sql(query, **tables), n)

    # ------------------------------------------------------------------ the target

    def target(
        self,
        target: str | None,
        connection: str | None = None,
        path: str | None = None,
        *,
        use_write: bool = True,
    ) -> Target | None:
        found = target_of(
            self.node, target, connection, path, self._connections(), use_write=use_write
        )
        if isinstance(found, str):
            fail(self.where, found)
        return found

    def location(self, target: Target) -> Location:
        conn = self.resources.get(target.connection)
        if not isinstance(conn, ConnectionResource):
            fail(self.where, f"connection '{target.connection}' of the pattern's target is unknown")
        return conn.location(target.path)

    def read_target(self, target: Target | None) -> Frame | None:
        """The target's rows, or None when it is not there yet (a first run)."""
        if target is None:
            return None
        loc = self.location(target)
        with storage_errors(self.where, "reading", loc.uri, loc.storage_options):
            if not self.engine.exists(loc, target.format):
                return None
            return self.engine.read(loc, target.format, {}, where=self.where)

    def _connections(self) -> list[str]:
        return [k for k, v in self.resources.items() if isinstance(v, ConnectionResource)]
