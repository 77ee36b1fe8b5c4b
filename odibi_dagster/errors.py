"""Errors a user can act on: each says what was wrong, where, and what to do."""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import Any


@dataclass(frozen=True)
class Problem:
    """One configuration mistake, located at ``file:line`` and a key path."""

    file: str
    line: int | None
    message: str
    key_path: str = ""

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        key = f"{self.key_path}: " if self.key_path else ""
        return f"{where}: {key}{self.message}"


class OdibiConfigError(ValueError):
    """The YAML project is invalid. ``problems`` holds every mistake found, in file order."""

    def __init__(self, problems: list[Problem]):
        self.problems = list(problems)
        super().__init__(self._render())

    def _render(self) -> str:
        n = len(self.problems)
        head = f"odibi config: {n} problem{'s' if n != 1 else ''} found"
        return head + "\n" + "\n".join(f"  {p}" for p in self.problems)


def config_error_in(exc: BaseException | None) -> OdibiConfigError | None:
    """The OdibiConfigError an exception was caused by, however deeply wrapped."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, OdibiConfigError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def install_config_excepthook() -> None:
    """Make an uncaught config error print its problems, not a traceback.

    Tools such as ``dagster job execute`` let an error raised while loading
    definitions escape to the interpreter; a config mistake then deserves the
    ``file:line`` lines alone. Long-running servers catch the error themselves and
    are unaffected.
    """
    previous = sys.excepthook
    if getattr(previous, "_odibi", False):
        return

    def hook(typ: type[BaseException], value: BaseException, tb: TracebackType | None) -> None:
        found = config_error_in(value)
        if found is None:
            previous(typ, value, tb)
            return
        print(str(found), file=sys.stderr)

    hook._odibi = True  # type: ignore[attr-defined]
    sys.excepthook = hook


class OdibiRunError(RuntimeError):
    """A node failed at run time for a reason the user can fix (bad option, missing table, ...)."""

    retryable = False


def as_failure(exc: OdibiRunError) -> Any:
    """The Dagster Failure for an error the user can act on. A mistake in the config or the
    data is not retried; a storage failure (:class:`OdibiStorageError`) may be."""
    import dagster as dg

    return dg.Failure(description=str(exc), allow_retries=exc.retryable)


class OdibiConnectionError(OdibiRunError):
    """A connection cannot work (no key, access denied, no container, unreachable).

    The message names the connection, the account and container, what failed and what
    to do; it never holds a secret. ``key_rejected``: the storage account refused the
    key itself (so a key cached before a rotation is worth fetching again).
    """

    def __init__(self, message: str, *, key_rejected: bool = False) -> None:
        super().__init__(message)
        self.key_rejected = key_rejected


class OdibiStorageError(OdibiRunError):
    """Storage failed under a read or write (network, permissions, a file gone): perhaps
    transient, so a retry policy may retry it."""

    retryable = True


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _from_storage(exc: BaseException | None) -> bool:
    """Whether ``exc`` is (or wraps, as adlfs does) an OS or Azure SDK error."""
    azure = sys.modules.get("azure.core.exceptions")
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, OSError) or (azure is not None and isinstance(exc, azure.AzureError)):
            return True
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return False


def first_line(value: BaseException | str) -> str:
    """The first non-blank line of a message (an exception with no text: its type name)."""
    text = str(value)
    for line in text.splitlines():
        if line.strip():
            return line.strip()
    return type(value).__name__ if isinstance(value, BaseException) else text.strip()


def redact(text: str, secrets: Mapping[str, Any] | Iterable[Any] | None, public: str = "") -> str:
    """``text`` with every secret replaced by ``***``.

    ``secrets`` is a list of values, or a mapping of storage options whose every value may
    be a credential; flags (``true``/``false``) and values already shown in ``public`` (the
    address) are left readable.
    """
    values = secrets.values() if isinstance(secrets, Mapping) else (secrets or ())
    found = {str(v) for v in values if v is not None and str(v)}
    for value in sorted(found, key=len, reverse=True):
        if value.lower() not in ("true", "false") and value not in public:
            text = text.replace(value, "***")
    return text


@contextmanager
def storage_errors(
    where: str, action: str, uri: str, options: Mapping[str, Any] | None = None
) -> Iterator[None]:
    """Turn a storage library's exception under ``action`` (e.g. "reading") of ``uri`` into
    one line that names the node and the address, storage option values redacted."""
    try:
        yield
    except OdibiRunError:
        raise
    except Exception as exc:
        if not _from_storage(exc):
            raise
        lines = [ln.strip() for ln in _ANSI.sub("", str(exc)).splitlines() if ln.strip()]
        text = " ".join(lines[:2])[:500] or type(exc).__name__
        text = redact(text, options, uri)
        raise OdibiStorageError(
            f"{where}: {action} {uri} failed: {type(exc).__name__}: {text}"
        ) from None
