"""SCD type 2 history, dimensions with surrogate keys, and facts that look them up.

Each function takes a :class:`~odibi_dagster.patterns.context.PatternContext` and the
pattern's parameters, and returns the frame the node writes (the whole table: write it
with mode overwrite). All the work is SQL on the node's engine.
"""

from __future__ import annotations

from typing import Any

from odibi_dagster.engines.base import Frame
from odibi_dagster.engines.messages import fail
from odibi_dagster.errors import storage_errors
from odibi_dagster.patterns.context import PatternContext
from odibi_dagster.patterns.params import (
    AuditParams,
    DimensionParams,
    FactParams,
    Scd2Params,
)

# the internal column the SCD2 join adds to each source row
_STATE = "__odibi_scd_state"
_NEW_END = "__odibi_new_end"


def _require(ctx: PatternContext, cols: list[str], needed: list[str], what: str, of: str) -> None:
    for c in needed:
        if c not in cols:
            fail(
                ctx.where,
                f"{what} names column '{c}', which is not a column of {of} "
                f"(columns: {', '.join(cols)})",
            )


def _unique_keys(ctx: PatternContext, src: Frame, keys: list[str], what: str) -> None:
    """Fail when a source row has a null key (it would match no row of the table, so each
    run would add it again) or two source rows share a key (they would open two current
    versions)."""
    s = ctx.dialect
    counts = ", ".join(
        f"COUNT(CASE WHEN {s.q(k)} IS NULL THEN 1 END) AS n{i}" for i, k in enumerate(keys)
    )
    (found,) = ctx.rows(f"SELECT {counts} FROM src", 1, src=src)
    nulls = [(k, int(found[f"n{i}"] or 0)) for i, k in enumerate(keys)]
    nulls = [(k, n) for k, n in nulls if n]
    if nulls:
        shown = ", ".join(f"'{k}' is null in {n} row(s)" for k, n in nulls)
        fail(
            ctx.where,
            f"{what}: key column {shown} of the input; nothing was written. A row without "
            "a key matches no row of the table and would be added again on every run: "
            "filter those rows out or fill the key (e.g. in a SQL step) before the pattern",
        )
    k = s.cols(keys)
    dups = ctx.rows(f"SELECT {k} FROM src GROUP BY {k} HAVING COUNT(*) > 1", 3, src=src)
    if dups:
        shown = ", ".join("(" + ", ".join(f"{c}={r.get(c)!r}" for c in keys) + ")" for r in dups)
        fail(
            ctx.where,
            f"{what}: the input has more than one row for key(s) {shown} on "
            f"[{', '.join(keys)}]; nothing was written. Keep one row per key (e.g. the latest "
            "in a SQL step) before the pattern",
        )


# --------------------------------------------------------------------------- scd2


