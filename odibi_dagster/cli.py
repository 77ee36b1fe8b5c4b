"""The ``odibi-dagster`` command: validate, schema, init, run, lineage.

A config mistake prints ``<file>:<line>: <key>: <message>`` lines and exits 1, never a
traceback. ``run`` executes pipelines through Dagster (the same jobs the UI runs).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # not POSIX: no lock (a DAGSTER_HOME is rarely shared there)
    fcntl = None  # type: ignore[assignment]

from odibi_dagster.errors import OdibiConfigError

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        result: int = args.func(args)
        return result
    except OdibiConfigError as exc:
        for problem in exc.problems:
            print(str(problem), file=sys.stderr)
        return EXIT_FAIL
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="odibi-dagster",
        description="Run Odibi YAML pipelines as Dagster assets.",
    )
    sub = p.add_subparsers(dest="command")

    v = sub.add_parser("validate", help="check a project; one line per problem")
    v.add_argument("paths", nargs="+", metavar="PATH", help="YAML file or project directory")
    _env_option(v)
    v.set_defaults(func=cmd_validate)

    s = sub.add_parser("schema", help="print the JSON Schema of the YAML format")
    s.add_argument("--output", "-o", help="write to this file instead of stdout")
    s.set_defaults(func=cmd_schema)

    i = sub.add_parser("init", help="create a new runnable project")
    i.add_argument("directory", help="directory to create (must be empty or absent)")
    i.set_defaults(func=cmd_init)

    r = sub.add_parser("run", help="run pipelines through Dagster, in dependency order")
    r.add_argument("path", metavar="PATH", help="YAML file or project directory")
    r.add_argument(
        "--pipeline",
        "-p",
        action="append",
        dest="pipelines",
        help="run only this pipeline (repeatable); default: all, upstream first",
    )
    r.add_argument(
        "--partition",
        action="append",
        dest="partitions",
        help="a partition partitioned pipelines compute (e.g. 2024-01-05; repeatable), or a "
        "range FIRST..LAST of them, one run each; without it they are left out (named) "
        "unless chosen with --pipeline, which is an error",
    )
    r.add_argument("--verbose", "-v", action="store_true", help="show Dagster's event log")
    _env_option(r)
    r.set_defaults(func=cmd_run)

    li = sub.add_parser(
        "lineage",
        help="print where each column comes from (its upstream columns, as a tree)",
    )
    li.add_argument("path", metavar="PATH", help="YAML file or project directory")
    li.add_argument(
        "--column",
        "-c",
        metavar="PIPELINE.NODE.COLUMN",
        help="only this column (default: every column of every node)",
    )
    li.set_defaults(func=cmd_lineage)

    j = sub.add_parser(
        "spark-jars",
        help="download the Delta Lake and hadoop-azure jars a local Spark session needs",
    )
    j.add_argument(
        "--dir",
        help="where to put them (default: $ODIBI_SPARK_JARS_DIR, else "
        "~/.cache/odibi_dagster/spark-jars)",
    )
    j.add_argument(
        "--repository",
        help="a Maven repository to download from (default: $ODIBI_MAVEN_REPOSITORY, else "
        "Maven Central)",
    )
    j.set_defaults(func=cmd_spark_jars)
    return p


def _env_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--env",
        "-e",
        help="apply this entry of the project's `environments:` (Odibi v3); default: $ODIBI_ENV",
    )


def cmd_spark_jars(args: argparse.Namespace) -> int:
    from pathlib import Path

    from odibi_dagster.resources.spark_jars import SPARK_JARS, download_jars

    try:
        target = download_jars(Path(args.dir) if args.dir else None, repository=args.repository)
    except RuntimeError as exc:
        print(f"odibi-dagster spark-jars: {exc}", file=sys.stderr)
        return EXIT_FAIL
    print(f"{len(SPARK_JARS)} jars ready in {target}")
    return EXIT_OK


# --------------------------------------------------------------------------- lineage


def cmd_lineage(args: argparse.Namespace) -> int:
    """Column lineage as the YAML tells it (what a run finds is in its materializations)."""
    from odibi_dagster.column_lineage import lineage_lines
    from odibi_dagster.compile import odibi_nodes
    from odibi_dagster.config.loader import load_project
    from odibi_dagster.translator import OdibiTranslator

    project = load_project(args.path)
    nodes = odibi_nodes(project, project.connection_resources())
    translator = OdibiTranslator()
    keys = {id(n): translator.get_asset_key(n) for n in nodes}
    try:
        lines = lineage_lines(nodes, keys, args.column)
    except ValueError as exc:
        print(f"odibi-dagster lineage: {exc}", file=sys.stderr)
        return EXIT_FAIL
    print("\n".join(lines))
    return EXIT_OK


# --------------------------------------------------------------------------- validate


def cmd_validate(args: argparse.Namespace) -> int:
    from odibi_dagster.compile import build_definitions, check_definitions
    from odibi_dagster.config.loader import load_project

    failed = False
    for path in args.paths:
        try:
            project = load_project(path, env=args.env)
        except OdibiConfigError as exc:
            for problem in exc.problems:
                print(str(problem), file=sys.stderr)
            failed = True
            continue
        for note in project.notes:
            print(f"note: {note}")
        cfg = project.config
        nodes = sum(len(p.nodes) for p in cfg.pipelines)
        try:  # what only Dagster can check
            check_definitions(project, build_definitions(project))
        except OdibiConfigError as exc:
            for problem in exc.problems:
                print(str(problem), file=sys.stderr)
            failed = True
            continue
        print(
            f"ok: {path}: project '{project.name}', {len(cfg.pipelines)} pipeline(s), "
            f"{nodes} node(s), {len(cfg.connections)} connection(s)"
        )
    return EXIT_FAIL if failed else EXIT_OK


# --------------------------------------------------------------------------- schema


def cmd_schema(args: argparse.Namespace) -> int:
    from odibi_dagster.config.schema import json_schema

    text = json.dumps(json_schema(), indent=2)
    if args.output:
        Path(args.output).write_text(text + "\n", encoding="utf-8")
        print(f"wrote {args.output}")
    else:
        print(text)
    return EXIT_OK


# --------------------------------------------------------------------------- init


TEMPLATE_DIR = Path(__file__).parent / "templates" / "project"


def cmd_init(args: argparse.Namespace) -> int:
    target = Path(args.directory)
    if target.exists() and any(target.iterdir()):
        print(
            f"{target}: directory is not empty; choose a new directory name",
            file=sys.stderr,
        )
        return EXIT_FAIL
    shutil.copytree(TEMPLATE_DIR, target, dirs_exist_ok=True)
    for junk in target.rglob("__pycache__"):
        shutil.rmtree(junk, ignore_errors=True)
    print(f"created {target}/ (project.yaml, pipelines/, data/, transforms.py, definitions.py)")
    print(f"  run it:       odibi-dagster run {target}")
    print(f"  open the UI:  dagster dev -f {target / 'definitions.py'}")
    return EXIT_OK


# --------------------------------------------------------------------------- run


def pipeline_job(path: str, pipeline: str, env: str | None = None) -> Any:
    """Rebuild one pipeline's job (used by Dagster to reconstruct it in step processes)."""
    from odibi_dagster.compile import load_definitions

    return load_definitions(path, env=env).resolve_job_def(pipeline)


