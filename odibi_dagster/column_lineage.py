"""Column-level lineage: which upstream columns make each column of a node's result.

SQL steps are parsed with sqlglot (DuckDB dialect on pandas, Spark on Spark): CTEs,
joins, aliases, subqueries, unions, window functions and aggregations are followed, and
``*`` (with DuckDB ``EXCLUDE``/``REPLACE``, Spark ``* EXCEPT``) is expanded from the
upstream columns when they are known. Steps chain through ``__result__``. A function step
contributes what its ``@transform(columns=...)`` declares, and nothing otherwise.

The rule is "unknown rather than wrong": a column whose sources cannot all be named gets
no edges, and a query that cannot be resolved gives no lineage for its node.

Two places compute it:

- at load (:func:`static_lineage`), from the YAML alone: a node's columns are known when
  its SQL names them, or expands ``*`` over columns known upstream; a node that reads a
  path another node writes sees the writer's columns. Nothing is read from storage.
- at run time (:class:`ColumnPlan`), from the actual columns of the node's inputs; the
  result goes into the materialization's metadata.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import dagster as dg
import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError
from sqlglot.lineage import to_node
from sqlglot.optimizer.qualify import qualify
from sqlglot.optimizer.scope import build_scope, traverse_scope
from sqlglot.schema import MappingSchema

from odibi_dagster.engines.delta_options import reshapes
from odibi_dagster.transforms import CURRENT_NAME, RESULT_NAME, declared_columns, get_function

if TYPE_CHECKING:
    from odibi_dagster.config.models import Step
    from odibi_dagster.translator import OdibiNode

__all__ = [
    "LINEAGE_KEY",
    "SCHEMA_KEY",
    "ColumnPlan",
    "LineageUnresolved",
    "Relation",
    "sql_columns",
    "static_lineage",
]

LINEAGE_KEY = "dagster/column_lineage"
SCHEMA_KEY = "dagster/column_schema"
# the SQL dialect of each engine's SQL steps
DIALECTS = {"pandas": "duckdb", "spark": "spark"}
# the table name that stands for what the node itself read (``read:``)
READ = "<read>"
# read options that leave a file's columns as they were written (others may select,
# rename or reorder columns: the read's columns are then unknown at load)
_PLAIN_READ_OPTIONS = frozenset({"dtype", "encoding", "inferSchema", "parse_dates", "multiLine"})
# the column type shown at load, before a run has seen the data
UNKNOWN_TYPE = "unknown"

_log = logging.getLogger("odibi_dagster")
_AUTO_ALIAS = re.compile(r"_col_\d+")

Deps = frozenset[tuple[str, str]]


class LineageUnresolved(Exception):
    """A SQL step whose column lineage cannot be told. ``for_want_of`` names the tables it
    reads whose columns are unknown (the reason, when not empty)."""

    def __init__(self, reason: str, for_want_of: Iterable[str] = ()):
        super().__init__(reason)
        self.for_want_of = tuple(for_want_of)


# --------------------------------------------------------------------------- one SQL step


def sql_columns(
    sql: str, tables: Mapping[str, Sequence[str] | None], dialect: str
) -> list[tuple[str | None, Deps]]:
    """The output columns of query ``sql``, in order, each with the ``(table, column)``
    pairs it is computed from. ``tables`` gives the columns of each table the query may
    read (None: unknown). A column's name is None when the query leaves it unnamed (an
    expression without ``AS``): its name is the engine's to choose.

    Raises :class:`LineageUnresolved` when any output column's sources cannot all be named.
    """
    try:
        parsed = sqlglot.parse_one(sql, read=dialect)
    except SqlglotError as exc:
        raise LineageUnresolved(f"sqlglot cannot parse it: {_short(exc)}") from None
    if not isinstance(parsed, exp.Query):
        raise LineageUnresolved("it is not a query")
    by_lower = {name.lower(): name for name in tables}
    quick = _single_table_columns(parsed, tables, by_lower)
    if quick is not None:
        return quick
    referenced = {t.name.lower() for t in parsed.find_all(exp.Table)}
    unknown = sorted(
        by_lower[t] for t in referenced if t in by_lower and tables[by_lower[t]] is None
    )
    _check_unambiguous(parsed, {t.lower() for t in unknown})
    written = _written_names(parsed, tables)
    schema = MappingSchema(
        {name: {c: "VARCHAR" for c in cols} for name, cols in tables.items() if cols is not None},
        dialect=dialect,
    )
    try:
        qualified = qualify(
            parsed,
            dialect=dialect,
            schema=schema,
            validate_qualify_columns=False,
            identify=False,
            quote_identifiers=False,
        )
        _check_resolved(qualified, unknown)
        root = build_scope(qualified)
        if root is None:
            raise LineageUnresolved("it is not a query")
        out = []
        for i, select in enumerate(qualified.selects):
            node = to_node(i, root, dialect, schema=schema)
            deps = set()
            for n in node.walk():
                if isinstance(n.expression, exp.Table):
                    deps.add(_source_column(n.expression.name, n.name, tables, by_lower, unknown))
            out.append((_output_name(select, written), frozenset(deps)))
        return out
    except LineageUnresolved:
        raise
    except (SqlglotError, KeyError, ValueError, AttributeError, IndexError) as exc:
        raise LineageUnresolved(f"sqlglot cannot resolve it: {_short(exc)}", unknown) from None


# what a query may hold for the quick path: anything else goes through sqlglot's optimizer
_NOT_QUICK = (
    exp.Star,
    exp.Subquery,
    exp.Join,
    exp.With,
    exp.Lateral,
    exp.Unnest,
    exp.Pivot,
    exp.Lambda,
)


def _single_table_columns(
    parsed: exp.Expr,
    tables: Mapping[str, Sequence[str] | None],
    by_lower: Mapping[str, str],
) -> list[tuple[str | None, Deps]] | None:
    """The answer for the most common step, a SELECT of named columns and expressions
    from one table, without sqlglot's optimizer (a few times faster at load); None for
    anything else, or anything in doubt."""
    if not isinstance(parsed, exp.Select) or parsed.find(*_NOT_QUICK) is not None:
        return None
    if any(isinstance(s, exp.Select) for s in parsed.find_all(exp.Select) if s is not parsed):
        return None
    sources = list(parsed.find_all(exp.Table))
    if len(sources) != 1:
        return None
    table = by_lower.get(sources[0].name.lower())
    if table is None or sources[0].args.get("db") or sources[0].args.get("catalog"):
        return None
    names = {sources[0].alias_or_name.lower(), sources[0].name.lower()}
    cols = tables[table]
    known = {c.lower(): c for c in cols} if cols is not None else None
    aliases = {s.alias.lower() for s in parsed.selects if isinstance(s, exp.Alias)}
    out: list[tuple[str | None, Deps]] = []
    for select in parsed.selects:
        deps = set()
        for column in select.find_all(exp.Column):
            if column.table and column.table.lower() not in names:
                return None  # a struct field, another table: let the optimizer decide
            name = column.name.lower()
            if known is not None:
                if name not in known:
                    return None  # an alias reference, a lambda variable, a mistake
                deps.add((table, known[name]))
            elif name in aliases or not name:
                return None  # could be an alias of this SELECT
            else:
                deps.add((table, column.name))
        if isinstance(select, exp.Alias):
            out.append((select.alias, frozenset(deps)))
        elif isinstance(select, exp.Column):
            name = select.name
            out.append((known.get(name.lower(), name) if known else name, frozenset(deps)))
        else:
            out.append((None, frozenset(deps)))
    return out


def _short(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:200]


def _written_names(parsed: exp.Expr, tables: Mapping[str, Sequence[str] | None]) -> dict[str, str]:
    """Names as the engines spell them, by their lower-case form (both compare names
    without case; sqlglot gives them in lower case): a column as its table spells it, an
    alias as the query does."""
    names: dict[str, str] = {}
    for cols in tables.values():
        for c in cols or ():
            names.setdefault(c.lower(), c)
    for ident in parsed.find_all(exp.Identifier):
        names.setdefault(ident.name.lower(), ident.name)
    for alias in parsed.find_all(exp.Alias):  # a name the query gives: as it spells it
        if alias.alias:
            names[alias.alias.lower()] = alias.alias
    return names


def _check_unambiguous(parsed: exp.Expr, unknown: set[str]) -> None:
    """Where a query joins a table whose columns are unknown, a column it names without
    its table, or a ``*``, could be that table's: sqlglot would guess from the others."""
    if not unknown:
        return
    for scope in traverse_scope(parsed.copy()):
        sources = scope.selected_sources.values()
        if len(sources) < 2 or not any(
            isinstance(src, exp.Table) and src.name.lower() in unknown for _, src in sources
        ):
            continue
        expression = scope.expression
        aliases = (
            {s.alias.lower() for s in expression.selects if isinstance(s, exp.Alias)}
            if isinstance(expression, exp.Select)
            else set()
        )
        if isinstance(expression, exp.Select) and any(
            isinstance(s, exp.Star) for s in expression.selects
        ):
            raise LineageUnresolved(
                "'*' over a join with a table whose columns are unknown", sorted(unknown)
            )
        for column in scope.unqualified_columns:
            if column.name.lower() not in aliases:
                raise LineageUnresolved(
                    f"column '{column.name}' could be in more than one table", sorted(unknown)
                )


