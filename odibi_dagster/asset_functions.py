"""The functions Dagster calls for a node's asset and for the checks on a source.

Their parameters are not annotated: Dagster inspects a function's annotations for every
asset it builds (a context annotation must be the class itself, and a return annotation
is turned into a Dagster type), which costs more than a tenth of a millisecond per node
of a large project.
"""

from collections.abc import Callable, Iterator
from typing import Any

import dagster as dg

from odibi_dagster.config.models import NodeConfig
from odibi_dagster.engines.registry import get_engine
from odibi_dagster.node_runner import NodeRunner, check_results


def asset_function(runner: NodeRunner) -> Callable[..., Iterator[Any]]:
    """The body of a node's asset: its inputs arrive as keyword arguments."""

    def compute(context, **inputs):  # type: ignore[no-untyped-def]
        yield from runner.run(context, inputs)

    return compute


def source_checks_function(
    engine: str, node: NodeConfig, key: dg.AssetKey
) -> Callable[..., Iterator[dg.AssetCheckResult]]:
    """The body of the checks on a source: the source arrives as ``data``."""

    def run_checks(context, data):  # type: ignore[no-untyped-def]
        for result, _ in check_results(get_engine(engine, context.resources), data, node, key):
            yield result

    return run_checks
