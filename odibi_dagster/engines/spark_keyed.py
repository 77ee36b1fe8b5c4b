"""The keyed write modes on Spark (see :mod:`odibi_dagster.engines.keyed`).

Delta: one SQL ``MERGE INTO delta.`<path>``` commit, with the rows to write as a
temporary view of a unique name (dropped after), tried again on the newer version when
another write committed first; its counts are what the merge statement returns. Plain
Spark SQL, so the same code runs on a classic session and over Spark Connect (where
Delta's ``DeltaTable`` API would need the Delta Connect server plugin).
CSV, JSON and Parquet: the target is read, joined with the rows and the result written
beside it and swapped in under the target's lock (the engine's safe overwrite), so a
job that fails leaves the old data.
"""

from __future__ import annotations

import contextlib
import re
import uuid
from typing import TYPE_CHECKING, Any

from odibi_dagster.engines.base import MergeOutcome
from odibi_dagster.engines.keyed import (
    DELETE_FLAG,
    KeyedWrite,
    bad_keys,
    merge_conditions,
    require_columns,
    retry_on_conflict,
)
from odibi_dagster.engines.messages import fail, require_same_columns
from odibi_dagster.errors import redact
from odibi_dagster.resources.base import Location

if TYPE_CHECKING:
    from odibi_dagster.engines.spark import SparkEngine


def _q(column: str) -> str:
    return "`" + column.replace("`", "``") + "`"


def check_incoming(df: Any, kw: KeyedWrite, where: str, connect: bool = False) -> None:
    """Keys (and update columns) present, not null, not repeated in the rows to write:
    one aggregation, of which at most five keys reach the driver."""
    from odibi_dagster.engines.spark import _functions

    F = _functions(connect)

    require_columns(where, kw, list(df.columns), "the result")
    null = " OR ".join(f"{_q(k)} IS NULL" for k in kw.keys)
    bad = (
        df.groupBy(*[F.col(_q(k)) for k in kw.keys])
        .agg(F.count(F.lit(1)).alias("__odibi_rows"))
        .where(f"__odibi_rows > 1 OR {null}")
        .select(*[F.col(_q(k)) for k in kw.keys])
        .limit(6)
        .collect()
    )
    if bad:
        count = str(len(bad)) if len(bad) <= 5 else "more than 5"
        bad_keys(where, kw, [r.asDict() for r in bad[:5]], count)


def with_delete_flag(df: Any, kw: KeyedWrite, where: str, connect: bool = False) -> Any:
    """``df`` with :data:`DELETE_FLAG`: whether each row meets ``delete_condition``."""
    if kw.delete_condition is None:
        return df
    from odibi_dagster.engines.spark import _functions, _spark_errors, first_message

    F = _functions(connect)

    try:
        out = df.withColumn(
            DELETE_FLAG, F.coalesce(F.expr(kw.delete_condition).cast("boolean"), F.lit(False))
        )
        _ = out.columns  # over Spark Connect, a bad condition shows only when analysed
        return out
    except _spark_errors() as exc:
        fail(
            where,
            f"write option delete_condition {kw.delete_condition!r} is not a condition over "
            f"the result's columns ({first_message(exc)}). Fix it, e.g. op = 'D'",
        )


def merge_delta(
    engine: SparkEngine,
    df: Any,
    loc: Location,
    uri: str,
    kw: KeyedWrite,
    partition_by: list[str],
    where: str,
) -> MergeOutcome:
    """Merge ``df`` into the Delta table at ``uri`` (created from ``df``, partitioned by
    ``partition_by``, if not there)."""
    from odibi_dagster.engines.spark import _functions, _spark_errors, first_message

    spark = engine.spark
    table = f"delta.{_q(uri)}"
    if _delta_columns(spark, table) is None:
        rows = df
        if kw.delete_condition is not None:
            rows = rows.where(~_functions(engine.connect).col(DELETE_FLAG)).drop(DELETE_FLAG)
        if not kw.insert:
            rows = rows.limit(0)
        if engine.exists(loc, "delta"):
            fail(
                where,
                f"output path '{loc.uri}' exists but is not a Delta table (no _delta_log); "
                f"mode {kw.mode} would mix a Delta table into other data. It was left "
                "unchanged. Choose another path, or remove what is there first",
            )
        try:
            writer = rows.write.format("delta").mode("error")
            if partition_by:
                writer = writer.partitionBy(*partition_by)
            writer.save(uri)
            return MergeOutcome(inserted=int(spark.read.format("delta").load(uri).count()))
        except _spark_errors():
            if _delta_columns(spark, table) is None:
                raise
            # another write created the table first: merge into it

    view = f"__odibi_merge_{uuid.uuid4().hex}"

    def attempt() -> MergeOutcome:
        target_cols = _delta_columns(spark, table) or []
        require_columns(where, kw, target_cols, f"the target '{loc.uri}'")
        incoming = [c for c in df.columns if c != DELETE_FLAG]
        if kw.mode != "merge":
            require_same_columns(where, loc.uri, target_cols, incoming)
        elif extra := [c for c in incoming if c not in target_cols]:
            fail(where, f"the result's column(s) {extra} are not in the target '{loc.uri}'")
        row = spark.sql(merge_statement(table, view, kw, list(df.columns))).collect()[0]
        got = row.asDict()
        return MergeOutcome(
            inserted=int(got.get("num_inserted_rows") or 0),
            updated=int(got.get("num_updated_rows") or 0),
            deleted=int(got.get("num_deleted_rows") or 0),
        )

    def give_up() -> MergeOutcome:
        fail(
            where,
            f"other writes to Delta table '{loc.uri}' kept committing while this {kw.mode} "
            "was being committed; nothing of it was committed. Re-run the node",
        )

    df.createOrReplaceTempView(view)
    try:
        return retry_on_conflict(attempt, _is_conflict, give_up)
    except _spark_errors() as exc:
        msg = redact(first_message(exc), loc.storage_options, loc.uri)
        fail(
            where,
            f"could not {kw.mode} into Delta table '{loc.uri}' ({msg}); nothing was written. "
            "Check the keys, the options and the data's types",
        )
    finally:
        with contextlib.suppress(*_spark_errors()):
            spark.catalog.dropTempView(view)


