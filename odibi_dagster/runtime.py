"""Kept so ``odibi_dagster.runtime`` imports keep working: see :mod:`odibi_dagster.node_runner`."""

from odibi_dagster.node_runner import NodeRunner, get_engine

__all__ = ["NodeRunner", "get_engine"]
