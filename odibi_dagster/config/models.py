"""Pydantic models of the Odibi YAML format.

Strict: an unknown key is an error (with a "did you mean" hint added by the loader).
Each field carries a description, which the JSON Schema (``odibi-dagster schema``)
passes on to editors.
"""

from __future__ import annotations

import copy
import datetime as _dt
import re
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union

from pydantic import (
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    PrivateAttr,
    Tag,
    create_model,
    field_validator,
    model_validator,
)

from odibi_dagster.config.quality import (
    GateConfig,
    QuarantineConfig,
    TestEntry,
)
from odibi_dagster.config.simulation import SimulationRead
from odibi_dagster.engines.registry import ENGINE_NAMES
from odibi_dagster.env_refs import ENV_REF, WHOLE_ENV_REF
from odibi_dagster.resources.connection import ConnectionResource
from odibi_dagster.resources.kinds import CONNECTION_KINDS
from odibi_dagster.vocabulary import (
    ALERT_EVENTS,
    ODIBI_EVENTS_NOT_SENT,
    PATTERN_NAMES,
    AlertEvent,
    AlertType,
    ExecutorName,
    Format,
    PartitionType,
    ReadFormat,
    WriteMode,
)

NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
# `engine:` takes the name of a registered engine
EngineName: Any = Literal[ENGINE_NAMES]
RESERVED_NODE_NAMES = frozenset({"context", "__result__"})

# Column types a ``validation.schema.types`` entry may name, grouped by family.
COLUMN_TYPES: dict[str, str] = {
    "string": "string",
    "str": "string",
    "int": "integer",
    "integer": "integer",
    "int64": "integer",
    "long": "integer",
    "float": "float",
    "double": "float",
    "float64": "float",
    "decimal": "float",
    "bool": "boolean",
    "boolean": "boolean",
    "date": "datetime",
    "datetime": "datetime",
    "timestamp": "datetime",
}


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    @model_validator(mode="before")
    @classmethod
    def _empty_means_default(cls, v: Any) -> Any:
        """``options:`` left empty in YAML is null: treat it as "none given"."""
        if isinstance(v, dict):
            empties = [k for k in _EMPTY_IS_DEFAULT if k in v and v[k] is None]
            if empties:
                v = {k: x for k, x in v.items() if k not in empties}
        return v


_EMPTY_IS_DEFAULT = frozenset(
    {
        "options",
        "params",
        "depends_on",
        "no_nulls",
        "tests",
        "required_columns",
        "types",
        "metadata",
        "sensors",
        "run_after",
        "alerts",
        "tags",
        "columns",
        "vars",
        "imports",
        "environments",
    }
)


def _check_name(v: str, what: str) -> str:
    if "__" in v.strip("_"):
        raise ValueError(
            f"{what} name '{v}' contains '__', which Dagster uses to join asset key parts; "
            "use a single underscore"
        )
    return v


# --------------------------------------------------------------------------- connections


def _model_name(yaml_type: str) -> str:
    """``azure_adls`` -> ``AzureAdlsConnection``."""
    return "".join(part.capitalize() for part in yaml_type.split("_")) + "Connection"


def connection_model(resource: type[ConnectionResource]) -> type[StrictModel]:
    """The YAML model of one connection kind: ``type:`` plus the resource's own fields
    (descriptions, defaults and field checks included) and its rules across fields, so
    a mistake is reported at ``file:line`` in the resource's own words."""
    fields: dict[str, Any] = {
        "type": (Literal[resource.yaml_type], Field(description="Connection type."))
    }
    for name, info in resource.model_fields.items():
        if name not in resource.runtime_fields:
            fields[name] = (info.annotation, copy.copy(info))
    validators: dict[str, Any] = {
        f"_{name}": field_validator(*dec.info.fields, mode=dec.info.mode)(dec.func)
        for name, dec in resource.__pydantic_decorators__.field_validators.items()
    }

    def rules(self: BaseModel) -> BaseModel:
        why = resource.fields_rule({k: getattr(self, k) for k in type(self).model_fields})
        if why:
            raise ValueError(why)
        for key in sorted(resource.secret_fields):
            value = getattr(self, key)
            if value is not None and not WHOLE_ENV_REF.match(str(value)):
                # Never echo the value: it may be the secret itself.
                raise ValueError(
                    f"{key} must reference an environment variable, like ${{MY_STORAGE_KEY}}; "
                    "a secret written in the file would be committed with it"
                )
        return self

    validators["_rules"] = model_validator(mode="after")(rules)
    model: type[StrictModel] = create_model(
        _model_name(resource.yaml_type),
        __base__=StrictModel,
        __doc__=resource.__doc__,
        __module__=__name__,
        __validators__=validators,
        **fields,
    )
    return model


