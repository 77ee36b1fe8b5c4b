"""Compile a loaded Odibi project into ``dagster.Definitions``.

Pure: no I/O, no network, no Spark. The mapping (see docs/configuration.md):

- connection -> resource keyed by its name
- pipeline   -> asset group + job of the same name (+ a schedule if it has one)
- node       -> asset keyed [pipeline, node]; a read-only node is an external asset
- validation -> asset checks on the node's asset
- a read of a path another node writes -> a lineage edge (also across pipelines)
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from typing import Any

import dagster as dg

from odibi_dagster import checks
from odibi_dagster.config.loader import LoadedProject, display_name, load_project
from odibi_dagster.config.models import (
    AzureAdlsConnection,
    LocalConnection,
    NodeConfig,
    PipelineConfig,
    ProjectConfig,
)
from odibi_dagster.config.yaml_source import as_written
from odibi_dagster.errors import (
    OdibiConfigError,
    OdibiRunError,
    Problem,
    install_config_excepthook,
)
from odibi_dagster.io_managers.base import NODE_KEY, READ_KEY, WRITE_KEY
from odibi_dagster.io_managers.pandas import PandasIOManager
from odibi_dagster.io_managers.spark import SparkIOManager
from odibi_dagster.resources.azure import AzureADLS
from odibi_dagster.resources.base import Location
from odibi_dagster.resources.local import LocalStorage
from odibi_dagster.resources.spark import SparkSessionResource
from odibi_dagster.runtime import NodeRunner, StorySettings, get_engine
from odibi_dagster.story import StoryTarget

PANDAS_IO_MANAGER_KEY = "odibi_pandas_io_manager"
SPARK_IO_MANAGER_KEY = "odibi_spark_io_manager"
SPARK_RESOURCE_KEY = "odibi_spark"  # the same key as engines.spark (not imported: no pyspark)
IO_MANAGER_KEYS = {"pandas": PANDAS_IO_MANAGER_KEY, "spark": SPARK_IO_MANAGER_KEY}
Connection = LocalStorage | AzureADLS
DEFAULT_EXECUTOR = "in_process"
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def load_definitions(path: str | os.PathLike[str]) -> dg.Definitions:
    """Load the Odibi project at ``path`` (a YAML file or a project directory) as Definitions.

    Example ``definitions.py``::

        import odibi_dagster

        defs = odibi_dagster.load_definitions("pipelines/project.yaml")

    Then ``dagster job execute -f definitions.py -j <pipeline>`` runs one pipeline.
    """
    try:
        project = load_project(path)
        defs = build_definitions(project)
        check_definitions(project, defs)
        return defs
    except OdibiConfigError:
        install_config_excepthook()
        raise


def check_definitions(project: LoadedProject, defs: dg.Definitions) -> None:
    """Let Dagster check the definitions now (it would at the first use anyway, and it
    caches the result), so anything it rejects is reported like a config mistake."""
    try:
        defs.resolve_asset_graph()
        defs.resolve_all_job_defs()
    except dg.DagsterInvalidDefinitionError as exc:
        raise OdibiConfigError(
            [
                Problem(
                    display_name(project.source),
                    None,
                    f"Dagster rejected the compiled definitions: {exc}. Please report this "
                    "with the YAML that caused it",
                )
            ]
        ) from None


def build_definitions(project: LoadedProject) -> dg.Definitions:
    """The Definitions of an already loaded project (no I/O)."""
    cfg = project.config
    _check_runnable(project)
    connections = _connection_resources(cfg)
    lineage = lineage_edges(cfg, connections)
    story = _story_settings(project)
    used = _connections_used(cfg, story)

    assets: list[Any] = []
    asset_checks: list[Any] = []
    jobs: list[Any] = []
    schedules: list[dg.ScheduleDefinition] = []
    for pipe in cfg.pipelines:
        for node in pipe.nodes:
            asset, node_checks = _node_asset(
                project, pipe, node, connections, lineage, story, used[pipe.pipeline]
            )
            assets.append(asset)
            asset_checks.extend(node_checks)
        job = _pipeline_job(cfg, pipe, [c for c in asset_checks if _targets(c, pipe.pipeline)])
        jobs.append(job)
        if pipe.schedule is not None:
            schedules.append(
                dg.ScheduleDefinition(
                    name=f"{pipe.pipeline}_schedule",
                    cron_schedule=pipe.schedule.cron,
                    execution_timezone=pipe.schedule.timezone,
                    job_name=pipe.pipeline,
                    description=f"Runs pipeline {pipe.pipeline} on '{pipe.schedule.cron}'.",
                )
            )

    # The IO manager finds each connection among the resources of the step it serves:
    # every asset requires the connections its pipeline and its inputs use, so a run
    # sets up (and checks) them all before any node writes.
    resources: dict[str, Any] = dict(connections)
    # Local connections are also given to the IO manager itself, so a user's own asset
    # can load an Odibi asset on local disk without requiring the connection.
    local = {n: c for n, c in connections.items() if isinstance(c, LocalStorage)}
    resources[PANDAS_IO_MANAGER_KEY] = PandasIOManager(connections=local)
    if any(_engine(cfg, p) == "spark" for p in cfg.pipelines):
        # the session starts at the first Spark node, not when definitions load
        resources[SPARK_RESOURCE_KEY] = SparkSessionResource()
        resources[SPARK_IO_MANAGER_KEY] = SparkIOManager(connections=local)
    return dg.Definitions(
        assets=assets,
        asset_checks=asset_checks,
        jobs=jobs,
        schedules=schedules,
        resources=resources,
    )


# --------------------------------------------------------------------------- checks


def runnable_problems(project: LoadedProject) -> list[Problem]:
    """What the schema accepts but this version cannot run, located like any mistake
    (nothing at present: kept for ``odibi-dagster validate``)."""
    return []


def _check_runnable(project: LoadedProject) -> None:
    problems = runnable_problems(project)
    if problems:
        raise OdibiConfigError(problems)


def _engine(cfg: ProjectConfig, pipe: PipelineConfig) -> str:
    return pipe.engine or cfg.engine


def pipeline_order(cfg: ProjectConfig) -> list[str]:
    """Pipeline names, upstream first: a pipeline that reads what another writes runs after it.

    Ties keep the order of the YAML. Pipelines that feed each other both ways keep YAML order.
    """
    after: dict[str, set[str]] = {p.pipeline: set() for p in cfg.pipelines}
    for key, parents in lineage_edges(cfg, _connection_resources(cfg)).items():
        after[key.path[0]].update(p.path[0] for p in parents if p.path[0] != key.path[0])
    order: list[str] = []
    pending = [p.pipeline for p in cfg.pipelines]
    while pending:
        ready = [p for p in pending if after[p] <= set(order)] or [pending[0]]
        order.append(ready[0])
        pending.remove(ready[0])
    return order


def _connection_resources(cfg: ProjectConfig) -> dict[str, Connection]:
    out: dict[str, Connection] = {}
    for name, conn in cfg.connections.items():
        if isinstance(conn, LocalConnection):
            out[name] = LocalStorage(base_path=conn.base_path, connection_name=name)
        elif isinstance(conn, AzureAdlsConnection):
            fields = conn.model_dump(exclude={"type", "account_key"}, exclude_none=True)
            if conn.account_key:
                # kept as an EnvVar: the UI and run config show the variable's name only
                fields["account_key"] = dg.EnvVar(conn.account_key.strip()[2:-1])
            out[name] = AzureADLS(connection_name=name, **fields)
    return out


def pipeline_connections(project: LoadedProject, pipelines: list[str]) -> dict[str, Connection]:
    """The connection resources that runs of ``pipelines`` set up (nodes' and story's)."""
    used = _connections_used(project.config, _story_settings(project))
    names: set[str] = set().union(*(used[p] for p in pipelines if p in used))
    return {n: c for n, c in _connection_resources(project.config).items() if n in names}


def _connections_used(cfg: ProjectConfig, story: StorySettings | None) -> dict[str, set[str]]:
    """The connections each pipeline's steps require: every one the pipeline reads or
    writes, and the story's. Each step of a run then sets up (and checks) them all before
    any node writes, under any executor. (Inputs only come from the same pipeline.)"""
    extra = {story.connection} if story is not None and story.connection else set()
    used: dict[str, set[str]] = {}
    for pipe in cfg.pipelines:
        names = used.setdefault(pipe.pipeline, set(extra))
        if _engine(cfg, pipe) == "spark":
            names.add(SPARK_RESOURCE_KEY)
        for node in pipe.nodes:
            names |= {x.connection for x in (node.read, node.write) if x is not None}
    return used


def _story_settings(project: LoadedProject) -> StorySettings | None:
    s = project.config.story
    if s is None or not s.active:
        return None
    return StorySettings(
        project=project.name,
        path=s.path or "",
        max_sample_rows=s.max_sample_rows,
        connection=s.connection if not s.output_path else None,
        output_dir=s.output_path,
    )


def story_location(project: LoadedProject, pipeline: str, run_id: str) -> Location | None:
    """Where the story HTML of one run of ``pipeline`` is written (None without a story)."""
    s = _story_settings(project)
    if s is None:
        return None
    if s.connection:
        conn = _connection_resources(project.config).get(s.connection)
        if conn is None:
            return None
    else:
        conn = LocalStorage(base_path=s.output_dir or ".")
    return StoryTarget(locate=conn.location, path=s.path, project=s.project).html(pipeline, run_id)


# --------------------------------------------------------------------------- lineage


def _uri(connections: Mapping[str, Connection], connection: str, path: str) -> str:
    return connections[connection].uri(path).rstrip("/")


def _writers_by_uri(
    cfg: ProjectConfig, connections: Mapping[str, Connection]
) -> dict[str, list[dg.AssetKey]]:
    writers: dict[str, list[dg.AssetKey]] = {}
    for pipe in cfg.pipelines:
        for node in pipe.nodes:
            if node.write is not None:
                uri = _uri(connections, node.write.connection, node.write.path)
                writers.setdefault(uri, []).append(dg.AssetKey([pipe.pipeline, node.name]))
    return writers


def lineage_edges(
    cfg: ProjectConfig, connections: Mapping[str, Connection]
) -> dict[dg.AssetKey, list[dg.AssetKey]]:
    """For each node that reads a path other nodes write: those writers (its lineage parents).

    An edge that would close a cycle (two nodes that each read what the other writes, such
    as two appenders of one table) is left out: Dagster needs an acyclic graph, and the
    first edge in YAML order already shows the flow.
    """
    writers = _writers_by_uri(cfg, connections)
    parents: dict[dg.AssetKey, set[dg.AssetKey]] = {}
    for pipe in cfg.pipelines:
        for node in pipe.nodes:
            key = dg.AssetKey([pipe.pipeline, node.name])
            parents[key] = {dg.AssetKey([pipe.pipeline, d]) for d in node.depends_on}
    edges: dict[dg.AssetKey, list[dg.AssetKey]] = {}
    for pipe in cfg.pipelines:
        for node in pipe.nodes:
            if node.read is None:
                continue
            key = dg.AssetKey([pipe.pipeline, node.name])
            for writer in writers.get(_uri(connections, node.read.connection, node.read.path), []):
                if writer != key and key not in _ancestors(writer, parents):
                    parents[key].add(writer)
                    edges.setdefault(key, []).append(writer)
    return edges


def _ancestors(
    key: dg.AssetKey, parents: Mapping[dg.AssetKey, set[dg.AssetKey]]
) -> set[dg.AssetKey]:
    seen: set[dg.AssetKey] = set()
    stack = [key]
    while stack:
        for parent in parents.get(stack.pop(), ()):
            if parent not in seen:
                seen.add(parent)
                stack.append(parent)
    return seen


# --------------------------------------------------------------------------- assets


def _is_external(node: NodeConfig, pipeline: str, lineage: list[dg.AssetKey]) -> bool:
    """A source this project only reads. A read of what a node of the same pipeline writes
    is not: it must run after that node within the pipeline's job."""
    return (
        node.read is not None
        and node.transform is None
        and node.write is None
        and not node.depends_on
        and all(k.path[0] != pipeline for k in lineage)
    )


