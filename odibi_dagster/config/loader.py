"""Load an Odibi project (one YAML file or a project directory) into validated models.

Every problem found is reported at once, each as ``<file>:<line>: <key path>: <message>``.
"""

from __future__ import annotations

import difflib
import importlib
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from odibi_dagster.config.models import (
    CONNECTION_TYPES,
    NAME_PATTERN,
    AzureAdlsConnection,
    LocalConnection,
    NodeConfig,
    PipelineConfig,
    ProjectConfig,
)
from odibi_dagster.config.yaml_source import (
    KeyPath,
    SourceMap,
    format_path,
    interpolate_env,
    load_yaml,
)
from odibi_dagster.errors import OdibiConfigError, Problem
from odibi_dagster.transforms import check_params, get_function, import_transforms_file

PROJECT_FILES = ("project.yaml", "project.yml")
TRANSFORMS_FILE = "transforms.py"


@dataclass
class LoadedProject:
    """A validated project plus where it came from."""

    config: ProjectConfig
    source: Path
    root_dir: Path
    files: list[Path] = field(default_factory=list)
    smap: SourceMap = field(default_factory=SourceMap)
    # key path -> the text as written, for values filled from ${VAR}
    env_refs: dict[KeyPath, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.config.project or self.source.stem


def display_name(path: Path) -> str:
    """A path as short as it can be while still leading to the file from the cwd."""
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return str(path)
    return rel if not rel.startswith("..") else str(path)


def load_project(
    path: str | os.PathLike[str], environ: dict[str, str] | None = None
) -> LoadedProject:
    """Read, check and return the project at ``path``; raise OdibiConfigError otherwise."""
    p = Path(path).expanduser().resolve()
    if p.is_dir():
        project_file = next((p / f for f in PROJECT_FILES if (p / f).is_file()), None)
        if project_file is None:
            raise OdibiConfigError(
                [
                    Problem(
                        display_name(p),
                        None,
                        "no project.yaml in this directory; a project directory holds "
                        "project.yaml and pipelines/*.yaml (or pass a single YAML file)",
                    )
                ]
            )
        pipeline_files = sorted(
            f for f in (p / "pipelines").glob("*.y*ml") if f.suffix in (".yaml", ".yml")
        )
    elif p.is_file():
        project_file, pipeline_files = p, []
    else:
        raise OdibiConfigError([Problem(display_name(p), None, "no such file or directory")])

    data, smap = load_yaml(project_file, display_name(project_file))
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise OdibiConfigError(
            [smap.problem((), "the project file must be a mapping (key: value) at the top")]
        )
    problems: list[Problem] = []
    order = [display_name(f) for f in (project_file, *pipeline_files)]
    data = _merge_pipeline_files(data, smap, pipeline_files, problems)

    env_refs: dict[KeyPath, str] = {}
    data = interpolate_env(data, smap, environ, problems=problems, refs=env_refs)

    _import_all_transforms(project_file, data, smap, problems)

    try:
        config = ProjectConfig.model_validate(data)
    except ValidationError as exc:
        # the checks across keys need a valid model: report what we have so far
        problems.extend(_problems_from_validation(exc, data, smap))
        raise OdibiConfigError(_sorted(problems, order)) from None

    _apply_defaults(config, smap, problems)
    _resolve_paths(config, smap)
    _locate_nodes(config, smap)
    problems.extend(check_semantics(config, smap))
    if problems:
        raise OdibiConfigError(_sorted(problems, order))
    return LoadedProject(
        config=config,
        source=project_file,
        root_dir=project_file.parent,
        files=[project_file, *pipeline_files],
        smap=smap,
        env_refs=env_refs,
    )


def _sorted(problems: list[Problem], order: list[str]) -> list[Problem]:
    """In load order: the project file first, then each pipeline file; by line within one."""
    rank = {f: i for i, f in enumerate(order)}
    return sorted(problems, key=lambda pr: (rank.get(pr.file, len(rank)), pr.file, pr.line or 0))


def _merge_pipeline_files(
    data: dict[str, Any], smap: SourceMap, files: list[Path], problems: list[Problem]
) -> dict[str, Any]:
    """Append each ``pipelines/*.yaml`` (one pipeline, or a ``pipelines:`` list)."""
    if not files:
        return data
    pipelines = data.get("pipelines")
    if pipelines is None:
        pipelines = []
    if not isinstance(pipelines, list):
        return data  # the model reports the wrong type
    for f in files:
        fdata, fmap = load_yaml(f, display_name(f))
        if fdata is None:
            problems.append(Problem(fmap.default_file, None, "the pipeline file is empty"))
            continue
        if not isinstance(fdata, dict):
            problems.append(
                fmap.problem((), "a pipeline file must be a mapping with `pipeline:` and `nodes:`")
            )
            continue
        listed = "pipelines" in fdata and "pipeline" not in fdata
        allowed = {"pipelines"} if listed else set(PipelineConfig.model_fields)
        fdata = dict(fdata)
        for extra in [k for k in fdata if k not in allowed and k in ProjectConfig.model_fields]:
            file, line = fmap.locate((extra,))
            key_path = (extra,) if listed else ("pipelines", len(pipelines), extra)
            problems.append(
                Problem(
                    file,
                    line,
                    f"'{extra}' is a project setting; move project settings to project.yaml. "
                    "A pipeline file holds one pipeline (`pipeline:` + `nodes:`) or a "
                    "`pipelines:` list",
                    format_path(key_path),
                )
            )
            del fdata[extra]
        if listed:
            items = fdata["pipelines"]
            if not isinstance(items, list):
                problems.append(
                    fmap.problem(
                        ("pipelines",),
                        f"expected a list, got {_type_name(items)}; write each pipeline as "
                        "an item: `- pipeline: ...`",
                    )
                )
                continue
            for i, item in enumerate(items):
                smap.graft(_sub_map(fmap, ("pipelines", i)), ("pipelines", len(pipelines)))
                pipelines.append(item)
        else:
            smap.graft(fmap, ("pipelines", len(pipelines)))
            pipelines.append(fdata)
    data = dict(data)
    data["pipelines"] = pipelines
    return data


def _sub_map(smap: SourceMap, prefix: KeyPath) -> SourceMap:
    out = SourceMap(default_file=smap.default_file)
    n = len(prefix)
    for k, v in smap.entries.items():
        if k[:n] == prefix:
            out.entries[k[n:]] = v
    return out


def _import_all_transforms(
    project_file: Path, data: dict[str, Any], smap: SourceMap, problems: list[Problem]
) -> None:
    """transforms.py beside the project file, then each entry of ``transforms:``."""
    default = project_file.parent / TRANSFORMS_FILE
    if default.is_file():
        _import_transforms(default, problems)
    entries = data.get("transforms")
    if not isinstance(entries, list):
        return  # absent, or the model reports the wrong type
    for i, entry in enumerate(entries):
        if not isinstance(entry, str):
            continue
        path = project_file.parent / entry
        if entry.endswith(".py"):
            if not path.is_file():
                problems.append(
                    smap.problem(("transforms", i), f"no such file: {display_name(path)}")
                )
            elif path.resolve() != default.resolve():
                _import_transforms(path, problems)
            continue
        try:
            importlib.import_module(entry)
        except Exception as exc:
            problems.append(
                smap.problem(
                    ("transforms", i),
                    f"cannot import module '{entry}': {type(exc).__name__}: {exc}. Give a .py "
                    "file relative to the project file, or a module on the Python path",
                )
            )


def _import_transforms(path: Path, problems: list[Problem]) -> None:
    try:
        import_transforms_file(path)
    except Exception as exc:
        tb = exc.__traceback__
        line = None
        while tb is not None:
            if Path(tb.tb_frame.f_code.co_filename).resolve() == path.resolve():
                line = tb.tb_lineno
            tb = tb.tb_next
        problems.append(
            Problem(
                display_name(path),
                line,
                f"importing the transform functions failed: {type(exc).__name__}: {exc}",
            )
        )


# --------------------------------------------------------------------------- pydantic errors


def _problems_from_validation(exc: ValidationError, data: Any, smap: SourceMap) -> list[Problem]:
    out: list[Problem] = []
    seen: set[tuple[KeyPath, str]] = set()
    for err in exc.errors(include_url=False):
        path = _data_path(err["loc"], data, err["type"])
        if err["type"] == "unknown_connection_type":
            path = (*path, "type")
        message = _message(err, path, data)
        key = (path, message)
        if key in seen:
            continue
        seen.add(key)
        out.append(smap.problem(path, message))
    return _fold_misspellings(out)


def _fold_misspellings(problems: list[Problem]) -> list[Problem]:
    """A misspelt required key is one mistake: keep "unknown key 'formt' (did you mean
    'format'?)" and drop the "missing required key 'format'" it causes."""
    suggested = set()
    for p in problems:
        m = re.match(r"unknown key '[^']*' \(did you mean '([^']*)'\?\)", p.message)
        if m:
            parent = p.key_path.rsplit(".", 1)[0] if "." in p.key_path else ""
            suggested.add(f"{parent}.{m.group(1)}" if parent else m.group(1))
    return [
        p
        for p in problems
        if not (p.message.startswith("missing required key") and p.key_path in suggested)
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
            ann = fld.annotation
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
            ann = typing.get_args(ann)[0]
        elif origin in (typing.Union, types.UnionType):
            if isinstance(value, dict) and value.get("type") == "azure_adls":
                return AzureAdlsConnection
            if isinstance(value, dict) and value.get("type") == "local":
                return LocalConnection
            members = [_pick(a, None) for a in typing.get_args(ann) if a is not type(None)]
            models = [m for m in members if isinstance(m, type) and issubclass(m, BaseModel)]
            ann = models[0] if models else members[0]
        else:
            return ann


def _allowed_keys(model: type[BaseModel]) -> list[str]:
    return [f.alias or name for name, f in model.model_fields.items()]


def _did_you_mean(key: str, allowed: list[str]) -> str:
    return _suggest(key, allowed) or f" (allowed here: {', '.join(allowed)})"


def _message(err: Any, path: KeyPath, data: Any) -> str:
    typ = err["type"]
    key = path[-1] if path else ""
    inp = err.get("input")
    if typ == "extra_forbidden":
        parent = _model_at(path[:-1], data)
        hint = _did_you_mean(str(key), _allowed_keys(parent)) if parent else ""
        return f"unknown key '{key}'{hint}"
    if typ == "missing":
        return f"missing required key '{key}'"
    if typ == "unknown_connection_type":
        if not isinstance(inp, dict):
            return f"expected a mapping (key: value), got {_type_name(inp)}"
        if "type" not in inp:
            return f"missing required key 'type' ({' or '.join(CONNECTION_TYPES)})"
        return f"unsupported connection type '{inp['type']}'; supported: " + ", ".join(
            CONNECTION_TYPES
        )
    if typ == "literal_error":
        expected = err.get("ctx", {}).get("expected", "")
        what = {"format": "format", "mode": "write mode", "engine": "engine"}.get(
            str(key), str(key) or "value"
        )
        return f"unsupported {what} '{inp}'; use one of: {expected.replace(' or ', ', ')}"
    if typ == "string_pattern_mismatch":
        return (
            f"'{inp}' is not a valid name: use letters, digits and underscores, not starting "
            "with a digit (it becomes a Dagster name and a SQL table name)"
        )
    if typ in ("too_short",) and isinstance(inp, list | dict):
        return "needs at least one entry"
    if typ in ("model_type", "model_attributes_type", "dict_type"):
        return f"expected a mapping (key: value), got {_type_name(inp)}"
    if typ == "list_type":
        return f"expected a list, got {_type_name(inp)}"
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
        return f"expected {want[kind]}, got {_type_name(inp)}"
    msg = str(err.get("msg", "invalid value"))
    return msg[:1].lower() + msg[1:]


def _type_name(v: Any) -> str:
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


# --------------------------------------------------------------------------- after validation


def _apply_defaults(config: ProjectConfig, smap: SourceMap, problems: list[Problem]) -> None:
    d = config.defaults
    if d is None:
        return
    for name in ("retry", "logging", "story"):
        value = getattr(d, name)
        if value is None:
            continue
        if getattr(config, name) is not None:
            top = smap.locate((name,))
            problems.append(
                smap.problem(
                    ("defaults", name),
                    f"'{name}' is set both here and at the top level (line {top[1]}); keep one",
                )
            )
            continue
        setattr(config, name, value)


def _declaring_dir(smap: SourceMap, path: KeyPath) -> Path:
    file, _ = smap.locate(path)
    return Path(file).resolve().parent if file else Path.cwd()


def _resolve_paths(config: ProjectConfig, smap: SourceMap) -> None:
    for name, conn in config.connections.items():
        if isinstance(conn, LocalConnection):
            base = Path(os.path.expanduser(conn.base_path))
            if not base.is_absolute():
                base = _declaring_dir(smap, ("connections", name, "base_path")) / base
            conn.base_path = os.path.normpath(str(base))
    story = config.story
    if story is not None and story.output_path:
        out = Path(os.path.expanduser(story.output_path))
        if not out.is_absolute():
            where: KeyPath = ("story", "output_path")
            if smap.entries.get(where) is None:
                where = ("defaults", "story", "output_path")
            out = _declaring_dir(smap, where) / out
        story.output_path = os.path.normpath(str(out))


def _locate_nodes(config: ProjectConfig, smap: SourceMap) -> None:
    for pi, pipe in enumerate(config.pipelines):
        pipe._file = smap.locate(("pipelines", pi))[0]
        for ni, node in enumerate(pipe.nodes):
            node._key_path = ("pipelines", pi, "nodes", ni)
            node._file, node._line = smap.locate(node._key_path)


def check_semantics(config: ProjectConfig, smap: SourceMap) -> list[Problem]:
    """Checks across keys: names, references, cycles, functions."""
    problems: list[Problem] = []
    conns = list(config.connections)

    def unknown_conn(path: KeyPath, name: str) -> None:
        if name not in config.connections:
            problems.append(
                smap.problem(
                    path,
                    f"unknown connection '{name}'{_suggest(name, conns)}; defined connections: "
                    f"{', '.join(conns)}",
                )
            )

    for name in conns:
        if not re.match(NAME_PATTERN, name) or "__" in name.strip("_"):
            problems.append(
                smap.problem(
                    ("connections", name),
                    f"connection name '{name}' is not valid: use letters, digits and single "
                    "underscores, not starting with a digit (it becomes a Dagster resource key)",
                )
            )
    if config.story is not None and config.story.active and config.story.connection:
        unknown_conn(("story", "connection"), config.story.connection)

    seen_pipes: dict[str, int] = {}
    for pi, pipe in enumerate(config.pipelines):
        ppath: KeyPath = ("pipelines", pi)
        if pipe.pipeline in seen_pipes:
            first = smap.locate(("pipelines", seen_pipes[pipe.pipeline], "pipeline"))
            problems.append(
                smap.problem(
                    (*ppath, "pipeline"),
                    f"duplicate pipeline name '{pipe.pipeline}' (also at {first[0]}:{first[1]}); "
                    "pipeline names become job names and must be unique",
                )
            )
        else:
            seen_pipes[pipe.pipeline] = pi
        problems.extend(_check_pipeline(pipe, ppath, smap, unknown_conn))
    return problems


def _suggest(name: str, options: list[str]) -> str:
    """`` (did you mean 'x'?)`` for a close match, else empty."""
    close = difflib.get_close_matches(name, options, n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _check_pipeline(
    pipe: PipelineConfig, ppath: KeyPath, smap: SourceMap, unknown_conn: Any
) -> list[Problem]:
    problems: list[Problem] = []
    names: dict[str, int] = {}
    for ni, node in enumerate(pipe.nodes):
        npath: KeyPath = (*ppath, "nodes", ni)
        if node.name in names:
            first = smap.locate((*ppath, "nodes", names[node.name], "name"))
            problems.append(
                smap.problem(
                    (*npath, "name"),
                    f"duplicate node name '{node.name}' in pipeline '{pipe.pipeline}' "
                    f"(first at line {first[1]})",
                )
            )
        else:
            names[node.name] = ni
    node_names = list(names)
    for ni, node in enumerate(pipe.nodes):
        npath = (*ppath, "nodes", ni)
        for di, dep in enumerate(node.depends_on):
            if dep == node.name:
                problems.append(
                    smap.problem((*npath, "depends_on", di), f"node '{dep}' depends on itself")
                )
            elif dep not in names:
                problems.append(
                    smap.problem(
                        (*npath, "depends_on", di),
                        f"unknown node '{dep}' in depends_on{_suggest(dep, node_names)}; nodes "
                        f"of pipeline '{pipe.pipeline}': {', '.join(node_names)}",
                    )
                )
        if node.read is not None:
            unknown_conn((*npath, "read", "connection"), node.read.connection)
        if node.write is not None:
            unknown_conn((*npath, "write", "connection"), node.write.connection)
        write_only = node.write is not None and node.read is None and node.transform is None
        if write_only and len(node.depends_on) != 1:
            problems.append(
                smap.problem(
                    (*npath, "write"),
                    "a node with only `write:` writes its one upstream node: give it "
                    f"exactly one depends_on (it has {len(node.depends_on)}), or add a "
                    "`transform:` that combines them",
                )
            )
        if node.transform is not None:
            problems.extend(_check_functions(node, npath, smap))
        if node.read is not None and node.read.options.get("partition_by"):
            problems.append(
                smap.problem(
                    (*npath, "read", "options", "partition_by"),
                    "partition_by is a write option; move it under `write.options`",
                )
            )
    cycle = find_cycle(
        {n.name: [d for d in n.depends_on if d in names and d != n.name] for n in pipe.nodes}
    )
    if cycle:
        first_index = names[cycle[0]]
        problems.append(
            smap.problem(
                (*ppath, "nodes", first_index, "depends_on"),
                f"dependency cycle in pipeline '{pipe.pipeline}': {' -> '.join(cycle)}; "
                "remove one of these depends_on entries",
            )
        )
    return problems


def _check_functions(node: NodeConfig, npath: KeyPath, smap: SourceMap) -> list[Problem]:
    from odibi_dagster.transforms import registered_functions

    problems: list[Problem] = []
    assert node.transform is not None
    for si, step in enumerate(node.transform.steps):
        if step.function is None:
            continue
        spath: KeyPath = (*npath, "transform", "steps", si, "function")
        func = get_function(step.function)
        if func is None:
            known = sorted(registered_functions())
            problems.append(
                smap.problem(
                    spath,
                    f"unknown function '{step.function}'{_suggest(step.function, known)}. "
                    "Register it with @odibi_dagster.transform in transforms.py beside the "
                    "project file, or in a module your definitions.py imports before "
                    "load_definitions" + (f" (registered: {', '.join(known)})" if known else ""),
                )
            )
            continue
        why = check_params(func, step.params)
        if why:
            problems.append(smap.problem((*npath, "transform", "steps", si, "params"), why))
    return problems


def find_cycle(graph: dict[str, list[str]]) -> list[str] | None:
    """A cycle as ``[a, b, c, a]`` (following depends_on edges), or None.

    Iterative, so a long chain of nodes cannot exhaust Python's recursion limit.
    """
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    for start in graph:
        if start in state:
            continue
        path: list[str] = [start]
        iters = [iter(graph.get(start, []))]
        state[start] = 1
        while iters:
            nxt = next(iters[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                iters.pop()
            elif state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            elif nxt not in state:
                state[nxt] = 1
                path.append(nxt)
                iters.append(iter(graph.get(nxt, [])))
    return None
