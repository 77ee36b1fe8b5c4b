"""Compile a loaded Odibi project into ``dagster.Definitions``.

Pure: no I/O, no network, no Spark. The mapping (see docs/configuration.md):

- connection -> resource keyed by its name
- pipeline   -> asset group + job of the same name (+ its schedule and sensors: see
                automation.py)
- node       -> asset keyed [pipeline, node]; a read-only node is an external asset
- validation -> asset checks on the node's asset
- a read of a path another node writes -> a lineage edge (also across pipelines)
- alert       -> run-status sensors watching the jobs of its pipelines (alerts.py)

How a node looks as an asset (key, group, tags, ...) is the translator's to decide
(:class:`~odibi_dagster.translator.OdibiTranslator`); what makes it run (inputs, IO
manager, resources, checks, retries) is decided here.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import dagster as dg

from odibi_dagster import checks
from odibi_dagster.alerts import alert_sensors
from odibi_dagster.asset_functions import asset_function, source_checks_function
from odibi_dagster.automation import new_files_sensor, pipeline_schedule, run_after_sensor
from odibi_dagster.column_lineage import column_plan, static_lineage
from odibi_dagster.config.env import as_written
from odibi_dagster.config.loader import LoadedProject, display_name, load_project
from odibi_dagster.config.models import NodeConfig, PipelineConfig, ProjectConfig
from odibi_dagster.config.notes import log_notes
from odibi_dagster.engines.registry import ENGINES
from odibi_dagster.errors import (
    OdibiConfigError,
    Problem,
    first_line,
    install_config_excepthook,
)
from odibi_dagster.io_managers.base import (
    NODE_KEY,
    READ_KEY,
    STORY_KEY,
    WRITE_KEY,
    OdibiIOManager,
)
from odibi_dagster.io_managers.pandas import PandasIOManager
from odibi_dagster.io_managers.spark import SparkIOManager
from odibi_dagster.lineage import lineage_edges
from odibi_dagster.node_runner import NodeRunner
from odibi_dagster.partitions import dependency_mapping, effective, partitions_definition
from odibi_dagster.resources.connection import ConnectionResource
from odibi_dagster.resources.local import LocalStorage
from odibi_dagster.resources.new_files import NEW_FILES_KEY, NewFilesResource
from odibi_dagster.resources.spark import SPARK_RESOURCE_KEY, spark_resource_key, spark_sessions
from odibi_dagster.story import STORY_RESOURCE_KEY, RunStoryResource
from odibi_dagster.translator import OdibiNode, OdibiTranslator

DEFAULT_EXECUTOR = "in_process"
EXECUTORS: dict[str, dg.ExecutorDefinition] = {
    "in_process": dg.in_process_executor,
    "multiprocess": dg.multiprocess_executor,
}
# The IO manager class of each engine (any other engine gets the generic one).
IO_MANAGERS: dict[str, type[OdibiIOManager]] = {
    "pandas": PandasIOManager,
    "spark": SparkIOManager,
}

__all__ = ["build_definitions", "load_definitions"]


def load_definitions(
    path: str | os.PathLike[str],
    translator: OdibiTranslator | None = None,
    env: str | None = None,
) -> dg.Definitions:
    """Load the Odibi project at ``path`` (a YAML file or a project directory) as Definitions.

    Example ``definitions.py``::

        import odibi_dagster

        defs = odibi_dagster.load_definitions("pipelines/project.yaml")

    Then ``dagster job execute -f definitions.py -j <pipeline>`` runs one pipeline. Pass an
    :class:`~odibi_dagster.OdibiTranslator` subclass to change asset keys, groups, tags, ...
    ``env`` selects an entry of the project's ``environments:`` (default: $ODIBI_ENV). Keys
    accepted but not applied are logged once (logger ``odibi_dagster.config``).
    """
    try:
        with _no_cyclic_gc():
            project = load_project(path, env=env)
            log_notes(project.notes)
            defs = build_definitions(project, translator)
            check_definitions(project, defs)
        return defs
    except OdibiConfigError:
        install_config_excepthook()
        raise


@contextmanager
def _no_cyclic_gc() -> Iterator[None]:
    """Pause CPython's cyclic garbage collector while definitions are built.

    Loading a project creates a few hundred thousand objects that all live as long as the
    code location; the collector would scan them again and again while they are made
    (about a third of the load time of a 1,000-node project), and can free none of them.
    Reference counting still frees everything else at once."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


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