def _description(node: NodeConfig, pipe: PipelineConfig, uri_of: Any) -> str:
    lines = [node.description] if node.description else []
    if node.read is not None:
        lines.append(f"Reads {node.read.format} `{uri_of(node.read)}`.")
    if node.transform is not None:
        kinds = [
            "SQL" if s.sql is not None else f"function `{s.function}`" for s in node.transform.steps
        ]
        lines.append(f"Transforms with {len(kinds)} step(s): {', '.join(kinds)}.")
    if node.write is not None:
        lines.append(f"Writes {node.write.format} `{uri_of(node.write)}` (mode {node.write.mode}).")
    lines.append(f"Defined at {node._file}:{node._line} (pipeline {pipe.pipeline}).")
    return "\n\n".join(lines)


def _node_metadata(project: LoadedProject, node: NodeConfig, external: bool) -> dict[str, Any]:
    """What the IO manager needs, with values from ${VAR} shown (and stored) as written:
    the IO manager fills them in at run time, so they never reach the UI."""
    path = node._key_path
    meta: dict[str, Any] = {NODE_KEY: node.where}
    if node.write is not None:
        dumped = node.write.model_dump(mode="json")
        meta[WRITE_KEY] = as_written(dumped, (*path, "write"), project.env_refs)
    if external:
        assert node.read is not None
        dumped = node.read.model_dump(mode="json")
        meta[READ_KEY] = as_written(dumped, (*path, "read"), project.env_refs)
    return meta


