"""Read paths with wildcards (Odibi v3: ``read.path: "yellow_tripdata_*.parquet"``).

A read path holding ``*``, ``?`` or ``[`` names every file it matches, read as one frame
(Odibi's pandas engine expands such a path with ``glob``; Spark reads a pattern itself).
The pandas engine expands it here, through the connection's filesystem, into one
:class:`Location` per matching file, in sorted order.
"""

from __future__ import annotations

import dataclasses

from odibi_dagster.engines.messages import missing_input
from odibi_dagster.resources.base import Location

_GLOB_CHARS = frozenset("*?[")


def has_glob(path: str) -> bool:
    """True when ``path`` holds a wildcard (``*``, ``?`` or ``[``)."""
    return any(c in _GLOB_CHARS for c in path)


def _fixed_part(path: str) -> str:
    """``path`` up to (without) its first segment holding a wildcard."""
    parts = path.split("/")
    for i, part in enumerate(parts):
        if has_glob(part):
            return "/".join(parts[:i])
    return path


def _swap(form: str, rel: str) -> str:
    return _fixed_part(form) + rel if form and has_glob(form) else form


def expand(loc: Location, where: str) -> list[Location]:
    """The files ``loc``'s pattern matches, one Location each, sorted; a pattern that
    matches nothing fails as a missing input does."""
    fixed = _fixed_part(loc.fs_path)
    found = sorted(p for p in loc.fs.glob(loc.fs_path) if loc.fs.isfile(p))
    if not found:
        missing_input(where, loc.uri)
    out = []
    for path in found:
        # glob may give the path without a leading "/" the pattern had (or the reverse)
        rel = path[len(fixed.lstrip("/")) :] if not path.startswith(fixed) else path[len(fixed) :]
        out.append(
            dataclasses.replace(
                loc,
                uri=_swap(loc.uri, rel),
                fs_path=path,
                delta_uri=_swap(loc.delta_uri, rel),
                spark_uri=_swap(loc.spark_uri, rel),
            )
        )
    return out