def build_definitions(
    project: LoadedProject, translator: OdibiTranslator | None = None
) -> dg.Definitions:
    """The Definitions of an already loaded project (no I/O)."""
    cfg = project.config
    translator = translator or OdibiTranslator()
    connections = project.connection_resources()
    story = story_resource(project)
    nodes = odibi_nodes(project, connections)
    keys = {id(n): translator.get_asset_key(n) for n in nodes}
    _check_translated_keys(translator, nodes, keys)
    # column lineage as far as the YAML tells it (docs/lineage.md)
    columns = static_lineage(nodes, keys, at_load=cfg.column_lineage == "load")

    required = {
        p.pipeline: _required_resources(project, p.pipeline, engine_of(cfg, p), story)
        for p in cfg.pipelines
    }
    assets: list[Any] = []
    source_checks: dict[str, list[dg.AssetChecksDefinition]] = {}
    for node in nodes:
        try:
            spec = translator.get_asset_spec(node)
            if spec.key != keys[id(node)]:
                raise _translator_problem(
                    translator,
                    node,
                    f"get_asset_spec gave it the key {spec.key.to_user_string()}, but "
                    f"get_asset_key gives {keys[id(node)].to_user_string()}. Change keys in "
                    "get_asset_key, so that dependencies follow",
                )
            if node.is_source:
                assets.append(_source_asset(project, node, spec, columns[id(node)].metadata))
                if node.config.validation is not None:
                    source_checks.setdefault(node.pipeline, []).append(
                        _source_checks(node, spec.key, required[node.pipeline])
                    )
            else:
                spec = spec.merge_attributes(metadata=columns[id(node)].metadata)
                assets.append(_node_asset(project, node, spec, keys, required[node.pipeline]))
        except dg.DagsterInvalidDefinitionError as exc:
            # what the YAML allows is valid for Dagster: a translator gave something it is not
            raise _translator_problem(
                translator, node, f"Dagster refused its asset: {first_line(exc)}"
            ) from None

    jobs = [
        _pipeline_job(
            cfg,
            pipe,
            [keys[id(n)] for n in nodes if n.pipeline == pipe.pipeline and not n.is_source],
            source_checks.get(pipe.pipeline, []),
            _job_partitions(pipe, nodes),
        )
        for pipe in cfg.pipelines
    ]
    schedules = [
        pipeline_schedule(pipe, _job_partitions(pipe, nodes))
        for pipe in cfg.pipelines
        if pipe.schedule is not None
    ]
    sensors = [
        new_files_sensor(pipe, i, connections[s.new_files.connection])
        for pipe in cfg.pipelines
        for i, s in enumerate(pipe.sensors)
    ] + [run_after_sensor(pipe) for pipe in cfg.pipelines if pipe.run_after]
    # alerts: one run-status sensor per alert and event (alerts.py)
    sensors += alert_sensors(project, jobs)

    # The IO manager finds each connection among the resources of the step it serves:
    # every asset requires the connections its pipeline uses, so a run sets up (and
    # checks) them all before any node writes.
    resources: dict[str, Any] = dict(connections)
    # Local connections are also given to the IO manager itself, so a user's own asset
    # can load an Odibi asset on local disk without requiring the connection.
    local = {n: c for n, c in connections.items() if isinstance(c, LocalStorage)}
    for name in sorted({engine_of(cfg, p) for p in cfg.pipelines} | {"pandas"}):
        entry = ENGINES[name]
        io_manager = IO_MANAGERS.get(name, OdibiIOManager)
        resources[entry.io_manager_key] = io_manager(engine=name, connections=local)
        for key, make in entry.resources.items():
            resources[key] = make()  # made here, started at the first node that uses it
    # spark: {remote: ...} of the project, and of each pipeline that has its own
    resources.update(
        spark_sessions(cfg, [p for p in cfg.pipelines if engine_of(cfg, p) == "spark"])
    )
    if story is not None:
        resources[STORY_RESOURCE_KEY] = story
    if any(pipe.sensors for pipe in cfg.pipelines):
        resources[NEW_FILES_KEY] = NewFilesResource()
    return dg.Definitions(
        assets=assets,
        asset_checks=[c for cs in source_checks.values() for c in cs],
        jobs=jobs,
        schedules=schedules,
        sensors=sensors,
        resources=resources,
        # what "Materialize" in the asset graph runs on (each pipeline's job has its own)
        executor=EXECUTORS[cfg.executor or DEFAULT_EXECUTOR],
    )