# One YAML model per kind of CONNECTION_KINDS, and the union the project's
# `connections:` entries are validated against (chosen by their `type:`).
CONNECTION_MODELS: dict[str, type[StrictModel]] = {
    name: connection_model(cls) for name, cls in CONNECTION_KINDS.items()
}
CONNECTION_TYPES = tuple(CONNECTION_MODELS)
LocalConnection = CONNECTION_MODELS["local"]
AzureAdlsConnection = CONNECTION_MODELS["azure_adls"]


def _connection_tag(v: Any) -> str | None:
    if isinstance(v, dict):
        t = v.get("type")
        return t if isinstance(t, str) else None
    return getattr(v, "type", None)


Connection: Any = Annotated[
    Union[tuple(Annotated[m, Tag(name)] for name, m in CONNECTION_MODELS.items())],  # noqa: UP007
    Discriminator(
        _connection_tag,
        custom_error_type="unknown_connection_type",
        custom_error_message="unsupported connection type; supported: "
        + ", ".join(CONNECTION_TYPES),
    ),
]

# --------------------------------------------------------------------------- nodes


# `read.incremental.watermark_lag` (Odibi v3): a number and s, m, h or d, e.g. "2h"
WATERMARK_LAG_PATTERN = r"^\s*(\d+(?:\.\d+)?)\s*([smhd])\s*$"


class IncrementalConfig(StrictModel):
    """Read only part of the source (Odibi v3 `read.incremental`): rows of a recent time
    window (`rolling_window`), or rows past the last run's high-water mark (`stateful`)."""

    mode: Literal["rolling_window", "stateful"] = Field(
        default="rolling_window",
        description="rolling_window: rows with `column` >= now - lookback. stateful: rows "
        "with `column` > the high-water mark of the node's last successful run (minus "
        "`watermark_lag`); the first run reads everything.",
    )
    column: str = Field(
        validation_alias=AliasChoices("column", "key_column"),
        min_length=1,
        description="The column to filter on (e.g. updated_at, or an increasing id). "
        "`key_column` is accepted too (Odibi v3 alias).",
    )
    fallback_column: str | None = Field(
        default=None,
        description="Used where `column` is null: rows are filtered on "
        "COALESCE(column, fallback_column).",
    )
    lookback: int | None = Field(
        default=None,
        gt=0,
        description="rolling_window: how many `unit`s back from now to read (with `unit`; "
        "neither given: 1 day, as in Odibi).",
    )
    unit: Literal["hour", "day", "month", "year"] | None = Field(
        default=None,
        description="rolling_window: hour, day, month (30 days) or year (365 days).",
    )
    state_key: str | None = Field(
        default=None,
        description="Accepted for Odibi compatibility and not applied: the mark belongs "
        "to the asset that reads.",
    )
    watermark_lag: str | None = Field(
        default=None,
        description="stateful: read again what is this much older than the mark (late "
        "rows), e.g. 30m, 2h, 1d (s, m, h or d). For a date or timestamp column.",
    )

    @field_validator("watermark_lag")
    @classmethod
    def _lag(cls, v: str | None) -> str | None:
        if v is not None and not re.match(WATERMARK_LAG_PATTERN, v):
            raise ValueError(
                f"watermark_lag {v!r} is not a duration: write a number and s, m, h or d, "
                "e.g. 30m, 2h or 1d"
            )
        return v

    @model_validator(mode="after")
    def _mode_keys(self) -> IncrementalConfig:
        if self.mode == "rolling_window":
            if (self.lookback is None) != (self.unit is None):
                given, missing = ("lookback", "unit") if self.unit is None else ("unit", "lookback")
                raise ValueError(
                    f"rolling_window needs `lookback` and `unit` together; `{given}` is given "
                    f"without `{missing}` (e.g. lookback: 3, unit: day)"
                )
            if self.watermark_lag is not None:
                raise ValueError(
                    "`watermark_lag` applies to mode stateful; a rolling_window reads again "
                    "what its `lookback` covers"
                )
        else:
            for key in ("lookback", "unit"):
                if getattr(self, key) is not None:
                    raise ValueError(
                        f"`{key}` applies to mode rolling_window; mode stateful reads the "
                        "rows past the last high-water mark (use `watermark_lag` to read "
                        "late rows again)"
                    )
        return self


class ReadConfig(StrictModel):
    """Where a node reads its data from."""

    connection: str = Field(description="Name of a connection under `connections:`.")
    path: str = Field(description="Path relative to the connection's base path / prefix.")
    format: ReadFormat = Field(
        description="Data format: csv, parquet, json or delta; api (Odibi v3) on an http "
        "connection, read.path being the endpoint."
    )
    options: dict[str, Any] = Field(
        default_factory=dict, description="Format options passed to the reader."
    )
    incremental: IncrementalConfig | None = Field(
        default=None,
        description="Read only new or recent rows (Odibi v3): see docs/configuration.md.",
    )


