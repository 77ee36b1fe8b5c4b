"""Session fixtures: ``azurite`` (accounts odibiraw + odibicurated), ``azurite_devstore``
(Azurite's ``devstoreaccount1`` on port 10000, for hadoop-azure's emulator mode) and
``keyvault``.

Each service is started once per process and shared, even when the fixtures are registered
twice (``pytest_plugins`` in conftest and an explicit import in a test module); the last user
stops it.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import os
import secrets
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from .azurite import AzuriteService, start_azurite
from .keyvault import KeyVaultService, start_keyvault

T = TypeVar("T")

# Variables that would steer DefaultAzureCredential away from the emulated managed identity.
CLEARED_ENV = (
    "AZURE_CLIENT_ID",
    "AZURE_TENANT_ID",
    "AZURE_CLIENT_SECRET",
    "AZURE_USERNAME",
    "AZURE_FEDERATED_TOKEN_FILE",
    "AZURE_TOKEN_CREDENTIALS",
    "MSI_ENDPOINT",
    "MSI_SECRET",
)

# Azurite's development account at its fixed address: the only one hadoop-azure's wasb
# driver reaches (its "emulator mode" signs with this well-known, published key).
DEV_ACCOUNT = "devstoreaccount1"
DEV_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
DEV_PORT = 10000

_shared: dict[str, list[Any]] = {}  # name -> [service, stop callback, number of users]
_shared_lock = threading.Lock()


def random_key() -> str:
    """A storage account key: 64 random bytes, base64."""
    return base64.b64encode(secrets.token_bytes(64)).decode("ascii")


@contextlib.contextmanager
def _share(name: str, start: Callable[[], tuple[T, Callable[[], None]]]) -> Iterator[T]:
    with _shared_lock:
        if name not in _shared:
            _shared[name] = [*start(), 0]
        entry = _shared[name]
        entry[2] += 1
    try:
        yield entry[0]
    finally:
        with _shared_lock:
            entry[2] -= 1
            if entry[2] == 0:
                del _shared[name]
                entry[1]()


def _start_azurite(workdir: Path) -> tuple[AzuriteService, Callable[[], None]]:
    svc = start_azurite(workdir, {"odibiraw": random_key(), "odibicurated": random_key()})
    return svc, svc.stop


def _port_taken(port: int) -> bool:
    """Whether something listens on 127.0.0.1:``port`` (bound as a server would bind it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError as exc:
            return exc.errno == errno.EADDRINUSE
    return False


def _start_azurite_devstore(workdir: Path) -> tuple[AzuriteService, Callable[[], None]]:
    why = (
        f"port {DEV_PORT} on 127.0.0.1 is already taken; hadoop-azure's emulator mode only "
        f"reaches Azurite's {DEV_ACCOUNT} at that fixed port"
    )
    if _port_taken(DEV_PORT):
        pytest.skip(why)
    try:
        svc = start_azurite(workdir, {DEV_ACCOUNT: DEV_KEY}, port=DEV_PORT)
    except RuntimeError as exc:
        if "EADDRINUSE" in str(exc):  # taken between the check and the start
            pytest.skip(why)
        raise
    return svc, svc.stop


def _start_keyvault(workdir: Path) -> tuple[KeyVaultService, Callable[[], None]]:
    svc = start_keyvault(workdir)
    env = svc.env()
    saved = {name: os.environ.get(name) for name in (*env, *CLEARED_ENV)}
    for name in CLEARED_ENV:
        os.environ.pop(name, None)
    os.environ.update(env)

    def stop() -> None:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        svc.stop()

    return svc, stop


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AzuriteService]:
    """Azurite blob service with accounts ``odibiraw`` and ``odibicurated`` (random keys)."""
    with _share("azurite", lambda: _start_azurite(tmp_path_factory.mktemp("azurite"))) as svc:
        yield svc


@pytest.fixture(scope="session")
def azurite_devstore(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AzuriteService]:
    """Azurite blob service with account ``devstoreaccount1`` (key ``DEV_KEY``) on
    127.0.0.1:10000, where hadoop-azure's wasb driver finds it in emulator mode.

    Skips when port 10000 is already taken.
    """
    with _share(
        "azurite_devstore",
        lambda: _start_azurite_devstore(tmp_path_factory.mktemp("azurite_devstore")),
    ) as svc:
        yield svc


@pytest.fixture(scope="session")
def keyvault(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KeyVaultService]:
    """The Key Vault stand-in, with ``os.environ`` set so DefaultAzureCredential reaches it.

    Clears the ``AZURE_*``/``MSI_*`` variables that would pick another credential meanwhile.
    """
    with _share("keyvault", lambda: _start_keyvault(tmp_path_factory.mktemp("keyvault"))) as svc:
        yield svc
