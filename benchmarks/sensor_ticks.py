"""What a new-files sensor costs per tick, and how long a landed file waits for its run.

    .venv/bin/python benchmarks/sensor_ticks.py      (needs Azurite: `make services`)

1. Ticks. A generated project watches folders of 10, 1,000 and 10,000 CSV files, on local
   disk and on Azurite (blob endpoint, an ``azure_adls`` connection with ``auth_mode:
   direct_key``, its key from an environment variable). Each compiled sensor, taken
   from ``load_definitions``, is evaluated as the code server does for the daemon
   (``evaluate_tick`` on a fresh context with the resources the sensor requires), for:

   - the first tick: every file is new; it requests the oldest ``max_files_per_run``
     (100) and builds the cursor;
   - an unchanged tick: every file already requested (the steady state), nothing new;
   - one file changed: a file is rewritten, the tick requests just it (the cursor
     carried from tick to tick, the unchanged ticks starting from where it is).

   Beside them, the bare listing (``list(conn.list_files(path, pattern))``) that each
   tick makes, so ``tick / listing`` is what the sensor adds to it; the listing's CPU
   time in this process is shown too (on Azurite, the rest is the emulator answering).
   The four take turns, each after a full garbage collection, and each figure is the
   median. The files of a folder land in one burst just before its ticks, so they all
   lie within the sensor's settle window and stay in the cursor: the largest cursor a
   folder of that size gives. The steady-state cursor comes from a twin sensor with
   ``skip_existing: true`` (its first tick counts every file as requested); on local
   disk it is checked to equal what ticking the real sensor until nothing is new leaves.

2. Latency. A ``dagster-daemon run`` (own DAGSTER_HOME, SQLite storage) over a project
   whose sensor is ``enabled: true`` with ``interval: 1``; a CSV file is dropped into
   the watched folder (written beside it under a hidden name, then renamed in). Run
   created: when polling the instance (every 50 ms) first finds the run the sensor
   requested for it; run started: the run's start time in its record. Each drop waits
   for the previous run to succeed.
"""

from __future__ import annotations

import base64
import gc
import logging
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import dagster as dg
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import odibi_dagster  # noqa: E402
from odibi_dagster.automation import FileCursor  # noqa: E402
from odibi_dagster.resources.connection import ConnectionResource  # noqa: E402
from odibi_dagster_tests.emulators.azurite import AzuriteService, start_azurite  # noqa: E402
from odibi_dagster_tests.support.webserver import DAGSTER_YAML  # noqa: E402

SIZES = (10, 1_000, 10_000)
REPEAT = 7
REPEAT_SLOW = 3  # Azurite with 10,000 blobs: seconds per listing
PATTERN = "*.csv"
CSV = b"id,amount\n1,10.5\n2,7.25\n"
ACCOUNT, CONTAINER, KEY_VAR = "benchlake", "raw", "BENCH_LAKE_KEY"
DROPS = 5  # files dropped for the daemon latency, after one untimed
WAIT = 120.0  # seconds to wait for any one thing the daemon does

T = TypeVar("T")


# --------------------------------------------------------------------------- project


def folder(size: int) -> str:
    return f"landing/n{size}"


def tick_project(root: Path, blob_endpoint: str) -> Path:
    """One pipeline per backend and folder size, each with its sensor and a twin that
    counts the files already there as requested (``skip_existing``)."""
    pipelines = []
    for conn in ("disk", "lake"):
        for size in SIZES:
            name = f"{conn}_{size}"
            watch = {"connection": conn, "path": folder(size), "pattern": PATTERN}
            pipelines.append(
                {
                    "pipeline": name,
                    "sensors": [
                        {"new_files": watch, "name": name},
                        {"new_files": watch, "name": f"{name}_settled", "skip_existing": True},
                    ],
                    "nodes": [
                        {
                            "name": "arrived",
                            "read": {"connection": conn, "path": folder(size), "format": "csv"},
                        },
                        {
                            "name": "kept",
                            "depends_on": ["arrived"],
                            "transform": {"steps": ["SELECT * FROM arrived"]},
                            "write": {
                                "connection": "disk",
                                "path": f"out/{name}.parquet",
                                "format": "parquet",
                            },
                        },
                    ],
                }
            )
    doc = {
        "project": "sensor_bench",
        "connections": {
            "disk": {"type": "local", "base_path": "./data"},
            "lake": {
                "type": "azure_adls",
                "account": ACCOUNT,
                "container": CONTAINER,
                "auth_mode": "direct_key",
                "account_key": "${" + KEY_VAR + "}",
                "blob_endpoint": blob_endpoint,
            },
        },
        "pipelines": pipelines,
    }
    (root / "data").mkdir(parents=True)
    path = root / "project.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