def _read_tag(v: Any) -> str:
    fmt = v.get("format") if isinstance(v, dict) else getattr(v, "format", None)
    return "simulation" if fmt == "simulation" else "storage"


# A node's `read:` is validated as a storage read or, with `format: simulation` (Odibi v3),
# as a simulation; the node keeps a simulation apart (`NodeConfig.simulation`), so after
# validation `read` is always a ReadConfig (or None), as the rest of the package expects.
if TYPE_CHECKING:
    NodeRead = ReadConfig | None
else:
    NodeRead = (
        Annotated[
            Annotated[ReadConfig, Tag("storage")] | Annotated[SimulationRead, Tag("simulation")],
            Discriminator(_read_tag),
        ]
        | None
    )


class WriteConfig(StrictModel):
    """Where a node's result is written."""

    connection: str = Field(description="Name of a connection under `connections:`.")
    path: str = Field(description="Path relative to the connection's base path / prefix.")
    format: Format = Field(description="Data format: csv, parquet, json or delta.")
    mode: WriteMode = Field(
        default="overwrite", description="overwrite, append, error (if exists) or ignore."
    )
    options: dict[str, Any] = Field(
        default_factory=dict, description="Format options passed to the writer."
    )


class Step(StrictModel):
    """One transform step: a SQL query, or a function (registered with @transform, or a
    built-in) with params."""

    sql: str | None = Field(default=None, description="A SQL query over upstream node names.")
    function: str | None = Field(
        default=None,
        description="Name of a function registered with @transform, or of a built-in.",
    )
    operation: str | None = Field(
        default=None,
        description="Odibi v3: `sql` (the query in `query:` or `params.query`), or the name "
        "of a built-in, as `function:`.",
    )
    query: str | None = Field(
        default=None, description="Odibi v3: the query of an `operation: sql` step."
    )
    params: dict[str, Any] = Field(default_factory=dict, description="Function parameters.")

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, v: Any) -> Any:
        if isinstance(v, str):
            return {"sql": v}
        return v

    @model_validator(mode="after")
    def _one_kind(self) -> Step:
        if self.operation is not None:
            if self.sql is not None or self.function is not None:
                raise ValueError(
                    "a step is one of `sql:`, `function:` or `operation:`; split it into steps"
                )
            if self.operation == "sql":
                query = self.query if self.query is not None else self.params.get("query")
                if not isinstance(query, str) or not query.strip():
                    raise ValueError(
                        "an `operation: sql` step needs its query, in `query:` (or "
                        "`params: {query: ...}`)"
                    )
                self.sql = query
                self.params = {}
            else:
                self.function = self.operation
        if self.query is not None and self.operation != "sql":
            raise ValueError("`query:` goes with `operation: sql`; for SQL write `sql:`")
        if self.sql is not None and self.function is not None:
            raise ValueError(
                "a step is either SQL (`sql:`) or a function (`function:`), not both; split "
                "it into two steps"
            )
        if self.sql is None and self.function is None:
            raise ValueError(
                "a step needs `sql:` (or a plain SQL string), `function:` or `operation:`"
            )
        if self.sql is not None and self.params:
            raise ValueError("`params:` only apply to function steps")
        if self.sql is not None and not self.sql.strip():
            raise ValueError("the SQL step is empty")
        return self


class TransformConfig(StrictModel):
    """An ordered chain of steps; each step after the first sees `__result__`."""

    steps: list[Step] = Field(min_length=1, description="SQL strings or function calls.")


class SchemaCheck(StrictModel):
    required_columns: list[str] = Field(
        default_factory=list, description="Columns that must be present."
    )
    types: dict[str, str] = Field(
        default_factory=dict, description="Column -> expected type (string, int, float, ...)."
    )

    @field_validator("types")
    @classmethod
    def _known_types(cls, v: dict[str, str]) -> dict[str, str]:
        for col, t in v.items():
            if str(t).lower() not in COLUMN_TYPES:
                raise ValueError(
                    f"column '{col}': unknown type '{t}'; use one of: "
                    + ", ".join(sorted(set(COLUMN_TYPES)))
                )
        return v


class ValidationConfig(StrictModel):
    """Checks on a node's result, shown as Dagster asset checks."""

    not_empty: bool = Field(default=False, description="The result has at least one row.")
    no_nulls: list[str] = Field(
        default_factory=list, description="Columns that must contain no nulls."
    )
    schema_: SchemaCheck | None = Field(
        default=None, alias="schema", description="Required columns and column types."
    )
    # Odibi v3 (see config/quality.py and odibi_dagster/quality.py)
    mode: Literal["fail", "warn"] = Field(
        default="fail", description="Odibi v3: warn turns every test's on_fail: fail into warn."
    )
    tests: list[TestEntry] = Field(
        default_factory=list, description="Odibi v3: typed tests, each an asset check."
    )
    quarantine: QuarantineConfig | None = Field(
        default=None, description="Odibi v3: where rows failing quarantine tests are appended."
    )
    gate: GateConfig | None = Field(
        default=None, description="Odibi v3: the quality gate on the whole result."
    )


