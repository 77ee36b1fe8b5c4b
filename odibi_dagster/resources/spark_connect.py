"""Sessions on a remote Spark: a Spark Connect server (``sc://host:port``), or a
Databricks cluster through Databricks Connect (``databricks``).

The URL may carry a token (``sc://host:443/;token=...``): it is written in the YAML as
an environment variable (``remote: ${SPARK_REMOTE}``), kept as written in the loaded
config and the resource's config, filled in only where the run executes, and every
message that could show it goes through :func:`redact_remote` first.
"""

from __future__ import annotations

import contextlib
import os
import threading
from typing import Any
from urllib.parse import unquote

from odibi_dagster.errors import OdibiRunError, first_line

# ``remote: databricks``: Databricks Connect, configured by its own environment
DATABRICKS = "databricks"
# the parameters of an sc:// URL that are shown as they are; every other one is hidden
_PUBLIC_PARAMS = frozenset({"use_ssl", "user_agent", "grpc_max_message_size"})
# hosts whose local paths are the client's own (a server on this machine)
_LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1", "[::1]", "local"})

_lock = threading.Lock()
# the URL of a session -> the session (one per URL and process)
_sessions: dict[str, Any] = {}


def is_connect(spark: Any) -> bool:
    """Whether ``spark`` is a Spark Connect session (no JVM in this process)."""
    return type(spark).__module__.startswith(("pyspark.sql.connect", "databricks.connect"))


def server_is_local(spark: Any) -> bool:
    """Whether the Connect server of ``spark`` runs on this machine, so that a local path
    means the same file to the client and to the server."""
    try:
        host = str(spark.client.host)
    except Exception:
        return False
    return host.lower() in _LOCAL_HOSTS


def _params(url: str) -> list[tuple[str, str]]:
    """The ``;key=value`` parameters of an sc:// URL."""
    _, _, rest = url.partition(";")
    out = []
    for part in rest.split(";") if rest else []:
        key, _, value = part.partition("=")
        out.append((key.strip(), value))
    return out


def display_remote(url: str) -> str:
    """``url`` as it may be shown: scheme, host and port, secret parameters as ``***``."""
    head = url.split(";", 1)[0].rstrip("/")
    scheme, sep, rest = head.partition("://")
    if sep and "@" in rest:  # user:password@host
        rest = "***@" + rest.rsplit("@", 1)[1]
        head = f"{scheme}{sep}{rest}"
    shown = [f"{k}={v if k in _PUBLIC_PARAMS else '***'}" for k, v in _params(url)]
    return head + ("/;" + ";".join(shown) if shown else "")


def redact_remote(text: str, url: str) -> str:
    """``text`` with every secret part of ``url`` (and the URL itself) replaced."""
    if not url:
        return text
    text = text.replace(url, display_remote(url))
    secrets = {v for k, v in _params(url) if k not in _PUBLIC_PARAMS and v}
    secrets |= {unquote(v) for v in secrets}
    head = url.split(";", 1)[0]
    if "@" in head:
        secrets.add(head.partition("://")[2].rsplit("@", 1)[0])
    for value in sorted(secrets, key=len, reverse=True):
        if len(value) >= 3:
            text = text.replace(value, "***")
    return text


def connect_session(url: str) -> Any:
    """The session on the Spark Connect server at ``url`` (``sc://...``), or on
    Databricks (``databricks``): made once per process and URL, checked with one round
    trip, made again if it was stopped."""
    with _lock:
        session = _sessions.get(url)
        if session is not None and not _stopped(session):
            return session
        session = _databricks_session() if url == DATABRICKS else _spark_connect_session(url)
        try:
            _ = session.version  # one round trip: fail here, not in the first node's read
        except Exception as exc:
            raise OdibiRunError(
                f"could not reach the Spark Connect server at {display_remote(url)} "
                f"({redact_remote(first_line(exc), url)}). Check that it is running and "
                "that the URL (host, port, token) is right"
            ) from None
        _sessions[url] = session
        if not _classic_session_active():
            # as PySpark's own builder.remote() does: pyspark.sql.functions (in function
            # steps) then build Spark Connect columns
            os.environ["SPARK_CONNECT_MODE_ENABLED"] = "1"
        return session


def _classic_session_active() -> bool:
    """Whether this process also runs a classic (JVM) session, whose
    ``pyspark.sql.functions`` must stay classic."""
    try:
        from pyspark import SparkContext
    except ImportError:
        return False
    return getattr(SparkContext, "_active_spark_context", None) is not None


def _stopped(session: Any) -> bool:
    try:
        return bool(session.is_stopped)
    except Exception:
        return False


def _spark_connect_session(url: str) -> Any:
    if not url.startswith("sc://"):
        raise OdibiRunError(
            f"spark remote {display_remote(url)!r} is not a Spark Connect URL: write "
            "sc://host:port (e.g. sc://localhost:15002, or sc://host:443/;token=... in an "
            "environment variable), or 'databricks' for Databricks Connect"
        )
    try:
        from pyspark.sql.connect.session import SparkSession as ConnectSession
    except ImportError as exc:
        raise OdibiRunError(
            f"Spark Connect needs PySpark's connect extras ({first_line(exc)}): install "
            "odibi_dagster[spark] (grpcio, grpcio-status, googleapis-common-protos, "
            "zstandard)"
        ) from None
    try:
        return ConnectSession.builder.remote(url).create()
    except Exception as exc:
        raise OdibiRunError(
            f"could not open a Spark Connect session at {display_remote(url)} "
            f"({redact_remote(first_line(exc), url)})"
        ) from None


def _databricks_session() -> Any:
    try:
        from databricks.connect import DatabricksSession
    except ImportError:
        raise OdibiRunError(
            "spark remote 'databricks' needs Databricks Connect: install the "
            "databricks-connect version of the cluster's Databricks Runtime (e.g. pip "
            "install 'databricks-connect==17.3.*') in an environment of its own (it "
            "replaces pyspark), and set DATABRICKS_HOST, DATABRICKS_TOKEN and "
            "DATABRICKS_CLUSTER_ID (or DATABRICKS_SERVERLESS_COMPUTE_ID=auto)"
        ) from None
    if not (os.environ.get("DATABRICKS_HOST") or os.environ.get("DATABRICKS_CONFIG_PROFILE")):
        raise OdibiRunError(
            "spark remote 'databricks' needs the workspace: set DATABRICKS_HOST (and "
            "DATABRICKS_TOKEN, DATABRICKS_CLUSTER_ID) or DATABRICKS_CONFIG_PROFILE where "
            "the run executes"
        )
    token = os.environ.get("DATABRICKS_TOKEN", "")
    try:
        return DatabricksSession.builder.getOrCreate()
    except Exception as exc:
        msg = first_line(exc).replace(token, "***") if token else first_line(exc)
        raise OdibiRunError(f"Databricks Connect did not start a session ({msg})") from None


def forget_sessions() -> None:
    """Stop and forget the remote sessions of this process."""
    with _lock:
        for session in _sessions.values():
            with contextlib.suppress(Exception):
                session.stop()
        _sessions.clear()
