"""Odibi v3's ``validation.tests``, quarantine and quality gate, run on a node's result.

Every row test is a SQL predicate run through the node's engine (DuckDB for pandas,
Spark SQL for Spark), so the same YAML means the same on both: one query flags each
row with the tests it fails and counts them; quarantine keeps the rows no quarantine
test flags and appends the others, with why, where ``quarantine:`` says. A row fails a
test only when the test's condition is false for it: a null passes ``range``,
``accepted_values``, ``regex_match`` and ``custom_sql`` (SQL's three-valued logic), as
in Odibi; ``not_null`` is the test for nulls.
"""

from __future__ import annotations

import datetime as _dt
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from odibi_dagster.config.models import NodeConfig, ValidationConfig
from odibi_dagster.config.quality import (
    ROW_TESTS,
    AnyTest,
    QuarantineConfig,
    duration_seconds,
    threshold_parts,
)
from odibi_dagster.engines.base import Engine
from odibi_dagster.engines.sql_text import string_literal
from odibi_dagster.errors import OdibiRunError

SAMPLE_ROWS = 5
_VIEW = "odibi_validated"
_FLAG = "__odibi_t{}"
_ROW = "__odibi_row"
# metadata keys of the node's materialization
ROWS_QUARANTINED = "odibi/rows_quarantined"
QUARANTINE_PATH = "odibi/quarantine_path"
ROWS_LEFT_OUT = "odibi/rows_left_out_by_gate"
# on a gate's check result: its on_fail (what on_gate_block alerts look for)
GATE_MARK = "odibi/gate_on_fail"


@dataclass(frozen=True)
class PlannedTest:
    """One test of ``tests:`` as it runs: its asset check name, its label (its ``name:``
    or its type, what gate thresholds and quarantine columns name) and what a failure
    does (``mode: warn`` and tests that judge the whole result turn quarantine into
    warn)."""

    index: int
    check_name: str
    label: str
    test: AnyTest
    on_fail: str

    @property
    def severity(self) -> str:
        return "ERROR" if self.on_fail == "fail" else "WARN"

    @property
    def is_row_test(self) -> bool:
        return self.test.type in ROW_TESTS

    def description(self) -> str:
        t: Any = self.test
        what = {
            "not_null": lambda: f"no nulls in {', '.join(t.columns)}",
            "unique": lambda: f"{', '.join(t.columns)} unique",
            "accepted_values": lambda: f"{t.column} in {t.values}",
            "row_count": lambda: f"row count within [{t.min}, {t.max}]",
            "custom_sql": lambda: f"{t.condition} (failure rate at most {t.threshold:g})",
            "range": lambda: f"{t.column} within [{t.min}, {t.max}]",
            "regex_match": lambda: f"{t.column} matches {t.pattern!r}",
            "volume_drop": lambda: (
                f"row count not {t.threshold:.0%} below the average of "
                f"the last {t.lookback_days} days"
            ),
            "schema": lambda: (
                "columns as the node's `columns:` lists" + (" (no others)" if t.strict else "")
            ),
            "distribution": lambda: f"{t.metric} of {t.column} {t.threshold}",
            "freshness": lambda: f"newest {t.column} at most {t.max_age} old",
        }[t.type]()
        return f"{what} (on_fail: {self.on_fail})"


def _check_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", text)


def planned(validation: ValidationConfig, used: set[str]) -> list[PlannedTest]:
    """The tests of ``validation`` with unique check names (not in ``used``; added)."""
    out = []
    for i, t in enumerate(validation.tests):
        label = t.name or t.type
        base = _check_name(label)
        name, n = base, 2
        while name in used:
            name, n = f"{base}_{n}", n + 1
        used.add(name)
        on_fail = t.on_fail
        if validation.mode == "warn" and on_fail == "fail":
            on_fail = "warn"
        if on_fail == "quarantine" and t.type not in ROW_TESTS:
            on_fail = "warn"  # a test of the whole result has no rows to quarantine
        out.append(PlannedTest(i, name, label, t, on_fail))
    return out


