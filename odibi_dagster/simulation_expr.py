"""The expressions of a simulation's ``derived`` columns (Odibi v3), parsed and evaluated
without Python's ``eval``.

An expression is Python expression syntax, parsed with :mod:`ast` and checked against a
small grammar before anything runs: numbers, text, ``True``/``False``/``None`` (and
``true``/``false``), the row's columns by name, ``entity_id``, ``_row_index``,
``_timestamp`` (and its ``.hour``, ``.minute``, ``.second``, ``.day``, ``.month``,
``.year``, ``.weekday()``-free attributes listed in :data:`TIMESTAMP_ATTRIBUTES`),
another entity's column at the same timestamp (``Tank_A.level``), the operators
``+ - * / // % **``, comparisons (``in`` with a literal list too), ``and or not``,
``x if cond else y``, and calls of the functions in :data:`FUNCTIONS`. Anything else (an
attribute of a column, subscripts, lambdas, comprehensions, any other name or function)
is refused when the project loads. The checked tree becomes nested closures, one per
operator (:func:`_compile`), that :func:`evaluate` calls, so an expression can do nothing
but compute a value. A power, product, sum or ``round()`` with an enormous result (an
integer past :data:`_MAX_BITS`, a text past :data:`_MAX_LENGTH`) is refused as it runs, and
an expression nested past :data:`_MAX_DEPTH` when it loads.

Stateful functions, as in Odibi: ``prev('col', default)`` (the entity's previous value of
a column), ``ema('col', alpha, default)`` (its exponential moving average) and
``pid(pv=..., sp=..., Kp=..., Ki=..., Kd=..., dt=..., output_min=..., output_max=...,
anti_windup=...)`` (a PID controller's output, one state per call site). Their state is
kept per entity under plain keys (:func:`state_keys`), so an incremental simulation can
store it and the next run continue from it.
"""

from __future__ import annotations

import ast
import hashlib
import operator
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from odibi_dagster.config.simulation import SimulationSpec

__all__ = [
    "FUNCTIONS",
    "Compiled",
    "EvalContext",
    "ExpressionError",
    "column_order",
    "evaluate",
    "parse_expression",
    "state_keys",
]


class ExpressionError(ValueError):
    """A derived expression outside the grammar, or one that cannot be computed;
    ``path``: where, under ``options.simulation`` (when known)."""

    def __init__(self, message: str, path: tuple[str | int, ...] = ()) -> None:
        super().__init__(message)
        self.path = path


# name -> (smallest, largest) number of positional arguments
FUNCTIONS: dict[str, tuple[int, int]] = {
    "abs": (1, 1),
    "round": (1, 2),
    "min": (1, 99),
    "max": (1, 99),
    "int": (1, 1),
    "float": (1, 1),
    "str": (1, 1),
    "bool": (1, 1),
    "coalesce": (1, 99),
    "safe_div": (2, 3),
    "safe_mul": (2, 3),
    "prev": (1, 2),
    "ema": (1, 3),
    "pid": (0, 9),
    "random": (0, 0),
}
_KEYWORDS: dict[str, set[str]] = {
    "round": {"ndigits"},
    "safe_div": {"default"},
    "safe_mul": {"default"},
    "prev": {"default"},
    "ema": {"alpha", "default"},
    "pid": {"pv", "sp", "Kp", "Ki", "Kd", "dt", "output_min", "output_max", "anti_windup"},
}
CONTEXT_NAMES = frozenset({"entity_id", "_row_index", "_timestamp"})
CONSTANTS: dict[str, Any] = {
    "True": True,
    "False": False,
    "None": None,
    "true": True,
    "false": False,
}
TIMESTAMP_ATTRIBUTES = frozenset(
    {"year", "month", "day", "hour", "minute", "second", "microsecond"}
)
_BINOPS: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_CMPOPS: dict[type[ast.cmpop], Callable[[Any, Any], Any]] = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.In: lambda a, b: a in b,
    ast.NotIn: lambda a, b: a not in b,
}


@dataclass(frozen=True)
class Compiled:
    """A checked expression: its tree, the names it reads, and the other entities'
    columns it reads (``{(entity, column)}``)."""

    text: str
    tree: ast.expr
    names: frozenset[str]
    stateful_columns: frozenset[str]  # columns named by prev()/ema(): previous rows
    entity_refs: frozenset[tuple[str, str]]
    guard: str | None  # `... if entity_id == 'X' else ...`: the body concerns X only
    guarded_refs: frozenset[tuple[str, str]]
    run: Callable[[EvalContext], Any]  # the value for one row (see _compile)
    ema_columns: frozenset[str] = frozenset()  # columns named by ema(): the current row


