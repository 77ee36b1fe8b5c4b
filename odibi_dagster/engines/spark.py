"""The Spark engine: reads, writes and transforms data where Spark runs (locally or Databricks).

Native ``spark.read`` / ``DataFrame.write`` for parquet, csv, json and delta, on local
paths and ``abfss://`` URIs; SQL steps through ``spark.sql`` over temp views named after
the nodes. Nothing here collects a table to the driver: the only rows that reach the
driver are previews and story samples (``limit(n)``) and one-row aggregates (row and
null counts for validation).

CSV and JSON read the way the pandas engine reads them, so one YAML gives one answer:
CSV has a header row and typed columns unless the options say otherwise (numbers are
inferred; dates and timestamps stay text, as on pandas, unless ``preferDate: true``),
pandas' ``dtype`` option is honoured, and JSON is one object per line. Write modes mean
what they mean on pandas: ``error`` fails and ``ignore`` skips when anything is at the
path.
"""

from __future__ import annotations

import contextlib
import re
import uuid
from collections.abc import Iterable, Mapping
from typing import Any, NoReturn

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

__all__ = ["SPARK_RESOURCE_KEY", "SparkEngine", "session_for"]

SPARK_RESOURCE_KEY = "odibi_spark"

_DELTA_READ_OPTIONS = ("versionAsOf", "timestampAsOf", "columns")
# delta-rs (pandas engine) option names with their Spark Delta equivalents
_DELTA_WRITE_ALIASES = {"predicate": "replaceWhere"}
_DELTA_RS_ONLY = ("target_file_size", "name", "description", "configuration", "filters")
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


def first_message(exc: BaseException) -> str:
    """The first meaningful line of a Spark error, without the JVM stack."""
    text = getattr(exc, "getMessage", None)
    raw = ""
    if callable(text):
        try:
            raw = str(text())
        except Exception:
            raw = ""
    raw = raw or str(exc)
    for line in raw.strip().splitlines():
        line = line.strip()
        if line and not line.startswith(("at ", "JVM stacktrace", "==")):
            return line[:600]
    return type(exc).__name__


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


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes")
    return bool(value)


