"""The engine seam: what every engine (pandas, Spark, ...) does for the rest of the package.

An engine does the data work for one kind of DataFrame: it reads and writes every format
and write mode at a :class:`~odibi_dagster.resources.base.Location`, runs SQL steps,
describes a frame for metadata and checks, and says how a result is handed from a node
to its consumers. Nothing here knows Dagster; the engines are found by their ``engine:``
name in :mod:`odibi_dagster.engines.registry`.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from odibi_dagster.resources.base import Location

# A DataFrame of whatever kind the engine works with. Engines are typed with Any at the
# seam: pandas and Spark frames share no base class.
Frame = Any


@dataclass(frozen=True)
class Profile:
    """A frame's row count and the null count of some columns, from one pass."""

    rows: int
    nulls: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class MergeOutcome:
    """What a write in a keyed mode (upsert, append_once, merge) did to its target: rows
    of the target inserted, updated and deleted. ``written`` is False when the target
    was left as it was (nothing to insert for append_once on a file)."""

    inserted: int = 0
    updated: int = 0
    deleted: int = 0
    written: bool = True


@dataclass(frozen=True)
class RowFilter:
    """Which rows an incremental read keeps: those whose ``column`` (``COALESCE(column,
    fallback)`` when ``fallback`` is given) is above ``lower``, or at or above it when
    ``inclusive``. ``lower`` is an int, float, str, date or datetime (a naive datetime is
    UTC); the engine compares it as the column's type: a number with a number, a date or
    timestamp column with the time, a text column with text, or, when ``lower`` is a
    time, with its text read as a timestamp (csv keeps times as text)."""

    column: str
    lower: Any
    inclusive: bool = False
    fallback: str | None = None

    @property
    def key(self) -> str:
        """The filtered expression, as SQL."""
        if self.fallback:
            return f"COALESCE({self.column}, {self.fallback})"
        return self.column

    def describe(self) -> str:
        """``updated_at > 2024-01-31T00:00:00``: the filter for metadata and stories."""
        value = self.lower.isoformat() if hasattr(self.lower, "isoformat") else self.lower
        return f"{self.key} {'>=' if self.inclusive else '>'} {value!r}"


def staged_beside(loc: Location) -> Location:
    """A fresh place beside ``loc`` (``<name>.staged-<hex>``) on the same storage."""
    suffix = f".staged-{uuid.uuid4().hex}"
    return dataclasses.replace(
        loc,
        uri=loc.uri + suffix,
        fs_path=loc.fs_path + suffix,
        delta_uri=loc.delta_uri + suffix,
        spark_uri=loc.spark_uri + suffix if loc.spark_uri else "",
    )


