"""Other spellings Odibi accepts for the project shell and its connections, applied to the YAML
before the models see it.

Odibi's own models ignore keys they do not know, and its connection factory takes several
spellings of one connection. Here keys are checked, so each of these is either mapped onto
ours (when it means the same), or accepted and reported once as a :class:`Note` (when it has
no effect here), and a connection kind that cannot run here fails only where a node (or the
story) reads or writes through it:

- ``type: azure_blob`` is ``type: azure_adls`` (Odibi serves both with one class);
  ``account_name`` is ``account``; the ``auth:`` block (``key_vault_name``/``key_vault`` +
  ``secret_name``/``secret``, or ``account_key``, with or without ``mode:``) becomes our
  ``auth_mode: key_vault`` / ``direct_key`` keys.
- ``type: delta`` with ``path:`` (or ``base_path:``) is a local directory (Odibi's factory
  does the same).
- ``path:`` and ``format:`` on a ``type: local`` connection, and a top-level key Odibi does not
  know (``plant:``) unless it looks like a misspelt key of ours: accepted, not applied.
- SQL Server, Azure SQL, PostgreSQL and Delta catalog connections, and Azure auth modes other
  than an account key: accepted, not applied (see :data:`CONNECTIONS_NOT_RUN`,
  :data:`AZURE_AUTH_NOT_RUN`).
- Odibi v3's reader/writer keys beside ``path:``: ``write.partition_by``, ``merge_schema``,
  ``overwrite_schema``, ``write.merge_keys`` (``options.keys``) and ``read.time_travel``
  become the options they are; one written at
  Odibi's default (:data:`ODIBI_IO_DEFAULTS`) is noted; any other stays, and the model's
  "unknown key" says it is Odibi v3's and what to write instead
  (:data:`ODIBI_KEYS_NOT_SUPPORTED`).
"""

from __future__ import annotations

import difflib
from collections.abc import Collection
from typing import Any

from odibi_dagster.config.notes import ACCEPTED_NOT_APPLIED, Note, note_at
from odibi_dagster.config.yaml_source import KeyPath, SourceMap
from odibi_dagster.errors import Problem

__all__ = [
    "AZURE_AUTH_NOT_RUN",
    "CONNECTIONS_NOT_RUN",
    "DEFAULT_WHY",
    "DELTA_URL_WHY",
    "IGNORED_CONNECTION_KEYS",
    "ODIBI_IO_DEFAULTS",
    "ODIBI_KEYS_NOT_SUPPORTED",
    "TOP_LEVEL_WHY",
    "apply_odibi_spellings",
    "covered",
]

_FILES = (
    "odibi_dagster reads and writes files and Delta tables through `local` and `azure_adls` "
    "connections"
)

# Odibi connection type -> why a node cannot read or write through it here
CONNECTIONS_NOT_RUN: dict[str, str] = {
    "sql_server": f"SQL Server tables are not read or written here; {_FILES}",
    "sqlserver": f"SQL Server tables are not read or written here; {_FILES}",
    "azure_sql": f"Azure SQL tables are not read or written here; {_FILES}",
    "postgres": f"PostgreSQL tables are not read or written here; {_FILES}",
    "delta": "a Delta catalog connection (catalog + schema: tables of a Spark metastore) is not "
    f"read or written here; {_FILES}, by path (a `delta` connection with `path:` is a local "
    "directory)",
}

# a `type: delta` connection whose path is a URL (abfss://...)
DELTA_URL_WHY = (
    "a Delta directory in cloud storage is read and written through an `azure_adls` "
    "connection (account, container, path_prefix)"
)