def scd2_history(
    ctx: PatternContext,
    src: Frame,
    existing: Frame | None,
    p: Scd2Params,
) -> Frame:
    """The whole history table after ``src`` arrives: for each key whose ``track_cols``
    differ from its current version, the current version is closed (its end is the new
    row's ``effective_time_col``, its flag false) and the new row is added as current; new
    keys are added as current; everything else is kept as it was."""
    s = ctx.dialect
    keys, eff, end, flag = p.keys, p.effective_time_col, p.end_time_col, p.current_flag_col
    scols = ctx.columns(src)
    _require(ctx, scols, [*keys, *p.track_cols, eff], "scd2", "the input")
    if p.delete_col is not None:
        _require(ctx, scols, [p.delete_col], "scd2 delete_col", "the input")
    _unique_keys(ctx, src, keys, "scd2")
    data = [c for c in scols if c not in (end, flag)]
    open_end = f"CASE WHEN FALSE THEN s.{s.q(eff)} END"  # null, of the start column's type
    deleted = f"COALESCE(s.{s.q(p.delete_col)}, FALSE)" if p.delete_col else "FALSE"
    if existing is None:
        return ctx.sql(
            f"SELECT {s.cols(data, 's')}, {open_end} AS {s.q(end)}, TRUE AS {s.q(flag)} "
            f"FROM src s WHERE NOT {deleted}",
            src=src,
        )
    tcols = ctx.columns(existing)
    _require(ctx, tcols, [*keys, *p.track_cols, flag, end], "scd2", "the target")
    out = [*tcols, *(c for c in data if c not in tcols)]
    on = " AND ".join(f"s.{s.q(k)} = c.{s.q(k)}" for k in keys)
    changed = " OR ".join(s.differs(f"s.{s.q(c)}", f"c.{s.q(c)}") for c in p.track_cols)
    first_key = f"c.{s.q(keys[0])}"
    state = (
        f"CASE WHEN {first_key} IS NULL THEN (CASE WHEN {deleted} THEN 'skip' ELSE 'new' END) "
        f"WHEN {deleted} THEN 'deleted' WHEN {changed} THEN 'changed' ELSE 'same' END"
    )
    joined = (
        f"SELECT s.*, {state} AS {s.q(_STATE)} FROM src s "
        f"LEFT JOIN (SELECT * FROM tgt WHERE {s.q(flag)} = TRUE) c ON {on}"
    )
    closing = (
        f"SELECT {s.cols(keys)}, {s.q(eff)} AS {s.q(_NEW_END)} FROM j "
        f"WHERE {s.q(_STATE)} IN ('changed', 'deleted')"
    )
    x_on = " AND ".join(f"t.{s.q(k)} = x.{s.q(k)}" for k in keys)
    matched = f"x.{s.q(_NEW_END)} IS NOT NULL"
    kept = []
    for c in out:
        if c == end:
            kept.append(f"CASE WHEN {matched} THEN x.{s.q(_NEW_END)} ELSE t.{s.q(c)} END")
        elif c == flag:
            kept.append(f"CASE WHEN {matched} THEN FALSE ELSE t.{s.q(c)} END")
        elif c in tcols:
            kept.append(f"t.{s.q(c)}")
        else:
            kept.append("NULL")
    added = []
    for c in out:
        if c == end:
            added.append(f"CASE WHEN FALSE THEN j.{s.q(eff)} END")
        elif c == flag:
            added.append("TRUE")
        elif c in data:
            added.append(f"j.{s.q(c)}")
        else:
            added.append("NULL")
    names = [s.q(c) for c in out]
    query = (
        f"WITH j AS ({joined}), x AS ({closing}) "
        f"SELECT {', '.join(f'{e} AS {n}' for e, n in zip(kept, names, strict=True))} "
        f"FROM tgt t LEFT JOIN x ON {x_on} AND t.{s.q(flag)} = TRUE "
        "UNION ALL "
        f"SELECT {', '.join(f'{e} AS {n}' for e, n in zip(added, names, strict=True))} "
        f"FROM j WHERE j.{s.q(_STATE)} IN ('new', 'changed')"
    )
    return ctx.sql(query, src=src, tgt=existing)


def scd2(ctx: PatternContext, **params: Any) -> Frame:
    """Odibi's ``scd2`` (pattern and transformer): the full history to write (overwrite)."""
    p = Scd2Params.model_validate(params)
    src = ctx.current("scd2")
    target = ctx.target(p.target, p.connection, p.path)
    if target is None:
        fail(ctx.where, "scd2 needs `target` (or `connection` + `path`), or a `write:`")
    existing = ctx.read_target(target)
    ctx.metadata["odibi/pattern_target"] = target.describe()
    return scd2_history(ctx, src, existing, p)


# --------------------------------------------------------------------------- dimension


def _max_key(ctx: PatternContext, existing: Frame | None, sk: str) -> str:
    """SQL for the largest surrogate key of the target ``tgt`` (0 when there is none)."""
    if existing is None or sk not in ctx.columns(existing):
        return "0"
    return f"(SELECT COALESCE(MAX({ctx.dialect.q(sk)}), 0) FROM tgt)"


