"""Load-time checks of a node's ``pattern:``: its type, its params (against the type's
model), the target it names, and the dimension nodes a fact looks up. Each problem is
located at ``file:line`` and names the node."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ValidationError

from odibi_dagster.config.models import NodeConfig
from odibi_dagster.config.yaml_source import KeyPath, SourceMap
from odibi_dagster.errors import Problem
from odibi_dagster.patterns.context import target_of
from odibi_dagster.patterns.params import (
    NOT_APPLIED,
    PARAMS,
    PATTERN_TYPES,
    FactParams,
    MergeParams,
    Params,
)


def _suggest(name: str, options: list[str]) -> str:
    from odibi_dagster.config.semantics import suggest

    return suggest(name, options)


def _keys_of(model: type[BaseModel]) -> list[str]:
    """Every key the params model and the models inside it take."""
    out: list[str] = []
    for name, f in model.model_fields.items():
        out.append(f.alias or name)
        for arg in _models_in(f.annotation):
            out.extend(k for k in _keys_of(arg) if k not in out)
    return out


def _models_in(ann: Any) -> list[type[BaseModel]]:
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return [ann]
    found: list[type[BaseModel]] = []
    for arg in getattr(ann, "__args__", ()) or ():
        found.extend(_models_in(arg))
    return found


def _data_path(loc: tuple[Any, ...], data: Any, err_type: str) -> tuple[str | int, ...]:
    """``loc`` without pydantic's union tags: only keys the data has (and a missing or
    unknown last key)."""
    path: list[str | int] = []
    cur = data
    for i, part in enumerate(loc):
        if (isinstance(cur, dict) and part in cur) or (
            isinstance(cur, list) and isinstance(part, int) and part < len(cur)
        ):
            path.append(part)
            cur = cur[part]
        elif i == len(loc) - 1 and err_type in ("missing", "extra_forbidden"):
            path.append(part)
    return tuple(path)


def _message(err: Any, key: str, allowed: list[str]) -> str:
    typ = err["type"]
    if typ == "extra_forbidden":
        hint = _suggest(key, allowed) or f" (allowed: {', '.join(allowed)})"
        return f"unknown key '{key}'{hint}"
    if typ == "missing":
        return f"missing required key '{key}'"
    if typ == "literal_error":
        expected = str(err.get("ctx", {}).get("expected", "")).replace(" or ", ", ")
        return f"unsupported value {err.get('input')!r} for '{key}'; use one of: {expected}"
    msg = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
    return f"'{key}': {msg[:1].lower() + msg[1:]}" if key else msg


def check_pattern(
    node: NodeConfig,
    npath: KeyPath,
    smap: SourceMap,
    connections: Sequence[str],
) -> list[Problem]:
    """The problems of ``node``'s ``pattern:`` (at ``npath``)."""
    pattern = node.pattern
    if pattern is None:
        return []
    ppath: KeyPath = (*npath, "pattern")
    return check_params(
        node,
        pattern.type,
        pattern.params,
        (*ppath, "type"),
        (*ppath, "params"),
        smap,
        connections,
        what=f"pattern {pattern.type}",
    )