_MAX_DEPTH = 200  # operators nested deeper than this: a generated mistake, not a formula


def _too_deep(text: str) -> ExpressionError:
    return ExpressionError(
        f"expression {text[:60]!r}{'...' if len(text) > 60 else ''} is nested too deeply "
        f"(more than {_MAX_DEPTH} levels of operators or brackets); split it over several "
        "derived columns"
    )


def _depth(tree: ast.AST) -> int:
    """The deepest nesting of ``tree`` (without recursion)."""
    deepest, todo = 0, [(tree, 1)]
    while todo:
        node, d = todo.pop()
        deepest = max(deepest, d)
        if d > _MAX_DEPTH:
            break
        todo.extend((child, d + 1) for child in ast.iter_child_nodes(node))
    return deepest


def parse_expression(text: str) -> Compiled:
    """``text`` checked against the grammar (the names are checked by :func:`column_order`,
    which knows the columns)."""
    try:
        return _parse(text)
    except (RecursionError, MemoryError):
        raise _too_deep(text.strip()) from None


def _parse(text: str) -> Compiled:
    try:
        tree = ast.parse(text.strip(), mode="eval").body
    except SyntaxError as exc:
        raise ExpressionError(f"expression {text.strip()!r} is not valid: {exc.msg}") from None
    if _depth(tree) > _MAX_DEPTH:
        raise _too_deep(text.strip())
    names: set[str] = set()
    stateful: set[str] = set()
    refs: set[tuple[str, str]] = set()
    _check(tree, text.strip(), names, stateful, refs)
    guard, guarded = None, frozenset[tuple[str, str]]()
    if isinstance(tree, ast.IfExp):
        t = tree.test
        if (
            isinstance(t, ast.Compare)
            and isinstance(t.left, ast.Name)
            and t.left.id == "entity_id"
            and len(t.ops) == 1
            and isinstance(t.ops[0], ast.Eq)
            and isinstance(t.comparators[0], ast.Constant)
            and isinstance(t.comparators[0].value, str)
        ):
            guard = t.comparators[0].value
            body: set[tuple[str, str]] = set()
            _check(tree.body, text, set(), set(), body)
            guarded = frozenset(body)
    ema = {
        n.args[0].value
        for n in ast.walk(tree)
        if isinstance(n, ast.Call)
        and isinstance(n.func, ast.Name)
        and n.func.id == "ema"
        and isinstance(n.args[0], ast.Constant)
    }
    return Compiled(
        text.strip(),
        tree,
        frozenset(names),
        frozenset(stateful),
        frozenset(refs),
        guard,
        guarded,
        _compile(tree, text.strip()),
        frozenset(str(c) for c in ema),
    )


