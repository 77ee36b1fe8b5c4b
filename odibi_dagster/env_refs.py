"""``${VAR}`` references in YAML values: how they are written, and filling them in where a
run executes (metadata keeps them as written, so values never reach the UI)."""

from __future__ import annotations

import os
import re
from typing import Any

from odibi_dagster.errors import OdibiRunError

# ${NAME} or ${NAME:-default}; not ${partition}, which names the partition a run
# computes and is filled in where it runs (odibi_dagster.partitions)
ENV_REF = re.compile(r"\$\{(?!partition\})([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
# a value that is exactly one reference, without a default: how a secret is written
WHOLE_ENV_REF = re.compile(r"^\$\{([A-Za-z_][A-Za-z0-9_]*)\}$")


# the request values of a `format: api` read: their references are secrets, filled in by
# odibi_dagster.api_read when it makes the request (and redacted in all it says)
API_REQUEST_KEYS = ("path",)
API_REQUEST_OPTIONS = ("params", "request_body")


def resolve_env(value: Any, where: str = "") -> Any:
    """Fill ``${VAR}`` references from the environment at run time (see ``as_written``).
    A ``format: api`` read keeps them in its path, params and request_body as written."""
    if isinstance(value, dict) and value.get("format") == "api" and "connection" in value:
        out: dict[Any, Any] = {}
        for k, v in value.items():
            if k in API_REQUEST_KEYS:
                out[k] = v
            elif k == "options" and isinstance(v, dict):
                out[k] = {
                    o: x if o in API_REQUEST_OPTIONS else resolve_env(x, where)
                    for o, x in v.items()
                }
            else:
                out[k] = resolve_env(v, where)
        return out
    if isinstance(value, dict):
        return {k: resolve_env(v, where) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve_env(v, where) for v in value]
    if not isinstance(value, str) or not ENV_REF.search(value):
        return value

    def repl(m: re.Match[str]) -> str:
        name, default = m.group(1), m.group(2)
        if name in os.environ:
            return os.environ[name]
        if default is not None:
            return default
        raise OdibiRunError(
            f"{where}: environment variable {name} is not set in this process; export it "
            "where the run executes"
        )

    return ENV_REF.sub(repl, value)