def _start_text(v: Any) -> Any:
    """``start: 2024-01-01`` arrives from YAML as a date: keep it as the text written."""
    if isinstance(v, _dt.datetime):
        return v.strftime("%Y-%m-%d %H:%M") if (v.hour or v.minute) else v.date().isoformat()
    if isinstance(v, _dt.date):
        return v.isoformat()
    return v


class PartitionsConfig(StrictModel):
    """How a pipeline's (or a node's) data is split: one run computes one partition
    (odibi_dagster's own; see docs/configuration.md, "Partitions and backfills")."""

    type: PartitionType = Field(
        description="hourly, daily, weekly, monthly (time windows) or static (a fixed list)."
    )
    start: Annotated[str | None, BeforeValidator(_start_text)] = Field(
        default=None,
        description="Time windows: the first partition, e.g. 2024-01-01 (or '2024-01-01 06:00' "
        "for hourly).",
    )
    timezone: str = Field(default="UTC", description="Time windows: IANA time zone.")
    end_offset: int = Field(
        default=0,
        description="Time windows: extra partitions past the last complete one (1: include "
        "the window in progress).",
    )
    fmt: str | None = Field(
        default=None,
        description="Time windows: strftime format of partition keys (default %Y-%m-%d; "
        "hourly %Y-%m-%d-%H:%M).",
    )
    values: list[str] | None = Field(
        default=None, min_length=1, description="Static: the partition keys, e.g. [eu, us]."
    )

    @field_validator("values", mode="before")
    @classmethod
    def _values_text(cls, v: Any) -> Any:
        if isinstance(v, list):
            return [
                str(x) if isinstance(x, int | float) and not isinstance(x, bool) else x for x in v
            ]
        return v

    @field_validator("timezone")
    @classmethod
    def _valid_timezone(cls, v: str) -> str:
        return _check_timezone(v)

    @property
    def is_time(self) -> bool:
        return self.type != "static"


class ColumnMetadata(StrictModel):
    """Odibi v3: one column of a node's data dictionary (``columns:``)."""

    description: str | None = Field(default=None, description="What the column holds.")
    pii: bool = Field(default=False, description="Holds personal data (a column tag).")
    tags: list[str] = Field(default_factory=list, description="Labels, as column tags.")

    @model_validator(mode="before")
    @classmethod
    def _empty(cls, v: Any) -> Any:
        return {} if v is None else v


TAG_PATTERN = r"^[A-Za-z0-9_.-]{1,63}$"


class PatternConfig(StrictModel):
    """Odibi v3: a pattern that builds the node's table (see odibi_dagster.patterns)."""

    type: str = Field(
        description="dimension, fact, scd2, merge, aggregation or date_dimension.",
    )
    params: dict[str, Any] = Field(
        default_factory=dict, description="The pattern's parameters (checked at load)."
    )


