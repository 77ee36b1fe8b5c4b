"""An HTTP(S) API as an Odibi connection (``type: http``, Odibi v3), read with ``format: api``.

The connection holds the base URL, the headers sent with every request and the
authentication (``auth:`` with ``mode:`` bearer, basic or api_key). Secret values are
written ``${VAR}`` (``${env:VAR}`` in Odibi's spelling) and kept as written: the
variable is read where the run executes, when a request is made, so the value never
enters the loaded config, run config, metadata or stories; every message that could
hold it is redacted. A header value written ``${VAR}`` is treated as a secret too.

What a node reads (endpoint, parameters, pagination, records path, retries) is in its
``read.options``: see :mod:`odibi_dagster.api_read` (a ``${VAR}`` in its path, params or
request_body is kept as written and treated as a secret too). Nothing is written to an API.
"""

from __future__ import annotations

import base64
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, cast
from urllib.parse import urljoin, urlsplit

from pydantic import Field, field_validator

from odibi_dagster.env_refs import ENV_REF, WHOLE_ENV_REF
from odibi_dagster.errors import OdibiConnectionError, OdibiRunError
from odibi_dagster.resources.base import Location
from odibi_dagster.resources.connection import ConnectionResource, StoredFile

# auth: {mode: ...} -> the keys that mode takes (Odibi v3's HttpAuthConfig); the secret
# ones must be written ${VAR}
AUTH_KEYS: dict[str, tuple[str, ...]] = {
    "none": (),
    "bearer": ("token",),
    "basic": ("username", "password"),
    "api_key": ("api_key", "header_name", "value_template"),
}
SECRET_AUTH_KEYS = frozenset({"token", "password", "api_key"})
REQUIRED_AUTH_KEYS: dict[str, tuple[str, ...]] = {
    "bearer": ("token",),
    "basic": ("username", "password"),
}
# api_key mode: the header is X-API-Key when only `api_key` is given (Odibi's connection),
# Authorization when a `value_template` is (Odibi's config model)
DEFAULT_API_KEY_HEADER = "X-API-Key"
DEFAULT_TEMPLATE_HEADER = "Authorization"
_PLACEHOLDER = re.compile(r"\{(api_key|token)\}")
_HEADER_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")


def auth_mode(auth: Mapping[str, Any]) -> str:
    """``auth.mode``, or the mode its keys imply (Odibi's older spelling without ``mode:``:
    ``token`` is bearer, ``username``/``password`` basic, ``api_key`` an API key)."""
    mode = auth.get("mode")
    if mode:
        return str(mode)
    if "token" in auth:
        return "bearer"
    if "username" in auth or "password" in auth:
        return "basic"
    if "api_key" in auth:
        return "api_key"
    return "none"


def auth_problem(auth: Mapping[str, Any]) -> str | None:
    """Why ``auth:`` is not valid (None when it is). Never quotes a value."""
    mode = auth_mode(auth)
    if mode not in AUTH_KEYS:
        return f"auth mode '{mode}' is not supported; use one of: {', '.join(AUTH_KEYS)}"
    allowed = set(AUTH_KEYS[mode]) | {"mode"}
    extra = sorted(set(auth) - allowed)
    if extra:
        takes = ", ".join(AUTH_KEYS[mode]) or "no other key"
        return f"auth mode {mode} takes {takes}; unknown key(s): {', '.join(extra)}"
    missing = [k for k in REQUIRED_AUTH_KEYS.get(mode, ()) if not auth.get(k)]
    if missing:
        return f"auth mode {mode} needs {' and '.join(missing)}"
    for key in sorted(SECRET_AUTH_KEYS & set(auth)):
        if not WHOLE_ENV_REF.match(str(auth[key]).strip()):
            return (
                f"auth.{key} must reference an environment variable, like ${{API_TOKEN}} "
                "(or ${env:API_TOKEN}); a secret written in the file would be committed with it"
            )
    name = auth.get("header_name")
    if name is not None and not _HEADER_NAME.match(str(name)):
        return f"auth.header_name '{name}' is not a valid HTTP header name"
    if mode == "api_key":
        template = auth.get("value_template")
        if template is None:
            if not auth.get("api_key"):
                return "auth mode api_key needs api_key (or value_template)"
        elif _PLACEHOLDER.search(str(template)):
            if not auth.get("api_key"):
                return "auth.value_template holds {api_key}: give api_key: ${API_KEY} too"
        elif not ENV_REF.search(str(template)):
            return (
                "auth.value_template must reference an environment variable, like "
                "'Bearer ${API_KEY}', or hold {api_key} (with api_key: ${API_KEY}); a secret "
                "written in the file would be committed with it"
            )
    return None


