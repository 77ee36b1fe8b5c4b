"""YAML that remembers where every value came from.

Pydantic errors carry a key path (``pipelines.0.nodes.2.read.format``); to turn that
into ``file:line`` we parse YAML ourselves with PyYAML's composer and record, for
every key path, the file and line of the key (or of the list item).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from odibi_dagster.errors import OdibiConfigError, Problem

KeyPath = tuple[str | int, ...]


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


# libyaml's parser when PyYAML has it (about 10x faster than the pure-Python one; the
# nodes and their line marks are the same)
_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


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
        root = yaml.compose(text, Loader=_LOADER)
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
            if isinstance(key, bool) and isinstance(key_node, yaml.ScalarNode):
                key = key_node.value  # `on:` (YAML 1.1 reads it as true) is the key "on"
            elif not isinstance(key, str):
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


def display_name(path: Path) -> str:
    """A path as short as it can be while still leading to the file from the cwd."""
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return str(path)
    return rel if not rel.startswith("..") else str(path)