def gate_check_name(validation: ValidationConfig, used: set[str]) -> str | None:
    if validation.gate is None:
        return None
    name, n = "gate", 2
    while name in used:
        name, n = f"gate_{n}", n + 1
    used.add(name)
    return name


# --------------------------------------------------------------------------- SQL


@dataclass(frozen=True)
class Dialect:
    """What differs between DuckDB (pandas) and Spark SQL in the predicates."""

    spark: bool

    def ident(self, name: str) -> str:
        if self.spark:
            return "`" + name.replace("`", "``") + "`"
        return '"' + name.replace('"', '""') + '"'

    def lit(self, v: Any) -> str:
        if isinstance(v, bool):
            return "TRUE" if v else "FALSE"
        if isinstance(v, (int, float)):
            return repr(v)
        if isinstance(v, (_dt.date, _dt.datetime)):
            v = v.isoformat()
        return string_literal(str(v), spark=self.spark)

    def text(self, expr: str) -> str:
        return f"CAST({expr} AS {'STRING' if self.spark else 'VARCHAR'})"

    def matches(self, expr: str, pattern: str) -> str:
        if self.spark:
            return f"({self.text(expr)} RLIKE {self.lit(pattern)})"
        return f"regexp_matches({self.text(expr)}, {self.lit(pattern)})"


def dialect_of(engine: Engine) -> Dialect:
    return Dialect(spark=engine.name == "spark")


def _fails(p: PlannedTest, d: Dialect) -> str:
    """SQL true exactly when a row fails the row test ``p`` (never null)."""
    t: Any = p.test
    if t.type == "not_null":
        return "(" + " OR ".join(f"{d.ident(c)} IS NULL" for c in t.columns) + ")"
    if t.type == "unique":
        cols = ", ".join(d.ident(c) for c in t.columns)
        return f"(COUNT(*) OVER (PARTITION BY {cols}) > 1)"
    if t.type == "accepted_values":
        values = ", ".join(d.lit(v) for v in t.values)
        return f"COALESCE({d.ident(t.column)} NOT IN ({values}), FALSE)"
    if t.type == "custom_sql":
        return f"COALESCE(NOT ({t.condition}), FALSE)"
    if t.type == "range":
        col = d.ident(t.column)
        parts = []
        if t.min is not None:
            parts.append(f"{col} < {d.lit(t.min)}")
        if t.max is not None:
            parts.append(f"{col} > {d.lit(t.max)}")
        return f"COALESCE({' OR '.join(parts)}, FALSE)"
    if t.type == "regex_match":
        return f"COALESCE(NOT {d.matches(d.ident(t.column), t.pattern)}, FALSE)"
    raise AssertionError(t.type)


def _columns_of(p: PlannedTest, columns: list[str]) -> list[str]:
    """The columns a test reads (custom_sql: those its condition names)."""
    t: Any = p.test
    if t.type in ("not_null", "unique"):
        return list(t.columns)
    if t.type == "custom_sql":
        named = [c for c in columns if re.search(rf"(?<![\w]){re.escape(c)}(?![\w])", t.condition)]
        return named or columns[:5]
    return [t.column] if hasattr(t, "column") else []


def _flagged(tests: list[PlannedTest], d: Dialect, *, numbered: bool = False) -> str:
    """The rows with a flag column per test; ``numbered``: also their position (_ROW)."""
    flags = ", ".join(f"{_fails(p, d)} AS {_FLAG.format(p.index)}" for p in tests)
    source = f"(SELECT *, ROW_NUMBER() OVER () AS {_ROW} FROM {_VIEW}) n" if numbered else _VIEW
    return f"SELECT *{', ' + flags if flags else ''} FROM {source}"


def _in_order(tests: list[PlannedTest], d: Dialect) -> bool:
    """Whether the rows kept or quarantined must be put back in the input's order: on
    DuckDB, the window of a ``unique`` test reorders them (a Spark frame has no order)."""
    return not d.spark and any(p.test.type == "unique" for p in tests)


def _any(tests: list[PlannedTest]) -> str:
    return " OR ".join(_FLAG.format(p.index) for p in tests) or "FALSE"


# --------------------------------------------------------------------------- results