# Odibi's Azure auth modes (auth.mode / auth_mode) -> why they do not run here
_KEY_ONLY = (
    "odibi_dagster reaches Azure storage with the account key, from Key Vault "
    "(auth_mode: key_vault) or an environment variable (auth_mode: direct_key)"
)
AZURE_AUTH_NOT_RUN: dict[str, str] = {
    "sas": f"SAS token auth is not supported; {_KEY_ONLY}",
    "sas_token": f"SAS token auth is not supported; {_KEY_ONLY}",
    "aad_msi": f"managed identity auth is not supported; {_KEY_ONLY}",
    "managed_identity": f"managed identity auth is not supported; {_KEY_ONLY}",
    "service_principal": f"service principal auth is not supported; {_KEY_ONLY}",
    "connection_string": f"connection string auth is not supported; {_KEY_ONLY}",
}
_AZURE_AUTH_MODES = {
    "key_vault": "key_vault",
    "account_key": "direct_key",
    "direct_key": "direct_key",
}

# connection type -> key -> why Odibi (and so this orchestrator) gives it no effect
IGNORED_CONNECTION_KEYS: dict[str, dict[str, str]] = {
    "local": {
        "path": "Odibi ignores it on a local connection: node paths are relative to "
        "`base_path` (default ./data)",
        "format": "Odibi ignores it on a local connection: each read and write names its format",
    },
    "azure_adls": {
        "validate": "the connection is checked when a run sets it up",
    },
}

TOP_LEVEL_WHY = "Odibi ignores a top-level key it does not know"

_BY_PATH = "reads and writes here name a `path` and a `format` on a local or azure_adls connection"
# model name -> Odibi v3 key it does not have -> what to write instead (the "unknown key" message)
ODIBI_KEYS_NOT_SUPPORTED: dict[str, dict[str, str]] = {
    "ReadConfig": {
        "table": f"catalog and SQL tables are not read here; {_BY_PATH}",
        "query": f"SQL source queries are not run here; {_BY_PATH}",
        "streaming": "streaming reads are not supported: nodes run as batches",
        "schema_ddl": "a schema for streaming reads: nodes run as batches",
        "time_travel": "give as_of_version or as_of_timestamp (one), or write options: "
        "{versionAsOf: N}",
        "archive_options": "a bad-record archive (Spark badRecordsPath) is not kept here",
    },
    "WriteConfig": {
        "table": f"catalog tables are not written here; {_BY_PATH}",
        "register_table": "a written path is not registered as a catalog table here",
        "partition_by": "give a list of columns, or write options: {partition_by: [...]}",
        "zorder_by": "Z-ordering (OPTIMIZE ZORDER BY) is not run here",
        "table_properties": "Delta table properties are not set here; on pandas, delta-rs "
        "takes options: {configuration: {...}}",
        "merge_schema": "give true or false, or write options: {mergeSchema: true}",
        "overwrite_schema": "give true or false, or write options: {overwriteSchema: true}",
        "skip_if_unchanged": "unchanged writes are not skipped here",
        "add_metadata": "metadata columns (_extracted_at, _source_file) are not added here; "
        "add them in a SQL step",
        "first_run_query": "a first-run SQL query is not run here; read.incremental reads "
        "everything on a first run",
    },
}


def apply_odibi_spellings(
    data: dict[str, Any],
    smap: SourceMap,
    problems: list[Problem],
    notes: list[Note],
    known_top: set[str],
    kinds: set[str],
    known_elsewhere: Collection[str] = (),
) -> tuple[dict[str, Any], dict[str, str]]:
    """``data`` with Odibi's other spellings mapped onto ours and the keys accepted only for
    compatibility removed (each becoming a note), and the connections that cannot run here:
    name -> why. A node (or the story) reading or writing one of those is a problem.

    ``known_top``: the top-level keys of the project model; ``kinds``: the connection types
    served here; ``known_elsewhere``: keys of pipelines and nodes, which at the top are
    misplaced rather than ignored (they stay errors)."""
    data = _top_level(data, smap, notes, known_top, known_elsewhere)
    data = _io_keys(data, smap, notes)
    conns = data.get("connections")
    not_run: dict[str, str] = {}
    if isinstance(conns, dict):
        fixed: dict[str, Any] = {}
        for name, conn in conns.items():
            path: KeyPath = ("connections", name)
            if not isinstance(conn, dict):
                fixed[name] = conn
                continue
            conn, why = _connection(conn, path, smap, notes, problems, kinds)
            if why is None:
                fixed[name] = conn
            else:
                not_run[str(name)] = why
                notes.append(note_at(smap, path, why))
        data = {**data, "connections": fixed}
        if not fixed and not_run:
            problems.append(
                smap.problem(
                    ("connections",),
                    "none of these connections can be used here ("
                    + "; ".join(f"{n}: {w}" for n, w in not_run.items())
                    + "); add a local or azure_adls connection",
                )
            )
    if not_run:
        problems.extend(_uses(data, smap, not_run))
    return data, not_run


