"""Errors a user can act on: each says what was wrong, where, and what to do."""

from __future__ import annotations

from dataclasses import dataclass


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


class OdibiRunError(RuntimeError):
    """A node failed at run time for a reason the user can fix (bad option, missing table, ...)."""
