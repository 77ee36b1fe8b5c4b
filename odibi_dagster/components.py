"""Dagster Components support: an Odibi project as a ``dg`` component.

The package registers itself under the ``dagster_dg_cli.registry_modules`` entry point
(see pyproject.toml), so ``dg list components`` inside a dg project shows
``odibi_dagster.OdibiProject`` and a ``defs.yaml`` can use it by that type name.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg
from pydantic import Field

from odibi_dagster.compile import load_definitions
from odibi_dagster.errors import OdibiConfigError


class OdibiProject(dg.Component, dg.Resolvable, dg.Model):
    """An Odibi YAML project (or a single pipeline file) as Dagster definitions.

    Each pipeline becomes an asset group and a job of the same name, each node an asset
    keyed ``[pipeline, node]``; exactly what ``odibi_dagster.load_definitions`` builds.

    Example ``defs/sales/defs.yaml``, next to an Odibi project in ``defs/sales/odibi/``
    (``project.yaml`` + ``pipelines/*.yaml``):

    .. code-block:: yaml

        type: odibi_dagster.OdibiProject
        attributes:
          path: odibi

    ``path`` is resolved against the folder of the ``defs.yaml``; an absolute path is
    used as is. A configuration mistake fails ``dg check defs`` with an
    ``OdibiConfigError`` listing each problem as ``<file>:<line>: <key>: <message>``.
    """

    path: str = Field(
        description=(
            "The Odibi project: a directory holding project.yaml (+ pipelines/*.yaml) or a "
            "single YAML file. Relative to the folder of this defs.yaml, or absolute."
        ),
    )

    def resolved_path(self, context: dg.ComponentLoadContext) -> Path:
        """``path`` made absolute against the folder of the component's defs.yaml."""
        target = Path(self.path).expanduser()
        if target.is_absolute():
            return target
        base = Path(context.path)
        if base.is_file():  # a component defined by a single file rather than a folder
            base = base.parent
        return (base / target).resolve()

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        try:
            return load_definitions(self.resolved_path(context))
        except OdibiConfigError as exc:
            # The problems say everything; the frames of the loader would only bury them.
            raise OdibiConfigError(exc.problems) from None
