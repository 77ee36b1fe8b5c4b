"""Pydantic's validation errors as problems a person fixes in one look: located at
``file:line`` and a key path, in plain words, with a "did you mean" for a misspelt key."""

from __future__ import annotations

import re
import types
import typing
from typing import Any

from pydantic import BaseModel, Discriminator, Tag, ValidationError

from odibi_dagster.config.compat import ODIBI_KEYS_NOT_SUPPORTED
from odibi_dagster.config.models import CONNECTION_MODELS, CONNECTION_TYPES, ProjectConfig
from odibi_dagster.config.semantics import suggest
from odibi_dagster.config.yaml_source import KeyPath, SourceMap
from odibi_dagster.errors import Problem


def problems_from_validation(exc: ValidationError, data: Any, smap: SourceMap) -> list[Problem]:
    out: list[Problem] = []
    seen: set[tuple[KeyPath, str]] = set()
    for err in exc.errors(include_url=False):
        path = _data_path(err["loc"], data, err["type"])
        if err["type"] == "unknown_connection_type":
            path = (*path, "type")
        message = _named(path, data) + _message(err, path, data)
        key = (path, message)
        if key in seen:
            continue
        seen.add(key)
        out.append(smap.problem(path, message))
    return _fold_misspellings(out)


def _named(path: KeyPath, data: Any) -> str:
    """``node 'x': `` for a problem inside a node that has a name (the index alone is
    hard to find in a long file), else nothing."""
    for i in range(len(path) - 1, 0, -1):
        if path[i - 1] == "nodes" and isinstance(path[i], int):
            node = _value_at(data, path[: i + 1])
            name = node.get("name") if isinstance(node, dict) else None
            return f"node '{name}': " if isinstance(name, str) and name else ""
    return ""


def _fold_misspellings(problems: list[Problem]) -> list[Problem]:
    """A misspelt required key is one mistake: keep "unknown key 'formt' (did you mean
    'format'?)" and drop the "missing required key 'format'" it causes."""
    suggested = set()
    for p in problems:
        m = re.search(r"unknown key '[^']*' \(did you mean '([^']*)'\?\)", p.message)
        if m:
            parent = p.key_path.rsplit(".", 1)[0] if "." in p.key_path else ""
            suggested.add(f"{parent}.{m.group(1)}" if parent else m.group(1))
    return [
        p for p in problems if not ("missing required key" in p.message and p.key_path in suggested)
    ]


def _data_path(loc: tuple[Any, ...], data: Any, err_type: str) -> KeyPath:
    """Drop the union tags pydantic puts in ``loc``, keeping only real data keys."""
    path: list[str | int] = []
    cur = data
    for i, part in enumerate(loc):
        last = i == len(loc) - 1
        if (isinstance(cur, dict) and part in cur) or (
            isinstance(cur, list) and isinstance(part, int) and part < len(cur)
        ):
            path.append(part)
            cur = cur[part]
        elif last and err_type in ("missing", "extra_forbidden"):
            path.append(part)
        # otherwise ``part`` is a union tag or model name: not a key of the data
    return tuple(path)


def _value_at(data: Any, path: KeyPath) -> Any:
    cur = data
    for part in path:
        try:
            cur = cur[part]
        except (KeyError, IndexError, TypeError):
            return None
    return cur


def _model_at(path: KeyPath, data: Any) -> type[BaseModel] | None:
    """The model class that validates the mapping at ``path`` (for did-you-mean)."""
    ann: Any = ProjectConfig
    cur = data
    for part in path:
        ann = _pick(ann, cur)
        if isinstance(ann, type) and issubclass(ann, BaseModel) and isinstance(part, str):
            fld = ann.model_fields.get(part) or next(
                (f for f in ann.model_fields.values() if f.alias == part), None
            )
            if fld is None:
                return None
            # pydantic keeps a field's Annotated metadata (a Discriminator) apart
            meta = [m for m in fld.metadata if isinstance(m, Discriminator)]
            ann = typing.Annotated[(fld.annotation, *meta)] if meta else fld.annotation
        elif typing.get_origin(ann) is list and isinstance(part, int):
            ann = typing.get_args(ann)[0]
        elif typing.get_origin(ann) is dict:
            ann = typing.get_args(ann)[1]
        else:
            return None
        cur = _value_at(cur, (part,))
    ann = _pick(ann, cur)
    return ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None


