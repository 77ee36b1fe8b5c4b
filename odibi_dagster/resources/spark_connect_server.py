"""A Spark Connect server on this machine, for trying and testing ``spark: {remote: ...}``
without a cluster: pip's PySpark runs it (``spark-submit --class
org.apache.spark.sql.connect.service.SparkConnectServer``) with the same Delta Lake and
hadoop-azure jars and defaults as a local session, listening on 127.0.0.1 only.

Run a command against one (the server stops when the command ends)::

    python -m odibi_dagster.resources.spark_connect_server odibi-dagster run examples/retail

The command gets ``ODIBI_SPARK_REMOTE=sc://127.0.0.1:<port>`` and ``ODIBI_ENGINE=spark``
in its environment (examples/retail reads both).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from odibi_dagster.resources.spark import LOCAL_DEFAULTS
from odibi_dagster.resources.spark_jars import default_jars_dir, jar_paths, missing_jars

SERVER_CLASS = "org.apache.spark.sql.connect.service.SparkConnectServer"
# how long a server may take to listen (a cold JVM on a busy 2-core machine: ~15 s)
START_TIMEOUT = 180.0


@dataclass
class LocalConnectServer:
    """A running server: its port, ``sc://`` URL, process and log file."""

    port: int
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def url(self) -> str:
        return f"sc://127.0.0.1:{self.port}"

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the server (its whole process group), waiting at most ``timeout`` s."""
        if self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _listening(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(1.0)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def start_server(
    port: int | None = None,
    *,
    jars_dir: Path | None = None,
    conf: Mapping[str, str] | None = None,
    master: str = "local[2]",
    log: Path | None = None,
    timeout: float = START_TIMEOUT,
) -> LocalConnectServer:
    """Start a Spark Connect server on 127.0.0.1 and return once it listens (or raise
    with the end of its log, after at most ``timeout`` seconds)."""
    import pyspark

    jars = jars_dir or default_jars_dir()
    missing = missing_jars(jars)
    if missing:
        raise RuntimeError(
            f"a local Spark Connect server needs the jars in {jars}; missing: "
            f"{', '.join(missing)}. Run `odibi-dagster spark-jars` once"
        )
    spark_home = Path(pyspark.__file__).parent
    port = port or free_port()
    settings = {
        **LOCAL_DEFAULTS,
        "spark.connect.grpc.binding.address": "127.0.0.1",
        "spark.connect.grpc.binding.port": str(port),
        "spark.sql.shuffle.partitions": "2",
        **(conf or {}),
    }
    cmd = [
        str(spark_home / "bin" / "spark-submit"),
        "--class",
        SERVER_CLASS,
        "--master",
        master,
        "--jars",
        ",".join(jar_paths(jars)),
    ]
    for key, value in settings.items():
        cmd += ["--conf", f"{key}={value}"]
    if log is None:
        fd, name = tempfile.mkstemp(prefix="spark-connect-", suffix=".log")
        os.close(fd)
        log = Path(name)
    env = {**os.environ, "SPARK_HOME": str(spark_home), "SPARK_LOCAL_IP": "127.0.0.1"}
    env.pop("SPARK_REMOTE", None)
    with open(log, "wb") as out:
        process = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    server = LocalConnectServer(port=port, process=process, log=log)
    deadline = time.monotonic() + timeout
    while not _listening(port):
        if process.poll() is not None or time.monotonic() > deadline:
            server.stop()
            why = (
                "exited" if process.returncode is not None else f"not listening after {timeout:g} s"
            )
            raise RuntimeError(
                f"the Spark Connect server {why} (Java 17 or 21 needed). End of {log}:\n"
                f"{server.log_tail()}"
            )
        time.sleep(0.25)
    return server


@contextlib.contextmanager
def local_server(**kwargs: object) -> Iterator[LocalConnectServer]:
    """A local Spark Connect server for the duration of the block."""
    server = start_server(**kwargs)  # type: ignore[arg-type]
    try:
        yield server
    finally:
        server.stop()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command in ``argv`` with a local Spark Connect server (see module doc)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["--"]:
        args = args[1:]
    if not args:
        print(__doc__)
        return 2
    with local_server() as server:
        print(f"Spark Connect server at {server.url} (log: {server.log})", flush=True)
        env = {**os.environ, "ODIBI_SPARK_REMOTE": server.url, "ODIBI_ENGINE": "spark"}
        return subprocess.call(args, env=env)


if __name__ == "__main__":
    raise SystemExit(main())