def merge_statement(table: str, view: str, kw: KeyedWrite, columns: list[str]) -> str:
    """The ``MERGE INTO`` of ``kw``'s mode: target ``table`` as ``t``, the rows of the
    temporary view ``view`` (``columns``, with :data:`DELETE_FLAG` when deleting) as ``s``."""
    on, sets, values, delete_when, keep_when = merge_conditions(kw, columns, _q)
    parts = [f"MERGE INTO {table} AS t USING {_q(view)} AS s ON {on}"]
    if kw.mode == "upsert":
        parts += ["WHEN MATCHED THEN UPDATE SET *", "WHEN NOT MATCHED THEN INSERT *"]
    elif kw.mode == "append_once":
        parts.append("WHEN NOT MATCHED THEN INSERT *")
    else:
        keep = f" AND {keep_when}" if keep_when is not None else ""
        if delete_when is not None:
            parts.append(f"WHEN MATCHED AND {delete_when} THEN DELETE")
        if sets:
            assign = ", ".join(f"{c} = {v}" for c, v in sets.items())
            parts.append(f"WHEN MATCHED{keep} THEN UPDATE SET {assign}")
        if kw.insert:
            cols = ", ".join(values)
            vals = ", ".join(values.values())
            parts.append(f"WHEN NOT MATCHED{keep} THEN INSERT ({cols}) VALUES ({vals})")
    return "\n".join(parts)


def _delta_columns(spark: Any, table: str) -> list[str] | None:
    """The columns of Delta table ``table`` (``delta.`<path>```), None when no Delta
    table is there. Asked by SQL, which a classic session and Spark Connect both answer."""
    from odibi_dagster.engines.spark import _error_class, _spark_errors, first_message

    try:
        spark.sql(f"DESCRIBE DETAIL {table}").collect()
    except _spark_errors() as exc:
        text = f"{_error_class(exc)} {first_message(exc)}"
        if _MISSING.search(text):
            return None
        raise
    return [str(c) for c in spark.sql(f"SELECT * FROM {table} LIMIT 0").columns]


_MISSING = re.compile(
    r"DELTA_MISSING_DELTA_TABLE|DELTA_TABLE_NOT_FOUND|PATH_NOT_FOUND|is not a Delta table"
)


def _is_conflict(exc: BaseException) -> bool:
    """Whether ``exc`` is Delta's word that another commit got there first
    (``ConcurrentAppendException`` and its kin, ``[DELTA_CONCURRENT_...]``)."""
    from odibi_dagster.engines.spark import _error_class, first_message

    # over Spark Connect the error arrives as a pyspark.errors exception whose text
    # names the Java class; on a classic session, as the JVM's own exception
    text = f"{_error_class(exc)} {first_message(exc)} {str(exc)[:4000]}"
    return bool(_CONFLICT.search(text))


_CONFLICT = re.compile(
    r"DELTA_CONCURRENT|DELTA_METADATA_CHANGED|DELTA_PROTOCOL_CHANGED"
    r"|Concurrent\w*Exception|MetadataChangedException|ProtocolChangedException"
)


def merge_files(
    engine: SparkEngine, old: Any, df: Any, kw: KeyedWrite, where: str, uri: str
) -> tuple[Any, MergeOutcome]:
    """``old`` (the target) after writing ``df`` in ``kw``'s mode (upsert or
    append_once), with the outcome: (frame to write or None to leave it, outcome)."""
    old_cols = list(old.columns)
    require_columns(where, kw, old_cols, f"the target '{uri}'")
    require_same_columns(where, uri, old_cols, list(df.columns))
    df = df.select(*[_q(c) for c in old_cols])
    keys = [_q(k) for k in kw.keys]
    new_rows = df.join(old.select(*keys), kw.keys, "left_anti")
    inserted = int(new_rows.count())
    if kw.mode == "append_once":
        if not inserted:
            return None, MergeOutcome(written=False)
        return old.unionByName(new_rows), MergeOutcome(inserted=inserted)
    total = int(df.count())
    kept = old.join(df.select(*keys), kw.keys, "left_anti")
    return kept.unionByName(df), MergeOutcome(inserted=inserted, updated=total - inserted)
