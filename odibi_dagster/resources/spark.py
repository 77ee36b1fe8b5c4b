"""The Spark session a run uses: Databricks' own, a remote one (Spark Connect or Databricks
Connect), or a local one with Delta and hadoop-azure."""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import Field

from odibi_dagster.errors import OdibiRunError, first_line
from odibi_dagster.resources.connection import ConnectionResource

# The resource key of the Spark session in a compiled project (a pipeline with a
# ``spark:`` block of its own has ``odibi_spark__<pipeline>``).
SPARK_RESOURCE_KEY = "odibi_spark"


def spark_resource_key(pipeline: str | None = None) -> str:
    """The key of the session resource of ``pipeline`` (one with its own ``spark:``),
    else the project's."""
    return f"{SPARK_RESOURCE_KEY}__{pipeline}" if pipeline else SPARK_RESOURCE_KEY


# Spark shows its conf in the UI, event logs and EXPLAIN output unless the key matches
# this; its default covers "secret|password|token|access.key", not Azure's account keys.
REDACTION_REGEX = r"(?i)secret|password|token|access[.]?key|account[.]key|sas|credential"

# The PySpark a local session runs: the one the pinned jars (spark_jars.py) are built for.
LOCAL_PYSPARK = "4.2."

# What a local session gets unless spark_conf says otherwise.
LOCAL_DEFAULTS: dict[str, str] = {
    "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
    "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
    "spark.driver.host": "127.0.0.1",
    "spark.driver.bindAddress": "127.0.0.1",
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.sql.session.timeZone": "UTC",
    "spark.databricks.delta.snapshotPartitions": "2",
    "spark.redaction.regex": REDACTION_REGEX,
}

_lock = threading.Lock()
# (id of the session, storage root of the connection) -> digest of the conf set for it
_configured: dict[tuple[int, str], str] = {}
# scheme://authority roots Spark has opened in this process (Hadoop caches a handle each)
_opened: set[str] = set()


def spark_sessions(cfg: Any, spark_pipelines: Iterable[Any]) -> dict[str, SparkSessionResource]:
    """The session resources of a project's ``spark:`` blocks, by resource key: the
    project's (when it has one), and one for each Spark pipeline with its own. The
    remote URL stays as written (``${VAR}``): it is filled in where the run executes."""
    out: dict[str, SparkSessionResource] = {}
    if cfg.spark is not None and cfg.spark.remote:
        out[SPARK_RESOURCE_KEY] = SparkSessionResource(remote=cfg.spark.remote)
    for pipe in spark_pipelines:
        if pipe.spark is not None:
            out[spark_resource_key(pipe.pipeline)] = SparkSessionResource(remote=pipe.spark.remote)
    return out


def on_databricks() -> bool:
    return bool(os.environ.get("DATABRICKS_RUNTIME_VERSION"))


