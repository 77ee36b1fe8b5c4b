"""Lineage between nodes: a node that reads the exact path another node writes depends on
it, also across pipelines. Pure: computed from the config and the connections' URIs."""

from __future__ import annotations

from collections.abc import Mapping

import dagster as dg

from odibi_dagster.config.models import ProjectConfig
from odibi_dagster.resources.connection import ConnectionResource


def _uri(connections: Mapping[str, ConnectionResource], connection: str, path: str) -> str:
    return connections[connection].uri(path).rstrip("/")


def _writers_by_uri(
    cfg: ProjectConfig, connections: Mapping[str, ConnectionResource]
) -> dict[str, list[dg.AssetKey]]:
    writers: dict[str, list[dg.AssetKey]] = {}
    for pipe in cfg.pipelines:
        for node in pipe.nodes:
            if node.write is not None:
                uri = _uri(connections, node.write.connection, node.write.path)
                writers.setdefault(uri, []).append(dg.AssetKey([pipe.pipeline, node.name]))
    return writers


def lineage_edges(
    cfg: ProjectConfig, connections: Mapping[str, ConnectionResource]
) -> dict[dg.AssetKey, list[dg.AssetKey]]:
    """For each node that reads a path other nodes write: those writers (its lineage parents).

    An edge that would close a cycle (two nodes that each read what the other writes, such
    as two appenders of one table) is left out: Dagster needs an acyclic graph, and the
    first edge in YAML order already shows the flow.
    """
    writers = _writers_by_uri(cfg, connections)
    parents: dict[dg.AssetKey, set[dg.AssetKey]] = {}
    for pipe in cfg.pipelines:
        for node in pipe.nodes:
            key = dg.AssetKey([pipe.pipeline, node.name])
            parents[key] = {dg.AssetKey([pipe.pipeline, d]) for d in node.depends_on}
    edges: dict[dg.AssetKey, list[dg.AssetKey]] = {}
    for pipe in cfg.pipelines:
        for node in pipe.nodes:
            if node.read is None:
                continue
            key = dg.AssetKey([pipe.pipeline, node.name])
            for writer in writers.get(_uri(connections, node.read.connection, node.read.path), []):
                if writer != key and key not in _ancestors(writer, parents):
                    parents[key].add(writer)
                    edges.setdefault(key, []).append(writer)
    return edges


def _ancestors(
    key: dg.AssetKey, parents: Mapping[dg.AssetKey, set[dg.AssetKey]]
) -> set[dg.AssetKey]:
    seen: set[dg.AssetKey] = set()
    stack = [key]
    while stack:
        for parent in parents.get(stack.pop(), ()):
            if parent not in seen:
                seen.add(parent)
                stack.append(parent)
    return seen


def pipeline_order(cfg: ProjectConfig, connections: Mapping[str, ConnectionResource]) -> list[str]:
    """Pipeline names, upstream first: a pipeline that reads what another writes runs after it.

    Ties keep the order of the YAML. Pipelines that feed each other both ways keep YAML order.
    """
    after: dict[str, set[str]] = {p.pipeline: set() for p in cfg.pipelines}
    for key, parents in lineage_edges(cfg, connections).items():
        after[key.path[0]].update(p.path[0] for p in parents if p.path[0] != key.path[0])
    order: list[str] = []
    pending = [p.pipeline for p in cfg.pipelines]
    while pending:
        ready = [p for p in pending if after[p] <= set(order)] or [pending[0]]
        order.append(ready[0])
        pending.remove(ready[0])
    return order
