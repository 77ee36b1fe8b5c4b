"""``read.format: api`` (Odibi v3): the records of a paginated JSON API as one DataFrame.

A node reads an ``http`` connection (:mod:`odibi_dagster.resources.http`); its
``read.path`` is the endpoint and its ``read.options`` say how to page through it,
with Odibi v3's keys::

    options:
      params: {status: active}            # query parameters (GET) or body keys (POST)
      method: GET                         # or POST, with request_body:
      pagination:                         # none | offset_limit | page_number | cursor | link_header
        type: offset_limit
        offset_param: skip
        limit_param: limit
        limit: 1000
        max_pages: 100
      response:
        items_path: results               # dotted path to the records ("" = the body is the list)
        add_fields: {_fetched_at: $now}
      retry: {max_retries: 3, backoff_factor: 2.0, retry_codes: [429, 500, 502, 503, 504]}
      rate_limit: {requests_per_second: 2}
      http: {timeout_s: 30}

Nested objects are flattened into columns joined with ``_`` (``address.city`` ->
``address_city``), as Odibi does; lists stay values. A request answered 429 or 5xx (or
a network failure) is tried again, waiting what ``Retry-After`` says or a growing delay;
what still fails raises an error naming the node, the URL (query values that may be
secrets masked) and the status.

A ``${VAR}`` in ``read.path``, ``params`` or ``request_body`` is a secret (an API key as
a query parameter, a password in a body): the loader keeps it as written
(:func:`odibi_dagster.config.env.api_read_secret_paths`) and it is filled in here, when
the request is made. No message, warning, metadata or story ever holds such a value, a
secret of the connection, or the value of a parameter or body key named like a secret.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import json
import logging
import os
import re
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union
from urllib.parse import quote, quote_plus, unquote_plus, urlencode, urljoin, urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, field_validator

from odibi_dagster.env_refs import ENV_REF
from odibi_dagster.errors import OdibiConnectionError, OdibiRunError, OdibiStorageError, redact

if TYPE_CHECKING:
    import pandas as pd

    from odibi_dagster.resources.base import Location
    from odibi_dagster.resources.http import HttpSettings

_log = logging.getLogger("odibi_dagster.api")

MAX_WAIT_S = 300.0  # the longest a Retry-After or rate-limit reset is waited for
BASE_DELAY_S = 1.0  # the first backoff delay (Odibi's)
MAX_DELAY_S = 60.0  # the longest backoff delay (Odibi's)
# query parameter (and request body key) names whose values are masked in messages
SECRET_PARAM = re.compile(r"(?i)key|token|secret|passw|pwd|signature|^sig$|auth|credential|session")
QUERY_SAFE = "+:[]"  # sent unescaped in a query, as Odibi sends them (openFDA's search syntax)


# --------------------------------------------------------------------------- options


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class NoPagination(_Strict):
    """One request."""

    type: Literal["none"] = "none"


class OffsetLimitPagination(_Strict):
    """``?offset=0&limit=100``, then ``offset=100``, ... until a short or empty page."""

    type: Literal["offset_limit"]
    offset_param: str = "offset"
    limit_param: str = "limit"
    limit: int = Field(default=100, gt=0)
    start_offset: int = Field(default=0, ge=0)
    max_pages: int = Field(default=100, gt=0)
    stop_on_empty: bool = True


class PageNumberPagination(_Strict):
    """``?page=1&per_page=100``, then ``page=2``, ... until a short or empty page."""

    type: Literal["page_number"]
    page_param: str = "page"
    page_size_param: str = "per_page"
    page_size: int = Field(default=100, gt=0)
    start_page: int = 1
    max_pages: int = Field(default=100, gt=0)
    stop_on_empty: bool = True


class CursorPagination(_Strict):
    """The next page's cursor is at ``cursor_path`` of a response, sent as ``cursor_param``."""

    type: Literal["cursor"]
    cursor_param: str = "cursor"
    cursor_path: str = "next_cursor"
    max_pages: int = Field(default=100, gt=0)
    stop_when_cursor_missing: bool = True