def open_instance(home: Path) -> Any:
    """The Dagster instance at ``home`` (DAGSTER_HOME), its storage created by one process
    at a time.

    Dagster's sqlite storages create their tables (and stamp their schema version) the
    first time they are used; two processes doing that at once on a fresh DAGSTER_HOME
    can fail, or leave the schema version stamped twice. So the first use happens here,
    under an exclusive lock on ``home/.odibi-instance.lock``."""
    import dagster as dg

    home.mkdir(parents=True, exist_ok=True)
    with open(home / ".odibi-instance.lock", "a") as lock:
        if fcntl is not None:
            fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            instance = dg.DagsterInstance.get()
            instance.get_runs(limit=1)  # run storage
            instance.all_instigator_state()  # schedule and sensor storage
            instance.get_event_records(  # the event log's index
                dg.EventRecordsFilter(dg.DagsterEventType.RUN_SUCCESS), limit=1
            )
        finally:
            if fcntl is not None:
                fcntl.flock(lock, fcntl.LOCK_UN)
    return instance


def cmd_run(args: argparse.Namespace) -> int:
    import dagster as dg

    from odibi_dagster.compile import build_definitions
    from odibi_dagster.config.loader import display_name, load_project
    from odibi_dagster.lineage import pipeline_order

    project = load_project(args.path, env=args.env)
    build_definitions(project)  # report config problems before any run starts
    names = [p.pipeline for p in project.config.pipelines]
    wanted = args.pipelines or names
    unknown = [p for p in wanted if p not in names]
    if unknown:
        print(
            f"{args.path}: no pipeline named {', '.join(unknown)}; pipelines: {', '.join(names)}",
            file=sys.stderr,
        )
        return EXIT_FAIL
    order = [
        p for p in pipeline_order(project.config, project.connection_resources()) if p in wanted
    ]
    partitioned = _partitioned(project)
    if not args.partitions and not args.pipelines and set(order) - set(partitioned):
        left_out = [p for p in order if p in partitioned]
        for name in left_out:
            print(
                f"skipped: pipeline {name} is partitioned: give --partition KEY (or "
                "FIRST..LAST) to run it"
            )
        order = [p for p in order if p not in left_out]
    keys, why = _partition_keys(partitioned, order, args.partitions or [])
    if why:
        print(f"{args.path}: {why}", file=sys.stderr)
        return EXIT_FAIL
    unset, warnings = _check_keys(project, order)
    for line in warnings:
        print(f"warning: {line}", file=sys.stderr)
    if unset:
        for line in unset:
            print(line, file=sys.stderr)
        return EXIT_FAIL

    home = os.environ.get("DAGSTER_HOME")
    tmp_home = None
    if home:
        instance = open_instance(Path(home))
    else:
        tmp_home = tempfile.mkdtemp(prefix="odibi-dagster-home-")
        instance = dg.DagsterInstance.local_temp(
            tmp_home, overrides={"telemetry": {"enabled": False}}
        )
    source = str(project.origin)
    quiet = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}
    ok = True
    runs = [(name, key) for name in order for key in keys.get(name, [None])]
    try:
        for name, key in runs:
            job = dg.build_reconstructable_job(
                "odibi_dagster.cli",
                "pipeline_job",
                reconstructable_args=(source, name, project.env),  # type: ignore[arg-type]
            )
            print(f"pipeline {name}" + (f" partition {key}" if key else ""))
            result = dg.execute_job(
                job,
                instance=instance,
                run_config=None if args.verbose else quiet,
                tags={"dagster/partition": key} if key else None,
            )
            _report(result)
            story = _story_uri(project, name, result.run_id)
            if story:
                print(f"  story {story}")
            if not result.success:
                ok = False
                break
    finally:
        instance.dispose()
        if tmp_home:
            shutil.rmtree(tmp_home, ignore_errors=True)
    if ok:
        runs_of = f"{len(runs)} run(s) of " if len(runs) != len(order) else ""
        print(f"done: {runs_of}{len(order)} pipeline(s) succeeded")
        defs_file = project.root_dir / "definitions.py"
        target = f"-f {display_name(defs_file)}" if defs_file.is_file() else "-f <definitions.py>"
        print(f"open the UI: dagster dev {target}  (set DAGSTER_HOME to keep run history)")
    return EXIT_OK if ok else EXIT_FAIL


