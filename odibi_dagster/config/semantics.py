"""Checks across keys, once every key is valid on its own: names, references between
nodes and connections, dependency cycles, and the functions steps call."""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Collection

from odibi_dagster.builtins import check_builtin_params, get_builtin
from odibi_dagster.config.api_checks import check_api_use
from odibi_dagster.config.models import (
    NAME_PATTERN,
    NodeConfig,
    PipelineConfig,
    ProjectConfig,
    ValidationConfig,
)
from odibi_dagster.config.partition_checks import check_partitions
from odibi_dagster.config.quality import ROW_TESTS
from odibi_dagster.config.simulation import read_problems
from odibi_dagster.config.yaml_source import KeyPath, SourceMap
from odibi_dagster.engines.keyed import KEY_OPTION, MERGE_ONLY
from odibi_dagster.errors import Problem
from odibi_dagster.patterns.checks import check_params as check_pattern_params
from odibi_dagster.patterns.checks import check_pattern
from odibi_dagster.resources.new_files import same_path
from odibi_dagster.transforms import check_params, get_function, unknown_function
from odibi_dagster.vocabulary import KEYED_MODES


def check_semantics(
    config: ProjectConfig, smap: SourceMap, not_run: Collection[str] = ()
) -> list[Problem]:
    """Checks across keys: names, references, cycles, functions. ``not_run``: connections
    accepted but not run here, whose uses the loader reports already."""
    problems: list[Problem] = []
    conns = list(config.connections)

    def unknown_conn(path: KeyPath, name: str) -> None:
        if name not in config.connections and name not in not_run:
            problems.append(
                smap.problem(
                    path,
                    f"unknown connection '{name}'{suggest(name, conns)}; defined connections: "
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
        problems.extend(_check_pipeline(pipe, ppath, smap, unknown_conn, conns))
        problems.extend(check_partitions(pipe, ppath, smap))
    problems.extend(_check_automation(config, smap, unknown_conn))
    problems.extend(_check_alerts(config, smap))
    problems.extend(check_api_use(config, smap))
    return problems


def sensor_name(pipe: PipelineConfig, index: int) -> str:
    """The Dagster name of the pipeline's ``index``-th sensor."""
    return pipe.sensors[index].name or f"{pipe.pipeline}_new_files_sensor"


def watching_nodes(pipe: PipelineConfig, connection: str, path: str) -> list[NodeConfig]:
    """The nodes of ``pipe`` that read what a new-files sensor on ``connection:path``
    watches: they read just the files a sensor run was started for."""
    return [
        n
        for n in pipe.nodes
        if n.read is not None and n.read.connection == connection and same_path(n.read.path, path)
    ]


def _check_automation(
    config: ProjectConfig, smap: SourceMap, unknown_conn: Callable[[KeyPath, str], None]
) -> list[Problem]:
    """Sensors, schedules and run_after: what they name exists, names are unique, and
    pipelines do not wait on each other in a circle."""
    problems: list[Problem] = []
    names = [p.pipeline for p in config.pipelines]
    taken: dict[str, KeyPath] = {}

    def claim(name: str, path: KeyPath) -> None:
        if name in taken:
            file, line = smap.locate(taken[name])
            problems.append(
                smap.problem(
                    path,
                    f"the name '{name}' is already used by another sensor or schedule "
                    f"({file}:{line}); give this one its own `name:`",
                )
            )
        else:
            taken[name] = path

    for pi, pipe in enumerate(config.pipelines):
        ppath: KeyPath = ("pipelines", pi)
        if pipe.schedule is not None:
            claim(f"{pipe.pipeline}_schedule", (*ppath, "schedule"))
        for si, sensor in enumerate(pipe.sensors):
            spath: KeyPath = (*ppath, "sensors", si)
            claim(sensor_name(pipe, si), (*spath, "name") if sensor.name else spath)
            watch = sensor.new_files
            if watch.connection not in config.connections:
                unknown_conn((*spath, "new_files", "connection"), watch.connection)
                continue
            readers = watching_nodes(pipe, watch.connection, watch.path)
            if not readers:
                reads = sorted({f"{n.read.connection}:{n.read.path}" for n in pipe.nodes if n.read})
                problems.append(
                    smap.problem(
                        (*spath, "new_files", "path"),
                        f"no node of pipeline '{pipe.pipeline}' reads "
                        f"{watch.connection}:{watch.path}, so no run would process the new "
                        "files; watch the connection and path a node's `read:` names"
                        + (f" (this pipeline reads: {', '.join(reads)})" if reads else ""),
                    )
                )
            for n in readers:
                if n.read is not None and n.read.format == "delta":
                    problems.append(
                        smap.problem(
                            (*spath, "new_files", "path"),
                            f"node '{n.name}' reads {watch.path} as a Delta table, which is "
                            "not a folder of new files; watch a folder of csv, parquet or "
                            "json files, or run this pipeline on a schedule or `run_after:`",
                        )
                    )
                if n.read is not None and n.read.incremental is not None:
                    ni = pipe.nodes.index(n)
                    problems.append(
                        smap.problem(
                            (*ppath, "nodes", ni, "read", "incremental"),
                            f"node '{n.name}' is read by the runs of a new-files sensor, which "
                            "read just the files that arrived; `incremental:` cannot apply "
                            "to them. Remove `incremental:`, or the sensor",
                        )
                    )
        if pipe.run_after:
            claim(f"{pipe.pipeline}_run_after_sensor", (*ppath, "run_after"))
        for ri, up in enumerate(pipe.run_after):
            rpath: KeyPath = (*ppath, "run_after", ri)
            if up == pipe.pipeline:
                problems.append(smap.problem(rpath, f"pipeline '{up}' cannot run after itself"))
            elif up not in names:
                problems.append(
                    smap.problem(
                        rpath,
                        f"unknown pipeline '{up}' in run_after{suggest(up, names)}; "
                        f"pipelines: {', '.join(names)}",
                    )
                )
    graph = {
        p.pipeline: [u for u in p.run_after if u in names and u != p.pipeline]
        for p in config.pipelines
    }
    cycle = find_cycle(graph)
    if cycle:
        index = names.index(cycle[0])
        problems.append(
            smap.problem(
                ("pipelines", index, "run_after"),
                f"pipelines run after each other in a circle: {' -> '.join(cycle)}; remove "
                "one of these run_after entries",
            )
        )
    return problems


def _check_alerts(config: ProjectConfig, smap: SourceMap) -> list[Problem]:
    """Alerts name pipelines that exist, and settings of their own type."""
    problems: list[Problem] = []
    names = [p.pipeline for p in config.pipelines]
    for ai, alert in enumerate(config.alerts):
        apath: KeyPath = ("alerts", ai)
        for pi, name in enumerate(alert.pipelines or []):
            if name not in names:
                problems.append(
                    smap.problem(
                        (*apath, "pipelines", pi),
                        f"unknown pipeline '{name}'{suggest(name, names)}; pipelines: "
                        f"{', '.join(names)}",
                    )
                )
        for key, kind in (("channel", "slack"), ("mention", "teams")):
            if getattr(alert.metadata, key) is not None and alert.type != kind:
                problems.append(
                    smap.problem(
                        (*apath, "metadata", key),
                        f"{key} applies to {kind} alerts only (this one is type {alert.type})",
                    )
                )
    return problems


def suggest(name: str, options: list[str]) -> str:
    """`` (did you mean 'x'?)`` for a close match, else empty."""
    close = difflib.get_close_matches(name, options, n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _check_pipeline(
    pipe: PipelineConfig,
    ppath: KeyPath,
    smap: SourceMap,
    unknown_conn: Callable[[KeyPath, str], None],
    connections: list[str] | None = None,
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
                        f"unknown node '{dep}' in depends_on{suggest(dep, node_names)}; nodes "
                        f"of pipeline '{pipe.pipeline}': {', '.join(node_names)}",
                    )
                )
        if node.read is not None:
            unknown_conn((*npath, "read", "connection"), node.read.connection)
        if node.simulation is not None:
            problems.extend(
                smap.problem((*npath, "read", *path), f"node '{node.name}': {message}")
                for path, message in read_problems(node.simulation)
            )
        if node.validation is not None:
            problems.extend(_check_tests(node, node.validation, (*npath, "validation"), smap))
            quarantine = node.validation.quarantine
            if quarantine is not None:
                unknown_conn(
                    (*npath, "validation", "quarantine", "connection"), quarantine.connection
                )
        if node.write is not None:
            unknown_conn((*npath, "write", "connection"), node.write.connection)
            problems.extend(_check_keyed_write(node, npath, smap))
        write_only = (
            node.write is not None
            and node.read is None
            and node.simulation is None
            and node.transform is None
            and node.transformer is None
            and node.pattern is None
        )
        if write_only and len(node.depends_on) != 1:
            problems.append(
                smap.problem(
                    (*npath, "write"),
                    "a node with only `write:` writes its one upstream node: give it "
                    f"exactly one depends_on (it has {len(node.depends_on)}), or add a "
                    "`transform:` that combines them",
                )
            )
        problems.extend(_check_functions(node, npath, smap))
        if node.pattern is not None:
            problems.extend(check_pattern(node, npath, smap, connections or []))
        if node.pattern_transformer is not None:
            problems.extend(
                check_pattern_params(
                    node,
                    node.pattern_transformer,
                    node.params,
                    (*npath, "transformer"),
                    (*npath, "params"),
                    smap,
                    connections or [],
                    what=f"transformer {node.pattern_transformer}",
                )
            )
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


def _check_keyed_write(node: NodeConfig, npath: KeyPath, smap: SourceMap) -> list[Problem]:
    """The keyed write modes (upsert, append_once, merge) name their keys; merge writes
    Delta; the merge options go with mode merge."""
    write = node.write
    assert write is not None
    wpath: KeyPath = (*npath, "write")
    problems: list[Problem] = []
    if write.mode in KEYED_MODES:
        keys = write.options.get(KEY_OPTION)
        if not keys or (isinstance(keys, list) and not all(isinstance(k, str) for k in keys)):
            given = KEY_OPTION in write.options
            problems.append(
                smap.problem(
                    (*wpath, "options", KEY_OPTION) if given else (*wpath, "mode"),
                    f"write mode {write.mode} needs options.keys: the column names that "
                    "identify a row, e.g. `options: {keys: [id]}`",
                )
            )
    if write.mode == "merge" and write.format != "delta":
        problems.append(
            smap.problem(
                (*wpath, "format"),
                f"write mode merge needs format delta, not {write.format}; write delta, or "
                "use mode upsert to update and insert rows of a file by keys",
            )
        )
    if write.mode != "merge":
        for option in MERGE_ONLY:
            if option in write.options:
                problems.append(
                    smap.problem(
                        (*wpath, "options", option),
                        f"write option {option} applies to mode merge only (this write's "
                        f"mode is {write.mode}); remove it or use mode merge",
                    )
                )
    return problems


def _check_functions(node: NodeConfig, npath: KeyPath, smap: SourceMap) -> list[Problem]:
    """The functions of `transformer:` and the steps exist (a @transform function or a
    built-in) and take the params given."""
    problems: list[Problem] = []
    if node.params and node.transformer is None and getattr(node, "pattern", None) is None:
        problems.append(
            smap.problem(
                (*npath, "params"),
                f"node '{node.name}' has `params:` but no `transformer:` they are for; add "
                "`transformer: <name>` or remove `params:`",
            )
        )
    no_data = node.read is None and not node.depends_on
    for step, (sub, kind) in zip(node.steps(), node.step_paths(), strict=True):
        if step.function is None:
            continue
        fpath: KeyPath = (*npath, *sub, kind)
        ppath: KeyPath = (*npath, *sub, "params")
        func = get_function(step.function)
        if func is not None:
            why = check_params(func, step.params)
        else:
            builtin = get_builtin(step.function)
            if builtin is None:
                problems.append(
                    smap.problem(fpath, f"node '{node.name}': {unknown_function(step.function)}")
                )
                continue
            why = check_builtin_params(builtin, step.params)
            if sub == node.step_paths()[0][0] and no_data:
                problems.append(
                    smap.problem(
                        fpath,
                        f"node '{node.name}': built-in '{step.function}' works on the node's "
                        "data, and this node has none: give it a `read:` or a depends_on",
                    )
                )
        if why:
            problems.append(
                smap.problem(ppath if step.params else fpath, f"node '{node.name}': {why}")
            )
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


def _check_tests(
    node: NodeConfig, validation: ValidationConfig, vpath: KeyPath, smap: SourceMap
) -> list[Problem]:
    """Odibi v3 tests: a quarantine test needs somewhere to put its rows; a gate threshold
    names a test that is there."""
    out = []
    if validation.quarantine is None:
        for i, t in enumerate(validation.tests):
            if t.on_fail == "quarantine" and t.type in ROW_TESTS:
                out.append(
                    smap.problem(
                        (*vpath, "tests", i, "on_fail"),
                        f"node '{node.name}': {t.type} test has on_fail: quarantine but `quarantine:` is not set: "
                        "add `quarantine: {connection: ..., path: ...}` under validation to "
                        "say where failing rows go, or use on_fail: warn",
                    )
                )
    if validation.gate is not None:
        known = sorted(
            {t.name or t.type for t in validation.tests} | {t.type for t in validation.tests}
        )
        for i, th in enumerate(validation.gate.thresholds):
            if th.test not in known:
                out.append(
                    smap.problem(
                        (*vpath, "gate", "thresholds", i, "test"),
                        f"node '{node.name}': gate threshold names unknown test "
                        f"'{th.test}'{suggest(th.test, known)}; tests: "
                        + (", ".join(known) or "(none)"),
                    )
                )
    return out
