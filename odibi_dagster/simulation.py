"""Odibi v3's synthetic data generator (``read.format: simulation``): the rows a node's
``options.simulation`` describes, as a pandas DataFrame.

Each entity gets one row per timestep from ``scope.start_time`` (``row_count`` rows, or
up to ``end_time``); each column's ``generator`` makes its value. Generation is
timestamp by timestamp, and within a timestamp entity by entity (an entity whose derived
columns read another entity's columns comes after it), column by column in dependency
order. Every entity draws from its own random generator, seeded from ``scope.seed`` and
a stable hash of its name, so the same YAML gives the same rows on every machine and
engine. ``chaos`` then multiplies some numbers (outliers), repeats some rows and leaves
out downtime; rows are sorted by the first timestamp column.

Incremental (``read.incremental.mode: stateful`` on the timestamp column): a run starts
one timestep after the last successful run's largest timestamp, with the random
generators advanced by the rows already made, each random walk continuing from its
last value and the derived expressions' ``prev()``/``ema()``/``pid()`` state carried
over, so consecutive runs make one continuous series (see :func:`generate`).

Types by ``data_type``: int (nullable Int64; a column an outlier made fractional stays
float), float, string, boolean, timestamp (UTC, without zone), categorical (as the values
are).
"""

from __future__ import annotations

import hashlib
import ipaddress
import math
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import dagster as dg
import numpy as np
import pandas as pd

from odibi_dagster import incremental
from odibi_dagster.config.simulation import (
    BooleanGenerator,
    CategoricalGenerator,
    ConstantGenerator,
    DailyProfileGenerator,
    DerivedGenerator,
    EmailGenerator,
    GeoGenerator,
    Ipv4Generator,
    RandomWalkGenerator,
    RangeGenerator,
    SequentialGenerator,
    SimulationRead,
    SimulationSpec,
    TimestampGenerator,
    UuidGenerator,
    entity_names,
    parse_time,
    spec_problems,
    timestep_seconds,
)
from odibi_dagster.config.yaml_source import format_path
from odibi_dagster.engines.base import Engine
from odibi_dagster.errors import OdibiRunError
from odibi_dagster.simulation_expr import (
    Compiled,
    EvalContext,
    column_order,
    evaluate,
    parse_expression,
    state_keys,
)

__all__ = [
    "STATE_KEY",
    "WALKS_KEY",
    "Generated",
    "generate",
    "read_simulation",
    "timestamp_columns",
]

# the last value of each random walk per entity, after the run (an incremental simulation's
# next run continues from it), next to the high-water mark in the materialization metadata
WALKS_KEY = "odibi/simulation_random_walks"
# the derived expressions' state per entity after the run: the values prev() reads, ema()'s
# smoothed values and pid()'s integral and last error (see _saved_state)
STATE_KEY = "odibi/simulation_expression_state"


@dataclass
class Generated:
    """What one generation made: the rows, the largest timestamp, each random walk's
    last value per entity and the expressions' state per entity (what the next
    incremental run continues from; JSON)."""

    frame: pd.DataFrame
    last_timestamp: datetime | None
    walks: dict[str, dict[str, float]] = field(default_factory=dict)
    state: dict[str, dict[str, Any]] = field(default_factory=dict)


def timestamp_columns(spec: SimulationSpec) -> list[str]:
    return [c.name for c in spec.columns if isinstance(c.generator, TimestampGenerator)]


def entity_seed(seed: int, name: str) -> int:
    """A stable seed for one entity (not Python's per-process ``hash``)."""
    return seed + int(hashlib.md5(name.encode()).hexdigest()[:8], 16) % (2**31)


