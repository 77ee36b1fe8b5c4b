"""Load-time checks of ``format: api`` reads and ``type: http`` connections (Odibi v3):
an API is only read, with ``format: api``, and its ``read.options`` are Odibi's keys."""

from __future__ import annotations

import difflib
from typing import Any

from pydantic import BaseModel, ValidationError

from odibi_dagster.api_read import PAGINATION_MODELS, PAGINATION_TYPES, ApiOptions
from odibi_dagster.config.models import ProjectConfig
from odibi_dagster.config.yaml_source import KeyPath, SourceMap
from odibi_dagster.errors import Problem


def check_api_use(config: ProjectConfig, smap: SourceMap) -> list[Problem]:
    """What a project does with http connections and ``format: api``, checked."""
    problems: list[Problem] = []
    kinds = {name: getattr(c, "type", "") for name, c in config.connections.items()}
    for pi, pipe in enumerate(config.pipelines):
        for ni, node in enumerate(pipe.nodes):
            npath: KeyPath = ("pipelines", pi, "nodes", ni)
            read, write = node.read, node.write
            if read is not None and read.connection in kinds:
                kind = kinds[read.connection]
                rpath: KeyPath = (*npath, "read")
                if read.format == "api" and kind != "http":
                    problems.append(
                        smap.problem(
                            (*rpath, "format"),
                            f"format: api reads an http connection; connection "
                            f"'{read.connection}' is type {kind}",
                        )
                    )
                elif kind == "http" and read.format != "api":
                    problems.append(
                        smap.problem(
                            (*rpath, "format"),
                            f"connection '{read.connection}' is an http connection: read it "
                            "with format: api (the records of a JSON API)",
                        )
                    )
                elif read.format == "api":
                    if read.incremental is not None:
                        problems.append(
                            smap.problem(
                                (*rpath, "incremental"),
                                "incremental: is not supported with format: api; pass the "
                                "window as a query parameter (read.options.params), e.g. "
                                "since: ${date:-1d}",
                            )
                        )
                    problems.extend(_option_problems(read.options, (*rpath, "options"), smap))
            if write is not None and kinds.get(write.connection) == "http":
                problems.append(
                    smap.problem(
                        (*npath, "write", "connection"),
                        f"connection '{write.connection}' is an http connection, which is only "
                        "read (format: api); write to a local or azure_adls connection",
                    )
                )
    for pi, pipe in enumerate(config.pipelines):
        for si, sensor in enumerate(pipe.sensors):
            conn = sensor.new_files.connection
            if kinds.get(conn) == "http":
                problems.append(
                    smap.problem(
                        ("pipelines", pi, "sensors", si, "new_files", "connection"),
                        f"connection '{conn}' is an http connection: an API has no files to "
                        "watch; use a schedule",
                    )
                )
    return problems


def _option_problems(options: dict[str, Any], path: KeyPath, smap: SourceMap) -> list[Problem]:
    try:
        ApiOptions.model_validate(options)
    except ValidationError as exc:
        out = []
        for err in exc.errors():
            loc = list(err["loc"])
            model: type[BaseModel] = ApiOptions
            if len(loc) > 1 and loc[0] == "pagination" and loc[1] in PAGINATION_TYPES:
                model = PAGINATION_MODELS[str(loc.pop(1))]
            elif len(loc) > 1 and loc[0] in ApiOptions.model_fields:
                ann = ApiOptions.model_fields[str(loc[0])].annotation
                model = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else model
            if err["type"] == "extra_forbidden":
                key = str(loc[-1])
                known = list(model.model_fields)
                close = difflib.get_close_matches(key, known, n=1)
                hint = f"; did you mean '{close[0]}'?" if close else ""
                msg = f"unknown key '{key}'{hint} (it takes: {', '.join(known)})"
            else:
                msg = str(err["msg"])
            out.append(smap.problem((*path, *loc), msg))
        return out
    return []