def _resolve(value: str, what: str, where: str, connection: str) -> str:
    def repl(m: re.Match[str]) -> str:
        name, default = m.group(1), m.group(2)
        if name in os.environ:
            return os.environ[name]
        if default is not None:
            return default
        raise OdibiRunError(
            f"{where}: environment variable {name} ({what} of connection '{connection}') is "
            "not set in this process; export it where the run executes"
        )

    return ENV_REF.sub(repl, value)


@dataclass(frozen=True)
class HttpSettings:
    """What a request to the connection needs, as written (``${VAR}`` unresolved): what
    an http :class:`~odibi_dagster.resources.base.Location` carries to the API reader."""

    connection: str
    base_url: str
    headers: Mapping[str, str] = field(default_factory=dict)
    auth: Mapping[str, str] = field(default_factory=dict)

    def __repr__(self) -> str:  # never the headers: only references, but keep it short
        return f"HttpSettings(connection={self.connection!r}, base_url={self.base_url!r})"

    def url(self, path: str) -> str:
        """``path`` under ``base_url`` (an absolute http(s) URL is used as it is; so is a
        path that starts with a ``${VAR}``, joined once the variable is filled in)."""
        if path.startswith(("http://", "https://")) or ENV_REF.match(path):
            return path
        return urljoin(self.base_url.rstrip("/") + "/", path.lstrip("/"))

    def request_headers(self, where: str = "") -> tuple[dict[str, str], list[str]]:
        """The headers every request sends (auth included), variables filled in from the
        environment, and the values that must never be shown (every value that came from
        a variable, the Authorization value built from them)."""
        headers: dict[str, str] = {}
        secrets: list[str] = []
        for name, value in self.headers.items():
            text = str(value)
            if ENV_REF.search(text):
                text = _resolve(text, f"header {name}", where, self.connection)
                secrets.append(text)
            headers[name] = text
        auth = {k: str(v) for k, v in self.auth.items()}
        mode = auth_mode(auth)
        got = {
            k: _resolve(v, f"auth.{k}", where, self.connection) if k != "mode" else v
            for k, v in auth.items()
        }
        if mode == "bearer":
            secrets.append(got["token"])
            headers["Authorization"] = f"Bearer {got['token']}"
        elif mode == "basic":
            secrets.append(got["password"])
            pair = f"{got['username']}:{got['password']}"
            secrets.append(pair)
            headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
        elif mode == "api_key":
            key = got.get("api_key", "")
            template = got.get("value_template")
            default = DEFAULT_API_KEY_HEADER if template is None else DEFAULT_TEMPLATE_HEADER
            value = key if template is None else _PLACEHOLDER.sub(lambda _: key, template)
            secrets += [key, value]
            headers[got.get("header_name") or default] = value
        for name, value in list(headers.items()):
            if any(ord(c) < 32 or ord(c) == 127 for c in value):
                raise OdibiRunError(
                    f"{where}: header {name} of connection '{self.connection}' holds a control "
                    "character (a line break in the variable?); fix the value"
                )
            if name.lower() == "authorization" or value in secrets:
                secrets.append(value)
        return headers, [s for s in secrets if s]


def valid_base_url(v: Any) -> Any:
    parts = urlsplit(str(v))
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(
            f"base_url '{v}' is not an http(s) address; write e.g. https://api.example.com"
        )
    if "@" in parts.netloc:
        raise ValueError(
            "base_url must not hold a user name or password; use auth: {mode: basic, "
            "username: ..., password: ${API_PASSWORD}}"
        )
    return v


