"""Odibi v3 patterns: ``pattern: {type: ..., params: ...}`` on a node.

A pattern turns the node's rows (what it read, or its transform's result) into the table
it writes: ``dimension`` (surrogate keys, SCD type 0/1/2, unknown member, audit columns),
``scd2`` (history by versions), ``fact`` (surrogate key lookups in dimension nodes,
orphans), ``merge`` (a keyed write into a target), ``aggregation`` (measures by grain) and
``date_dimension`` (a generated calendar). Patterns that keep a table's history read it
through the node's engine (:meth:`~odibi_dagster.engines.base.Engine.read`) and return the
whole table, which the node's ``write:`` writes as any result.

The same functions are Odibi's node-level transformers: :data:`TRANSFORMERS` maps each
name to ``f(context, **params)``, ``context`` a :class:`PatternContext`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from odibi_dagster.config.models import NodeConfig
from odibi_dagster.engines.base import Engine, Frame
from odibi_dagster.patterns.context import PatternContext
from odibi_dagster.patterns.dimensional import dimension, fact, scd2
from odibi_dagster.patterns.params import NOT_APPLIED, PARAMS, PATTERN_TYPES
from odibi_dagster.patterns.tables import aggregation, date_dimension, merge

__all__ = [
    "PATTERNS",
    "PATTERN_TYPES",
    "TRANSFORMERS",
    "PatternContext",
    "run_pattern",
]

PATTERNS: dict[str, Callable[..., Frame]] = {
    "dimension": dimension,
    "fact": fact,
    "scd2": scd2,
    "merge": merge,
    "aggregation": aggregation,
    "date_dimension": date_dimension,
}
assert set(PATTERNS) == set(PARAMS)

# Odibi's target-aware transformers (``transformer: scd2`` / ``merge`` + ``params:``);
# Odibi registers its patterns as transformers too, so they are here as well
TRANSFORMERS: dict[str, Callable[..., Frame]] = dict(PATTERNS)


def run_pattern(
    engine: Engine,
    node: NodeConfig,
    resources: Mapping[str, Any],
    frames: Mapping[str, Frame],
    current: Frame | None,
    kind: str,
    params: Mapping[str, Any],
) -> tuple[Frame, dict[str, Any]]:
    """Run pattern (or transformer) ``kind`` with ``params`` on ``current``: the frame the
    node goes on with, and what the pattern did as materialization metadata. Odibi's keys
    accepted and not applied (``zorder_by``, ...; noted at load) are left out."""
    ctx = PatternContext(engine=engine, node=node, resources=resources, frames=frames, df=current)
    given = {k: v for k, v in params.items() if k not in NOT_APPLIED}
    result = PATTERNS[kind](ctx, **given)
    return result, {"odibi/pattern": kind, **ctx.metadata}
