"""Built-in transformer functions (Odibi v3's standard library), by name.

A YAML node names one as ``transformer: <name>`` with ``params:``, or as a step,
``- function: <name>`` (or ``- operation: <name>``) with ``params:``. Each built-in is a
function ``fn(ctx, params)`` of a :class:`BuiltinContext` (the current frame, the node's
upstream frames, the engine) and its parameters checked by a pydantic model, returning a
frame of the node's engine. Most build one SQL query over the current frame, run through
the engine's SQL seam, so the same YAML gives the same result on pandas (DuckDB) and
Spark.

Other modules add names with :func:`register`::

    from odibi_dagster.builtins import BuiltinContext, register

    class MyParams(BaseModel):
        column: str

    def my_builtin(ctx: BuiltinContext, p: MyParams) -> Any:
        return ctx.sql(f"SELECT *, 1 AS {ctx.q(p.column)} FROM df")

    register("my_builtin", my_builtin, MyParams)

A ``@transform`` function of the user's with the same name is used instead of a built-in.
"""

from __future__ import annotations

import datetime as _dt
import difflib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from odibi_dagster.engines.sql_text import string_literal
from odibi_dagster.errors import OdibiRunError

Frame = Any


class Params(BaseModel):
    """Base of the built-ins' parameter models: unknown parameters are refused."""

    model_config = ConfigDict(extra="forbid")


@dataclass(frozen=True)
class Builtin:
    """A registered built-in: its function, parameter model, and where it comes from."""

    name: str
    fn: Callable[[BuiltinContext, Any], Frame]
    params: type[BaseModel]
    origin: str = "Odibi v3"
    summary: str = ""


@dataclass
class BuiltinContext:
    """What a built-in works with: ``df`` (the current frame: the node's read data or the
    previous step's result, else its first upstream node), the node's upstream frames by
    name, and the engine (``engine.name`` is ``pandas`` or ``spark``)."""

    engine: Any
    df: Frame
    frames: Mapping[str, Frame] = field(default_factory=dict)
    where: str = ""

    @property
    def dialect(self) -> str:
        return str(self.engine.name)

    def columns(self) -> list[str]:
        """The current frame's column names, in order."""
        return [c for c, _ in self.engine.column_schema(self.df)]

    def sql(self, query: str, **tables: Frame) -> Frame:
        """Run ``query`` with the current frame as ``df``, the upstream frames by name and
        ``tables``."""
        return self.engine.sql(query, {**self.frames, "df": self.df, **tables}, where=self.where)

    def frame(self, name: str, param: str) -> Frame:
        """The upstream frame ``name`` (named by parameter ``param``)."""
        if name not in self.frames:
            available = ", ".join(self.frames) or "none"
            raise OdibiRunError(
                f"{self.where}: {param} '{name}' names no upstream node of this node "
                f"(available: {available}); add it to depends_on"
            )
        return self.frames[name]

    def require(self, names: list[str], param: str) -> None:
        """Fail naming ``param`` when a column of ``names`` is not in the current frame."""
        have = self.columns()
        missing = [n for n in names if n not in have]
        if missing:
            raise OdibiRunError(
                f"{self.where}: {param} names column(s) {', '.join(missing)} that the data "
                f"does not have (columns: {', '.join(have)})"
            )

    def project(self, exprs: Mapping[str, str], drop: tuple[str, ...] = ()) -> Frame:
        """The current frame with the columns of ``exprs`` (name -> SQL expression) set:
        in place (named as in ``exprs``) where the frame has that column, its name compared
        without case as both engines' SQL does, appended otherwise; ``drop`` left out."""
        have = self.columns()
        given = {c.lower(): c for c in exprs}
        cols = []
        for c in have:
            if c in drop:
                continue
            new = given.pop(c.lower(), None)
            cols.append(self.q(c) if new is None else f"{exprs[new]} AS {self.q(new)}")
        cols += [f"{exprs[c]} AS {self.q(c)}" for c in given.values()]
        return self.sql(f"SELECT {', '.join(cols)} FROM df")

    @staticmethod
    def q(name: str) -> str:
        """``name`` quoted as an identifier (backticks: DuckDB and Spark both read them)."""
        return "`" + name.replace("`", "``") + "`"

    def lit(self, value: Any) -> str:
        """``value`` as a SQL literal of the engine's dialect."""
        if value is None:
            return "NULL"
        if isinstance(value, bool):
            return "TRUE" if value else "FALSE"
        if isinstance(value, (int, float)):
            return repr(value)
        if isinstance(value, _dt.datetime):
            return f"TIMESTAMP '{value.isoformat(sep=' ')}'"
        if isinstance(value, _dt.date):
            return f"DATE '{value.isoformat()}'"
        return string_literal(str(value), spark=self.dialect == "spark")