class NodeConfig(StrictModel):
    """One step of a pipeline: read, transform and/or write. Becomes one Dagster asset."""

    name: str = Field(pattern=NAME_PATTERN, description="Node name, unique in its pipeline.")
    description: str | None = Field(default=None, description="Shown in the Dagster UI.")
    depends_on: list[str] = Field(
        default_factory=list, description="Nodes of the same pipeline this node reads."
    )
    read: NodeRead = Field(
        default=None,
        description="Where the node reads its data (`format: simulation`: generates it).",
    )
    transform: TransformConfig | None = None
    pattern: PatternConfig | None = Field(
        default=None,
        description="Odibi v3: build the node's table with a pattern (dimension, fact, scd2, "
        "merge, aggregation, date_dimension) after its read and transform.",
    )
    write: WriteConfig | None = None
    transformer: str | None = Field(
        default=None,
        description="Odibi v3: a function (built-in or @transform) applied to the node's "
        "data before `transform.steps`.",
    )
    params: dict[str, Any] = Field(
        default_factory=dict, description="Odibi v3: the parameters of `transformer:`."
    )
    cache: bool = Field(
        default=False,
        description="Accepted for Odibi compatibility; every result already passes through "
        "the IO manager.",
    )
    validation: ValidationConfig | None = None
    partitions: PartitionsConfig | None = Field(
        default=None,
        description="Overrides the pipeline's `partitions:` for this node (odibi_dagster's own).",
    )
    # Odibi v3 node keys (see config/notes.py for those accepted but not applied)
    tags: list[str] = Field(
        default_factory=list, description="Odibi v3: labels, set as Dagster asset tags."
    )
    columns: dict[str, ColumnMetadata] = Field(
        default_factory=dict,
        description="Odibi v3: the output's data dictionary, shown as the asset's column schema.",
    )
    retry: RetryConfig | None = Field(
        default=None, description="Odibi v3: this node's retries (overrides the project's)."
    )
    on_error: Literal["fail_fast", "fail_later", "ignore"] = Field(
        default="fail_later",
        description="Odibi v3: fail_later (default, what Dagster does: dependents are "
        "skipped, other branches run); fail_fast and ignore are accepted, not applied.",
    )

    _file: str = PrivateAttr(default="")
    _line: int | None = PrivateAttr(default=None)
    _key_path: tuple[str | int, ...] = PrivateAttr(default=())
    _simulation: SimulationRead | None = PrivateAttr(default=None)

    @field_validator("name")
    @classmethod
    def _not_reserved(cls, v: str) -> str:
        if v in RESERVED_NODE_NAMES or v.startswith("__"):
            raise ValueError(f"node name '{v}' is reserved; choose another name")
        return _check_name(v, "node")

    @field_validator("tags")
    @classmethod
    def _tag_names(cls, v: list[str]) -> list[str]:
        import re

        for t in v:
            if not re.match(TAG_PATTERN, t):
                raise ValueError(
                    f"tag '{t}' cannot be a Dagster tag: use up to 63 letters, digits, "
                    "'_', '-' or '.'"
                )
        return v

    @model_validator(mode="after")
    def _does_something(self) -> NodeConfig:
        if isinstance(self.read, SimulationRead):  # see NodeRead
            self._simulation, self.read = self.read, None
        if (
            self.read is None
            and self.simulation is None
            and self.transform is None
            and self.write is None
            and self.transformer is None
            and self.pattern is None
        ):
            raise ValueError(
                "a node needs at least one of `read:`, `transformer:`, `transform:` or `write:`"
            )
        return self

    @property
    def simulation(self) -> SimulationRead | None:
        """The node's ``read:`` when it is ``format: simulation`` (then ``read`` is None)."""
        return self._simulation

    @property
    def pattern_transformer(self) -> str | None:
        """`transformer:` naming one of Odibi's patterns (`transformer: scd2`, ...): it runs
        as that pattern with `params:`, before the steps."""
        return self.transformer if self.transformer in PATTERN_NAMES else None

    def steps(self) -> list[Step]:
        """The steps the node runs, in order: its `transformer:` (as a function step with
        `params:`), then `transform.steps` (Odibi applies them in this order)."""
        own = self.transformer is not None and self.pattern_transformer is None
        out = [Step(function=self.transformer, params=self.params)] if own else []
        return out + (list(self.transform.steps) if self.transform is not None else [])

    def step_paths(self) -> list[tuple[tuple[str | int, ...], str]]:
        """For each of :meth:`steps`, its key path under the node and the key naming its
        function (``function``, ``operation``, or ``transformer`` for the node's own)."""
        out: list[tuple[tuple[str | int, ...], str]] = []
        if self.transformer and self.pattern_transformer is None:
            out.append(((), "transformer"))
        if self.transform is not None:
            for si, step in enumerate(self.transform.steps):
                kind = "operation" if step.operation is not None else "function"
                out.append((("transform", "steps", si), kind))
        return out

    @property
    def where(self) -> str:
        """``node 'x' (file.yaml:12)``, for messages."""
        loc = f"{self._file}:{self._line}" if self._line else self._file
        return f"node '{self.name}' ({loc})" if loc else f"node '{self.name}'"


class ScheduleConfig(StrictModel):
    cron: str = Field(description="Cron expression, e.g. '0 6 * * *'.")
    timezone: str = Field(default="UTC", description="IANA time zone of the cron expression.")
    enabled: bool = Field(
        default=False, description="Start the schedule running (default: created stopped)."
    )

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, v: Any) -> Any:
        return {"cron": v} if isinstance(v, str) else v

    @field_validator("cron")
    @classmethod
    def _valid_cron(cls, v: str) -> str:
        from dagster._utils.schedules import is_valid_cron_string

        if len(v.split()) != 5 or not is_valid_cron_string(v):
            raise ValueError(
                f"'{v}' is not a valid cron expression: use 5 fields (minute hour day month "
                "weekday), e.g. '0 6 * * *'"
            )
        return v

    @field_validator("timezone")
    @classmethod
    def _valid_timezone(cls, v: str) -> str:
        return _check_timezone(v)


def _check_timezone(v: str) -> str:
    import zoneinfo

    try:
        zoneinfo.ZoneInfo(v)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown time zone '{v}'; use an IANA name such as UTC or Europe/Amsterdam"
        ) from None
    return v