def _check(
    node: ast.AST,
    text: str,
    names: set[str],
    stateful: set[str],
    refs: set[tuple[str, str]],
) -> None:
    def bad(what: str) -> ExpressionError:
        return ExpressionError(
            f"expression {text!r}: {what} is not allowed; use columns, numbers, text, "
            "arithmetic, comparisons, and/or/not, `x if cond else y` and the functions "
            + ", ".join(FUNCTIONS)
        )

    if isinstance(node, ast.Constant):
        if not isinstance(node.value, (int, float, str, bool, type(None))):
            raise bad(f"the constant {node.value!r}")
    elif isinstance(node, ast.Name):
        names.add(node.id)
    elif isinstance(node, ast.Attribute):
        if not isinstance(node.value, ast.Name):
            raise bad(f"the attribute '.{node.attr}'")
        if node.value.id == "_timestamp":
            if node.attr not in TIMESTAMP_ATTRIBUTES:
                raise bad(f"_timestamp.{node.attr}")
            names.add("_timestamp")
        else:
            refs.add((node.value.id, node.attr))
    elif isinstance(node, ast.BinOp):
        if type(node.op) not in _BINOPS:
            raise bad(f"the operator {type(node.op).__name__}")
        _check(node.left, text, names, stateful, refs)
        _check(node.right, text, names, stateful, refs)
    elif isinstance(node, ast.UnaryOp):
        if not isinstance(node.op, (ast.USub, ast.UAdd, ast.Not)):
            raise bad(f"the operator {type(node.op).__name__}")
        _check(node.operand, text, names, stateful, refs)
    elif isinstance(node, ast.BoolOp):
        for v in node.values:
            _check(v, text, names, stateful, refs)
    elif isinstance(node, ast.Compare):
        if any(type(op) not in _CMPOPS for op in node.ops):
            raise bad("this comparison")
        for v in (node.left, *node.comparators):
            _check(v, text, names, stateful, refs)
    elif isinstance(node, ast.IfExp):
        for v in (node.test, node.body, node.orelse):
            _check(v, text, names, stateful, refs)
    elif isinstance(node, (ast.List, ast.Tuple)):
        for v in node.elts:
            _check(v, text, names, stateful, refs)
    elif isinstance(node, ast.Call):
        if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS:
            if isinstance(node.func, ast.Attribute):
                raise bad(f"calling the method '.{node.func.attr}()'")
            if isinstance(node.func, ast.Name):
                raise bad(f"calling '{node.func.id}'")
            raise bad(f"calling '{ast.unparse(node.func)}'")
        fn = node.func.id
        lo, hi = FUNCTIONS[fn]
        if not lo <= len(node.args) <= hi:
            raise ExpressionError(
                f"expression {text!r}: {fn}() takes {lo}"
                + (f" to {hi}" if hi != lo and hi < 99 else " or more" if hi == 99 else "")
                + f" positional argument(s), got {len(node.args)}"
            )
        for kw in node.keywords:
            if kw.arg is None or kw.arg not in _KEYWORDS.get(fn, set()):
                raise ExpressionError(
                    f"expression {text!r}: {fn}() has no argument "
                    f"'{kw.arg or '**'}'"
                    + (f" (it takes {', '.join(sorted(_KEYWORDS[fn]))})" if fn in _KEYWORDS else "")
                )
            _check(kw.value, text, names, stateful, refs)
        if fn in ("prev", "ema"):
            first = node.args[0]
            if not (isinstance(first, ast.Constant) and isinstance(first.value, str)):
                raise ExpressionError(
                    f"expression {text!r}: {fn}() takes a column name in quotes first, "
                    f"e.g. {fn}('level'{', 0.1' if fn == 'ema' else ''}, 0)"
                )
            stateful.add(first.value)
            if fn == "ema" and len(node.args) < 2 and all(k.arg != "alpha" for k in node.keywords):
                raise ExpressionError(
                    f"expression {text!r}: ema() needs the smoothing factor, e.g. "
                    f"ema('{first.value}', 0.1, 0)"
                )
            for a in node.args[1:]:
                _check(a, text, names, stateful, refs)
        else:
            for a in node.args:
                _check(a, text, names, stateful, refs)
    else:
        raise bad(f"'{type(node).__name__}' ({ast.unparse(node)})")


def column_order(spec: SimulationSpec, entities: Iterable[str]) -> tuple[list[str], list[str]]:
    """The order columns are computed in (each after the columns its expression or
    ``mean_reversion_to`` reads) and the order entities are (each after the entities whose
    columns it reads at the same timestamp). Raises :class:`ExpressionError` for unknown
    names and cycles."""
    from odibi_dagster.config.simulation import DerivedGenerator, RandomWalkGenerator

    ents = list(entities)
    cols = [c.name for c in spec.columns]
    colset, entset = set(cols), set(ents)
    deps: dict[str, set[str]] = {c: set() for c in cols}
    ent_deps: dict[str, set[str]] = {e: set() for e in ents}
    for ci, c in enumerate(spec.columns):
        gens = [(None, c.generator), *c.entity_overrides.items()]
        for ent, gen in gens:
            where: tuple[str | int, ...] = (
                ("columns", ci, "generator", "expression")
                if ent is None
                else ("columns", ci, "entity_overrides", ent, "expression")
            )
            if isinstance(gen, RandomWalkGenerator) and gen.mean_reversion_to:
                deps[c.name].add(gen.mean_reversion_to)
            if not isinstance(gen, DerivedGenerator):
                continue
            comp = parse_expression(gen.expression)
            for n in comp.names:
                if n in CONTEXT_NAMES or n in CONSTANTS or n in FUNCTIONS:
                    continue
                if n not in colset:
                    hint = (
                        " (another entity's column is written Entity.column)" if n in entset else ""
                    )
                    raise ExpressionError(
                        f"column '{c.name}': expression {comp.text!r} names '{n}', which is "
                        f"not a column ({', '.join(cols)}){hint}",
                        path=where,
                    )
                deps[c.name].add(n)
            # ema() reads the current row's value (prev() the previous row's): after it
            deps[c.name] |= {n for n in comp.ema_columns if n in colset and n != c.name}
            for n in comp.stateful_columns:
                if n not in colset:
                    raise ExpressionError(
                        f"column '{c.name}': expression {comp.text!r} names column '{n}' in "
                        f"prev()/ema(), which is not a column ({', '.join(cols)})",
                        path=where,
                    )
            for other, col in comp.entity_refs:
                if other not in entset:
                    raise ExpressionError(
                        f"column '{c.name}': expression {comp.text!r} reads '{other}.{col}', "
                        f"but '{other}' is not an entity ({', '.join(ents[:10])})",
                        path=where,
                    )
                if col not in colset:
                    raise ExpressionError(
                        f"column '{c.name}': expression {comp.text!r} reads '{other}.{col}', "
                        f"but '{col}' is not a column ({', '.join(cols)})",
                        path=where,
                    )
            users = [ent] if ent is not None else [e for e in ents if e not in c.entity_overrides]
            for user in users:
                refs = comp.entity_refs
                if comp.guard is not None and ent is None and comp.guard != user:
                    refs = refs - comp.guarded_refs
                ent_deps[user] |= {o for o, _ in refs if o != user}
    paths = {
        c.name: ("columns", i, "generator", "expression")
        if isinstance(c.generator, DerivedGenerator)
        else ("columns", i, "generator")
        for i, c in enumerate(spec.columns)
    }
    return _topo(cols, deps, "column", paths), _topo(ents, ent_deps, "entity", {})


