"""Delta tables on pandas, through delta-rs: reading (with time travel) and writing in
every mode, with the node's options in either spelling (see delta_options)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import pandas as pd
import pyarrow as pa
from deltalake import DeltaTable, write_deltalake
from deltalake.exceptions import DeltaError, SchemaMismatchError

from odibi_dagster.engines.delta_options import (
    DELTA_WRITE_OPTION_NAMES,
    check_delta_read_options,
    delta_write_options,
)
from odibi_dagster.engines.messages import (
    fail,
    missing_input,
    not_a_delta_table,
    require_same_columns,
)
from odibi_dagster.engines.pandas_errors import to_arrow
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


def _is_empty_dir(loc: Location) -> bool:
    fs = loc.fs
    return bool(fs.isdir(loc.fs_path)) and not fs.ls(loc.fs_path, detail=False)


def read_delta(loc: Location, opts: dict[str, Any], where: str) -> pd.DataFrame:
    """The Delta table at ``loc`` (at ``versionAsOf`` / ``timestampAsOf`` if given)."""
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
        return table.to_pandas(columns=opts.get("columns"), filters=opts.get("filters"))
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
            "Choose another path, or remove what is there first",
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
    table = to_arrow(df, where, loc.uri, "delta")
    extra: dict[str, Any] = dict(delta.delta_rs)
    if delta.predicate is not None:
        extra["predicate"] = delta.predicate
    # write_deltalake's overloads key on a literal mode; the mode was validated above.
    write: Callable[..., None] = write_deltalake
    try:
        write(
            loc.delta_uri,
            table,
            mode=mode,
            partition_by=delta.partition_by or None,
            schema_mode=schema_mode,
            storage_options=storage_options,
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