def _step_labels(project: LoadedProject, node: NodeConfig) -> list[str]:
    """One line per step for stories; parameters from ${VAR} appear as written."""
    if node.transform is None:
        return []
    path = node._key_path
    out = []
    for si, step in enumerate(node.transform.steps):
        if step.sql is not None:
            out.append(" ".join(step.sql.split()))
            continue
        params = as_written(
            step.params, (*path, "transform", "steps", si, "params"), project.env_refs
        )
        out.append(f"{step.function}({', '.join(f'{k}={v!r}' for k, v in params.items())})")
    return out


def _tag_value(text: str) -> str:
    """Dagster tag values allow letters, digits, '-', '_' and '.', up to 63 characters."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", text)[:63]


def _retry_policy(cfg: ProjectConfig) -> dg.RetryPolicy | None:
    r = cfg.retry
    if r is None or not r.enabled or r.max_attempts <= 1:
        return None
    backoff = {"exponential": dg.Backoff.EXPONENTIAL, "linear": dg.Backoff.LINEAR}.get(r.backoff)
    return dg.RetryPolicy(max_retries=r.max_attempts - 1, delay=r.backoff_seconds, backoff=backoff)


def _node_asset(
    project: LoadedProject,
    pipe: PipelineConfig,
    node: NodeConfig,
    connections: Mapping[str, Connection],
    lineage_of: Mapping[dg.AssetKey, list[dg.AssetKey]],
    story: StorySettings | None,
    required: set[str],
) -> tuple[Any, list[Any]]:
    cfg = project.config
    key = dg.AssetKey([pipe.pipeline, node.name])

    def uri_of(io: Any) -> str:
        return _uri(connections, io.connection, io.path)

    lineage = lineage_of.get(key, [])
    external = _is_external(node, pipe.pipeline, lineage)
    engine = _engine(cfg, pipe)
    io_manager_key = IO_MANAGER_KEYS[engine]
    io = node.write or node.read
    kinds: set[str] = {engine, io.format} if io is not None else {engine, "python"}
    tags = {"odibi/layer": _tag_value(pipe.layer)} if pipe.layer else None
    owners = [cfg.owner] if cfg.owner and _EMAIL.match(cfg.owner) else None
    description = _description(node, pipe, uri_of)
    metadata = _node_metadata(project, node, external)
    check_list = checks.check_names(node.validation) if node.validation else []

    if external:
        spec = dg.AssetSpec(
            key=key,
            deps=lineage,
            description=description,
            group_name=pipe.pipeline,
            metadata={**metadata, "dagster/uri": uri_of(node.read)},
            kinds=kinds,
            tags=tags,
            owners=owners,
        ).with_io_manager_key(io_manager_key)
        node_checks = [_external_checks(key, node, check_list, engine)] if check_list else []
        return spec, node_checks

    check_specs = [
        dg.AssetCheckSpec(name, asset=key, description=desc, blocking=True)
        for name, desc in check_list
    ]
    runner = NodeRunner(
        node=node,
        pipeline=pipe.pipeline,
        key=key,
        engine=engine,
        story=story,
        write_uri=uri_of(node.write) if node.write is not None else None,
        step_labels=tuple(_step_labels(project, node)),
    )

    def compute(context, **inputs: Any) -> Iterator[Any]:
        yield from runner.run(context, inputs)

    asset = dg.asset(
        key=key,
        ins={dep: dg.AssetIn(key=dg.AssetKey([pipe.pipeline, dep])) for dep in node.depends_on},
        deps=lineage,
        description=description,
        group_name=pipe.pipeline,
        metadata=metadata,
        io_manager_key=io_manager_key,
        required_resource_keys=set(required),
        check_specs=check_specs or None,
        retry_policy=_retry_policy(cfg),
        kinds=kinds,
        tags=tags,
        owners=owners,
    )(compute)
    return asset, []


def _external_checks(
    key: dg.AssetKey, node: NodeConfig, check_list: list[tuple[str, str]], engine: str
) -> dg.AssetChecksDefinition:
    """Checks on a source the project only reads: they load it through the IO manager."""
    specs = [dg.AssetCheckSpec(name, asset=key, description=desc) for name, desc in check_list]
    validation = node.validation
    assert validation is not None and node.read is not None

    @dg.multi_asset_check(
        specs=specs,
        # node names hold no "__", so this op name cannot meet an asset's "<pipeline>__<node>"
        name=f"{'__'.join(key.path)}__checks",
        ins={"data": dg.AssetIn(key=key)},
        required_resource_keys={node.read.connection}
        | ({SPARK_RESOURCE_KEY} if engine == "spark" else set()),
    )
    def _checks(context, data: Any) -> Iterator[dg.AssetCheckResult]:
        for outcome in checks.evaluate(get_engine(engine, context.resources), data, validation):
            yield dg.AssetCheckResult(
                check_name=outcome.name,
                passed=outcome.passed,
                asset_key=key,
                description=outcome.description,
                metadata=outcome.metadata,
            )

    return _checks


# --------------------------------------------------------------------------- jobs


def _targets(checks_def: dg.AssetChecksDefinition, pipeline: str) -> bool:
    return any(k.asset_key.path[0] == pipeline for k in checks_def.check_keys)


def _pipeline_job(
    cfg: ProjectConfig, pipe: PipelineConfig, source_checks: list[dg.AssetChecksDefinition]
) -> Any:
    """The pipeline's job: its assets, plus the checks on the sources it reads."""
    executor_name = pipe.executor or cfg.executor or DEFAULT_EXECUTOR
    executor = dg.in_process_executor if executor_name == "in_process" else dg.multiprocess_executor
    tags: dict[str, str] = {"odibi/executor": executor_name}
    if cfg.logging is not None:
        tags.update({f"odibi/{k}": str(v) for k, v in cfg.logging.metadata.items()})
    title = pipe.name or pipe.pipeline
    description = f"{title}: {pipe.description}" if pipe.description else title
    return dg.define_asset_job(
        name=pipe.pipeline,
        selection=dg.AssetSelection.groups(pipe.pipeline)
        | dg.AssetSelection.checks(*source_checks),
        executor_def=executor,
        description=description,
        tags=tags,
    )


__all__ = ["OdibiRunError", "build_definitions", "load_definitions"]
