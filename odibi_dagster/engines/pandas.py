"""The pandas engine: reads, writes and transforms data on one machine.

Pure pandas / pyarrow / DuckDB / delta-rs / fsspec; no Dagster here. Every data path goes
through a :class:`~odibi_dagster.resources.base.Location`, so the same code serves local
disk and remote filesystems (e.g. adlfs). User-fixable problems raise
:class:`~odibi_dagster.errors.OdibiRunError` as ``<where>: <what was wrong>. <what to do>``.

File writes are all-or-nothing: the complete result is serialized to a temporary sibling
(``<name>.tmp-<hex>``) and then moved over the target, so a failed write never leaves a
half-written file where the old one was. On local disk the move is an atomic rename; on
blob storage (adlfs) it is a server-side copy and a delete, which is not atomic: a reader
may see the old file until the copy completes. A directory at the target is replaced only when it
is a plain directory of part files: it is moved aside to ``<name>.old-<hex>``, the new file
is moved in, and only then is the old directory deleted (or moved back if the move failed).

The write modes mean the same for every format: ``error`` fails and ``ignore`` skips when
anything (file or directory) is at the path, which is also what :meth:`PandasEngine.exists`
reports. Delta ``overwrite``/``append`` refuse a path that holds data but no Delta table.
"""

from __future__ import annotations

import csv
import io
import re
import uuid
import warnings
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from typing import IO, Any, NoReturn

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from deltalake import DeltaTable, write_deltalake
from deltalake.exceptions import DeltaError, SchemaMismatchError

from odibi_dagster.engines.common import (
    check_format,
    check_mode,
    delta_table_in_the_way,
    exists_error,
    fail,
    markdown_table,
    missing_input,
    not_a_delta_table,
    subdirectories_in_the_way,
)
from odibi_dagster.errors import redact
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
        fail(
            where,
            f"{kind} option '{match.group(1)}' is not accepted by {func} "
            f"(TypeError: {_first_line(str(exc))}). Remove it or use a {func} argument",
        )
    names = ", ".join(sorted(options)) or "(none)"
    fail(
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
    fail(
        where,
        f"could not write {fmt} to '{uri}': {what}could not be serialized "
        f"({type(exc).__name__}: {_first_line(str(exc))}). The target was left unchanged. {todo}",
    )


def _column_mismatch(where: str, uri: str, existing: list[str], new: list[str]) -> NoReturn:
    fail(
        where,
        f"cannot append to '{uri}': its columns {existing} differ from the new data's "
        f"columns {new}. The target was left unchanged. Select the same columns before "
        "writing, or use mode overwrite",
    )


def _require_same_columns(where: str, uri: str, existing: list[str], new: list[str]) -> None:
    """Fail unless ``new`` holds the same column names as ``existing`` (in any order)."""
    if sorted(existing) != sorted(new):
        _column_mismatch(where, uri, existing, new)


def _copy_existing(loc: Location, handle: IO[bytes]) -> None:
    """Copy the bytes now at ``loc`` into ``handle``, ending them with a newline if needed."""
    last = b""
    with loc.fs.open(loc.fs_path, "rb") as old:
        while chunk := old.read(1 << 20):
            handle.write(chunk)
            last = chunk[-1:]
    if last not in (b"", b"\n"):  # a trailing "\r" becomes "\r\n": still one line end
        handle.write(b"\n")


def _redact(text: str, loc: Location) -> str:
    """``text`` with the storage option values (credentials, maybe) replaced by ``***``."""
    return redact(text, loc.storage_options, loc.uri)


def _delta_detail(loc: Location, exc: BaseException) -> str:
    """``<ExceptionType>: <first line>`` of a delta-rs error, storage option values redacted."""
    return f"{type(exc).__name__}: {_redact(_first_line(str(exc)), loc)}"


def _to_arrow(df: pd.DataFrame, where: str, uri: str, fmt: str) -> pa.Table:
    try:
        return pa.Table.from_pandas(df, preserve_index=False)
    except (pa.ArrowException, TypeError, ValueError) as exc:
        _serialization_error(where, uri, fmt, exc)


def _is_delta(loc: Location, where: str) -> bool:
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
            f"could not open Delta table '{loc.uri}' ({_delta_detail(loc, exc)}). "
            "Check the connection's storage options and the path",
        )


