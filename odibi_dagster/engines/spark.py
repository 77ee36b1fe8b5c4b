"""The Spark engine: reads, writes and transforms data where Spark runs (locally or Databricks).

Native ``spark.read`` / ``DataFrame.write`` for parquet, csv, json and delta, on local
paths and ``abfss://`` URIs; SQL steps through ``spark.sql`` over temp views named after
the nodes. Nothing here collects a table to the driver: the only rows that reach the
driver are previews and story samples (the first rows of what was written, or
``limit(n)``) and one-row aggregates (row and null counts, mostly observed during a
write rather than computed by a job of their own).

CSV and JSON read the way the pandas engine reads them, so one YAML gives one answer:
CSV has a header row and typed columns unless the options say otherwise (numbers are
inferred; dates and timestamps stay text, as on pandas, unless ``preferDate: true``),
pandas' ``dtype`` option is honoured, and JSON is one object per line. Write modes mean
what they mean on pandas: ``error`` fails and ``ignore`` skips when anything is at the
path.

Over Spark Connect (``spark: {remote: sc://...}``) the same code runs on the remote
session; what needs a filesystem (moving a finished write into place, locks, listing
stored results) is done on the client through the connection's fsspec filesystem
instead of Hadoop's (see ``engines.connect_fs``).
"""

from __future__ import annotations

import contextlib
import decimal
import logging
import os
import posixpath
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NoReturn
from urllib.parse import unquote

import pandas as pd

from odibi_dagster.engines.base import MergeOutcome, Profile, RowFilter, staged_beside
from odibi_dagster.engines.connect_fs import ClientMover, client_reaches
from odibi_dagster.engines.delta_options import check_delta_read_options, delta_write_options
from odibi_dagster.engines.keyed import keyed_write
from odibi_dagster.engines.messages import (
    check_format,
    check_mode,
    column_list,
    fail,
    missing_input,
    not_a_delta_table,
    require_same_columns,
    truthy,
    write_wanted,
)
from odibi_dagster.engines.pandas_rows import is_time, missing_columns, pd_date, utc_naive
from odibi_dagster.engines.replace import (
    Mover,
    TargetLock,
    check_replaceable,
    delete_quietly,
    hadoop_mover,
    sibling,
    swap_in,
    target_lock,
)
from odibi_dagster.errors import OdibiRunError, first_line, redact
from odibi_dagster.resources.base import Location
from odibi_dagster.resources.spark import SPARK_RESOURCE_KEY
from odibi_dagster.vocabulary import KEYED_MODES

__all__ = ["SparkEngine", "engine_for", "session_for"]

_log = logging.getLogger(__name__)
# pandas dtype names (the pandas engine's ``dtype`` read option) -> Spark SQL types
_PANDAS_TYPES = {
    "str": "string",
    "string": "string",
    "object": "string",
    "int": "bigint",
    "int64": "bigint",
    "int32": "int",
    "float": "double",
    "float64": "double",
    "float32": "float",
    "bool": "boolean",
    "boolean": "boolean",
    "datetime64[ns]": "timestamp",
    "datetime64[us]": "timestamp",
}
_ERROR_CLASS = re.compile(r"^\[([A-Z_.]+)\]\s*")
_MISSING_VIEW = re.compile(r"The table or view `?([^`\s]+?)`? cannot be found")
# what a stored result's directory name may end with: staged, or left over by a swap
# (whose names are hidden: .<name>.tmp-<hex>; <name>.tmp-<hex> from earlier versions)
_STORED_DIR = re.compile(r"(?:\.(?:staged|tmp|old)-[0-9a-f]+)+$")


def _stored_dir_name(dirname: str) -> str:
    """The ``<name>`` of a stored result's directory, or of a leftover of one."""
    name = _STORED_DIR.sub("", dirname)
    return name[1:] if name != dirname and name.startswith(".") else name


def first_message(exc: BaseException) -> str:
    """The first meaningful line of a Spark error, without the JVM stack."""
    text = getattr(exc, "getMessage", None)
    raw = ""
    if callable(text):
        try:
            raw = str(text())
        except Exception:
            raw = ""
    lines = [
        line
        for line in (raw or str(exc)).splitlines()
        if not line.strip().startswith(("at ", "JVM stacktrace", "=="))
    ]
    return (
        first_line("\n".join(lines))[:600]
        if any(ln.strip() for ln in lines)
        else type(exc).__name__
    )


def _error_class(exc: BaseException) -> str:
    get = getattr(exc, "getCondition", None) or getattr(exc, "getErrorClass", None)
    if callable(get):
        try:
            return str(get() or "")
        except Exception:
            pass
    m = _ERROR_CLASS.match(first_message(exc))
    return m.group(1) if m else ""


def _spark_errors() -> tuple[type[BaseException], ...]:
    from py4j.protocol import Py4JJavaError
    from pyspark.errors import PySparkException

    return (PySparkException, Py4JJavaError)


