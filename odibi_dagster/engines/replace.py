"""Writing data at a path without losing any: what both engines do for a file write.

The new data is written completely beside the target first, under a hidden name
(``.<name>.tmp-<hex>``, which folder reads and listings skip), then swapped in: a file
over a file is one move (an atomic rename on local disk); a directory target is moved
aside to ``.<name>.old-<hex>``, the new data moved in, and only then the old one
deleted (or moved back if the move failed). A target that is a Delta table, or a
directory holding other folders (not partitions), is never replaced by a file format:
that would delete them, so the write is refused before any work.

A write holds the target's lock (:func:`target_lock`) from the moment it looks at what
is there until its data is swapped in, so writes of one target take turns: an append
reads the rows the previous write left, never a version another write is replacing.
A write that cannot get the lock within :data:`LOCK_WAIT` seconds fails, writing
nothing. Every writer holds the lock while its temporary exists, so a temporary of the
target that the lock's holder finds belongs to a writer that died: the holder deletes
it (those named as earlier versions named them, ``<name>.tmp-<hex>``, by writers that
took no lock, once :data:`STALE_AFTER` old).

The engines reach storage differently (fsspec for pandas, Hadoop's FileSystem for
Spark); each gives this module a :class:`Mover` over its filesystem. Locks are taken
through the target's fsspec filesystem (:mod:`engines.locks`).
"""

from __future__ import annotations

import contextlib
import re
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from typing import IO, TYPE_CHECKING, Any, Protocol

from odibi_dagster.engines.locks import Lock, lock_for
from odibi_dagster.engines.messages import (
    delta_table_in_the_way,
    fail,
    subdirectories_in_the_way,
)
from odibi_dagster.errors import first_line

if TYPE_CHECKING:
    from fsspec import AbstractFileSystem


class Mover(Protocol):
    """The few filesystem operations a swap needs."""

    # whether moving a file onto an existing file replaces it (a POSIX rename does)
    replaces_files: bool

    def exists(self, path: str) -> bool: ...
    def is_dir(self, path: str) -> bool: ...
    def children(self, path: str) -> list[tuple[str, bool]]:
        """(name, is a directory) of each entry of a directory."""
        ...

    def move(self, src: str, dst: str) -> None:
        """Move ``src`` to ``dst`` (a file or a whole directory), or raise."""
        ...

    def delete(self, path: str) -> None:
        """Delete ``path`` (recursively), or raise."""
        ...


# how long a write waits for the lock of its target before it fails (seconds)
LOCK_WAIT = 600.0
# a temporary named as earlier versions named them is deleted once this old (seconds)
STALE_AFTER = 3600.0
_HEX32 = re.compile(r"[0-9a-f]{32}")


def _split(path: str) -> tuple[str, str]:
    """(``<folder>/`` or "", name) of a path or URI."""
    path = path.rstrip("/").rstrip(chr(92))
    folder, _, name = path.rpartition("/")
    return (folder + "/" if folder or path.startswith("/") else ""), name


def sibling(path: str, kind: str) -> str:
    """A unique hidden name beside ``path``: ``.<name>.<kind>-<hex>`` (kind: tmp, old)."""
    folder, name = _split(path)
    return f"{folder}.{name}.{kind}-{uuid.uuid4().hex}"


def lock_name(path: str) -> str:
    """The file or blob that holds the lock of ``path``: ``.<name>.lock`` beside it."""
    folder, name = _split(path)
    return f"{folder}.{name}.lock"


class TargetLock:
    """The lock of one target, held by the write in progress."""

    def __init__(self, lock: Lock, uri: str):
        self._lock = lock
        self.uri = uri

    def confirm(self, where: str) -> None:
        """Fail unless the lock is still held (called just before the swap)."""
        why = self._lock.lost()
        if why is not None:
            fail(
                where,
                f"lost the lock of '{self.uri}' while writing it ({why}); another write "
                "may have started, so nothing was written. Re-run the node",
            )


@contextlib.contextmanager
def target_lock(
    fs: AbstractFileSystem, path: str, *, uri: str = "", where: str = ""
) -> Iterator[TargetLock]:
    """Hold the lock of ``path`` (``uri`` in messages) on ``fs`` while the body runs.

    Waits up to :data:`LOCK_WAIT` seconds for another write of the same target, then
    fails saying so. Once held, forgets what ``fs`` may have cached about the target
    (another process changed it) and deletes the temporaries of dead writers."""
    uri = uri or path
    lock = lock_for(fs, lock_name(path))
    if not lock.acquire(time.monotonic() + LOCK_WAIT):
        fail(
            where,
            f"another write of '{uri}' held its lock ({lock.lock_path}) for over "
            f"{LOCK_WAIT:g} s, so this one gave up; nothing was written. Re-run the node "
            "once that write is done",
        )
    try:
        with contextlib.suppress(Exception):  # listings cached before are out of date
            fs.invalidate_cache(path)
            fs.invalidate_cache(fs._parent(path))
        remove_leftovers(lock, path)
        yield TargetLock(lock, uri)
    finally:
        lock.release()


def remove_leftovers(lock: Lock, path: str) -> list[str]:
    """Delete the temporaries of ``path`` left by writers that died (the caller holds
    the lock): hidden ones at once, those of earlier versions once :data:`STALE_AFTER`
    old. Returns the names deleted."""
    _, name = _split(path)
    ours, earlier = f".{name}.tmp-", f"{name}.tmp-"
    now = time.time()
    deleted = []
    for entry in lock.siblings((ours, earlier)):
        hidden = entry.name.startswith(ours)
        suffix = entry.name[len(ours if hidden else earlier) :]
        if not _HEX32.fullmatch(suffix):
            continue  # not a name this package makes
        if hidden or now - entry.modified > STALE_AFTER:
            with contextlib.suppress(Exception):
                lock.delete(entry.path)
                deleted.append(entry.name)
    return deleted