@dataclass
class TestOutcome:
    name: str
    passed: bool
    severity: str
    description: str
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class QualityResult:
    outcomes: list[TestOutcome]
    blocking: list[str]  # why the node must fail (nothing is written)
    total_rows: int
    keep: str | None = None  # SQL keeping the rows that go on (None: all go on)
    reject: str | None = None  # SQL of the rows to quarantine, with why (None: none)
    removed_rows: int = 0
    metadata: dict[str, Any] = field(default_factory=dict)


def _samples(
    eng: Engine,
    df: Any,
    failing: list[PlannedTest],
    cols: list[str],
    d: Dialect,
    masked: set[str],
    where: str,
) -> dict[int, list[dict[str, Any]]]:
    """Up to SAMPLE_ROWS failing rows of each test of ``failing`` (the columns it reads):
    from one query of the first failing rows, and a query of its own for a test with
    fewer there than it has."""
    out: dict[int, list[dict[str, Any]]] = {p.index: [] for p in failing}
    if not failing:
        return out
    shown = list(dict.fromkeys(c for p in failing for c in _columns_of(p, cols) if c in cols))
    flags = [_FLAG.format(p.index) for p in failing]
    select = ", ".join([d.ident(c) for c in shown] + flags)
    limit = SAMPLE_ROWS * 8 * len(failing)
    query = f"SELECT {select} FROM ({_flagged(failing, d)}) q WHERE {_any(failing)} LIMIT {limit}"
    rows = eng.head(eng.sql(query, {_VIEW: df}, where=where), limit)
    for p in failing:
        mine = [r for r in rows if r[_FLAG.format(p.index)]][:SAMPLE_ROWS]
        if len(mine) < SAMPLE_ROWS and len(rows) == limit:  # its rows may lie further on
            own = (
                f"SELECT {', '.join(d.ident(c) for c in shown)} FROM ({_flagged([p], d)}) q "
                f"WHERE {_FLAG.format(p.index)} LIMIT {SAMPLE_ROWS}"
            )
            mine = eng.head(eng.sql(own, {_VIEW: df}, where=where), SAMPLE_ROWS)
        keep = [c for c in _columns_of(p, cols) if c in cols]
        out[p.index] = [{c: ("***" if c in masked else _plain(r[c])) for c in keep} for r in mine]
    return out


def _plain(v: Any) -> Any:
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    return str(v)