class LinkHeaderPagination(_Strict):
    """The next page's URL is the ``Link`` header's ``rel="next"`` (RFC 8288, GitHub style)."""

    type: Literal["link_header"]
    link_rel: str = "next"
    max_pages: int = Field(default=100, gt=0)


def _pagination_tag(v: Any) -> str:
    if isinstance(v, Mapping):
        return str(v.get("type", "none"))
    return str(getattr(v, "type", "none"))


PAGINATION_MODELS: dict[str, type[_Strict]] = {
    "none": NoPagination,
    "offset_limit": OffsetLimitPagination,
    "page_number": PageNumberPagination,
    "cursor": CursorPagination,
    "link_header": LinkHeaderPagination,
}
PAGINATION_TYPES = tuple(PAGINATION_MODELS)
Pagination: Any = Annotated[
    Union[tuple(Annotated[m, Tag(t)] for t, m in PAGINATION_MODELS.items())],  # noqa: UP007
    Discriminator(
        _pagination_tag,
        custom_error_type="unknown_pagination",
        custom_error_message="pagination type must be one of: none, offset_limit, "
        "page_number, cursor, link_header",
    ),
]


class ResponseOptions(_Strict):
    items_path: str = Field(
        default="", description="Dotted path to the list of records; empty: the body is it."
    )
    add_fields: dict[str, Any] = Field(
        default_factory=dict,
        description="Columns added to every record: constants, or $now, $today, $yesterday, "
        "$7_days_ago, $start_of_month, ... (add _compact for YYYYMMDD).",
    )
    wrap_single: bool = Field(
        default=False, description="A single JSON object at items_path is one record."
    )
    array_row_fields: list[str] | None = Field(
        default=None, description="Records that are lists get these field names, in order."
    )
    dict_to_list: bool = Field(
        default=False,
        description="An object at items_path becomes one record per key (_key, _value).",
    )

    @field_validator("items_path", mode="before")
    @classmethod
    def _none_is_root(cls, v: Any) -> Any:
        return "" if v is None else v


class RetryOptions(_Strict):
    max_retries: int = Field(
        default=3, ge=1, le=20, description="Attempts per request, the first included (Odibi)."
    )
    backoff_factor: float = Field(default=2.0, ge=1.0, le=10.0)
    retry_codes: list[int] = Field(default_factory=lambda: [429, 500, 502, 503, 504])


class RateLimitOptions(_Strict):
    type: Literal["auto", "fixed"] | None = None
    requests_per_second: float | None = Field(default=None, gt=0)


class BackoffOptions(_Strict):
    base_s: float = Field(default=BASE_DELAY_S, ge=0, le=MAX_WAIT_S)
    max_s: float = Field(default=MAX_DELAY_S, ge=0, le=MAX_WAIT_S)
    exponential_base: float = Field(default=2.0, ge=1.0, le=10.0)


class HttpRetryOptions(_Strict):
    """Odibi's other spelling of the retries, under ``http:``."""

    max_attempts: int = Field(default=3, ge=1, le=20)
    backoff: BackoffOptions = Field(default_factory=BackoffOptions)
    retry_on_status: list[int] = Field(default_factory=lambda: [429, 500, 502, 503, 504])


class HttpOptions(_Strict):
    timeout_s: float = Field(default=30.0, gt=0, le=600)
    retries: HttpRetryOptions | None = None
    rate_limit: RateLimitOptions | None = None


@dataclass(frozen=True)
class RetryPolicy:
    """How often and after how long a request is tried again."""

    attempts: int
    base_s: float
    max_s: float
    factor: float
    codes: frozenset[int]

    def delay(self, attempt: int) -> float:
        """The wait after failed attempt ``attempt`` (1-based) when no Retry-After says."""
        return float(min(self.base_s * self.factor ** (attempt - 1), self.max_s))