class Engine(Protocol):
    """What an engine offers. Every method that takes ``where`` (``node 'x' (file:line)``)
    raises :class:`~odibi_dagster.errors.OdibiRunError` starting with it for a mistake
    the user can fix."""

    # the engine: name (as in YAML), and what its frames are called in messages
    name: str
    frame_kind: str
    # where a run keeps intermediate results, under DAGSTER_HOME/storage
    intermediate_dir_name: str

    # ------------------------------------------------------------------ data

    def read(
        self, loc: Location, fmt: str, options: Mapping[str, Any] | None = None, *, where: str = ""
    ) -> Frame:
        """The data at ``loc`` in format ``fmt``."""
        ...

    def read_rows(
        self,
        loc: Location,
        fmt: str,
        options: Mapping[str, Any] | None,
        rows: RowFilter,
        *,
        where: str = "",
    ) -> Frame:
        """What :meth:`read` reads, keeping only the rows ``rows`` selects (an incremental
        read). Parquet and Delta apply it where the data is read: a predicate of the scan,
        so files and row groups whose min/max statistics rule the rows out are not read
        (pandas: a pyarrow / delta-rs filter; Spark: a filter before any action). Csv and
        json are filtered once read. A column the data lacks fails naming it."""
        ...

    def key_summary(self, df: Frame, rows: RowFilter) -> tuple[int, Any]:
        """The row count of ``df`` and the largest value of ``rows.key`` in it (None when
        there are no rows), in one pass: what a stateful read records as its new mark. The
        value is a Python int, float, str, date or datetime."""
        ...

    def read_files(
        self,
        locs: Sequence[Location],
        fmt: str,
        options: Mapping[str, Any] | None = None,
        *,
        where: str = "",
    ) -> Frame:
        """The files at ``locs`` (csv, parquet or json; one or more), read with the same
        options as one frame, in the order given: what a run a new-files sensor started
        reads instead of the whole folder."""
        ...

    def write(
        self,
        df: Frame,
        loc: Location,
        fmt: str,
        mode: str = "overwrite",
        options: Mapping[str, Any] | None = None,
        *,
        where: str = "",
    ) -> bool:
        """Write ``df`` in ``mode``; False when skipped (mode ignore and something is there).

        Modes mean the same on every engine: ``error`` fails and ``ignore`` skips when
        anything is at the path; an overwrite never loses the old data if it fails. The
        keyed modes (upsert, append_once, merge) are written by :meth:`merge` (True)."""
        ...

    def merge(
        self,
        df: Frame,
        loc: Location,
        fmt: str,
        mode: str,
        options: Mapping[str, Any] | None = None,
        *,
        where: str = "",
    ) -> MergeOutcome:
        """Write ``df`` in a keyed mode, matching its rows to the target's by
        ``options["keys"]`` (see :mod:`odibi_dagster.engines.keyed`): ``upsert`` updates
        the rows whose keys are there and inserts the others; ``append_once`` inserts only
        rows whose keys are not there; ``merge`` (Delta only) updates ``update_columns``,
        deletes the target rows matched by rows meeting ``delete_condition`` and inserts
        the rest (unless ``insert: false``). A target not there yet is created from
        ``df``. Keys missing from ``df`` or the target, null or repeated in ``df``, fail
        before anything is written. Each mode is idempotent: the same ``df`` written again
        leaves the same table. The target is replaced whole or not at all (files: swapped
        in under the target's lock; Delta: one commit, tried again on a newer version
        when another write committed first)."""
        ...

    def exists(self, loc: Location, fmt: str) -> bool:
        """Whether anything is at ``loc`` (what modes ``error`` and ``ignore`` test)."""
        ...

    def sql(self, query: str, tables: Mapping[str, Frame], *, where: str = "") -> Frame:
        """Run a SQL step with each frame of ``tables`` visible under its name."""
        ...

    def is_frame(self, obj: Any) -> bool:
        """Whether ``obj`` is a frame of this engine (what a function step must return)."""
        ...

    def from_pandas(self, df: Any) -> Frame:
        """A pandas DataFrame made in memory (a simulation read's rows) as this engine's
        frame, with the same columns and types: nullable Int64, float64, boolean, object
        text and naive (UTC) datetime64."""
        ...

    # ------------------------------------------------------------------ describing

    def cheap_row_count(self, df: Frame) -> int | None:
        """The row count when it costs nothing; None where counting would run a job."""
        ...

    def profile(self, df: Frame, null_columns: Iterable[str] = ()) -> Profile:
        """Row count and null counts of ``null_columns`` in one pass."""
        ...

    def column_schema(self, df: Frame) -> list[tuple[str, str]]:
        """(column name, type name) of each column."""
        ...

    def type_family(self, dtype: str) -> str:
        """The family (string, integer, float, boolean, datetime) of one of its type names."""
        ...

    def head(
        self, df: Frame, n: int, *, written_at: Location | None = None, fmt: str = ""
    ) -> list[dict[str, Any]]:
        """The first ``n`` rows as dicts, a missing value as None (only these reach the
        driver). ``written_at``/``fmt``: where ``df`` was just written, which the engine
        may read the rows from instead of running a job."""
        ...

    # ------------------------------------------------------------------ handing over

    def count_while_writing(self, df: Frame) -> tuple[Frame, Callable[[], int | None]]:
        """``df`` to write, and what tells its row count once it was written (so counting
        costs no extra pass where counting runs a job)."""
        ...

    def after_write(self, df: Frame, loc: Location, fmt: str, *, where: str = "") -> Frame:
        """What consumers use once ``df`` was written at ``loc``: the frame itself where it
        lives in memory, a scan of what was written where a frame is a plan (so the plan
        is not computed again)."""
        ...

    def handoff(self, df: Frame) -> Frame:
        """The copy of a result one consumer gets (changing it must not change another's)."""
        ...

    def materialize(
        self,
        df: Frame,
        base: str,
        key: tuple[str, ...],
        null_columns: Iterable[str] = (),
        *,
        where: str = "",
    ) -> tuple[Frame, Profile, Location | None]:
        """``df`` computed once for a node's checks and its consumers, with its row count
        and the null counts of ``null_columns``: the frame to use from now on, its profile,
        and where it was staged (see :meth:`store_intermediate`; None: it lives in memory
        and nothing was written)."""
        ...

    # The intermediate store. ``key`` names one result: the IO manager passes the asset
    # key and the run that computed it, ``(*asset_key, run_id)``, so every run keeps its
    # own results and runs at the same time never read each other's.

    def intermediate(self, base: str, key: tuple[str, ...]) -> Location:
        """Where a result of ``key`` with no faithful copy on storage is kept under ``base``."""
        ...

    def store_intermediate(
        self, df: Frame, base: str, key: tuple[str, ...], *, where: str = ""
    ) -> tuple[Location, Frame]:
        """Stage a result with no faithful copy on storage beside where it is kept under
        ``base``: the staged copy, and the frame consumers use meanwhile. The result kept
        before stays in place until :meth:`keep_intermediate` (the node succeeded) or
        :meth:`drop_intermediate` (it did not)."""
        ...

    def keep_intermediate(
        self, df: Frame, staged: Location, base: str, key: tuple[str, ...], *, where: str = ""
    ) -> tuple[Location, Frame]:
        """Put a staged result in the place of the kept one: where it is now, and the frame
        consumers use from now on (``df`` is the frame over the staged copy)."""
        ...

    def drop_intermediate(self, staged: Location) -> None:
        """Delete a staged result that will not be kept (best effort)."""
        ...

    def load_intermediate(self, base: str, key: tuple[str, ...], *, where: str) -> Frame:
        """A result kept by :meth:`store_intermediate`; fails saying to materialize it."""
        ...

    def stored_intermediates(self, base: str, key: tuple[str, ...]) -> dict[str, float]:
        """The names ``n`` for which something is stored at ``(*key, n)`` under ``base``
        (a kept result, or a staged copy a failed process left behind), each with when it
        was last written (seconds since the epoch). Entries of longer keys may be listed
        too; the caller knows which names it gave. Empty when nothing is there, or the
        storage cannot be listed."""
        ...

    def delete_intermediate(self, base: str, key: tuple[str, ...]) -> None:
        """Delete the result kept for ``key`` and any staged copy of it; raise when that
        fails (a result no one will read again, see :meth:`stored_intermediates`)."""
        ...