def _pick(ann: Any, value: Any) -> Any:
    """Strip Annotated/Optional; choose the union member that fits ``value``."""
    while True:
        origin = typing.get_origin(ann)
        if origin is typing.Annotated:
            inner, *meta = typing.get_args(ann)
            tagged = _tagged_member(inner, meta, value)
            ann = tagged if tagged is not None else inner
        elif origin in (typing.Union, types.UnionType):
            if isinstance(value, dict) and value.get("type") in CONNECTION_MODELS:
                return CONNECTION_MODELS[value["type"]]
            members = [_pick(a, value) for a in typing.get_args(ann) if a is not type(None)]
            models = [m for m in members if isinstance(m, type) and issubclass(m, BaseModel)]
            ann = models[0] if models else members[0]
        else:
            return ann


def _tagged_member(union: Any, meta: list[Any], value: Any) -> Any:
    """The member of a union with a callable ``Discriminator`` that ``value`` is tagged as
    (a connection's ``type:``, a generator's, a simulation read's ``format:``)."""
    disc = next((m for m in meta if isinstance(m, Discriminator)), None)
    if disc is None or not callable(disc.discriminator) or value is None:
        return None
    tag = disc.discriminator(value)
    for member in typing.get_args(union):
        if typing.get_origin(member) is typing.Annotated:
            inner, *tags = typing.get_args(member)
            if any(isinstance(t, Tag) and t.tag == tag for t in tags):
                return inner
    return None


def _allowed_keys(model: type[BaseModel]) -> list[str]:
    return [f.alias or name for name, f in model.model_fields.items()]


def _did_you_mean(key: str, allowed: list[str]) -> str:
    return suggest(key, allowed) or f" (allowed here: {', '.join(allowed)})"


def _message(err: Any, path: KeyPath, data: Any) -> str:
    typ = err["type"]
    key = path[-1] if path else ""
    inp = err.get("input")
    if typ == "extra_forbidden":
        parent = _model_at(path[:-1], data)
        odibi = ODIBI_KEYS_NOT_SUPPORTED.get(parent.__name__, {}) if parent else {}
        if str(key) in odibi:
            return f"unknown key '{key}' (Odibi v3's, not supported here): {odibi[str(key)]}"
        hint = _did_you_mean(str(key), _allowed_keys(parent)) if parent else ""
        return f"unknown key '{key}'{hint}"
    if typ == "missing":
        return f"missing required key '{key}'"
    if typ == "unknown_connection_type":
        if not isinstance(inp, dict):
            return f"expected a mapping (key: value), got {type_name(inp)}"
        if "type" not in inp:
            return f"missing required key 'type' ({' or '.join(CONNECTION_TYPES)})"
        return f"unsupported connection type '{inp['type']}'; supported: " + ", ".join(
            CONNECTION_TYPES
        )
    if typ == "literal_error":
        expected = err.get("ctx", {}).get("expected", "")
        what = {
            "format": "format",
            "mode": "write mode",
            "engine": "engine",
            "type": "partition type" if "partitions" in path[-2:-1] else "alert type",
        }.get(str(key), str(key) or "value")
        if "incremental" in path[:-1]:
            what = f"incremental {key}"
        return f"unsupported {what} '{inp}'; use one of: {expected.replace(' or ', ', ')}"
    if typ == "string_pattern_mismatch":
        return (
            f"'{inp}' is not a valid name: use letters, digits and underscores, not starting "
            "with a digit (it becomes a Dagster name and a SQL table name)"
        )
    if typ in ("too_short",) and isinstance(inp, list | dict):
        return "needs at least one entry"
    if typ in ("model_type", "model_attributes_type", "dict_type"):
        return f"expected a mapping (key: value), got {type_name(inp)}"
    if typ == "list_type":
        return f"expected a list, got {type_name(inp)}"
    if typ == "value_error":
        msg = str(err.get("msg", ""))
        return msg.removeprefix("Value error, ")
    if typ in (
        "string_type",
        "bool_type",
        "bool_parsing",
        "int_type",
        "int_parsing",
        "float_type",
        "float_parsing",
    ):
        want = {
            "string": "a string",
            "bool": "true or false",
            "int": "a whole number",
            "float": "a number",
        }
        kind = typ.split("_")[0]
        return f"expected {want[kind]}, got {type_name(inp)}"
    msg = str(err.get("msg", "invalid value"))
    return msg[:1].lower() + msg[1:]


def type_name(v: Any) -> str:
    if v is None:
        return "nothing (null)"
    if isinstance(v, bool):
        return "a boolean"
    if isinstance(v, dict):
        return "a mapping"
    if isinstance(v, list):
        return "a list"
    if isinstance(v, str):
        return "a string"
    if isinstance(v, int | float):
        return "a number"
    return type(v).__name__