def _keyed_sql(
    ctx: PatternContext, df: Frame, existing: Frame | None, sk: str, order: list[str]
) -> Frame:
    """``df`` with surrogate keys: rows whose ``sk`` is null (all rows, when ``df`` has no
    ``sk``) are numbered after the target's largest key (computed in the same query), in
    ``order``; the others keep theirs."""
    s = ctx.dialect
    start = _max_key(ctx, existing, sk)
    tables = {"d": df} if start == "0" else {"d": df, "tgt": existing}
    cols = ctx.columns(df)
    number = f"CAST({start} + ROW_NUMBER() OVER (ORDER BY {s.cols(order)}) AS BIGINT)"
    if sk not in cols:
        return ctx.sql(f"SELECT {number} AS {s.q(sk)}, {s.cols(cols)} FROM d", **tables)
    keyed = ", ".join(f"CAST({s.q(c)} AS BIGINT) AS {s.q(c)}" if c == sk else s.q(c) for c in cols)
    fresh = ", ".join(f"{number} AS {s.q(c)}" if c == sk else s.q(c) for c in cols)
    return ctx.sql(
        f"SELECT {keyed} FROM d WHERE {s.q(sk)} IS NOT NULL "
        f"UNION ALL SELECT {fresh} FROM d WHERE {s.q(sk)} IS NULL",
        **tables,
    )


def _aligned(ctx: PatternContext, out: list[str], have: list[str], alias: str) -> str:
    """Select list giving ``out`` from a relation ``alias`` with columns ``have``."""
    s = ctx.dialect
    return ", ".join((f"{alias}.{s.q(c)}" if c in have else "NULL") + f" AS {s.q(c)}" for c in out)


def _scd0(ctx: PatternContext, src: Frame, existing: Frame | None, p: DimensionParams) -> Frame:
    nk, sk = p.natural_key, p.surrogate_key
    if existing is None:
        return _keyed_sql(ctx, src, None, sk, [nk])
    s = ctx.dialect
    tcols, scols = ctx.columns(existing), ctx.columns(src)
    _require(ctx, tcols, [nk], "dimension natural_key", "the target")
    new = ctx.sql(
        f"SELECT s.* FROM src s WHERE NOT EXISTS "
        f"(SELECT 1 FROM tgt t WHERE t.{s.q(nk)} = s.{s.q(nk)})",
        src=src,
        tgt=existing,
    )
    new = _keyed_sql(ctx, new, existing, sk, [nk])
    out = [*tcols, *(c for c in scols if c not in tcols)]
    ncols = ctx.columns(new)
    return ctx.sql(
        f"SELECT {_aligned(ctx, out, tcols, 't')} FROM tgt t "
        f"UNION ALL SELECT {_aligned(ctx, out, ncols, 'n')} FROM new n",
        tgt=existing,
        new=new,
    )


def _scd1(ctx: PatternContext, src: Frame, existing: Frame | None, p: DimensionParams) -> Frame:
    """New keys inserted with new surrogate keys; keys already there take the incoming
    values and keep their surrogate key; keys not in the input stay as they were."""
    nk, sk = p.natural_key, p.surrogate_key
    if existing is None:
        return _keyed_sql(ctx, src, None, sk, [nk])
    s = ctx.dialect
    tcols, scols = ctx.columns(existing), ctx.columns(src)
    _require(ctx, tcols, [nk, sk], "dimension", "the target")
    data = [c for c in scols if c != sk]
    with_sk = ctx.sql(
        f"SELECT e.{s.q(sk)} AS {s.q(sk)}, {s.cols(data, 's')} FROM src s LEFT JOIN "
        f"(SELECT {s.q(nk)}, MAX({s.q(sk)}) AS {s.q(sk)} FROM tgt GROUP BY {s.q(nk)}) e "
        f"ON s.{s.q(nk)} = e.{s.q(nk)}",
        src=src,
        tgt=existing,
    )
    with_sk = _keyed_sql(ctx, with_sk, existing, sk, [nk])
    out = [*tcols, *(c for c in scols if c not in tcols)]
    kcols = ctx.columns(with_sk)
    return ctx.sql(
        f"SELECT {_aligned(ctx, out, tcols, 't')} FROM tgt t WHERE NOT EXISTS "
        f"(SELECT 1 FROM src s WHERE s.{s.q(nk)} = t.{s.q(nk)}) "
        f"UNION ALL SELECT {_aligned(ctx, out, kcols, 'k')} FROM keyed k",
        tgt=existing,
        src=src,
        keyed=with_sk,
    )


