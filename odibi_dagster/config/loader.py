"""Load an Odibi project (one YAML file or a project directory) into validated models.

Every problem found is reported at once, each as ``<file>:<line>: <key path>: <message>``.
"""

from __future__ import annotations

import difflib
import importlib
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from odibi_dagster.builtins import get_builtin, ignored_params
from odibi_dagster.config.compat import apply_odibi_spellings, covered
from odibi_dagster.config.env import interpolate_env
from odibi_dagster.config.models import NodeConfig, PipelineConfig, ProjectConfig
from odibi_dagster.config.notes import PIPELINE_KEYS, Note, note_at, take_accepted
from odibi_dagster.config.problems import problems_from_validation, type_name
from odibi_dagster.config.semantics import check_semantics, find_cycle
from odibi_dagster.config.simulation import ignored_keys
from odibi_dagster.config.v3 import (
    ENV_SELECTOR,
    apply_environment,
    default_local_base_path,
    merge_imports,
    resolve_placeholders,
    system_notes,
)
from odibi_dagster.config.yaml_source import (
    KeyPath,
    SourceMap,
    display_name,
    format_path,
    load_yaml,
)
from odibi_dagster.errors import OdibiConfigError, Problem
from odibi_dagster.patterns.checks import pattern_connections
from odibi_dagster.resources.connection import ConnectionResource
from odibi_dagster.resources.kinds import CONNECTION_KINDS
from odibi_dagster.transforms import get_function, import_transforms_file

__all__ = ["LoadedProject", "display_name", "find_cycle", "load_project"]

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
    # keys accepted for Odibi compatibility but not applied (see config/notes.py)
    notes: list[Note] = field(default_factory=list)
    # the environment selected (--env / ODIBI_ENV), if any
    env: str | None = None
    # the path it was loaded from (a project directory or a YAML file)
    origin: Path = Path()

    @property
    def name(self) -> str:
        return self.config.project or self.source.stem

    def connections_used(self, pipeline: str) -> set[str]:
        """The connections a run of ``pipeline`` uses: those its nodes read or write, and
        the story's. (A node's inputs come from its own pipeline.)"""
        story = self.config.story
        names = {story.target_connection} if story and story.target_connection else set()
        for pipe in self.config.pipelines:
            if pipe.pipeline == pipeline:
                for node in pipe.nodes:
                    names |= {x.connection for x in (node.read, node.write) if x is not None}
                    names |= pattern_connections(node)
                    q = node.validation.quarantine if node.validation else None
                    if q is not None:
                        names.add(q.connection)
        return names

    def connection_resources(
        self, pipelines: Iterable[str] | None = None
    ) -> dict[str, ConnectionResource]:
        """The connection resources, by name: all, or those that runs of ``pipelines`` use."""
        cfg = self.config
        if pipelines is None:
            names = set(cfg.connections)
        else:
            names = set().union(*(self.connections_used(p) for p in pipelines))
        return {
            name: CONNECTION_KINDS[conn.type].from_config(name, conn.model_dump())
            for name, conn in cfg.connections.items()
            if name in names
        }


def _defines_environment(data: Any, project_file: Path, env: str) -> bool:
    """Whether the project has environments to select ``env`` from: ``environments:``
    (an unknown name is then an error) or an ``env.<env>.yaml`` beside its file."""
    envs = data.get("environments") if isinstance(data, dict) else None
    return bool(envs) or (project_file.parent / f"env.{env}.yaml").is_file()


