"""How an Odibi node becomes a Dagster asset spec, in one class users can subclass.

Like dagster-dbt's ``DagsterDbtTranslator``: :class:`OdibiTranslator` decides each
node's asset key, group, description, tags, owners, metadata, kinds and automation
condition. Subclass it and pass it to ``load_definitions(path, translator=...)`` to
change any of them without forking::

    class MyTranslator(odibi_dagster.OdibiTranslator):
        def get_asset_key(self, node):
            return dg.AssetKey(["lake", node.pipeline, node.name])

        def get_group_name(self, node):
            return "ingestion" if node.pipeline.startswith("ingest") else "reporting"

    defs = odibi_dagster.load_definitions("project", translator=MyTranslator())

Keys are decided by :meth:`OdibiTranslator.get_asset_key` alone, so dependencies follow
a changed key; override the other ``get_*`` methods, or :meth:`get_asset_spec` itself,
for the rest. What the IO manager needs (``odibi/*`` metadata), the IO manager key, the
checks and the retry policy stay with odibi_dagster.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import dagster as dg

from odibi_dagster.config.models import NodeConfig, PipelineConfig

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


@dataclass(eq=False)
class OdibiNode:
    """One node of the project, as the translator sees it.

    ``inputs`` are the nodes it lists in ``depends_on``; ``reads_from`` the nodes (of any
    pipeline) that write the path it reads. ``read_uri`` / ``write_uri`` are the full
    addresses of its ``read:`` and ``write:``, if any.
    """

    project: str
    owner: str | None
    pipeline_config: PipelineConfig
    config: NodeConfig
    engine: str
    read_uri: str | None = None
    write_uri: str | None = None
    inputs: list[OdibiNode] = field(default_factory=list)
    reads_from: list[OdibiNode] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def pipeline(self) -> str:
        return self.pipeline_config.pipeline

    @property
    def upstream(self) -> list[OdibiNode]:
        """Every node this one depends on: its inputs, then the writers of what it reads."""
        return [*self.inputs, *(n for n in self.reads_from if n not in self.inputs)]

    @property
    def is_source(self) -> bool:
        """A node that only reads data this project does not write itself in its own
        pipeline: an external asset, loaded by its consumers."""
        c = self.config
        return (
            c.read is not None
            and c.transform is None
            and c.transformer is None
            and c.pattern is None
            and c.write is None
            and not c.depends_on
            and all(n.pipeline != self.pipeline for n in self.reads_from)
        )


class OdibiTranslator:
    """Decides the asset spec of each node. Subclass to change keys, groups, tags, ...."""

    def get_asset_key(self, node: OdibiNode) -> dg.AssetKey:
        """``[<pipeline>, <node>]`` (node names repeat across pipelines)."""
        return dg.AssetKey([node.pipeline, node.name])

    def get_group_name(self, node: OdibiNode) -> str | None:
        """The pipeline's name: one asset group per pipeline."""
        return node.pipeline

    def get_description(self, node: OdibiNode) -> str:
        """The node's ``description:``, then what it reads, how it transforms, where it
        writes, and where it is defined."""
        c = node.config
        lines = [c.description] if c.description else []
        if c.read is not None:
            lines.append(f"Reads {c.read.format} `{node.read_uri}`.")
        if c.simulation is not None:
            lines.append("Generates its rows (`format: simulation`).")
        if c.steps():
            kinds = ["SQL" if s.sql is not None else f"function `{s.function}`" for s in c.steps()]
            lines.append(f"Transforms with {len(kinds)} step(s): {', '.join(kinds)}.")
        if c.pattern is not None:
            lines.append(f"Builds its table with pattern `{c.pattern.type}` (Odibi v3).")
        if c.write is not None:
            lines.append(f"Writes {c.write.format} `{node.write_uri}` (mode {c.write.mode}).")
        lines.append(f"Defined at {c._file}:{c._line} (pipeline {node.pipeline}).")
        return "\n\n".join(lines)

    def get_tags(self, node: OdibiNode) -> dict[str, str]:
        """``odibi/layer`` from the pipeline's ``layer:``, and each of the node's ``tags:``
        (Odibi v3) as a tag with an empty value."""
        layer = node.pipeline_config.layer
        tags = {"odibi/layer": _tag_value(layer)} if layer else {}
        tags.update({t: "" for t in node.config.tags})
        return tags

    def get_owners(self, node: OdibiNode) -> list[str]:
        """The project's ``owner:`` when it is an e-mail address (what Dagster accepts)."""
        return [node.owner] if node.owner and _EMAIL.match(node.owner) else []

    def get_kinds(self, node: OdibiNode) -> set[str]:
        """The engine, and the format written (else read), else python."""
        io = node.config.write or node.config.read
        return {node.engine, io.format if io is not None else "python"}

    def get_metadata(self, node: OdibiNode) -> dict[str, Any]:
        """The node's ``columns:`` (Odibi v3 data dictionary) as the asset's column schema."""
        cols = node.config.columns
        if not cols:
            return {}
        return {
            "dagster/column_schema": dg.TableSchema(
                columns=[
                    dg.TableColumn(
                        name=name,
                        type="?",
                        description=meta.description,
                        tags={
                            **({"pii": "true"} if meta.pii else {}),
                            **{_tag_value(t): "" for t in meta.tags},
                        }
                        or None,
                    )
                    for name, meta in cols.items()
                ]
            )
        }

    def get_automation_condition(self, node: OdibiNode) -> dg.AutomationCondition[Any] | None:
        """None: the asset runs when its job or a person starts it."""
        return None

    def get_asset_spec(self, node: OdibiNode) -> dg.AssetSpec:
        """Everything above, as one spec; ``deps`` are the keys of :attr:`OdibiNode.upstream`."""
        return dg.AssetSpec(
            key=self.get_asset_key(node),
            deps=[self.get_asset_key(up) for up in node.upstream],
            description=self.get_description(node),
            group_name=self.get_group_name(node),
            metadata=self.get_metadata(node) or None,
            kinds=self.get_kinds(node),
            tags=self.get_tags(node) or None,
            owners=self.get_owners(node) or None,
            automation_condition=self.get_automation_condition(node),
        )


def _tag_value(text: str) -> str:
    """Dagster tag values allow letters, digits, '-', '_' and '.', up to 63 characters."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", text)[:63]
