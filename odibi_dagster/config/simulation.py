"""The YAML model of a simulation read (Odibi v3 ``read.format: simulation``).

A node whose ``read:`` has ``format: simulation`` generates its rows instead of reading
them: ``options.simulation`` says when (``scope``), who (``entities``) and what
(``columns``, each with a ``generator``), plus optional ``chaos`` and
``scheduled_events``. The keys, their defaults and their checks follow Odibi's
``SimulationConfig``; the generator itself is :mod:`odibi_dagster.simulation`.

Everything that can be checked without generating is checked here, so a mistake is a
``file:line`` problem when the project loads: timestep and timestamp spellings, ranges,
weights, overrides naming unknown entities, and each derived expression (parsed into the
small expression language of :mod:`odibi_dagster.simulation_expr`; unknown names,
functions and circular references are reported).
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import Annotated, Any, Literal, Union

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    field_validator,
    model_validator,
)

from odibi_dagster.simulation_expr import ExpressionError, column_order, parse_expression

__all__ = [
    "Generator",
    "SimulationIncremental",
    "SimulationOptions",
    "SimulationRead",
    "SimulationSpec",
    "entity_names",
    "parse_time",
    "read_problems",
    "spec_problems",
    "timestep_seconds",
]

TIMESTEP_PATTERN = r"^(\d+)(s|m|h|d)$"
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class StrictModel(BaseModel):
    """Unknown keys are mistakes (as in :mod:`odibi_dagster.config.models`)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


def timestep_seconds(text: str) -> int:
    """``"5m"`` -> 300 (the spelling was checked when the YAML was loaded)."""
    m = re.match(TIMESTEP_PATTERN, text)
    if m is None:
        raise ValueError(f"not a timestep: {text!r}")
    return int(m.group(1)) * _UNIT_SECONDS[m.group(2)]


def parse_time(text: str) -> datetime:
    """An ISO 8601 timestamp as a naive UTC datetime (``Z`` or an offset accepted; a
    timestamp without one is UTC)."""
    dt = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    if dt.tzinfo is not None:
        dt = dt.astimezone(timezone.utc).replace(tzinfo=None)
    return dt


def _iso(v: str | None, what: str) -> str | None:
    if v is None:
        return v
    try:
        parse_time(v)
    except ValueError:
        raise ValueError(
            f'{what} {v!r} is not an ISO 8601 timestamp; write e.g. "2026-01-01T00:00:00Z"'
        ) from None
    return v


# --------------------------------------------------------------------------- generators


class RangeGenerator(StrictModel):
    type: Literal["range"]
    min: float = Field(description="Smallest value.")
    max: float = Field(description="Largest value.")
    distribution: Literal["uniform", "normal"] = Field(
        default="uniform", description="uniform, or normal (clipped to [min, max])."
    )
    mean: float | None = Field(default=None, description="normal: the mean (default: midpoint).")
    std_dev: float | None = Field(
        default=None, gt=0, description="normal: the standard deviation (default: (max-min)/6)."
    )

    @model_validator(mode="after")
    def _bounds(self) -> RangeGenerator:
        if self.min >= self.max:
            raise ValueError(f"range min ({self.min:g}) must be less than max ({self.max:g})")
        return self


class RandomWalkGenerator(StrictModel):
    type: Literal["random_walk"]
    start: float = Field(description="First value, and the setpoint mean_reversion pulls to.")
    min: float = Field(description="Hard lower bound.")
    max: float = Field(description="Hard upper bound.")
    volatility: float = Field(default=1.0, gt=0, description="Standard deviation of each step.")
    mean_reversion: float = Field(
        default=0.0, ge=0, le=1, description="Pull toward the setpoint per step (0 to 1)."
    )
    mean_reversion_to: str | None = Field(
        default=None, description="A column whose value is the setpoint instead of `start`."
    )
    trend: float = Field(default=0.0, description="Drift added every step.")
    precision: int | None = Field(default=None, ge=0, le=10, description="Decimals kept.")
    shock_rate: float = Field(default=0.0, ge=0, le=1, description="Chance of a shock per step.")
    shock_magnitude: float = Field(default=10.0, gt=0, description="Largest shock.")
    shock_bias: float = Field(
        default=0.0, ge=-1, le=1, description="+1 shocks go up, -1 down, 0 either way."
    )
    # in Odibi's own examples, and ignored by Odibi: accepted, reported as not applied
    drift: float | None = Field(
        default=None, description="Accepted, not applied (Odibi ignores it; use `trend`)."
    )
    noise: float | None = Field(
        default=None, description="Accepted, not applied (Odibi ignores it; use `volatility`)."
    )

    @model_validator(mode="after")
    def _bounds(self) -> RandomWalkGenerator:
        if self.min >= self.max:
            raise ValueError(f"random_walk min ({self.min:g}) must be less than max ({self.max:g})")
        if not self.min <= self.start <= self.max:
            raise ValueError(
                f"random_walk start ({self.start:g}) must be between min ({self.min:g}) "
                f"and max ({self.max:g})"
            )
        return self


