"""Delta tables on pandas, through delta-rs: reading (with time travel) and writing in
every mode, with the node's options in either spelling (see delta_options).

Runs may write one table at the same time. Appends all land: delta-rs commits each again
on a newer version when another write got there first. Any other write that conflicts
with one committed meanwhile (two overwrites of a table, two writes creating it) fails
whole, saying so and naming the table: nothing of it is committed, and it is not tried
again, so no rows are lost silently nor written twice. Mode error fails, and mode
ignore skips, when another write created the table first. A file delta-rs left half
written in a local table (``<file>#<n>``, by a writer killed mid-write) is deleted by
the next write of the table once an hour old."""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from deltalake import CommitProperties, DeltaTable, write_deltalake
from deltalake.exceptions import CommitFailedError, DeltaError, SchemaMismatchError
from fsspec.implementations.local import LocalFileSystem

from odibi_dagster.engines.base import RowFilter
from odibi_dagster.engines.delta_options import (
    DELTA_WRITE_OPTION_NAMES,
    check_delta_read_options,
    delta_write_options,
)
from odibi_dagster.engines.messages import (
    exists_error,
    fail,
    missing_input,
    not_a_delta_table,
    require_same_columns,
)
from odibi_dagster.engines.pandas_errors import to_arrow
from odibi_dagster.engines.pandas_rows import arrow_predicate, filter_frame, missing_columns
from odibi_dagster.engines.replace import STALE_AFTER
from odibi_dagster.errors import first_line, redact
from odibi_dagster.resources.base import Location


def delta_detail(loc: Location, exc: BaseException) -> str:
    """``<ExceptionType>: <first line>`` of a delta-rs error, storage option values redacted."""
    return f"{type(exc).__name__}: {redact(first_line(exc), loc.storage_options, loc.uri)}"


def is_delta_table(loc: Location, where: str) -> bool:
    """Whether a Delta table (a ``_delta_log``) is at ``loc``."""
    try:
        return bool(
            DeltaTable.is_deltatable(loc.delta_uri, storage_options=loc.storage_options or None)
        )
    except OSError:
        if loc.fs.isfile(loc.fs_path):  # delta-rs cannot walk a plain file: not a table
            return False
        raise
    except DeltaError as exc:  # e.g. a storage option delta-rs cannot parse
        fail(
            where,
            f"could not open Delta table '{loc.uri}' ({delta_detail(loc, exc)}). "
            "Check the connection's storage options and the path",
        )


# delta-rs writes a file on local disk as <file>#<n> and renames it when complete
_DELTA_RS_TEMPORARY = re.compile(r"#\d+$")


def remove_stale_delta_rs_files(loc: Location) -> list[str]:
    """Delete the files delta-rs left half written in the local table at ``loc`` (a
    writer killed mid-write): ``<file>#<n>`` once ``STALE_AFTER`` old, so that a
    write going on now (delta-rs takes no lock of ours) keeps its own. Returns them."""
    if not isinstance(loc.fs, LocalFileSystem):
        return []  # delta-rs writes blobs in one request: nothing is left half written
    deadline = time.time() - STALE_AFTER
    deleted = []
    for folder, dirs, files in os.walk(loc.fs_path):
        dirs[:] = [d for d in dirs if d != "_delta_log"]
        for name in files:
            path = os.path.join(folder, name)
            if _DELTA_RS_TEMPORARY.search(name):
                with contextlib.suppress(OSError):
                    if os.lstat(path).st_mtime < deadline:
                        os.remove(path)
                        deleted.append(path)
    return deleted


def _is_empty_dir(loc: Location) -> bool:
    fs = loc.fs
    return bool(fs.isdir(loc.fs_path)) and not fs.ls(loc.fs_path, detail=False)


