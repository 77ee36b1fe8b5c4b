"""The keyed write modes on pandas (see :mod:`odibi_dagster.engines.keyed`).

Delta: one delta-rs ``DeltaTable.merge`` commit, tried again on the newer version when
another write committed first. CSV, JSON and Parquet: the target is read, merged in
memory and the result swapped in whole under the target's lock (``engines.replace``),
so a write that fails or is killed leaves the old file.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

import pandas as pd
import pyarrow as pa
from deltalake import DeltaTable
from deltalake.exceptions import CommitFailedError, DeltaError

from odibi_dagster.engines.base import MergeOutcome
from odibi_dagster.engines.duckdb_sql import run_sql
from odibi_dagster.engines.keyed import (
    DELETE_FLAG,
    KeyedWrite,
    bad_keys,
    merge_conditions,
    require_columns,
    retry_on_conflict,
)
from odibi_dagster.engines.messages import fail, require_same_columns
from odibi_dagster.engines.pandas_delta import (
    delta_detail,
    is_delta_table,
    remove_stale_delta_rs_files,
    write_delta,
)
from odibi_dagster.engines.pandas_errors import to_arrow
from odibi_dagster.errors import OdibiRunError
from odibi_dagster.resources.base import Location

# the format options of a Delta table that only creating it uses
DELTA_CREATE_OPTIONS = ("partition_by", "partitionBy", "configuration", "name", "description")


def check_incoming(df: pd.DataFrame, kw: KeyedWrite, where: str) -> None:
    """Keys (and update columns) present, not null, not repeated in the rows to write."""
    require_columns(where, kw, [str(c) for c in df.columns], "the result")
    keys = df[kw.keys]
    if len(kw.keys) == 1:  # one hash pass, the common case
        one = keys.iloc[:, 0]
        if one.is_unique and not one.hasnans:
            return
    bad = keys.isna().any(axis=1) | keys.duplicated(keep=False)
    if bad.any():
        found = keys[bad].drop_duplicates()
        samples = found.head(5).astype(object).where(found.head(5).notna(), None)
        bad_keys(where, kw, samples.to_dict(orient="records"), len(found))


def with_delete_flag(df: pd.DataFrame, kw: KeyedWrite, where: str) -> pd.DataFrame:
    """``df`` with :data:`DELETE_FLAG`: whether each row meets ``delete_condition``."""
    if kw.delete_condition is None:
        return df
    answer = run_sql(
        f"SELECT COALESCE(({kw.delete_condition}), FALSE) AS d FROM incoming",
        {"incoming": df},
        where=where,
    )
    return df.assign(**{DELETE_FLAG: answer["d"].astype(bool).to_numpy()})


def _key_index(df: pd.DataFrame, keys: list[str]) -> pd.MultiIndex:
    return pd.MultiIndex.from_frame(df[keys].astype(object))


def merge_frames(
    old: pd.DataFrame, new: pd.DataFrame, kw: KeyedWrite, where: str, uri: str
) -> tuple[pd.DataFrame, MergeOutcome]:
    """The target ``old`` after writing ``new`` in ``kw``'s mode, and what changed. Rows
    not touched keep their order; updated rows and inserted ones follow."""
    old_cols = [str(c) for c in old.columns]
    require_columns(where, kw, old_cols, f"the target '{uri}'")
    if kw.mode != "merge":
        require_same_columns(where, uri, old_cols, [str(c) for c in new.columns])
    elif extra := [str(c) for c in new.columns if c not in old_cols and c != DELETE_FLAG]:
        fail(where, f"the result's column(s) {extra} are not in the target '{uri}'")
    new_idx, old_idx = _key_index(new, kw.keys), _key_index(old, kw.keys)
    matched = new_idx.isin(old_idx)  # incoming rows whose keys are in the target
    touched = old_idx.isin(new_idx)  # target rows an incoming row matches
    deleting = new[DELETE_FLAG].to_numpy(bool) if DELETE_FLAG in new else None
    keep = ~deleting if deleting is not None else pd.Series(True, index=new.index).to_numpy()
    inserts = new[~matched & keep] if kw.insert else new.iloc[0:0]
    inserts = inserts.reindex(columns=old.columns)
    if kw.mode == "append_once":
        out = pd.concat([old, inserts], ignore_index=True) if len(inserts) else old
        return out, MergeOutcome(inserted=len(inserts), written=bool(len(inserts)))
    updating = new[matched & keep]
    update = kw.update_columns if kw.update_columns is not None else old_cols
    update = [c for c in update if c not in kw.keys]
    base = old[touched]
    base = base.set_axis(_key_index(base, kw.keys), axis=0)
    changes = updating.set_axis(_key_index(updating, kw.keys), axis=0)
    updated = base.loc[base.index.isin(changes.index)].copy()
    for c in update:
        updated[c] = changes.loc[updated.index, c].to_numpy()
    deleted = int(touched.sum()) - len(updated)
    out = pd.concat([old[~touched], updated.reset_index(drop=True), inserts], ignore_index=True)
    return out, MergeOutcome(inserted=len(inserts), updated=len(updated), deleted=deleted)


# ---------------------------------------------------------------------------- Delta


# how long a keyed write waits for another write to finish creating the table it found
# half created (data files, no log yet) before calling what is there "not a Delta table"
CREATION_WAIT = 30.0
# what a table being created holds: its data files (delta-rs writes one as <file>#<n> on
# local disk and renames it when complete) and, last, its log
_BEING_CREATED = re.compile(r"(\.parquet(#\d+)?|^_delta_log)$")


def _wait_while_created(loc: Location, where: str) -> None:
    """Wait (bounded) while the folder at ``loc`` holds only Parquet data files and no
    Delta log: another write creating the table, which commits its log last."""
    deadline = time.monotonic() + CREATION_WAIT
    while time.monotonic() < deadline:
        try:
            names = [n.rstrip("/").rsplit("/", 1)[-1] for n in loc.fs.ls(loc.fs_path, detail=False)]
        except (FileNotFoundError, NotADirectoryError):
            return
        if not names or not all(_BEING_CREATED.search(n) for n in names):
            return  # empty, or something else: not a table being created
        if is_delta_table(loc, where):
            return
        time.sleep(0.2)


def merge_delta(
    df: pd.DataFrame, loc: Location, kw: KeyedWrite, opts: dict[str, Any], where: str
) -> MergeOutcome:
    """Merge ``df`` into the Delta table at ``loc`` (created from ``df`` if not there)."""
    other = [k for k in opts if k not in DELTA_CREATE_OPTIONS]
    if other:
        fail(
            where,
            f"write option '{other[0]}' is not accepted with write mode {kw.mode} on delta. "
            f"Remove it (accepted besides the keyed options: {', '.join(DELTA_CREATE_OPTIONS)})",
        )
    occupied = bool(loc.fs.exists(loc.fs_path))
    if not (occupied and is_delta_table(loc, where)):
        # nothing there: the rows are the table. Another write creating it first makes
        # this one a merge into what that one created
        rows = df.drop(columns=[DELETE_FLAG], errors="ignore")
        if kw.delete_condition is not None:
            rows = rows[~df[DELETE_FLAG].to_numpy(bool)]
        if not kw.insert:
            rows = rows.iloc[0:0]
        try:
            if write_delta(rows, loc, "ignore", opts, where, occupied):
                return MergeOutcome(inserted=len(rows))
        except OdibiRunError:
            # another write began creating the table after the look above: merge into
            # it once it is there, else this was not a table being created
            _wait_while_created(loc, where)
            if not is_delta_table(loc, where):
                raise
    source = to_arrow(df, where, loc.uri, "delta")
    storage_options = loc.storage_options or None
    remove_stale_delta_rs_files(loc)

    def attempt() -> MergeOutcome:
        table = DeltaTable(loc.delta_uri, storage_options=storage_options)
        target_cols = [f.name for f in table.schema().fields]
        require_columns(where, kw, target_cols, f"the target '{loc.uri}'")
        incoming = [c for c in source.column_names if c != DELETE_FLAG]
        if kw.mode != "merge":
            require_same_columns(where, loc.uri, target_cols, incoming)
        elif extra := [c for c in incoming if c not in target_cols]:
            fail(where, f"the result's column(s) {extra} are not in the target '{loc.uri}'")
        on, sets, values, delete_when, keep_when = merge_conditions(
            kw, source.column_names, lambda c: '"' + c.replace('"', '""') + '"'
        )
        merger = table.merge(source, on, source_alias="s", target_alias="t")
        if kw.mode == "upsert":
            merger = merger.when_matched_update_all().when_not_matched_insert_all()
        elif kw.mode == "append_once":
            merger = merger.when_not_matched_insert_all()
        else:
            if delete_when is not None:
                merger = merger.when_matched_delete(predicate=delete_when)
            if sets:
                merger = merger.when_matched_update(updates=sets, predicate=keep_when)
            if kw.insert:
                merger = merger.when_not_matched_insert(updates=values, predicate=keep_when)
        metrics = merger.execute()
        return MergeOutcome(
            inserted=int(metrics.get("num_target_rows_inserted", 0)),
            updated=int(metrics.get("num_target_rows_updated", 0)),
            deleted=int(metrics.get("num_target_rows_deleted", 0)),
        )

    def give_up() -> MergeOutcome:
        fail(
            where,
            f"other writes to Delta table '{loc.uri}' kept committing while this {kw.mode} "
            "was being committed; nothing of it was committed. Re-run the node",
        )

    try:
        return retry_on_conflict(attempt, _is_conflict, give_up)
    except (DeltaError, pa.ArrowException, ValueError, TypeError) as exc:
        fail(
            where,
            f"could not {kw.mode} into Delta table '{loc.uri}' ({delta_detail(loc, exc)}); "
            "nothing was written. Check the keys, the options and the data's types",
        )


def _is_conflict(exc: BaseException) -> bool:
    """Whether ``exc`` says another commit got there first (the merge may be tried again)."""
    if isinstance(exc, CommitFailedError):
        return True
    text = str(exc).lower()
    return isinstance(exc, DeltaError) and ("conflict" in text or "concurrent" in text)


# ---------------------------------------------------------------------------- files


def merge_file(
    read: Callable[[], pd.DataFrame] | None, df: pd.DataFrame, kw: KeyedWrite, where: str, uri: str
) -> tuple[pd.DataFrame | None, MergeOutcome]:
    """The frame to write at a file target (None: leave it) and what changed; ``read``
    reads the target (None: nothing is there)."""
    if read is None:
        return df, MergeOutcome(inserted=len(df))
    out, outcome = merge_frames(read(), df, kw, where, uri)
    return (out if outcome.written else None), outcome