class DailyProfileGenerator(StrictModel):
    type: Literal["daily_profile"]
    profile: dict[str, float] = Field(description="Time of day (HH:MM) -> value.")
    min: float = Field(description="Hard lower bound.")
    max: float = Field(description="Hard upper bound.")
    noise: float = Field(default=0.0, ge=0, description="Uniform jitter of +-noise per row.")
    interpolation: Literal["linear", "step"] = Field(
        default="linear", description="Between anchor points: linear or step."
    )
    precision: int | None = Field(default=None, ge=0, le=10, description="Decimals kept.")
    volatility: float = Field(
        default=0.0, ge=0, description="Day-to-day shift of each anchor (standard deviation)."
    )
    weekend_scale: float | None = Field(
        default=None, ge=0, le=1, description="Factor applied on Saturdays and Sundays."
    )

    @model_validator(mode="after")
    def _profile(self) -> DailyProfileGenerator:
        if self.min >= self.max:
            raise ValueError(
                f"daily_profile min ({self.min:g}) must be less than max ({self.max:g})"
            )
        if not self.profile:
            raise ValueError("daily_profile needs at least one anchor point in `profile`")
        for key in self.profile:
            m = re.match(r"^(\d{1,2}):(\d{2})$", str(key))
            if m is None or int(m.group(1)) > 23 or int(m.group(2)) > 59:
                raise ValueError(f"profile key {key!r} must be a time of day HH:MM (00:00-23:59)")
        return self


class CategoricalGenerator(StrictModel):
    type: Literal["categorical"]
    values: list[Any] = Field(min_length=1, description="The values to choose from.")
    weights: list[float] | None = Field(
        default=None, description="The chance of each value (summing to 1)."
    )

    @model_validator(mode="after")
    def _weights(self) -> CategoricalGenerator:
        if self.weights is not None:
            if len(self.weights) != len(self.values):
                raise ValueError(
                    f"categorical has {len(self.weights)} weights for {len(self.values)} "
                    "values; give one weight per value"
                )
            if any(w < 0 for w in self.weights):
                raise ValueError("categorical weights cannot be negative")
            total = sum(self.weights)
            if not 0.99 <= total <= 1.01:
                raise ValueError(f"categorical weights must sum to 1.0, they sum to {total:g}")
        return self


class BooleanGenerator(StrictModel):
    type: Literal["boolean"]
    true_probability: float = Field(default=0.5, ge=0, le=1, description="Chance of true.")


class TimestampGenerator(StrictModel):
    type: Literal["timestamp"]


class SequentialGenerator(StrictModel):
    type: Literal["sequential"]
    start: int = Field(default=1, description="First value.")
    step: int = Field(default=1, description="Added per row.")


class ConstantGenerator(StrictModel):
    type: Literal["constant"]
    value: Any = Field(
        description="The value; in text, {entity_id}, {entity_index}, {timestamp} and "
        "{row_number} are replaced."
    )


class UuidGenerator(StrictModel):
    type: Literal["uuid"]
    version: Literal[4, 5] = Field(default=4, description="4: random (seeded), 5: from a name.")
    namespace: str | None = Field(default=None, description="version 5: the namespace.")


class EmailGenerator(StrictModel):
    type: Literal["email"]
    domain: str = Field(default="example.com", description="The address's domain.")
    pattern: str = Field(
        default="{entity}_{index}", description="User part: {entity}, {index}, {row}."
    )


class Ipv4Generator(StrictModel):
    type: Literal["ipv4"]
    subnet: str | None = Field(default=None, description="A CIDR subnet, e.g. 10.0.0.0/8.")

    @field_validator("subnet")
    @classmethod
    def _subnet(cls, v: str | None) -> str | None:
        if v is not None:
            import ipaddress

            try:
                ipaddress.IPv4Network(v, strict=False)
            except ValueError as exc:
                raise ValueError(f"subnet {v!r} is not an IPv4 CIDR subnet: {exc}") from None
        return v