def read_delta(
    loc: Location, opts: dict[str, Any], where: str, rows: RowFilter | None = None
) -> pd.DataFrame:
    """The Delta table at ``loc`` (at ``versionAsOf`` / ``timestampAsOf`` if given); only
    the rows ``rows`` selects when given, as a predicate of the scan: delta-rs skips the
    files whose min/max statistics in the log rule them out."""
    check_delta_read_options(opts, "pandas", where)
    storage_options = loc.storage_options or None
    if not is_delta_table(loc, where):
        if loc.fs.exists(loc.fs_path):
            not_a_delta_table(where, loc.uri)
        missing_input(where, loc.uri)
    version: int | None = None
    if "versionAsOf" in opts:
        try:
            version = int(opts["versionAsOf"])
        except (TypeError, ValueError):
            fail(
                where,
                f"read option versionAsOf must be a whole number, got "
                f"{opts['versionAsOf']!r}. Use a table version such as 0",
            )
    try:
        table = DeltaTable(loc.delta_uri, version=version, storage_options=storage_options)
        if "timestampAsOf" in opts:
            table.load_as_version(_timestamp(opts["timestampAsOf"], where))
        if rows is None:
            return table.to_pandas(columns=opts.get("columns"), filters=opts.get("filters"))
        dataset = table.to_pyarrow_dataset()
        missing_columns(list(dataset.schema.names), rows, where, loc.uri)
        pushed = arrow_predicate(dataset.schema, rows, where)
        predicate = pushed
        if opts.get("filters") is not None:
            given = pq.filters_to_expression(opts["filters"])
            predicate = given if pushed is None else given & pushed
        df = dataset.to_table(columns=opts.get("columns"), filter=predicate).to_pandas()
        return filter_frame(df, rows, where, loc.uri) if pushed is None else df
    except DeltaError as exc:
        travel = ""
        if "versionAsOf" in opts:
            travel = f" at versionAsOf={opts['versionAsOf']}"
        elif "timestampAsOf" in opts:
            travel = f" at timestampAsOf={opts['timestampAsOf']}"
        fail(
            where,
            f"could not read Delta table '{loc.uri}'{travel} ({delta_detail(loc, exc)}). "
            "Check the table version/timestamp and options",
        )
    except (pa.ArrowException, ValueError, TypeError) as exc:
        fail(
            where,
            f"could not read Delta table '{loc.uri}' ({delta_detail(loc, exc)}). "
            "Check the columns/filters read options",
        )


def _timestamp(value: Any, where: str) -> datetime:
    try:
        ts = pd.Timestamp(value)
    except (TypeError, ValueError):
        fail(
            where,
            f"read option timestampAsOf {value!r} is not a timestamp. "
            "Use e.g. '2024-01-31' or '2024-01-31T12:00:00Z'",
        )
    if ts is pd.NaT:
        fail(where, "read option timestampAsOf is empty. Use e.g. '2024-01-31'")
    result: datetime = ts.to_pydatetime()
    if result.tzinfo is None:
        result = result.replace(tzinfo=timezone.utc)
    return result


def _typed_nulls(table: pa.Table, loc: Location, is_table: bool) -> pa.Table:
    """``table`` with its columns of no type (an object column with no value: an empty
    result, or one that is all null) given one: the table's type of the column when
    there is a table, else string. A Delta table created with a column of no type would
    refuse every later write that has values in it."""
    nulls = [i for i, f in enumerate(table.schema) if pa.types.is_null(f.type)]
    if not nulls:
        return table
    known: dict[str, pa.DataType] = {}
    if is_table:
        with contextlib.suppress(DeltaError, OSError, ValueError, TypeError):
            schema = DeltaTable(loc.delta_uri, storage_options=loc.storage_options or None)
            known = {f.name: f.type for f in pa.schema(schema.schema().to_arrow())}
    for i in nulls:
        name = table.schema.field(i).name
        kind = known.get(name, pa.string())
        table = table.set_column(i, name, pa.nulls(len(table), kind))
    return table