def _topo(
    items: list[str],
    deps: Mapping[str, set[str]],
    what: str,
    paths: Mapping[str, tuple[str | int, ...]],
) -> list[str]:
    out: list[str] = []
    state: dict[str, int] = {}  # 1 visiting, 2 done

    def visit(x: str, path: list[str]) -> None:
        if state.get(x) == 2:
            return
        if state.get(x) == 1:
            cycle = " -> ".join([*path[path.index(x) :], x])
            raise ExpressionError(
                f"circular {what} references: {cycle}; use prev() to read the previous "
                "row's value instead",
                path=paths.get(x, ()),
            )
        state[x] = 1
        for d in sorted(deps.get(x, ())):
            visit(d, [*path, x])
        state[x] = 2
        out.append(x)

    for x in items:
        visit(x, [])
    return out


@dataclass
class EvalContext:
    """What an expression sees while one row of one entity is computed."""

    row: dict[str, Any]
    entity: str
    row_index: int
    timestamp: datetime
    state: dict[str, Any]  # the entity's previous values and stateful functions' state
    others: Mapping[str, Mapping[str, Any]]  # other entities' rows at this timestamp
    random: Callable[[], float]
    call_ids: dict[int, str] = field(default_factory=dict)
    column: str = ""  # the column being computed (a pid() call's state is per column)


def state_keys(comp: Compiled) -> set[str]:
    """The keys of an entity's state that ``comp``'s stateful functions read: the columns
    prev() names and ema()'s smoothed values (pid()'s keys start with ``_pid_``)."""
    return set(comp.stateful_columns) | {f"_ema_{c}" for c in comp.ema_columns}


def evaluate(comp: Compiled, ctx: EvalContext) -> Any:
    """The value of a checked expression for the current row."""
    return comp.run(ctx)


Run = Callable[[EvalContext], Any]