class ApiOptions(_Strict):
    """``read.options`` of a ``format: api`` read."""

    params: dict[str, Any] = Field(default_factory=dict)
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "GET"
    request_body: dict[str, Any] | None = None
    pagination: Pagination = Field(default_factory=NoPagination)
    response: ResponseOptions = Field(default_factory=ResponseOptions)
    retry: RetryOptions = Field(default_factory=RetryOptions)
    rate_limit: RateLimitOptions = Field(default_factory=RateLimitOptions)
    http: HttpOptions = Field(default_factory=HttpOptions)

    def policy(self) -> RetryPolicy:
        """The retry policy: ``retry:`` (Odibi's current spelling) over ``http.retries:``
        (its earlier one), over the defaults (3 attempts, 1s doubling up to 60s)."""
        old = self.http.retries or HttpRetryOptions()
        given = "retry" in self.model_fields_set
        return RetryPolicy(
            attempts=self.retry.max_retries if given else old.max_attempts,
            base_s=old.backoff.base_s,
            max_s=old.backoff.max_s,
            factor=self.retry.backoff_factor if given else old.backoff.exponential_base,
            codes=frozenset(self.retry.retry_codes if given else old.retry_on_status),
        )

    def requests_per_second(self) -> float | None:
        """At most this many requests a second (``rate_limit:`` or ``http.rate_limit:``)."""
        for limit in (self.rate_limit, self.http.rate_limit):
            if limit is not None and limit.requests_per_second and limit.type != "auto":
                return limit.requests_per_second
        return None

    @field_validator("method", mode="before")
    @classmethod
    def _upper(cls, v: Any) -> Any:
        return v.upper() if isinstance(v, str) else v

    @field_validator("params", "response", "retry", "rate_limit", "http", mode="before")
    @classmethod
    def _empty(cls, v: Any) -> Any:
        return {} if v is None else v


def api_options(options: Mapping[str, Any] | None, where: str = "") -> ApiOptions:
    """``read.options`` as :class:`ApiOptions` (the loader has checked them already)."""
    from pydantic import ValidationError

    try:
        return ApiOptions.model_validate(dict(options or {}))
    except ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(str(p) for p in first["loc"])
        raise OdibiRunError(f"{where}: read.options.{key}: {first['msg']}") from None


# --------------------------------------------------------------------------- dates


def _date_shortcuts(now: dt.datetime) -> dict[str, str]:
    """Odibi's ``$`` date shortcuts of add_fields and params, longest name first."""
    today = now.date()
    days = {
        "today": today,
        "date": today,
        "yesterday": today - dt.timedelta(days=1),
        "7_days_ago": today - dt.timedelta(days=7),
        "30_days_ago": today - dt.timedelta(days=30),
        "90_days_ago": today - dt.timedelta(days=90),
        "start_of_week": today - dt.timedelta(days=today.weekday()),
        "start_of_month": today.replace(day=1),
        "start_of_year": today.replace(month=1, day=1),
    }
    out = {"$now": now.isoformat()}
    for name, day in days.items():
        out[f"${name}"] = day.isoformat()
        out[f"${name}_compact"] = day.strftime("%Y%m%d")
    return dict(sorted(out.items(), key=lambda kv: -len(kv[0])))


# {expression} or {expression:format}, e.g. {-30d:%Y%m%d} (not ${...})
_EXPRESSION = re.compile(r"(?<!\$)\{([^{}:]+)(?::([^{}]+))?\}")
_DAYS = re.compile(r"^[+-]?\d+d$")


def _expression(m: re.Match[str], now: dt.datetime) -> str:
    expr, fmt = m.group(1).strip(), m.group(2)
    today = dt.datetime.combine(now.date(), dt.time.min)
    named = {
        "today": today,
        "date": today,
        "yesterday": today - dt.timedelta(days=1),
        "start_of_week": today - dt.timedelta(days=today.weekday()),
        "start_of_month": today.replace(day=1),
        "start_of_year": today.replace(month=1, day=1),
    }
    if expr == "now":
        return now.strftime(fmt or "%Y-%m-%dT%H:%M:%S%z")
    if expr in named:
        return named[expr].strftime(fmt or "%Y-%m-%d")
    if _DAYS.match(expr):
        return (today + dt.timedelta(days=int(expr[:-1]))).strftime(fmt or "%Y-%m-%d")
    return m.group(0)  # not a date expression: kept as written