class GeoGenerator(StrictModel):
    type: Literal["geo"]
    bbox: list[float] = Field(description="[min_lat, min_lon, max_lat, max_lon].")
    format: Literal["tuple", "lat_lon_separate"] = Field(
        default="tuple", description="tuple: (lat, lon); lat_lon_separate: {lat, lon}."
    )

    @model_validator(mode="after")
    def _bbox(self) -> GeoGenerator:
        if len(self.bbox) != 4:
            raise ValueError(
                f"bbox needs 4 numbers [min_lat, min_lon, max_lat, max_lon], got {len(self.bbox)}"
            )
        lat0, lon0, lat1, lon1 = self.bbox
        if not (-90 <= lat0 < lat1 <= 90 and -180 <= lon0 < lon1 <= 180):
            raise ValueError(
                "bbox must be [min_lat, min_lon, max_lat, max_lon] with latitudes in "
                "[-90, 90], longitudes in [-180, 180], and each min below its max"
            )
        return self


class DerivedGenerator(StrictModel):
    type: Literal["derived"]
    expression: str = Field(description="An expression over the row's other columns.")

    @field_validator("expression")
    @classmethod
    def _parses(cls, v: str) -> str:
        try:
            parse_expression(v)
        except ExpressionError as exc:
            raise ValueError(str(exc)) from None
        return v


GENERATOR_MODELS: dict[str, type[StrictModel]] = {
    "range": RangeGenerator,
    "random_walk": RandomWalkGenerator,
    "daily_profile": DailyProfileGenerator,
    "categorical": CategoricalGenerator,
    "boolean": BooleanGenerator,
    "timestamp": TimestampGenerator,
    "sequential": SequentialGenerator,
    "constant": ConstantGenerator,
    "uuid": UuidGenerator,
    "email": EmailGenerator,
    "ipv4": Ipv4Generator,
    "geo": GeoGenerator,
    "derived": DerivedGenerator,
}


def _type_tag(v: Any) -> str | None:
    t = v.get("type") if isinstance(v, dict) else getattr(v, "type", None)
    return t if isinstance(t, str) else None


Generator: Any = Annotated[
    Union[tuple(Annotated[m, Tag(name)] for name, m in GENERATOR_MODELS.items())],  # noqa: UP007
    Discriminator(
        _type_tag,
        custom_error_type="unknown_generator_type",
        custom_error_message="unknown generator type; supported: " + ", ".join(GENERATOR_MODELS),
    ),
]

# --------------------------------------------------------------------------- the rest


class SimulationColumn(StrictModel):
    name: str = Field(min_length=1, description="Column name.")
    data_type: Literal["int", "float", "string", "boolean", "timestamp", "categorical"] = Field(
        description="The column's type: int, float, string, boolean, timestamp, categorical."
    )
    generator: Generator = Field(description="How the column's values are made.")
    null_rate: float = Field(default=0.0, ge=0, le=1, description="Chance of a null per row.")
    entity_overrides: dict[str, Generator] = Field(
        default_factory=dict, description="Entity name -> the generator that entity uses."
    )


class SimulationScope(StrictModel):
    start_time: str = Field(description="First timestamp (ISO 8601).")
    timestep: str = Field(description="Time between rows: a number and s, m, h or d.")
    row_count: int | None = Field(default=None, gt=0, description="Rows per entity.")
    end_time: str | None = Field(default=None, description="Last timestamp (ISO 8601).")
    seed: int = Field(default=42, description="Same seed, same rows.")

    @field_validator("timestep")
    @classmethod
    def _timestep(cls, v: str) -> str:
        if not re.match(TIMESTEP_PATTERN, v) or timestep_seconds(v) <= 0:
            raise ValueError(
                f"timestep {v!r} is not a positive duration: write a number and s, m, h or "
                "d, e.g. 30s, 5m, 1h or 1d"
            )
        return v

    @field_validator("start_time")
    @classmethod
    def _start(cls, v: str) -> str:
        _iso(v, "start_time")
        return v

    @field_validator("end_time")
    @classmethod
    def _end(cls, v: str | None) -> str | None:
        return _iso(v, "end_time")

    @model_validator(mode="after")
    def _how_many(self) -> SimulationScope:
        if (self.row_count is None) == (self.end_time is None):
            raise ValueError(
                "scope needs either `row_count` or `end_time`, not both"
                if self.row_count is not None
                else "scope needs `row_count` (rows per entity) or `end_time`"
            )
        return self


class SimulationEntities(StrictModel):
    count: int | None = Field(default=None, gt=0, description="How many entities.")
    names: list[str] | None = Field(default=None, min_length=1, description="Entity names.")
    id_prefix: str = Field(default="entity_", description="Prefix of generated names.")
    id_format: Literal["sequential", "uuid"] = Field(
        default="sequential", description="Generated names: sequential (01, 02...) or uuid."
    )

    @model_validator(mode="after")
    def _one(self) -> SimulationEntities:
        if (self.count is None) == (self.names is None):
            raise ValueError(
                "entities needs either `count` or `names`, not both"
                if self.count is not None
                else "entities needs `count` or `names`"
            )
        return self


