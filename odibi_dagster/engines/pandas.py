"""The pandas engine: reads, writes and transforms data on one machine.

pandas / pyarrow / DuckDB / delta-rs / fsspec; no Dagster here. Every data path goes
through a :class:`~odibi_dagster.resources.base.Location`, so the same code serves local
disk and remote filesystems (adlfs). The work is split by job: one class per file format
(``pandas_files``), Delta through delta-rs (``pandas_delta``), SQL on DuckDB
(``duckdb_sql``), and swapping the new bytes in without losing the old (``replace``).

File writes are all-or-nothing: the complete result is serialized to a hidden temporary
sibling (``.<name>.tmp-<hex>``) and then moved over the target, so a failed write never
leaves a half-written file where the old one was. On local disk the move is an atomic
rename; on blob storage (adlfs) it is a server-side copy and a delete, which is not
atomic: a reader may see the old file until the copy completes. Writes of one file take
turns (the target's lock, see ``replace``), so concurrent appends all land.

The write modes mean the same for every format: ``error`` fails and ``ignore`` skips when
anything (file or directory) is at the path, which is also what :meth:`PandasEngine.exists`
reports. Delta ``overwrite``/``append`` refuse a path that holds data but no Delta table.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import pandas as pd
import pyarrow as pa

from odibi_dagster.engines.base import MergeOutcome, Profile, RowFilter, staged_beside
from odibi_dagster.engines.duckdb_sql import run_sql
from odibi_dagster.engines.globs import expand, has_glob
from odibi_dagster.engines.keyed import keyed_write
from odibi_dagster.engines.messages import (
    check_format,
    check_mode,
    fail,
    missing_input,
    write_wanted,
)
from odibi_dagster.engines.pandas_delta import read_delta, write_delta
from odibi_dagster.engines.pandas_errors import serialization_error
from odibi_dagster.engines.pandas_files import FILE_FORMATS, Parquet
from odibi_dagster.engines.pandas_keyed import (
    check_incoming,
    merge_delta,
    merge_file,
    with_delete_flag,
)
from odibi_dagster.engines.pandas_rows import filter_frame, key_summary
from odibi_dagster.engines.replace import target_lock, write_file_atomically
from odibi_dagster.errors import OdibiRunError
from odibi_dagster.resources.base import Location
from odibi_dagster.resources.local import LocalStorage
from odibi_dagster.vocabulary import KEYED_MODES

__all__ = ["PandasEngine", "engine_for"]

# Copy-on-write (pandas 3's default) makes the shallow copies handed to each consumer
# independent: a node that changes its input in place changes only its own copy.
pd.set_option("mode.copy_on_write", True)


class PandasEngine:
    """Run Odibi reads, writes and SQL steps with pandas (data must fit in memory)."""

    name = "pandas"
    frame_kind = "pandas DataFrame"
    intermediate_dir_name = "odibi"

    # ------------------------------------------------------------------ data

    def read(
        self,
        loc: Location,
        fmt: str,
        options: Mapping[str, Any] | None = None,
        *,
        where: str = "",
    ) -> pd.DataFrame:
        """Read the data at ``loc`` in format ``fmt`` into a DataFrame."""
        if fmt == "api":  # Odibi v3: a JSON API on an http connection
            from odibi_dagster.api_read import read_api

            return read_api(loc, options, where)[0]
        check_format(fmt, where)
        opts = dict(options or {})
        if fmt == "delta":
            return read_delta(loc, opts, where)
        if has_glob(loc.fs_path) and not loc.fs.exists(loc.fs_path):
            # Odibi v3: a path with wildcards reads every file it matches
            return self.read_files(expand(loc, where), fmt, opts, where=where)
        if not loc.fs.exists(loc.fs_path):
            missing_input(where, loc.uri)
        if "partition_by" in opts or "partitionBy" in opts:
            fail(where, "read option 'partition_by' is not a read option. Remove it")
        return FILE_FORMATS[fmt].read(loc, opts, where)

    def read_rows(
        self,
        loc: Location,
        fmt: str,
        options: Mapping[str, Any] | None,
        rows: RowFilter,
        *,
        where: str = "",
    ) -> pd.DataFrame:
        """What :meth:`read` reads, only the rows ``rows`` selects: a pyarrow / delta-rs
        predicate for parquet and Delta, a filter once read for csv and json."""
        check_format(fmt, where)
        opts = dict(options or {})
        if fmt == "delta":
            return read_delta(loc, opts, where, rows)
        if fmt == "parquet":
            if not loc.fs.exists(loc.fs_path):
                missing_input(where, loc.uri)
            return Parquet().read(loc, opts, where, rows)
        return filter_frame(self.read(loc, fmt, opts, where=where), rows, where, loc.uri)

    def key_summary(self, df: pd.DataFrame, rows: RowFilter) -> tuple[int, Any]:
        return key_summary(df, rows)

    def read_files(
        self,
        locs: Sequence[Location],
        fmt: str,
        options: Mapping[str, Any] | None = None,
        *,
        where: str = "",
    ) -> pd.DataFrame:
        """The files at ``locs`` read one by one and stacked, in the order given."""
        if fmt == "delta":
            fail(where, "a Delta table is read whole, not file by file")
        frames = [self.read(loc, fmt, options, where=where) for loc in locs]
        if len(frames) == 1:
            return frames[0]
        return pd.concat(frames, ignore_index=True)

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
        if mode in KEYED_MODES:
            self.merge(df, loc, fmt, mode, options, where=where)
            return True
        opts = dict(options or {})
        if fmt != "delta":
            for key in ("partition_by", "partitionBy"):
                if key in opts:
                    fail(
                        where,
                        f"write option '{key}' is supported only for format delta on the "
                        f"pandas engine, not for {fmt}. Remove it or write format delta",
                    )
        if fmt == "delta":
            # error/ignore mean the same for every format: anything at the path counts
            exists = self.exists(loc, fmt)
            if not write_wanted(exists, mode, where, loc.uri):
                return False
            return write_delta(df, loc, mode, opts, where, exists)
        # one write of a file at a time, from looking at what is there to the swap: an
        # append then adds to what the previous write left, never to a version being
        # replaced meanwhile
        with target_lock(loc.fs, loc.fs_path, uri=loc.uri, where=where) as lock:
            exists = self.exists(loc, fmt)
            if not write_wanted(exists, mode, where, loc.uri):
                return False
            writer = FILE_FORMATS[fmt].writer(df, loc, opts, where, exists and mode == "append")
            try:
                write_file_atomically(
                    loc.fs, loc.fs_path, writer, uri=loc.uri, fmt=fmt, where=where, lock=lock
                )
            except (pa.ArrowException, ValueError, TypeError) as exc:
                serialization_error(where, loc.uri, fmt, exc)
        return True

    def merge(
        self,
        df: pd.DataFrame,
        loc: Location,
        fmt: str,
        mode: str,
        options: Mapping[str, Any] | None = None,
        *,
        where: str = "",
    ) -> MergeOutcome:
        """Write ``df`` in a keyed mode (see :meth:`Engine.merge`): a delta-rs merge for
        Delta; for a file, the target read, merged and swapped in under its lock."""
        check_format(fmt, where)
        kw, opts = keyed_write(mode, fmt, options or {}, where)
        check_incoming(df, kw, where)
        df = with_delete_flag(df, kw, where)
        if fmt == "delta":
            return merge_delta(df, loc, kw, opts, where)
        if "partition_by" in opts or "partitionBy" in opts:
            fail(where, f"write option 'partition_by' is not accepted with write mode {mode}")
        read_opts: dict[str, Any] = {k: opts[k] for k in ("sep", "delimiter", "lines") if k in opts}
        with target_lock(loc.fs, loc.fs_path, uri=loc.uri, where=where) as lock:
            exists = self.exists(loc, fmt)
            read = (lambda: self.read(loc, fmt, read_opts, where=where)) if exists else None
            out, outcome = merge_file(read, df, kw, where, loc.uri)
            if out is not None:
                writer = FILE_FORMATS[fmt].writer(out, loc, opts, where, False)
                try:
                    write_file_atomically(
                        loc.fs, loc.fs_path, writer, uri=loc.uri, fmt=fmt, where=where, lock=lock
                    )
                except (pa.ArrowException, ValueError, TypeError) as exc:
                    serialization_error(where, loc.uri, fmt, exc)
        return outcome

    def exists(self, loc: Location, fmt: str) -> bool:
        """Whether anything (a file or a directory) is at ``loc``, for every format ``fmt``.

        This is the test :meth:`write` applies for modes ``error`` and ``ignore``, so
        ``exists`` true means ``error`` would fail and ``ignore`` would skip."""
        check_format(fmt, "")
        return bool(loc.fs.exists(loc.fs_path))

    def sql(
        self, query: str, tables: Mapping[str, pd.DataFrame], *, where: str = ""
    ) -> pd.DataFrame:
        """Run ``query`` on DuckDB with each DataFrame in ``tables`` visible under its name."""
        return run_sql(query, tables, where=where)

    def is_frame(self, obj: Any) -> bool:
        return isinstance(obj, pd.DataFrame)

    def from_pandas(self, df: pd.DataFrame) -> pd.DataFrame:
        return df

    # ------------------------------------------------------------------ describing

    def cheap_row_count(self, df: pd.DataFrame) -> int | None:
        return len(df)

    def profile(self, df: pd.DataFrame, null_columns: Iterable[str] = ()) -> Profile:
        by_name = {str(c): c for c in df.columns}
        nulls = {c: int(df[by_name[c]].isna().sum()) for c in null_columns if c in by_name}
        return Profile(rows=len(df), nulls=nulls)

    def column_schema(self, df: pd.DataFrame) -> list[tuple[str, str]]:
        return [(str(name), str(dtype)) for name, dtype in df.dtypes.items()]

    def type_family(self, dtype: str) -> str:
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

    def head(
        self, df: pd.DataFrame, n: int, *, written_at: Location | None = None, fmt: str = ""
    ) -> list[dict[str, Any]]:
        first = df.head(max(n, 0))
        first = first.set_axis([str(c) for c in first.columns], axis=1)  # names as in metadata
        rows: list[dict[str, Any]] = (
            first.astype(object).where(first.notna(), None).to_dict(orient="records")
        )
        return rows

    # ------------------------------------------------------------------ handing over

    def count_while_writing(
        self, df: pd.DataFrame
    ) -> tuple[pd.DataFrame, Callable[[], int | None]]:
        rows = len(df)
        return df, lambda: rows

    def after_write(self, df: pd.DataFrame, loc: Location, fmt: str, *, where: str = "") -> Any:
        return df  # already in memory: nothing to read back

    def handoff(self, df: pd.DataFrame) -> pd.DataFrame:
        # with copy-on-write, a shallow copy is the consumer's own
        return df.copy(deep=False)

    def materialize(
        self,
        df: pd.DataFrame,
        base: str,
        key: tuple[str, ...],
        null_columns: Iterable[str] = (),
        *,
        where: str = "",
    ) -> tuple[pd.DataFrame, Profile, Location | None]:
        return df, self.profile(df, null_columns), None  # computed already, in memory

    def intermediate(self, base: str, key: tuple[str, ...]) -> Location:
        parquet, _ = _intermediate_paths(base, key)
        return LocalStorage(base_path=base).location(os.path.relpath(parquet, base))

    def store_intermediate(
        self, df: pd.DataFrame, base: str, key: tuple[str, ...], *, where: str = ""
    ) -> tuple[Location, pd.DataFrame]:
        """Staged as Parquet beside ``<base>/<key...>.parquet`` (for a run's result of an
        asset: ``<base>/<asset key...>/<run id>.parquet``), or as a pickle beside
        ``.pickle`` for a frame Parquet cannot hold (columns of mixed Python objects)."""
        parquet, pickled = _intermediate_paths(base, key)
        storage = LocalStorage(base_path=base)
        staged = staged_beside(storage.location(os.path.relpath(parquet, base)))
        try:
            self.write(df, staged, "parquet", where=where)
            return staged, df
        except (OdibiRunError, pa.ArrowException, ValueError, TypeError):
            self.drop_intermediate(staged)
        staged = staged_beside(storage.location(os.path.relpath(pickled, base)))
        os.makedirs(os.path.dirname(staged.fs_path), exist_ok=True)
        with open(staged.fs_path, "wb") as f:
            pickle.dump(df, f, protocol=pickle.HIGHEST_PROTOCOL)
        return staged, df

    def keep_intermediate(
        self,
        df: pd.DataFrame,
        staged: Location,
        base: str,
        key: tuple[str, ...],
        *,
        where: str = "",
    ) -> tuple[Location, pd.DataFrame]:
        parquet, pickled = _intermediate_paths(base, key)
        kept, other = (
            (pickled, parquet) if ".pickle.staged-" in staged.fs_path else (parquet, pickled)
        )
        os.replace(staged.fs_path, kept)  # one rename: the old result until then
        if os.path.exists(other):
            os.remove(other)
        return LocalStorage(base_path=base).location(os.path.relpath(kept, base)), df

    def drop_intermediate(self, staged: Location) -> None:
        with contextlib.suppress(OSError):
            os.remove(staged.fs_path)

    def load_intermediate(self, base: str, key: tuple[str, ...], *, where: str) -> pd.DataFrame:
        parquet, pickled = _intermediate_paths(base, key)
        if os.path.exists(parquet):
            storage = LocalStorage(base_path=base)
            return self.read(storage.location(os.path.relpath(parquet, base)), "parquet")
        if os.path.exists(pickled):
            with open(pickled, "rb") as f:
                df: pd.DataFrame = pickle.load(f)
            return df
        raise OdibiRunError(
            f"{where}: no stored result yet (looked in {parquet}). Materialize this upstream "
            "node first, or run the whole pipeline job."
        )

    def stored_intermediates(self, base: str, key: tuple[str, ...]) -> dict[str, float]:
        """The files ``<name>.parquet`` / ``<name>.pickle`` (and their staged copies) in
        ``<base>/<key...>/``, by name, with their newest modification time."""
        found: dict[str, float] = {}
        try:
            entries = list(os.scandir(os.path.join(base, *key)))
        except (FileNotFoundError, NotADirectoryError):
            return found
        for entry in entries:
            name = _stored_name(entry.name)
            if name is not None and entry.is_file(follow_symlinks=False):
                found[name] = max(found.get(name, 0.0), entry.stat().st_mtime)
        return found

    def delete_intermediate(self, base: str, key: tuple[str, ...]) -> None:
        folder = os.path.join(base, *key[:-1])
        try:
            entries = list(os.scandir(folder))
        except FileNotFoundError:
            return
        for entry in entries:
            if _stored_name(entry.name) == key[-1] and entry.is_file(follow_symlinks=False):
                with contextlib.suppress(FileNotFoundError):  # deleted meanwhile: fine
                    os.remove(entry.path)


# <name>.parquet or <name>.pickle, kept, staged (<name>.parquet.staged-<hex>), or half
# written by a process that died (.<...>.tmp-<hex>, <...>.tmp-<hex> from earlier
# versions) and the lock it held (.<...>.lock)
_STORED_FILE = re.compile(
    r"^(?P<name>[^.].*)\.(?:parquet|pickle)(?:\.staged-[0-9a-f]+)?(?:\.tmp-[0-9a-f]+)?$"
    r"|^\.(?P<hidden>.+)\.(?:parquet|pickle)(?:\.staged-[0-9a-f]+)?(?:\.tmp-[0-9a-f]+|\.lock)$"
)


def _stored_name(filename: str) -> str | None:
    """The ``<name>`` a stored result's file (or a leftover of one) belongs to."""
    match = _STORED_FILE.match(filename)
    return None if match is None else match["name"] or match["hidden"]


def _intermediate_paths(base: str, key: tuple[str, ...]) -> tuple[str, str]:
    stem = os.path.join(base, *key)
    return stem + ".parquet", stem + ".pickle"


def engine_for(resources: Any = None) -> PandasEngine:
    """The pandas engine (it needs nothing from the step's resources)."""
    return PandasEngine()