_BUILTINS: dict[str, Builtin] = {}


def register(
    name: str,
    fn: Callable[[BuiltinContext, Any], Frame],
    params: type[BaseModel],
    *,
    origin: str = "Odibi v3",
    summary: str = "",
    replace: bool = False,
) -> None:
    """Make ``fn`` the built-in ``name``: called as ``fn(ctx, params)`` with ``params`` an
    instance of the model ``params`` (validated when the project loads, where the YAML
    gives it). A name registered twice fails unless ``replace``."""
    if name in _BUILTINS and not replace and _BUILTINS[name].fn is not fn:
        raise ValueError(f"a built-in named '{name}' is already registered")
    _BUILTINS[name] = Builtin(name, fn, params, origin, summary or (fn.__doc__ or "").strip())


def get_builtin(name: str) -> Builtin | None:
    return _BUILTINS.get(name)


def builtin_names() -> list[str]:
    return sorted(_BUILTINS)


def close_matches(name: str, options: list[str]) -> list[str]:
    return difflib.get_close_matches(name, options, n=3, cutoff=0.6)


def ignored_params(builtin: Builtin, params: Mapping[str, Any]) -> list[str]:
    """The params given to one of Odibi's built-ins that it does not have. Odibi's own
    parameter models ignore such keys, so a config written for Odibi loads here too: they
    are left out, and reported by ``validate`` as accepted, not applied. (A built-in of
    odibi_dagster's own refuses them.)"""
    if builtin.origin != "Odibi v3":
        return []
    return [k for k in params if k not in builtin.params.model_fields]


def _applied(builtin: Builtin, params: Mapping[str, Any]) -> dict[str, Any]:
    ignored = ignored_params(builtin, params)
    return {k: v for k, v in params.items() if k not in ignored}


def check_builtin_params(builtin: Builtin, params: Mapping[str, Any]) -> str | None:
    """Why ``params`` do not fit ``builtin`` (None when they do)."""
    try:
        builtin.params.model_validate(_applied(builtin, params))
    except ValidationError as exc:
        parts = []
        for err in exc.errors():
            loc = ".".join(str(x) for x in err["loc"]) or "params"
            if err["type"] == "missing":
                parts.append(f"missing param {loc}")
            elif err["type"] == "extra_forbidden":
                parts.append(f"unexpected param {loc}")
            else:
                parts.append(f"param {loc}: {err['msg']}")
        accepted = ", ".join(builtin.params.model_fields) or "none"
        return f"built-in '{builtin.name}': {'; '.join(parts)} (it accepts: {accepted})"
    return None


def run_builtin(builtin: Builtin, ctx: BuiltinContext, params: Mapping[str, Any]) -> Frame:
    """Call ``builtin`` on ``ctx`` with ``params``; a bad parameter fails naming it."""
    why = check_builtin_params(builtin, params)
    if why:
        raise OdibiRunError(f"{ctx.where}: {why}")
    if ctx.df is None:
        raise OdibiRunError(
            f"{ctx.where}: built-in '{builtin.name}' needs data to work on: give the node "
            "a `read:` or a depends_on"
        )
    return builtin.fn(ctx, builtin.params.model_validate(_applied(builtin, params)))


# Odibi v3 built-ins that are not here (a name of these fails at load saying so).
NOT_SUPPORTED: dict[str, str] = {
    "detect_deletes": "compares with the target's earlier versions",
    "cross_check": "compares several nodes' row counts and schemas",
    "split_events_by_period": "splits rows at day, hour or shift boundaries",
    "explode_list_column": "list columns",
    "unpack_struct": "struct columns",
    "parse_json": "JSON parsing into structs",
    "normalize_json": "JSON flattening",
    "sessionize": "session windows",
    "geocode": "an external geocoding service",
}


def _load_standard() -> None:
    from odibi_dagster.builtins import advanced, relational, sql_core  # noqa: F401


_load_standard()