def _is_empty_dir(loc: Location) -> bool:
    fs = loc.fs
    return bool(fs.isdir(loc.fs_path)) and not fs.ls(loc.fs_path, detail=False)


_OPTION_ERRORS = (TypeError, ValueError, AttributeError, LookupError, pa.ArrowException)


def _serialize(
    where: str,
    func: str,
    uri: str,
    opts: Mapping[str, Any],
    kwargs: dict[str, Any],
    defaults: Mapping[str, Any],
    call: Callable[[dict[str, Any], bool], None],
) -> None:
    """Run ``call(kwargs, False)``, which serializes the data with ``kwargs`` (the engine's
    ``defaults`` overridden by the user's write options ``opts``); blame a bad option by name.

    On failure, ``call(kw, True)`` serializes a one-row sample to a scratch buffer: when the
    sample fails with the user's options and succeeds without them (engine defaults only),
    an option is at fault and each is tried alone to name it. Otherwise the data is at
    fault and the exception propagates (the caller reports data that could not be
    serialized).
    """
    try:
        call(kwargs, False)
    except UnicodeError:
        raise  # data the chosen encoding cannot hold: reported as a data error
    except _OPTION_ERRORS as exc:
        if isinstance(exc, TypeError) and _UNEXPECTED_KWARG.search(str(exc)):
            _kwarg_error(where, exc, "write", func, uri, opts)
        given = [k for k in kwargs if k in opts]

        def sample_ok(keep: set[str]) -> bool:
            trial = {k: v for k, v in kwargs.items() if k not in opts or k in keep}
            trial.update({k: v for k, v in defaults.items() if k in opts and k not in keep})
            try:
                call(trial, True)
            except Exception:
                return False
            return True

        if not given or sample_ok(set(given)) or not sample_ok(set()):
            raise
        culprits = [k for k in given if not sample_ok({k})] or given
        names = ", ".join(f"'{k}'" for k in culprits)
        plural = len(culprits) > 1
        fail(
            where,
            f"write option{'s' if plural else ''} {names} {'are' if plural else 'is'} not "
            f"valid for {func} ({type(exc).__name__}: {_first_line(str(exc))}). The target "
            f"was left unchanged. Fix the option value{'s' if plural else ''} or remove "
            f"{'them' if plural else 'it'}",
        )


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