def _as_option(value: Any) -> Any:
    """Spark option values: booleans as 'true'/'false', lists comma-joined."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return value


def _columns(value: Any) -> list[str]:
    if isinstance(value, str):
        return [c.strip() for c in value.split(",") if c.strip()]
    return [str(c) for c in value]


def session_for(resources: Any) -> Any:
    """The Spark session for a step, configured for every Azure connection it uses.

    ``resources`` is the step's resources (``context.resources``): the session comes from
    the ``odibi_spark`` resource (a default ``SparkSessionResource`` when there is none),
    and each ``AzureADLS`` among them gives the session its account-scoped key, once per
    process.
    """
    from odibi_dagster.resources.spark import SparkSessionResource

    items: dict[str, Any] = {}
    if resources is not None:
        asdict = getattr(resources, "_asdict", None)
        items = dict(asdict()) if callable(asdict) else {}
    spark_res = items.get(SPARK_RESOURCE_KEY)
    if not isinstance(spark_res, SparkSessionResource):
        spark_res = SparkSessionResource()
    spark = spark_res.get_session()
    spark_res.configure_connections(spark, items.values())
    return spark


class SparkEngine:
    """Run Odibi reads, writes and SQL steps with Spark (data stays distributed)."""

    name = "spark"
    # counting rows runs a Spark job: the runtime leaves it to the IO manager, which
    # counts while writing
    counts_are_cheap = False

    def __init__(self, spark: Any):
        self.spark = spark
        self._profiled: tuple[Any, dict[str, int]] | None = None

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
        check_format(fmt, where)
        uri = self._uri(loc, where)
        opts = dict(options or {})
        if "partition_by" in opts or "partitionBy" in opts:
            fail(where, "read option 'partition_by' is not a read option. Remove it")
        select: list[str] | None = None
        reader = self.spark.read.format(fmt)
        if fmt == "csv":
            opts = {"header": True, "inferSchema": "schema" not in opts, **opts}
        elif fmt == "json":
            lines = opts.pop("lines", True)
            opts.setdefault("multiLine", not _truthy(lines))
        elif fmt == "delta":
            unknown = sorted(set(opts) - set(_DELTA_READ_OPTIONS))
            if unknown:
                fail(
                    where,
                    f"read option '{unknown[0]}' is not accepted for delta on spark. Remove it "
                    f"or use one of: {', '.join(_DELTA_READ_OPTIONS)}",
                )
            if "versionAsOf" in opts and "timestampAsOf" in opts:
                fail(
                    where, "read options versionAsOf and timestampAsOf cannot both be set. Keep one"
                )
            if "columns" in opts:
                select = _columns(opts.pop("columns"))
        casts = self._dtype_casts(opts.pop("dtype", None), where) if fmt in ("csv", "json") else {}
        schema = opts.pop("schema", None)
        if schema is not None:
            reader = reader.schema(str(schema))
        reader = reader.options(**{k: _as_option(v) for k, v in opts.items()})
        try:
            if fmt == "csv" and schema is None and _truthy(opts.get("inferSchema")):
                # Typed as pandas types them: numbers inferred, dates and timestamps kept as
                # text (unless preferDate: true), dtype columns read as text first ("007"
                # stays "007"). The inference pass is the one inferSchema makes anyway.
                dates = _truthy(opts.get("preferDate", False))
                inferred = reader.load(uri).schema
                reader = reader.schema(self._with_text_columns(inferred, casts, dates))
            df = reader.load(uri)
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
        """Write ``df`` to ``loc``; return False when skipped (mode ignore, target exists)."""
        check_format(fmt, where)
        check_mode(mode, where)
        uri = self._uri(loc, where)
        opts = dict(options or {})
        partition_by: list[str] = []
        for key in ("partition_by", "partitionBy"):
            if key in opts:
                partition_by = _columns(opts.pop(key))
        if fmt == "delta":
            for bad in _DELTA_RS_ONLY:
                if bad in opts:
                    fail(
                        where,
                        f"write option '{bad}' is a delta-rs (pandas engine) option that Spark "
                        "does not accept. Remove it",
                    )
            for old, new in _DELTA_WRITE_ALIASES.items():
                if old in opts:
                    opts[new] = opts.pop(old)
            schema_mode = opts.pop("schema_mode", None)
            if schema_mode == "merge":
                opts["mergeSchema"] = True
            elif schema_mode == "overwrite":
                opts["overwriteSchema"] = True
        elif fmt == "csv":
            opts = {"header": True, **opts}
        elif fmt == "json":
            opts.pop("lines", None)
            opts.pop("orient", None)
        exists = self.exists(loc, fmt)
        if exists and mode == "error":
            exists_error(where, loc.uri)
        if exists and mode == "ignore":
            return False
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
        hadoop = self._hadoop(uri) if fmt != "delta" and mode == "overwrite" and exists else None
        target = uri
        if hadoop is not None:
            # Spark deletes the old files before its job runs: write beside them, then swap,
            # so a job that fails leaves the old data in place
            self._check_replaceable(hadoop, loc, fmt, where)
            target = f"{uri.rstrip('/')}.tmp-{uuid.uuid4().hex}"
        try:
            writer.save(target)
            if hadoop is not None:
                self._swap(hadoop, target, uri, loc, where)
        except _spark_errors() as exc:
            if hadoop is not None:
                self._delete_quietly(hadoop, target)
            msg = redact(first_message(exc), loc.storage_options, loc.uri)
            hint = "Check the write options and the path"
            cls = _error_class(exc)
            if "SCHEMA_MISMATCH" in cls or "schema mismatch" in msg.lower():
                hint = (
                    "The result's columns differ from the table's: add write option "
                    "mergeSchema: true (add columns) or overwriteSchema: true with mode overwrite"
                )
            fail(where, f"writing {fmt} to '{loc.uri}' failed ({msg}). {hint}")
        return True

    def exists(self, loc: Location, fmt: str) -> bool:
        """Whether anything (a file or a directory) is at ``loc``."""
        check_format(fmt, "")
        uri = self._uri(loc, "")
        hadoop = self._hadoop(uri)
        if hadoop is not None:
            fs, path = hadoop
            return bool(fs.exists(path(uri)))
        # a Spark Connect session has no JVM gateway: ask the data source instead
        try:
            self.spark.read.format("binaryFile").load(uri).select("path").limit(1).collect()
            return True
        except _spark_errors() as exc:
            if _error_class(exc) == "PATH_NOT_FOUND" or "does not exist" in first_message(exc):
                return False
            raise

    def _hadoop(self, uri: str) -> tuple[Any, Any] | None:
        """Hadoop's filesystem for ``uri`` and a Path constructor; None without a JVM
        (Spark Connect)."""
        try:
            jvm = self.spark.sparkContext._jvm
            conf = self.spark._jsparkSession.sessionState().newHadoopConf()
        except Exception:
            return None
        if jvm is None:
            return None
        make_path = jvm.org.apache.hadoop.fs.Path
        return make_path(uri).getFileSystem(conf), make_path

    @staticmethod
    def _check_replaceable(hadoop: tuple[Any, Any], loc: Location, fmt: str, where: str) -> None:
        """Refuse to replace a Delta table, or a directory with subdirectories other than
        partitions (``col=value``), with a file format: it would delete them all."""
        fs, path = hadoop
        target = path(loc.spark_uri)
        if not fs.getFileStatus(target).isDirectory():
            return
        children = [(st.getPath().getName(), st.isDirectory()) for st in fs.listStatus(target)]
        if any(name == "_delta_log" for name, _ in children):
            delta_table_in_the_way(where, loc.uri, fmt)
        subdirs = sorted(
            name
            for name, is_dir in children
            if is_dir and "=" not in name and not name.startswith(("_", "."))
        )
        if subdirs:
            subdirectories_in_the_way(where, loc.uri, fmt, subdirs)

    def _swap(self, hadoop: tuple[Any, Any], new: str, uri: str, loc: Location, where: str) -> None:
        """Put the finished output ``new`` at ``uri``: the old data moves aside first and is
        deleted only once the new data is in place (moved back if that move fails)."""
        fs, path = hadoop
        old = f"{uri.rstrip('/')}.old-{uuid.uuid4().hex}"
        if not fs.rename(path(uri), path(old)):
            self._delete_quietly(hadoop, new)
            fail(where, f"could not move the previous '{loc.uri}' aside; it was left unchanged")
        if not fs.rename(path(new), path(uri)):
            restored = fs.rename(path(old), path(uri))
            self._delete_quietly(hadoop, new)
            fail(
                where,
                f"could not move the new output into '{loc.uri}'"
                + (
                    "; the previous data is back in place"
                    if restored
                    else f"; the previous data is at '{old}'"
                ),
            )
        self._delete_quietly(hadoop, old)

    @staticmethod
    def _delete_quietly(hadoop: tuple[Any, Any], uri: str) -> None:
        fs, path = hadoop
        with contextlib.suppress(Exception):
            fs.delete(path(uri), True)

    # ------------------------------------------------------------------- sql

    def sql(self, query: str, tables: Mapping[str, Any], *, where: str = "") -> Any:
        """Run ``query`` with ``spark.sql``; each DataFrame in ``tables`` is a temp view."""
        for name, frame in tables.items():
            if not self.is_frame(frame):
                fail(where, f"table '{name}' is a {type(frame).__name__}, not a Spark DataFrame")
            frame.createOrReplaceTempView(name)
        try:
            # spark.sql analyses the query now, so the result keeps the views' plans after
            # the views are dropped below
            return self.spark.sql(query)
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
            if not type(self.spark).__module__.startswith("pyspark.sql.connect"):
                for name in tables:
                    with contextlib.suppress(Exception):
                        self.spark.catalog.dropTempView(name)

    # --------------------------------------------------------------- summary

    def observe(self, df: Any) -> tuple[Any, Any]:
        """``df`` with a row counter that fills in during the next action (the write), and
        the Observation to read it from: counting costs no extra pass over the data."""
        from pyspark.sql import Observation
        from pyspark.sql import functions as F

        obs = Observation()
        return df.observe(obs, F.count(F.lit(1)).alias("rows")), obs

    @staticmethod
    def observed_rows(obs: Any) -> int | None:
        try:
            return int(obs.get["rows"])
        except Exception:
            return None

    def profile(self, df: Any, columns: Iterable[Any] = ()) -> dict[str, int]:
        """Row count and null counts of ``columns`` in one aggregation (one pass)."""
        from pyspark.sql import functions as F

        cols = list(dict.fromkeys(str(c) for c in columns if str(c) in df.columns))
        if self._profiled is not None and self._profiled[0] is df:
            known = self._profiled[1]
            if all(f"nulls:{c}" in known for c in cols):
                return known
        aggs = [F.count(F.lit(1)).alias("rows")]
        aggs += [
            F.sum(F.when(F.col(f"`{c}`").isNull(), 1).otherwise(0)).alias(f"n{i}")
            for i, c in enumerate(cols)
        ]
        row = df.agg(*aggs).collect()[0]
        stats = {"rows": int(row["rows"] or 0)}
        stats.update({f"nulls:{c}": int(row[f"n{i}"] or 0) for i, c in enumerate(cols)})
        self._profiled = (df, stats)
        return stats

    def row_count(self, df: Any) -> int:
        return self.profile(df)["rows"]

    def null_count(self, df: Any, column: Any) -> int:
        return self.profile(df, [column])[f"nulls:{column}"]

    @staticmethod
    def column_schema(df: Any) -> list[tuple[str, str]]:
        return [(f.name, f.dataType.simpleString()) for f in df.schema.fields]

    @staticmethod
    def is_frame(obj: Any) -> bool:
        """Whether ``obj`` is a Spark DataFrame (classic or Spark Connect)."""
        try:
            from pyspark.sql import DataFrame
        except ImportError:
            return False
        return isinstance(obj, DataFrame)

    @staticmethod
    def type_family(dtype: str) -> str:
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

    @staticmethod
    def sample(df: Any, n: int) -> list[dict[str, Any]]:
        """The first ``n`` rows as dicts (only these reach the driver)."""
        if n <= 0:
            return []
        return [row.asDict(recursive=True) for row in df.limit(n).collect()]

    @staticmethod
    def preview_markdown(df: Any, n: int = 5) -> str:
        """A markdown table of the first ``n`` rows (only these reach the driver)."""
        return markdown_table(df.columns, df.limit(max(n, 0)).collect())

    # --------------------------------------------------------------- helpers

    @staticmethod
    def _uri(loc: Location, where: str) -> str:
        from odibi_dagster.resources.spark import opened

        if not loc.spark_uri:
            fail(where, loc.spark_note or f"Spark cannot reach '{loc.uri}'")
        opened(loc.spark_uri)
        return loc.spark_uri