def covered(problem: Problem, not_run: dict[str, str], reported: list[Problem]) -> bool:
    """Whether ``problem`` (from the models) is a consequence of a problem reported here: a
    key of a read or write that goes through a connection that cannot run, or the empty
    ``connections:`` left when none can."""
    if not not_run:
        return False
    path = problem.key_path
    if path == "connections" and any(r.key_path == "connections" for r in reported):
        return problem not in reported
    blocks = {r.key_path.rsplit(".", 1)[0] for r in reported if r.key_path.endswith(".connection")}
    return any(path.startswith(b + ".") and path != b + ".connection" for b in blocks)


def _top_level(
    data: dict[str, Any],
    smap: SourceMap,
    notes: list[Note],
    known_top: set[str],
    known_elsewhere: Collection[str],
) -> dict[str, Any]:
    accepted = {p[0] for p in ACCEPTED_NOT_APPLIED}
    out = {}
    for key, value in data.items():
        unknown = isinstance(key, str) and key not in known_top | accepted | set(known_elsewhere)
        if unknown and not difflib.get_close_matches(key, sorted(known_top), n=1, cutoff=0.6):
            notes.append(note_at(smap, (key,), TOP_LEVEL_WHY))
            continue
        out[key] = value
    return out


# Odibi v3 read/write keys written at their default value, which has no effect in Odibi either
ODIBI_IO_DEFAULTS: dict[str, dict[str, Any]] = {
    "read": {
        "table": None,
        "query": None,
        "streaming": False,
        "schema_ddl": None,
        "archive_options": {},
        "time_travel": None,
    },
    "write": {
        "table": None,
        "register_table": None,
        "zorder_by": [],
        "table_properties": {},
        "skip_if_unchanged": False,
        "add_metadata": False,
        "first_run_query": None,
        "partition_by": [],
        "merge_schema": False,
        "overwrite_schema": False,
        "merge_keys": None,
    },
}
DEFAULT_WHY = "written at Odibi's default, which has no effect there either"
# write key -> the writer option it is here (a list or true)
_AS_OPTION = {
    "partition_by": "partition_by",
    "merge_schema": "mergeSchema",
    "overwrite_schema": "overwriteSchema",
}
_TIME_TRAVEL = {"as_of_version": "versionAsOf", "as_of_timestamp": "timestampAsOf"}


def _io_keys(data: dict[str, Any], smap: SourceMap, notes: list[Note]) -> dict[str, Any]:
    """Odibi v3 read/write keys in ours: ``write.partition_by``, ``merge_schema``,
    ``overwrite_schema`` and ``read.time_travel`` as the writer/reader options they are; a key
    at Odibi's default (``zorder_by: []``, ``streaming: false``) noted and removed. Any other
    value stays, for the model to report with what to write instead."""
    pipes = data.get("pipelines")
    if not isinstance(pipes, list):
        return data
    out_pipes = []
    for pi, pipe in enumerate(pipes):
        nodes = pipe.get("nodes") if isinstance(pipe, dict) else None
        if not isinstance(nodes, list):
            out_pipes.append(pipe)
            continue
        out_nodes = []
        for ni, node in enumerate(nodes):
            if isinstance(node, dict):
                node = dict(node)
                for part in ("read", "write"):
                    io = node.get(part)
                    if isinstance(io, dict):
                        node[part] = _io_block(
                            io, ("pipelines", pi, "nodes", ni, part), part, smap, notes
                        )
            out_nodes.append(node)
        out_pipes.append({**pipe, "nodes": out_nodes})
    return {**data, "pipelines": out_pipes}


