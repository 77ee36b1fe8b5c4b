"""JSON Schema of the Odibi YAML format, for editors (``odibi-dagster schema``)."""

from __future__ import annotations

from typing import Any

from odibi_dagster.config.models import PipelineConfig, ProjectConfig


def json_schema() -> dict[str, Any]:
    """The project-file schema; ``$defs.PipelineConfig`` also fits a ``pipelines/*.yaml`` file."""
    schema = ProjectConfig.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "Odibi project (odibi_dagster)"
    schema.setdefault("$defs", {})["PipelineConfig"] = PipelineConfig.model_json_schema(
        by_alias=True, ref_template="#/$defs/{model}"
    )
    schema["$defs"]["PipelineConfig"].pop("$defs", None)
    return schema