def valid_auth(v: Any) -> Any:
    if v is None:
        return {}
    if isinstance(v, Mapping):
        why = auth_problem(v)
        if why:
            raise ValueError(why)
        return {str(k): str(x) for k, x in v.items()}
    return v


def valid_headers(v: Any) -> Any:
    if v is None:
        return {}
    if isinstance(v, Mapping):
        for name in v:
            if not _HEADER_NAME.match(str(name)):
                raise ValueError(f"header name '{name}' is not a valid HTTP header name")
        return {str(k): str(x) for k, x in v.items()}
    return v


class HttpConnection(ConnectionResource):
    """An HTTP(S) API (``type: http``, Odibi v3): nodes read it with ``format: api``;
    ``read.path`` is the endpoint under ``base_url``.

    Example::

        HttpConnection(
            base_url="https://api.example.com/v1",
            headers={"User-Agent": "odibi-pipeline"},
            auth={"mode": "bearer", "token": "${API_TOKEN}"},
        )
    """

    yaml_type: ClassVar[str] = "http"
    secret_maps: ClassVar[tuple[str, ...]] = ("auth", "headers")

    base_url: str = Field(
        description="Odibi v3: the API's address (http:// or https://); a node's read.path "
        "is the endpoint under it."
    )
    headers: dict[str, str] = Field(
        default_factory=dict,
        description="Odibi v3: headers sent with every request; a value written ${VAR} is "
        "filled in where the run executes and treated as a secret.",
    )
    auth: dict[str, str] = Field(
        default_factory=dict,
        description="Odibi v3: mode none | bearer (token) | basic (username, password) | "
        "api_key (api_key, header_name, value_template); secrets must be written ${VAR}.",
    )

    _base_url = field_validator("base_url")(valid_base_url)
    _auth = field_validator("auth", mode="before")(valid_auth)
    _headers = field_validator("headers", mode="before")(valid_headers)

    # ------------------------------------------------------------------ the seam

    def settings(self) -> HttpSettings:
        return HttpSettings(
            self.connection_name, self.base_url, dict(self.headers), dict(self.auth)
        )

    def describe(self) -> str:
        return f"connection '{self.connection_name}' ({self.base_url})"

    def uri(self, path: str) -> str:
        """The endpoint's address (no query: parameters may hold secrets)."""
        return self.settings().url(path).split("?", 1)[0]

    def location(self, path: str) -> Location:
        url = self.settings().url(path)
        return Location(
            uri=url.split("?", 1)[0],
            fs=cast(Any, None),  # read with format: api only (checked when the YAML loads)
            fs_path=url,
            delta_uri="",
            storage_options={"http": self.settings()},
            connection=self.connection_name,
            spark_uri="",
            spark_note="an http connection is read with format: api",
        )

    def check(self) -> str:
        """One GET of ``base_url`` with the connection's headers: the API answers and does
        not refuse the credentials."""
        from odibi_dagster.api_read import probe

        try:
            status = probe(self.settings(), self.describe())
        except OdibiConnectionError:
            raise
        except OdibiRunError as exc:  # a variable not set
            raise OdibiConnectionError(str(exc).removeprefix(": ")) from None
        if status in (401, 403):
            raise OdibiConnectionError(
                f"{self.describe()}: the API refused the credentials (HTTP {status}); check "
                "auth: / headers: and the variables they name"
            )
        return f"{self.base_url} answered HTTP {status}"

    def list_files(self, path: str = "", pattern: str = "*") -> Iterator[StoredFile]:
        raise OdibiConnectionError(
            f"{self.describe()}: an API has no files to list; a new-files sensor needs a "
            "local or azure_adls connection"
        )

    def secrets(self) -> list[str]:
        return self.secrets_given()

    def secrets_given(self) -> list[str]:
        try:
            return self.settings().request_headers()[1]
        except OdibiRunError:  # a variable not set: nothing of it can be shown
            return []