def fill_dates(value: Any, shortcuts: Mapping[str, str], now: dt.datetime) -> Any:
    """Odibi's date variables of params, request_body and add_fields filled in:
    ``$today``-style shortcuts and ``{-7d:%Y%m%d}``-style expressions."""
    if isinstance(value, str):
        if "$" in value:
            for name, text in shortcuts.items():
                value = value.replace(name, text)
        if "{" in value:
            value = _EXPRESSION.sub(lambda m: _expression(m, now), value)
        return value
    if isinstance(value, dict):
        return {k: fill_dates(v, shortcuts, now) for k, v in value.items()}
    if isinstance(value, list):
        return [fill_dates(v, shortcuts, now) for v in value]
    return value


# --------------------------------------------------------------------------- requests


@dataclass
class FetchStats:
    """What a read did: pages read, requests made (retries included), records."""

    pages: int = 0
    requests: int = 0
    records: int = 0
    stopped_at_max_pages: bool = False

    def metadata(self) -> dict[str, Any]:
        """What a node's materialization shows of its API read."""
        meta: dict[str, Any] = {
            "odibi/api_pages": self.pages,
            "odibi/api_requests": self.requests,
            "odibi/api_records": self.records,
        }
        if self.stopped_at_max_pages:
            meta["odibi/api_stopped_at_max_pages"] = True
        return meta

    def label(self) -> str:
        """``3 pages, 4 requests``: beside the read in the run story."""
        more = ", stopped at max_pages" if self.stopped_at_max_pages else ""
        return f"{self.pages} page(s), {self.requests} request(s){more}"


# what the last api read of this thread (context) did, for its node's metadata and story
_LAST_FETCH: ContextVar[FetchStats | None] = ContextVar("odibi_last_api_fetch", default=None)


def last_fetch() -> FetchStats | None:
    """What the last ``format: api`` read in this context did (None: none yet)."""
    return _LAST_FETCH.get()


@dataclass
class _Request:
    url: str
    params: dict[str, Any] = field(default_factory=dict)
    body: dict[str, Any] | None = None


@dataclass
class _Response:
    status: int
    headers: dict[str, str]
    body: Any


def shown_url(url: str, params: Mapping[str, Any] | None, secrets: list[str]) -> str:
    """``url`` with ``params`` as it is requested, for messages: no user info, and the
    value of every query parameter that may be a secret (by its name, or because it is a
    value of the connection's secrets) masked."""
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)[-1]
    pairs: list[tuple[str, str]] = []
    if parts.query:
        for item in parts.query.split("&"):
            k, _, v = item.partition("=")
            pairs.append((k, v))
    for k, v in (params or {}).items():
        pairs.append((str(k), str(v)))
    query = "&".join(
        f"{k}={'***' if SECRET_PARAM.search(k) or v in secrets else v}" for k, v in pairs
    )
    return redact(urlunsplit((parts.scheme, netloc, parts.path, query, "")), secrets)


def secret_forms(value: Any) -> list[str]:
    """A secret and the ways a request, or an answer echoing it, may spell it: as written,
    URL-encoded in a query, escaped in a JSON body."""
    text = str(value)
    if not text:
        return []
    forms = {
        text,
        quote(text, safe=""),
        quote_plus(text),
        quote_plus(text, safe=QUERY_SAFE),
        json.dumps(text)[1:-1],
    }
    return sorted(forms)


def named_secrets(value: Any) -> list[str]:
    """The values under keys named like a secret (``api_key``, ``password``, ...), in a
    mapping of parameters or a request body, at any depth."""
    out: list[str] = []
    if isinstance(value, Mapping):
        for k, v in value.items():
            if SECRET_PARAM.search(str(k)) and not isinstance(v, (Mapping, list)):
                out += secret_forms(v) if v not in (None, "") else []
            else:
                out += named_secrets(v)
    elif isinstance(value, list):
        for v in value:
            out += named_secrets(v)
    return out


