"""Locks on one path, held by one write at a time across processes, for each kind of
storage the connections give: local disk (``flock`` on a lock file) and Azure Blob
Storage / ADLS (a lease on a lock blob). :mod:`engines.replace` decides when a write
holds one and what it may clean up meanwhile; this module only knows how to hold one.

Both kinds free themselves when their holder dies: the kernel drops a ``flock`` with
the process, and a lease not renewed lapses after :data:`LEASE_SECONDS`. So a lock is
never stale, and its file or blob is deleted by the holder when it lets go.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import sys
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from odibi_dagster.errors import first_line

if TYPE_CHECKING:
    from fsspec import AbstractFileSystem

# an ADLS lease lapses this long after its holder stopped renewing it (15 to 60 s)
LEASE_SECONDS = 15


@dataclass(frozen=True)
class Entry:
    """A file or folder beside the locked path: its name, its path on the filesystem,
    and when it last changed (POSIX seconds; a folder: its newest file)."""

    name: str
    path: str
    modified: float


class Lock(Protocol):
    """A lock on one path (``lock_path`` names the file or blob that holds it)."""

    lock_path: str

    def acquire(self, deadline: float) -> bool:
        """Wait until the lock is held (True) or ``time.monotonic()`` passes ``deadline``."""
        ...

    def lost(self) -> str | None:
        """Why the lock is no longer held for sure (None: it is)."""
        ...

    def release(self) -> None: ...

    def siblings(self, prefixes: tuple[str, ...]) -> list[Entry]:
        """The entries beside ``lock_path`` whose names start with one of ``prefixes``."""
        ...

    def delete(self, path: str) -> None:
        """Delete the file or folder ``path`` (an entry of :meth:`siblings`), or raise."""
        ...


def _parent(path: str) -> str:
    return path.rstrip("/").rsplit("/", 1)[0] if "/" in path.rstrip("/") else ""


def _pause(delay: float, cap: float) -> float:
    """Sleep about ``delay`` (jittered, so waiters do not move in step); the next delay."""
    time.sleep(delay * (0.5 + random.random()))
    return min(delay * 2, cap)


if sys.platform == "win32":
    import msvcrt

    def _try_lock(fd: int) -> bool:
        """Lock the open file ``fd`` without waiting; whether it is now held (released
        when it is closed or the process ends)."""
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True

else:
    import fcntl

    def _try_lock(fd: int) -> bool:
        """Lock the open file ``fd`` without waiting; whether it is now held (released
        when it is closed or the process ends)."""
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True


class FileLock:
    """``flock`` on a lock file on local disk (or a mount whose locks work across the
    machines that write it). The holder deletes the file when it lets go; a waiter that
    got the lock of a file deleted meanwhile tries again on the new one."""

    def __init__(self, lock_path: str):
        self.lock_path = lock_path
        self._fd = -1

    def acquire(self, deadline: float) -> bool:
        parent = _parent(self.lock_path)
        if parent:
            os.makedirs(parent, exist_ok=True)
        delay = 0.002
        while True:
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                locked = _try_lock(fd)
            except BaseException:
                os.close(fd)
                raise
            if not locked:
                os.close(fd)
                if time.monotonic() >= deadline:
                    return False
                delay = _pause(delay, 0.05)
                continue
            try:
                current = os.path.samestat(os.fstat(fd), os.stat(self.lock_path))
            except FileNotFoundError:
                current = False
            if current:
                self._fd = fd
                return True
            os.close(fd)  # its holder deleted it on release: lock the file there now

    def lost(self) -> str | None:
        return None  # a flock lasts until it is released or the process ends

    def release(self) -> None:
        if self._fd < 0:
            return
        with contextlib.suppress(OSError):
            os.unlink(self.lock_path)  # still held: no one else can have it yet
        os.close(self._fd)
        self._fd = -1

    def siblings(self, prefixes: tuple[str, ...]) -> list[Entry]:
        folder = _parent(self.lock_path) or "."
        found = []
        try:
            entries = list(os.scandir(folder))
        except FileNotFoundError:
            return []
        for entry in entries:
            if entry.name.startswith(prefixes):
                with contextlib.suppress(FileNotFoundError):
                    found.append(Entry(entry.name, entry.path, _newest(entry)))
        return found

    def delete(self, path: str) -> None:
        _delete_local(path)


def _delete_local(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    else:
        os.remove(path)


def _newest(entry: os.DirEntry[str]) -> float:
    """When a file, or anything in a folder, last changed."""
    newest = entry.stat(follow_symlinks=False).st_mtime
    if entry.is_dir(follow_symlinks=False):
        for folder, _, files in os.walk(entry.path):
            for name in files:
                with contextlib.suppress(FileNotFoundError):
                    newest = max(newest, os.lstat(os.path.join(folder, name)).st_mtime)
    return newest


class BlobLease:
    """A lease on a lock blob (Azure Blob Storage, ADLS Gen2, Azurite), through the
    adlfs filesystem's own client and credentials. The lease is renewed every
    :data:`LEASE_SECONDS` / 3 seconds while held; :meth:`lost` renews it once more and
    says why it failed, if it did."""

    def __init__(self, fs: AbstractFileSystem, lock_path: str):
        self.fs = fs
        self.lock_path = lock_path
        container, blob, _ = fs.split_path(lock_path)
        self._container = container
        self._blob = blob
        self._client = fs.service_client.get_blob_client(container, blob)
        self._lease: Any = None
        self._lost: str | None = None
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    def _call(self, func: Any, *args: Any, **kwargs: Any) -> Any:
        from fsspec.asyn import sync

        return sync(self.fs.loop, func, *args, **kwargs)

    def acquire(self, deadline: float) -> bool:
        from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

        delay = 0.05
        while True:
            try:
                self._lease = self._call(self._client.acquire_lease, lease_duration=LEASE_SECONDS)
                break
            except ResourceNotFoundError:  # no lock blob: no write holds it
                self._create()
                if time.monotonic() < deadline:
                    continue
                return False
            except HttpResponseError as exc:
                if exc.status_code != 409:  # 409: leased by another write
                    raise
            if time.monotonic() >= deadline:
                return False
            delay = _pause(delay, 1.0)
        self._renewer = threading.Thread(target=self._renew, name="odibi-lease", daemon=True)
        self._renewer.start()
        return True

    def _create(self) -> None:
        from azure.core.exceptions import HttpResponseError

        try:
            self._call(self._client.upload_blob, b"", overwrite=False)
        except HttpResponseError as exc:
            if exc.status_code not in (409, 412):  # created (and leased) by another write
                raise

    def _renew(self) -> None:
        while not self._stop.wait(LEASE_SECONDS / 3):
            try:
                self._call(self._lease.renew)
            except Exception as exc:
                self._lost = f"{type(exc).__name__}: {first_line(exc)}"
                return

    def lost(self) -> str | None:
        if self._lost is None:
            try:
                self._call(self._lease.renew)
            except Exception as exc:
                self._lost = f"{type(exc).__name__}: {first_line(exc)}"
        return self._lost

    def release(self) -> None:
        if self._lease is None:
            return
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join()
        try:
            self._call(self._client.delete_blob, lease=self._lease)
        except Exception:
            with contextlib.suppress(Exception):
                self._call(self._lease.release)
        self._lease = None

    def siblings(self, prefixes: tuple[str, ...]) -> list[Entry]:
        folder = self._blob.rsplit("/", 1)[0] + "/" if "/" in self._blob else ""
        newest: dict[str, float] = {}
        for prefix in prefixes:
            for name, modified in self._call(self._list, folder + prefix):
                top = name[len(folder) :].split("/", 1)[0]
                newest[top] = max(newest.get(top, 0.0), modified)
        return [
            Entry(name, f"{self._container}/{folder}{name}", modified)
            for name, modified in newest.items()
        ]

    def delete(self, path: str) -> None:
        self.fs.rm(path, recursive=True)

    async def _list(self, prefix: str) -> list[tuple[str, float]]:
        container = self.fs.service_client.get_container_client(self._container)
        return [
            (blob.name, blob.last_modified.timestamp() if blob.last_modified else 0.0)
            async for blob in container.list_blobs(name_starts_with=prefix)
        ]


_PROCESS_LOCKS: dict[tuple[str, str], threading.Lock] = {}
_PROCESS_LOCKS_LOCK = threading.Lock()


class ProcessLock:
    """For a filesystem of no other kind (an in-memory one): a lock within this process."""

    def __init__(self, fs: AbstractFileSystem, lock_path: str):
        self.fs = fs
        self.lock_path = lock_path
        protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
        with _PROCESS_LOCKS_LOCK:
            self._lock = _PROCESS_LOCKS.setdefault((protocol, lock_path), threading.Lock())
        self._held = False

    def acquire(self, deadline: float) -> bool:
        self._held = self._lock.acquire(timeout=max(deadline - time.monotonic(), 0.0))
        return self._held

    def lost(self) -> str | None:
        return None

    def release(self) -> None:
        if self._held:
            self._lock.release()
            self._held = False

    def siblings(self, prefixes: tuple[str, ...]) -> list[Entry]:
        folder = _parent(self.lock_path)
        try:
            entries = self.fs.ls(folder, detail=True)
        except FileNotFoundError:
            return []
        found = []
        for e in entries:
            name = str(e["name"]).rstrip("/").rsplit("/", 1)[-1]
            if name.startswith(prefixes):
                modified = e.get("mtime") or e.get("created") or 0.0
                if hasattr(modified, "timestamp"):
                    modified = modified.timestamp()
                found.append(Entry(name, str(e["name"]), float(modified)))
        return found

    def delete(self, path: str) -> None:
        self.fs.rm(path, recursive=True)


def lock_for(fs: AbstractFileSystem, lock_path: str) -> Lock:
    """The lock of ``lock_path`` on ``fs``: local disk, Azure blobs, else this process."""
    from fsspec.implementations.local import LocalFileSystem

    if isinstance(fs, LocalFileSystem):
        return FileLock(lock_path)
    if type(fs).__module__.split(".")[0] == "adlfs":
        return BlobLease(fs, lock_path)
    return ProcessLock(fs, lock_path)