def _as_option(value: Any) -> Any:
    """Spark option values: booleans as 'true'/'false', lists comma-joined."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return value


def _functions(connect: bool) -> Any:
    """``pyspark.sql.functions`` for the session's kind: PySpark picks the Spark Connect
    ones only in a process marked as Connect-only, and this one may hold both kinds."""
    if connect:
        from pyspark.sql.connect import functions as connect_functions

        return connect_functions
    from pyspark.sql import functions

    return functions


def _observation(connect: bool) -> Any:
    """A new Observation for the session's kind (see :func:`_functions`)."""
    if connect:
        from pyspark.sql.connect.observation import Observation as ConnectObservation

        return ConnectObservation()
    from pyspark.sql import Observation

    return Observation()


def _profile_columns(columns: list[str], connect: bool = False) -> list[Any]:
    """Aggregations for a profile: the row count, and the nulls of each column."""
    F = _functions(connect)
    aggs = [F.count(F.lit(1)).alias("rows")]
    aggs += [
        F.sum(F.when(F.col(f"`{c}`").isNull(), 1).otherwise(0)).alias(f"n{i}")
        for i, c in enumerate(columns)
    ]
    return aggs


def _profile_of(values: Any, columns: list[str]) -> Profile:
    """The Profile of the values of :func:`_profile_columns` (a Row, or an Observation's dict)."""
    return Profile(
        rows=int(values["rows"] or 0),
        nulls={c: int(values[f"n{i}"] or 0) for i, c in enumerate(columns)},
    )


def _peek(loc: Location, fmt: str, n: int, columns: list[str]) -> list[dict[str, Any]] | None:
    """Up to ``n`` rows of the Parquet or Delta data just written at ``loc``, read from its
    first file by pyarrow through the connection's own filesystem and credentials.

    None where that cannot be done exactly (a dbfs:/ path, partition columns held in
    folder names, Delta column mapping: whenever the file's columns are not ``columns``);
    the caller then asks Spark."""
    try:
        import pyarrow.parquet as pq

        fs = loc.fs
        if fmt == "delta":
            from deltalake import DeltaTable

            table = DeltaTable(loc.delta_uri, storage_options=loc.storage_options or None)
            root = loc.delta_uri.rstrip("/") + "/"
            # the table's files (delta-rs escapes them as URLs) as addresses under its
            # root, there on the connection's filesystem
            uris = [unquote(uri) for uri in table.file_uris()]
            files = [
                posixpath.join(loc.fs_path, u[len(root) :]) for u in uris if u.startswith(root)
            ]
        elif fs.isfile(loc.fs_path):
            files = [loc.fs_path]
        else:
            files = sorted(
                str(p)
                for p in fs.ls(loc.fs_path, detail=False)
                if str(p).endswith(".parquet")
                and not posixpath.basename(str(p)).startswith(("_", "."))
            )
        if not files:
            return None  # e.g. partitions in subfolders: Spark knows how to read them
        rows: list[dict[str, Any]] = []
        for file in files:
            with fs.open(file, "rb") as handle:
                for batch in pq.ParquetFile(handle).iter_batches(batch_size=n):
                    if batch.schema.names != columns:
                        return None
                    rows += batch.to_pylist()
                    if len(rows) >= n:
                        return rows[:n]
        return rows
    except Exception as exc:
        _log.debug("preview of %s read by Spark instead: %s", loc.uri, first_line(exc))
        return None


def session_for(resources: Mapping[str, Any]) -> Any:
    """The Spark session for a step, configured for every connection it uses.

    ``resources`` are the step's resources by key: the session comes from the
    ``odibi_spark`` resource (a default ``SparkSessionResource`` when there is none), and
    each connection among them gives the session its settings (an Azure one, its
    account-scoped key), once per process.
    """
    from odibi_dagster.resources.spark import SparkSessionResource

    spark_res = resources.get(SPARK_RESOURCE_KEY)
    if not isinstance(spark_res, SparkSessionResource):
        # a pipeline with a spark: block of its own has odibi_spark__<pipeline>
        own = [
            r
            for k, r in sorted(resources.items())
            if k.startswith(f"{SPARK_RESOURCE_KEY}__") and isinstance(r, SparkSessionResource)
        ]
        spark_res = own[0] if own else SparkSessionResource()
    spark = spark_res.get_session()
    spark_res.configure_connections(spark, resources.values())
    return spark


def engine_for(resources: Mapping[str, Any]) -> SparkEngine:
    """The Spark engine over the session of the step with ``resources``."""
    return SparkEngine(session_for(resources))