def _compile(node: ast.expr, text: str) -> Run:
    """The checked tree as nested closures (built once, called for every row): no
    ``eval``, and no tree walk per row."""
    if isinstance(node, ast.Constant):
        value = node.value
        return lambda ctx: value
    if isinstance(node, ast.Name):
        return _name(node.id)
    if isinstance(node, ast.Attribute):
        assert isinstance(node.value, ast.Name)
        owner, attr = node.value.id, node.attr
        if owner == "_timestamp":
            return lambda ctx: getattr(ctx.timestamp, attr)

        def other_entity(ctx: EvalContext) -> Any:
            row = ctx.row if owner == ctx.entity else ctx.others.get(owner)
            return None if row is None else row.get(attr)

        return other_entity
    if isinstance(node, ast.BinOp):
        f, op = _BINOPS[type(node.op)], node.op
        left, right = _compile(node.left, text), _compile(node.right, text)
        if not isinstance(op, (ast.Pow, ast.Mult, ast.Add)):
            return lambda ctx: f(left(ctx), right(ctx))

        def bounded(ctx: EvalContext) -> Any:
            a, b = left(ctx), right(ctx)
            _bounded(op, a, b, text)
            return _sized(f(a, b), text)

        return bounded
    if isinstance(node, ast.UnaryOp):
        operand = _compile(node.operand, text)
        if isinstance(node.op, ast.Not):
            return lambda ctx: not operand(ctx)
        if isinstance(node.op, ast.USub):
            return lambda ctx: -operand(ctx)
        return lambda ctx: +operand(ctx)
    if isinstance(node, ast.BoolOp):
        parts = [_compile(v, text) for v in node.values]
        is_and = isinstance(node.op, ast.And)

        def boolop(ctx: EvalContext) -> Any:
            result: Any = is_and
            for part in parts:
                result = part(ctx)
                if bool(result) != is_and:  # and: the first falsy, or: the first truthy
                    return result
            return result

        return boolop
    if isinstance(node, ast.Compare):
        first = _compile(node.left, text)
        chain = [
            (_CMPOPS[type(op)], _compile(c, text))
            for op, c in zip(node.ops, node.comparators, strict=True)
        ]

        def compare(ctx: EvalContext) -> bool:
            left = first(ctx)
            for cmp, right_fn in chain:
                right = right_fn(ctx)
                if not cmp(left, right):
                    return False
                left = right
            return True

        return compare
    if isinstance(node, ast.IfExp):
        test, body, orelse = (_compile(v, text) for v in (node.test, node.body, node.orelse))
        return lambda ctx: body(ctx) if test(ctx) else orelse(ctx)
    if isinstance(node, ast.List):
        items = [_compile(v, text) for v in node.elts]
        return lambda ctx: [i(ctx) for i in items]
    if isinstance(node, ast.Tuple):
        items = [_compile(v, text) for v in node.elts]
        return lambda ctx: tuple(i(ctx) for i in items)
    if isinstance(node, ast.Call):
        assert isinstance(node.func, ast.Name)
        return _compile_call(node, node.func.id, text)
    raise ExpressionError(f"expression {text!r}: cannot evaluate {ast.unparse(node)}")


def _name(n: str) -> Run:
    """A name: the row's column first, then the context names, then the constants."""
    special: Run | None = {
        "entity_id": lambda ctx: ctx.entity,
        "_row_index": lambda ctx: ctx.row_index,
        "_timestamp": lambda ctx: ctx.timestamp,
    }.get(n)
    const = CONSTANTS.get(n)  # None also for a column of this row not generated (downtime)

    def name(ctx: EvalContext) -> Any:
        row = ctx.row
        if n in row:
            return row[n]
        return special(ctx) if special is not None else const

    return name


_MAX_BITS = 100_000  # an integer result this large is a mistake, not a measurement
_MAX_LENGTH = 100_000  # nor is text (or a list) this long


def _bounded(op: ast.operator, left: Any, right: Any, text: str) -> None:
    """Refuse a power or a repetition whose result would take unbounded time or memory."""
    if isinstance(op, ast.Pow) and isinstance(right, (int, float)) and not isinstance(right, bool):
        base = left if isinstance(left, int) else 2
        if abs(right) > 1000 or abs(base).bit_length() * abs(right) > _MAX_BITS:
            raise ExpressionError(f"expression {text!r}: the power is too large")
    if isinstance(op, ast.Mult):
        for seq, n in ((left, right), (right, left)):
            long = isinstance(seq, (str, list, tuple)) and isinstance(n, int)
            if long and len(seq) * n > _MAX_LENGTH:
                raise ExpressionError(f"expression {text!r}: the result is too long")


def _sized(result: Any, text: str) -> Any:
    """``result``, unless it is an integer or a text (or list) grown past the bounds (a
    column that doubles itself through prev() row after row)."""
    if isinstance(result, int) and result.bit_length() > _MAX_BITS:
        raise ExpressionError(
            f"expression {text!r}: the result is too large (more than {_MAX_BITS} bits)"
        )
    if isinstance(result, (str, list, tuple)) and len(result) > _MAX_LENGTH:
        raise ExpressionError(
            f"expression {text!r}: the result is too long (more than {_MAX_LENGTH} items)"
        )
    return result


_MAX_NDIGITS = 400  # beyond any float's digits; round(1, -10**9) would run for hours


_BUILTINS: dict[str, Callable[[Any], Any]] = {
    "abs": abs,
    "int": int,
    "float": float,
    "str": str,
    "bool": bool,
}


