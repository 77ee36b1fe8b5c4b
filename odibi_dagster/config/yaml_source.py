"""YAML that remembers where every value came from.

Pydantic errors carry a key path (``pipelines.0.nodes.2.read.format``); to turn that
into ``file:line`` we parse YAML ourselves with PyYAML's composer and record, for
every key path, the file and line of the key (or of the list item).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from odibi_dagster.errors import OdibiConfigError, OdibiRunError, Problem

KeyPath = tuple[str | int, ...]

# Fields whose values are secrets: a ``${VAR}`` there is kept as a reference, never
# replaced by the value, so the secret stays out of the loaded config and run config.
SECRET_KEYS = frozenset({"account_key"})

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


@dataclass
class SourceMap:
    """Key path -> (file, line). Paths are those of the merged project document."""

    entries: dict[KeyPath, tuple[str, int]] = field(default_factory=dict)
    default_file: str = ""

    def locate(self, path: KeyPath) -> tuple[str, int | None]:
        """The file and line of ``path`` or, failing that, of its nearest located parent."""
        p = tuple(path)
        while True:
            hit = self.entries.get(p)
            if hit is not None:
                return hit
            if not p:
                return (self.default_file, None)
            p = p[:-1]

    def problem(self, path: KeyPath, message: str) -> Problem:
        file, line = self.locate(path)
        return Problem(file=file, line=line, message=message, key_path=format_path(path))

    def graft(self, other: SourceMap, prefix: KeyPath) -> None:
        for k, v in other.entries.items():
            self.entries[prefix + k] = v


def format_path(path: KeyPath) -> str:
    """``('pipelines', 0, 'nodes', 1, 'read')`` -> ``pipelines[0].nodes[1].read``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


class _Constructor(yaml.constructor.SafeConstructor):
    pass


def load_yaml(file: Path, display: str) -> tuple[Any, SourceMap]:
    """Parse one YAML file into plain Python data and its source map.

    ``display`` is the file name used in messages (relative to where the user pointed).
    """
    smap = SourceMap(default_file=display)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise OdibiConfigError(
            [Problem(display, None, f"cannot read file: {exc.strerror or exc}")]
        ) from None
    except UnicodeDecodeError as exc:
        raise OdibiConfigError(
            [
                Problem(
                    display,
                    text_line_of(file.read_bytes(), exc.start),
                    "the file is not UTF-8 text; save it as UTF-8",
                )
            ]
        ) from None
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        what = exc.problem or str(exc)
        raise OdibiConfigError(
            [Problem(display, line, f"invalid YAML: {what}. Check indentation and quoting.")]
        ) from None
    except yaml.YAMLError as exc:
        raise OdibiConfigError([Problem(display, None, f"invalid YAML: {exc}")]) from None
    if root is None:
        return None, smap
    problems: list[Problem] = []
    constructor = _Constructor()
    data = _convert(root, (), display, smap, constructor, problems)
    if problems:
        raise OdibiConfigError(problems)
    return data, smap


def text_line_of(data: bytes, offset: int) -> int:
    return data[:offset].count(b"\n") + 1


def _construct(
    constructor: _Constructor, node: yaml.Node, path: KeyPath, display: str, problems: list[Problem]
) -> Any:
    try:
        return constructor.construct_object(node, deep=True)
    except yaml.constructor.ConstructorError as exc:
        problems.append(
            Problem(
                display,
                node.start_mark.line + 1,
                f"{exc.problem or exc}; write plain YAML values (tags such as !env are not "
                "supported: use ${VAR} for the environment)",
                format_path(path),
            )
        )
        return None


def _convert(
    node: yaml.Node,
    path: KeyPath,
    display: str,
    smap: SourceMap,
    constructor: _Constructor,
    problems: list[Problem],
) -> Any:
    smap.entries.setdefault(path, (display, node.start_mark.line + 1))
    if isinstance(node, yaml.MappingNode):
        constructor.flatten_mapping(node)
        out: dict[str, Any] = {}
        first_line: dict[str, int] = {}
        for key_node, value_node in node.value:
            key = _construct(constructor, key_node, path, display, problems)
            if not isinstance(key, str):
                key = str(key)
            line = key_node.start_mark.line + 1
            if key in out:
                problems.append(
                    Problem(
                        display,
                        line,
                        f"duplicate key '{key}' (first defined at line {first_line[key]}); "
                        "remove one of them",
                        format_path((*path, key)),
                    )
                )
                continue
            first_line[key] = line
            smap.entries[(*path, key)] = (display, line)
            out[key] = _convert(value_node, (*path, key), display, smap, constructor, problems)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [
            _convert(item, (*path, i), display, smap, constructor, problems)
            for i, item in enumerate(node.value)
        ]
    return _construct(constructor, node, path, display, problems)


def interpolate_env(
    data: Any,
    smap: SourceMap,
    environ: Mapping[str, str] | None = None,
    path: KeyPath = (),
    problems: list[Problem] | None = None,
    refs: dict[KeyPath, str] | None = None,
) -> Any:
    """Replace ``${VAR}`` (or ``${VAR:-default}``) in string values with the environment.

    An unset variable without a default is a problem naming it. Under a secret key the
    reference is checked but kept as written, so the value never enters the config.
    ``refs`` collects, for every value filled from the environment, the text as written,
    so what is shown to people (metadata, stories) can show ``${VAR}`` instead.
    """
    env = os.environ if environ is None else environ
    top = problems is None
    found: list[Problem] = [] if problems is None else problems
    result: Any
    if isinstance(data, dict):
        result = {
            k: interpolate_env(v, smap, environ, (*path, k), found, refs) for k, v in data.items()
        }
    elif isinstance(data, list):
        result = [
            interpolate_env(v, smap, environ, (*path, i), found, refs) for i, v in enumerate(data)
        ]
    elif isinstance(data, str) and _ENV_REF.search(data):
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
    is_secret = len(path) == 3 and path[0] == "connections" and path[-1] in SECRET_KEYS
    if is_secret:
        # Kept as written and resolved where the run executes (a Dagster EnvVar): the
        # process that loads definitions need not hold the key.
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

    return _ENV_REF.sub(repl, value)


def as_written(value: Any, path: KeyPath, refs: Mapping[KeyPath, str]) -> Any:
    """``value`` (found at ``path``) with every environment-filled string put back as written."""
    if path in refs:
        return refs[path]
    if isinstance(value, dict):
        return {k: as_written(v, (*path, k), refs) for k, v in value.items()}
    if isinstance(value, list):
        return [as_written(v, (*path, i), refs) for i, v in enumerate(value)]
    return value


def resolve_env(value: Any, where: str = "") -> Any:
    """Fill ``${VAR}`` references from the environment at run time (see ``as_written``)."""
    if isinstance(value, dict):
        return {k: resolve_env(v, where) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve_env(v, where) for v in value]
    if not isinstance(value, str) or not _ENV_REF.search(value):
        return value

    def repl(m: re.Match[str]) -> str:
        name, default = m.group(1), m.group(2)
        if name in os.environ:
            return os.environ[name]
        if default is not None:
            return default
        raise OdibiRunError(
            f"{where}: environment variable {name} is not set in this process; export it "
            "where the run executes"
        )

    return _ENV_REF.sub(repl, value)