def load_project(
    path: str | os.PathLike[str],
    environ: dict[str, str] | None = None,
    env: str | None = None,
) -> LoadedProject:
    """Read, check and return the project at ``path``; raise OdibiConfigError otherwise.

    ``env`` selects an entry of ``environments:`` (default: the ODIBI_ENV variable).
    """
    from_variable = env is None  # ODIBI_ENV also names the deployment (production checks)
    if env is None:
        env = (os.environ if environ is None else environ).get(ENV_SELECTOR) or None
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
    imported: list[Path] = []
    data = merge_imports(data, smap, project_file, problems, imported)
    # a pipelines/*.yaml the project file imports is read once
    done = {f.resolve() for f in imported}
    pipeline_files = [f for f in pipeline_files if f.resolve() not in done]
    data = _merge_pipeline_files(data, smap, pipeline_files, problems)
    if from_variable and env and not _defines_environment(data, project_file, env):
        env = None  # ODIBI_ENV naming the deployment only: nothing to select here
    data = apply_environment(data, smap, env, project_file, problems, imported)
    all_files = [project_file, *imported, *pipeline_files]
    order = [display_name(f) for f in all_files]
    data = resolve_placeholders(data, smap, problems)
    notes: list[Note] = system_notes(data, smap, problems)
    data = take_accepted(data, smap, notes)
    compat_problems: list[Problem] = []
    data, not_run = apply_odibi_spellings(
        data, smap, compat_problems, notes, _project_keys(), set(CONNECTION_KINDS), _inner_keys()
    )
    problems.extend(compat_problems)
    data = default_local_base_path(data)

    env_refs: dict[KeyPath, str] = {}
    data = interpolate_env(data, smap, environ, problems=problems, refs=env_refs)

    _import_all_transforms(project_file, data, smap, problems)

    try:
        config = ProjectConfig.model_validate(data)
    except ValidationError as exc:
        # the checks across keys need a valid model: report what we have so far
        problems.extend(
            p
            for p in problems_from_validation(exc, data, smap)
            if not covered(p, not_run, compat_problems)
        )
        raise OdibiConfigError(_sorted(problems, order)) from None

    _apply_defaults(config, smap, problems)
    _resolve_paths(config, smap)
    _locate_nodes(config, smap)
    problems.extend(check_semantics(config, smap, not_run=set(not_run)))
    if problems:
        raise OdibiConfigError(_sorted(problems, order))
    notes.extend(_partial_notes(config, smap))
    rank = {f: i for i, f in enumerate(order)}
    notes.sort(key=lambda n: (rank.get(n.file, len(rank)), n.file, n.line or 0))
    return LoadedProject(
        config=config,
        source=project_file,
        root_dir=project_file.parent,
        files=all_files,
        smap=smap,
        env_refs=env_refs,
        notes=notes,
        env=env,
        origin=p,
    )


def _project_keys() -> set[str]:
    """The top-level keys of a project, as written."""
    return {f.alias or name for name, f in ProjectConfig.model_fields.items()}


def _inner_keys() -> set[str]:
    """The keys of pipelines and nodes, as written."""
    return {
        f.alias or name
        for model in (PipelineConfig, NodeConfig)
        for name, f in model.model_fields.items()
    }


def _partial_notes(config: ProjectConfig, smap: SourceMap) -> list[Note]:
    """Notes for values the models keep but this orchestrator applies only in part."""
    out: list[Note] = []
    for pi, pipe in enumerate(config.pipelines):
        for ni, node in enumerate(pipe.nodes):
            if node.simulation is not None:
                out.extend(
                    note_at(smap, ("pipelines", pi, "nodes", ni, "read", *path), why)
                    for path, why in ignored_keys(node.simulation)
                )
            for step, (sub, _) in zip(node.steps(), node.step_paths(), strict=True):
                builtin = get_builtin(step.function) if step.function else None
                if builtin is None or get_function(builtin.name) is not None:
                    continue
                for key in ignored_params(builtin, step.params):
                    close = difflib.get_close_matches(key, list(builtin.params.model_fields), 1)
                    out.append(
                        note_at(
                            smap,
                            ("pipelines", pi, "nodes", ni, *sub, "params", key),
                            f"Odibi's {builtin.name} has no param '{key}' and ignores it"
                            + (f" (did you mean '{close[0]}'?)" if close else "")
                            + f"; it takes: {', '.join(builtin.params.model_fields)}",
                        )
                    )
            if node.on_error != "fail_later":
                out.append(
                    note_at(
                        smap,
                        ("pipelines", pi, "nodes", ni, "on_error"),
                        f"'{node.on_error}' is not applied: a failed node fails its asset, "
                        "its dependents are skipped and other branches run (fail_later)",
                    )
                )
    return out


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
        allowed = {"pipelines"} if listed else set(PipelineConfig.model_fields) | PIPELINE_KEYS
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
                        f"expected a list, got {type_name(items)}; write each pipeline as "
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
    """Make each local path absolute, against the directory of the YAML that declares it."""
    for name, conn in config.connections.items():
        for key in CONNECTION_KINDS[conn.type].path_fields:
            value = getattr(conn, key)
            if value:
                path = Path(os.path.expanduser(value))
                if not path.is_absolute():
                    path = _declaring_dir(smap, ("connections", name, key)) / path
                setattr(conn, key, os.path.normpath(str(path)))
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