def evaluate(
    eng: Engine,
    df: Any,
    node: NodeConfig,
    tests: list[PlannedTest],
    gate_name: str | None,
    *,
    history: Callable[[float], list[int]] | None = None,
    can_remove: bool = True,
) -> QualityResult:
    """Run ``tests`` and the gate on ``df``: one query counts every row test's failures
    and the whole-result measures; failing tests get a few sample rows. ``history(since)``
    gives the row counts of the node's results written since ``since`` (epoch seconds),
    newest first; without it volume_drop and the gate's change_threshold have nothing to
    compare with (they pass, saying so)."""
    assert node.validation is not None
    where = node.where
    d = dialect_of(eng)
    columns = [c for c, _ in eng.column_schema(df)]
    present = set(columns)
    masked = {c for c, m in node.columns.items() if m.pii}
    outcomes: list[TestOutcome] = []
    blocking: list[str] = []

    def add(p: PlannedTest, passed: bool, desc: str, meta: dict[str, Any] | None = None) -> None:
        outcomes.append(TestOutcome(p.check_name, passed, p.severity, desc, meta or {}))
        if not passed and p.on_fail == "fail":
            blocking.append(f"{p.check_name}: {desc}")

    row_tests: list[PlannedTest] = []
    aggs: list[str] = ["COUNT(*) AS n"]
    for p in tests:
        t: Any = p.test
        needed = _columns_of(p, columns) if t.type != "custom_sql" else []
        if t.type in ("distribution", "freshness"):
            needed = [t.column]
        missing = [c for c in needed if c not in present]
        if missing:
            desc = f"column '{missing[0]}' is missing; columns: {', '.join(columns)}"
            outcomes.append(
                TestOutcome(
                    p.check_name, False, p.severity if p.on_fail == "warn" else "ERROR", desc
                )
            )
            if p.on_fail != "warn":
                blocking.append(f"{p.check_name}: {desc}")
            continue
        if p.is_row_test:
            row_tests.append(p)
            aggs.append(f"SUM(CASE WHEN {_FLAG.format(p.index)} THEN 1 ELSE 0 END) AS f{p.index}")
        elif t.type == "distribution":
            col = d.ident(t.column)
            expr = {
                "mean": f"AVG(CAST({col} AS DOUBLE))",
                "min": f"MIN({col})",
                "max": f"MAX({col})",
                "null_percentage": f"SUM(CASE WHEN {col} IS NULL THEN 1 ELSE 0 END)",
            }[t.metric]
            aggs.append(f"{expr} AS m{p.index}")
        elif t.type == "freshness":
            aggs.append(f"MAX(CAST({d.ident(t.column)} AS TIMESTAMP)) AS m{p.index}")
    aggs.append(f"SUM(CASE WHEN {_any(row_tests)} THEN 1 ELSE 0 END) AS f_any")
    quarantined = [p for p in row_tests if p.on_fail == "quarantine"]
    aggs.append(f"SUM(CASE WHEN {_any(quarantined)} THEN 1 ELSE 0 END) AS f_quarantine")
    query = f"SELECT {', '.join(aggs)} FROM ({_flagged(row_tests, d)}) q"
    try:
        got = eng.head(eng.sql(query, {_VIEW: df}, where=where), 1)[0]
    except OdibiRunError:
        _blame_condition(eng, df, row_tests, d, where)
        raise
    n = int(got["n"] or 0)
    failing = {p.index: int(got[f"f{p.index}"] or 0) for p in row_tests}
    now = _dt.datetime.now(_dt.UTC)
    samples = _samples(
        eng, df, [p for p in row_tests if failing[p.index]], columns, d, masked, where
    )

    for p in tests:
        t = p.test
        if any(o.name == p.check_name for o in outcomes):
            continue  # a column was missing
        if p.is_row_test:
            bad = failing[p.index]
            rate = bad / n if n else 0.0
            ok = rate <= t.threshold if t.type == "custom_sql" else bad == 0
            meta: dict[str, Any] = {"failing_rows": bad, "row_count": n, "pass_rate": 1 - rate}
            if bad:
                meta["sample_failing_rows"] = samples[p.index]
            desc = (
                f"{bad} of {n} rows fail: {p.description()}"
                if bad
                else f"all {n} rows pass: {p.description()}"
            )
            add(p, ok, desc, meta)
        elif t.type == "row_count":
            ok = (t.min is None or n >= t.min) and (t.max is None or n <= t.max)
            add(p, ok, f"{n} rows; expected {p.description()}", {"row_count": n})
        elif t.type == "volume_drop":
            since = now.timestamp() - t.lookback_days * 86400
            past = history(since) if history is not None else []
            if not past:
                add(
                    p,
                    True,
                    f"{n} rows; no earlier results in the last {t.lookback_days} days "
                    "to compare with",
                    {"row_count": n},
                )
            else:
                avg = sum(past) / len(past)
                drop = (avg - n) / avg if avg else 0.0
                ok = drop <= t.threshold
                add(
                    p,
                    ok,
                    f"{n} rows, {drop:.1%} below the average {avg:g} of {len(past)} "
                    f"earlier results (allowed: {t.threshold:.0%})",
                    {"row_count": n, "average_row_count": float(avg)},
                )
        elif t.type == "schema":
            listed = list(node.columns)
            if not listed:
                add(p, True, "the node lists no `columns:` to compare with")
                continue
            problems = [f"missing column '{c}'" for c in listed if c not in present]
            if t.strict:
                problems += [f"unexpected column '{c}'" for c in columns if c not in listed]
            add(
                p,
                not problems,
                "; ".join(problems) or "columns as listed",
                {"columns": ", ".join(columns)},
            )
        elif t.type == "distribution":
            value = got[f"m{p.index}"]
            if t.metric == "null_percentage":
                value = (int(value or 0) / n) if n else 0.0
            op, bound = threshold_parts(t.threshold) or (">", 0.0)
            ok = value is not None and _compare(float(value), op, bound)
            add(
                p,
                ok,
                f"{t.metric} of {t.column} is {value}; expected {t.threshold}",
                {"value": None if value is None else float(value)},
            )
        elif t.type == "freshness":
            newest = got[f"m{p.index}"]
            limit = duration_seconds(t.max_age) or 0.0
            if newest is None:
                add(p, False, f"column '{t.column}' has no values")
                continue
            stamp = _as_utc(newest)
            age = (now - stamp).total_seconds()
            add(
                p,
                age <= limit,
                f"newest {t.column} is {stamp.isoformat()}, "
                f"{age / 3600:.1f} h old (max_age {t.max_age})",
                {"age_hours": age / 3600},
            )

    result = QualityResult(outcomes, blocking, n)
    remove = [p for p in quarantined if failing[p.index]]
    # a row failing several tests counts once
    removed_rows = int(got["f_quarantine"] or 0)
    gate = node.validation.gate
    if gate is not None and gate_name is not None:
        passed_rows = n - int(got["f_any"] or 0)
        rate = passed_rows / n if n else 1.0
        reasons = []
        if rate < gate.require_pass_rate:
            reasons.append(f"pass rate {rate:.1%} < required {gate.require_pass_rate:.1%}")
        for th in gate.thresholds:
            for p in row_tests:
                if th.test in (p.label, p.test.type):
                    r = 1 - failing[p.index] / n if n else 1.0
                    if r < th.min_pass_rate:
                        reasons.append(
                            f"test '{p.label}' pass rate {r:.1%} < required {th.min_pass_rate:.1%}"
                        )
        rc = gate.row_count
        if rc is not None:
            if rc.min is not None and n < rc.min:
                reasons.append(f"row count {n} < minimum {rc.min}")
            if rc.max is not None and n > rc.max:
                reasons.append(f"row count {n} > maximum {rc.max}")
            if rc.change_threshold is not None and history is not None:
                before = history(0.0)[:1]
                if before and before[0] > 0:
                    change = abs(n - before[0]) / before[0]
                    if change > rc.change_threshold:
                        reasons.append(
                            f"row count changed {change:.1%} from {before[0]} "
                            f"(allowed: {rc.change_threshold:.0%})"
                        )
        ok = not reasons
        if ok:
            desc = f"gate passed: {passed_rows} of {n} rows pass every test ({rate:.1%})"
        else:
            desc = f"gate failed ({gate.on_fail}): " + "; ".join(reasons)
        severity = "ERROR" if gate.on_fail == "abort" else "WARN"
        outcomes.append(
            TestOutcome(
                gate_name,
                ok,
                severity,
                desc,
                {
                    "pass_rate": rate,
                    "passed_rows": passed_rows,
                    "row_count": n,
                    GATE_MARK: gate.on_fail,
                },
            )
        )
        if not ok and gate.on_fail == "abort":
            blocking.append(f"{gate_name}: {desc}")
        if not ok and gate.on_fail == "write_valid_only":
            remove = [p for p in row_tests if failing[p.index]]
            removed_rows = int(got["f_any"] or 0)
            result.metadata[ROWS_LEFT_OUT] = removed_rows
    if can_remove and remove and not blocking:
        numbered = _in_order(remove, d)
        flagged = _flagged(remove, d, numbered=numbered)
        order = f" ORDER BY {_ROW}" if numbered else ""
        keep_cols = ", ".join(d.ident(c) for c in columns)
        result.keep = f"SELECT {keep_cols} FROM ({flagged}) q WHERE NOT ({_any(remove)}){order}"
        result.reject = _rejected(remove, columns, d, node, flagged) + order
        result.removed_rows = removed_rows
    return result