def _check_resolved(qualified: exp.Expr, unknown: Sequence[str]) -> None:
    """Every column must belong to one source, and every ``*`` must have been expanded."""
    for scope in traverse_scope(qualified):
        expression = scope.expression
        if isinstance(expression, exp.Select) and any(
            isinstance(s, exp.Star) or (isinstance(s, exp.Column) and isinstance(s.this, exp.Star))
            for s in expression.selects
        ):
            raise LineageUnresolved("'*' over a table whose columns are unknown", unknown)
        for column in scope.columns:
            if column.table:
                if column.table not in scope.sources and not scope.is_correlated_subquery:
                    raise LineageUnresolved(f"'{column.sql()}' names no table of the query")
            elif len(scope.selected_sources) != 1:
                raise LineageUnresolved(
                    f"column '{column.name}' could be in more than one table", unknown
                )


def _source_column(
    table: str,
    qualified_name: str,
    tables: Mapping[str, Sequence[str] | None],
    by_lower: Mapping[str, str],
    unknown: Sequence[str],
) -> tuple[str, str]:
    name = by_lower.get(table.lower())
    if name is None:
        raise LineageUnresolved(f"it reads '{table}', which is not among its inputs")
    column = exp.to_column(qualified_name).name
    if column == "*":
        raise LineageUnresolved(f"'*' over '{name}', whose columns are unknown", unknown)
    cols = tables[name]
    if cols is None:
        return (name, column)
    for c in cols:
        if c.lower() == column.lower():
            return (name, c)
    raise LineageUnresolved(f"'{name}' has no column '{column}'")


