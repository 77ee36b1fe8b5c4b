"""JSON Schema of the Odibi YAML format, for editors (``odibi-dagster schema``)."""

from __future__ import annotations

from typing import Any

from odibi_dagster.config.models import CONNECTION_MODELS, PipelineConfig, ProjectConfig
from odibi_dagster.config.notes import ACCEPTED_NOT_APPLIED


def json_schema() -> dict[str, Any]:
    """The project-file schema; ``$defs.PipelineConfig`` also fits a ``pipelines/*.yaml`` file."""
    schema = ProjectConfig.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "Odibi project (odibi_dagster)"
    schema.setdefault("$defs", {})["PipelineConfig"] = PipelineConfig.model_json_schema(
        by_alias=True, ref_template="#/$defs/{model}"
    )
    schema["$defs"]["PipelineConfig"].pop("$defs", None)
    _accept_noted(schema)
    local = schema["$defs"].get(CONNECTION_MODELS["local"].__name__, {})
    if "base_path" in local.get("required", []):  # default: ./data of the working directory
        local["required"].remove("base_path")
    result: dict[str, Any] = _accept_strings(schema)
    return result


# Where the keys of ACCEPTED_NOT_APPLIED live: their pattern's prefix -> the schema's models.
_NOTED_IN: dict[tuple[str, ...], tuple[str, ...]] = {
    (): ("",),
    ("story",): ("StoryConfig",),
    ("pipelines", "*"): ("PipelineConfig",),
    ("pipelines", "*", "nodes", "*"): ("NodeConfig",),
    ("pipelines", "*", "nodes", "*", "validation"): ("ValidationConfig",),
    ("pipelines", "*", "nodes", "*", "validation", "quarantine"): ("QuarantineConfig",),
    ("connections", "*"): tuple(m.__name__ for m in CONNECTION_MODELS.values()),
}


def _accept_noted(schema: dict[str, Any]) -> None:
    """The keys accepted only for Odibi compatibility, as properties of any value, so that an
    editor does not flag an Odibi v3 file that ``validate`` accepts (with a note)."""
    for pattern, why in ACCEPTED_NOT_APPLIED.items():
        # keys inside a free mapping (a pattern's params) need no property of their own
        for model in _NOTED_IN.get(pattern[:-1], ()):
            target = schema if not model else schema["$defs"].get(model)
            if target is not None and "properties" in target:
                target["properties"][pattern[-1]] = {
                    "description": f"Odibi v3; accepted, not applied here: {why}."
                }


# Models that also accept a plain string in YAML (their before-validators turn it into the
# model), which pydantic's schema does not show.
_STRING_FORMS = {
    "#/$defs/Step": "A SQL query (same as `sql: ...`).",
    "#/$defs/ScheduleConfig": "A cron expression (same as `cron: ...`), e.g. '0 6 * * *'.",
}


def _accept_strings(node: Any) -> Any:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if ref in _STRING_FORMS and len(node) == 1:
            return {"anyOf": [{"type": "string", "description": _STRING_FORMS[ref]}, node]}
        return {k: _accept_strings(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_accept_strings(v) for v in node]
    return node