class NewFilesConfig(StrictModel):
    """Which files a new-files sensor watches."""

    connection: str = Field(description="Name of a local or azure_adls connection.")
    path: str = Field(
        description="A folder (or a name prefix) under the connection; a node of the pipeline "
        "must read this connection and path."
    )
    pattern: str = Field(default="*", description="fnmatch pattern on the file name.")


class SensorConfig(StrictModel):
    """Start a run of the pipeline when files arrive or change in a watched folder."""

    new_files: NewFilesConfig = Field(description="The folder to watch.")
    interval: int = Field(
        default=30, ge=1, description="Seconds between checks (minimum_interval_seconds)."
    )
    enabled: bool = Field(
        default=False, description="Start the sensor running (default: created stopped)."
    )
    name: str | None = Field(
        default=None,
        pattern=NAME_PATTERN,
        description="Sensor name; default <pipeline>_new_files_sensor.",
    )
    max_files_per_run: int = Field(
        default=100, ge=1, description="Files one run processes at most; the rest wait."
    )
    skip_existing: bool = Field(
        default=False,
        description="On the first check, treat the files already there as processed.",
    )


class SparkConfig(StrictModel):
    """Where ``engine: spark`` runs: ``remote`` names a Spark Connect server (or
    Databricks Connect); without it, the active or a local session."""

    remote: str | None = Field(
        default=None,
        description="sc://host:port (Spark Connect; a token as ;token=..., in an environment "
        "variable) or 'databricks' (Databricks Connect). Empty: no remote.",
    )

    @field_validator("remote")
    @classmethod
    def _remote_url(cls, v: str | None) -> str | None:
        if v is None or not v.strip():
            return None
        v = v.strip()
        if ENV_REF.search(v):
            if re.search(r"token=(?!\$\{)", v, re.I):
                raise ValueError(_REMOTE_TOKEN)
            return v
        if v == "databricks":
            return v
        if not v.startswith("sc://"):
            # never echo the value: it may hold a token
            raise ValueError(
                "remote must be a Spark Connect URL (sc://host:port, e.g. "
                "sc://localhost:15002), 'databricks' for Databricks Connect, or an "
                "environment variable holding one, like ${SPARK_REMOTE}"
            )
        if ";" in v and re.search(r";\s*token\s*=", v, re.I):
            raise ValueError(_REMOTE_TOKEN)
        return v


_REMOTE_TOKEN = (
    "remote carries a token written in the file, where it would be committed with it: put "
    "the whole URL in an environment variable and write remote: ${SPARK_REMOTE}"
)


class PipelineConfig(StrictModel):
    """A named list of nodes. Becomes a Dagster asset group and a job of the same name."""

    pipeline: str = Field(
        pattern=NAME_PATTERN, description="Pipeline name; also the Dagster job name."
    )
    name: str | None = Field(default=None, description="Display name.")
    description: str | None = None
    layer: str | None = Field(default=None, description="Logical layer, shown as an asset tag.")
    engine: EngineName | None = Field(default=None, description="Overrides the project engine.")
    spark: SparkConfig | None = Field(
        default=None, description="Overrides the project's spark: (where Spark runs)."
    )
    executor: ExecutorName | None = Field(
        default=None, description="Overrides the project executor."
    )
    schedule: ScheduleConfig | None = Field(default=None, description="Run the job on a cron.")
    sensors: list[SensorConfig] = Field(
        default_factory=list, description="Start a run when files arrive (`new_files:`)."
    )
    run_after: list[str] = Field(
        default_factory=list,
        description="Pipelines after whose successful runs this pipeline runs (once per run).",
    )
    partitions: PartitionsConfig | None = Field(
        default=None,
        description="Split the pipeline's data into partitions (hourly, daily, weekly, "
        "monthly or static): each run computes one (odibi_dagster's own).",
    )
    max_concurrent_runs: int | None = Field(
        default=None,
        ge=1,
        description="Sensors and schedules start no run while this many are in progress.",
    )
    nodes: list[NodeConfig] = Field(min_length=1)

    _file: str = PrivateAttr(default="")

    @field_validator("pipeline")
    @classmethod
    def _pipeline_name(cls, v: str) -> str:
        return _check_name(v, "pipeline")


# --------------------------------------------------------------------------- project