def _output_name(select: exp.Expr, written: Mapping[str, str]) -> str | None:
    name = select.alias_or_name
    if not name or (_AUTO_ALIAS.fullmatch(name) and name not in written.values()):
        return None
    return written.get(name.lower(), name)


# --------------------------------------------------------------------------- a node's steps


@dataclass(frozen=True)
class Relation:
    """The columns of a frame: each with its sources (``(table, column)`` pairs in the
    terms of the node that computed it; None: unknown). ``complete`` says whether these
    are all its columns."""

    columns: tuple[tuple[str, Deps | None], ...] = ()
    complete: bool = False

    @staticmethod
    def identity(table: str, names: Iterable[str], complete: bool = True) -> Relation:
        return Relation(tuple((c, frozenset({(table, c)})) for c in names), complete)

    def names(self) -> list[str] | None:
        """All column names, or None when they are not all known."""
        return [c for c, _ in self.columns] if self.complete else None

    def deps(self, column: str) -> Deps | None:
        for c, d in self.columns:
            if c.lower() == column.lower():
                return d
        return None


@dataclass(frozen=True)
class StepFailure:
    step: int  # 1-based
    reason: str
    for_want_of: tuple[str, ...] = ()


def run_steps(
    steps: Sequence[Step],
    frames: Mapping[str, Relation],
    current: Relation | None,
    dialect: str,
    actual: Sequence[Sequence[str]] = (),
) -> tuple[Relation, StepFailure | None]:
    """The relation the node's steps compute, its sources in terms of ``frames`` (and
    :data:`READ`); mirrors :func:`odibi_dagster.transforms.run_steps`. ``actual``: the
    columns each step's result had, when a run has seen them (a function step's columns
    are then all known, if not all their sources)."""
    for i, step in enumerate(steps, start=1):
        if step.sql is not None:
            tables: dict[str, Sequence[str] | None] = {n: r.names() for n, r in frames.items()}
            if current is not None:
                tables[RESULT_NAME] = current.names()
            df = current if current is not None else next(iter(frames.values()), None)
            if df is not None:
                tables[CURRENT_NAME] = df.names()
            try:
                cols = sql_columns(step.sql, tables, dialect)
            except LineageUnresolved as exc:
                return Relation(), StepFailure(i, str(exc), exc.for_want_of)
            out: list[tuple[str, Deps | None]] = []
            for name, deps in cols:
                if name is not None:
                    out.append((name, _through(deps, current, df)))
            current = Relation(tuple(out), complete=len(out) == len(cols))
            continue
        current = _function_step(step, frames, current)
        if len(actual) >= i:
            declared = dict(current.columns)
            current = Relation(
                tuple((c, _declared_deps(declared, c)) for c in actual[i - 1]), complete=True
            )
    return current or Relation(), None


