"""The keyed write modes (Odibi v3): ``upsert``, ``append_once`` and ``merge``, and the
options they share, read the same way by every engine.

``options.keys`` names the columns that identify a row. ``merge`` (Delta only) also takes
``update_columns`` (the columns a matched row gets from the incoming one; default all),
``delete_condition`` (a SQL condition over the incoming rows, e.g. ``op = 'D'``: target
rows matched by such a row are deleted, and such rows are never inserted) and ``insert``
(false: rows whose keys are not in the target are not inserted). The other options are
the format's, as for any write.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn, TypeVar

from odibi_dagster.engines.messages import column_list, fail, truthy
from odibi_dagster.vocabulary import KEYED_MODES

# the options of the keyed modes; MERGE_ONLY ones apply to mode merge alone
KEY_OPTION = "keys"
MERGE_ONLY = ("update_columns", "delete_condition", "insert")
KEYED_OPTIONS = (KEY_OPTION, *MERGE_ONLY)
# the column a merge adds to the incoming rows for delete_condition's answer
DELETE_FLAG = "__odibi_delete"
# how many times a Delta merge that lost to another commit is tried (the first included)
MERGE_ATTEMPTS = 8

T = TypeVar("T")


@dataclass(frozen=True)
class KeyedWrite:
    """A node's keyed write: its mode and the keyed options, in one spelling."""

    mode: str
    keys: list[str]
    update_columns: list[str] | None = None  # None: every column
    delete_condition: str | None = None
    insert: bool = True


def keyed_write(
    mode: str, fmt: str, options: Mapping[str, Any], where: str
) -> tuple[KeyedWrite, dict[str, Any]]:
    """The keyed write in ``options`` for ``mode``, and the format options left."""
    if mode not in KEYED_MODES:
        fail(where, f"write mode '{mode}' is not a keyed mode ({', '.join(KEYED_MODES)})")
    opts = dict(options)
    if mode == "merge" and fmt != "delta":
        fail(
            where,
            f"write mode merge needs format delta, not {fmt}. Write format delta, or use "
            "mode upsert (updates and inserts by keys) for a file",
        )
    keys = column_list(opts.pop(KEY_OPTION, None) or [])
    if not keys:
        fail(
            where,
            f"write mode {mode} needs options.keys: the columns that identify a row, e.g. "
            "`options: {keys: [id]}`",
        )
    given = [k for k in MERGE_ONLY if k in opts]
    if given and mode != "merge":
        fail(where, f"write option '{given[0]}' applies to mode merge only. Remove it")
    update = opts.pop("update_columns", None)
    condition = opts.pop("delete_condition", None)
    insert = truthy(opts.pop("insert", True))
    if condition is not None and not str(condition).strip():
        fail(where, "write option delete_condition is empty. Give a condition, e.g. op = 'D'")
    return (
        KeyedWrite(
            mode=mode,
            keys=keys,
            update_columns=None if update is None else column_list(update),
            delete_condition=None if condition is None else str(condition),
            insert=insert,
        ),
        opts,
    )


def require_columns(
    where: str, kw: KeyedWrite, columns: Sequence[str], what: str, uri: str = ""
) -> None:
    """Fail unless ``columns`` (of ``what``: "the result", "the target ...") hold the keys
    and the update columns."""
    cols = set(columns)
    for k in kw.keys:
        if k not in cols:
            fail(
                where,
                f"key column '{k}' of write mode {kw.mode} is not a column of {what} "
                f"(columns: {', '.join(columns)}); nothing was written. Fix options.keys",
            )
    for c in kw.update_columns or []:
        if c not in cols:
            fail(
                where,
                f"update_columns names column '{c}', which is not a column of {what} "
                f"(columns: {', '.join(columns)}); nothing was written. Fix update_columns",
            )


def bad_keys(
    where: str, kw: KeyedWrite, samples: list[dict[str, Any]], count: int | str
) -> NoReturn:
    """Fail for incoming rows whose keys are null or repeated (``samples``: some of those
    keys, ``count``: how many distinct such keys there are, e.g. 3 or "more than 5")."""
    shown = ", ".join(
        "(" + ", ".join(f"{k}={row.get(k)!r}" for k in kw.keys) + ")" for row in samples
    )
    fail(
        where,
        f"the rows to write in mode {kw.mode} have {count} key value(s) on keys "
        f"[{', '.join(kw.keys)}] that are null or occur more than once, e.g. {shown}; "
        "nothing was written. Make the keys unique and not null (e.g. deduplicate in a SQL "
        "step), or choose keys that identify one row",
    )


def merge_conditions(kw: KeyedWrite, columns: Sequence[str], quote: Callable[[str], str]) -> Any:
    """The pieces of a Delta merge, over aliases ``t`` (target) and ``s`` (source):
    (match predicate, {column: source expression} to update, {column: expression} to
    insert, condition of a delete (None: no delete), condition of an update/insert)."""
    on = " AND ".join(f"t.{quote(k)} = s.{quote(k)}" for k in kw.keys)
    data = [c for c in columns if c != DELETE_FLAG]
    update = kw.update_columns if kw.update_columns is not None else data
    sets = {quote(c): f"s.{quote(c)}" for c in update if c not in kw.keys}
    values = {quote(c): f"s.{quote(c)}" for c in data}
    deleting = kw.delete_condition is not None
    delete_when = f"s.{quote(DELETE_FLAG)}" if deleting else None
    keep_when = f"NOT s.{quote(DELETE_FLAG)}" if deleting else None
    return on, sets, values, delete_when, keep_when


def retry_on_conflict(
    attempt: Callable[[], T], conflict: Callable[[BaseException], bool], give_up: Callable[[], T]
) -> T:
    """Run ``attempt`` (one whole merge transaction, read against the table's latest
    version) until it commits; when another write committed first (``conflict``), run it
    again on the newer version, up to :data:`MERGE_ATTEMPTS` times, then ``give_up``.
    A merge tried again cannot double anything: nothing of a failed attempt was committed,
    and the new attempt matches the rows against what is there now."""
    for i in range(MERGE_ATTEMPTS):
        try:
            return attempt()
        except Exception as exc:
            if not conflict(exc) or i == MERGE_ATTEMPTS - 1:
                if conflict(exc):
                    return give_up()
                raise
        time.sleep(min(2.0, 0.05 * 2**i) * (0.5 + random.random()))
    return give_up()  # pragma: no cover - the loop returns or raises
