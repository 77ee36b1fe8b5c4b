"""The connection seam: what every kind of storage connection offers the rest of the package.

A connection is a Dagster resource, one per entry of the project's ``connections:``,
keyed by its name. Each kind (``local``, ``azure_adls``, ...) subclasses
:class:`ConnectionResource` and declares, beside its fields, what the YAML layer needs
to know about it (its ``type:`` name, which fields hold secrets, which are paths
relative to the YAML file, and any rule across fields). The YAML model of each kind,
its JSON Schema and the resource built from YAML all follow from that one class
(see :mod:`odibi_dagster.resources.kinds`).
"""

from __future__ import annotations

import fnmatch
import os
import posixpath
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, runtime_checkable

import dagster as dg
from pydantic import Field
from typing_extensions import Self

from odibi_dagster.env_refs import WHOLE_ENV_REF
from odibi_dagster.resources.base import Location


@dataclass(frozen=True)
class StoredFile:
    """One file found by :meth:`StorageConnection.list_files`.

    ``path`` is relative to the connection (what a node's ``read.path`` names);
    ``version`` changes whenever the content may have changed (an etag, or size and
    modification time); ``modified`` is when the file last changed or arrived (POSIX
    seconds: Last-Modified on Azure, the later of mtime and ctime on local disk, so a
    file moved in with an old mtime counts as arriving when it was moved).
    """

    path: str
    size: int
    modified: float | None
    version: str


@runtime_checkable
class StorageConnection(Protocol):
    """What engines, IO managers, stories, checks and sensors use of a connection."""

    connection_name: str

    def describe(self) -> str:
        """``connection 'x' (...)``: how messages name this connection."""
        ...

    def uri(self, path: str) -> str:
        """The user-facing address of ``path`` (what lineage compares and the UI shows)."""
        ...

    def location(self, path: str) -> Location:
        """``path`` in every form the engines need (fsspec, delta-rs, Spark)."""
        ...

    def pandas_storage_options(self) -> dict[str, Any]:
        """fsspec ``storage_options`` for pandas readers and writers."""
        ...

    def delta_storage_options(self) -> dict[str, str]:
        """delta-rs ``storage_options``."""
        ...

    def spark_conf(self) -> dict[str, str]:
        """Spark/Hadoop settings this connection needs on a session (may hold a key)."""
        ...

    def spark_uri(self, path: str) -> str:
        """What Spark opens for ``path``; raises when Spark cannot reach this connection."""
        ...

    def configure_spark(self, spark: Any) -> None:
        """Set :meth:`spark_conf` on a session."""
        ...

    def check(self) -> str:
        """Check that the connection works; return what was checked, or raise
        :class:`~odibi_dagster.errors.OdibiConnectionError` saying what to do."""
        ...

    def list_files(self, path: str = "", pattern: str = "*") -> Iterator[StoredFile]:
        """Files under the folder or prefix ``path`` whose name matches ``pattern``
        (fnmatch), in one paged listing; hidden and temporary files are left out."""
        ...

    def secrets(self) -> list[str]:
        """Values that must never be shown (keys it holds or obtained)."""
        ...


