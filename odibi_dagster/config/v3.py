"""The project shell of Odibi v3, applied to the YAML before the models see it.

- ``imports:``: other YAML files (paths relative to the file that lists them), merged into
  the document the way Odibi merges them: mappings key by key, ``pipelines:`` appended, other
  values replaced. An imported file may import others.
- ``environments:`` + the selected environment (``--env`` / ``ODIBI_ENV``): that entry's
  keys merged over the document, then ``env.<name>.yaml`` beside the project file, if any.
- ``${vars.name}`` from ``vars:``, ``${date:expr[:format]}`` and ``${env:VAR}`` (the explicit
  spelling of ``${VAR}``) filled in at load.
- ``system:`` (Odibi's System Catalog) checked and reported as accepted, not applied.
- a ``type: local`` connection without ``base_path``: ``./data`` of the working directory.
"""

from __future__ import annotations

import calendar
import datetime as dt
import os
import re
from pathlib import Path
from typing import Any

from odibi_dagster.config.notes import Note, note_at
from odibi_dagster.config.yaml_source import KeyPath, SourceMap, display_name, load_yaml
from odibi_dagster.errors import Problem

__all__ = [
    "ENV_SELECTOR",
    "apply_environment",
    "default_local_base_path",
    "merge_imports",
    "resolve_placeholders",
    "system_notes",
]

# the environment variable that selects an entry of `environments:` when no --env is given
ENV_SELECTOR = "ODIBI_ENV"
LOCAL_DEFAULT_BASE_PATH = "./data"


# --------------------------------------------------------------------------- merging


def _deep_merge(
    base: dict[str, Any],
    over: dict[str, Any],
    smap: SourceMap,
    omap: SourceMap,
    path: KeyPath = (),
    opath: KeyPath = (),
) -> dict[str, Any]:
    """``over`` merged into ``base`` (Odibi's rules); ``smap`` learns where each value came from
    (``omap`` locates ``over``'s values under ``opath``)."""
    out = dict(base)
    for key, value in over.items():
        here, there = (*path, key), (*opath, key)
        old = out.get(key)
        if isinstance(old, dict) and isinstance(value, dict):
            out[key] = _deep_merge(old, value, smap, omap, here, there)
        elif key == "pipelines" and isinstance(old, list) and isinstance(value, list):
            for i in range(len(value)):
                _graft(smap, omap, (*there, i), (*here, len(old) + i))
            out[key] = old + value
        else:
            for k in [k for k in smap.entries if k[: len(here)] == here]:
                del smap.entries[k]
            _graft(smap, omap, there, here)
            out[key] = value
    return out


def _graft(smap: SourceMap, omap: SourceMap, src: KeyPath, dst: KeyPath) -> None:
    n = len(src)
    for k, v in omap.entries.items():
        if k[:n] == src:
            smap.entries[dst + k[n:]] = v


def merge_imports(
    data: dict[str, Any],
    smap: SourceMap,
    file: Path,
    problems: list[Problem],
    files: list[Path],
    _seen: tuple[Path, ...] = (),
) -> dict[str, Any]:
    """``data`` (read from ``file``) with the files of its ``imports:`` merged in; each file
    read is appended to ``files``."""
    if "imports" not in data:
        return data
    entries = data["imports"]
    data = {k: v for k, v in data.items() if k != "imports"}
    if isinstance(entries, str):
        entries = [entries]
    if not isinstance(entries, list):
        problems.append(smap.problem(("imports",), "expected a list of YAML files"))
        return data
    seen = (*_seen, file.resolve())
    for i, entry in enumerate(entries):
        if not isinstance(entry, str):
            problems.append(smap.problem(("imports", i), "expected a path to a YAML file"))
            continue
        path = Path(os.path.expanduser(entry))
        path = path if path.is_absolute() else file.parent / path
        if not path.is_file():
            problems.append(
                smap.problem(
                    ("imports", i),
                    f"no such file: {display_name(path)} (imports are relative to "
                    f"{display_name(file)})",
                )
            )
            continue
        if path.resolve() in seen:
            problems.append(
                smap.problem(("imports", i), f"{display_name(path)} imports itself (a cycle)")
            )
            continue
        idata, imap = load_yaml(path, display_name(path))
        files.append(path)
        if idata is None:
            continue
        if not isinstance(idata, dict):
            problems.append(imap.problem((), "an imported file must be a mapping (key: value)"))
            continue
        idata = merge_imports(idata, imap, path, problems, files, seen)
        if "pipeline" in idata and "pipelines" not in idata:
            # one pipeline written at the top of the file
            wrapped = SourceMap(default_file=imap.default_file)
            _graft(wrapped, imap, (), ("pipelines", 0))
            idata, imap = {"pipelines": [idata]}, wrapped
        data = _deep_merge(data, idata, smap, imap)
    return data


