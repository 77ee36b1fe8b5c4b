"""The pandas engine: reads, writes and transforms data on one machine.

Pure pandas / pyarrow / DuckDB / delta-rs / fsspec; no Dagster here. Every data path goes
through a :class:`~odibi_dagster.resources.base.Location`, so the same code serves local
disk and remote filesystems (e.g. adlfs). User-fixable problems raise
:class:`~odibi_dagster.errors.OdibiRunError` as ``<where>: <what was wrong>. <what to do>``.

File writes are atomic: the complete result is serialized to a temporary sibling
(``<name>.tmp-<hex>``) and then moved over the target, so a failed write never leaves a
half-written file where the old one was.
"""

from __future__ import annotations

import csv
import io
import re
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import IO, Any, NoReturn

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from deltalake import DeltaTable, write_deltalake
from deltalake.exceptions import DeltaError, SchemaMismatchError

from odibi_dagster.errors import OdibiRunError
from odibi_dagster.formats import FORMATS, WRITE_MODES
from odibi_dagster.resources.base import Location

__all__ = ["PandasEngine"]

_UNEXPECTED_KWARG = re.compile(r"unexpected keyword argument '([^']+)'")
_ARROW_COLUMN = re.compile(r"Conversion failed for column (.+?) with type")
_MISSING_TABLE = re.compile(r"Table with name (.+?) does not exist", re.IGNORECASE)
_COMPRESSED_SUFFIXES = {
    ".gz": "gzip",
    ".bz2": "bz2",
    ".zip": "zip",
    ".xz": "xz",
    ".zst": "zstd",
    ".tar": "tar",
}
_DELTA_READ_OPTIONS = ("versionAsOf", "timestampAsOf", "columns", "filters")
_DELTA_WRITE_OPTIONS = (
    "partition_by",
    "partitionBy",
    "mergeSchema",
    "overwriteSchema",
    "schema_mode",
    "replaceWhere",
    "predicate",
    "target_file_size",
    "name",
    "description",
    "configuration",
)


def _prefix(where: str) -> str:
    return f"{where}: " if where else ""


def _fail(where: str, message: str) -> NoReturn:
    message = message.rstrip()
    raise OdibiRunError(_prefix(where) + message + ("" if message.endswith(".") else "."))


def _first_line(text: str) -> str:
    for line in str(text).splitlines():
        if line.strip():
            return line.strip()
    return str(text).strip()


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in {"true", "1", "yes", "y"}
    return bool(value)


def _split(path: str) -> tuple[str, str]:
    """(parent, name) of an fsspec path; handles '/' and Windows '\\' separators."""
    stripped = path.rstrip("/\\")
    cut = max(stripped.rfind("/"), stripped.rfind("\\"))
    if cut < 0:
        return "", stripped
    return stripped[:cut] or stripped[: cut + 1], stripped[cut + 1 :]


def _compression_from_suffix(path: str) -> str | None:
    lowered = path.lower()
    for suffix, compression in _COMPRESSED_SUFFIXES.items():
        if lowered.endswith(suffix):
            return compression
    return None


def _kwarg_error(
    where: str, exc: TypeError, kind: str, func: str, uri: str, options: Mapping[str, Any]
) -> NoReturn:
    """Turn a TypeError raised while calling ``func`` with user options into an OdibiRunError."""
    match = _UNEXPECTED_KWARG.search(str(exc))
    if match:
        _fail(
            where,
            f"{kind} option '{match.group(1)}' is not accepted by {func} "
            f"(TypeError: {_first_line(str(exc))}). Remove it or use a {func} argument",
        )
    names = ", ".join(sorted(options)) or "(none)"
    _fail(
        where,
        f"{func} failed for '{uri}' with the given {kind} options [{names}] "
        f"(TypeError: {_first_line(str(exc))}). Check the option values",
    )


def _arrow_column(exc: BaseException) -> str | None:
    match = _ARROW_COLUMN.search(str(exc))
    return match.group(1) if match else None


def _serialization_error(where: str, uri: str, fmt: str, exc: BaseException) -> NoReturn:
    column = _arrow_column(exc)
    what = f"column '{column}' " if column else "the data "
    todo = (
        f"Give column '{column}' a single type (e.g. cast it in SQL or with .astype(str)) "
        "before writing"
        if column
        else "Check the data and the write options (e.g. encoding)"
    )
    _fail(
        where,
        f"could not write {fmt} to '{uri}': {what}could not be serialized "
        f"({type(exc).__name__}: {_first_line(str(exc))}). The target was left unchanged. {todo}",
    )