class SparkEngine:
    """Run Odibi reads, writes and SQL steps with Spark (data stays distributed)."""

    name = "spark"
    frame_kind = "pyspark DataFrame"
    intermediate_dir_name = "odibi_spark"

    def __init__(self, spark: Any):
        from odibi_dagster.resources.spark_connect import is_connect, server_is_local

        self.spark = spark
        # Spark Connect: no JVM here; a local path is the server's, the same file here
        # only when the server runs on this machine
        self.connect = is_connect(spark)
        self.shares_local_paths = not self.connect or server_is_local(spark)

    # ------------------------------------------------------------------ read

    def read(
        self,
        loc: Location,
        fmt: str,
        options: Mapping[str, Any] | None = None,
        *,
        where: str = "",
    ) -> Any:
        """A DataFrame over the data at ``loc`` in format ``fmt`` (lazy where Spark is)."""
        if fmt == "api":  # Odibi v3: a JSON API on an http connection, fetched on the driver
            from odibi_dagster.api_read import read_api, spark_frame

            return spark_frame(self.spark, read_api(loc, options, where)[0], where)
        return self._read([loc], fmt, options, where)

    def read_rows(
        self,
        loc: Location,
        fmt: str,
        options: Mapping[str, Any] | None,
        rows: RowFilter,
        *,
        where: str = "",
    ) -> Any:
        """What :meth:`read` reads, with a filter on ``rows`` before any action: a predicate
        of the parquet / Delta scan, so files whose min/max statistics rule the rows out
        are skipped (Delta data skipping, parquet row-group filters)."""
        from pyspark.sql import types as T  # the same types for Spark Connect

        F = _functions(self.connect)
        df = self._read([loc], fmt, options, where)
        missing_columns(list(df.columns), rows, where, loc.uri)
        typ = df.schema[rows.column].dataType
        key = F.col(f"`{rows.column}`")
        if rows.fallback:
            key = F.coalesce(key, F.col(f"`{rows.fallback}`"))
        lower = rows.lower
        if isinstance(typ, T.TimestampNTZType):
            bound = F.lit(utc_naive(lower).isoformat()).cast("timestamp_ntz")
        elif isinstance(typ, T.TimestampType):
            bound = F.lit(utc_naive(lower).isoformat() + "Z").cast("timestamp")
        elif isinstance(typ, T.DateType):
            bound = F.lit(pd_date(lower).isoformat()).cast("date")
        elif isinstance(typ, T.NumericType):
            if is_time(lower):
                fail(
                    where,
                    f"read.incremental compares column '{rows.column}', which holds numbers, "
                    f"with a time ({rows.describe()}). Use a date or timestamp column for a "
                    "rolling_window or a watermark_lag",
                )
            bound = F.lit(lower)
        elif is_time(lower):  # times kept as text (csv): compared as timestamps
            key = F.to_timestamp(key)
            bound = F.lit(utc_naive(lower).isoformat() + "Z").cast("timestamp")
        else:
            bound = F.lit(str(lower))
        return df.filter(key >= bound if rows.inclusive else key > bound)

    def key_summary(self, df: Any, rows: RowFilter) -> tuple[int, Any]:
        """Row count and largest key in one Spark job; a timestamp comes back as UTC."""
        from pyspark.sql import types as T

        F = _functions(self.connect)
        key = F.col(f"`{rows.column}`")
        if rows.fallback:
            key = F.coalesce(key, F.col(f"`{rows.fallback}`"))
        top = F.max(key)
        aware = isinstance(df.schema[rows.column].dataType, T.TimestampType)
        if aware:  # the instant with its offset, whatever the driver's time zone
            top = F.date_format(top, "yyyy-MM-dd'T'HH:mm:ss.SSSSSSXXX")
        n, value = df.agg(F.count(F.lit(1)), top).collect()[0]
        if aware and value is not None:
            value = utc_naive(value).to_pydatetime()
        elif isinstance(value, decimal.Decimal):
            value = int(value) if value == value.to_integral_value() else float(value)
        return int(n), value

    def read_files(
        self,
        locs: Sequence[Location],
        fmt: str,
        options: Mapping[str, Any] | None = None,
        *,
        where: str = "",
    ) -> Any:
        """One DataFrame over the files at ``locs``: one Spark read of the list of paths."""
        if fmt == "delta":
            fail(where, "a Delta table is read whole, not file by file")
        return self._read(list(locs), fmt, options, where)

    def _read(
        self, locs: list[Location], fmt: str, options: Mapping[str, Any] | None, where: str
    ) -> Any:
        check_format(fmt, where)
        loc = locs[0]
        uris = [self._uri(x, where) for x in locs]
        uri: str | list[str] = uris[0] if len(uris) == 1 else uris
        opts = dict(options or {})
        if "partition_by" in opts or "partitionBy" in opts:
            fail(where, "read option 'partition_by' is not a read option. Remove it")
        select: list[str] | None = None
        reader = self.spark.read.format(fmt)
        if fmt == "csv":
            opts = {"header": True, "inferSchema": "schema" not in opts, **opts}
        elif fmt == "json":
            lines = opts.pop("lines", True)
            opts.setdefault("multiLine", not truthy(lines))
        elif fmt == "delta":
            check_delta_read_options(opts, "spark", where)
            if "columns" in opts:
                select = column_list(opts.pop("columns"))
        casts = self._dtype_casts(opts.pop("dtype", None), where) if fmt in ("csv", "json") else {}
        schema = opts.pop("schema", None)
        if schema is not None:
            reader = reader.schema(str(schema))
        reader = reader.options(**{k: _as_option(v) for k, v in opts.items()})
        try:
            if fmt == "csv" and schema is None and truthy(opts.get("inferSchema")):
                # Typed as pandas types them: numbers inferred, dates and timestamps kept as
                # text (unless preferDate: true), dtype columns read as text first ("007"
                # stays "007"). The inference pass is the one inferSchema makes anyway.
                dates = truthy(opts.get("preferDate", False))
                inferred = reader.load(uri).schema
                reader = reader.schema(self._with_text_columns(inferred, casts, dates))
            df = reader.load(uri)
            if self.connect:
                # Spark Connect analyses lazily: ask for the schema now, so a missing path
                # or a bad option fails here, named, not at the first action
                _ = df.schema
            if select:
                df = df.select(*select)
            missing = [c for c in casts if c not in df.columns]
            if missing:
                fail(
                    where,
                    f"read option dtype names column(s) {', '.join(missing)} that '{loc.uri}' "
                    f"does not have. Columns: {', '.join(df.columns)}",
                )
            for column, spark_type in casts.items():
                df = df.withColumn(column, df[f"`{column}`"].cast(spark_type))
            return df
        except _spark_errors() as exc:
            self._read_error(exc, loc, fmt, where)

    @staticmethod
    def _with_text_columns(schema: Any, columns: Mapping[str, str], keep_dates: bool) -> Any:
        from pyspark.sql.types import (
            DateType,
            StringType,
            StructField,
            StructType,
            TimestampNTZType,
            TimestampType,
        )

        dates = (DateType, TimestampType, TimestampNTZType)
        return StructType(
            [
                StructField(f.name, StringType(), True)
                if f.name in columns or (not keep_dates and isinstance(f.dataType, dates))
                else f
                for f in schema.fields
            ]
        )

    @staticmethod
    def _dtype_casts(dtype: Any, where: str) -> dict[str, str]:
        """pandas' ``dtype`` read option ({column: type}) as Spark casts, so a YAML written
        for pandas types its columns the same way on Spark."""
        if dtype is None:
            return {}
        if not isinstance(dtype, Mapping):
            fail(where, "read option dtype must map column names to types, e.g. {id: str}")
        out = {}
        for column, name in dtype.items():
            spark_type = _PANDAS_TYPES.get(str(name).lower())
            if spark_type is None:
                fail(
                    where,
                    f"read option dtype gives column '{column}' type '{name}', which the spark "
                    f"engine does not know. Use one of: {', '.join(sorted(_PANDAS_TYPES))}",
                )
            out[str(column)] = spark_type
        return out

    def _read_error(self, exc: BaseException, loc: Location, fmt: str, where: str) -> NoReturn:
        cls = _error_class(exc)
        msg = redact(first_message(exc), loc.storage_options, loc.uri)
        if cls == "PATH_NOT_FOUND" or "Path does not exist" in msg:
            missing_input(where, loc.uri)
        not_delta = cls.startswith(("DELTA_MISSING_DELTA_TABLE", "DELTA_TABLE_NOT_FOUND"))
        if not_delta and not self.exists(loc, fmt):
            missing_input(where, loc.uri)
        if not_delta or "is not a Delta table" in msg:
            not_a_delta_table(where, loc.uri)
        fail(
            where,
            f"could not read {fmt} from '{loc.uri}' ({msg}). Check that the path holds {fmt} "
            "data and that the read options match it",
        )

    # ----------------------------------------------------------------- write

    def write(
        self,
        df: Any,
        loc: Location,
        fmt: str,
        mode: str = "overwrite",
        options: Mapping[str, Any] | None = None,
        *,
        where: str = "",
    ) -> bool:
        """Write ``df`` to ``loc``; return False when skipped (mode ignore, target exists).

        A csv, json or parquet write holds the target's lock (see ``engines.replace``)
        from looking at what is there to its commit: two Spark jobs writing one folder
        share its ``_temporary`` directory, and the first to commit deletes the other's
        files, so appends at the same time would lose rows."""
        if mode in KEYED_MODES:
            self.merge(df, loc, fmt, mode, options, where=where)
            return True
        return self._write(df, loc, fmt, mode, options, where=where, lock=True)

    def merge(
        self,
        df: Any,
        loc: Location,
        fmt: str,
        mode: str,
        options: Mapping[str, Any] | None = None,
        *,
        where: str = "",
    ) -> MergeOutcome:
        """Write ``df`` in a keyed mode (see :meth:`Engine.merge`): a Delta merge for
        Delta; for a file, the target read, joined with ``df`` and the result swapped in
        under the target's lock."""
        from odibi_dagster.engines import spark_keyed

        check_format(fmt, where)
        kw, opts = keyed_write(mode, fmt, options or {}, where)
        uri = self._uri(loc, where)
        spark_keyed.check_incoming(df, kw, where, self.connect)
        df = spark_keyed.with_delete_flag(df, kw, where, self.connect)
        if fmt == "delta":
            # the one Delta option that applies, when the table is created
            partition_by: list[str] = []
            for key in ("partition_by", "partitionBy"):
                if key in opts:
                    partition_by = column_list(opts.pop(key))
            if opts:
                fail(
                    where,
                    f"write option '{sorted(opts)[0]}' is not accepted with write mode {mode} "
                    "on delta for spark. Remove it (accepted besides the keyed options: "
                    "partition_by)",
                )
            return spark_keyed.merge_delta(self, df, loc, uri, kw, partition_by, where)
        if "partition_by" in opts or "partitionBy" in opts:
            fail(where, f"write option 'partition_by' is not accepted with write mode {mode}")
        read_opts: dict[str, Any] = {
            k: opts[k] for k in ("sep", "delimiter", "header") if k in opts
        }
        if fmt == "csv":
            opts = {"header": True, **opts}
        elif fmt == "json":
            opts.pop("lines", None)
            opts.pop("orient", None)

        def run(held: TargetLock | None) -> MergeOutcome:
            if not self.exists(loc, fmt):
                rows = int(df.count())
                self._save(df, loc, uri, fmt, "overwrite", opts, [], where, held)
                return MergeOutcome(inserted=rows)
            old = self.read(loc, fmt, read_opts, where=where)
            out, outcome = spark_keyed.merge_files(self, old, df, kw, where, loc.uri)
            if out is not None:
                self._save(out, loc, uri, fmt, "overwrite", opts, [], where, held)
            return outcome

        if not self._can_lock(loc):
            return run(None)
        with target_lock(loc.fs, loc.fs_path, uri=loc.uri, where=where) as held:
            return run(held)

    def _write(
        self,
        df: Any,
        loc: Location,
        fmt: str,
        mode: str,
        options: Mapping[str, Any] | None,
        *,
        where: str,
        lock: bool,
    ) -> bool:
        check_format(fmt, where)
        check_mode(mode, where)
        uri = self._uri(loc, where)
        opts = dict(options or {})
        partition_by: list[str] = []
        for key in ("partition_by", "partitionBy"):
            if key in opts:
                partition_by = column_list(opts.pop(key))
        if fmt == "delta":
            delta = delta_write_options(opts, mode, where)
            if delta.delta_rs:
                fail(
                    where,
                    f"write option '{sorted(delta.delta_rs)[0]}' is a delta-rs (pandas engine) "
                    "option that Spark does not accept. Remove it",
                )
            opts = dict(delta.other)
            if delta.predicate is not None:
                opts["replaceWhere"] = delta.predicate
            if delta.schema_mode == "merge":
                opts["mergeSchema"] = True
            elif delta.schema_mode == "overwrite":
                opts["overwriteSchema"] = True
        elif fmt == "csv":
            opts = {"header": True, **opts}
        elif fmt == "json":
            opts.pop("lines", None)
            opts.pop("orient", None)
        if fmt == "delta" or not lock or not self._can_lock(loc):
            return self._save(df, loc, uri, fmt, mode, opts, partition_by, where, None)
        with target_lock(loc.fs, loc.fs_path, uri=loc.uri, where=where) as held:
            return self._save(df, loc, uri, fmt, mode, opts, partition_by, where, held)

    def _can_lock(self, loc: Location) -> bool:
        """Whether this process can lock ``loc``: on remote storage, or on a local path
        where the driver runs here (behind Spark Connect: where the server runs here too;
        elsewhere local paths are the cluster's)."""
        from fsspec.implementations.local import LocalFileSystem

        return not isinstance(loc.fs, LocalFileSystem) or self.shares_local_paths

    def _save(
        self,
        df: Any,
        loc: Location,
        uri: str,
        fmt: str,
        mode: str,
        opts: dict[str, Any],
        partition_by: list[str],
        where: str,
        held: TargetLock | None,
    ) -> bool:
        exists = self.exists(loc, fmt)
        if not write_wanted(exists, mode, where, loc.uri):
            return False
        if exists and mode == "append" and not truthy(opts.get("mergeSchema", False)):
            # Spark would add files of another shape beside the old ones; a csv part file
            # is even read by position: refuse other columns, and keep the old order
            existing = self._columns_at(loc, fmt, opts, where)
            require_same_columns(where, loc.uri, existing, list(df.columns))
            df = df.select(*[f"`{c}`" for c in existing])
        writer = df.write.format(fmt).mode(mode)
        if partition_by:
            missing = [c for c in partition_by if c not in df.columns]
            if missing:
                fail(
                    where,
                    f"write option partition_by names column(s) {', '.join(missing)} that the "
                    f"result does not have. Columns: {', '.join(df.columns)}",
                )
            writer = writer.partitionBy(*partition_by)
        writer = writer.options(**{k: _as_option(v) for k, v in opts.items()})
        mover = self._mover(uri, loc) if fmt != "delta" and mode == "overwrite" and exists else None
        target = uri
        if mover is not None:
            # Spark deletes the old files before its job runs: write beside them, then swap,
            # so a job that fails leaves the old data in place
            check_replaceable(mover, uri, loc.uri, fmt, where)
            target = sibling(uri, "tmp")
        try:
            writer.save(target)
        except _spark_errors() as exc:
            if mover is not None:
                delete_quietly(mover, target)
            msg = redact(first_message(exc), loc.storage_options, loc.uri)
            hint = "Check the write options and the path"
            cls = _error_class(exc)
            if "SCHEMA_MISMATCH" in cls or "METADATA_MISMATCH" in cls or "mismatch" in msg.lower():
                hint = (
                    "The result's columns differ from the table's: add write option "
                    "mergeSchema: true (add columns) or overwriteSchema: true with mode overwrite"
                )
            fail(where, f"writing {fmt} to '{loc.uri}' failed ({msg}). {hint}")
        if mover is not None:
            if held is not None:
                try:
                    held.confirm(where)
                except OdibiRunError:
                    delete_quietly(mover, target)
                    raise
            swap_in(mover, target, uri, loc.uri, where, exists=True)
        return True

    def _columns_at(
        self, loc: Location, fmt: str, opts: Mapping[str, Any], where: str
    ) -> list[str]:
        """The columns of the data at ``loc`` (read with the write's own separator)."""
        read_opts: dict[str, Any] = {
            k: opts[k] for k in ("sep", "delimiter", "header") if k in opts
        }
        if fmt == "csv":
            read_opts["inferSchema"] = False
        return [str(c) for c in self.read(loc, fmt, read_opts, where=where).columns]

    def exists(self, loc: Location, fmt: str) -> bool:
        """Whether anything (a file or a directory) is at ``loc``."""
        check_format(fmt, "")
        uri = self._uri(loc, "")
        mover = self._mover(uri, loc)
        if mover is not None:
            return mover.exists(uri)
        # out of this process's reach (Spark Connect, dbfs:/): ask the data source
        try:
            self.spark.read.format("binaryFile").load(uri).select("path").limit(1).collect()
            return True
        except _spark_errors() as exc:
            if _error_class(exc) == "PATH_NOT_FOUND" or "does not exist" in first_message(exc):
                return False
            raise

    def _mover(self, uri: str, loc: Location | None = None) -> Mover | None:
        """A Mover for ``uri`` (and the paths beside it): Hadoop's filesystem in the
        session's JVM; over Spark Connect, the connection's fsspec filesystem for ``loc``
        where this process reaches it. None when neither can."""
        hadoop = self._hadoop()
        if hadoop:
            return hadoop_mover(*hadoop, uri)
        return self._client_mover(loc) if loc is not None and loc.spark_uri == uri else None

    def _client_mover(self, loc: Location) -> ClientMover | None:
        return ClientMover(loc) if client_reaches(loc, self.shares_local_paths) else None

    def _hadoop(self) -> tuple[Any, Any] | None:
        """The JVM and a Hadoop configuration of the session; None without a JVM."""
        if self.connect:
            return None
        try:
            jvm = self.spark.sparkContext._jvm
            conf = self.spark._jsparkSession.sessionState().newHadoopConf()
        except Exception:
            return None
        return None if jvm is None else (jvm, conf)

    # ------------------------------------------------------------------- sql

    def sql(self, query: str, tables: Mapping[str, Any], *, where: str = "") -> Any:
        """Run ``query`` with ``spark.sql``; each DataFrame in ``tables`` is a temp view."""
        for name, frame in tables.items():
            if not self.is_frame(frame):
                fail(where, f"table '{name}' is a {type(frame).__name__}, not a Spark DataFrame")
            frame.createOrReplaceTempView(name)
        try:
            # spark.sql analyses the query now, so the result keeps the views' plans after
            # the views are dropped below (Spark Connect: asked for, below)
            result = self.spark.sql(query)
            if self.connect:
                _ = result.schema
            return result
        except _spark_errors() as exc:
            msg = first_message(exc)
            available = ", ".join(tables) or "(none)"
            match = _MISSING_VIEW.search(msg)
            if match:
                fail(
                    where,
                    f"SQL step refers to table '{match.group(1)}', which is not available. "
                    f"Available tables: {available}.",
                )
            first = next((ln.strip() for ln in query.splitlines() if ln.strip()), "")
            fail(
                where,
                f"SQL step failed ({msg}) in query starting '{first[:80]}'. Fix the SQL; "
                f"available tables: {available}",
            )
        finally:
            # Spark Connect analyses the query again when it runs: its views must stay (the
            # next step replaces them)
            if not self.connect:
                for name in tables:
                    with contextlib.suppress(Exception):
                        self.spark.catalog.dropTempView(name)

    def is_frame(self, obj: Any) -> bool:
        """Whether ``obj`` is a Spark DataFrame (classic or Spark Connect)."""
        try:
            from pyspark.sql import DataFrame
        except ImportError:
            return False
        return isinstance(obj, DataFrame)

    def from_pandas(self, df: Any) -> Any:
        """Typed from the pandas dtypes (not inferred row by row): Int64 -> bigint,
        float64 -> double, boolean -> boolean, datetime64 -> timestamp (the session is
        UTC), anything else -> string; nulls stay null."""
        from pyspark.sql import types as T

        def spark_type(dtype: Any) -> Any:
            name = str(dtype)
            if name.lower().startswith("int"):
                return T.LongType()
            if name.startswith("float"):
                return T.DoubleType()
            if name in ("bool", "boolean"):
                return T.BooleanType()
            if name.startswith("datetime64"):
                return T.TimestampType()
            return T.StringType()

        schema = T.StructType(
            [T.StructField(str(c), spark_type(t), True) for c, t in df.dtypes.items()]
        )
        text = [isinstance(f.dataType, T.StringType) for f in schema.fields]
        rows = [
            tuple(
                None if _is_null(v) else str(v) if as_text else _plain(v)
                for v, as_text in zip(rec, text, strict=True)
            )
            for rec in df.astype(object).itertuples(index=False, name=None)
        ]
        return self.spark.createDataFrame(rows, schema)

    # --------------------------------------------------------------- describing

    def cheap_row_count(self, df: Any) -> int | None:
        return None  # a count is a Spark job: the IO manager counts while it writes

    def profile(self, df: Any, null_columns: Iterable[str] = ()) -> Profile:
        """Row count and null counts of ``null_columns`` in one aggregation (one pass)."""
        cols = [c for c in dict.fromkeys(null_columns) if c in df.columns]
        row = df.agg(*_profile_columns(cols, self.connect)).collect()[0]
        return _profile_of(row, cols)

    def column_schema(self, df: Any) -> list[tuple[str, str]]:
        return [(f.name, f.dataType.simpleString()) for f in df.schema.fields]

    def type_family(self, dtype: str) -> str:
        """The family (string, integer, float, boolean, datetime) of a Spark type name."""
        d = dtype.lower()
        if d in ("tinyint", "smallint", "int", "integer", "bigint", "long", "short", "byte"):
            return "integer"
        if d in ("float", "double", "real") or d.startswith("decimal"):
            return "float"
        if d == "boolean":
            return "boolean"
        if d.startswith(("timestamp", "date")):
            return "datetime"
        if d == "string" or d.startswith(("varchar", "char")):
            return "string"
        return d

    def head(
        self, df: Any, n: int, *, written_at: Location | None = None, fmt: str = ""
    ) -> list[dict[str, Any]]:
        """The first ``n`` rows as dicts. Where ``df`` was just written as Parquet or Delta,
        they are read from the first file on the driver (pyarrow, the connection's
        filesystem): a preview then costs no Spark job."""
        if n <= 0:
            return []
        if (
            written_at is not None
            and fmt in ("parquet", "delta")
            and client_reaches(written_at, self.shares_local_paths)
        ):
            rows = _peek(written_at, fmt, n, list(df.columns))
            if rows is not None:
                return rows
        return [row.asDict(recursive=True) for row in df.limit(n).collect()]

    # --------------------------------------------------------------- handing over

    def count_while_writing(self, df: Any) -> tuple[Any, Callable[[], int | None]]:
        """``df`` with a Spark Observation that counts its rows during the next action
        (the write): ``dagster/row_count`` costs no extra pass over the data."""
        F = _functions(self.connect)
        obs = _observation(self.connect)

        def rows() -> int | None:
            try:
                return int(obs.get["rows"])
            except Exception:
                return None

        return df.observe(obs, F.count(F.lit(1)).alias("rows")), rows

    def after_write(self, df: Any, loc: Location, fmt: str, *, where: str = "") -> Any:
        """A lazy scan of what was written (its schema given: nothing is inferred again)."""
        if fmt == "delta":
            return self.read(loc, "delta", where=where)
        return self._scan(loc, fmt, df.schema, where)

    def _scan(self, loc: Location, fmt: str, schema: Any, where: str) -> Any:
        reader = self.spark.read.format(fmt).schema(schema)
        if fmt == "csv":
            reader = reader.option("header", True)
        return reader.load(self._uri(loc, where))

    def handoff(self, df: Any) -> Any:
        return df  # a plan: consumers cannot change each other's data

    def materialize(
        self,
        df: Any,
        base: str,
        key: tuple[str, ...],
        null_columns: Iterable[str] = (),
        *,
        where: str = "",
    ) -> tuple[Any, Profile, Location | None]:
        """Compute ``df`` once, into the intermediate store (staged), counting its rows and
        nulls in the same job (a Spark Observation): the checks need no pass of their
        own, and the target and consumers read the stored copy instead of computing the
        node again."""
        cols = [c for c in dict.fromkeys(null_columns) if c in df.columns]
        obs = _observation(self.connect)
        observed = df.observe(obs, *_profile_columns(cols, self.connect))
        staged, stored = self.store_intermediate(observed, base, key, where=where)
        return stored, _profile_of(obs.get, cols), staged

    def store_intermediate(
        self, df: Any, base: str, key: tuple[str, ...], *, where: str = ""
    ) -> tuple[Location, Any]:
        kept = self.intermediate(base, key)
        # where nothing can be renamed (Spark Connect, data out of reach): write in place
        staged = staged_beside(kept) if self._mover(kept.spark_uri, kept) else kept
        # a fresh name of this run's: no other write of it to wait for
        self._write(df, staged, "parquet", "overwrite", None, where=where, lock=False)
        return staged, self.after_write(df, staged, "parquet", where=where)

    def keep_intermediate(
        self, df: Any, staged: Location, base: str, key: tuple[str, ...], *, where: str = ""
    ) -> tuple[Location, Any]:
        kept = self.intermediate(base, key)
        # asked before the swap: over Spark Connect the schema of ``df`` (a scan of the
        # staged copy) is asked of the server, which would no longer find it
        schema = df.schema
        mover = self._mover(kept.spark_uri, kept)
        if mover is not None and staged.spark_uri != kept.spark_uri:
            exists = mover.exists(kept.spark_uri)
            swap_in(mover, staged.spark_uri, kept.spark_uri, kept.uri, where, exists=exists)
        return kept, self._scan(kept, "parquet", schema, where)

    def drop_intermediate(self, staged: Location) -> None:
        mover = self._mover(staged.spark_uri, staged)
        if mover is not None and ".staged-" in staged.spark_uri:
            delete_quietly(mover, staged.spark_uri)

    def load_intermediate(self, base: str, key: tuple[str, ...], *, where: str) -> Any:
        loc = self.intermediate(base, key)
        if not self.exists(loc, "parquet"):
            raise OdibiRunError(
                f"{where}: no stored result yet (looked in {loc.uri}). Materialize this "
                "upstream node first, or run the whole pipeline job."
            )
        return self.read(loc, "parquet", where=where)

    def stored_intermediates(self, base: str, key: tuple[str, ...]) -> dict[str, float]:
        """The directories ``<name>`` (and ``<name>.staged-<hex>`` ...) under
        ``<base>/<key...>/``, by name, with their modification time, listed by Hadoop's
        FileSystem (over Spark Connect: by the client's filesystem, where it reaches them;
        else empty)."""
        kept = self.intermediate(base, key)
        folder = kept.spark_uri
        hadoop = self._hadoop_fs(folder)
        if hadoop is None:
            return self._stored_by_client(kept)
        fs, path = hadoop
        if not fs.exists(path):
            return {}
        found: dict[str, float] = {}
        for status in fs.listStatus(path):
            if not status.isDirectory():
                continue
            name = _stored_dir_name(status.getPath().getName())
            found[name] = max(found.get(name, 0.0), status.getModificationTime() / 1000)
        return found

    def _stored_by_client(self, kept: Location) -> dict[str, float]:
        """:meth:`stored_intermediates` listed through the client's filesystem."""
        mover = self._client_mover(kept)
        if mover is None or not mover.exists(kept.spark_uri):
            return {}
        found: dict[str, float] = {}
        for name, is_dir, mtime in mover.listing(kept.spark_uri):
            if is_dir:
                stored = _stored_dir_name(name)
                found[stored] = max(found.get(stored, 0.0), mtime)
        return found

    def delete_intermediate(self, base: str, key: tuple[str, ...]) -> None:
        loc = self.intermediate(base, key)
        kept = loc.spark_uri
        parent = kept.rstrip("/").rsplit("/", 1)[0]
        mover = self._mover(kept, loc)
        if mover is None:
            raise OdibiRunError(
                f"{kept} cannot be deleted from here: the Spark Connect server's storage is "
                "out of this process's reach (a local path on another machine)"
            )
        if not mover.exists(parent):
            return
        for name, is_dir in mover.children(parent):
            if is_dir and _stored_dir_name(name) == key[-1]:
                mover.delete(f"{parent}/{name}")

    def intermediate(self, base: str, key: tuple[str, ...]) -> Location:
        """Where a result is kept: under a local directory, or a URI every executor reaches
        (dbfs:/..., abfss://...)."""
        from odibi_dagster.resources.local import LocalStorage

        if "://" in base or base.startswith("dbfs:"):
            uri = posixpath.join(base, *key)
            local = LocalStorage(base_path=".").location(".")
            return Location(uri=uri, fs=local.fs, fs_path=uri, delta_uri=uri, spark_uri=uri)
        return LocalStorage(base_path=base).location(os.path.join(*key))

    # --------------------------------------------------------------- helpers

    def _hadoop_fs(self, uri: str) -> tuple[Any, Any] | None:
        """Hadoop's FileSystem for ``uri`` and the Path of ``uri``; None without a JVM."""
        hadoop = self._hadoop()
        if hadoop is None:
            return None
        jvm, conf = hadoop
        path = jvm.org.apache.hadoop.fs.Path(uri)
        return path.getFileSystem(conf), path

    @staticmethod
    def _uri(loc: Location, where: str) -> str:
        from odibi_dagster.resources.spark import opened

        if not loc.spark_uri:
            fail(where, loc.spark_note or f"Spark cannot reach '{loc.uri}'")
        opened(loc.spark_uri)
        return loc.spark_uri


def _is_null(v: Any) -> bool:
    try:
        return bool(pd.isna(v))
    except (TypeError, ValueError):
        return False


def _plain(v: Any) -> Any:
    """A pandas/numpy scalar as the Python value Spark takes."""
    if isinstance(v, pd.Timestamp):
        return v.to_pydatetime()
    if hasattr(v, "item") and not isinstance(v, (str, bytes)):
        return v.item()
    return v
