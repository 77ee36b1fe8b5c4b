"""The functions Dagster calls for a node's asset and for the checks on a source.

No ``from __future__ import annotations`` here: Dagster reads the ``context``
annotation as a class, not as a string.
"""

from collections.abc import Callable, Iterator
from typing import Any

import dagster as dg

from odibi_dagster.config.models import NodeConfig
from odibi_dagster.engines.registry import get_engine
from odibi_dagster.node_runner import NodeRunner, check_results


def asset_function(runner: NodeRunner) -> Callable[..., Iterator[Any]]:
    """The body of a node's asset: its inputs arrive as keyword arguments."""

    def compute(context: dg.AssetExecutionContext, **inputs: Any) -> Iterator[Any]:
        yield from runner.run(context, inputs)

    return compute


def source_checks_function(
    engine: str, node: NodeConfig, key: dg.AssetKey
) -> Callable[..., Iterator[dg.AssetCheckResult]]:
    """The body of the checks on a source: the source arrives as ``data``."""

    def run_checks(
        context: dg.AssetCheckExecutionContext, data: Any
    ) -> Iterator[dg.AssetCheckResult]:
        for result, _ in check_results(get_engine(engine, context.resources), data, node, key):
            yield result

    return run_checks