def _scd2_dimension(
    ctx: PatternContext, src: Frame, existing: Frame | None, p: DimensionParams
) -> Frame:
    """Each version of a key its own surrogate key: the input is stamped with this run's
    time as ``valid_from``, SCD2 history is kept on ``track_cols``, and the versions it
    opened are numbered after the target's largest key."""
    s = ctx.dialect
    nk, sk, vf = p.natural_key, p.surrogate_key, p.valid_from_col
    data = [c for c in ctx.columns(src) if c not in (vf, p.valid_to_col, p.is_current_col, sk)]
    stamped = ctx.sql(f"SELECT {s.cols(data)}, {s.ts(ctx.now)} AS {s.q(vf)} FROM src", src=src)
    history = scd2_history(
        ctx,
        stamped,
        existing,
        Scd2Params(
            keys=[nk],
            track_cols=list(p.track_cols or []),
            effective_time_col=vf,
            end_time_col=p.valid_to_col,
            current_flag_col=p.is_current_col,
        ),
    )
    return _keyed_sql(ctx, history, existing, sk, [nk, vf])


def add_audit(ctx: PatternContext, df: Frame, audit: AuditParams) -> Frame:
    """``load_timestamp`` (this run's time) and ``source_system`` on every row."""
    s = ctx.dialect
    extra = {}
    if audit.load_timestamp:
        extra["load_timestamp"] = s.ts(ctx.now)
    if audit.source_system:
        extra["source_system"] = s.text(audit.source_system)
    if not extra:
        return df
    cols = [c for c in ctx.columns(df) if c not in extra]
    added = ", ".join(f"{v} AS {s.q(k)}" for k, v in extra.items())
    return ctx.sql(f"SELECT {s.cols(cols)}, {added} FROM d", d=df)


def _unknown_member(ctx: PatternContext, df: Frame, p: DimensionParams) -> Frame:
    """``df`` with the unknown member (surrogate key 0) first, unless a row has key 0."""
    s = ctx.dialect
    values = []
    for col, family in ctx.families(df).items():
        if col == p.surrogate_key:
            v = "CAST(0 AS BIGINT)"
        elif col == p.natural_key:
            v = "-1" if family in ("integer", "float") else "'-1'"
        elif col == p.valid_from_col and p.scd_type == 2:
            v = s.ts(ctx.now.replace(1900, 1, 1, 0, 0, 0, 0))
        elif col == p.valid_to_col and p.scd_type == 2:
            v = "NULL"
        elif col == p.is_current_col and p.scd_type == 2:
            v = "TRUE"
        elif col == "load_timestamp":
            v = s.ts(ctx.now)
        elif col == "source_system":
            v = s.text(p.audit.source_system or "Unknown")
        elif family in ("integer", "float"):
            v = "0"
        elif family == "string" or family == "object":
            v = "'Unknown'"
        else:
            v = "NULL"
        values.append(f"{v} AS {s.q(col)}")
    cols = ctx.columns(df)
    return ctx.sql(
        f"SELECT {', '.join(values)} FROM (SELECT 1 AS one) u WHERE NOT EXISTS "
        f"(SELECT 1 FROM d WHERE {s.q(p.surrogate_key)} = 0) "
        f"UNION ALL SELECT {s.cols(cols)} FROM d",
        d=df,
    )