def apply_environment(
    data: dict[str, Any],
    smap: SourceMap,
    env: str | None,
    project_file: Path,
    problems: list[Problem],
    files: list[Path],
) -> dict[str, Any]:
    """The selected environment's overrides merged over ``data``; ``environments:`` removed."""
    envs = data.get("environments")
    data = {k: v for k, v in data.items() if k != "environments"}
    if envs is not None and not isinstance(envs, dict):
        problems.append(
            smap.problem(("environments",), "expected a mapping: environment name -> overrides")
        )
        envs = None
    envs = envs or {}
    if not env:
        return data
    env_file = project_file.parent / f"env.{env}.yaml"
    if env not in envs and not env_file.is_file():
        known = ", ".join(sorted(map(str, envs))) or "none"
        problems.append(
            Problem(
                display_name(project_file),
                None,
                f"environment '{env}' (from --env or {ENV_SELECTOR}) is neither under "
                f"`environments:` (defined: {known}) nor a file {env_file.name} beside the "
                "project file",
            )
        )
        return data
    if env in envs:
        over = envs[env]
        if over is None:
            over = {}
        if not isinstance(over, dict):
            problems.append(smap.problem(("environments", env), "expected a mapping of keys"))
        else:
            snapshot = SourceMap(dict(smap.entries), smap.default_file)
            data = _deep_merge(data, over, smap, snapshot, (), ("environments", env))
    if env_file.is_file():
        edata, emap = load_yaml(env_file, display_name(env_file))
        files.append(env_file)
        if isinstance(edata, dict):
            edata = merge_imports(edata, emap, env_file, problems, files)
            data = _deep_merge(data, edata, smap, emap)
        elif edata is not None:
            problems.append(emap.problem((), "an environment file must be a mapping"))
    return data


# --------------------------------------------------------------------------- placeholders

# ${vars.name}
VARS_REF = re.compile(r"\$\{vars\.([A-Za-z_][A-Za-z0-9_]*)\}")
# ${date:expr} or ${date:expr:format} (the format may hold colons: %H:%M)
DATE_REF = re.compile(r"\$\{date:([^:}]+)(?::([^}]*))?\}")
# ${env:VAR}, Odibi's explicit spelling of ${VAR}
ENV_PREFIX_REF = re.compile(r"\$\{env:([A-Za-z_][A-Za-z0-9_]*)\}")
_RELATIVE = re.compile(r"^([+-]?)(\d+)([dwmy])$")


def resolve_placeholders(
    data: dict[str, Any], smap: SourceMap, problems: list[Problem], now: dt.datetime | None = None
) -> dict[str, Any]:
    """``${vars.x}``, ``${date:...}`` and ``${env:VAR}`` filled in everywhere (``${VAR}`` is
    left to :func:`~odibi_dagster.config.env.interpolate_env`)."""
    raw_vars = data.get("vars")
    variables: dict[str, Any] = raw_vars if isinstance(raw_vars, dict) else {}
    when = now or dt.datetime.now()
    out: dict[str, Any] = _walk(data, (), smap, variables, when, problems)
    return out


