"""The one table of engines, keyed by the ``engine:`` name a project or pipeline gives.

Each entry names the module that holds the engine (imported only when a run needs it,
so loading definitions imports no pandas, DuckDB or PySpark), and the Dagster resources
its steps need. Adding an engine (Polars, say) is one module with an ``engine_for``
function returning an :class:`~odibi_dagster.engines.base.Engine`, and one line below
(see docs/architecture.md).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from odibi_dagster.engines.base import Engine
from odibi_dagster.errors import OdibiRunError
from odibi_dagster.resources.spark import SPARK_RESOURCE_KEY, SparkSessionResource


@dataclass(frozen=True)
class EngineEntry:
    """How to reach one engine."""

    name: str
    # module with ``engine_for(resources: Mapping[str, Any]) -> Engine``
    module: str
    # resource key -> a factory of the resource every step of the engine requires (e.g.
    # the Spark session); made when definitions are built, started only when used
    resources: Mapping[str, Callable[[], Any]] = field(default_factory=dict)

    @property
    def io_manager_key(self) -> str:
        return f"odibi_{self.name}_io_manager"


def _spark_session() -> Any:
    return SparkSessionResource()


ENGINES: dict[str, EngineEntry] = {
    e.name: e
    for e in (
        EngineEntry("pandas", "odibi_dagster.engines.pandas"),
        EngineEntry("spark", "odibi_dagster.engines.spark", {SPARK_RESOURCE_KEY: _spark_session}),
    )
}
ENGINE_NAMES = tuple(ENGINES)


def get_engine(name: str, resources: Any = None) -> Engine:
    """The engine ``name`` for a step with ``resources`` (Dagster's resources object of an
    op or IO manager context, or a mapping of them by key)."""
    entry = ENGINES.get(name)
    if entry is None:
        raise OdibiRunError(f"engine '{name}' is not available; use one of: {', '.join(ENGINES)}")
    factory: Callable[[Mapping[str, Any]], Engine] = importlib.import_module(
        entry.module
    ).engine_for
    return factory(resources_by_key(resources))


def resources_by_key(resources: Any) -> dict[str, Any]:
    """A step's resources as a dict (Dagster hands them over as a named tuple)."""
    if resources is None:
        return {}
    if isinstance(resources, Mapping):
        return dict(resources)
    return dict(resources._asdict())
