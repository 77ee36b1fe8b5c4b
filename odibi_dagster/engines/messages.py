"""What every engine says and checks the same way: format and mode checks, option values,
the messages for paths that are missing or in the way and for appends that do not fit,
and the markdown preview table."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, NoReturn

from odibi_dagster.errors import OdibiRunError
from odibi_dagster.vocabulary import FORMATS, WRITE_MODES


def fail(where: str, message: str) -> NoReturn:
    """Raise ``<where>: <message>.`` as an OdibiRunError (the user can act on it)."""
    message = message.rstrip()
    prefix = f"{where}: " if where else ""
    raise OdibiRunError(prefix + message + ("" if message.endswith(".") else "."))


def check_format(fmt: str, where: str) -> None:
    if fmt not in FORMATS:
        fail(where, f"format '{fmt}' is not supported. Use one of: {', '.join(FORMATS)}")


def check_mode(mode: str, where: str) -> None:
    if mode not in WRITE_MODES:
        fail(where, f"write mode '{mode}' is not supported. Use one of: {', '.join(WRITE_MODES)}")


def truthy(value: Any) -> bool:
    """An option's boolean value, written as YAML true/false or as text ("true", "yes", 1)."""
    if isinstance(value, str):
        return value.strip().lower() in {"true", "1", "yes", "y"}
    return bool(value)


def column_list(value: Any) -> list[str]:
    """A column option: a list, or one comma-separated string."""
    if isinstance(value, str):
        return [c.strip() for c in value.split(",") if c.strip()]
    return [str(c) for c in value]


def column_mismatch(where: str, uri: str, existing: list[str], new: list[str]) -> NoReturn:
    fail(
        where,
        f"cannot append to '{uri}': its columns {existing} differ from the new data's "
        f"columns {new}. The target was left unchanged. Select the same columns before "
        "writing, or use mode overwrite",
    )


def require_same_columns(where: str, uri: str, existing: list[str], new: list[str]) -> None:
    """Fail unless ``new`` holds the same column names as ``existing`` (in any order)."""
    if sorted(existing) != sorted(new):
        column_mismatch(where, uri, existing, new)


def missing_input(where: str, uri: str) -> NoReturn:
    fail(
        where,
        f"input path '{uri}' does not exist. Check the path and connection, or run the node "
        "that writes it first",
    )


def not_a_delta_table(where: str, uri: str) -> NoReturn:
    fail(
        where,
        f"input path '{uri}' exists but is not a Delta table (no _delta_log). Use the format "
        "it was written in, or point the node at a Delta table",
    )


def write_wanted(exists: bool, mode: str, where: str, uri: str) -> bool:
    """What modes ``error`` and ``ignore`` mean on every engine when anything is at the
    path: ``error`` fails, ``ignore`` skips (False). True: go on and write."""
    if exists and mode == "error":
        exists_error(where, uri)
    return not (exists and mode == "ignore")


def exists_error(where: str, uri: str) -> NoReturn:
    fail(
        where,
        f"output path '{uri}' already exists and the write mode is 'error'. Use mode "
        "overwrite or append, or remove it first",
    )


def delta_table_in_the_way(where: str, uri: str, fmt: str) -> NoReturn:
    fail(
        where,
        f"output path '{uri}' is a Delta table (it holds _delta_log); writing {fmt} there "
        "would replace the whole table. It was left unchanged. Write format delta, choose "
        "another path, or remove the table first",
    )


def subdirectories_in_the_way(where: str, uri: str, fmt: str, subdirs: list[str]) -> NoReturn:
    fail(
        where,
        f"output path '{uri}' is a directory holding subdirectories "
        f"({', '.join(subdirs[:3])}{', ...' if len(subdirs) > 3 else ''}), not a directory of "
        f"part files; writing {fmt} there would delete them. It was left unchanged. Point the "
        "node at a path inside it, or remove it first",
    )


def markdown_table(columns: Iterable[Any], rows: Iterable[Iterable[Any]]) -> str:
    """A markdown table (cells escaped for '|' and newlines)."""

    def cell(value: Any) -> str:
        text = str(value).replace("\\", "\\\\").replace("|", "\\|")
        return text.replace("\r\n", " ").replace("\n", " ").replace("\r", " ")

    header = [cell(c) for c in columns]
    if not header:
        return "_(no columns)_"
    lines = [
        "| " + " | ".join(header) + " |",
        "| " + " | ".join("---" for _ in header) + " |",
    ]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)