# --------------------------------------------------------------------------- files


class Disk:
    kind = "local"

    def __init__(self, base: Path) -> None:
        self.base = base

    def land(self, paths: list[str]) -> None:
        for p in paths:
            (self.base / p).parent.mkdir(parents=True, exist_ok=True)
            (self.base / p).write_bytes(CSV)

    def change(self, path: str, n: int) -> None:
        (self.base / path).write_bytes(CSV + f"{n},1.0\n".encode())


class Lake:
    kind = "azurite"

    def __init__(self, azurite: AzuriteService) -> None:
        from azure.storage.blob import BlobServiceClient

        service = BlobServiceClient.from_connection_string(azurite.connection_string(ACCOUNT))
        self.client = service.get_container_client(CONTAINER)

    def land(self, paths: list[str]) -> None:
        def upload(p: str) -> None:
            self.client.upload_blob(p, CSV, overwrite=True)

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(upload, paths))

    def change(self, path: str, n: int) -> None:
        self.client.upload_blob(path, CSV + f"{n},1.0\n".encode(), overwrite=True)


# --------------------------------------------------------------------------- ticks


@dataclass
class Row:
    backend: str
    files: int
    listing: float
    listing_cpu: float  # of it, CPU time in this process (the rest: the store answering)
    first: float
    unchanged: float
    changed: float
    cursor_bytes: int  # the steady-state cursor, as Dagster stores it
    cursor_files: int  # files it holds (those within the settle window of the newest)


class Ticker:
    """Evaluates the project's compiled sensors the way the code server does: a fresh
    context each tick, with the resources the sensor requires (its connection)."""

    def __init__(self, defs: dg.Definitions, instance: dg.DagsterInstance) -> None:
        self.sensors = {s.name: s for s in defs.sensors or []}
        self.resources = dict(defs.resources or {})
        self.instance = instance

    def tick(self, name: str, cursor: str | None) -> Any:
        sensor = self.sensors[name]
        context = dg.build_sensor_context(
            instance=self.instance,
            cursor=cursor,
            sensor_name=name,
            resources={
                k: v for k, v in self.resources.items() if k in sensor.required_resource_keys
            },
        )
        return sensor.evaluate_tick(context)


def files_of(result: Any) -> list[str]:
    """The files the tick's run requests name."""
    return [
        f
        for request in result.run_requests
        for f in request.run_config["resources"]["odibi_new_files"]["config"]["files"]
    ]


def timed(
    times: list[float], fn: Callable[..., T], *args: Any, cpu: list[float] | None = None
) -> T:
    """``fn(*args)``, its time appended to ``times`` (its CPU time to ``cpu``)."""
    gc.collect()  # each measure pays for the full collections its own garbage triggers
    c, t = time.process_time(), time.perf_counter()
    result = fn(*args)
    times.append(time.perf_counter() - t)
    if cpu is not None:
        cpu.append(time.process_time() - c)
    return result


def measure(ticker: Ticker, store: Disk | Lake, conn: ConnectionResource, size: int) -> Row:
    """Land ``size`` files, then tick the folder's sensor, the four measures taking turns
    so that a busy moment of the machine falls on all of them."""
    sensor = f"{conn.connection_name}_{size}"
    path = folder(size)
    paths = [f"{path}/f{i:05d}.csv" for i in range(size)]
    store.land(paths)

    # every file requested: what ticking until nothing is new leaves (checked once)
    settled = ticker.tick(f"{sensor}_settled", None).cursor
    steady = FileCursor.decode(settled)
    assert steady is not None and len(steady.seen) == size
    if store.kind == "local" and size == 1_000:
        assert drained(ticker, sensor) == steady, "skip_existing and draining differ"

    listing: list[float] = []
    cpu: list[float] = []
    first: list[float] = []
    unchanged: list[float] = []
    changed: list[float] = []
    cursor = settled
    for i in range(REPEAT_SLOW if store.kind == "azurite" and size >= 10_000 else REPEAT):
        found = timed(listing, lambda: list(conn.list_files(path, PATTERN)), cpu=cpu)
        assert len(found) == size

        result = timed(first, ticker.tick, sensor, None)
        assert len(files_of(result)) == min(size, 100)

        result = timed(unchanged, ticker.tick, sensor, cursor)
        assert not result.run_requests, files_of(result)

        store.change(paths[i], i)  # untimed: the file lands, then the tick
        result = timed(changed, ticker.tick, sensor, cursor)
        assert files_of(result) == [paths[i]], files_of(result)
        cursor = result.cursor

    med = statistics.median
    return Row(
        store.kind,
        size,
        med(listing),
        med(cpu),
        med(first),
        med(unchanged),
        med(changed),
        len(settled or ""),
        len(steady.seen),
    )