def generate(
    spec: SimulationSpec,
    *,
    where: str,
    after: datetime | None = None,
    walks: Mapping[str, Mapping[str, float]] | None = None,
    state: Mapping[str, Mapping[str, Any]] | None = None,
) -> Generated:
    """The rows of ``spec``; with ``after`` (the last run's largest timestamp), those from
    one timestep later on, random walks continuing from ``walks`` and the expressions'
    prev()/ema()/pid() state from ``state`` (both as a previous :class:`Generated` has
    them)."""
    found = spec_problems(spec)  # checked when a project loads; here for direct calls
    if found:
        path, message = found[0]
        raise OdibiRunError(f"{where}: options.simulation.{format_path(path)}: {message}")
    scope = spec.scope
    step = timestep_seconds(scope.timestep)
    start = parse_time(scope.start_time)
    first = after + timedelta(seconds=step) if after is not None else start
    done_before = max(0, int((first - start).total_seconds() // step))
    if scope.row_count is not None:
        total = scope.row_count
    else:
        assert scope.end_time is not None
        total = max(0, int((parse_time(scope.end_time) - first).total_seconds() // step) + 1)

    entities = entity_names(spec.entities, scope.seed)
    cols, ent_order = column_order(spec, entities)
    by_name = {c.name: c for c in spec.columns}
    index = {e: i for i, e in enumerate(entities)}
    compiled: dict[int, Compiled] = {}  # each derived generator's expression, parsed once
    for c in spec.columns:
        for gen in (c.generator, *c.entity_overrides.values()):
            if isinstance(gen, DerivedGenerator):
                compiled[id(gen)] = parse_expression(gen.expression)
    rngs = {e: np.random.default_rng(entity_seed(scope.seed, e) + done_before) for e in entities}
    walk_now: dict[str, dict[str, float]] = {
        e: {k: float(v) for k, v in (walks or {}).get(e, {}).items()} for e in entities
    }
    kept = set().union(*(state_keys(c) for c in compiled.values())) if compiled else set()
    state_now: dict[str, dict[str, Any]] = {
        e: _restored((state or {}).get(e, {}), kept) for e in entities
    }
    downtime = [
        (ev.entity, parse_time(ev.start_time), parse_time(ev.end_time))
        for ev in (spec.chaos.downtime_events if spec.chaos else [])
    ]
    events: dict[str, list[tuple[Any, datetime, datetime | None]]] = {}
    for ev in spec.scheduled_events:
        if ev.type == "forced_value":  # the only type Odibi's generator applies
            end = parse_time(ev.end_time) if ev.end_time else None
            events.setdefault(ev.column, []).append((ev, parse_time(ev.start_time), end))

    rows: list[dict[str, Any]] = []
    for i in range(total):
        ts = first + timedelta(seconds=step * i)
        row_number = done_before + i
        tick: dict[str, dict[str, Any]] = {}
        for ent in ent_order:
            if downtime and any((e is None or e == ent) and a <= ts <= b for e, a, b in downtime):
                continue
            rng = rngs[ent]
            row: dict[str, Any] = {}
            ctx = EvalContext(row, ent, row_number, ts, state_now[ent], tick, _draw(rng))
            for name in cols:
                col = by_name[name]
                ctx.column = name
                gen = col.entity_overrides.get(ent, col.generator)
                try:
                    value = _value(
                        gen,
                        name,
                        ent,
                        index[ent],
                        ts,
                        row_number,
                        rng,
                        row,
                        walk_now[ent],
                        ctx,
                        compiled,
                    )
                except OdibiRunError:
                    raise
                except Exception as exc:
                    raise OdibiRunError(
                        f"{where}: simulation column '{name}' (entity '{ent}', {ts:%Y-%m-%dT%H:%M:%SZ}): "
                        f"{type(exc).__name__}: {exc}"
                    ) from None
                forced = [
                    ev
                    for ev, a, b in events.get(name, ())
                    if (ev.entity is None or ev.entity == ent)
                    and a <= ts
                    and (b is None or ts <= b)
                ]
                if forced:
                    value = max(forced, key=lambda ev: ev.priority).value
                if col.null_rate > 0 and rng.random() < col.null_rate:
                    value = None
                row[name] = value
            for k, v in row.items():
                if v is not None:
                    state_now[ent][k] = v
            tick[ent] = row
        rows.extend(tick[e] for e in ent_order if e in tick)

    chaos = spec.chaos
    if chaos is not None and rows:
        crng = np.random.default_rng([scope.seed, done_before])
        numeric = [c.name for c in spec.columns if c.data_type in ("int", "float")]
        if chaos.outlier_rate > 0 and numeric:
            for row in rows:
                for name in numeric:
                    if row[name] is not None and crng.random() < chaos.outlier_rate:
                        row[name] = row[name] * chaos.outlier_factor
        if chaos.duplicate_rate > 0:
            rows = rows + [dict(r) for r in rows if crng.random() < chaos.duplicate_rate]

    stamps = timestamp_columns(spec)
    if stamps:
        first_col = stamps[0]
        rows.sort(key=lambda r: r[first_col] if r[first_col] is not None else datetime.min)
    frame = _frame(spec, rows, where)
    last = None
    if stamps and rows:
        values = [r[stamps[0]] for r in rows if r[stamps[0]] is not None]
        last = max(values) if values else None
    walked = {
        e: dict(v)
        for e, v in walk_now.items()
        if v
        and any(
            isinstance(c.entity_overrides.get(e, c.generator), RandomWalkGenerator)
            for c in spec.columns
        )
    }
    saved = {e: _saved(v, kept) for e, v in state_now.items()}
    return Generated(frame, last, walked, {e: v for e, v in saved.items() if v})


def _saved(state: Mapping[str, Any], kept: set[str]) -> dict[str, Any]:
    """An entity's expression state as JSON: the keys the expressions read (see
    :func:`state_keys`; pid() keys start with ``_pid_``), timestamps as
    ``{"timestamp": iso}``; values JSON cannot hold (a geo tuple, a non-finite number,
    an integer over 1000 bits) are left out, so a prev() of them starts from its default
    again."""
    out: dict[str, Any] = {}
    for k, v in state.items():
        if k not in kept and not k.startswith("_pid_"):
            continue
        if isinstance(v, datetime):
            out[k] = {"timestamp": v.isoformat()}
        elif isinstance(v, (bool, str)) or v is None:
            out[k] = v
        elif isinstance(v, (int, np.integer)):
            if int(v).bit_length() <= 1000:  # JSON text of a far larger one is refused
                out[k] = int(v)
        elif isinstance(v, (float, np.floating)):
            if math.isfinite(v):
                out[k] = float(v)
        elif isinstance(v, dict) and k.startswith("_pid_"):
            out[k] = {n: float(x) for n, x in v.items()}
    return out


def _restored(saved: Mapping[str, Any], kept: set[str]) -> dict[str, Any]:
    """:func:`_saved`'s JSON back as an entity's state."""
    out: dict[str, Any] = {}
    for k, v in saved.items():
        if k not in kept and not k.startswith("_pid_"):
            continue  # the expressions changed since: nothing reads it
        if isinstance(v, dict) and set(v) == {"timestamp"}:
            out[k] = datetime.fromisoformat(str(v["timestamp"]))
        elif isinstance(v, dict) and k.startswith("_pid_"):
            out[k] = {n: float(x) for n, x in v.items() if isinstance(x, (int, float))}
        elif isinstance(v, (bool, str, int, float)):
            out[k] = v
    return out


def read_simulation(
    engine: Engine,
    sim: SimulationRead,
    *,
    where: str,
    instance: dg.DagsterInstance | None = None,
    key: dg.AssetKey | None = None,
) -> tuple[Any, dict[str, Any], str]:
    """A node's simulation read: the engine's frame, the metadata of the asset (the
    incremental mark and random-walk state, rows generated) and a label for its story.
    The connection, if one is named, is not used (a simulation reads no storage)."""
    spec = sim.options.simulation
    inc = sim.incremental
    before: incremental.Mark | None = None
    walks: dict[str, dict[str, float]] = {}
    state: dict[str, dict[str, Any]] = {}
    if inc is not None:
        before = incremental.previous_mark(instance, key)
        if before is not None and before.column != inc.column:
            before = None  # the mark of another column: start again
        if before is not None:
            walks = _previous_walks(instance, key)
            state = _previous_state(instance, key)
    after = None
    if before is not None:
        try:
            after = pd.Timestamp(before.value).to_pydatetime().replace(tzinfo=None)
        except (TypeError, ValueError):
            raise OdibiRunError(
                f"{where}: the last run's high-water mark of '{before.column}' is "
                f"{before.shown()!r}, not a timestamp; wipe the asset's materializations to "
                "start the simulation again"
            ) from None
    made = generate(spec, where=where, after=after, walks=walks, state=state)
    rows = len(made.frame)
    meta: dict[str, Any] = {"odibi/rows_generated": rows}
    label = f"simulation: {rows} rows"
    if inc is not None:
        mark_after = (
            incremental.Mark(inc.column, made.last_timestamp)
            if made.last_timestamp is not None
            else before
        )
        meta[incremental.MARK_BEFORE_KEY] = (
            dg.MetadataValue.json(before.as_json())
            if before is not None
            else dg.MetadataValue.text("none (first run: from scope.start_time)")
        )
        if mark_after is not None:
            meta[incremental.MARK_KEY] = dg.MetadataValue.json(mark_after.as_json())
        meta[WALKS_KEY] = dg.MetadataValue.json(made.walks if made.last_timestamp else walks)
        meta[STATE_KEY] = dg.MetadataValue.json(made.state if made.last_timestamp else state)
        start = "scope.start_time" if before is None else f"after {before.shown()}"
        label += f" (incremental stateful: {start})"
    return engine.from_pandas(made.frame), meta, label


def _previous_state(
    instance: dg.DagsterInstance | None, key: dg.AssetKey | None
) -> dict[str, dict[str, Any]]:
    if instance is None or key is None:
        return {}
    event = instance.get_latest_materialization_event(key)
    mat = event.asset_materialization if event is not None else None
    data = getattr(mat.metadata.get(STATE_KEY), "data", None) if mat is not None else None
    if not isinstance(data, dict):
        return {}
    return {str(e): dict(v) for e, v in data.items() if isinstance(v, dict)}


def _previous_walks(
    instance: dg.DagsterInstance | None, key: dg.AssetKey | None
) -> dict[str, dict[str, float]]:
    if instance is None or key is None:
        return {}
    event = instance.get_latest_materialization_event(key)
    mat = event.asset_materialization if event is not None else None
    data = getattr(mat.metadata.get(WALKS_KEY), "data", None) if mat is not None else None
    if not isinstance(data, dict):
        return {}
    return {
        str(e): {str(c): float(v) for c, v in cols.items() if isinstance(v, (int, float))}
        for e, cols in data.items()
        if isinstance(cols, dict)
    }


def _value(
    gen: Any,
    name: str,
    ent: str,
    ent_index: int,
    ts: datetime,
    row_number: int,
    rng: np.random.Generator,
    row: dict[str, Any],
    walk: dict[str, float],
    ctx: EvalContext,
    compiled: Mapping[int, Compiled],
) -> Any:
    if isinstance(gen, RangeGenerator):
        if gen.distribution == "uniform":
            return float(rng.uniform(gen.min, gen.max))
        mean = gen.mean if gen.mean is not None else (gen.min + gen.max) / 2
        std = gen.std_dev if gen.std_dev is not None else (gen.max - gen.min) / 6
        return float(np.clip(rng.normal(mean, std), gen.min, gen.max))
    if isinstance(gen, RandomWalkGenerator):
        current = walk.get(name, gen.start)
        target = gen.start
        if gen.mean_reversion_to is not None and row.get(gen.mean_reversion_to) is not None:
            target = float(row[gen.mean_reversion_to])
        new = current + gen.mean_reversion * (target - current) + rng.normal(0, gen.volatility)
        new += gen.trend
        if gen.shock_rate > 0 and rng.random() < gen.shock_rate:
            size = rng.uniform(0, gen.shock_magnitude)
            if gen.shock_bias >= 1:
                up = True
            elif gen.shock_bias <= -1:
                up = False
            else:
                up = bool(rng.random() < (1 + gen.shock_bias) / 2)
            new += size if up else -size
        new = float(np.clip(new, gen.min, gen.max))
        if gen.precision is not None:
            new = round(new, gen.precision)
        walk[name] = new
        return new
    if isinstance(gen, DailyProfileGenerator):
        return _daily(gen, ts, rng)
    if isinstance(gen, CategoricalGenerator):
        i = int(rng.choice(len(gen.values), p=gen.weights))
        return gen.values[i]
    if isinstance(gen, BooleanGenerator):
        return bool(rng.random() < gen.true_probability)
    if isinstance(gen, TimestampGenerator):
        return ts
    if isinstance(gen, SequentialGenerator):
        return gen.start + row_number * gen.step
    if isinstance(gen, ConstantGenerator):
        if not isinstance(gen.value, str):
            return gen.value
        return (
            gen.value.replace("{entity_id}", ent)
            .replace("{entity_index}", str(ent_index))
            .replace("{timestamp}", ts.isoformat())
            .replace("{row_number}", str(row_number))
        )
    if isinstance(gen, UuidGenerator):
        if gen.version == 4:
            return str(uuid.UUID(bytes=rng.bytes(16), version=4))
        ns = uuid.NAMESPACE_DNS
        if gen.namespace:
            try:
                ns = uuid.UUID(gen.namespace)
            except ValueError:
                ns = uuid.uuid5(uuid.NAMESPACE_DNS, gen.namespace)
        return str(uuid.uuid5(ns, f"{ent}:{row_number}"))
    if isinstance(gen, EmailGenerator):
        user = (
            gen.pattern.replace("{entity}", ent)
            .replace("{index}", str(ent_index))
            .replace("{row}", str(row_number))
        )
        return f"{user.replace('_', '.').replace(' ', '.')}@{gen.domain}"
    if isinstance(gen, Ipv4Generator):
        if gen.subnet:
            net = ipaddress.IPv4Network(gen.subnet, strict=False)
            return str(net.network_address + int(rng.integers(0, net.num_addresses)))
        return ".".join(str(int(o)) for o in rng.integers(0, 256, size=4))
    if isinstance(gen, GeoGenerator):
        lat0, lon0, lat1, lon1 = gen.bbox
        lat, lon = float(rng.uniform(lat0, lat1)), float(rng.uniform(lon0, lon1))
        return (lat, lon) if gen.format == "tuple" else {"lat": lat, "lon": lon}
    if isinstance(gen, DerivedGenerator):
        return evaluate(compiled[id(gen)], ctx)
    raise TypeError(f"unknown generator {gen!r}")


def _draw(rng: np.random.Generator) -> Callable[[], float]:
    return lambda: float(rng.random())


def _daily(gen: DailyProfileGenerator, ts: datetime, rng: np.random.Generator) -> float:
    anchors = sorted(
        (int(k.split(":")[0]) * 60 + int(k.split(":")[1]), float(v)) for k, v in gen.profile.items()
    )
    if gen.volatility > 0:  # the same shifts all day long: seeded by the date
        day = np.random.default_rng(ts.year * 10000 + ts.month * 100 + ts.day)
        anchors = [(m, v + day.normal(0, gen.volatility)) for m, v in anchors]
    now = ts.hour * 60 + ts.minute
    if len(anchors) == 1:
        value = anchors[0][1]
    else:
        # the anchor at or before now (wrapping to yesterday's last) and the next one
        before = [a for a in anchors if a[0] <= now]
        prev = before[-1] if before else (anchors[-1][0] - 1440, anchors[-1][1])
        later = [a for a in anchors if a[0] > now]
        nxt = later[0] if later else (anchors[0][0] + 1440, anchors[0][1])
        if gen.interpolation == "step":
            value = prev[1]
        else:
            span = nxt[0] - prev[0]
            value = prev[1] + (now - prev[0]) / span * (nxt[1] - prev[1]) if span else prev[1]
    if ts.weekday() >= 5 and gen.weekend_scale is not None:
        value *= gen.weekend_scale
    if gen.noise > 0:
        value += rng.uniform(-gen.noise, gen.noise)
    value = float(np.clip(value, gen.min, gen.max))
    if gen.precision is not None:
        value = round(value, gen.precision)
    return value


def _frame(spec: SimulationSpec, rows: list[dict[str, Any]], where: str) -> pd.DataFrame:
    """The rows as a DataFrame, each column typed by its ``data_type``."""
    data: dict[str, Any] = {}
    for c in spec.columns:
        values = [r[c.name] for r in rows]
        try:
            data[c.name] = _typed(values, c.data_type)
        except (TypeError, ValueError, OverflowError) as exc:
            sample = next((v for v in values if v is not None), None)
            raise OdibiRunError(
                f"{where}: simulation column '{c.name}' is data_type {c.data_type}, but its "
                f"generator gives values like {sample!r} ({exc}); change the data_type or "
                "the generator"
            ) from None
    return pd.DataFrame(data, index=pd.RangeIndex(len(rows)))


def _typed(values: list[Any], data_type: str) -> pd.Series:
    present = [v for v in values if v is not None]
    if data_type == "timestamp":
        ts = pd.to_datetime(pd.Series(values, dtype=object), utc=True, format="mixed")
        return ts.dt.tz_localize(None).astype("datetime64[ns]")
    if data_type == "float":
        return pd.Series([None if v is None else float(v) for v in values], dtype="float64")
    if data_type == "int":
        if all(float(v).is_integer() for v in present):
            return pd.Series([None if v is None else int(v) for v in values], dtype="Int64")
        return pd.Series([None if v is None else float(v) for v in values], dtype="float64")
    if data_type == "boolean":
        return pd.Series([None if v is None else bool(v) for v in values], dtype="boolean")
    if data_type == "string":
        return pd.Series([None if v is None else _text(v) for v in values], dtype=object)
    return pd.Series(values, dtype=object)  # categorical: the values as they are


def _text(v: Any) -> str:
    if isinstance(v, datetime):
        return v.strftime("%Y-%m-%dT%H:%M:%SZ")  # as Odibi writes timestamps
    return str(v)
