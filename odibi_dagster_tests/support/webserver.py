"""A private dagster-webserver and a small GraphQL client, for the end-to-end tests.

The webserver runs from a copy of the repository's examples (never from ``examples/`` itself)
with its own DAGSTER_HOME, in its own process group so teardown can stop it and every code
server and run worker it started.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from odibi_dagster_tests.support.paths import EXAMPLES, REPO

REPOSITORY_NAME = "__repository__"

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

# Without the DefaultRunCoordinator, runs launched through GraphQL stay QUEUED: no daemon runs.
DAGSTER_YAML = """\
run_coordinator:
  module: dagster._core.run_coordinator
  class: DefaultRunCoordinator
telemetry:
  enabled: false
"""

# Whatever earlier local runs left in examples/ is not copied: the tests start from raw data.
_COPY_IGNORE = shutil.ignore_patterns(
    "__pycache__", "*.pyc", "outputs", "silver", "gold", ".dagster*", "storage", "logs"
)

TERMINAL_RUN_STATUSES = {"SUCCESS", "FAILURE", "CANCELED"}


# --------------------------------------------------------------------------- setup


def copy_workspace(dest: Path) -> Path:
    """Copy ``examples/`` and ``workspace.yaml`` into ``dest``; return the workspace file."""
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copytree(EXAMPLES, dest / "examples", ignore=_COPY_IGNORE)
    shutil.copy2(REPO / "workspace.yaml", dest / "workspace.yaml")
    return dest / "workspace.yaml"


def make_dagster_home(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "dagster.yaml").write_text(DAGSTER_YAML)
    return path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --------------------------------------------------------------------------- GraphQL


class GraphQLError(AssertionError):
    pass


@dataclass
class GraphQLClient:
    url: str
    timeout: float = 30.0

    def query(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        """The ``data`` of the answer; raises GraphQLError if the server reports errors."""
        body = json.dumps({"query": query, "variables": variables or {}}).encode()
        req = urllib.request.Request(
            self.url, data=body, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                answer = json.load(resp)
        except urllib.error.HTTPError as exc:  # invalid queries come back as 400 + errors
            raise GraphQLError(
                f"HTTP {exc.code}: {exc.read().decode(errors='replace')[:4000]}"
            ) from None
        if answer.get("errors"):
            raise GraphQLError(json.dumps(answer["errors"], indent=1)[:4000])
        return answer["data"]


LOCATIONS_QUERY = """
query Locations {
  workspaceOrError {
    __typename
    ... on Workspace {
      locationEntries {
        name
        loadStatus
        locationOrLoadError {
          __typename
          ... on PythonError { message }
        }
      }
    }
    ... on PythonError { message }
  }
}
"""

LAUNCH_RUN = """
mutation Launch($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId status } }
    ... on PythonError { message }
    ... on InvalidSubsetError { message }
    ... on RunConfigValidationInvalid { errors { message } }
    ... on PipelineNotFoundError { message }
    ... on InvalidStepError { invalidStepKey }
    ... on InvalidOutputError { invalidOutputName }
    ... on UnauthorizedError { message }
  }
}
"""

RUN_STATUS = """
query RunStatus($runId: ID!) {
  runOrError(runId: $runId) {
    __typename
    ... on Run { runId status }
    ... on PythonError { message }
  }
}
"""

RUN_FAILURE_EVENTS = """
query RunEvents($runId: ID!) {
  logsForRun(runId: $runId, limit: 500) {
    ... on EventConnection {
      events {
        __typename
        ... on MessageEvent { message level }
        ... on ErrorEvent { error { message causes { message } } }
      }
    }
  }
}
"""


def launch_run(client: GraphQLClient, location: str, job: str) -> str:
    """Launch ``job`` of ``location``; return the run id."""
    data = client.query(
        LAUNCH_RUN,
        {
            "params": {
                "selector": {
                    "repositoryLocationName": location,
                    "repositoryName": REPOSITORY_NAME,
                    "jobName": job,
                }
            }
        },
    )
    result = data["launchRun"]
    if result["__typename"] != "LaunchRunSuccess":
        raise AssertionError(f"launchRun {location}/{job} failed: {result}")
    return str(result["run"]["runId"])


def wait_for_run(client: GraphQLClient, run_id: str, timeout: float = 120.0) -> str:
    """Poll until the run is finished; return its final status."""
    deadline = time.monotonic() + timeout
    status = "?"
    while time.monotonic() < deadline:
        run = client.query(RUN_STATUS, {"runId": run_id})["runOrError"]
        if run["__typename"] != "Run":
            raise AssertionError(f"run {run_id}: {run}")
        status = run["status"]
        if status in TERMINAL_RUN_STATUSES:
            return str(status)
        time.sleep(0.5)
    raise AssertionError(f"run {run_id} still {status} after {timeout:.0f} s")


def run_error_messages(client: GraphQLClient, run_id: str) -> list[str]:
    """The ERROR-level messages of a run, to explain a failure in an assertion message."""
    data = client.query(RUN_FAILURE_EVENTS, {"runId": run_id})["logsForRun"]
    return [e.get("message", "") for e in data.get("events", []) if e.get("level") == "ERROR"]


# --------------------------------------------------------------------------- webserver


@dataclass
class Webserver:
    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def graphql(self) -> GraphQLClient:
        return GraphQLClient(f"{self.base_url}/graphql")

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return "<no log>"

    def stop(self) -> None:
        """Stop the webserver's whole process group (code servers, run workers included)."""
        pgid = self.proc.pid  # start_new_session=True: the group id is the leader's pid
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=15)
        # Children may outlive the leader: make sure nothing of the group is left.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
        if self.proc.poll() is None:
            self.proc.wait(timeout=10)


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _locations(client: GraphQLClient) -> dict[str, dict[str, Any]]:
    ws = client.query(LOCATIONS_QUERY)["workspaceOrError"]
    if ws["__typename"] != "Workspace":
        raise AssertionError(f"workspace failed to load: {ws}")
    return {e["name"]: e for e in ws["locationEntries"]}