def _declared_deps(declared: Mapping[str, Deps | None], column: str) -> Deps | None:
    for name, deps in declared.items():
        if name.lower() == column.lower():
            return deps
    return None


def _through(deps: Deps, current: Relation | None, df: Relation | None = None) -> Deps | None:
    """Sources read from ``__result__`` replaced by the previous step's sources (and from
    ``df``, by those of the frame it names)."""
    out: set[tuple[str, str]] = set()
    for table, column in deps:
        if table not in (RESULT_NAME, CURRENT_NAME):
            out.add((table, column))
            continue
        via = current if table == RESULT_NAME else df
        inner = via.deps(column) if via is not None else None
        if inner is None:
            return None
        out |= inner
    return frozenset(out)


def _function_step(
    step: Step, frames: Mapping[str, Relation], current: Relation | None
) -> Relation:
    """What a function step's ``@transform(columns=...)`` declares; unknown otherwise."""
    func = get_function(step.function or "")
    declared = declared_columns(func) if func is not None else None
    if declared is None:
        return Relation()
    visible = [*frames, *([RESULT_NAME] if current is not None else [])]
    out: list[tuple[str, Deps | None]] = []
    for name, sources in declared.items():
        deps: set[tuple[str, str]] | None = set()
        for source in sources:
            found = _declared_source(source, step.params, frames, current, visible)
            if found is None or deps is None:
                deps = None
                continue
            deps |= found
        out.append((name, frozenset(deps) if deps is not None else None))
    return Relation(tuple(out), complete=False)


def _declared_source(
    source: str,
    params: Mapping[str, Any],
    frames: Mapping[str, Relation],
    current: Relation | None,
    visible: Sequence[str],
) -> Deps | None:
    """``col`` (of ``__result__``, else of the only input) or ``table.col``, where table is
    an input's name or the name of a param whose value is one."""
    table, _, column = source.rpartition(".")
    if not table:
        if current is None and len(visible) != 1:
            return None
        table = RESULT_NAME if current is not None else visible[0]
    elif table not in visible and isinstance(params.get(table), str):
        table = params[table]
    if table == RESULT_NAME:
        return current.deps(column) if current is not None else None
    rel = frames.get(table)
    if rel is None:
        return None
    names = rel.names()
    if names is None:  # an input is its own source: its column, if it has it
        return frozenset({(table, column)})
    match = [c for c in names if c.lower() == column.lower()]
    return frozenset({(table, match[0])}) if match else None


# --------------------------------------------------------------------------- at run time


@dataclass(frozen=True)
class ColumnPlan:
    """What a node needs to tell its columns' lineage once its inputs are known."""

    node: str
    where: str
    dialect: str
    steps: tuple[Step, ...]
    inputs: tuple[tuple[str, dg.AssetKey], ...]  # depends_on name -> asset key
    read_key: dg.AssetKey | None = None  # the writer of what the node reads

    def metadata(
        self,
        inputs: Mapping[str, Sequence[str]],
        read: Sequence[str] | None,
        output: Sequence[str],
        steps: Sequence[Sequence[str]] = (),
    ) -> tuple[dict[str, Any], str | None]:
        """``dagster/column_lineage`` from the actual column names of the inputs, of what
        the node read, of each step's result and of the node's result; and a warning
        when a SQL step defeats sqlglot."""
        frames = {n: Relation.identity(n, cols) for n, cols in inputs.items()}
        current = Relation.identity(READ, read) if read is not None else None
        if not self.steps:
            rel = current if current is not None else frames[next(iter(frames))]
        else:
            rel, failure = run_steps(self.steps, frames, current, self.dialect, steps)
            if failure is not None:
                if failure.for_want_of:
                    return {}, None  # after a function step without a declaration
                return {}, (
                    f"{self.where}, step {failure.step}: column lineage left out: {failure.reason}"
                )
        named = _match_output(rel, output)
        lineage = _as_lineage(named, dict(self.inputs), self.read_key)
        return ({LINEAGE_KEY: lineage} if lineage is not None else {}), None