def _io_block(
    io: dict[str, Any], path: KeyPath, part: str, smap: SourceMap, notes: list[Note]
) -> dict[str, Any]:
    io = dict(io)
    options = io.get("options")
    if options is not None and not isinstance(options, dict):
        return io  # the model reports the options
    opts: dict[str, Any] = dict(options or {})
    for key, default in ODIBI_IO_DEFAULTS[part].items():
        if key not in io:
            continue
        value = io[key]
        if value == default or (value is None and default in ([], {}, False)):
            notes.append(note_at(smap, (*path, key), DEFAULT_WHY))
            del io[key]
            continue
        name, given = _as_option(part, key, value)
        if name is not None and name not in opts:
            opts[name] = given
            del io[key]
    if opts != (options or {}):
        io["options"] = opts
    return io


def _as_option(part: str, key: str, value: Any) -> tuple[str | None, Any]:
    """The reader/writer option an Odibi v3 key is here, with its value; (None, None): none."""
    if part == "write" and key == "partition_by":
        columns = [value] if isinstance(value, str) else value
        if isinstance(columns, list) and all(isinstance(c, str) for c in columns):
            return "partition_by", columns
    if part == "write" and key == "merge_keys":  # Odibi's mode merge keys: options.keys here
        keys = [value] if isinstance(value, str) else value
        if isinstance(keys, list) and keys and all(isinstance(k, str) for k in keys):
            return "keys", keys
    if part == "write" and key in ("merge_schema", "overwrite_schema") and value is True:
        return _AS_OPTION[key], True
    if part == "read" and key == "time_travel" and isinstance(value, dict) and len(value) == 1:
        ((name, when),) = value.items()
        if name in _TIME_TRAVEL:
            return _TIME_TRAVEL[name], when
    return None, None


def _connection(
    conn: dict[str, Any],
    path: KeyPath,
    smap: SourceMap,
    notes: list[Note],
    problems: list[Problem],
    kinds: set[str],
) -> tuple[dict[str, Any], str | None]:
    """The connection in our spelling, or why it cannot run here."""
    kind = conn.get("type")
    where = conn.get("path") or conn.get("base_path")
    if kind == "delta" and isinstance(where, str) and where and "delta" not in kinds:
        if "://" in where:
            return conn, f"type `delta` at a URL: {DELTA_URL_WHY}"
        rest = {k: v for k, v in conn.items() if k not in ("type", "path", "base_path")}
        conn = {"type": "local", "base_path": where, **rest}
        kind = "local"
    if isinstance(kind, str) and kind in CONNECTIONS_NOT_RUN and kind not in kinds:
        return conn, f"type `{kind}`: {CONNECTIONS_NOT_RUN[kind]}"
    if kind == "azure_blob" and "azure_blob" not in kinds:
        conn = {**conn, "type": "azure_adls"}
        kind = "azure_adls"
    if kind == "azure_adls":
        conn, why = _azure(conn)
        if why is not None:
            return conn, why
        left = conn.get("auth")
        if isinstance(left, dict):
            problems.append(
                smap.problem(
                    (*path, "auth"),
                    "Odibi's auth block is read as auth_mode, key_vault_name (key_vault), "
                    "secret_name (secret) and account_key; not read: "
                    + ", ".join(map(str, left))
                    + " (a key given twice, or a second auth mode that differs from "
                    "auth_mode). Remove them, or write the connection with our keys",
                )
            )
            conn = {k: v for k, v in conn.items() if k != "auth"}
    ignored = IGNORED_CONNECTION_KEYS.get(kind) if isinstance(kind, str) else None
    if ignored:
        for key in [k for k in conn if k in ignored]:
            notes.append(note_at(smap, (*path, key), ignored[key]))
        conn = {k: v for k, v in conn.items() if k not in ignored}
    return conn, None