def fill_secret_refs(value: Any, what: str, where: str, secrets: list[str]) -> Any:
    """``value`` with its ``${VAR}`` references filled in from the environment where the
    run executes; every value filled in joins ``secrets`` (in the spellings of
    :func:`secret_forms`)."""
    if isinstance(value, dict):
        return {k: fill_secret_refs(v, f"{what}.{k}", where, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [fill_secret_refs(v, f"{what}[{i}]", where, secrets) for i, v in enumerate(value)]
    if not isinstance(value, str) or not ENV_REF.search(value):
        return value

    def repl(m: re.Match[str]) -> str:
        name, default = m.group(1), m.group(2)
        got = os.environ.get(name, default)
        if got is None:
            raise OdibiRunError(
                f"{where}: environment variable {name} ({what}) is not set in this process; "
                "export it where the run executes"
            )
        secrets.extend(secret_forms(got))
        return got

    return ENV_REF.sub(repl, value)


def _query_secrets(url: str) -> list[str]:
    """The values of the query parameters of ``url`` named like a secret."""
    out: list[str] = []
    for item in urlsplit(url).query.split("&"):
        k, _, v = item.partition("=")
        if v and SECRET_PARAM.search(unquote_plus(k)):
            out += secret_forms(v) + secret_forms(unquote_plus(v))
    return out


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme, parts.netloc.rsplit("@", 1)[-1].lower()


class _SameOriginRedirects(urllib.request.HTTPRedirectHandler):
    """Follow redirects, but send the connection's headers only to its own origin."""

    def __init__(self, private: list[str]) -> None:
        self.private = private

    def redirect_request(
        self, req: Any, fp: Any, code: int, msg: str, headers: Any, newurl: str
    ) -> Any:
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None and _origin(newurl) != _origin(req.full_url):
            for name in self.private:
                new.remove_header(name.capitalize())
        return new


def _retry_after(headers: Mapping[str, str]) -> float | None:
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, min(float(value), MAX_WAIT_S))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    return max(0.0, min((when - dt.datetime.now(dt.timezone.utc)).total_seconds(), MAX_WAIT_S))


class _Client:
    """Requests to one connection with its headers, retries and rate limit."""

    def __init__(
        self, settings: HttpSettings, options: ApiOptions, where: str, stats: FetchStats
    ) -> None:
        self.settings = settings
        self.options = options
        self.where = where
        self.stats = stats
        self.headers, self.secrets = settings.request_headers(where)
        private = [n for n, v in self.headers.items() if v in self.secrets]
        self.opener = urllib.request.build_opener(_SameOriginRedirects(private))
        self._last: float | None = None

    def shown(self, req: _Request) -> str:
        return shown_url(req.url, req.params, self.secrets)

    def _pace(self, headers: Mapping[str, str] | None = None) -> None:
        rps = self.options.requests_per_second()
        if rps and self._last is not None:
            wait = 1.0 / rps - (time.monotonic() - self._last)
            if wait > 0:
                time.sleep(wait)
        if headers and headers.get("x-ratelimit-remaining") == "0":
            try:
                wait = float(headers.get("x-ratelimit-reset", "")) - time.time()
            except ValueError:
                wait = 0.0
            if wait > 0:
                _log.info("%s: rate limit reached; waiting %.1fs", self.where, wait)
                time.sleep(min(wait, MAX_WAIT_S))

    def send(self, req: _Request) -> _Response:
        retry = self.options.policy()
        url = req.url
        if req.params:
            url += ("&" if "?" in url else "?") + urlencode(req.params, doseq=True, safe=QUERY_SAFE)
        data = None
        headers = {"Accept": "application/json", **self.headers}
        if req.body is not None:
            data = json.dumps(req.body).encode()
            headers.setdefault("Content-Type", "application/json")
        attempts = retry.attempts
        for attempt in range(1, attempts + 1):
            self._pace()
            self.stats.requests += 1
            self._last = time.monotonic()
            request = urllib.request.Request(
                url, data=data, headers=headers, method=self.options.method
            )
            status: int | None = None
            resp_headers: dict[str, str] = {}
            reason = ""
            try:
                with self.opener.open(request, timeout=self.options.http.timeout_s) as resp:
                    raw = resp.read()
                    resp_headers = {k.lower(): v for k, v in resp.headers.items()}
                    return _Response(resp.status, resp_headers, self._json(raw, req, resp_headers))
            except urllib.error.HTTPError as exc:
                status = exc.code
                resp_headers = {k.lower(): v for k, v in (exc.headers or {}).items()}
                try:
                    reason = exc.read()[:300].decode("utf-8", "replace")
                except Exception:
                    reason = ""
                exc.close()
                if status not in retry.codes:
                    raise self._status_error(req, status, reason, attempt) from None
            except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
                inner = getattr(exc, "reason", exc)
                reason = f"{type(inner).__name__}: {inner}"
            if attempt == attempts:
                if status is not None:
                    raise self._status_error(req, status, reason, attempt) from None
                raise OdibiStorageError(
                    f"{self.where}: {self.options.method} {self.shown(req)} failed after "
                    f"{attempt} attempt(s): {redact(reason, self.secrets)}; check that "
                    f"{self.settings.base_url} is reachable from where the run executes"
                ) from None
            wait = _retry_after(resp_headers)
            if wait is None:
                wait = retry.delay(attempt)
            _log.warning(
                "%s: %s %s: %s; attempt %d of %d, trying again in %.1fs",
                self.where,
                self.options.method,
                self.shown(req),
                f"HTTP {status}" if status is not None else redact(reason, self.secrets),
                attempt,
                attempts,
                wait,
            )
            time.sleep(wait)
        raise AssertionError("unreachable")  # pragma: no cover

    def _json(self, raw: bytes, req: _Request, headers: Mapping[str, str]) -> Any:
        if not raw.strip():
            return {}
        try:
            return json.loads(raw)
        except ValueError:
            kind = headers.get("content-type", "no content type")
            raise OdibiRunError(
                f"{self.where}: {self.options.method} {self.shown(req)} did not answer JSON "
                f"({kind}); format: api reads JSON APIs"
            ) from None

    def _status_error(self, req: _Request, status: int, body: str, attempts: int) -> OdibiRunError:
        hint = {
            401: f"the API refused the credentials: check auth: / headers: of connection "
            f"'{self.settings.connection}' and the variables they name",
            403: f"the API refused access: check the credentials of connection "
            f"'{self.settings.connection}' and what they may read",
            404: "no such endpoint: check read.path and the connection's base_url",
            429: "the API kept limiting the rate: raise retry.max_retries or set "
            "rate_limit.requests_per_second",
        }.get(status, "")
        text = " ".join(body.split())[:200]
        msg = f"{self.where}: {self.options.method} {self.shown(req)} answered HTTP {status}"
        if attempts > 1:
            msg += f" after {attempts} attempts"
        if text:
            msg += f" ({redact(text, self.secrets)})"
        if hint:
            msg += f"; {hint}"
        cls = OdibiStorageError if status >= 500 or status == 429 else OdibiRunError
        return cls(msg)


def probe(settings: HttpSettings, describe: str) -> int:
    """The status of one GET of the connection's base_url (what ``check`` reports)."""
    headers, secrets = settings.request_headers(describe)
    opener = urllib.request.build_opener(
        _SameOriginRedirects([n for n, v in headers.items() if v in secrets])
    )
    request = urllib.request.Request(settings.base_url, headers=headers, method="GET")
    try:
        with opener.open(request, timeout=10) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        exc.close()
        return int(exc.code)
    except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
        inner = getattr(exc, "reason", exc)
        raise OdibiConnectionError(
            f"{describe}: not reachable ({redact(f'{type(inner).__name__}: {inner}', secrets)}); "
            "check base_url and the network"
        ) from None


# --------------------------------------------------------------------------- records


_STEP = re.compile(r"([^.\[\]]+)|\[(-?\d+)\]")


def path_steps(path: str) -> list[str | int]:
    """``series[0].data`` -> ``["series", 0, "data"]``; ``[1]`` -> ``[1]``."""
    return [int(i) if i else k for k, i in _STEP.findall(path)]


def _shown_step(step: str | int) -> str:
    return f"[{step}]" if isinstance(step, int) else f"'{step}'"


def records_at(body: Any, response: ResponseOptions, where: str, shown: str) -> list[Any]:
    """The records of a response body: what ``items_path`` (dotted, with ``[n]`` list
    indexes) points to, shaped as ``response`` says."""
    path = response.items_path
    obj = body
    walked = ""
    for step in path_steps(path):
        by_index = isinstance(step, int) and isinstance(obj, list) and -len(obj) <= step < len(obj)
        by_key = isinstance(step, str) and isinstance(obj, dict) and step in obj
        if by_index or by_key:
            obj = obj[step]
        else:
            at = f" under '{walked}'" if walked else ""
            if isinstance(obj, dict):
                there = f"keys there: {', '.join(sorted(map(str, obj))[:20]) or 'none'}"
            elif isinstance(obj, list):
                there = f"the value there is a list of {len(obj)}"
            else:
                there = f"the value there is a JSON {type(obj).__name__}"
            what = "index" if isinstance(step, int) else "key"
            raise OdibiRunError(
                f"{where}: read.options.response.items_path '{path}': {what} "
                f"{_shown_step(step)} is not in the response{at} of {shown}; {there}"
            )
        walked += f"[{step}]" if isinstance(step, int) else (f".{step}" if walked else step)
    if obj is None:
        return []
    if isinstance(obj, dict):
        if response.dict_to_list:
            return [
                {"_key": k, **v} if isinstance(v, dict) else {"_key": k, "_value": v}
                for k, v in obj.items()
            ]
        if (path and obj) or response.wrap_single:
            return [obj]
        if not obj:
            return []
        raise OdibiRunError(
            f"{where}: the response of {shown} is a JSON object, not a list of records; set "
            "read.options.response.items_path to the key that holds them (keys: "
            f"{', '.join(sorted(map(str, obj))[:20])}), or wrap_single: true for one record"
        )
    if not isinstance(obj, list):
        raise OdibiRunError(
            f"{where}: read.options.response.items_path '{path}' is a JSON "
            f"{type(obj).__name__} in the response of {shown}, not a list of records"
        )
    fields = response.array_row_fields
    if fields:
        return [dict(zip(fields, r, strict=False)) if isinstance(r, list) else r for r in obj]
    return obj


def _value_at(body: Any, path: str) -> Any:
    obj = body
    for key in path.split("."):
        if not isinstance(obj, dict) or key not in obj:
            return None
        obj = obj[key]
    return obj


def _next_link(header: str, rel: str) -> str | None:
    for part in header.split(","):
        m = re.match(r"\s*<([^>]*)>\s*;(.*)", part)
        if not m:
            continue
        for attr in m.group(2).split(";"):
            name, _, value = attr.strip().partition("=")
            if name.strip().lower() == "rel" and rel in value.strip().strip('"').split():
                return m.group(1)
    return None


# --------------------------------------------------------------------------- the read


def fetch_records(
    settings: HttpSettings,
    path: str,
    options: ApiOptions,
    where: str,
    now: dt.datetime | None = None,
) -> tuple[list[Any], FetchStats]:
    """Every record of every page, and what it took."""
    when = now or dt.datetime.now(dt.timezone.utc)
    shortcuts = _date_shortcuts(when)
    stats = FetchStats()
    client = _Client(settings, options, where, stats)
    # every value from a ${VAR} (kept as written until now), and every parameter or body
    # value named like a secret (api_key=...), is masked in every message, even where an
    # answer echoes it
    secrets = client.secrets
    url = settings.url(fill_secret_refs(path, "read.path", where, secrets))
    params = fill_secret_refs(dict(options.params), "read.options.params", where, secrets)
    params = fill_dates(params, shortcuts, when)
    body = fill_secret_refs(options.request_body, "read.options.request_body", where, secrets)
    body = fill_dates(body, shortcuts, when)
    secrets += named_secrets(params) + named_secrets(body) + _query_secrets(url)
    in_body = options.method in ("POST", "PUT", "PATCH") and body is not None
    if in_body:  # parameters and pagination go into the JSON body (as Odibi does)
        body, params = {**(body or {}), **params}, {}
    page: BaseModel = options.pagination

    def with_(req: _Request, values: dict[str, Any]) -> _Request:
        if in_body:
            return _Request(req.url, dict(req.params), {**(req.body or {}), **values})
        return _Request(req.url, {**req.params, **values}, req.body)

    first = _Request(url, params, body)
    if _origin(first.url) != _origin(settings.base_url):
        raise OdibiRunError(
            f"{where}: read.path {shown_url(first.url, {}, client.secrets)} is on another "
            f"site than connection '{settings.connection}' ({settings.base_url}); its "
            "credentials are sent only there: declare a connection for that site"
        )
    if isinstance(page, OffsetLimitPagination):
        offset = page.start_offset
        first = with_(first, {page.offset_param: offset, page.limit_param: page.limit})
    elif isinstance(page, PageNumberPagination):
        number = page.start_page
        first = with_(first, {page.page_param: number, page.page_size_param: page.page_size})
    req: _Request | None = first
    records: list[Any] = []
    extra = fill_dates(options.response.add_fields, shortcuts, when)
    while req is not None:
        resp = client.send(req)
        stats.pages += 1
        items = records_at(resp.body, options.response, where, client.shown(req))
        for item in items:
            rec = dict(item) if isinstance(item, dict) else {"value": item}
            rec.update(extra)
            records.append(rec)
        nxt: _Request | None = None
        if isinstance(page, OffsetLimitPagination):
            if len(items) >= page.limit:  # a short or empty page is the last
                offset += page.limit
                nxt = with_(req, {page.offset_param: offset})
        elif isinstance(page, PageNumberPagination):
            if len(items) >= page.page_size:
                number += 1
                nxt = with_(req, {page.page_param: number})
        elif isinstance(page, CursorPagination):
            cursor = _value_at(resp.body, page.cursor_path)
            sent = (req.body if in_body else req.params) or {}
            if cursor not in (None, "") and str(cursor) != str(sent.get(page.cursor_param)):
                nxt = with_(req, {page.cursor_param: cursor})
        elif isinstance(page, LinkHeaderPagination):
            link = _next_link(resp.headers.get("link", ""), page.link_rel)
            if link:
                url = urljoin(req.url, link)
                if _origin(url) != _origin(settings.base_url):
                    raise OdibiRunError(
                        f"{where}: the next page's link of {client.shown(req)} points to "
                        f"another site ({_origin(url)[1]}); it is not followed with the "
                        f"credentials of connection '{settings.connection}'"
                    )
                nxt = _Request(url, {}, req.body)
        if nxt is not None and stats.pages >= getattr(page, "max_pages", 1):
            stats.stopped_at_max_pages = True
            _log.warning(
                "%s: stopped after max_pages=%d pages; more pages are there",
                where,
                stats.pages,
            )
            nxt = None
        if nxt is not None:
            client._pace(resp.headers)
        req = nxt
    stats.records = len(records)
    return records, stats


def frame_of(records: list[Any]) -> pd.DataFrame:
    """The records as one DataFrame, nested objects flattened into ``a_b`` columns."""
    import pandas as pd

    if not records:
        return pd.DataFrame()
    return pd.json_normalize(records, sep="_")


def spark_frame(spark: Any, pdf: pd.DataFrame, where: str) -> Any:
    """The records of an api read as a Spark DataFrame (the same columns and values)."""
    if pdf.columns.empty:
        from pyspark.sql.types import StructType

        return spark.createDataFrame([], StructType([]))
    # a column of missing values only has no type Spark can infer: read it as text
    pdf = pdf.astype({c: "string" for c in pdf.columns if pdf[c].isna().all()})
    try:
        return spark.createDataFrame(pdf)
    except Exception as exc:
        raise OdibiRunError(
            f"{where}: the API's records do not make a Spark DataFrame ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0][:300] if str(exc) else ''}); records whose fields "
            "change type between records need a transform step on the pandas engine"
        ) from None


def read_api(
    loc: Location, options: Mapping[str, Any] | None, where: str = ""
) -> tuple[pd.DataFrame, FetchStats]:
    """What a ``format: api`` read of ``loc`` (on an http connection) returns."""
    from odibi_dagster.resources.http import HttpSettings

    settings = loc.storage_options.get("http")
    if not isinstance(settings, HttpSettings):
        raise OdibiRunError(
            f"{where}: format: api reads an http connection; connection '{loc.connection}' "
            "is not one"
        )
    opts = api_options(options, where)
    _LAST_FETCH.set(None)
    records, stats = fetch_records(settings, loc.fs_path, opts, where)
    _LAST_FETCH.set(stats)
    return frame_of(records), stats