class StoryConfig(StrictModel):
    """The run story: an HTML + JSON report of every run."""

    connection: str | None = Field(default=None, description="Connection the story goes to.")
    path: str | None = Field(default=None, description="Directory on that connection.")
    output_path: str | None = Field(
        default=None, description="Legacy: a local directory, instead of connection + path."
    )
    max_sample_rows: int = Field(default=10, ge=0, le=100, description="Rows in each preview.")
    auto_generate: bool = Field(default=True, description="Write a story after each run.")
    enabled: bool = Field(default=True, description="Set false to write no story.")
    retention_days: int | None = Field(
        default=None,
        ge=1,
        description="Odibi v3: after a run, delete the stories of runs older than this many "
        "days (default: keep all).",
    )

    @property
    def active(self) -> bool:
        return self.enabled and self.auto_generate

    @property
    def target_connection(self) -> str | None:
        """The connection stories are written through (None: none, or a local directory)."""
        return self.connection if self.active and not self.output_path else None

    @model_validator(mode="after")
    def _has_target(self) -> StoryConfig:
        if self.active and not (self.connection and self.path) and not self.output_path:
            raise ValueError("story needs `connection:` and `path:` (or set `enabled: false`)")
        return self


class RetryConfig(StrictModel):
    enabled: bool = Field(default=True, description="Retry a failed node.")
    max_attempts: int = Field(default=3, ge=1, le=10, description="Attempts in all (1-10).")
    backoff: Literal["exponential", "linear", "constant"] = Field(
        default="exponential", description="Delay growth between attempts."
    )
    backoff_seconds: float = Field(default=1.0, ge=0, description="Base delay in seconds.")


class LoggingConfig(StrictModel):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = Field(
        default="INFO",
        description="Accepted for Odibi compatibility (Dagster sets run log levels).",
    )
    structured: bool = Field(default=False, description="Accepted for Odibi compatibility.")
    metadata: dict[str, Any] = Field(
        default_factory=dict, description="Key/values added to every run as odibi/<key> tags."
    )

    @field_validator("level", mode="before")
    @classmethod
    def _upper(cls, v: Any) -> Any:
        return v.upper() if isinstance(v, str) else v


class DefaultsConfig(StrictModel):
    """Legacy block (Odibi's getting_started layout): project settings nested one level.

    Each key here is applied as if written at the top level; setting one in both places
    is an error.
    """

    retry: RetryConfig | None = None
    logging: LoggingConfig | None = None
    story: StoryConfig | None = None


def _known_event(v: Any) -> Any:
    """One entry of ``on_events``: an event alerts are sent on, or a clear refusal."""
    if v in ALERT_EVENTS:
        return v
    supported = ", ".join(ALERT_EVENTS)
    if v in ODIBI_EVENTS_NOT_SENT:
        raise ValueError(
            f"'{v}' is not sent here: it needs Odibi's {ODIBI_EVENTS_NOT_SENT[v]}, which "
            f"odibi_dagster does not have; supported events: {supported}"
        )
    if isinstance(v, str):
        from odibi_dagster.config.semantics import suggest

        hint = suggest(v, list(ALERT_EVENTS))
        raise ValueError(f"unknown event '{v}'{hint}; supported events: {supported}")
    raise ValueError(f"expected an event name; supported events: {supported}")


def _default_events() -> list[AlertEvent]:
    return ["on_failure"]


class AlertMetadata(StrictModel):
    """Settings of one alert (Odibi's ``metadata:`` keys)."""

    throttle_minutes: int = Field(
        default=15,
        ge=0,
        description="Minimum minutes between two alerts for the same pipeline and event "
        "(0: no minimum).",
    )
    max_per_hour: int = Field(
        default=10, ge=1, description="At most this many alerts per pipeline and event per hour."
    )
    channel: str | None = Field(
        default=None, description="Slack only: the channel to post in, e.g. '#data-alerts'."
    )
    mention: str | list[str] | None = Field(
        default=None,
        description="Teams only: people to mention (their e-mail / user principal name).",
    )
    dagster_url: str | None = Field(
        default=None,
        description="Base URL of the Dagster web UI, e.g. http://dagster.internal:3000; the "
        "message links to the run there.",
    )

    @field_validator("dagster_url")
    @classmethod
    def _http_url(cls, v: str | None) -> str | None:
        if v is None:
            return v
        if not v.startswith(("http://", "https://")) or len(v.split("://", 1)[1]) == 0:
            raise ValueError(
                f"dagster_url '{v}' is not an http(s) URL; give the web UI's base URL, e.g. "
                "http://dagster.internal:3000"
            )
        return v.rstrip("/")

    @property
    def mentions(self) -> list[str]:
        if self.mention is None:
            return []
        return [self.mention] if isinstance(self.mention, str) else list(self.mention)