def _translator_problem(
    translator: OdibiTranslator, node: OdibiNode, message: str
) -> OdibiConfigError:
    """A mistake of the translator's about one node, located at the node."""
    c = node.config
    return OdibiConfigError(
        [Problem(c._file, c._line, f"{type(translator).__name__}: node '{c.name}': {message}")]
    )


def _check_translated_keys(
    translator: OdibiTranslator,
    nodes: list[OdibiNode],
    keys: Mapping[int, dg.AssetKey],
) -> None:
    """Two nodes may not get one asset key."""
    first: dict[dg.AssetKey, OdibiNode] = {}
    for node in nodes:
        other = first.setdefault(keys[id(node)], node)
        if other is not node:
            raise _translator_problem(
                translator,
                node,
                f"get_asset_key gives it {keys[id(node)].to_user_string()}, the key of node "
                f"'{other.pipeline}.{other.name}' too ({other.config.where}). Give each node a "
                "key of its own, e.g. with the pipeline's name in it",
            )


# --------------------------------------------------------------------------- the graph


def engine_of(cfg: ProjectConfig, pipe: PipelineConfig) -> str:
    return str(pipe.engine or cfg.engine)


def odibi_nodes(
    project: LoadedProject, connections: Mapping[str, ConnectionResource]
) -> list[OdibiNode]:
    """Every node of the project, in YAML order, linked to its upstream nodes."""
    cfg = project.config
    by_key: dict[tuple[str, str], OdibiNode] = {}
    for pipe in cfg.pipelines:
        for node in pipe.nodes:
            by_key[(pipe.pipeline, node.name)] = OdibiNode(
                project=project.name,
                owner=cfg.owner,
                pipeline_config=pipe,
                config=node,
                engine=engine_of(cfg, pipe),
                read_uri=_uri(connections, node.read),
                write_uri=_uri(connections, node.write),
            )
    for (pipeline, _), n in by_key.items():
        n.inputs = [by_key[(pipeline, d)] for d in n.config.depends_on]
    for key, writers in lineage_edges(cfg, connections).items():
        by_key[(key.path[0], key.path[1])].reads_from = [
            by_key[(w.path[0], w.path[1])] for w in writers
        ]
    return list(by_key.values())


def _uri(connections: Mapping[str, ConnectionResource], io: Any) -> str | None:
    return connections[io.connection].uri(io.path).rstrip("/") if io is not None else None


def story_resource(project: LoadedProject) -> RunStoryResource | None:
    """The project's ``story:`` block as the resource that writes stories (None: off)."""
    s = project.config.story
    if s is None or not s.active:
        return None
    return RunStoryResource(
        project=project.name,
        path=s.path or "",
        connection=s.target_connection,
        output_dir=s.output_path,
        max_sample_rows=s.max_sample_rows,
        retention_days=s.retention_days,
    )