def wait_until_ready(server: Webserver, locations: list[str], timeout: float = 90.0) -> None:
    """Wait for /server_info and for every location in ``locations`` to be LOADED."""
    deadline = time.monotonic() + timeout
    last: Any = "server_info never answered"
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(
                f"dagster-webserver exited with {server.proc.returncode}:\n{server.log_tail()}"
            )
        if _http_ok(f"{server.base_url}/server_info"):
            try:
                entries = _locations(server.graphql)
            except (urllib.error.URLError, OSError, GraphQLError) as exc:
                last = exc
            else:
                last = {n: e["loadStatus"] for n, e in entries.items()}
                if all(entries.get(n, {}).get("loadStatus") == "LOADED" for n in locations):
                    errors = {
                        n: entries[n]["locationOrLoadError"]
                        for n in locations
                        if (entries[n]["locationOrLoadError"] or {}).get("__typename")
                        == "PythonError"
                    }
                    if errors:
                        raise RuntimeError(f"code locations failed to load: {errors}")
                    return
        time.sleep(0.5)
    raise RuntimeError(
        f"webserver not ready after {timeout:.0f} s (last: {last}):\n{server.log_tail()}"
    )


def start_webserver(
    workspace_file: Path,
    dagster_home: Path,
    log_path: Path,
    locations: list[str],
    timeout: float = 90.0,
) -> Webserver:
    """Start dagster-webserver on a free port and wait until ``locations`` are loaded."""
    exe = Path(sys.executable).parent / "dagster-webserver"
    port = free_port()
    env = dict(os.environ, DAGSTER_HOME=str(dagster_home), PYTHONUNBUFFERED="1")
    log = open(log_path, "wb")  # noqa: SIM115 - handed to the child, closed below
    try:
        proc = subprocess.Popen(
            [str(exe), "-w", str(workspace_file), "-h", "127.0.0.1", "-p", str(port)],
            cwd=workspace_file.parent,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    finally:
        log.close()
    server = Webserver(proc=proc, port=port, log_path=log_path)
    try:
        wait_until_ready(server, locations, timeout)
    except BaseException:
        server.stop()
        raise
    return server
