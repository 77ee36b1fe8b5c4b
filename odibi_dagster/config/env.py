"""Environment variables in the YAML, at load time: ``${VAR}`` filled in from the
environment (an unset one is a ``file:line`` problem), secrets kept as references, and the
text as written remembered for what is shown to people."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

from odibi_dagster.config.yaml_source import KeyPath, SourceMap
from odibi_dagster.env_refs import API_REQUEST_KEYS, API_REQUEST_OPTIONS, ENV_REF
from odibi_dagster.errors import OdibiConfigError, Problem
from odibi_dagster.resources.kinds import CONNECTION_KINDS

# Fields whose values are secrets: a ``${VAR}`` there is kept as a reference, never
# replaced by the value, so the secret stays out of the loaded config and run config.
SECRET_KEYS = frozenset().union(*(kind.secret_fields for kind in CONNECTION_KINDS.values()))
# Mappings of a connection whose every value is kept so (an http connection's auth and
# headers, Odibi v3)
SECRET_MAPS = frozenset(name for kind in CONNECTION_KINDS.values() for name in kind.secret_maps)


def is_secret_path(path: KeyPath) -> bool:
    """Whether the value at ``path`` is a secret: a connection's secret field or a value of
    its secret mappings (an http connection's ``auth:`` and ``headers:``), an alert's
    webhook URL (which carries its token; read when an alert is sent), or a Spark Connect
    URL (``spark: {remote: ...}``, which may carry one; read where the run executes)."""
    if path[-2:] == ("spark", "remote") and (len(path) == 2 or path[0] == "pipelines"):
        return True
    if len(path) == 4 and path[0] == "connections" and path[2] in SECRET_MAPS:
        return True
    if len(path) != 3:
        return False
    if path[0] == "connections":
        return path[-1] in SECRET_KEYS
    return path[0] == "alerts" and isinstance(path[1], int) and path[2] == "url"


def api_read_secret_paths(data: Any) -> frozenset[KeyPath]:
    """Where the ``format: api`` reads of a project (as loaded, before validation) hold
    request values: ``read.path`` and ``read.options.params`` / ``request_body``. A
    ``${VAR}`` there is a secret (an API key in a query parameter, a password in a body):
    kept as written and filled in by :mod:`odibi_dagster.api_read` at the request."""
    found: set[KeyPath] = set()
    pipelines = data.get("pipelines") if isinstance(data, dict) else None
    for pi, pipe in enumerate(pipelines if isinstance(pipelines, list) else []):
        nodes = pipe.get("nodes") if isinstance(pipe, dict) else None
        for ni, node in enumerate(nodes if isinstance(nodes, list) else []):
            read = node.get("read") if isinstance(node, dict) else None
            if isinstance(read, dict) and read.get("format") == "api":
                rpath: KeyPath = ("pipelines", pi, "nodes", ni, "read")
                found |= {(*rpath, k) for k in API_REQUEST_KEYS}
                found |= {(*rpath, "options", k) for k in API_REQUEST_OPTIONS}
    return frozenset(found)


def interpolate_env(
    data: Any,
    smap: SourceMap,
    environ: Mapping[str, str] | None = None,
    path: KeyPath = (),
    problems: list[Problem] | None = None,
    refs: dict[KeyPath, str] | None = None,
    kept: frozenset[KeyPath] | None = None,
) -> Any:
    """Replace ``${VAR}`` (or ``${VAR:-default}``) in string values with the environment.

    An unset variable without a default is a problem naming it. Under a secret key (or
    under a path of ``kept``, by default the request values of ``format: api`` reads) the
    reference is kept as written, so the value never enters the config.
    ``refs`` collects, for every value filled from the environment, the text as written,
    so what is shown to people (metadata, stories) can show ``${VAR}`` instead.
    """
    env = os.environ if environ is None else environ
    top = problems is None
    found: list[Problem] = [] if problems is None else problems
    if kept is None:
        kept = api_read_secret_paths(data) if not path else frozenset()
    result: Any
    if isinstance(data, dict):
        result = {
            k: interpolate_env(v, smap, environ, (*path, k), found, refs, kept)
            for k, v in data.items()
        }
    elif isinstance(data, list):
        result = [
            interpolate_env(v, smap, environ, (*path, i), found, refs, kept)
            for i, v in enumerate(data)
        ]
    elif isinstance(data, str) and ENV_REF.search(data):
        if any(path[: len(p)] == p for p in kept):
            result = data  # a request value of an api read: see api_read_secret_paths
        else:
            result = _interpolate_str(data, path, smap, env, found)
        if refs is not None:
            refs[path] = data
    else:
        result = data
    if top and found:
        raise OdibiConfigError(found)
    return result


def _interpolate_str(
    value: str, path: KeyPath, smap: SourceMap, env: Mapping[str, str], problems: list[Problem]
) -> str:
    if is_secret_path(path):
        # Kept as written and resolved where it is used (a connection's key: a Dagster
        # EnvVar, where the run executes; an alert's URL: in the sensor that sends it), so
        # the process that loads definitions need not hold it.
        return value

    def repl(m: re.Match[str]) -> str:
        name, default = m.group(1), m.group(2)
        if name in env:
            return str(env[name])
        if default is not None:
            return default
        problems.append(
            smap.problem(
                path,
                f"environment variable {name} is not set; export it (e.g. "
                f"`export {name}=...`) or give a default with ${{{name}:-value}}",
            )
        )
        return m.group(0)

    return ENV_REF.sub(repl, value)


def as_written(value: Any, path: KeyPath, refs: Mapping[KeyPath, str]) -> Any:
    """``value`` (found at ``path``) with every environment-filled string put back as written."""
    if path in refs:
        return refs[path]
    if isinstance(value, dict):
        return {k: as_written(v, (*path, k), refs) for k, v in value.items()}
    if isinstance(value, list):
        return [as_written(v, (*path, i), refs) for i, v in enumerate(value)]
    return value