def _compile_call(node: ast.Call, fn: str, text: str) -> Run:
    kw_fns = {kw.arg: _compile(kw.value, text) for kw in node.keywords if kw.arg}

    def kwargs(ctx: EvalContext) -> dict[str, Any]:
        return {k: f(ctx) for k, f in kw_fns.items()}

    if fn in ("prev", "ema"):
        first = node.args[0]
        assert isinstance(first, ast.Constant)
        column = str(first.value)
        rest = [_compile(a, text) for a in node.args[1:]]
        if fn == "prev":
            default = rest[0] if rest else kw_fns.get("default")
            return lambda ctx: ctx.state.get(column, default(ctx) if default else None)
        key = f"_ema_{column}"

        def ema(ctx: EvalContext) -> Any:
            kw = kwargs(ctx)
            alpha = float(rest[0](ctx) if rest else kw["alpha"])
            default = rest[1](ctx) if len(rest) > 1 else kw.get("default")
            current = ctx.row.get(column)
            if current is None:
                return ctx.state.get(key, default)
            before = ctx.state.get(key)
            if before is None:  # the first value: the default, as in Odibi
                value = current if default is None else default
            else:
                value = alpha * current + (1 - alpha) * before
            ctx.state[key] = value
            return value

        return ema
    arg_fns = [_compile(a, text) for a in node.args]
    # a pid() call's place in its expression: stable from run to run (its state is stored)
    digest = hashlib.sha1(text.encode()).hexdigest()[:8]
    site = f"{digest}:{node.lineno}:{node.col_offset}"
    if fn == "random":
        return lambda ctx: ctx.random()
    if fn in _BUILTINS:
        one, f = arg_fns[0], _BUILTINS[fn]
        return lambda ctx: f(one(ctx))

    def call(ctx: EvalContext) -> Any:
        args = [a(ctx) for a in arg_fns]
        kw = kwargs(ctx) if kw_fns else {}
        if fn == "coalesce":
            return next((a for a in args if a is not None), None)
        if fn in ("safe_div", "safe_mul"):
            a, b = args[0], args[1]
            default = args[2] if len(args) > 2 else kw.get("default")
            if a is None or b is None or (fn == "safe_div" and b == 0):
                return default
            if fn == "safe_div":
                return a / b
            _bounded(ast.Mult(), a, b, text)
            return _sized(a * b, text)
        if fn == "pid":
            return _pid(site, args, kw, ctx)
        if fn == "round":
            nd = args[1] if len(args) > 1 else kw.get("ndigits")
            if isinstance(nd, int) and abs(nd) > _MAX_NDIGITS:
                raise ExpressionError(
                    f"expression {text!r}: round() to {nd} digits; use at most "
                    f"{_MAX_NDIGITS} either way"
                )
            return round(args[0]) if nd is None else round(args[0], nd)
        values = args[0] if len(args) == 1 and isinstance(args[0], (list, tuple)) else args
        return min(values) if fn == "min" else max(values)

    return call


_PID_ORDER = ("pv", "sp", "Kp", "Ki", "Kd", "dt", "output_min", "output_max", "anti_windup")
_PID_DEFAULTS: dict[str, Any] = {
    "Kp": 1.0,
    "Ki": 0.0,
    "Kd": 0.0,
    "dt": 1.0,
    "output_min": 0.0,
    "output_max": 100.0,
    "anti_windup": True,
}


def _pid(site: str, args: list[Any], kwargs: dict[str, Any], ctx: EvalContext) -> Any:
    p = {**_PID_DEFAULTS, **dict(zip(_PID_ORDER, args, strict=False)), **kwargs}
    pv, sp = p.get("pv"), p.get("sp")
    if pv is None or sp is None:
        return None
    key = f"_pid_{ctx.column}:{site}"  # one state per call site
    st = ctx.state.get(key) or {"integral": 0.0, "prev_error": 0.0}
    error = sp - pv
    dt = p["dt"]
    derivative = (error - st["prev_error"]) / dt if dt > 0 else 0.0
    out = p["Kp"] * error + p["Ki"] * st["integral"] + p["Kd"] * derivative
    lo, hi = p["output_min"], p["output_max"]
    clamped = max(lo, min(hi, out))
    integral = st["integral"]
    if not p["anti_windup"] or lo < clamped < hi:
        integral += error * dt
    ctx.state[key] = {"integral": integral, "prev_error": error}
    return clamped