def _partitioned(project: Any) -> dict[str, Any]:
    """The partitions definition of each partitioned pipeline, by name."""
    from odibi_dagster.partitions import effective, partitions_definition

    out = {}
    for pipe in project.config.pipelines:
        for node in pipe.nodes:
            parts = partitions_definition(effective(pipe, node))
            if parts is not None:
                out[pipe.pipeline] = parts
                break
    return out


def _partition_keys(
    partitioned: dict[str, Any], pipelines: list[str], given: list[str]
) -> tuple[dict[str, list[str]], str | None]:
    """The partition keys each partitioned pipeline of ``pipelines`` runs for (``given``:
    keys, or ranges ``FIRST..LAST``), or why ``given`` does not fit them."""
    chosen = {n: d for n, d in partitioned.items() if n in pipelines}
    if not chosen:
        return {}, "--partition given, but no pipeline to run is partitioned" if given else None
    if not given:
        return {}, (
            f"pipeline {', '.join(chosen)} is partitioned: give the partition to run "
            "with --partition (e.g. --partition 2024-01-05, or a range "
            "2024-01-01..2024-01-07), or backfill a range with `dagster job backfill`"
        )
    out: dict[str, list[str]] = {}
    for name, definition in chosen.items():
        keys: list[str] = []
        for item in given:
            first, dots, last = item.partition("..")
            ends = (first, last) if dots else (item,)
            missing = [k for k in ends if not definition.has_partition_key(k)]
            if missing:
                return {}, f"pipeline {name} has no partition '{missing[0]}'"
            if dots:
                every = definition.get_partition_keys()
                lo, hi = every.index(first), every.index(last)
                if lo > hi:
                    return {}, f"--partition {item}: '{first}' comes after '{last}'"
                keys += every[lo : hi + 1]
            else:
                keys.append(item)
        out[name] = list(dict.fromkeys(keys))
    return out, None


