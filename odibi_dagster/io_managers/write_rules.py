"""The rules about a node's ``write:`` target that every IO manager follows.

- A target that is a faithful copy of the node's result (Parquet or Delta, overwritten
  whole, no partitioning, no predicate, no merged schema) is what consumers read back.
  Any other result is kept once in the intermediate store, and consumers read that.
- Rows appended to a target must not be appended twice: once an append has landed, a
  later failure of the same output is not retried.
- The keyed modes (upsert, append_once, merge) are not faithful copies either: the
  target holds what was there merged with the result, so consumers read the result from
  the intermediate store. A failure after one landed may be retried: each is idempotent
  (keys are unique and not null in the rows, so the same rows written again match the
  rows the first write left and leave the same table; a merge's deletes find nothing
  more to delete). Only the retry's row counts then tell what the retry did.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from odibi_dagster.engines.base import MergeOutcome
from odibi_dagster.engines.delta_options import reshapes
from odibi_dagster.errors import OdibiRunError, first_line

FAITHFUL_FORMATS = ("parquet", "delta")
FAITHFUL_MODES = ("overwrite", "error")
# what a keyed write did to its target, as materialization metadata
ROWS_INSERTED, ROWS_UPDATED, ROWS_DELETED = (
    "odibi/rows_inserted",
    "odibi/rows_updated",
    "odibi/rows_deleted",
)


def faithful_copy(write: Mapping[str, Any] | None) -> bool:
    """Whether the write target holds exactly the node's result, with its column types."""
    if not write:
        return False
    fmt = str(write.get("format"))
    return (
        write.get("mode", "overwrite") in FAITHFUL_MODES
        and fmt in FAITHFUL_FORMATS
        and not reshapes(fmt, write.get("options") or {})
    )


def merge_metadata(outcome: MergeOutcome) -> dict[str, int]:
    """The rows a keyed write inserted, updated and deleted, as metadata."""
    return {
        ROWS_INSERTED: outcome.inserted,
        ROWS_UPDATED: outcome.updated,
        ROWS_DELETED: outcome.deleted,
    }


@contextmanager
def not_retried_after_append(
    outcome: Mapping[str, Any] | None, where: str, what: str
) -> Iterator[None]:
    """Run ``what`` (e.g. "describing the result") after the write in ``outcome``: if it
    fails once rows were appended, fail for good (a retry would append them again)."""
    try:
        yield
    except Exception as exc:
        if outcome and outcome["written"] and outcome["mode"] == "append":
            raise OdibiRunError(
                f"{where}: the rows were appended to {outcome['uri']}, but {what} failed "
                f"({type(exc).__name__}: {first_line(exc)}); not retried, so the rows are "
                "not appended twice"
            ) from exc
        raise