def _blame_condition(
    eng: Engine, df: Any, tests: list[PlannedTest], d: Dialect, where: str
) -> None:
    """Raise naming the test whose SQL fails, when the query of all of them failed (a
    custom_sql condition naming a column that is not there, or not SQL)."""
    for p in tests:
        try:
            query = (
                f"SELECT COUNT(*) AS n FROM ({_flagged([p], d)}) q WHERE {_FLAG.format(p.index)}"
            )
            eng.head(eng.sql(query, {_VIEW: df}, where=""), 1)
        except OdibiRunError as exc:
            t: Any = p.test
            what = f"condition {t.condition!r}" if t.type == "custom_sql" else "its SQL"
            cause = str(exc).split(" in query starting", 1)[0].removeprefix("SQL step failed ")
            raise OdibiRunError(
                f"{where}: validation test '{p.label}' ({t.type}): {what} cannot be "
                f"evaluated on the result {cause}. Fix the test; columns: "
                + ", ".join(c for c, _ in eng.column_schema(df))
            ) from None


def _compare(v: float, op: str, bound: float) -> bool:
    return {
        ">": v > bound,
        ">=": v >= bound,
        "<": v < bound,
        "<=": v <= bound,
        "=": v == bound,
        "==": v == bound,
        "!=": v != bound,
    }[op]