class AlertConfig(StrictModel):
    """A message to Slack, Teams or a webhook when a pipeline's run fails, succeeds or
    starts; sent by a Dagster run-status sensor."""

    type: AlertType = Field(
        description="webhook (JSON), slack (Block Kit) or teams (Adaptive Card)."
    )
    url: str = Field(
        description="The webhook URL, as an environment variable reference like "
        "${SLACK_WEBHOOK_URL}: the URL carries its token, so it is read only when an alert "
        "is sent."
    )
    on_events: list[Annotated[AlertEvent, BeforeValidator(_known_event)]] = Field(
        default_factory=_default_events,
        min_length=1,
        description="Events to send on: on_failure, on_success, on_start, on_gate_block, "
        "on_quarantine.",
    )
    pipelines: list[str] | None = Field(
        default=None,
        min_length=1,
        description="Pipelines to send alerts for (default: every pipeline).",
    )
    metadata: AlertMetadata = Field(
        default_factory=AlertMetadata,
        description="throttle_minutes, max_per_hour, channel (slack), mention (teams), "
        "dagster_url.",
    )

    @field_validator("url")
    @classmethod
    def _url_is_a_reference(cls, v: str) -> str:
        if not WHOLE_ENV_REF.match(v):
            # Never echo the value: it may be the URL and its token.
            raise ValueError(
                "url must reference an environment variable, like ${SLACK_WEBHOOK_URL}; a "
                "webhook URL carries its token, and one written in the file would be "
                "committed with it"
            )
        return v

    @field_validator("on_events")
    @classmethod
    def _no_repeats(cls, v: list[AlertEvent]) -> list[AlertEvent]:
        return list(dict.fromkeys(v))

    @property
    def env_var(self) -> str:
        """The environment variable holding the URL."""
        m = WHOLE_ENV_REF.match(self.url)
        assert m is not None
        return m.group(1)


class SystemConfig(StrictModel):
    """Odibi v3's System Catalog: accepted, not applied (run state lives in Dagster)."""

    connection: str = Field(description="Connection Odibi keeps its system tables on.")
    path: str = Field(default="_odibi_system", description="Directory on that connection.")
    environment: str | None = Field(default=None, description="Environment name it records.")
    sync_to: dict[str, Any] | None = Field(
        default=None, description="Where Odibi copies its system tables (e.g. a SQL schema)."
    )
    cost_per_compute_hour: float | None = Field(
        default=None, description="Cost per compute hour, for Odibi's cost tracking."
    )
    retention_days: dict[str, int] | None = Field(
        default=None, description="Days Odibi keeps each kind of system record."
    )


class ProjectConfig(StrictModel):
    """A whole Odibi project: connections, settings and pipelines."""

    project: str | None = Field(default=None, description="Project name.")
    description: str | None = None
    version: str | None = None
    owner: str | None = None
    transforms: list[str] = Field(
        default_factory=list,
        description="Python files (relative to the project file) or importable modules that "
        "define @transform functions; transforms.py beside the project file is always imported.",
    )

    @field_validator("version", mode="before")
    @classmethod
    def _version_text(cls, v: Any) -> Any:
        return str(v) if isinstance(v, int | float) and not isinstance(v, bool) else v

    engine: EngineName = Field(default="pandas", description="pandas or spark.")
    spark: SparkConfig | None = Field(
        default=None, description="Where engine spark runs (remote: Spark Connect)."
    )
    executor: ExecutorName | None = Field(
        default=None,
        description="in_process (default: one process, fast) or multiprocess (one process "
        "per node).",
    )
    column_lineage: Literal["load", "run", "off"] = Field(
        default="load",
        description="Column lineage of SQL steps: at load and in each materialization "
        "(load), only in materializations (run: nothing parsed at load), or none (off).",
    )

    @field_validator("column_lineage", mode="before")
    @classmethod
    def _lineage_switch(cls, v: Any) -> Any:
        # YAML reads a bare off / on (and false / true) as a boolean
        return {False: "off", True: "load"}.get(v, v) if isinstance(v, bool) else v

    connections: dict[str, Connection] = Field(min_length=1)
    story: StoryConfig | None = None
    retry: RetryConfig | None = None
    logging: LoggingConfig | None = None
    defaults: DefaultsConfig | None = Field(
        default=None, description="Legacy: retry/logging/story nested under `defaults:`."
    )
    alerts: list[AlertConfig] = Field(
        default_factory=list,
        description="Messages to Slack, Teams or webhooks when runs fail, succeed or start.",
    )
    pipelines: list[PipelineConfig] = Field(min_length=1)
    system: SystemConfig | None = Field(
        default=None,
        description="Odibi v3: the System Catalog; accepted, not applied (reported by validate).",
    )
    vars: dict[str, Any] = Field(
        default_factory=dict, description="Odibi v3: values for ${vars.name} placeholders."
    )
    imports: list[str] = Field(
        default_factory=list,
        description="Odibi v3: YAML files merged into this one at load (relative to it).",
    )
    environments: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="Odibi v3: overrides per environment, applied at load when selected "
        "with --env or ODIBI_ENV.",
    )
