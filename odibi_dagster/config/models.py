"""Pydantic models of the Odibi YAML format.

Strict: an unknown key is an error (with a "did you mean" hint added by the loader).
Each field carries a description, which the JSON Schema (``odibi-dagster schema``)
passes on to editors.
"""

from __future__ import annotations

import copy
import re
from typing import Annotated, Any, Literal, Union

from pydantic import (
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

from odibi_dagster.engines.registry import ENGINE_NAMES
from odibi_dagster.env_refs import ENV_REF, WHOLE_ENV_REF
from odibi_dagster.resources.connection import ConnectionResource
from odibi_dagster.resources.kinds import CONNECTION_KINDS
from odibi_dagster.vocabulary import (
    ALERT_EVENTS,
    ODIBI_EVENTS_NOT_SENT,
    AlertEvent,
    AlertType,
    ExecutorName,
    Format,
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
        "required_columns",
        "types",
        "metadata",
        "sensors",
        "run_after",
        "alerts",
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


class ReadConfig(StrictModel):
    """Where a node reads its data from."""

    connection: str = Field(description="Name of a connection under `connections:`.")
    path: str = Field(description="Path relative to the connection's base path / prefix.")
    format: Format = Field(description="Data format: csv, parquet, json or delta.")
    options: dict[str, Any] = Field(
        default_factory=dict, description="Format options passed to the reader."
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
    """One transform step: a SQL query, or a registered Python function with params."""

    sql: str | None = Field(default=None, description="A SQL query over upstream node names.")
    function: str | None = Field(
        default=None, description="Name of a function registered with @transform."
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
        if self.sql is not None and self.function is not None:
            raise ValueError(
                "a step is either SQL (`sql:`) or a function (`function:`), not both; split "
                "it into two steps"
            )
        if self.sql is None and self.function is None:
            raise ValueError("a step needs `sql:` (or a plain SQL string) or `function:`")
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


class NodeConfig(StrictModel):
    """One step of a pipeline: read, transform and/or write. Becomes one Dagster asset."""

    name: str = Field(pattern=NAME_PATTERN, description="Node name, unique in its pipeline.")
    description: str | None = Field(default=None, description="Shown in the Dagster UI.")
    depends_on: list[str] = Field(
        default_factory=list, description="Nodes of the same pipeline this node reads."
    )
    read: ReadConfig | None = None
    transform: TransformConfig | None = None
    write: WriteConfig | None = None
    cache: bool = Field(
        default=False,
        description="Accepted for Odibi compatibility; every result already passes through "
        "the IO manager.",
    )
    validation: ValidationConfig | None = None

    _file: str = PrivateAttr(default="")
    _line: int | None = PrivateAttr(default=None)
    _key_path: tuple[str | int, ...] = PrivateAttr(default=())

    @field_validator("name")
    @classmethod
    def _not_reserved(cls, v: str) -> str:
        if v in RESERVED_NODE_NAMES or v.startswith("__"):
            raise ValueError(f"node name '{v}' is reserved; choose another name")
        return _check_name(v, "node")

    @model_validator(mode="after")
    def _does_something(self) -> NodeConfig:
        if self.read is None and self.transform is None and self.write is None:
            raise ValueError("a node needs at least one of `read:`, `transform:` or `write:`")
        return self

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
        description="Events to send on: on_failure, on_success, on_start.",
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