def _column_mismatch(where: str, uri: str, existing: list[str], new: list[str]) -> NoReturn:
    _fail(
        where,
        f"cannot append to '{uri}': its columns {existing} differ from the new data's "
        f"columns {new}. The target was left unchanged. Select the same columns before "
        "writing, or use mode overwrite",
    )


def _to_arrow(df: pd.DataFrame, where: str, uri: str, fmt: str) -> pa.Table:
    try:
        return pa.Table.from_pandas(df, preserve_index=False)
    except (pa.ArrowException, TypeError, ValueError) as exc:
        _serialization_error(where, uri, fmt, exc)


def _is_delta(loc: Location) -> bool:
    """Whether a Delta table (a ``_delta_log``) is at ``loc``."""
    try:
        return bool(
            DeltaTable.is_deltatable(loc.delta_uri, storage_options=loc.storage_options or None)
        )
    except OSError:
        if loc.fs.isfile(loc.fs_path):  # delta-rs cannot walk a plain file: not a table
            return False
        raise


def _narrow_hugeints(rel: duckdb.DuckDBPyRelation) -> duckdb.DuckDBPyRelation:
    """DuckDB sums integers into HUGEINT, which pandas can only hold as float64: ``SUM(x)``
    of integers would come back as 93.0. Cast them to BIGINT (an overflow is an error)."""
    huge = {i for i, t in enumerate(rel.types) if str(t) in ("HUGEINT", "UHUGEINT")}
    if not huge:
        return rel
    cols = []
    for i, name in enumerate(rel.columns):
        quoted = '"' + name.replace('"', '""') + '"'
        cols.append(f"CAST({quoted} AS BIGINT) AS {quoted}" if i in huge else quoted)
    return rel.project(", ".join(cols))


