"""Azurite (the Azure Storage emulator, blob service only) as a child process.

Install it with ``make services`` (``npm ci`` in the repository root).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import signal
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.storage.blob import BlobServiceClient

REPO = Path(__file__).resolve().parents[2]
_LISTENING = re.compile(r"successfully listens on http://127\.0\.0\.1:(\d+)")


def azurite_binary() -> str:
    """``$AZURITE_BLOB_BIN``, else ``<repo>/node_modules/.bin/azurite-blob``."""
    path = os.environ.get("AZURITE_BLOB_BIN") or str(
        REPO / "node_modules" / ".bin" / "azurite-blob"
    )
    if not os.access(path, os.X_OK):
        raise RuntimeError(
            f"Azurite not found at {path}: run `make services` (npm ci in {REPO}) "
            "or set AZURITE_BLOB_BIN"
        )
    return path


@dataclass(eq=False)
class AzuriteService:
    """A running Azurite blob service with the given accounts (name -> base64 key)."""

    host: str
    port: int
    accounts: dict[str, str]
    _proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def blob_endpoint(self, account: str) -> str:
        """``http://127.0.0.1:<port>/<account>``."""
        return f"http://{self.host}:{self.port}/{account}"

    def connection_string(self, account: str, key: str | None = None) -> str:
        """A connection string for ``account`` (``key`` overrides the real key)."""
        key = self.accounts[account] if key is None else key
        return (
            f"DefaultEndpointsProtocol=http;AccountName={account};AccountKey={key};"
            f"BlobEndpoint={self.blob_endpoint(account)};"
        )

    def _service(self, account: str) -> BlobServiceClient:
        return BlobServiceClient.from_connection_string(self.connection_string(account))

    def create_container(self, account: str, name: str) -> None:
        """Create a container unless it exists."""
        with contextlib.suppress(ResourceExistsError):
            self._service(account).create_container(name)

    def delete_container(self, account: str, name: str) -> None:
        """Delete a container if it exists."""
        with contextlib.suppress(ResourceNotFoundError):
            self._service(account).delete_container(name)

    def list_blobs(self, account: str, container: str, prefix: str = "") -> list[str]:
        """Names of the blobs in ``container`` starting with ``prefix``."""
        client = self._service(account).get_container_client(container)
        return list(client.list_blob_names(name_starts_with=prefix or None))

    def read_blob(self, account: str, container: str, name: str) -> bytes:
        """The content of one blob."""
        blob = self._service(account).get_blob_client(container, name)
        return blob.download_blob().readall()

    def upload_blob(self, account: str, container: str, name: str, data: bytes) -> None:
        """Write (overwrite) one blob."""
        self._service(account).get_blob_client(container, name).upload_blob(data, overwrite=True)

    def stop(self) -> None:
        """Kill Azurite and its process group (idempotent)."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                proc.wait(wait)
                break
            except subprocess.TimeoutExpired:
                continue


def _answers(url: str) -> bool:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        opener.open(url, timeout=2).close()
    except urllib.error.HTTPError:
        return True  # any HTTP answer (403 without a signature) means it is up
    except OSError:
        return False
    return True


def start_azurite(workdir: Path, accounts: dict[str, str], port: int = 0) -> AzuriteService:
    """Start Azurite's blob service on 127.0.0.1 (``port`` 0 = any free port) and wait for it."""
    if not accounts:
        raise ValueError("start_azurite needs at least one account")
    workdir = Path(workdir)
    location = workdir / "azurite"
    location.mkdir(parents=True, exist_ok=True)
    out_path, err_path = workdir / "azurite.stdout.log", workdir / "azurite.stderr.log"
    env = dict(os.environ, AZURITE_ACCOUNTS=";".join(f"{a}:{k}" for a, k in accounts.items()))
    cmd = [
        azurite_binary(),
        "--blobHost",
        "127.0.0.1",
        "--blobPort",
        str(port),
        "--location",
        str(location),
        "--disableTelemetry",
        "--skipApiVersionCheck",
        "--loose",
    ]
    with out_path.open("wb") as out, err_path.open("wb") as err:
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            env=env,
            cwd=workdir,
            start_new_session=True,
        )
    svc = AzuriteService("127.0.0.1", port, dict(accounts), proc)
    atexit.register(svc.stop)

    def fail(why: str) -> RuntimeError:
        svc.stop()
        output = out_path.read_text(errors="replace") + err_path.read_text(errors="replace")
        return RuntimeError(f"Azurite {why} ({' '.join(cmd)}):\n{output.strip()}")

    deadline = time.monotonic() + 30
    while True:
        if proc.poll() is not None:
            raise fail(f"exited with status {proc.returncode}")
        if time.monotonic() > deadline:
            raise fail("did not answer within 30 s")
        match = _LISTENING.search(out_path.read_text(errors="replace"))
        if match:
            svc.port = int(match.group(1))
            if _answers(f"{svc.blob_endpoint(next(iter(accounts)))}?comp=list"):
                return svc
        time.sleep(0.05)