def check_replaceable(mover: Mover, path: str, uri: str, fmt: str, where: str) -> bool:
    """Whether a directory is at ``path``; fail (naming ``uri``) unless a file format may
    replace it: no ``_delta_log``, no subdirectories other than partitions (``col=value``)
    and hidden ones."""
    if not mover.is_dir(path):
        return False
    children = mover.children(path)
    if any(name == "_delta_log" for name, _ in children):
        delta_table_in_the_way(where, uri, fmt)
    subdirs = sorted(
        name
        for name, is_dir in children
        if is_dir and "=" not in name and not name.startswith(("_", "."))
    )
    if subdirs:
        subdirectories_in_the_way(where, uri, fmt, subdirs)
    return True


def swap_in(mover: Mover, new: str, target: str, uri: str, where: str, *, exists: bool) -> None:
    """Put the finished data ``new`` at ``target`` (shown to people as ``uri``)."""
    if not exists or (mover.replaces_files and not mover.is_dir(target)):
        mover.move(new, target)
        return
    old = sibling(target, "old")
    try:
        mover.move(target, old)
    except Exception as exc:
        delete_quietly(mover, new)
        fail(
            where,
            f"could not move the previous '{uri}' aside ({type(exc).__name__}: "
            f"{first_line(exc)}); it was left unchanged",
        )
    try:
        mover.move(new, target)
    except Exception as exc:
        try:
            mover.move(old, target)
        except Exception as restore_exc:
            fail(
                where,
                f"could not replace '{uri}' ({type(exc).__name__}: {first_line(exc)}) nor "
                f"move it back ({type(restore_exc).__name__}: {first_line(restore_exc)}). "
                f"Its previous content is at '{old}'; move it back by hand",
            )
        delete_quietly(mover, new)
        raise
    try:
        mover.delete(old)
    except Exception as exc:  # the new data is in place; only clutter is left
        warnings.warn(
            f"wrote '{uri}' but could not delete the data it replaced, now at '{old}' "
            f"({type(exc).__name__}: {first_line(exc)}). Delete it by hand",
            stacklevel=2,
        )


def delete_quietly(mover: Mover, path: str) -> None:
    with contextlib.suppress(Exception):
        mover.delete(path)


class FsspecMover:
    """:class:`Mover` over an fsspec filesystem (local disk, adlfs, ...)."""

    replaces_files = True

    def __init__(self, fs: AbstractFileSystem):
        self.fs = fs

    def exists(self, path: str) -> bool:
        return bool(self.fs.exists(path))

    def is_dir(self, path: str) -> bool:
        return bool(self.fs.isdir(path))

    def children(self, path: str) -> list[tuple[str, bool]]:
        return [
            (str(e["name"]).rstrip("/").rsplit("/", 1)[-1], e.get("type") == "directory")
            for e in self.fs.ls(path, detail=True)
        ]

    def move(self, src: str, dst: str) -> None:
        self.fs.mv(src, dst, recursive=self.fs.isdir(src))

    def delete(self, path: str) -> None:
        if self.fs.exists(path):
            self.fs.rm(path, recursive=True)


def write_file_atomically(
    fs: AbstractFileSystem,
    path: str,
    write: Callable[[IO[bytes]], None],
    *,
    uri: str = "",
    fmt: str = "",
    where: str = "",
    lock: TargetLock | None = None,
) -> None:
    """Serialize with ``write`` into a temporary sibling of ``path``, then swap it in
    (once ``lock``, if given, is confirmed still held).

    A directory at ``path`` is replaced only when :func:`check_replaceable` allows it; a
    failure anywhere leaves the old data and no temporary file.
    """
    mover = FsspecMover(fs)
    uri = uri or path
    check_replaceable(mover, path, uri, fmt, where)  # refuse a table/folder before any work
    parent = path.rstrip("/").rsplit("/", 1)[0] if "/" in path.rstrip("/") else ""
    if parent:
        fs.makedirs(parent, exist_ok=True)
    tmp = sibling(path, "tmp")
    try:
        with fs.open(tmp, "wb") as handle:
            write(handle)
        exists = mover.exists(path)
        if exists:
            check_replaceable(mover, path, uri, fmt, where)  # it may have appeared meanwhile
        if lock is not None:
            lock.confirm(where)
        swap_in(mover, tmp, path, uri, where, exists=exists)
    except BaseException:
        delete_quietly(mover, tmp)
        raise


def hadoop_mover(jvm: Any, conf: Any, uri: str) -> Mover:
    """:class:`Mover` over Hadoop's FileSystem for ``uri`` (what Spark writes through)."""
    make_path = jvm.org.apache.hadoop.fs.Path
    fs = make_path(uri).getFileSystem(conf)

    class HadoopMover:
        replaces_files = False  # Hadoop's rename never overwrites

        def is_dir(self, path: str) -> bool:
            return bool(
                fs.exists(make_path(path)) and fs.getFileStatus(make_path(path)).isDirectory()
            )

        def children(self, path: str) -> list[tuple[str, bool]]:
            return [
                (st.getPath().getName(), st.isDirectory()) for st in fs.listStatus(make_path(path))
            ]

        def move(self, src: str, dst: str) -> None:
            if not fs.rename(make_path(src), make_path(dst)):
                raise OSError(f"Hadoop could not rename {src} to {dst}")

        def delete(self, path: str) -> None:
            fs.delete(make_path(path), True)

        def exists(self, path: str) -> bool:
            return bool(fs.exists(make_path(path)))

    return HadoopMover()