def check_params(
    node: NodeConfig,
    kind: str,
    params: dict[str, Any],
    type_path: KeyPath,
    params_path: KeyPath,
    smap: SourceMap,
    connections: Sequence[str],
    *,
    what: str,
) -> list[Problem]:
    """The problems of running pattern (or target-aware transformer) ``kind`` with
    ``params`` on ``node``: the name is known, the params fit its model, the target and
    quarantine connections exist, a fact's dimension tables are inputs of the node."""
    named = f"node '{node.name}': "
    if kind not in PARAMS:
        return [
            smap.problem(
                type_path,
                f"{named}unknown pattern type '{kind}'{_suggest(kind, list(PATTERN_TYPES))}; "
                f"types: {', '.join(PATTERN_TYPES)}",
            )
        ]
    model = PARAMS[kind]
    given = {k: v for k, v in params.items() if k not in NOT_APPLIED}
    try:
        parsed: Params = model.model_validate(given)
    except ValidationError as exc:
        problems = []
        allowed = _keys_of(model)
        for err in exc.errors(include_url=False):
            path = _data_path(tuple(err["loc"]), given, err["type"])
            key = str(path[-1]) if path else ""
            problems.append(
                smap.problem((*params_path, *path), f"{named}{what}: {_message(err, key, allowed)}")
            )
        return problems
    problems = []
    conns = list(connections)
    is_merge = isinstance(parsed, MergeParams)
    found = target_of(
        node,
        getattr(parsed, "target", None),
        getattr(parsed, "connection", None),
        getattr(parsed, "path", None),
        conns,
        use_write=not is_merge,
    )
    if isinstance(found, str):
        problems.append(smap.problem((*params_path, "target"), f"{named}{what}: {found}"))
        found = None
    elif found is not None and found.connection not in conns:
        problems.append(
            smap.problem(
                (*params_path, "connection"),
                f"{named}{what}: unknown connection '{found.connection}'"
                f"{_suggest(found.connection, conns)}; defined connections: {', '.join(conns)}",
            )
        )
    needs_target = kind in ("scd2", "merge") or (
        kind == "dimension" and getattr(parsed, "scd_type", 1) == 2
    )
    if found is None and needs_target and not any("target" in p.message for p in problems):
        problems.append(
            smap.problem(
                params_path,
                f"{named}{what} needs the table it keeps: give `target: <connection>.<path>` "
                "(or `connection` + `path`)"
                + ("" if is_merge else ", or a `write:` to that table"),
            )
        )
    w = node.write
    same_place = (
        w is not None
        and found is not None
        and (w.connection, w.path.strip("/")) == (found.connection, found.path.strip("/"))
    )
    if is_merge and same_place and found is not None:
        problems.append(
            smap.problem(
                (*npath_of(params_path), "write"),
                f"{named}{what} writes {found.connection}.{found.path} itself (a keyed "
                "merge); remove this `write:`, which would replace the merged table with "
                "the incoming rows",
            )
        )
    whole_table = kind in ("dimension", "scd2") or (
        kind == "aggregation" and getattr(parsed, "incremental", None) is not None
    )
    if whole_table and same_place and w is not None and w.mode == "append":
        problems.append(
            smap.problem(
                (*npath_of(params_path), "write", "mode"),
                f"{named}{what} returns the whole table it keeps (its old rows too); writing "
                "it with mode append would repeat them. Use mode overwrite",
            )
        )
    if isinstance(parsed, FactParams):
        for i, dim in enumerate(parsed.dimensions):
            if dim.dimension_table not in node.depends_on:
                problems.append(
                    smap.problem(
                        (*params_path, "dimensions", i, "dimension_table"),
                        f"{named}{what}: dimension_table '{dim.dimension_table}' is not in the "
                        f"node's depends_on ({', '.join(node.depends_on) or 'none'}); add it "
                        "there (a node that reads the dimension)",
                    )
                )
        q = parsed.quarantine
        if q is not None and q.connection not in conns:
            problems.append(
                smap.problem(
                    (*params_path, "quarantine", "connection"),
                    f"{named}{what}: unknown connection '{q.connection}'"
                    f"{_suggest(q.connection, conns)}; defined connections: {', '.join(conns)}",
                )
            )
    return problems


def npath_of(params_path: KeyPath) -> KeyPath:
    """The node's key path from its ``pattern.params`` (or ``params``) path."""
    path = list(params_path)
    while path and path[-1] in ("params", "pattern"):
        path.pop()
    return tuple(path)


def pattern_connections(node: NodeConfig) -> set[str]:
    """The connections ``node``'s pattern (or `transformer:` naming one) reads or writes besides its own read and write
    (what its runs need as resources)."""
    names = set()
    if node.pattern is not None:
        names |= params_connections(node.pattern.type, node.pattern.params)
    if node.pattern_transformer is not None:
        names |= params_connections(node.pattern_transformer, node.params)
    return names


def params_connections(kind: str, params: dict[str, Any]) -> set[str]:
    """The connections pattern (or transformer) ``kind`` with ``params`` reads or writes:
    its target's and its quarantine's."""
    if kind not in PARAMS:
        return set()
    names = set()
    if isinstance(params.get("connection"), str):
        names.add(params["connection"])
    target = params.get("target")
    if isinstance(target, str) and "." in target:
        names.add(target.partition(".")[0])
    quarantine = params.get("quarantine")
    if isinstance(quarantine, dict) and isinstance(quarantine.get("connection"), str):
        names.add(quarantine["connection"])
    return names
