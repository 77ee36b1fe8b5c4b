"""Check every connection of a project at once, as a run checks them at its start, and
through a Spark session as a Spark run reaches them; print the result as a table."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import IO, Any

from odibi_dagster.errors import OdibiConnectionError, OdibiRunError, first_line, redact
from odibi_dagster.resources.connection import ConnectionResource


@dataclass(frozen=True)
class ConnectionStatus:
    """The outcome of checking one connection; ``detail`` never holds a secret."""

    name: str
    kind: str
    ok: bool
    detail: str
    seconds: float


def _connections(connections: Any) -> list[tuple[str, ConnectionResource]]:
    """(name, connection) of a project path or of a mapping name -> resource; other
    resources (IO managers, ...) are left out."""
    if isinstance(connections, (str, os.PathLike)):
        from odibi_dagster.config.loader import load_project

        resources: Mapping[str, Any] = load_project(connections).connection_resources()
    elif isinstance(connections, Mapping):
        resources = connections
    else:
        raise TypeError(
            "check_connections() takes a project path or a mapping of connection name -> "
            f"resource, not {type(connections).__name__}"
        )
    return [(str(n), r) for n, r in resources.items() if isinstance(r, ConnectionResource)]


def _unexpected(res: ConnectionResource, text: str) -> str:
    """An unexpected failure's text, with every secret the connection holds replaced."""
    try:
        known = res.secrets()
    except Exception:
        known = []
    return redact(text, known)


def _check_one(name: str, res: ConnectionResource) -> ConnectionStatus:
    start = time.perf_counter()
    try:
        ok, detail = True, res.check()
    except OdibiConnectionError as exc:
        ok, detail = False, str(exc)
    except Exception as exc:  # unexpected: keep one line, and never the key
        ok, detail = (
            False,
            f"{res.describe()}: {_unexpected(res, f'{type(exc).__name__}: {first_line(exc)}')}",
        )
    return ConnectionStatus(name, res.yaml_type, ok, detail, round(time.perf_counter() - start, 3))


def check_connections(connections: Any, *, max_workers: int = 8) -> list[ConnectionStatus]:
    """Check every connection of a project (path) or of a mapping name -> resource.

    Each is checked with its own ``check()``: an ``AzureADLS`` gets its key and makes one
    container call, a ``LocalStorage`` creates and removes a file in ``base_path``. Checks
    run in parallel threads; a Key Vault secret shared by several connections is fetched
    once. Results keep the input order.
    """
    if max_workers < 1:
        raise ValueError("max_workers must be at least 1")
    items = _connections(connections)
    if not items:
        return []
    with ThreadPoolExecutor(
        max_workers=min(max_workers, len(items)), thread_name_prefix="odibi-check"
    ) as pool:
        futures = [pool.submit(_check_one, name, res) for name, res in items]
        return [f.result() for f in futures]


def check_spark_access(spark: Any, connections: Any) -> list[ConnectionStatus]:
    """Check that ``spark`` reaches every connection the way a Spark run does.

    Each connection is configured on the session as a run configures it (account-scoped
    key), then Spark looks up the connection's root (``<container>/<path_prefix>``) through
    its own filesystem driver: on Databricks that is the abfss driver with the cluster's
    settings, which :func:`check_connections` (the Azure SDK) does not exercise. A root
    that does not exist yet is fine; an error (403, unknown host, ...) is a failure.
    ``connections`` is a project path or a mapping name -> resource, as for
    :func:`check_connections`. Runs one connection after another.
    """
    from odibi_dagster.engines.spark import SparkEngine, first_message
    from odibi_dagster.resources.spark import SparkSessionResource

    engine = SparkEngine(spark)
    out = []
    for name, res in _connections(connections):
        start = time.perf_counter()
        loc = None
        try:
            SparkSessionResource().configure_connections(spark, [res])
            loc = res.location("")
            found = engine.exists(loc, "parquet")
            ok = True
            detail = f"Spark reaches {loc.spark_uri}" + ("" if found else " (empty so far)")
        except Exception as exc:
            ok = False
            if isinstance(exc, OdibiRunError):
                text = str(exc)
            else:
                text = f"Spark could not list it: {type(exc).__name__}: {first_message(exc)}"
            if loc is not None:
                text = redact(text, loc.storage_options, loc.uri)
            text = _unexpected(res, text)
            detail = text if text.startswith(f"connection '{name}'") else f"{name}: {text}"
        out.append(
            ConnectionStatus(name, res.yaml_type, ok, detail, round(time.perf_counter() - start, 3))
        )
    return out


def print_connection_report(
    statuses: Iterable[ConnectionStatus], file: IO[str] | None = None
) -> bool:
    """Print an aligned table of connection checks; True when every one is OK."""
    rows = list(statuses)
    out = file if file is not None else sys.stdout
    if not rows:
        print("No connections to check.", file=out)
        return True
    table = [("CONNECTION", "KIND", "STATUS", "SECONDS", "DETAIL")] + [
        (s.name, s.kind, "OK" if s.ok else "FAILED", f"{s.seconds:.2f}", s.detail) for s in rows
    ]
    widths = [max(len(r[i]) for r in table) for i in range(4)]
    for r in table:
        cells = [r[i].rjust(widths[i]) if i == 3 else r[i].ljust(widths[i]) for i in range(4)]
        print("  ".join([*cells, r[4]]).rstrip(), file=out)
    failed = sum(not s.ok for s in rows)
    print(f"{len(rows)} connection(s): {len(rows) - failed} OK, {failed} FAILED", file=out)
    return failed == 0