def write_delta(
    df: pd.DataFrame,
    loc: Location,
    mode: str,
    opts: dict[str, Any],
    where: str,
    occupied: bool,
) -> bool:
    """Write ``df`` as a Delta table at ``loc``; ``occupied``: something is at the path."""
    delta = delta_write_options(opts, mode, where)
    if delta.other:
        fail(
            where,
            f"write option '{sorted(delta.other)[0]}' is not accepted for delta on pandas. "
            f"Remove it or use one of: {', '.join(DELTA_WRITE_OPTION_NAMES)}",
        )
    storage_options = loc.storage_options or None
    schema_mode = delta.schema_mode
    columns = [str(c) for c in df.columns]
    if any(c not in columns for c in delta.partition_by):
        fail(
            where,
            f"write option partition_by {delta.partition_by!r} must list columns of the data "
            f"(columns: {columns}). Fix the column names",
        )
    is_table = occupied and is_delta_table(loc, where)
    if occupied and not is_table and not _is_empty_dir(loc):
        fail(
            where,
            f"output path '{loc.uri}' exists but is not a Delta table (no _delta_log); "
            f"mode {mode} would mix a Delta table into other data. It was left unchanged. "
            "Choose another path, or remove what is there first (if another run is "
            "creating a Delta table there right now, re-run this node once it is done)",
        )
    if is_table and mode == "append" and schema_mode != "merge":
        try:
            current = DeltaTable(loc.delta_uri, storage_options=storage_options)
            old_cols = [f.name for f in current.schema().fields]
        except DeltaError as exc:
            fail(
                where,
                f"could not read the schema of Delta table '{loc.uri}' "
                f"({delta_detail(loc, exc)}). Check the table and the storage options",
            )
        require_same_columns(where, loc.uri, old_cols, [str(c) for c in df.columns])
    table = _typed_nulls(to_arrow(df, where, loc.uri, "delta"), loc, is_table)
    if is_table:
        remove_stale_delta_rs_files(loc)
    extra: dict[str, Any] = dict(delta.delta_rs)
    if delta.predicate is not None:
        extra["predicate"] = delta.predicate
    # Creating the table, delta-rs would commit a write that lost the race to create it
    # again on top of the winner's, as if appended: rows of two writers in a table that
    # was overwritten, or created by mode error or ignore. Only appends are committed
    # again then; any other write that loses fails, and modes error and ignore both
    # create the table only if there is none (here nothing is at the path).
    creating = not is_table
    commit = CommitProperties(max_commit_retries=0) if creating and mode != "append" else None
    # write_deltalake's overloads key on a literal mode; the mode was validated above.
    write: Callable[..., None] = write_deltalake
    try:
        write(
            loc.delta_uri,
            table,
            mode="error" if mode in ("error", "ignore") else mode,
            partition_by=delta.partition_by or None,
            schema_mode=schema_mode,
            storage_options=storage_options,
            commit_properties=commit,
            **extra,
        )
    except SchemaMismatchError as exc:
        fail(
            where,
            f"cannot write to Delta table '{loc.uri}': the data's schema does not match the "
            f"table's ({redact(first_line(exc), loc.storage_options, loc.uri)}). Use option mergeSchema: "
            "true to add columns, or overwriteSchema: true with mode overwrite to replace "
            "the schema",
        )
    except Exception as exc:  # delta-rs raises bare Exception for e.g. cast errors
        created_meanwhile = isinstance(exc, CommitFailedError) or (
            isinstance(exc, DeltaError) and "already exists" in str(exc)
        )
        if mode in ("error", "ignore") and created_meanwhile:
            if mode == "ignore":
                return False  # what mode ignore does when a table is there
            exists_error(where, loc.uri)
        if isinstance(exc, CommitFailedError):
            # a write that conflicts with one committed meanwhile fails whole and is not
            # tried again here, so no rows are lost silently or written twice
            fail(
                where,
                f"another write to Delta table '{loc.uri}' was committed while this one "
                f"was being committed ({delta_detail(loc, exc)}); nothing of this write "
                "was committed. Re-run the node to write its result",
            )
        hint = "Check the write options and the data"
        if is_table and schema_mode is None:
            hint += (
                "; if the column types changed, use option overwriteSchema: true "
                "with mode overwrite"
            )
        fail(
            where,
            f"could not write Delta table '{loc.uri}' ({delta_detail(loc, exc)}). {hint}",
        )
    return True