def dimension(ctx: PatternContext, **params: Any) -> Frame:
    """Odibi's ``dimension`` pattern: surrogate keys, SCD type 0/1/2, audit columns and
    the unknown member; the whole dimension to write (overwrite)."""
    p = DimensionParams.model_validate(params)
    src = ctx.current("the dimension pattern")
    scols = ctx.columns(src)
    _require(ctx, scols, [p.natural_key, *(p.track_cols or [])], "dimension", "the input")
    _unique_keys(ctx, src, [p.natural_key], "dimension")
    target = ctx.target(p.target, p.connection, p.path)
    if target is None and p.scd_type == 2:
        fail(ctx.where, "dimension scd_type 2 needs `target` (or a `write:`): its history")
    existing = ctx.read_target(target)
    if target is not None:
        ctx.metadata["odibi/pattern_target"] = target.describe()
    if p.scd_type == 0:
        result = _scd0(ctx, src, existing, p)
    elif p.scd_type == 1:
        result = _scd1(ctx, src, existing, p)
    else:
        result = _scd2_dimension(ctx, src, existing, p)
    result = add_audit(ctx, result, p.audit)
    if p.unknown_member:
        result = _unknown_member(ctx, result, p)
    return result


# --------------------------------------------------------------------------- fact


def _is_expression(expr: str) -> bool:
    """Odibi's rule: parentheses, or an operator with spaces around it."""
    return "(" in expr or ")" in expr or any(op in expr for op in (" + ", " - ", " * ", " / "))