def _as_utc(v: Any) -> _dt.datetime:
    if hasattr(v, "to_pydatetime"):
        v = v.to_pydatetime()
    if isinstance(v, _dt.date) and not isinstance(v, _dt.datetime):
        v = _dt.datetime(v.year, v.month, v.day)
    assert isinstance(v, _dt.datetime)
    return v.replace(tzinfo=_dt.UTC) if v.tzinfo is None else v.astimezone(_dt.UTC)


def _rejected(
    remove: list[PlannedTest], columns: list[str], d: Dialect, node: NodeConfig, flagged: str
) -> str:
    """SQL of the rows to quarantine, with the columns ``add_columns`` asks for."""
    assert node.validation is not None
    q = node.validation.quarantine
    add = q.add_columns if q is not None else None
    names = ", ".join(
        f"CASE WHEN {_FLAG.format(p.index)} THEN {d.lit(p.label)} END" for p in remove
    )
    rules = ", ".join(
        f"CASE WHEN {_FLAG.format(p.index)} THEN {d.lit(p.label + ': ' + p.description())} END"
        for p in remove
    )
    extra = []
    if add is None or add.rejection_reason:
        extra.append(f"CONCAT('Failed: ', CONCAT_WS('; ', {rules})) AS _rejection_reason")
    if add is None or add.rejected_at:
        extra.append("{rejected_at} AS _rejected_at")
    if add is None or add.source_batch_id:
        extra.append("{run_id} AS _source_batch_id")
    if add is None or add.failed_tests:
        extra.append(f"CONCAT_WS(',', {names}) AS _failed_tests")
    if add is not None and add.original_node:
        extra.append(f"{d.lit(node.name)} AS _original_node")
    cols = ", ".join([d.ident(c) for c in columns] + extra)
    return f"SELECT {cols} FROM ({flagged}) q WHERE {_any(remove)}"


def split(eng: Engine, df: Any, result: QualityResult, run_id: str, where: str) -> tuple[Any, Any]:
    """The rows that go on, and the rows to quarantine (with their added columns)."""
    assert result.keep is not None and result.reject is not None
    d = dialect_of(eng)
    stamp = _dt.datetime.now(_dt.UTC).isoformat()
    keep = eng.sql(result.keep, {_VIEW: df}, where=where)
    reject = eng.sql(
        result.reject.replace("{rejected_at}", d.lit(stamp)).replace("{run_id}", d.lit(run_id)),
        {_VIEW: df},
        where=where,
    )
    return keep, reject


def write_quarantine(
    eng: Engine,
    resources: Mapping[str, Any],
    q: QuarantineConfig,
    rows: Any,
    where: str,
) -> str:
    """Append ``rows`` to the quarantine; where they went (a URI without credentials)."""
    from odibi_dagster.resources.connection import ConnectionResource

    conn = resources[q.connection]
    assert isinstance(conn, ConnectionResource) and q.path is not None
    loc = conn.location(q.path)
    eng.write(rows, loc, q.format, "append", where=where)
    return loc.uri
