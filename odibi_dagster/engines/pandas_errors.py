"""Telling a bad option from bad data when pandas or pyarrow refuses to read or write.

A node's read/write ``options`` go straight to pandas and pyarrow, whose errors rarely say
which argument was wrong. These helpers name the option (trying a one-row sample with and
without each) or the column that could not be serialized, and say what to do.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any, NoReturn

import pandas as pd
import pyarrow as pa

from odibi_dagster.engines.messages import fail
from odibi_dagster.errors import first_line

UNEXPECTED_KWARG = re.compile(r"unexpected keyword argument '([^']+)'")
_ARROW_COLUMN = re.compile(r"Conversion failed for column (.+?) with type")
OPTION_ERRORS = (TypeError, ValueError, AttributeError, LookupError, pa.ArrowException)


def kwarg_error(
    where: str, exc: TypeError, kind: str, func: str, uri: str, options: Mapping[str, Any]
) -> NoReturn:
    """Turn a TypeError raised while calling ``func`` with user options into an OdibiRunError."""
    match = UNEXPECTED_KWARG.search(str(exc))
    if match:
        fail(
            where,
            f"{kind} option '{match.group(1)}' is not accepted by {func} "
            f"(TypeError: {first_line(exc)}). Remove it or use a {func} argument",
        )
    names = ", ".join(sorted(options)) or "(none)"
    fail(
        where,
        f"{func} failed for '{uri}' with the given {kind} options [{names}] "
        f"(TypeError: {first_line(exc)}). Check the option values",
    )


def _arrow_column(exc: BaseException) -> str | None:
    match = _ARROW_COLUMN.search(str(exc))
    return match.group(1) if match else None


def serialization_error(where: str, uri: str, fmt: str, exc: BaseException) -> NoReturn:
    column = _arrow_column(exc)
    what = f"column '{column}' " if column else "the data "
    todo = (
        f"Give column '{column}' a single type (e.g. cast it in SQL or with .astype(str)) "
        "before writing"
        if column
        else "Check the data and the write options (e.g. encoding)"
    )
    fail(
        where,
        f"could not write {fmt} to '{uri}': {what}could not be serialized "
        f"({type(exc).__name__}: {first_line(exc)}). The target was left unchanged. {todo}",
    )


def to_arrow(df: pd.DataFrame, where: str, uri: str, fmt: str) -> pa.Table:
    try:
        return pa.Table.from_pandas(df, preserve_index=False)
    except (pa.ArrowException, TypeError, ValueError) as exc:
        serialization_error(where, uri, fmt, exc)


def serialize(
    where: str,
    func: str,
    uri: str,
    opts: Mapping[str, Any],
    kwargs: dict[str, Any],
    defaults: Mapping[str, Any],
    call: Callable[[dict[str, Any], bool], None],
) -> None:
    """Run ``call(kwargs, False)``, which serializes the data with ``kwargs`` (the engine's
    ``defaults`` overridden by the user's write options ``opts``); blame a bad option by name.

    On failure, ``call(kw, True)`` serializes a one-row sample to a scratch buffer: when the
    sample fails with the user's options and succeeds without them (engine defaults only),
    an option is at fault and each is tried alone to name it. Otherwise the data is at
    fault and the exception propagates (the caller reports data that could not be
    serialized).
    """
    try:
        call(kwargs, False)
    except UnicodeError:
        raise  # data the chosen encoding cannot hold: reported as a data error
    except OPTION_ERRORS as exc:
        if isinstance(exc, TypeError) and UNEXPECTED_KWARG.search(str(exc)):
            kwarg_error(where, exc, "write", func, uri, opts)
        given = [k for k in kwargs if k in opts]

        def sample_ok(keep: set[str]) -> bool:
            trial = {k: v for k, v in kwargs.items() if k not in opts or k in keep}
            trial.update({k: v for k, v in defaults.items() if k in opts and k not in keep})
            try:
                call(trial, True)
            except Exception:
                return False
            return True

        if not given or sample_ok(set(given)) or not sample_ok(set()):
            raise
        culprits = [k for k in given if not sample_ok({k})] or given
        names = ", ".join(f"'{k}'" for k in culprits)
        plural = len(culprits) > 1
        fail(
            where,
            f"write option{'s' if plural else ''} {names} {'are' if plural else 'is'} not "
            f"valid for {func} ({type(exc).__name__}: {first_line(exc)}). The target "
            f"was left unchanged. Fix the option value{'s' if plural else ''} or remove "
            f"{'them' if plural else 'it'}",
        )