def _required_resources(
    project: LoadedProject, pipeline: str, engine: str, story: RunStoryResource | None
) -> set[str]:
    """What every step of the pipeline sets up before it runs: the pipeline's connections
    (so a broken one fails the run before any node writes, under any executor), the
    engine's resources, and the story's."""
    keys = project.connections_used(pipeline) | set(ENGINES[engine].resources)
    if engine == "spark" and any(
        p.spark is not None for p in project.config.pipelines if p.pipeline == pipeline
    ):
        keys = (keys - {SPARK_RESOURCE_KEY}) | {spark_resource_key(pipeline)}
    if story is not None:
        keys.add(STORY_RESOURCE_KEY)
    if any(p.sensors for p in project.config.pipelines if p.pipeline == pipeline):
        keys.add(NEW_FILES_KEY)  # the files a sensor started the run for
    return keys


# --------------------------------------------------------------------------- assets


def _odibi_metadata(project: LoadedProject, node: OdibiNode) -> dict[str, Any]:
    """What the IO manager needs, with values from ${VAR} shown (and stored) as written:
    the IO manager fills them in at run time, so they never reach the UI."""
    c = node.config
    path = c._key_path
    story = {"pipeline": node.pipeline, "node": c.name}
    if c.description:
        story["description"] = c.description
    meta: dict[str, Any] = {NODE_KEY: c.where, STORY_KEY: story}
    if c.write is not None:
        meta[WRITE_KEY] = as_written(
            c.write.model_dump(mode="json"), (*path, "write"), project.env_refs
        )
    if node.is_source:
        assert c.read is not None
        meta[READ_KEY] = as_written(
            c.read.model_dump(mode="json"), (*path, "read"), project.env_refs
        )
    return meta


def _step_labels(project: LoadedProject, node: OdibiNode) -> tuple[str, ...]:
    """One line per step for stories; parameters from ${VAR} appear as written."""
    c = node.config
    out = []
    for step, (spath, _) in zip(c.steps(), c.step_paths(), strict=True):
        if step.sql is not None:
            out.append(" ".join(step.sql.split()))
            continue
        params = as_written(step.params, (*c._key_path, *spath, "params"), project.env_refs)
        out.append(f"{step.function}({', '.join(f'{k}={v!r}' for k, v in params.items())})")
    return tuple(out)


def _retry_policy(cfg: ProjectConfig, node: NodeConfig | None = None) -> dg.RetryPolicy | None:
    """The node's ``retry:`` (Odibi v3), else the project's."""
    r = node.retry if node is not None and node.retry is not None else cfg.retry
    if r is None or not r.enabled or r.max_attempts <= 1:
        return None
    backoff = {"exponential": dg.Backoff.EXPONENTIAL, "linear": dg.Backoff.LINEAR}.get(r.backoff)
    return dg.RetryPolicy(max_retries=r.max_attempts - 1, delay=r.backoff_seconds, backoff=backoff)


def _source_asset(
    project: LoadedProject, node: OdibiNode, spec: dg.AssetSpec, columns: Mapping[str, Any]
) -> dg.AssetSpec:
    """A source the project only reads: loaded by its consumers through the IO manager."""
    spec = spec.merge_attributes(
        metadata={**_odibi_metadata(project, node), "dagster/uri": node.read_uri, **columns}
    ).with_io_manager_key(ENGINES[node.engine].io_manager_key)
    parts = _partitions_def(node)
    return spec if parts is None else spec.replace_attributes(partitions_def=parts)


def _partitions_def(node: OdibiNode) -> dg.PartitionsDefinition | None:
    """The node's partitions (its own ``partitions:``, else its pipeline's)."""
    return partitions_definition(effective(node.pipeline_config, node.config))