def _check_keys(project: Any, pipelines: list[str]) -> tuple[list[str], list[str]]:
    """Before any run: direct_key variables that are unset (errors), and direct keys used
    with ODIBI_ENV=production (warnings), for the connections these pipelines use."""
    import dagster as dg

    from odibi_dagster.resources.azure_adls import AzureADLS

    errors, warnings = [], []
    for name, conn in project.connection_resources(pipelines).items():
        if not isinstance(conn, AzureADLS):
            continue
        key = conn.account_key
        if isinstance(key, dg.EnvVar) and not (key.get_value() or "").strip():
            errors.append(
                f"connection '{name}' (account '{conn.account}'): account_key names the "
                f"environment variable {key.env_var_name}, which is not set. Export it with the "
                "storage account key, or use auth_mode: key_vault."
            )
        warning = conn.production_warning()
        if warning:
            warnings.append(warning)
    return errors, warnings


def _story_uri(project: Any, pipeline: str, run_id: str) -> str | None:
    """Where the story of this run was written (None: no story, or not written)."""
    from odibi_dagster.compile import story_resource

    story = story_resource(project)
    if story is None:
        return None
    loc = story.html(project.connection_resources(), pipeline, run_id)
    return loc.uri if loc.fs.exists(loc.fs_path) else None


def _report(result: Any) -> None:
    for event in result.get_asset_materialization_events():
        mat = event.event_specific_data.materialization
        meta = mat.metadata
        rows = meta.get("dagster/row_count")
        uri = meta.get("dagster/uri") or meta.get("odibi/stored_at")
        written = meta.get("written")
        label = "/".join(mat.asset_key.path)
        rows_txt = f"{rows.value} rows" if rows is not None else ""
        where = ""
        if uri is not None and "dagster/uri" in meta:
            where = " -> " + str(uri.value)
            if written is not None and written.value is False:
                where += " (exists, mode ignore: not written)"
        print(f"  ok    {label}: {rows_txt}{where}")
    for event in result.get_step_failure_events():
        data = event.event_specific_data
        text = ""
        if data.user_failure_data is not None and data.user_failure_data.description:
            text = data.user_failure_data.description
        elif data.error is not None:
            text = _user_message(data.error)
        print(f"  FAIL  {event.step_key}: {text}", file=sys.stderr)
    for event in result.all_events:
        if event.event_type_value == "RESOURCE_INIT_FAILURE":
            error = event.event_specific_data.error
            print(f"  FAIL  {_user_message(error)}", file=sys.stderr)
    for event in result.all_events:
        if event.event_type_value == "ASSET_CHECK_EVALUATION":
            ev = event.event_specific_data
            status = "pass" if ev.passed else "FAIL"
            print(f"  check {'/'.join(ev.asset_key.path)}:{ev.check_name}: {status}")


def _user_message(error: Any) -> str:
    """The message of the innermost Odibi error in a Dagster error chain, else its last line."""
    err = error
    while err is not None:
        if err.cls_name and err.cls_name.startswith("Odibi"):
            text = str(err.message).strip()
            for prefix in (f"odibi_dagster.errors.{err.cls_name}: ", f"{err.cls_name}: "):
                text = text.removeprefix(prefix)
            return text
        err = err.cause
    err = error
    while err.cause is not None and "odibi" not in err.message:
        err = err.cause
    return str(err.message).strip().splitlines()[-1]


if __name__ == "__main__":
    sys.exit(main())