def _azure(conn: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    """Odibi's spellings of an Azure storage connection in ours: ``account_name``, the
    ``auth:`` block, and the auth mode Odibi would detect."""
    conn = dict(conn)
    if "account_name" in conn and "account" not in conn:
        conn["account"] = conn.pop("account_name")
    auth = conn.get("auth")
    if "auth" in conn and not isinstance(auth, dict):
        return conn, None  # the model reports it (unknown key)
    auth = dict(auth or {})
    conn.pop("auth", None)
    mode = conn.get("auth_mode")
    written = auth.pop("mode", None)
    if mode is None:
        mode = written
    elif written is not None and _AZURE_AUTH_MODES.get(written) != _AZURE_AUTH_MODES.get(mode):
        auth["mode"] = written  # two different modes: left for the model to report
    for ours, theirs in (
        ("key_vault_name", ("key_vault_name", "key_vault")),
        ("secret_name", ("secret_name", "secret")),
        ("account_key", ("account_key",)),
    ):
        for key in theirs:
            if key in auth and ours not in conn:
                conn[ours] = auth.pop(key)
    if mode is None:
        if "sas_token" in auth:
            mode = "sas_token"
        elif conn.get("key_vault_name") and conn.get("secret_name"):
            mode = "key_vault"
        elif conn.get("account_key"):
            mode = "direct_key"
        elif {"tenant_id", "client_id", "client_secret"} <= set(auth):
            mode = "service_principal"
    if isinstance(mode, str) and mode in AZURE_AUTH_NOT_RUN:
        return conn, f"auth mode '{mode}': {AZURE_AUTH_NOT_RUN[mode]}"
    if isinstance(mode, str):
        conn["auth_mode"] = _AZURE_AUTH_MODES.get(mode, mode)
    if auth:
        conn["auth"] = auth  # what is left is not read: the caller reports it
    return conn, None


def _uses(data: dict[str, Any], smap: SourceMap, not_run: dict[str, str]) -> list[Problem]:
    """A problem for each read, write or story that goes through a connection of ``not_run``."""
    out: list[Problem] = []

    def check(path: KeyPath, name: Any, who: str) -> None:
        if isinstance(name, str) and name in not_run:
            out.append(
                smap.problem(
                    path,
                    f"{who}connection '{name}' cannot be used here: {not_run[name]}. "
                    "Point this at a local or azure_adls connection",
                )
            )

    story = data.get("story")
    if isinstance(story, dict) and story.get("enabled", True) is not False:
        check(("story", "connection"), story.get("connection"), "the story's ")
    pipes = data.get("pipelines")
    for pi, pipe in enumerate(pipes if isinstance(pipes, list) else []):
        sensors = pipe.get("sensors") if isinstance(pipe, dict) else None
        for si, sensor in enumerate(sensors if isinstance(sensors, list) else []):
            watch = sensor.get("new_files") if isinstance(sensor, dict) else None
            if isinstance(watch, dict):
                path: KeyPath = ("pipelines", pi, "sensors", si, "new_files", "connection")
                check(path, watch.get("connection"), "a new-files sensor's ")
        nodes = pipe.get("nodes") if isinstance(pipe, dict) else None
        for ni, node in enumerate(nodes if isinstance(nodes, list) else []):
            if not isinstance(node, dict):
                continue
            who = f"node '{node.get('name')}': " if isinstance(node.get("name"), str) else ""
            for part in ("read", "write"):
                io = node.get(part)
                if isinstance(io, dict):
                    check(
                        ("pipelines", pi, "nodes", ni, part, "connection"),
                        io.get("connection"),
                        who,
                    )
    return out