def _node_asset(
    project: LoadedProject,
    node: OdibiNode,
    spec: dg.AssetSpec,
    keys: Mapping[int, dg.AssetKey],
    required: set[str],
) -> dg.AssetsDefinition:
    c = node.config
    parts = _partitions_def(node)
    ins = {
        up.name: dg.AssetIn(
            key=keys[id(up)],
            partition_mapping=dependency_mapping(parts, _partitions_def(up)),
        )
        for up in node.inputs
    }
    input_keys = {a.key for a in ins.values()}
    by_key = {keys[id(up)]: up for up in node.upstream}
    check_specs = [
        dg.AssetCheckSpec(name, asset=spec.key, description=desc, blocking=True)
        for name, desc in (checks.check_names(c.validation) if c.validation else [])
    ]
    runner = NodeRunner(
        node=c,
        pipeline=node.pipeline,
        key=spec.key,
        engine=node.engine,
        step_labels=_step_labels(project, node),
        source_reads=tuple((up.name, up.config.read) for up in node.inputs if up.is_source),
        columns=column_plan(node, keys) if project.config.column_lineage != "off" else None,
    )

    return dg.asset(
        key=spec.key,
        ins=ins,
        deps=[
            _dep(d.asset_key, parts, by_key.get(d.asset_key))
            for d in spec.deps
            if d.asset_key not in input_keys
        ],
        partitions_def=parts,
        description=spec.description,
        group_name=spec.group_name,
        metadata={**spec.metadata, **_odibi_metadata(project, node)},
        io_manager_key=ENGINES[node.engine].io_manager_key,
        required_resource_keys=required,
        check_specs=check_specs or None,
        retry_policy=_retry_policy(project.config, c),
        kinds=spec.kinds,
        tags=spec.tags or None,
        owners=spec.owners or None,
        automation_condition=spec.automation_condition,
    )(asset_function(runner))


def _dep(
    key: dg.AssetKey, parts: dg.PartitionsDefinition | None, up: OdibiNode | None
) -> dg.AssetDep:
    """A lineage edge to the writer of what a node reads, partition to partition when
    both have like partitions (see partitions.dependency_mapping)."""
    mapping = dependency_mapping(parts, _partitions_def(up)) if up is not None else None
    return dg.AssetDep(key, partition_mapping=mapping)


def _source_checks(
    node: OdibiNode, key: dg.AssetKey, required: set[str]
) -> dg.AssetChecksDefinition:
    """Checks on a source the project only reads: they load it through the IO manager."""
    c = node.config
    assert c.validation is not None and c.read is not None
    specs = [
        dg.AssetCheckSpec(name, asset=key, description=desc)
        for name, desc in checks.check_names(c.validation)
    ]

    return dg.multi_asset_check(
        specs=specs,
        # node names hold no "__", so this op name cannot meet an asset's "<pipeline>__<node>"
        name=f"{node.pipeline}__{node.name}__checks",
        ins={"data": dg.AssetIn(key=key)},
        required_resource_keys=required,
    )(source_checks_function(node.engine, c, key))


# --------------------------------------------------------------------------- jobs


def _job_partitions(pipe: PipelineConfig, nodes: list[OdibiNode]) -> dg.PartitionsDefinition | None:
    """The partitions of the pipeline's job: those its nodes share (one at most: checked
    at load), else none."""
    for n in nodes:
        if n.pipeline == pipe.pipeline and not n.is_source:
            parts = _partitions_def(n)
            if parts is not None:
                return parts
    return None


def _pipeline_job(
    cfg: ProjectConfig,
    pipe: PipelineConfig,
    keys: list[dg.AssetKey],
    source_checks: list[dg.AssetChecksDefinition],
    partitions_def: dg.PartitionsDefinition | None = None,
) -> dg.UnresolvedAssetJobDefinition:
    """The pipeline's job: the assets it computes (whatever groups the translator gave
    them), and the checks on the sources it reads; one run computes one partition of a
    partitioned pipeline."""
    executor_name = pipe.executor or cfg.executor or DEFAULT_EXECUTOR
    tags: dict[str, str] = {"odibi/executor": executor_name, "odibi/pipeline": pipe.pipeline}
    if cfg.logging is not None:
        tags.update({f"odibi/{k}": str(v) for k, v in cfg.logging.metadata.items()})
    title = pipe.name or pipe.pipeline
    description = f"{title}: {pipe.description}" if pipe.description else title
    return dg.define_asset_job(
        name=pipe.pipeline,
        selection=dg.AssetSelection.assets(*keys) | dg.AssetSelection.checks(*source_checks),
        executor_def=EXECUTORS[executor_name],
        description=description,
        tags=tags,
        partitions_def=partitions_def,
    )
