"""A node's ``validation:`` block, evaluated on its result and reported as asset checks."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from odibi_dagster import quality
from odibi_dagster.config.models import COLUMN_TYPES, ValidationConfig
from odibi_dagster.engines.base import Engine, Profile


@dataclass(frozen=True)
class CheckOutcome:
    name: str
    passed: bool
    description: str
    metadata: dict[str, Any] = field(default_factory=dict)
    severity: str = "ERROR"


def null_check_names(columns: list[str]) -> dict[str, str]:
    """Column -> check name: ``no_nulls_<column>`` in the letters Dagster allows, made
    unique when two columns spell the same (``a b`` and ``a-b``)."""
    out: dict[str, str] = {}
    used: set[str] = {"not_empty", "schema"}
    for col in dict.fromkeys(columns):
        base = "no_nulls_" + re.sub(r"[^A-Za-z0-9_]", "_", str(col))
        name, n = base, 2
        while name in used:
            name, n = f"{base}_{n}", n + 1
        used.add(name)
        out[col] = name
    return out


def check_names(validation: ValidationConfig) -> list[tuple[str, str]]:
    """(check name, what it checks) for each check a validation block defines."""
    out: list[tuple[str, str]] = []
    if validation.not_empty:
        out.append(("not_empty", "The result has at least one row."))
    for col, name in null_check_names(validation.no_nulls).items():
        out.append((name, f"Column '{col}' has no null values."))
    schema = validation.schema_
    if schema is not None and (schema.required_columns or schema.types):
        parts = []
        if schema.required_columns:
            parts.append("required columns " + ", ".join(schema.required_columns))
        if schema.types:
            parts.append("types " + ", ".join(f"{c}: {t}" for c, t in schema.types.items()))
        out.append(("schema", "Schema has " + "; ".join(parts) + "."))
    tests, gate = v3_plan(validation)
    out += [(p.check_name, f"{p.test.type}: {p.description()}.") for p in tests]
    if gate is not None and validation.gate is not None:
        g = validation.gate
        out.append(
            (
                gate,
                f"Quality gate: at least {g.require_pass_rate:.0%} of rows pass every "
                f"test (on_fail: {g.on_fail}).",
            )
        )
    return out


def v3_plan(validation: ValidationConfig) -> tuple[list[quality.PlannedTest], str | None]:
    """The Odibi v3 tests of ``validation`` and the gate's check name, named apart from
    the checks above."""
    used = set(null_check_names(validation.no_nulls).values())
    if validation.not_empty:
        used.add("not_empty")
    schema = validation.schema_
    if schema is not None and (schema.required_columns or schema.types):
        used.add("schema")
    tests = quality.planned(validation, used)
    return tests, quality.gate_check_name(validation, used)


def counted_columns(validation: ValidationConfig, columns: Iterable[str]) -> list[str]:
    """The columns whose nulls the checks count (those of ``no_nulls`` that exist)."""
    present = set(columns)
    return [c for c in validation.no_nulls if c in present]


def evaluate(
    engine: Engine, df: Any, validation: ValidationConfig, stats: Profile | None = None
) -> list[CheckOutcome]:
    """Run every check of ``validation`` on ``df``. The row count and every null count
    come from ``stats`` when the caller counted them already, else from one pass."""
    outcomes: list[CheckOutcome] = []
    columns = dict(engine.column_schema(df))  # names as strings, whatever the frame holds
    counted = counted_columns(validation, columns)
    if stats is None:
        stats = engine.profile(df, counted) if validation.not_empty or counted else Profile(0)
    if validation.not_empty:
        n = stats.rows
        outcomes.append(
            CheckOutcome(
                "not_empty",
                n > 0,
                f"{n} rows" if n else "the result has no rows",
                {"row_count": n},
            )
        )
    for col, name in null_check_names(validation.no_nulls).items():
        if col not in columns:
            outcomes.append(
                CheckOutcome(
                    name, False, f"column '{col}' is missing; columns: {', '.join(columns)}"
                )
            )
            continue
        nulls = stats.nulls[col]
        outcomes.append(
            CheckOutcome(
                name,
                nulls == 0,
                "no nulls" if nulls == 0 else f"column '{col}' has {nulls} null values",
                {"null_count": nulls},
            )
        )
    schema = validation.schema_
    if schema is not None and (schema.required_columns or schema.types):
        problems = [f"missing column '{c}'" for c in schema.required_columns if c not in columns]
        for col, want in schema.types.items():
            if col not in columns:
                problems.append(f"missing column '{col}'")
                continue
            family = COLUMN_TYPES[want.lower()]
            got = engine.type_family(columns[col])
            if got != family:
                problems.append(f"column '{col}' is {columns[col]}, expected {want}")
        outcomes.append(
            CheckOutcome(
                "schema",
                not problems,
                "; ".join(dict.fromkeys(problems)) or "schema as expected",
                {"columns": ", ".join(f"{c}: {t}" for c, t in columns.items())},
            )
        )
    return outcomes