def drained(ticker: Ticker, sensor: str) -> FileCursor | None:
    """The cursor once the sensor has requested every file, tick after tick."""
    cursor = None
    while True:
        result = ticker.tick(sensor, cursor)
        if not result.run_requests:
            return FileCursor.decode(cursor)
        cursor = result.cursor


def tick_rows(work: Path) -> list[Row]:
    key = base64.b64encode(secrets.token_bytes(64)).decode()
    os.environ[KEY_VAR] = key
    azurite = start_azurite(work / "azurite", {ACCOUNT: key})
    try:
        azurite.create_container(ACCOUNT, CONTAINER)
        path = tick_project(work / "ticks", azurite.blob_endpoint(ACCOUNT))
        defs = odibi_dagster.load_definitions(path)
        rows = []
        with dg.DagsterInstance.ephemeral() as instance:
            ticker = Ticker(defs, instance)
            stores: list[tuple[Disk | Lake, str]] = [
                (Disk(work / "ticks" / "data"), "disk"),
                (Lake(azurite), "lake"),
            ]
            for store, conn in stores:
                for size in SIZES:
                    rows.append(measure(ticker, store, ticker.resources[conn], size))
        return rows
    finally:
        azurite.stop()


# --------------------------------------------------------------------------- daemon


DAEMON_PROJECT = {
    "project": "sensor_latency",
    "connections": {"disk": {"type": "local", "base_path": "./data"}},
    "pipelines": [
        {
            "pipeline": "arrivals",
            "sensors": [
                {
                    "new_files": {"connection": "disk", "path": "landing", "pattern": PATTERN},
                    "name": "arrivals",
                    "interval": 1,
                    "enabled": True,
                }
            ],
            "nodes": [
                {
                    "name": "arrived",
                    "read": {"connection": "disk", "path": "landing", "format": "csv"},
                },
                {
                    "name": "kept",
                    "depends_on": ["arrived"],
                    "transform": {"steps": ["SELECT * FROM arrived"]},
                    "write": {
                        "connection": "disk",
                        "path": "out/kept.parquet",
                        "format": "parquet",
                    },
                },
            ],
        }
    ],
}


