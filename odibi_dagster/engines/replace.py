"""Replacing data at a path without losing it: what both engines do for an overwrite.

The new data is written completely beside the target first (``<name>.tmp-<hex>``), then
swapped in: a file over a file is one move (an atomic rename on local disk); a directory
target is moved aside to ``<name>.old-<hex>``, the new data moved in, and only then the
old one deleted (or moved back if the move failed). A target that is a Delta table, or a
directory holding other folders (not partitions), is never replaced by a file format:
that would delete them, so the write is refused before any work.

The engines reach storage differently (fsspec for pandas, Hadoop's FileSystem for
Spark); each gives this module a :class:`Mover` over its filesystem.
"""

from __future__ import annotations

import contextlib
import uuid
import warnings
from collections.abc import Callable
from typing import IO, TYPE_CHECKING, Any, Protocol

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


def sibling(path: str, kind: str) -> str:
    """A unique name beside ``path``: ``<path>.<kind>-<hex>`` (kind: tmp, old)."""
    return f"{path.rstrip('/').rstrip(chr(92))}.{kind}-{uuid.uuid4().hex}"


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
) -> None:
    """Serialize with ``write`` into a temporary sibling of ``path``, then swap it in.

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