def _frame_writer(
    loc: Location,
    frame: pd.DataFrame,
    prefix_existing: bool,
    method: str,
    where: str,
    opts: dict[str, Any],
    kwargs: dict[str, Any],
    defaults: dict[str, Any],
) -> Callable[[IO[bytes]], None]:
    """A writer for a text format: the old bytes first (when appending to them), then
    ``frame.<method>(handle, **kwargs)``; bad options are told apart from bad data."""
    sample = frame.head(1)

    def write(handle: IO[bytes]) -> None:
        if prefix_existing:
            _copy_existing(loc, handle)

        def call(kw: dict[str, Any], probe: bool) -> None:
            target = io.BytesIO() if probe else handle
            getattr(sample if probe else frame, method)(target, **kw)

        _serialize(where, f"pandas.DataFrame.{method}", loc.uri, opts, kwargs, defaults, call)

    return write


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
        check_format(fmt, where)
        opts = dict(options or {})
        if fmt == "delta":
            return self._read_delta(loc, opts, where)
        if not loc.fs.exists(loc.fs_path):
            missing_input(where, loc.uri)
        if "partition_by" in opts or "partitionBy" in opts:
            fail(where, "read option 'partition_by' is not a read option. Remove it")
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
            fail(
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
                fail(
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
            fail(
                where,
                f"could not read parquet from '{loc.uri}' ({type(exc).__name__}: "
                f"{_first_line(str(exc))}). Check that the path holds parquet files",
            )
        return table.to_pandas()

    def _read_delta(self, loc: Location, opts: dict[str, Any], where: str) -> pd.DataFrame:
        unknown = sorted(set(opts) - set(_DELTA_READ_OPTIONS))
        if unknown:
            fail(
                where,
                f"read option '{unknown[0]}' is not accepted for delta on pandas. "
                f"Remove it or use one of: {', '.join(_DELTA_READ_OPTIONS)}",
            )
        if "versionAsOf" in opts and "timestampAsOf" in opts:
            fail(where, "read options versionAsOf and timestampAsOf cannot both be set. Keep one")
        storage_options = loc.storage_options or None
        if not _is_delta(loc, where):
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
                table.load_as_version(self._timestamp(opts["timestampAsOf"], where))
            return table.to_pandas(columns=opts.get("columns"), filters=opts.get("filters"))
        except DeltaError as exc:
            travel = ""
            if "versionAsOf" in opts:
                travel = f" at versionAsOf={opts['versionAsOf']}"
            elif "timestampAsOf" in opts:
                travel = f" at timestampAsOf={opts['timestampAsOf']}"
            fail(
                where,
                f"could not read Delta table '{loc.uri}'{travel} ({_delta_detail(loc, exc)}). "
                "Check the table version/timestamp and options",
            )
        except (pa.ArrowException, ValueError, TypeError) as exc:
            fail(
                where,
                f"could not read Delta table '{loc.uri}' ({_delta_detail(loc, exc)}). "
                "Check the columns/filters read options",
            )

    @staticmethod
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
        check_format(fmt, where)
        check_mode(mode, where)
        opts = dict(options or {})
        if fmt != "delta":
            for key in ("partition_by", "partitionBy"):
                if key in opts:
                    fail(
                        where,
                        f"write option '{key}' is supported only for format delta on the "
                        f"pandas engine, not for {fmt}. Remove it or write format delta",
                    )
        # error/ignore mean the same for every format: anything at the path counts
        exists = bool(loc.fs.exists(loc.fs_path))
        if exists and mode == "error":
            exists_error(where, loc.uri)
        if exists and mode == "ignore":
            return False
        if fmt == "delta":
            return self._write_delta(df, loc, mode, opts, where, exists)
        append = exists and mode == "append"
        if fmt == "csv":
            writer = self._csv_writer(df, loc, opts, where, append)
        elif fmt == "json":
            writer = self._json_writer(df, loc, opts, where, append)
        else:
            writer = self._parquet_writer(df, loc, opts, where, append)
        self._atomic_write(loc, fmt, writer, where)
        return True

    def _atomic_write(
        self, loc: Location, fmt: str, writer: Callable[[IO[bytes]], None], where: str
    ) -> None:
        """Serialize everything to a temporary sibling, then move it over the target."""
        fs = loc.fs
        self._replaceable_dir(loc, fmt, where)  # refuse a table/folder before any work
        parent, _ = _split(loc.fs_path)
        if parent:
            fs.makedirs(parent, exist_ok=True)
        # A sibling of the target: same directory, so the final move is a rename.
        tmp = f"{loc.fs_path.rstrip('/').rstrip(chr(92))}.tmp-{uuid.uuid4().hex}"
        try:
            with fs.open(tmp, "wb") as handle:
                writer(handle)
            if self._replaceable_dir(loc, fmt, where):
                self._replace_dir(loc, tmp, where)
            else:
                fs.mv(tmp, loc.fs_path)
        except BaseException as exc:
            self._remove_quietly(loc, tmp)
            if isinstance(exc, (pa.ArrowException, ValueError, TypeError)):
                _serialization_error(where, loc.uri, fmt, exc)
            raise

    @staticmethod
    def _replaceable_dir(loc: Location, fmt: str, where: str) -> bool:
        """Whether a directory is at ``loc``; fail unless it is a plain directory of part files
        (no ``_delta_log``, no subdirectories), the only kind a file write may replace."""
        fs = loc.fs
        if not fs.isdir(loc.fs_path):
            return False
        entries = fs.ls(loc.fs_path, detail=True)
        names = {_split(str(e["name"]))[1]: e.get("type") for e in entries}
        if "_delta_log" in names:
            delta_table_in_the_way(where, loc.uri, fmt)
        subdirs = sorted(name for name, kind in names.items() if kind == "directory")
        if subdirs:
            subdirectories_in_the_way(where, loc.uri, fmt, subdirs)
        return True

    @staticmethod
    def _replace_dir(loc: Location, tmp: str, where: str) -> None:
        """Replace the directory at ``loc`` by the file ``tmp``: move the directory aside,
        move the file in (moving the directory back if that fails), then delete it."""
        fs = loc.fs
        old = f"{loc.fs_path.rstrip('/').rstrip(chr(92))}.old-{uuid.uuid4().hex}"
        fs.mv(loc.fs_path, old, recursive=True)
        try:
            fs.mv(tmp, loc.fs_path)
        except BaseException as exc:
            try:
                fs.mv(old, loc.fs_path, recursive=True)
            except Exception as restore_exc:
                fail(
                    where,
                    f"could not replace the directory '{loc.uri}' ({type(exc).__name__}: "
                    f"{_first_line(str(exc))}) nor move it back ({type(restore_exc).__name__}: "
                    f"{_first_line(str(restore_exc))}). Its previous content is at '{old}'; "
                    "move it back by hand",
                )
            raise
        try:
            fs.rm(old, recursive=True)
        except Exception as exc:  # the new data is in place; only clutter is left
            warnings.warn(
                f"wrote '{loc.uri}' but could not delete the directory it replaced, now at "
                f"'{old}' ({type(exc).__name__}: {_first_line(str(exc))}). Delete it by hand",
                stacklevel=2,
            )

    @staticmethod
    def _remove_quietly(loc: Location, path: str) -> None:
        try:
            if loc.fs.exists(path):
                loc.fs.rm(path)
        except Exception:
            pass

    def _csv_writer(
        self,
        df: pd.DataFrame,
        loc: Location,
        opts: dict[str, Any],
        where: str,
        append: bool,
    ) -> Callable[[IO[bytes]], None]:
        defaults: dict[str, Any] = {"index": False}
        kwargs: dict[str, Any] = {**defaults, **opts}
        if "compression" not in kwargs:
            compression = _compression_from_suffix(loc.fs_path)
            if compression:
                kwargs["compression"] = compression
        existing_size = 0
        if append:
            if loc.fs.isdir(loc.fs_path):
                fail(
                    where,
                    f"cannot append csv to '{loc.uri}': it is a directory of part files. "
                    "Use mode overwrite, or write format parquet or delta",
                )
            existing_size = int(loc.fs.info(loc.fs_path).get("size") or 0)
        if append and existing_size > 0:
            if kwargs.get("compression") not in (None, "infer"):
                fail(
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
                _require_same_columns(where, loc.uri, first, new_cols)
                df = df[[df.columns[new_cols.index(c)] for c in first]]
            elif len(first) != len(new_cols):
                _column_mismatch(where, loc.uri, [f"<{len(first)} unnamed columns>"], new_cols)
        return _frame_writer(
            loc, df, append and existing_size > 0, "to_csv", where, opts, kwargs, defaults
        )

    def _json_writer(
        self,
        df: pd.DataFrame,
        loc: Location,
        opts: dict[str, Any],
        where: str,
        append: bool,
    ) -> Callable[[IO[bytes]], None]:
        defaults: dict[str, Any] = {"orient": "records", "lines": True, "date_format": "iso"}
        kwargs: dict[str, Any] = {**defaults, **opts}
        lines = _truthy(kwargs["lines"])
        combined = df
        prefix_existing = False
        if append:
            if loc.fs.isdir(loc.fs_path):
                fail(
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
                    fail(
                        where,
                        f"cannot append to '{loc.uri}': its current content could not be read "
                        f"as json ({type(exc).__name__}: {_first_line(str(exc))}). "
                        "Use mode overwrite, or fix the file",
                    )
                old_cols = [str(c) for c in existing.columns]
                new_cols = [str(c) for c in df.columns]
                if len(existing):
                    _require_same_columns(where, loc.uri, old_cols, new_cols)
                if lines and not (compression and compression != "infer"):
                    prefix_existing = True  # keep the old bytes exactly; add new lines
                elif len(existing):
                    reordered = df[[df.columns[new_cols.index(c)] for c in old_cols]]
                    reordered.columns = existing.columns
                    combined = pd.concat([existing, reordered], ignore_index=True)

        # pandas writes NaN and infinities as null, so the output stays valid JSON
        return _frame_writer(
            loc, combined, prefix_existing, "to_json", where, opts, kwargs, defaults
        )

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
                fail(
                    where,
                    f"cannot append to '{loc.uri}': its current content could not be read as "
                    f"parquet ({type(exc).__name__}: {_first_line(str(exc))}). "
                    "Use mode overwrite, or fix the file",
                )
            old_cols, new_cols = existing.column_names, table.column_names
            _require_same_columns(where, loc.uri, old_cols, new_cols)
            try:
                table = pa.concat_tables(
                    [existing, table.select(old_cols)], promote_options="permissive"
                )
            except (pa.ArrowException, TypeError, ValueError) as exc:
                fail(
                    where,
                    f"cannot append to '{loc.uri}': the new column types do not match the "
                    f"existing ones ({type(exc).__name__}: {_first_line(str(exc))}). "
                    "The target was left unchanged. Cast the columns to the existing types, "
                    "or use mode overwrite",
                )
        final, sample = table, table.slice(0, 1)

        def write(handle: IO[bytes]) -> None:
            def call(kw: dict[str, Any], probe: bool) -> None:
                pq.write_table(sample if probe else final, io.BytesIO() if probe else handle, **kw)

            _serialize(where, "pyarrow.parquet.write_table", loc.uri, opts, opts, {}, call)

        return write

    def _write_delta(
        self,
        df: pd.DataFrame,
        loc: Location,
        mode: str,
        opts: dict[str, Any],
        where: str,
        occupied: bool,
    ) -> bool:
        unknown = sorted(set(opts) - set(_DELTA_WRITE_OPTIONS))
        if unknown:
            fail(
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
            fail(
                where,
                f"write option schema_mode must be 'merge' or 'overwrite', got {schema_mode!r}. "
                "Fix the value",
            )
        if partition_by is not None and (
            not isinstance(partition_by, (list, tuple))
            or any(str(c) not in map(str, df.columns) for c in partition_by)
        ):
            fail(
                where,
                f"write option partition_by {partition_by!r} must list columns of the data "
                f"(columns: {[str(c) for c in df.columns]}). Fix the column names",
            )
        is_table = occupied and _is_delta(loc, where)
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
                    f"({_delta_detail(loc, exc)}). Check the table and the storage options",
                )
            _require_same_columns(where, loc.uri, old_cols, [str(c) for c in df.columns])
        table = _to_arrow(df, where, loc.uri, "delta")
        extra: dict[str, Any] = {
            k: opts[k]
            for k in ("target_file_size", "name", "description", "configuration")
            if k in opts
        }
        predicate = opts.get("predicate", opts.get("replaceWhere"))
        if predicate is not None:
            if mode != "overwrite":
                fail(
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
            fail(
                where,
                f"cannot write to Delta table '{loc.uri}': the data's schema does not match the "
                f"table's ({_redact(_first_line(str(exc)), loc)}). Use option mergeSchema: "
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
                f"could not write Delta table '{loc.uri}' ({_delta_detail(loc, exc)}). {hint}",
            )
        return True

    # ---------------------------------------------------------------- exists

    def exists(self, loc: Location, fmt: str) -> bool:
        """Whether anything (a file or a directory) is at ``loc``, for every format ``fmt``.

        This is the test :meth:`write` applies for modes ``error`` and ``ignore``, so
        ``exists`` true means ``error`` would fail and ``ignore`` would skip."""
        check_format(fmt, "")
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
                    fail(
                        where,
                        f"SQL step refers to table '{match.group(1)}', which is not available. "
                        f"Available tables: {available}.",
                    )
                fail(
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
    def is_frame(obj: Any) -> bool:
        """Whether ``obj`` is a DataFrame of this engine (what a step must return)."""
        return isinstance(obj, pd.DataFrame)

    @staticmethod
    def null_count(df: pd.DataFrame, column: Any) -> int:
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
        return markdown_table(df.columns, df.head(max(n, 0)).itertuples(index=False, name=None))