class DowntimeEvent(StrictModel):
    entity: str | None = Field(default=None, description="The entity (none: all).")
    start_time: str = Field(description="Start of the gap (ISO 8601).")
    end_time: str = Field(description="End of the gap (ISO 8601), inclusive.")

    @field_validator("start_time", "end_time")
    @classmethod
    def _time(cls, v: str) -> str:
        _iso(v, "downtime time")
        return v


class SimulationChaos(StrictModel):
    outlier_rate: float = Field(default=0.0, ge=0, le=1, description="Chance of an outlier.")
    outlier_factor: float = Field(default=3.0, gt=0, description="An outlier is value x this.")
    duplicate_rate: float = Field(default=0.0, ge=0, le=1, description="Chance a row repeats.")
    downtime_events: list[DowntimeEvent] = Field(
        default_factory=list, description="Periods without rows."
    )


class ScheduledEvent(StrictModel):
    type: Literal["forced_value", "setpoint_change", "parameter_override"] = Field(
        description="forced_value sets the column; the others are accepted, as in Odibi."
    )
    entity: str | None = Field(default=None, description="The entity (none: all).")
    column: str = Field(description="The column the event sets.")
    value: Any = Field(description="The value during the event.")
    start_time: str = Field(description="Start (ISO 8601).")
    end_time: str | None = Field(default=None, description="End (none: from then on).")
    priority: int = Field(default=0, description="Of overlapping events, the highest wins.")

    @field_validator("start_time")
    @classmethod
    def _start(cls, v: str) -> str:
        _iso(v, "start_time")
        return v

    @field_validator("end_time")
    @classmethod
    def _end(cls, v: str | None) -> str | None:
        return _iso(v, "end_time")


def entity_names(entities: SimulationEntities, seed: int) -> list[str]:
    """The entities' names, in the order they are generated (as Odibi names them)."""
    if entities.names is not None:
        return sorted(entities.names)
    count = entities.count or 0
    if entities.id_format == "sequential":
        width = max(2, len(str(count)))
        return [f"{entities.id_prefix}{str(i + 1).zfill(width)}" for i in range(count)]
    import uuid

    import numpy as np

    rng = np.random.default_rng(seed)
    return [
        f"{entities.id_prefix}{uuid.UUID(bytes=rng.bytes(16), version=4)}" for _ in range(count)
    ]


class SimulationSpec(StrictModel):
    """``options.simulation``: what to generate."""

    scope: SimulationScope = Field(description="When and how many rows.")
    entities: SimulationEntities = Field(description="Who generates rows.")
    columns: list[SimulationColumn] = Field(min_length=1, description="What each row holds.")
    chaos: SimulationChaos | None = Field(default=None, description="Realistic imperfections.")
    scheduled_events: list[ScheduledEvent] = Field(
        default_factory=list, description="Values forced over a time window."
    )


SubPath = tuple[str | int, ...]


def spec_problems(spec: SimulationSpec) -> list[tuple[SubPath, str]]:
    """The checks across the keys of ``options.simulation``: each problem with the path
    of its key under the spec. Empty: :func:`odibi_dagster.simulation.generate` can run."""
    out: list[tuple[SubPath, str]] = []
    names = [c.name for c in spec.columns]
    for i, n in enumerate(names):
        if n in names[:i]:
            out.append((("columns", i, "name"), f"duplicate column name '{n}'"))
    ents = entity_names(spec.entities, spec.scope.seed)
    known = set(ents)

    def entity(path: SubPath, what: str, ent: str | None) -> None:
        if ent is not None and ent not in known:
            out.append(
                (
                    path,
                    f"{what} names entity '{ent}', which is not one of the entities "
                    f"({_listed(ents)})",
                )
            )

    for ci, c in enumerate(spec.columns):
        for ent in c.entity_overrides:
            entity(("columns", ci, "entity_overrides", ent), "entity_overrides", ent)
        gens: list[tuple[SubPath, Any]] = [(("generator",), c.generator)]
        gens += [(("entity_overrides", e), g) for e, g in c.entity_overrides.items()]
        for sub, gen in gens:
            target = gen.mean_reversion_to if isinstance(gen, RandomWalkGenerator) else None
            if target is not None and target not in names:
                out.append(
                    (
                        ("columns", ci, *sub, "mean_reversion_to"),
                        f"mean_reversion_to names column '{target}', which is not a column "
                        f"({', '.join(names)})",
                    )
                )
    for ei, ev in enumerate(spec.scheduled_events):
        if ev.column not in names:
            out.append(
                (
                    ("scheduled_events", ei, "column"),
                    f"the event sets column '{ev.column}', which is not a column "
                    f"({', '.join(names)})",
                )
            )
        entity(("scheduled_events", ei, "entity"), "the event", ev.entity)
    for di, down in enumerate(spec.chaos.downtime_events if spec.chaos else []):
        entity(("chaos", "downtime_events", di, "entity"), "the downtime event", down.entity)
    if not out:
        try:
            column_order(spec, ents)
        except ExpressionError as exc:
            out.append((exc.path, str(exc)))
    return out


