"""Python function steps: the ``@transform`` registry and the context a step receives.

Odibi's signature is kept: ``f(context, **params)``, where ``context.get("<node>")``
returns an upstream node's DataFrame and ``context.get("__result__")`` the previous
step's result. A function with a parameter named ``current`` (Odibi v3) gets the current
frame in it: the node's read data or the previous step's result, else its first upstream
node; ``context.df`` and ``context.get("df")`` are the same frame.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import sys
import types
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, overload

from odibi_dagster.errors import OdibiRunError

if TYPE_CHECKING:
    from odibi_dagster.config.models import Step
    from odibi_dagster.engines.base import Engine

F = TypeVar("F", bound=Callable[..., Any])

_REGISTRY: dict[str, Callable[..., Any]] = {}
# what a function declares about its output columns (see ``transform(columns=...)``)
_COLUMNS_ATTR = "__odibi_columns__"

RESULT_NAME = "__result__"
# Odibi v3's name for the current frame, in SQL steps and built-ins
CURRENT_NAME = "df"
# the parameter through which a function step receives the current frame (Odibi v3)
CURRENT_PARAM = "current"


@overload
def transform(func: F) -> F: ...
@overload
def transform(
    func: None = None,
    *,
    name: str | None = None,
    columns: Mapping[str, Sequence[str]] | None = None,
) -> Callable[[F], F]: ...
def transform(
    func: F | None = None,
    *,
    name: str | None = None,
    columns: Mapping[str, Sequence[str]] | None = None,
) -> Any:
    """Register a function step under its name (or ``name=``).

    ``columns`` declares the column lineage of the result: each output column with the
    input columns it is made from, as ``"col"`` (a column of ``__result__``, or of the
    only table the step sees) or ``"table.col"`` (``table`` an upstream node's name, or the
    name of a param that holds one). Columns not declared have unknown lineage.

    Example::

        @odibi_dagster.transform
        def add_revenue(context, source: str):
            df = context.get(source).copy()
            df["revenue"] = df["quantity"] * df["price"]
            return df

    and in YAML: ``- function: add_revenue`` with ``params: {source: load_sales}``.
    """

    declared = _check_columns(columns) if columns is not None else None

    def register(f: F) -> F:
        if declared is not None:
            setattr(f, _COLUMNS_ATTR, declared)
        params = list(inspect.signature(f).parameters.values())
        if not params or params[0].kind not in (
            inspect.Parameter.POSITIONAL_ONLY,
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
        ):
            raise TypeError(
                f"@transform function '{f.__name__}' must take the step context as its first "
                "argument: def f(context, **params)"
            )
        key = name or f.__name__
        known = _REGISTRY.get(key)
        if known is not None and not _same_function(known, f):
            raise TypeError(
                f"two different @transform functions are named '{key}': "
                f"{_origin(known)} and {_origin(f)}; rename one (or pass name=...)"
            )
        _REGISTRY[key] = f
        return f

    return register(func) if func is not None else register


def _check_columns(columns: Any) -> dict[str, tuple[str, ...]]:
    if not isinstance(columns, Mapping) or not all(
        isinstance(k, str)
        and isinstance(v, (list, tuple))
        and all(isinstance(x, str) and x for x in v)
        for k, v in columns.items()
    ):
        raise TypeError(
            '@transform(columns=...) takes {"output column": ["input column", ...]}, e.g. '
            '{"revenue": ["quantity", "orders.price"]}'
        )
    return {k: tuple(v) for k, v in columns.items()}


def declared_columns(func: Callable[..., Any]) -> dict[str, tuple[str, ...]] | None:
    """The column lineage ``func`` declares (None: none)."""
    declared = getattr(func, _COLUMNS_ATTR, None)
    return dict(declared) if isinstance(declared, dict) else None


def _same_function(a: Callable[..., Any], b: Callable[..., Any]) -> bool:
    """The same code (a module imported again, or a copy of the same project)."""
    ca, cb = getattr(a, "__code__", None), getattr(b, "__code__", None)
    if ca is None or cb is None:
        return a is b
    return (ca.co_code, ca.co_consts, ca.co_names) == (cb.co_code, cb.co_consts, cb.co_names)


def _origin(f: Callable[..., Any]) -> str:
    code = getattr(f, "__code__", None)
    return f"{code.co_filename}:{code.co_firstlineno}" if code else repr(f)


def registered_functions() -> Mapping[str, Callable[..., Any]]:
    return dict(_REGISTRY)


def get_function(name: str) -> Callable[..., Any] | None:
    return _REGISTRY.get(name)


def check_params(func: Callable[..., Any], params: Mapping[str, Any]) -> str | None:
    """Why ``params`` cannot be passed to ``func`` (None when they can)."""
    sig = inspect.signature(func)
    named = [p for p in list(sig.parameters.values())[1:] if p.name != CURRENT_PARAM]
    accepts_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in named)
    allowed = [
        p.name
        for p in named
        if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    ]
    required = [
        p.name
        for p in named
        if p.default is inspect.Parameter.empty
        and p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    ]
    missing = [p for p in required if p not in params]
    unexpected = [] if accepts_any else [p for p in params if p not in allowed]
    fname = getattr(func, "__name__", "function")
    parts = []
    if missing:
        parts.append(f"missing param{'s' if len(missing) > 1 else ''} {', '.join(missing)}")
    if unexpected:
        parts.append(
            f"unexpected param{'s' if len(unexpected) > 1 else ''} {', '.join(unexpected)}"
        )
    if not parts:
        return None
    accepted = ", ".join(allowed) if allowed else "none"
    return f"function '{fname}': {'; '.join(parts)} (it accepts: {accepted})"


class StepContext:
    """What a function step sees: upstream DataFrames by node name, and ``__result__``."""

    def __init__(
        self,
        frames: Mapping[str, Any],
        *,
        node: str = "",
        engine: str = "pandas",
        current: Any = None,
    ):
        self._frames = dict(frames)
        self.node = node
        self.engine = engine
        # Odibi v3's ``context.df``: the current frame (see the module's doc)
        self.df = current

    def get(self, name: str) -> Any:
        """The DataFrame of upstream node ``name`` (or ``__result__``)."""
        try:
            return self._frames[name]
        except KeyError:
            available = ", ".join(self._frames) or "none"
            raise OdibiRunError(
                f"node '{self.node}': context.get('{name}') names no available DataFrame. "
                f"Available: {available}. Add '{name}' to the node's depends_on."
            ) from None

    def has(self, name: str) -> bool:
        return name in self._frames

    def names(self) -> list[str]:
        return list(self._frames)

    def __iter__(self) -> Iterator[str]:
        return iter(self._frames)


def _odibi_shim() -> types.ModuleType:
    """A stand-in ``odibi`` module so Odibi transform files (``from odibi import
    transform``) load unchanged. Installed only where the real package is absent."""
    mod = types.ModuleType("odibi")
    mod.transform = transform  # type: ignore[attr-defined]
    mod.__dict__["__odibi_dagster_shim__"] = True
    return mod


def import_transforms_file(path: Path) -> None:
    """Import a user's transforms module from a file path (idempotent)."""
    path = path.resolve()
    mod_name = "odibi_user_transforms_" + hashlib.sha1(str(path).encode()).hexdigest()[:12]
    if mod_name in sys.modules:
        return
    if "odibi" not in sys.modules and importlib.util.find_spec("odibi") is None:
        sys.modules["odibi"] = _odibi_shim()
    spec = importlib.util.spec_from_file_location(mod_name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import transforms from {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(mod_name, None)
        raise


def current_frame(frames: Mapping[str, Any], current: Any) -> Any:
    """The frame a step works on (Odibi's ``df``): ``current`` (the node's read data or
    the previous step's result), else the first upstream frame, else None."""
    if current is not None:
        return current
    return next(iter(frames.values()), None)


def unknown_function(name: str) -> str:
    """Why ``name`` names no function: close matches among the @transform functions and
    built-ins, and what to do."""
    from odibi_dagster.builtins import NOT_SUPPORTED, builtin_names, close_matches

    if name in NOT_SUPPORTED:
        return (
            f"the Odibi built-in '{name}' is not supported here ({NOT_SUPPORTED[name]}); "
            "write it as SQL or a @transform function"
        )
    close = close_matches(name, sorted({*_REGISTRY, *builtin_names()}))
    hint = f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""
    return (
        f"unknown function '{name}'{hint}. It is neither a built-in (see "
        "docs/configuration.md, 'Built-in transformers') nor registered with "
        "@odibi_dagster.transform in transforms.py beside the project file or in a module "
        "your definitions.py imports before load_definitions"
        + (f" (registered: {', '.join(sorted(_REGISTRY))})" if _REGISTRY else "")
    )


def run_steps(
    engine: Engine,
    steps: list[Step],
    frames: Mapping[str, Any],
    current: Any = None,
    *,
    node: str,
    where: str,
    on_step: Callable[[int, Any], None] | None = None,
) -> Any:
    """Run a node's transform steps in order and return the last result (``on_step``
    sees each step's result as it comes, with the step's index).

    SQL steps see every upstream node by name; every step after the first (and the first
    too, when the node read data itself) also sees the previous result as ``__result__``.
    ``df`` (Odibi v3) is the current frame (:func:`current_frame`). Function steps get a
    StepContext over the same tables; built-ins (:mod:`odibi_dagster.builtins`) work on
    ``df``.
    """
    from odibi_dagster.builtins import BuiltinContext, get_builtin, run_builtin

    for i, step in enumerate(steps):
        tables = dict(frames)
        if current is not None:
            tables[RESULT_NAME] = current
        df = current_frame(frames, current)
        if df is not None:
            tables[CURRENT_NAME] = df
        label = f"{where}, step {i + 1}"
        if step.sql is not None:
            current = engine.sql(step.sql, tables, where=label)
            if on_step is not None:
                on_step(i, current)
            continue
        assert step.function is not None
        func = get_function(step.function)
        builtin = get_builtin(step.function) if func is None else None
        if builtin is not None:
            result = run_builtin(
                builtin,
                BuiltinContext(engine=engine, df=df, frames=frames, where=label),
                step.params,
            )
        elif func is None:
            raise OdibiRunError(f"{label}: {unknown_function(step.function)}")
        else:
            why = check_params(func, step.params)
            if why:
                raise OdibiRunError(f"{label}: {why}")
            extra = (
                {CURRENT_PARAM: df} if CURRENT_PARAM in inspect.signature(func).parameters else {}
            )
            result = func(
                StepContext(tables, node=node, engine=engine.name, current=df),
                **step.params,
                **extra,
            )
        if not engine.is_frame(result):
            raise OdibiRunError(
                f"{label}: function '{step.function}' returned "
                f"{'None' if result is None else 'a ' + type(result).__name__}; a function "
                f"step on engine {engine.name} must return a {engine.frame_kind}"
            )
        current = result
        if on_step is not None:
            on_step(i, current)
    return current