def _match_output(rel: Relation, output: Sequence[str]) -> list[tuple[str, Deps | None]]:
    """The relation's columns under the names the engine gave them (the same order when
    the relation is complete and as long; otherwise by name, ignoring case)."""
    if rel.complete and len(rel.columns) == len(output):
        return [(name, deps) for name, (_, deps) in zip(output, rel.columns, strict=True)]
    actual = {c.lower(): c for c in output}
    return [(actual[c.lower()], d) for c, d in rel.columns if c.lower() in actual]


def _as_lineage(
    columns: Iterable[tuple[str, Deps | None]],
    keys: Mapping[str, dg.AssetKey],
    read_key: dg.AssetKey | None,
) -> dg.TableColumnLineage | None:
    deps_by_column: dict[str, list[dg.TableColumnDep]] = {}
    for name, deps in columns:
        if deps is None:
            continue
        found = []
        for table, column in sorted(deps):
            key = read_key if table == READ else keys.get(table)
            if key is not None:  # a file no node writes: no asset to point at
                found.append(dg.TableColumnDep(asset_key=key, column_name=column))
        deps_by_column[name] = found
    return dg.TableColumnLineage(deps_by_column) if deps_by_column else None


# --------------------------------------------------------------------------- at load


@dataclass
class NodeColumns:
    """A node's columns as known at load, and its metadata."""

    relation: Relation
    metadata: dict[str, Any] = field(default_factory=dict)


def static_lineage(
    nodes: Sequence[OdibiNode], keys: Mapping[int, dg.AssetKey], *, at_load: bool = True
) -> dict[int, NodeColumns]:
    """Each node's columns and their lineage as far as the YAML tells them (by ``id`` of
    the node). Logs one warning per SQL step sqlglot cannot resolve although every table
    it reads has known columns. ``at_load=False``: nothing (``column_lineage: run|off``)."""
    if not at_load:
        return {id(n): NodeColumns(Relation()) for n in nodes}
    done: dict[int, NodeColumns] = {}
    busy: set[int] = set()

    def visit(node: OdibiNode) -> Relation:
        if id(node) in done:
            return done[id(node)].relation
        if id(node) in busy:  # a cycle (not built by compile): unknown
            return Relation()
        busy.add(id(node))
        done[id(node)] = _node_columns(node, keys, visit)
        busy.discard(id(node))
        return done[id(node)].relation

    for node in nodes:
        visit(node)
    return done


def _node_columns(node: OdibiNode, keys: Mapping[int, dg.AssetKey], visit: Any) -> NodeColumns:
    dialect = DIALECTS.get(node.engine)
    c = node.config
    if c.pattern is not None:  # a pattern reshapes the table: its lineage is unknown
        return NodeColumns(Relation())
    writer = node.reads_from[0] if len(node.reads_from) == 1 else None
    read_key = keys[id(writer)] if writer is not None else None
    current = None
    if c.read is not None or c.simulation is not None:  # a simulation: columns not traced
        current = Relation()
        if writer is not None and c.read is not None and set(c.read.options) <= _PLAIN_READ_OPTIONS:
            w = visit(writer)
            current = Relation(
                tuple((name, frozenset({(READ, name)})) for name, _ in w.columns),
                w.complete and _read_back_whole(writer),
            )
    frames = {}
    for up in node.inputs:
        rel = visit(up)
        frames[up.name] = Relation(
            tuple((name, frozenset({(up.name, name)})) for name, _ in rel.columns), rel.complete
        )
    if c.steps() and dialect is not None:
        rel, failure = run_steps(c.steps(), frames, current, dialect)
        if failure is not None:
            if not failure.for_want_of:
                _log.warning(
                    f"{c.where}, step {failure.step}: column lineage left out: {failure.reason}"
                )
            return NodeColumns(Relation())
    elif c.steps():
        return NodeColumns(Relation())
    elif current is not None:
        rel = current
    elif frames:
        rel = next(iter(frames.values()))
    else:
        rel = Relation()
    input_keys = {up.name: keys[id(up)] for up in node.inputs}
    meta: dict[str, Any] = {}
    lineage = _as_lineage(rel.columns, input_keys, read_key)
    if lineage is not None:
        meta[LINEAGE_KEY] = lineage
    if rel.complete and rel.columns:
        meta[SCHEMA_KEY] = dg.TableSchema(
            columns=[dg.TableColumn(name=n, type=UNKNOWN_TYPE) for n, _ in rel.columns]
        )
    return NodeColumns(rel, meta)