def read_problems(read: SimulationRead) -> list[tuple[SubPath, str]]:
    """:func:`spec_problems` of the read's spec (paths under ``read:``), and whether its
    incremental column is the simulation's timestamp column."""
    out = [(("options", "simulation", *p), m) for p, m in spec_problems(read.options.simulation)]
    if read.incremental is not None:
        spec = read.options.simulation
        stamps = [c.name for c in spec.columns if isinstance(c.generator, TimestampGenerator)]
        if read.incremental.column not in stamps:
            out.append(
                (
                    ("incremental", "column"),
                    f"incremental column '{read.incremental.column}' must be the simulation's "
                    "timestamp column ("
                    + (
                        ", ".join(stamps)
                        if stamps
                        else "it has none: add a column with generator type: timestamp"
                    )
                    + ")",
                )
            )
    return out


IGNORED_WALK_KEYS = {
    "drift": "Odibi's random_walk ignores it; `trend` is the drift per step",
    "noise": "Odibi's random_walk ignores it; `volatility` is the noise per step",
}


def ignored_keys(read: SimulationRead) -> list[tuple[tuple[str | int, ...], str]]:
    """(key path under ``read:``, why) of keys accepted but not applied."""
    out: list[tuple[tuple[str | int, ...], str]] = []
    if read.connection is not None:
        out.append((("connection",), "a simulation reads no storage; the rows are generated"))
    for ci, col in enumerate(read.options.simulation.columns):
        gens: list[tuple[tuple[str | int, ...], Any]] = [(("generator",), col.generator)]
        gens += [(("entity_overrides", e), g) for e, g in col.entity_overrides.items()]
        for sub, gen in gens:
            if isinstance(gen, RandomWalkGenerator):
                for key, why in IGNORED_WALK_KEYS.items():
                    if getattr(gen, key) is not None:
                        path = ("options", "simulation", "columns", ci, *sub, key)
                        out.append((path, why))
    for ei, ev in enumerate(read.options.simulation.scheduled_events):
        if ev.type != "forced_value":
            out.append(
                (
                    ("options", "simulation", "scheduled_events", ei, "type"),
                    f"'{ev.type}' events change nothing in Odibi's generator; only "
                    "forced_value sets the column",
                )
            )
    return out


def _listed(names: list[str]) -> str:
    return ", ".join(names[:10]) + (f", ... ({len(names)} in all)" if len(names) > 10 else "")


class SimulationOptions(StrictModel):
    simulation: SimulationSpec = Field(description="The generator's settings (Odibi v3).")


class SimulationIncremental(StrictModel):
    """``read.incremental`` of a simulation: only ``stateful`` on the timestamp column
    means something for generated rows (each run continues after the last one)."""

    mode: str = Field(
        description="stateful: continue after the last successful run's largest timestamp."
    )
    column: str = Field(
        validation_alias=AliasChoices("column", "key_column"),
        min_length=1,
        description="The timestamp column (`key_column` is accepted too, as in Odibi).",
    )
    state_key: str | None = Field(
        default=None, description="Accepted for Odibi compatibility: the mark is the asset's."
    )

    @field_validator("mode")
    @classmethod
    def _stateful(cls, v: str) -> str:
        if v != "stateful":
            raise ValueError(
                f"a simulation's incremental mode is stateful (each run continues after the "
                f"last one), not {v!r}: generated rows have no stored history for a time "
                "window to select from"
            )
        return v


class SimulationRead(StrictModel):
    """A ``read:`` that generates its rows (Odibi v3 ``format: simulation``)."""

    format: Literal["simulation"] = Field(description="simulation: generate the rows.")
    connection: str | None = Field(
        default=None, description="Not used: a simulation reads no storage (Odibi: null)."
    )
    options: SimulationOptions = Field(description="`simulation:` settings.")
    incremental: SimulationIncremental | None = Field(
        default=None,
        description="mode stateful: each run continues after the last run's timestamps.",
    )