class PandasEngine:
    """Run Odibi reads, writes and SQL steps with pandas (data must fit in memory)."""

    name = "pandas"

    # ------------------------------------------------------------------ read

    def read(
        self,
        loc: Location,
        fmt: str,
        options: Mapping[str, Any] | None = None,
        *,
        where: str = "",
    ) -> pd.DataFrame:
        """Read the data at ``loc`` in format ``fmt`` into a DataFrame."""
        self._check_format(fmt, where)
        opts = dict(options or {})
        if fmt == "delta":
            return self._read_delta(loc, opts, where)
        if not loc.fs.exists(loc.fs_path):
            _fail(
                where,
                f"input path '{loc.uri}' does not exist. Check the path and connection, "
                "or run the node that writes it first",
            )
        if "partition_by" in opts or "partitionBy" in opts:
            _fail(where, "read option 'partition_by' is not a read option. Remove it")
        if fmt == "parquet":
            return self._read_parquet(loc, opts, where)
        if fmt == "csv":
            return self._read_text(loc, opts, where, "csv")
        return self._read_text(loc, opts, where, "json")

    def _data_files(self, loc: Location, where: str) -> list[str]:
        """The file itself, or the data files of a directory written by Spark."""
        fs = loc.fs
        if not fs.isdir(loc.fs_path):
            return [loc.fs_path]
        files: list[str] = []
        for dirpath, dirnames, filenames in fs.walk(loc.fs_path, topdown=True):
            # Like Spark and pyarrow: skip _delta_log, _SUCCESS, .crc and other hidden names.
            dirnames[:] = [d for d in dirnames if not d.startswith(("_", "."))]
            for filename in filenames:
                if not filename.startswith(("_", ".")) and not filename.endswith(".crc"):
                    files.append(f"{str(dirpath).rstrip('/')}/{filename}")
        files.sort()
        if not files:
            _fail(
                where,
                f"input path '{loc.uri}' is a directory with no data files. "
                "Point the node at a file or at a directory of part files",
            )
        return files

    def _read_text(self, loc: Location, opts: dict[str, Any], where: str, fmt: str) -> pd.DataFrame:
        func: Callable[..., Any]
        if fmt == "csv":
            func, func_name = pd.read_csv, "pandas.read_csv"
            if "header" in opts and isinstance(opts["header"], (bool, str)):
                header = opts["header"]
                if isinstance(header, str) and header.strip().lower() in {"true", "false"}:
                    header = header.strip().lower() == "true"
                if isinstance(header, bool):
                    opts["header"] = 0 if header else None
        else:
            func, func_name = pd.read_json, "pandas.read_json"
            opts = {"lines": True, **opts}
        frames = []
        for path in self._data_files(loc, where):
            kwargs = dict(opts)
            if "compression" not in kwargs:
                compression = _compression_from_suffix(path)
                if compression:
                    kwargs["compression"] = compression
            try:
                with loc.fs.open(path, "rb") as handle:
                    frames.append(func(handle, **kwargs))
            except TypeError as exc:
                _kwarg_error(where, exc, "read", func_name, loc.uri, opts)
            except (ValueError, pa.ArrowException) as exc:
                _fail(
                    where,
                    f"could not read {fmt} from '{loc.uri}' ({type(exc).__name__}: "
                    f"{_first_line(str(exc))}). Check that the file is {fmt} and that the "
                    "read options match it",
                )
        if len(frames) == 1:
            return frames[0]
        return pd.concat(frames, ignore_index=True)

    def _read_parquet(self, loc: Location, opts: dict[str, Any], where: str) -> pd.DataFrame:
        try:
            table = pq.read_table(loc.fs_path, filesystem=loc.fs, **opts)
        except TypeError as exc:
            _kwarg_error(where, exc, "read", "pyarrow.parquet.read_table", loc.uri, opts)
        except (pa.ArrowException, ValueError, OSError) as exc:
            _fail(
                where,
                f"could not read parquet from '{loc.uri}' ({type(exc).__name__}: "
                f"{_first_line(str(exc))}). Check that the path holds parquet files",
            )
        return table.to_pandas()

    def _read_delta(self, loc: Location, opts: dict[str, Any], where: str) -> pd.DataFrame:
        unknown = sorted(set(opts) - set(_DELTA_READ_OPTIONS))
        if unknown:
            _fail(
                where,
                f"read option '{unknown[0]}' is not accepted for delta on pandas. "
                f"Remove it or use one of: {', '.join(_DELTA_READ_OPTIONS)}",
            )
        if "versionAsOf" in opts and "timestampAsOf" in opts:
            _fail(where, "read options versionAsOf and timestampAsOf cannot both be set. Keep one")
        storage_options = loc.storage_options or None
        if not _is_delta(loc):
            if loc.fs.exists(loc.fs_path):
                _fail(
                    where,
                    f"input path '{loc.uri}' exists but is not a Delta table (no _delta_log). "
                    "Use the format it was written in, or point the node at a Delta table",
                )
            _fail(
                where,
                f"input path '{loc.uri}' does not exist. Check the path and connection, "
                "or run the node that writes it first",
            )
        version: int | None = None
        if "versionAsOf" in opts:
            try:
                version = int(opts["versionAsOf"])
            except (TypeError, ValueError):
                _fail(
                    where,
                    f"read option versionAsOf must be a whole number, got "
                    f"{opts['versionAsOf']!r}. Use a table version such as 0",
                )
        try:
            table = DeltaTable(loc.delta_uri, version=version, storage_options=storage_options)
            if "timestampAsOf" in opts:
                table.load_as_version(self._timestamp(opts["timestampAsOf"], where))
            return table.to_pandas(columns=opts.get("columns"), filters=opts.get("filters"))
        except DeltaError as exc:
            travel = ""
            if "versionAsOf" in opts:
                travel = f" at versionAsOf={opts['versionAsOf']}"
            elif "timestampAsOf" in opts:
                travel = f" at timestampAsOf={opts['timestampAsOf']}"
            _fail(
                where,
                f"could not read Delta table '{loc.uri}'{travel} ({type(exc).__name__}: "
                f"{_first_line(str(exc))}). Check the table version/timestamp and options",
            )
        except (pa.ArrowException, ValueError, TypeError) as exc:
            _fail(
                where,
                f"could not read Delta table '{loc.uri}' ({type(exc).__name__}: "
                f"{_first_line(str(exc))}). Check the columns/filters read options",
            )

    @staticmethod
    def _timestamp(value: Any, where: str) -> datetime:
        try:
            ts = pd.Timestamp(value)
        except (TypeError, ValueError):
            _fail(
                where,
                f"read option timestampAsOf {value!r} is not a timestamp. "
                "Use e.g. '2024-01-31' or '2024-01-31T12:00:00Z'",
            )
        if ts is pd.NaT:
            _fail(where, "read option timestampAsOf is empty. Use e.g. '2024-01-31'")
        result: datetime = ts.to_pydatetime()
        if result.tzinfo is None:
            result = result.replace(tzinfo=timezone.utc)
        return result

    # ----------------------------------------------------------------- write

    def write(
        self,
        df: pd.DataFrame,
        loc: Location,
        fmt: str,
        mode: str = "overwrite",
        options: Mapping[str, Any] | None = None,
        *,
        where: str = "",
    ) -> bool:
        """Write ``df`` to ``loc``; return False when skipped (mode ignore, target exists)."""
        self._check_format(fmt, where)
        if mode not in WRITE_MODES:
            _fail(
                where,
                f"write mode '{mode}' is not supported. Use one of: {', '.join(WRITE_MODES)}",
            )
        opts = dict(options or {})
        if fmt == "delta":
            return self._write_delta(df, loc, mode, opts, where)
        for key in ("partition_by", "partitionBy"):
            if key in opts:
                _fail(
                    where,
                    f"write option '{key}' is supported only for format delta on the pandas "
                    f"engine, not for {fmt}. Remove it or write format delta",
                )
        exists = bool(loc.fs.exists(loc.fs_path))
        if exists and mode == "error":
            self._exists_error(loc, where)
        if exists and mode == "ignore":
            return False
        append = exists and mode == "append"
        if fmt == "csv":
            writer = self._csv_writer(df, loc, opts, where, append)
        elif fmt == "json":
            writer = self._json_writer(df, loc, opts, where, append)
        else:
            writer = self._parquet_writer(df, loc, opts, where, append)
        self._atomic_write(loc, fmt, writer, where)
        return True

    @staticmethod
    def _exists_error(loc: Location, where: str) -> NoReturn:
        _fail(
            where,
            f"output path '{loc.uri}' already exists and the write mode is 'error'. "
            "Use mode overwrite or append, or remove it first",
        )

    def _atomic_write(
        self, loc: Location, fmt: str, writer: Callable[[IO[bytes]], None], where: str
    ) -> None:
        """Serialize everything to a temporary sibling, then move it over the target."""
        fs = loc.fs
        parent, _ = _split(loc.fs_path)
        if parent:
            fs.makedirs(parent, exist_ok=True)
        # A sibling of the target: same directory, so the final move is a rename.
        tmp = f"{loc.fs_path.rstrip('/').rstrip(chr(92))}.tmp-{uuid.uuid4().hex}"
        try:
            with fs.open(tmp, "wb") as handle:
                writer(handle)
            if fs.isdir(loc.fs_path):
                fs.rm(loc.fs_path, recursive=True)
            fs.mv(tmp, loc.fs_path)
        except BaseException as exc:
            self._remove_quietly(loc, tmp)
            if isinstance(exc, (pa.ArrowException, ValueError, TypeError)):
                _serialization_error(where, loc.uri, fmt, exc)
            raise

    @staticmethod
    def _remove_quietly(loc: Location, path: str) -> None:
        try:
            if loc.fs.exists(path):
                loc.fs.rm(path)
        except Exception:
            pass

    @staticmethod
    @contextmanager
    def _kwargs_guard(
        where: str, func: str, uri: str, options: Mapping[str, Any]
    ) -> Iterator[None]:
        try:
            yield
        except TypeError as exc:
            if _UNEXPECTED_KWARG.search(str(exc)):
                _kwarg_error(where, exc, "write", func, uri, options)
            raise

    def _csv_writer(
        self,
        df: pd.DataFrame,
        loc: Location,
        opts: dict[str, Any],
        where: str,
        append: bool,
    ) -> Callable[[IO[bytes]], None]:
        kwargs: dict[str, Any] = {"index": False, **opts}
        if "compression" not in kwargs:
            compression = _compression_from_suffix(loc.fs_path)
            if compression:
                kwargs["compression"] = compression
        existing_size = 0
        if append:
            if loc.fs.isdir(loc.fs_path):
                _fail(
                    where,
                    f"cannot append csv to '{loc.uri}': it is a directory of part files. "
                    "Use mode overwrite, or write format parquet or delta",
                )
            existing_size = int(loc.fs.info(loc.fs_path).get("size") or 0)
        if append and existing_size > 0:
            if kwargs.get("compression") not in (None, "infer"):
                _fail(
                    where,
                    f"cannot append to compressed csv '{loc.uri}'. Use mode overwrite, or "
                    "write format parquet or delta",
                )
            kwargs["header"] = False
            has_header = opts.get("header", True) is not False
            encoding = str(opts.get("encoding") or "utf-8")
            sep = str(opts.get("sep", opts.get("delimiter", ",")) or ",")
            with loc.fs.open(loc.fs_path, "rb") as handle:
                text = io.TextIOWrapper(handle, encoding=encoding, newline="")
                first = next(csv.reader(text, delimiter=sep), [])
                text.detach()
            new_cols = [str(c) for c in df.columns]
            if has_header:
                if sorted(first) != sorted(new_cols) or len(first) != len(new_cols):
                    _column_mismatch(where, loc.uri, first, new_cols)
                df = df[[df.columns[new_cols.index(c)] for c in first]]
            elif len(first) != len(new_cols):
                _column_mismatch(where, loc.uri, [f"<{len(first)} unnamed columns>"], new_cols)

        def write(handle: IO[bytes]) -> None:
            if append and existing_size > 0:
                with loc.fs.open(loc.fs_path, "rb") as old:
                    last = b""
                    while chunk := old.read(1 << 20):
                        handle.write(chunk)
                        last = chunk[-1:]
                if last not in (b"\n", b"\r"):
                    handle.write(b"\n")
            with self._kwargs_guard(where, "pandas.DataFrame.to_csv", loc.uri, opts):
                df.to_csv(handle, **kwargs)

        return write

    def _json_writer(
        self,
        df: pd.DataFrame,
        loc: Location,
        opts: dict[str, Any],
        where: str,
        append: bool,
    ) -> Callable[[IO[bytes]], None]:
        kwargs: dict[str, Any] = {
            "orient": "records",
            "lines": True,
            "date_format": "iso",
            **opts,
        }
        lines = _truthy(kwargs["lines"])
        combined = df
        prefix_existing = False
        if append:
            if loc.fs.isdir(loc.fs_path):
                _fail(
                    where,
                    f"cannot append json to '{loc.uri}': it is a directory of part files. "
                    "Use mode overwrite, or write format parquet or delta",
                )
            read_kwargs: dict[str, Any] = {"lines": lines, "dtype": False}
            if not lines:
                read_kwargs["orient"] = kwargs.get("orient")
            compression = kwargs.get("compression") or _compression_from_suffix(loc.fs_path)
            if compression and compression != "infer":
                read_kwargs["compression"] = compression
            size = int(loc.fs.info(loc.fs_path).get("size") or 0)
            if size > 0:
                try:
                    with loc.fs.open(loc.fs_path, "rb") as handle:
                        existing = pd.read_json(handle, convert_dates=False, **read_kwargs)
                except (ValueError, TypeError) as exc:
                    _fail(
                        where,
                        f"cannot append to '{loc.uri}': its current content could not be read "
                        f"as json ({type(exc).__name__}: {_first_line(str(exc))}). "
                        "Use mode overwrite, or fix the file",
                    )
                old_cols = [str(c) for c in existing.columns]
                new_cols = [str(c) for c in df.columns]
                if len(existing) and (
                    sorted(old_cols) != sorted(new_cols) or len(old_cols) != len(new_cols)
                ):
                    _column_mismatch(where, loc.uri, old_cols, new_cols)
                if lines and not (compression and compression != "infer"):
                    prefix_existing = True  # keep the old bytes exactly; add new lines
                elif len(existing):
                    reordered = df[[df.columns[new_cols.index(c)] for c in old_cols]]
                    reordered.columns = existing.columns
                    combined = pd.concat([existing, reordered], ignore_index=True)

        def write(handle: IO[bytes]) -> None:
            if prefix_existing:
                with loc.fs.open(loc.fs_path, "rb") as old:
                    last = b""
                    while chunk := old.read(1 << 20):
                        handle.write(chunk)
                        last = chunk[-1:]
                if last not in (b"\n", b""):
                    handle.write(b"\n")
            with self._kwargs_guard(where, "pandas.DataFrame.to_json", loc.uri, opts):
                combined.to_json(handle, **kwargs)

        return write

    def _parquet_writer(
        self,
        df: pd.DataFrame,
        loc: Location,
        opts: dict[str, Any],
        where: str,
        append: bool,
    ) -> Callable[[IO[bytes]], None]:
        for key in ("index", "engine"):
            opts.pop(key, None)  # always pyarrow, never the index
        table = _to_arrow(df, where, loc.uri, "parquet")
        if append:
            try:
                existing = pq.read_table(loc.fs_path, filesystem=loc.fs)
            except (pa.ArrowException, OSError, ValueError) as exc:
                _fail(
                    where,
                    f"cannot append to '{loc.uri}': its current content could not be read as "
                    f"parquet ({type(exc).__name__}: {_first_line(str(exc))}). "
                    "Use mode overwrite, or fix the file",
                )
            old_cols, new_cols = existing.column_names, table.column_names
            if sorted(old_cols) != sorted(new_cols) or len(old_cols) != len(new_cols):
                _column_mismatch(where, loc.uri, old_cols, new_cols)
            try:
                table = pa.concat_tables(
                    [existing, table.select(old_cols)], promote_options="permissive"
                )
            except (pa.ArrowException, TypeError, ValueError) as exc:
                _fail(
                    where,
                    f"cannot append to '{loc.uri}': the new column types do not match the "
                    f"existing ones ({type(exc).__name__}: {_first_line(str(exc))}). "
                    "The target was left unchanged. Cast the columns to the existing types, "
                    "or use mode overwrite",
                )
        final = table

        def write(handle: IO[bytes]) -> None:
            with self._kwargs_guard(where, "pyarrow.parquet.write_table", loc.uri, opts):
                pq.write_table(final, handle, **opts)

        return write

    def _write_delta(
        self,
        df: pd.DataFrame,
        loc: Location,
        mode: str,
        opts: dict[str, Any],
        where: str,
    ) -> bool:
        unknown = sorted(set(opts) - set(_DELTA_WRITE_OPTIONS))
        if unknown:
            _fail(
                where,
                f"write option '{unknown[0]}' is not accepted for delta on pandas. "
                f"Remove it or use one of: {', '.join(_DELTA_WRITE_OPTIONS)}",
            )
        storage_options = loc.storage_options or None
        partition_by = opts.get("partition_by", opts.get("partitionBy"))
        if isinstance(partition_by, str):
            partition_by = [partition_by]
        schema_mode = opts.get("schema_mode")
        if _truthy(opts.get("mergeSchema", False)):
            schema_mode = "merge"
        if _truthy(opts.get("overwriteSchema", False)):
            schema_mode = "overwrite"
        if schema_mode not in (None, "merge", "overwrite"):
            _fail(
                where,
                f"write option schema_mode must be 'merge' or 'overwrite', got {schema_mode!r}. "
                "Fix the value",
            )
        if partition_by is not None and (
            not isinstance(partition_by, (list, tuple))
            or any(str(c) not in map(str, df.columns) for c in partition_by)
        ):
            _fail(
                where,
                f"write option partition_by {partition_by!r} must list columns of the data "
                f"(columns: {[str(c) for c in df.columns]}). Fix the column names",
            )
        exists = _is_delta(loc)
        if exists and mode == "error":
            self._exists_error(loc, where)
        if exists and mode == "ignore":
            return False
        if exists and mode == "append" and schema_mode != "merge":
            current = DeltaTable(loc.delta_uri, storage_options=storage_options)
            old_cols = [f.name for f in current.schema().fields]
            new_cols = [str(c) for c in df.columns]
            if sorted(old_cols) != sorted(new_cols) or len(old_cols) != len(new_cols):
                _column_mismatch(where, loc.uri, old_cols, new_cols)
        table = _to_arrow(df, where, loc.uri, "delta")
        extra: dict[str, Any] = {
            k: opts[k]
            for k in ("target_file_size", "name", "description", "configuration")
            if k in opts
        }
        predicate = opts.get("predicate", opts.get("replaceWhere"))
        if predicate is not None:
            if mode != "overwrite":
                _fail(
                    where,
                    f"write option replaceWhere/predicate needs mode overwrite, not '{mode}'. "
                    "Use mode overwrite or remove the option",
                )
            extra["predicate"] = predicate
        # write_deltalake's overloads key on a literal mode; the mode was validated above.
        write: Callable[..., None] = write_deltalake
        try:
            write(
                loc.delta_uri,
                table,
                mode=mode,
                partition_by=list(partition_by) if partition_by else None,
                schema_mode=schema_mode,
                storage_options=storage_options,
                **extra,
            )
        except SchemaMismatchError as exc:
            _fail(
                where,
                f"cannot write to Delta table '{loc.uri}': the data's schema does not match the "
                f"table's ({_first_line(str(exc))}). Use option mergeSchema: true to add "
                "columns, or overwriteSchema: true with mode overwrite to replace the schema",
            )
        except Exception as exc:  # delta-rs raises bare Exception for e.g. cast errors
            hint = "Check the write options and the data"
            if exists and schema_mode is None:
                hint += (
                    "; if the column types changed, use option overwriteSchema: true "
                    "with mode overwrite"
                )
            _fail(
                where,
                f"could not write Delta table '{loc.uri}' ({type(exc).__name__}: "
                f"{_first_line(str(exc))}). {hint}",
            )
        return True

    # ---------------------------------------------------------------- exists

    def exists(self, loc: Location, fmt: str) -> bool:
        """Whether data of format ``fmt`` is at ``loc`` (a Delta table for delta)."""
        self._check_format(fmt, "")
        if fmt == "delta":
            return _is_delta(loc)
        return bool(loc.fs.exists(loc.fs_path))

    # ------------------------------------------------------------------- sql

    def sql(
        self, query: str, tables: Mapping[str, pd.DataFrame], *, where: str = ""
    ) -> pd.DataFrame:
        """Run ``query`` on DuckDB with each DataFrame in ``tables`` visible under its name."""
        con = duckdb.connect()
        try:
            con.execute("SET python_enable_replacements = false")
            for name, frame in tables.items():
                con.register(name, frame)
            try:
                return _narrow_hugeints(con.sql(query)).df()
            except duckdb.Error as exc:
                message = str(exc)
                available = ", ".join(tables) or "(none)"
                match = _MISSING_TABLE.search(message)
                if isinstance(exc, duckdb.CatalogException) and match:
                    _fail(
                        where,
                        f"SQL step refers to table '{match.group(1)}', which is not available. "
                        f"Available tables: {available}.",
                    )
                _fail(
                    where,
                    f"SQL step failed ({type(exc).__name__}: {message.strip()}) in query "
                    f"starting '{_first_line(query)}'. Fix the SQL; available tables: {available}",
                )
        finally:
            con.close()

    # --------------------------------------------------------------- summary

    @staticmethod
    def row_count(df: pd.DataFrame) -> int:
        return len(df)

    @staticmethod
    def column_schema(df: pd.DataFrame) -> list[tuple[str, str]]:
        return [(str(name), str(dtype)) for name, dtype in df.dtypes.items()]

    @staticmethod
    def null_count(df: pd.DataFrame, column: str) -> int:
        return int(df[column].isna().sum())

    @staticmethod
    def type_family(dtype: str) -> str:
        """The family (string, integer, float, boolean, datetime) of a pandas dtype name."""
        d = dtype.lower()
        if d.startswith(("int", "uint")):
            return "integer"
        if d.startswith("float"):
            return "float"
        if d.startswith("bool"):
            return "boolean"
        if d.startswith(("datetime", "date", "timestamp")):
            return "datetime"
        if d in ("object", "string", "str") or d.startswith("string"):
            return "string"
        return d

    @staticmethod
    def preview_markdown(df: pd.DataFrame, n: int = 5) -> str:
        """A markdown table of the first ``n`` rows (cells escaped for '|' and newlines)."""

        def cell(value: Any) -> str:
            text = str(value).replace("\\", "\\\\").replace("|", "\\|")
            return text.replace("\r\n", " ").replace("\n", " ").replace("\r", " ")

        columns = [cell(c) for c in df.columns]
        if not columns:
            return "_(no columns)_"
        lines = [
            "| " + " | ".join(columns) + " |",
            "| " + " | ".join("---" for _ in columns) + " |",
        ]
        for row in df.head(max(n, 0)).itertuples(index=False, name=None):
            lines.append("| " + " | ".join(cell(v) for v in row) + " |")
        return "\n".join(lines)

    # --------------------------------------------------------------- helpers

    @staticmethod
    def _check_format(fmt: str, where: str) -> None:
        if fmt not in FORMATS:
            _fail(where, f"format '{fmt}' is not supported. Use one of: {', '.join(FORMATS)}")