class ConnectionResource(dg.ConfigurableResource):  # type: ignore[type-arg]
    """The base of every connection kind (not used on its own)."""

    # The YAML `type:` of this kind.
    yaml_type: ClassVar[str] = ""
    # Fields holding a secret: in YAML they must be written ${VAR}, and they stay an
    # EnvVar (the variable's name is all that run config and the UI ever show).
    secret_fields: ClassVar[frozenset[str]] = frozenset()
    # Mappings whose every value is kept as written (${VAR} unresolved) when the YAML
    # loads, and filled in where a request is made (an http connection's auth, headers).
    secret_maps: ClassVar[tuple[str, ...]] = ()
    # Fields holding a local path: a relative one in YAML is resolved against the
    # directory of the YAML file that declares it.
    path_fields: ClassVar[tuple[str, ...]] = ()
    # Fields set by odibi_dagster, not written in YAML.
    runtime_fields: ClassVar[tuple[str, ...]] = ("connection_name",)

    connection_name: str = Field(
        default="", description="The name of this connection in the Odibi project."
    )

    # ------------------------------------------------------------------ from YAML

    @classmethod
    def fields_rule(cls, values: Mapping[str, Any]) -> str | None:
        """Why these field values cannot go together (None when they can). The one
        wording of each rule: the YAML model reports it at ``file:line``, the resource's
        own validator when it is built in Python."""
        return None

    @classmethod
    def from_config(cls, name: str, values: Mapping[str, Any]) -> Self:
        """The resource for connection ``name`` from its validated YAML fields."""
        fields = {k: v for k, v in values.items() if k != "type" and v is not None}
        for key in cls.secret_fields & set(fields):
            # written ${NAME} (the YAML model checks it): the variable is read where the
            # run executes, and the UI and run config show only its name
            ref = WHOLE_ENV_REF.match(str(fields[key]).strip())
            if ref:
                fields[key] = dg.EnvVar(ref.group(1))
        return cls(connection_name=name, **fields)

    # ------------------------------------------------------------------ the seam

    def describe(self) -> str:
        return f"connection '{self.connection_name}'" if self.connection_name else "connection"

    def uri(self, path: str) -> str:
        raise NotImplementedError

    def location(self, path: str) -> Location:
        raise NotImplementedError

    def pandas_storage_options(self) -> dict[str, Any]:
        return {}

    def delta_storage_options(self) -> dict[str, str]:
        return {}

    def spark_conf(self) -> dict[str, str]:
        return {}

    def spark_uri(self, path: str) -> str:
        return self.uri(path)

    def configure_spark(self, spark: Any) -> None:
        for key, value in self.spark_conf().items():
            spark.conf.set(key, value)

    def check(self) -> str:
        raise NotImplementedError

    def list_files(self, path: str = "", pattern: str = "*") -> Iterator[StoredFile]:
        raise NotImplementedError

    def secrets(self) -> list[str]:
        return []

    def secrets_given(self) -> list[str]:
        """The values of its secret fields as given (from the environment for a
        ``${VAR}``): what messages must not show, found without any request."""
        values = []
        for key in sorted(self.secret_fields):
            value = getattr(self, key, None)
            if isinstance(value, dg.EnvVar):
                value = os.environ.get(value.env_var_name)
            if value:
                values.append(str(value))
        return values


# a file being written, or left by a writer that died: odibi_dagster's temporaries
# (<name>.tmp-<hex>; staged results <name>.staged-<hex>; a folder moved aside while it is
# replaced, <name>.old-<hex>) and delta-rs' on local disk (<file>#<n>)
_TEMPORARY = re.compile(r"\.tmp-|\.(?:staged|old)-[0-9a-f]+$|#\d+$")


def hidden_or_temporary(name: str) -> bool:
    """Whether a file or folder name is not data: hidden (``.x``, ``_x``: Spark/Delta
    metadata, locks, temporaries) or a temporary being written (``*.tmp-*``,
    ``*.staged-<hex>``, ``*.old-<hex>``, delta-rs' ``*#<n>``). Listings for sensors and
    the engines' folder reads leave such names out."""
    return name.startswith((".", "_")) or bool(_TEMPORARY.search(name))


def listed(rel: str, pattern: str) -> bool:
    """Whether a listing shows the file at ``rel``: its name matches ``pattern`` and no
    part of its path is hidden or temporary (:func:`hidden_or_temporary`)."""
    parts = [p for p in rel.split("/") if p]
    if not parts or any(hidden_or_temporary(p) for p in parts):
        return False
    return fnmatch.fnmatchcase(parts[-1], pattern)


def join(*parts: str) -> str:
    """Posix-join the non-empty parts, without leading or trailing slashes."""
    kept = [p.strip("/") for p in parts if p and p.strip("/")]
    joined = posixpath.normpath("/".join(kept)) if kept else ""
    return "" if joined == "." else joined
