"""CSV, JSON and Parquet on pandas: one small class per format, each saying how to read
and how to serialize (including appending to what is there). ``FILE_FORMATS`` is the table
the engine dispatches on; the bytes are swapped in by ``engines.replace``."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from typing import IO, Any

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
from pyarrow.fs import FSSpecHandler, PyFileSystem, SubTreeFileSystem

from odibi_dagster.engines.base import RowFilter
from odibi_dagster.engines.messages import (
    column_mismatch,
    fail,
    require_same_columns,
    truthy,
)
from odibi_dagster.engines.pandas_errors import kwarg_error, serialize, to_arrow
from odibi_dagster.engines.pandas_rows import arrow_predicate, filter_frame, missing_columns
from odibi_dagster.errors import first_line
from odibi_dagster.resources.base import Location
from odibi_dagster.resources.connection import hidden_or_temporary

_COMPRESSED_SUFFIXES = {
    ".gz": "gzip",
    ".bz2": "bz2",
    ".zip": "zip",
    ".xz": "xz",
    ".zst": "zstd",
    ".tar": "tar",
}

Writer = Callable[[IO[bytes]], None]


def _compression_from_suffix(path: str) -> str | None:
    lowered = path.lower()
    for suffix, compression in _COMPRESSED_SUFFIXES.items():
        if lowered.endswith(suffix):
            return compression
    return None


def _copy_existing(loc: Location, handle: IO[bytes]) -> None:
    """Copy the bytes now at ``loc`` into ``handle``, ending them with a newline if needed."""
    last = b""
    with loc.fs.open(loc.fs_path, "rb") as old:
        while chunk := old.read(1 << 20):
            handle.write(chunk)
            last = chunk[-1:]
    if last not in (b"", b"\n"):  # a trailing "\r" becomes "\r\n": still one line end
        handle.write(b"\n")


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

        serialize(where, f"pandas.DataFrame.{method}", loc.uri, opts, kwargs, defaults, call)

    return write


def _refuse_appending_to_a_directory(loc: Location, fmt: str, where: str) -> None:
    if loc.fs.isdir(loc.fs_path):
        fail(
            where,
            f"cannot append {fmt} to '{loc.uri}': it is a directory of part files. "
            "Use mode overwrite, or write format parquet or delta",
        )


def files_under(loc: Location) -> list[str]:
    """The data files under the directory at ``loc``, sorted: like Spark and pyarrow it
    skips hidden names (_delta_log, _SUCCESS, .crc, locks), and also temporaries being
    written or left by a writer that died (``*.tmp-*``, delta-rs' ``*#<n>``, ...)."""
    files: list[str] = []
    for dirpath, dirnames, filenames in loc.fs.walk(loc.fs_path, topdown=True):
        dirnames[:] = [d for d in dirnames if not hidden_or_temporary(d)]
        for filename in filenames:
            if not hidden_or_temporary(filename) and not filename.endswith(".crc"):
                files.append(f"{str(dirpath).rstrip('/')}/{filename}")
    return sorted(files)


def data_files(loc: Location, where: str) -> list[str]:
    """The file itself, or the data files of a directory written by Spark."""
    if not loc.fs.isdir(loc.fs_path):
        return [loc.fs_path]
    files = files_under(loc)
    if not files:
        fail(
            where,
            f"input path '{loc.uri}' is a directory with no data files. "
            "Point the node at a file or at a directory of part files",
        )
    return files


def read_text(loc: Location, opts: dict[str, Any], where: str, fmt: str) -> pd.DataFrame:
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
    for path in data_files(loc, where):
        kwargs = dict(opts)
        if "compression" not in kwargs:
            compression = _compression_from_suffix(path)
            if compression:
                kwargs["compression"] = compression
        try:
            with loc.fs.open(path, "rb") as handle:
                frames.append(func(handle, **kwargs))
        except TypeError as exc:
            kwarg_error(where, exc, "read", func_name, loc.uri, opts)
        except (ValueError, pa.ArrowException) as exc:
            fail(
                where,
                f"could not read {fmt} from '{loc.uri}' ({type(exc).__name__}: "
                f"{first_line(exc)}). Check that the file is {fmt} and that the "
                "read options match it",
            )
    if len(frames) == 1:
        return frames[0]
    return pd.concat(frames, ignore_index=True)


class FileFormat:
    """How pandas reads one file format, and serializes a DataFrame to it."""

    name = ""

    def read(self, loc: Location, opts: dict[str, Any], where: str) -> pd.DataFrame:
        raise NotImplementedError

    def writer(
        self, df: pd.DataFrame, loc: Location, opts: dict[str, Any], where: str, append: bool
    ) -> Writer:
        """What writes the new bytes (the old ones first when ``append``); bad options
        and bad data are reported before the target is touched."""
        raise NotImplementedError


class Csv(FileFormat):
    name = "csv"

    def read(self, loc: Location, opts: dict[str, Any], where: str) -> pd.DataFrame:
        return read_text(loc, opts, where, "csv")

    def writer(
        self,
        df: pd.DataFrame,
        loc: Location,
        opts: dict[str, Any],
        where: str,
        append: bool,
    ) -> Writer:
        defaults: dict[str, Any] = {"index": False}
        kwargs: dict[str, Any] = {**defaults, **opts}
        if "compression" not in kwargs:
            compression = _compression_from_suffix(loc.fs_path)
            if compression:
                kwargs["compression"] = compression
        existing_size = 0
        if append:
            _refuse_appending_to_a_directory(loc, "csv", where)
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
                require_same_columns(where, loc.uri, first, new_cols)
                df = df[[df.columns[new_cols.index(c)] for c in first]]
            elif len(first) != len(new_cols):
                column_mismatch(where, loc.uri, [f"<{len(first)} unnamed columns>"], new_cols)
        return _frame_writer(
            loc, df, append and existing_size > 0, "to_csv", where, opts, kwargs, defaults
        )


class Json(FileFormat):
    name = "json"

    def read(self, loc: Location, opts: dict[str, Any], where: str) -> pd.DataFrame:
        return read_text(loc, opts, where, "json")

    def writer(
        self,
        df: pd.DataFrame,
        loc: Location,
        opts: dict[str, Any],
        where: str,
        append: bool,
    ) -> Writer:
        defaults: dict[str, Any] = {"orient": "records", "lines": True, "date_format": "iso"}
        kwargs: dict[str, Any] = {**defaults, **opts}
        lines = truthy(kwargs["lines"])
        combined = df
        prefix_existing = False
        if append:
            _refuse_appending_to_a_directory(loc, "json", where)
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
                        f"as json ({type(exc).__name__}: {first_line(exc)}). "
                        "Use mode overwrite, or fix the file",
                    )
                old_cols = [str(c) for c in existing.columns]
                new_cols = [str(c) for c in df.columns]
                if len(existing):
                    require_same_columns(where, loc.uri, old_cols, new_cols)
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