def _walk(
    value: Any,
    path: KeyPath,
    smap: SourceMap,
    variables: dict[str, Any],
    now: dt.datetime,
    problems: list[Problem],
) -> Any:
    if isinstance(value, dict):
        return {k: _walk(v, (*path, k), smap, variables, now, problems) for k, v in value.items()}
    if isinstance(value, list):
        return [_walk(v, (*path, i), smap, variables, now, problems) for i, v in enumerate(value)]
    if not isinstance(value, str) or "${" not in value:
        return value
    whole = VARS_REF.fullmatch(value)
    if whole and whole.group(1) in variables:
        return variables[whole.group(1)]  # keeps the value's type: `days: ${vars.n}` -> 90

    def var(m: re.Match[str]) -> str:
        name = m.group(1)
        if name not in variables:
            known = ", ".join(sorted(variables)) or "none"
            problems.append(
                smap.problem(
                    path, f"${{vars.{name}}}: no '{name}' under `vars:` (defined: {known})"
                )
            )
            return m.group(0)
        return str(variables[name])

    def date(m: re.Match[str]) -> str:
        text = date_value(m.group(1).strip(), m.group(2), now)
        if text is None:
            problems.append(
                smap.problem(
                    path,
                    f"{m.group(0)}: unknown date expression '{m.group(1)}'; use today, "
                    "yesterday, now, start_of_month, end_of_month, start_of_year or an "
                    "offset such as -7d, +2w, -1m, -1y (optionally :<strftime format>)",
                )
            )
            return m.group(0)
        return text

    value = VARS_REF.sub(var, value)
    value = DATE_REF.sub(date, value)
    return ENV_PREFIX_REF.sub(lambda m: "${" + m.group(1) + "}", value)


def date_value(expr: str, fmt: str | None, now: dt.datetime) -> str | None:
    """The text of one ``${date:expr[:fmt]}``, in local time as Odibi has it; None: unknown."""
    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    named = {
        "now": now,
        "today": today,
        "yesterday": today - dt.timedelta(days=1),
        "start_of_month": today.replace(day=1),
        "end_of_month": today.replace(day=calendar.monthrange(today.year, today.month)[1]),
        "start_of_year": today.replace(month=1, day=1),
    }
    when = named.get(expr)
    if when is None:
        m = _RELATIVE.match(expr)
        if m is None:
            return None
        n = int(m.group(2)) * (-1 if m.group(1) == "-" else 1)
        unit = m.group(3)
        if unit in "dw":
            when = today + dt.timedelta(days=n * (7 if unit == "w" else 1))
        else:
            months = n * (12 if unit == "y" else 1)
            y, mo = divmod(today.month - 1 + months, 12)
            year, month = today.year + y, mo + 1
            day = min(today.day, calendar.monthrange(year, month)[1])
            when = today.replace(year=year, month=month, day=day)
    default = "%Y-%m-%d %H:%M:%S" if expr == "now" else "%Y-%m-%d"
    return when.strftime(fmt or default)


# --------------------------------------------------------------------------- system, local


SYSTEM_WHY = (
    "the System Catalog is not written; odibi_dagster keeps run state (runs, materializations, "
    "asset checks) in Dagster's instance"
)


def system_notes(data: dict[str, Any], smap: SourceMap, problems: list[Problem]) -> list[Note]:
    """The note for ``system:``, and a problem if it names no defined connection."""
    system = data.get("system")
    if not isinstance(system, dict):
        return []  # absent, or the model reports the wrong type
    conns = data.get("connections")
    name = system.get("connection")
    if isinstance(name, str) and isinstance(conns, dict) and name not in conns:
        known = ", ".join(sorted(conns)) or "none"
        problems.append(
            smap.problem(
                ("system", "connection"),
                f"connection '{name}' is not defined under `connections:` (defined: {known})",
            )
        )
    return [note_at(smap, ("system",), SYSTEM_WHY)]


def default_local_base_path(data: dict[str, Any], cwd: Path | None = None) -> dict[str, Any]:
    """A ``type: local`` connection without ``base_path`` gets Odibi's default, ``./data``
    of the working directory (not of the YAML file, as a written relative base_path is)."""
    conns = data.get("connections")
    if not isinstance(conns, dict):
        return data
    here = cwd or Path.cwd()
    fixed = {}
    for name, conn in conns.items():
        if isinstance(conn, dict) and conn.get("type") == "local" and "base_path" not in conn:
            conn = {**conn, "base_path": os.path.normpath(here / LOCAL_DEFAULT_BASE_PATH)}
        fixed[name] = conn
    return {**data, "connections": fixed}
