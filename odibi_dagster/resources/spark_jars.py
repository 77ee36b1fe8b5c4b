"""The jars a local Spark session needs for Delta Lake and Azure storage, from Maven Central.

The pip ``pyspark`` has neither Delta Lake nor hadoop-azure. Databricks has both, so this
matters only off Databricks: ``odibi-dagster spark-jars`` downloads the pinned jars below
once, checks each against its SHA-1, and the local session loads them with
``spark.jars``. Pinned, not resolved: Spark's own resolver pulls in the transitive
dependencies of hadoop-azure, which clash with the Hadoop that pyspark already bundles.
"""

from __future__ import annotations

import hashlib
import os
import urllib.request
from collections.abc import Callable
from pathlib import Path

MAVEN_CENTRAL = "https://repo1.maven.org/maven2"

# (group:artifact:version, sha1). For pyspark 4.2 (Scala 2.13, Hadoop 3.5 client).
# hadoop-azure stays on 3.4: 3.5 removed the wasb (blob) driver, the one an emulator
# can reach; abfss works with both.
SPARK_JARS: tuple[tuple[str, str], ...] = (
    ("io.delta:delta-spark_4.2_2.13:4.4.0", "c2ab26421b8de44a2161b5e0b7da7954049f1ca1"),
    ("io.delta:delta-storage:4.4.0", "a068e489ce20d7f79bc4ca2d3392f12adbb69ddd"),
    ("org.apache.hadoop:hadoop-azure:3.4.2", "d8248efe9d234ad75a7c473a0d5da6d373e288f0"),
    ("com.microsoft.azure:azure-storage:7.0.1", "febd3081181fdcedfca833999b2504713caaea9c"),
    ("com.microsoft.azure:azure-keyvault-core:1.0.0", "e89dd5e621e21b753096ec6a03f203c01482c612"),
    (
        "org.apache.hadoop.thirdparty:hadoop-shaded-guava:1.5.0",
        "f2ca5a1a9151cb9e14ea069770eba750b38ddb70",
    ),
    ("org.wildfly.openssl:wildfly-openssl:2.2.5.Final", "78a86a04b5ddbfb75d6f3a2812cc724cde4a26f1"),
    ("org.hdrhistogram:HdrHistogram:2.1.12", "6eb7552156e0d517ae80cc2247be1427c8d90452"),
    ("org.eclipse.jetty:jetty-util:9.4.57.v20241219", "7bf7ea75644ac064199e1e32c66ccd312239f2dc"),
    (
        "org.eclipse.jetty:jetty-util-ajax:9.4.57.v20241219",
        "7b5f144a3d0cbfcac62f2fcb9e14ffa765048f0e",
    ),
)


def default_jars_dir() -> Path:
    """``$ODIBI_SPARK_JARS_DIR``, else ``~/.cache/odibi_dagster/spark-jars``."""
    env = os.environ.get("ODIBI_SPARK_JARS_DIR")
    if env:
        return Path(env).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "odibi_dagster" / "spark-jars"


def jar_name(coordinate: str) -> str:
    _, artifact, version = coordinate.split(":")
    return f"{artifact}-{version}.jar"


def _url(coordinate: str, repository: str) -> str:
    group, artifact, version = coordinate.split(":")
    return (
        f"{repository.rstrip('/')}/{group.replace('.', '/')}/{artifact}/{version}/"
        f"{jar_name(coordinate)}"
    )


def _sha1(path: Path) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def missing_jars(jars_dir: Path) -> list[str]:
    """The pinned jars not (or not intact) in ``jars_dir``, by file name."""
    out = []
    for coordinate, sha1 in SPARK_JARS:
        path = jars_dir / jar_name(coordinate)
        if not path.is_file() or _sha1(path) != sha1:
            out.append(jar_name(coordinate))
    return out


def jar_paths(jars_dir: Path) -> list[str]:
    return [str(jars_dir / jar_name(c)) for c, _ in SPARK_JARS]


def download_jars(
    jars_dir: Path | None = None,
    *,
    repository: str | None = None,
    log: Callable[[str], None] = print,
    timeout: float = 60,
) -> Path:
    """Download the pinned jars into ``jars_dir`` (kept when already there and intact).

    ``repository`` (or ``$ODIBI_MAVEN_REPOSITORY``) replaces Maven Central, for a mirror.
    Each jar is checked against its pinned SHA-1 before it is moved into place.
    """
    target = jars_dir or default_jars_dir()
    repo = repository or os.environ.get("ODIBI_MAVEN_REPOSITORY") or MAVEN_CENTRAL
    target.mkdir(parents=True, exist_ok=True)
    for coordinate, sha1 in SPARK_JARS:
        path = target / jar_name(coordinate)
        if path.is_file() and _sha1(path) == sha1:
            continue
        url = _url(coordinate, repo)
        tmp = path.with_suffix(f".part-{os.getpid()}")
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp, open(tmp, "wb") as out:
                while chunk := resp.read(1 << 20):
                    out.write(chunk)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise RuntimeError(
                f"could not download {coordinate} from {url}: {exc}. Check the network, or "
                "set ODIBI_MAVEN_REPOSITORY to a Maven mirror you can reach"
            ) from None
        got = _sha1(tmp)
        if got != sha1:
            tmp.unlink(missing_ok=True)
            raise RuntimeError(
                f"{url} has SHA-1 {got}, expected {sha1}: not installed. A proxy or mirror "
                "served a different file"
            )
        os.replace(tmp, path)
        log(f"downloaded {jar_name(coordinate)}")
    return target