def fact(ctx: PatternContext, **params: Any) -> Frame:
    """Odibi's ``fact`` pattern: each ``dimensions`` entry adds the dimension's surrogate
    key by the business key; orphans get key 0 (``unknown``), fail the node (``reject``)
    or are appended to a quarantine table and left out (``quarantine``)."""
    p = FactParams.model_validate(params)
    s = ctx.dialect
    df = ctx.current("the fact pattern")
    if p.deduplicate and p.keys:
        cols = ctx.columns(df)
        _require(ctx, cols, p.keys, "fact keys", "the input")
        df = ctx.sql(
            f"SELECT {s.cols(cols)} FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY "
            f"{s.cols(p.keys)} ORDER BY {s.cols(p.keys)}) AS __odibi_rn FROM d) r "
            "WHERE __odibi_rn = 1",
            d=df,
        )
    orphans: list[Frame] = []
    for dim in p.dimensions:
        table = ctx.get(dim.dimension_table)
        dcols = ctx.columns(table)
        _require(
            ctx,
            dcols,
            [dim.dimension_key, dim.surrogate_key],
            f"fact lookup on {dim.dimension_table}",
            f"node '{dim.dimension_table}'",
        )
        cols = ctx.columns(df)
        _require(ctx, cols, [dim.source_column], "fact source_column", "the input")
        current = ""
        if dim.scd2:
            flag = dim.current_flag_col
            if flag not in dcols:
                fail(
                    ctx.where,
                    f"fact lookup on {dim.dimension_table} has scd2: true, but "
                    f"'{dim.dimension_table}' has no column '{flag}' to pick its current "
                    f"versions (columns: {', '.join(dcols)}); nothing was written. Name the "
                    "dimension's current flag with current_flag_col, or set scd2: false",
                )
            current = f" WHERE {s.q(flag)} = TRUE"
        keep = [c for c in cols if c != dim.surrogate_key]
        joined = ctx.sql(
            f"SELECT {s.cols(keep, 'f')}, d.__odibi_sk AS {s.q(dim.surrogate_key)} FROM f "
            f"LEFT JOIN (SELECT {s.q(dim.dimension_key)} AS __odibi_key, "
            f"{s.q(dim.surrogate_key)} AS __odibi_sk FROM dim{current}) d "
            f"ON f.{s.q(dim.source_column)} = d.__odibi_key",
            f=df,
            dim=table,
        )
        sk = s.q(dim.surrogate_key)
        if p.orphan_handling == "reject":
            found = ctx.rows(f"SELECT * FROM j WHERE {sk} IS NULL", 3, j=joined)
            if found:
                values = ", ".join(repr(r.get(dim.source_column)) for r in found)
                fail(
                    ctx.where,
                    f"fact: rows whose {dim.source_column} ({values}, ...) is not a "
                    f"{dim.dimension_key} of '{dim.dimension_table}', and orphan_handling is "
                    "reject; nothing was written. Load the missing dimension rows, or use "
                    "orphan_handling unknown (key 0) or quarantine",
                )
            df = joined
        elif p.orphan_handling == "unknown":
            jcols = ctx.columns(joined)
            df = ctx.sql(
                "SELECT "
                + ", ".join(
                    f"COALESCE({s.q(c)}, 0) AS {s.q(c)}" if c == dim.surrogate_key else s.q(c)
                    for c in jcols
                )
                + " FROM j",
                j=joined,
            )
        else:
            q = p.quarantine
            assert q is not None
            extra = []
            if q.add_columns.rejection_reason:
                reason = (
                    f"Orphan record: no match in dimension '{dim.dimension_table}' on "
                    f"column '{dim.source_column}'"
                )
                extra.append(f"{s.text(reason)} AS _rejection_reason")
            if q.add_columns.rejected_at:
                extra.append(f"{s.ts(ctx.now)} AS _rejected_at")
            if q.add_columns.source_dimension:
                extra.append(f"{s.text(dim.dimension_table)} AS _source_dimension")
            orphans.append(
                ctx.sql(
                    f"SELECT *{''.join(', ' + e for e in extra)} FROM j WHERE {sk} IS NULL",
                    j=joined,
                )
            )
            df = ctx.sql(f"SELECT * FROM j WHERE {sk} IS NOT NULL", j=joined)
    if orphans:
        _quarantine(ctx, orphans, p)
    for m in p.measures:
        if isinstance(m, str):
            continue
        ((name, expr),) = m.items()
        cols = ctx.columns(df)
        if _is_expression(expr):
            keep = [c for c in cols if c != name]
            df = ctx.sql(f"SELECT {s.cols(keep)}, {expr} AS {s.q(name)} FROM d", d=df)
        else:
            _require(ctx, cols, [expr], f"measure {name}", "the fact")
            df = ctx.sql(
                "SELECT "
                + ", ".join(f"{s.q(c)} AS {s.q(name)}" if c == expr else s.q(c) for c in cols)
                + " FROM d",
                d=df,
            )
    if p.grain:
        _require(ctx, ctx.columns(df), p.grain, "fact grain", "the fact")
        g = s.cols(p.grain)
        dups = ctx.rows(f"SELECT {g} FROM d GROUP BY {g} HAVING COUNT(*) > 1", 3, d=df)
        if dups:
            shown = ", ".join(str(tuple(r.values())) for r in dups)
            fail(
                ctx.where,
                f"fact: more than one row at grain [{', '.join(p.grain)}], e.g. {shown}; "
                "nothing was written. Deduplicate the input (deduplicate: true with keys) "
                "or fix the grain",
            )
    return add_audit(ctx, df, p.audit)


def _quarantine(ctx: PatternContext, orphans: list[Frame], p: FactParams) -> None:
    """Append the orphan rows to the quarantine table (created by the first)."""
    q = p.quarantine
    assert q is not None
    target = ctx.target(None, q.connection, q.where_to)
    assert target is not None
    loc = ctx.location(target)
    for df in orphans:
        if ctx.engine.cheap_row_count(df) == 0 or not ctx.rows("SELECT 1 AS one FROM d", 1, d=df):
            continue
        with storage_errors(ctx.where, "writing", loc.uri, loc.storage_options):
            ctx.engine.write(df, loc, target.format, "append", {}, where=ctx.where)
        ctx.metadata["odibi/quarantine"] = target.describe()
