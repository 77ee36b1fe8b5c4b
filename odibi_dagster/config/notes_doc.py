"""The "accepted, not applied" section of docs/configuration.md, written from the tables in the
code (config/notes.py, config/compat.py, config/v3.py), so the list in the documentation is
the list the loader applies.

``python -m odibi_dagster.config.notes_doc`` rewrites the section between its two markers in
docs/configuration.md; test_docs.py checks that the file holds what :func:`render` writes.
"""

from __future__ import annotations

import sys
from pathlib import Path

from odibi_dagster.config.compat import (
    AZURE_AUTH_NOT_RUN,
    CONNECTIONS_NOT_RUN,
    DEFAULT_WHY,
    DELTA_URL_WHY,
    IGNORED_CONNECTION_KEYS,
    ODIBI_IO_DEFAULTS,
    TOP_LEVEL_WHY,
)
from odibi_dagster.config.notes import ACCEPTED_NOT_APPLIED
from odibi_dagster.config.v3 import SYSTEM_WHY

__all__ = ["END", "START", "render", "rewrite"]

START = "<!-- accepted-not-applied: written by python -m odibi_dagster.config.notes_doc -->"
END = "<!-- end of accepted-not-applied -->"


def _path(pattern: tuple[str, ...]) -> str:
    out = ""
    for part in pattern:
        if part == "*":
            out += "[*]" if out.endswith(("pipelines", "nodes")) else ".*"
        else:
            out += f".{part}" if out else part
    return out


def _yaml(value: object) -> str:
    if value is None or isinstance(value, bool):
        return {None: "null", False: "false", True: "true"}[value]
    return str(value)


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def render() -> str:
    """The section's text between the markers."""
    rows = [(f"`{_path(p)}`", why) for p, why in ACCEPTED_NOT_APPLIED.items()]
    rows.append(("`system`", SYSTEM_WHY))
    rows.append(
        (
            "`pipelines[*].nodes[*].on_error`: `fail_fast`, `ignore`",
            "a failed node fails its asset, its dependents are skipped and other branches "
            "run (fail_later)",
        )
    )
    for kind, keys in IGNORED_CONNECTION_KEYS.items():
        for key, why in keys.items():
            rows.append((f"`connections.*.{key}` (`type: {kind}`)", why))
    rows.append(("any other top-level key, unless it looks like a misspelt one", TOP_LEVEL_WHY))
    for part, keys in ODIBI_IO_DEFAULTS.items():
        shown = ", ".join(f"`{k}: {_yaml(v)}`" for k, v in keys.items())
        rows.append((f"`{part}:` {shown}", DEFAULT_WHY))
    lines = [
        "| key | why it has no effect here |",
        "|---|---|",
        *(f"| {k} | {_cell(w)} |" for k, w in rows),
        "",
        "Connections accepted so that the file loads, and refused at `file:line` where a "
        "node's `read:`/`write:` or the story uses them:",
        "",
        "| connection | why it cannot run here |",
        "|---|---|",
        *(f"| `type: {k}` | {_cell(w)} |" for k, w in CONNECTIONS_NOT_RUN.items()),
        f"| `type: delta` with a URL `path`/`base_path` (`abfss://...`) | {DELTA_URL_WHY} |",
        *(
            f"| `azure_adls` / `azure_blob` auth mode `{k}` | {_cell(w)} |"
            for k, w in AZURE_AUTH_NOT_RUN.items()
        ),
    ]
    return "\n".join(lines)


def rewrite(doc: Path) -> bool:
    """Put :func:`render` between the markers of ``doc``; True if it changed."""
    text = doc.read_text()
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    new = f"{head}{START}\n{render()}\n{END}{tail}"
    if new != text:
        doc.write_text(new)
    return new != text


if __name__ == "__main__":  # pragma: no cover
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("docs/configuration.md")
    print(f"{target}: {'rewritten' if rewrite(target) else 'unchanged'}")