class Parquet(FileFormat):
    name = "parquet"

    def read(
        self, loc: Location, opts: dict[str, Any], where: str, rows: RowFilter | None = None
    ) -> pd.DataFrame:
        source: str | list[str] = loc.fs_path
        filesystem: Any = loc.fs
        if loc.fs.isdir(loc.fs_path):
            files = files_under(loc)
            root = loc.fs_path.rstrip("/") + "/"
            if files and all(f.startswith(root) for f in files):
                # the data files only (no temporaries), named from the directory so that
                # partition columns come from the folders under it alone
                source = [f[len(root) :] for f in files]
                filesystem = SubTreeFileSystem(root, PyFileSystem(FSSpecHandler(loc.fs)))
        after: RowFilter | None = None  # a filter the scan cannot apply: once read
        if rows is not None:
            # an incremental read: a predicate of the scan, so row groups whose min/max
            # statistics rule the rows out are skipped
            try:
                schema = pads.dataset(
                    source, filesystem=filesystem, format="parquet", partitioning="hive"
                ).schema
            except (pa.ArrowException, ValueError, OSError) as exc:
                fail(
                    where,
                    f"could not read parquet from '{loc.uri}' ({type(exc).__name__}: "
                    f"{first_line(exc)}). Check that the path holds parquet files",
                )
            missing_columns(list(schema.names), rows, where, loc.uri)
            predicate = arrow_predicate(schema, rows, where)
            if predicate is None:
                after = rows
            else:
                given = opts.get("filters")
                if given is not None:
                    predicate = pq.filters_to_expression(given) & predicate
                opts = {**opts, "filters": predicate}
        try:
            table = pq.read_table(source, filesystem=filesystem, **opts)
        except TypeError as exc:
            kwarg_error(where, exc, "read", "pyarrow.parquet.read_table", loc.uri, opts)
        except (pa.ArrowException, ValueError, OSError) as exc:
            fail(
                where,
                f"could not read parquet from '{loc.uri}' ({type(exc).__name__}: "
                f"{first_line(exc)}). Check that the path holds parquet files",
            )
        df = table.to_pandas()
        return df if after is None else filter_frame(df, after, where, loc.uri)

    def writer(
        self,
        df: pd.DataFrame,
        loc: Location,
        opts: dict[str, Any],
        where: str,
        append: bool,
    ) -> Writer:
        for key in ("index", "engine"):
            opts.pop(key, None)  # always pyarrow, never the index
        table = to_arrow(df, where, loc.uri, "parquet")
        if append:
            try:
                existing = pq.read_table(loc.fs_path, filesystem=loc.fs)
            except (pa.ArrowException, OSError, ValueError) as exc:
                fail(
                    where,
                    f"cannot append to '{loc.uri}': its current content could not be read as "
                    f"parquet ({type(exc).__name__}: {first_line(exc)}). "
                    "Use mode overwrite, or fix the file",
                )
            old_cols, new_cols = existing.column_names, table.column_names
            require_same_columns(where, loc.uri, old_cols, new_cols)
            try:
                table = pa.concat_tables(
                    [existing, table.select(old_cols)], promote_options="permissive"
                )
            except (pa.ArrowException, TypeError, ValueError) as exc:
                fail(
                    where,
                    f"cannot append to '{loc.uri}': the new column types do not match the "
                    f"existing ones ({type(exc).__name__}: {first_line(exc)}). "
                    "The target was left unchanged. Cast the columns to the existing types, "
                    "or use mode overwrite",
                )
        final, sample = table, table.slice(0, 1)

        def write(handle: IO[bytes]) -> None:
            def call(kw: dict[str, Any], probe: bool) -> None:
                pq.write_table(sample if probe else final, io.BytesIO() if probe else handle, **kw)

            serialize(where, "pyarrow.parquet.write_table", loc.uri, opts, opts, {}, call)

        return write


# format name -> how to read and write it (Delta, a table rather than a file, is in
# engines/pandas_delta.py)
FILE_FORMATS: dict[str, FileFormat] = {f.name: f for f in (Csv(), Json(), Parquet())}