class SparkSessionResource(dg.ConfigurableResource):  # type: ignore[type-arg]
    """The Spark session for ``engine: spark`` assets (resource key ``odibi_spark``).

    With ``remote`` (``sc://host:port``, or ``databricks``) it opens a Spark Connect (or
    Databricks Connect) session on that server. On Databricks (or wherever a session is
    already active in the process) it uses that session and adds nothing. Elsewhere it builds a local session with the Delta Lake and
    hadoop-azure jars that ``odibi-dagster spark-jars`` downloads once from Maven Central.

    Example::

        SparkSessionResource(master="local[4]", spark_conf={"spark.sql.shuffle.partitions": "8"})
    """

    app_name: str = Field(default="odibi_dagster", description="spark.app.name of a local session.")
    master: str = Field(default="local[*]", description="spark.master of a local session.")
    spark_conf: dict[str, str] = Field(
        default_factory=dict,
        description="Extra Spark settings for a local session (they win over the defaults).",
    )
    jars_dir: str | None = Field(
        default=None,
        description="Directory with the Delta Lake and hadoop-azure jars. Default: "
        "$ODIBI_SPARK_JARS_DIR, else ~/.cache/odibi_dagster/spark-jars.",
    )
    use_active_session: bool = Field(
        default=True,
        description="Use the session already active in the process (Databricks' `spark`).",
    )
    remote: str | None = Field(
        default=None,
        description="A Spark Connect URL (sc://host:port, a token as ;token=...) or "
        "'databricks' (Databricks Connect), usually as ${ENV_VAR}: filled in where the run "
        "executes, so a token never reaches the run config. Empty: no remote.",
    )

    def remote_url(self) -> str:
        """``remote`` with its ``${VAR}`` filled in ("" for none)."""
        from odibi_dagster.env_refs import resolve_env

        return str(resolve_env(self.remote or "", "spark remote") or "").strip()

    def get_session(self) -> Any:
        """The session: the remote one (Spark Connect), else the active one (Databricks),
        else a local one, created once."""
        url = self.remote_url()
        if url:
            from odibi_dagster.resources.spark_connect import connect_session

            return connect_session(url)
        try:
            from pyspark.sql import SparkSession
        except ImportError:
            raise OdibiRunError(
                "engine spark needs PySpark: on Databricks the runtime has it; elsewhere "
                "install odibi_dagster[spark] (PySpark and delta-spark matching the jars)"
            ) from None

        if self.use_active_session:
            active = SparkSession.getActiveSession() or _instantiated(SparkSession)
            if active is not None:
                return active
            if on_databricks():
                return SparkSession.builder.getOrCreate()
        with _lock:
            return self._build_local(SparkSession)

    def _build_local(self, spark_session: Any) -> Any:
        import pyspark

        from odibi_dagster.resources.spark_jars import (
            SPARK_JARS,
            default_jars_dir,
            jar_paths,
            missing_jars,
        )

        if not pyspark.__version__.startswith(LOCAL_PYSPARK):
            raise OdibiRunError(
                f"a local Spark session needs pyspark {LOCAL_PYSPARK}.x, the version its Delta "
                f"Lake jars are built for; this is pyspark {pyspark.__version__}. Install "
                "odibi_dagster[spark] (or pin pyspark==4.2.0 and delta-spark==4.4.0)"
            )
        jars_dir = Path(self.jars_dir).expanduser() if self.jars_dir else default_jars_dir()
        missing = missing_jars(jars_dir)
        if missing:
            raise OdibiRunError(
                f"a local Spark session needs the Delta Lake and hadoop-azure jars in "
                f"{jars_dir}; missing: {', '.join(missing)}. Run `odibi-dagster spark-jars` "
                f"once (downloads {len(SPARK_JARS)} jars from Maven Central), or set "
                "ODIBI_SPARK_JARS_DIR to a directory that holds them"
            )
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
        conf = {**LOCAL_DEFAULTS, **self.spark_conf}
        jars = jar_paths(jars_dir)
        if conf.get("spark.jars"):
            jars.append(conf["spark.jars"])
        builder = spark_session.builder.master(self.master).appName(self.app_name)
        builder = builder.config("spark.jars", ",".join(jars))
        for key, value in conf.items():
            if key != "spark.jars":
                builder = builder.config(key, value)
        try:
            session = builder.getOrCreate()
        except Exception as exc:
            raise OdibiRunError(
                f"the local Spark session did not start: {first_line(exc)}. Spark needs Java "
                "17 or 21 (java on PATH, or JAVA_HOME)"
            ) from None
        session.sparkContext.setLogLevel(conf.get("odibi.spark.logLevel", "ERROR"))
        return session

    def configure_connections(self, spark: Any, connections: Iterable[Any]) -> None:
        """Give ``spark`` the settings of each connection (an Azure one: its account-scoped
        key), once per process.

        A connection whose settings changed since (a key rotated in Key Vault) is
        configured again, and Hadoop's cached filesystem for its container is closed:
        that handle would otherwise keep signing with the old key for the life of the JVM.
        """
        for conn in connections:
            if not isinstance(conn, ConnectionResource):
                continue
            conf = conn.spark_conf()
            if not conf:
                continue
            digest = hashlib.sha256(repr(sorted(conf.items())).encode()).hexdigest()
            slot = (id(spark), storage_root(conn.uri("")))
            known = _configured.get(slot)
            if known == digest:
                continue
            for key, value in conf.items():
                spark.conf.set(key, value)
            if known is not None and storage_root(conn.spark_uri("")) in _opened:
                _close_cached_filesystem(spark, conn.spark_uri(""))
            _configured[slot] = digest

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        # The session itself starts at the first Spark node, not here: steps that only
        # touch pandas assets (or no data) do not pay for a JVM.
        return None


def _instantiated(spark_session: Any) -> Any:
    """A session built earlier in this process and not stopped, even on another thread."""
    session = getattr(spark_session, "_instantiatedSession", None)
    if session is None:
        return None
    try:
        if session.sparkContext._jsc is None:
            return None
    except Exception:
        return None
    return session


def storage_root(uri: str) -> str:
    """``scheme://authority`` of a URI: what Hadoop caches one filesystem for."""
    scheme, sep, rest = uri.partition("://")
    return f"{scheme}{sep}{rest.split('/', 1)[0]}" if sep else "file://"


def opened(uri: str) -> None:
    """Note that Spark has opened storage under ``uri`` (so Hadoop may cache a handle)."""
    _opened.add(storage_root(uri))


def _close_cached_filesystem(spark: Any, uri: str) -> None:
    """Drop Hadoop's cached filesystem for ``uri`` so the next access reads the new conf
    (best effort: a Spark Connect session has no JVM to reach)."""
    try:
        conf = spark._jsparkSession.sessionState().newHadoopConf()
        spark.sparkContext._jvm.org.apache.hadoop.fs.Path(uri).getFileSystem(conf).close()
    except Exception:
        pass


def forget_configured() -> None:
    """Forget which connections were configured (after a session was stopped)."""
    with _lock:
        _configured.clear()
        _opened.clear()


def forget_session(spark: Any) -> None:
    """Forget which connections ``spark`` was configured for (it is being stopped)."""
    with _lock:
        for slot in [s for s in _configured if s[0] == id(spark)]:
            del _configured[slot]