@contextmanager
def daemon(root: Path) -> Iterator[dg.DagsterInstance]:
    """``dagster-daemon run`` over ``root``'s project, in its own process group."""
    home = root / "home"
    home.mkdir(parents=True)
    (home / "dagster.yaml").write_text(DAGSTER_YAML)
    (root / "data" / "landing").mkdir(parents=True)
    (root / "project.yaml").write_text(yaml.safe_dump(DAEMON_PROJECT, sort_keys=False))
    (root / "definitions.py").write_text(
        "from pathlib import Path\n\nimport odibi_dagster\n\n"
        "defs = odibi_dagster.load_definitions(Path(__file__).parent / 'project.yaml')\n"
    )
    (root / "workspace.yaml").write_text(
        "load_from:\n  - python_file:\n      relative_path: definitions.py\n"
        f"      working_directory: {root}\n"
    )
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        # the code server and run workers import this checkout's odibi_dagster
        "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p),
    }
    # the instance first: it creates the SQLite storage the daemon then opens
    with dg.DagsterInstance.from_config(str(home)) as instance:
        with (root / "daemon.log").open("wb") as log:
            proc = subprocess.Popen(
                [
                    str(Path(sys.executable).parent / "dagster-daemon"),
                    "run",
                    "-w",
                    "workspace.yaml",
                ],
                cwd=root,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            yield instance
        except Exception:
            print((root / "daemon.log").read_text(errors="replace")[-4000:], file=sys.stderr)
            raise
        finally:
            # the daemon, its code server and any run worker: the whole group
            with suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            with suppress(subprocess.TimeoutExpired):
                proc.wait(10)
            with suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def wait_for(what: str, fn: Callable[[], T | None]) -> T:
    """Poll ``fn`` every 50 ms until it gives something (at most ``WAIT`` seconds)."""
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        found = fn()
        if found:
            return found
        time.sleep(0.05)
    raise TimeoutError(f"no {what} within {WAIT:.0f} s")


def drop(instance: dg.DagsterInstance, landing: Path, n: int) -> tuple[float, float]:
    """Land one file; seconds from landing to its run created, and to its run started."""
    name = f"drop{n}.csv"
    tmp = landing / f".{name}.part"  # hidden while written, as a careful uploader does
    tmp.write_bytes(CSV)
    os.replace(tmp, landing / name)
    landed = time.time()

    def record() -> dg.RunRecord | None:
        for r in instance.get_run_records(dg.RunsFilter(job_name="arrivals"), limit=5):
            if r.dagster_run.tags.get("odibi/files") == name:
                return r
        return None

    def start_time() -> float | None:
        r = record()
        return r.start_time if r else None

    def finished() -> dg.RunRecord | None:
        r = record()
        return r if r and r.dagster_run.is_finished else None

    # SQLite dates a run's creation to the second: the first poll that sees it is closer
    wait_for(f"run for {name}", record)
    created = time.time() - landed
    started = wait_for(f"start of the run for {name}", start_time) - landed
    status = wait_for(f"end of the run for {name}", finished).dagster_run.status
    if status != dg.DagsterRunStatus.SUCCESS:
        raise RuntimeError(f"the run for {name} ended {status}")
    return created, started


def latencies(work: Path) -> list[tuple[float, float]]:
    root = work / "daemon"
    with daemon(root) as instance:
        drop(instance, root / "data" / "landing", 0)  # untimed: the code location loads
        return [drop(instance, root / "data" / "landing", n) for n in range(1, DROPS + 1)]


# --------------------------------------------------------------------------- report


def ms(seconds: float) -> str:
    return f"{seconds * 1000:,.0f} ms" if seconds >= 0.01 else f"{seconds * 1000:.1f} ms"


WIDTHS = (8, 7, 21, 19, 19, 19, 25)


def line(cells: list[str]) -> str:
    """The backend left-aligned, the figures right-aligned."""
    return cells[0].ljust(WIDTHS[0]) + "".join(
        c.rjust(w) for c, w in zip(cells[1:], WIDTHS[1:], strict=True)
    )


def print_ticks(rows: list[Row]) -> None:
    print(
        f"Sensor ticks: median of {REPEAT} ({REPEAT_SLOW} on Azurite with 10,000 files), "
        "taking turns; (x) = the tick's time / the bare listing's"
    )
    print(
        line(
            [
                "backend",
                "files",
                "listing (CPU)",
                "first tick",
                "unchanged",
                "one changed",
                "cursor",
            ]
        )
    )
    for r in rows:
        print(
            line(
                [
                    r.backend,
                    f"{r.files:,}",
                    f"{ms(r.listing)} ({ms(r.listing_cpu)})",
                    *(f"{ms(t)} ({t / r.listing:.2f}x)" for t in (r.first, r.unchanged, r.changed)),
                    f"{r.cursor_bytes:,} B ({r.cursor_files:,} files)",
                ]
            )
        )


def print_latencies(drops: list[tuple[float, float]]) -> None:
    print()
    print(f"Daemon, sensor interval 1 s, local disk: from a file landing to its run, {DROPS} drops")
    for i, what in enumerate(("run created", "run started")):
        values = [d[i] for d in drops]
        print(
            f"  {what}: median {statistics.median(values):.1f} s "
            f"(min {min(values):.1f}, max {max(values):.1f})"
        )


def main() -> None:
    logging.disable(logging.INFO)  # each run request logs a line
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        print_ticks(tick_rows(work))
        print_latencies(latencies(work))


if __name__ == "__main__":
    main()