def _read_back_whole(writer: OdibiNode) -> bool:
    """Whether reading the writer's target gives just the columns it wrote: not so after
    an append or a merge (older columns may stay) or a write that reshapes the target."""
    w = writer.config.write
    return (
        w is not None
        and w.mode in ("overwrite", "error")
        and not reshapes(str(w.format), w.options or {})
    )


def column_plan(node: OdibiNode, keys: Mapping[int, dg.AssetKey]) -> ColumnPlan | None:
    """What the node's run needs to tell its lineage (None: its engine's SQL is unknown)."""
    dialect = DIALECTS.get(node.engine)
    if dialect is None or node.config.pattern is not None:
        return None
    c = node.config
    writer = node.reads_from[0] if len(node.reads_from) == 1 else None
    return ColumnPlan(
        node=c.name,
        where=c.where,
        dialect=dialect,
        steps=tuple(c.steps()),
        inputs=tuple((up.name, keys[id(up)]) for up in node.inputs),
        read_key=keys[id(writer)] if writer is not None else None,
    )


# --------------------------------------------------------------------------- the CLI's tree


def _name(key: dg.AssetKey) -> str:
    return ".".join(key.path)


def lineage_lines(
    nodes: Sequence[OdibiNode],
    keys: Mapping[int, dg.AssetKey],
    column: str | None = None,
) -> list[str]:
    """The upstream tree of ``column`` (``pipeline.node.col``), or of every known column of
    every node, two spaces per level; as known at load. Raises ValueError naming what
    exists when ``column`` names no known column."""
    found = static_lineage(nodes, keys)
    by_key: dict[dg.AssetKey, NodeColumns] = {keys[id(n)]: found[id(n)] for n in nodes}
    # read-only nodes of files no node writes: where columns come from outside the project
    origins = {keys[id(n)] for n in nodes if n.is_source and not n.reads_from}

    def columns_of(key: dg.AssetKey) -> list[str]:
        return [c for c, _ in by_key[key].relation.columns]

    def deps_of(key: dg.AssetKey, col: str) -> Sequence[dg.TableColumnDep] | None:
        lineage = by_key[key].metadata.get(LINEAGE_KEY)
        if not isinstance(lineage, dg.TableColumnLineage):
            return None
        return lineage.deps_by_column.get(col)

    def tree(key: dg.AssetKey, col: str, depth: int, seen: frozenset[tuple[Any, str]]) -> list[str]:
        deps = deps_of(key, col)
        note = "" if deps is not None or key in origins else "  (sources unknown)"
        lines = [f"{'  ' * depth}{_name(key)}.{col}{note}"]
        for dep in deps or ():
            if (dep.asset_key, dep.column_name) in seen:
                continue
            if dep.asset_key in by_key:
                lines += tree(dep.asset_key, dep.column_name, depth + 1, seen | {(key, col)})
            else:
                lines.append(f"{'  ' * (depth + 1)}{_name(dep.asset_key)}.{dep.column_name}")
        return lines

    if column is None:
        lines = []
        for n in nodes:
            key = keys[id(n)]
            cols = columns_of(key)
            if not cols:
                lines.append(f"{_name(key)}: columns unknown at load (see its materializations)")
            for col in cols:
                lines += tree(key, col, 0, frozenset())
        return lines
    by_name = {_name(k): k for k in by_key}
    node_name, _, col = column.rpartition(".")
    asked = by_name.get(node_name)
    if asked is None:
        raise ValueError(
            f"no node '{node_name}' (give pipeline.node.column); nodes: {', '.join(by_name)}"
        )
    cols = columns_of(asked)
    match = [c for c in cols if c.lower() == col.lower()]
    if not match:
        known = ", ".join(cols) if cols else "none known at load"
        raise ValueError(f"node '{node_name}' has no known column '{col}'; its columns: {known}")
    return tree(asked, match[0], 0, frozenset())
