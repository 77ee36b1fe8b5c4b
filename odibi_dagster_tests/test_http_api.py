"""Odibi v3 ``type: http`` connections read with ``format: api``, against a real HTTP
server on localhost (http.server in a thread): pagination modes, records paths, nested
records flattened, retries on 429/5xx honouring Retry-After, the auth header checked on
every request, clear errors, and the secret kept out of errors, metadata, run config and
stories."""

from __future__ import annotations

import base64
import json
import textwrap
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pandas as pd
import pytest

from odibi_dagster import OdibiConfigError, load_project
from odibi_dagster.api_read import (
    ApiOptions,
    ResponseOptions,
    fetch_records,
    frame_of,
    records_at,
    shown_url,
)
from odibi_dagster.cli import main
from odibi_dagster.engines.pandas import PandasEngine
from odibi_dagster.errors import OdibiRunError, OdibiStorageError
from odibi_dagster.resources.http import HttpConnection
from odibi_dagster_tests.support.runs import failure_text, run_job

TOKEN = "tok-Sup3rS3cret-8412"
TOKEN_VAR = "ODIBI_TEST_API_TOKEN"
KEY = "key-An0therS3cret-77"
KEY_VAR = "ODIBI_TEST_API_KEY"

RECORDS = [
    {
        "id": i,
        "name": f"item {i}",
        "address": {"city": ["Lagos", "Oslo", "Lima"][i % 3], "geo": {"lat": i / 10}},
        "tags": ["a", "b"][: i % 3],
    }
    for i in range(1, 26)
]


@dataclass
class Api:
    """A small JSON API: every request must carry the expected auth header; some
    endpoints answer 429/500 a few times first."""

    url: str = ""
    auth: tuple[str, str] = ("Authorization", f"Bearer {TOKEN}")
    requests: list[tuple[str, dict[str, list[str]], dict[str, str]]] = field(default_factory=list)
    failures: dict[str, list[tuple[int, str | None]]] = field(default_factory=dict)
    bodies: list[str] = field(default_factory=list)

    def count(self, path: str) -> int:
        return sum(1 for p, _, _ in self.requests if p == path)

    def answer(self, path: str, q: dict[str, list[str]]) -> tuple[int, Any, dict[str, str]]:
        def one(name: str, default: int) -> int:
            return int(q.get(name, [default])[0])

        if path in ("/v1/offset", "/food/enforcement.json"):  # {"results": [...]}, skip/limit
            skip, limit = one("skip", 0), one("limit", 10)
            return 200, {"meta": {"total": 25}, "results": RECORDS[skip : skip + limit]}, {}
        if path == "/v1/pages":  # {"data": {"items": [...]}}, page/per_page from 1
            page, size = one("page", 1), one("per_page", 10)
            items = RECORDS[(page - 1) * size : page * size]
            return 200, {"data": {"items": items}}, {}
        if path == "/v1/cursor":  # cursor in pagination.next_cursor, 10 per page
            start = one("after", 0)
            items = RECORDS[start : start + 10]
            more = start + 10 < len(RECORDS)
            nxt = {"next_cursor": str(start + 10) if more else None}
            return 200, {"data": items, "pagination": nxt}, {}
        if path == "/v1/link":  # the list at the root, the next page in a Link header
            page = one("page", 1)
            items = RECORDS[(page - 1) * 10 : page * 10]
            headers = {}
            if page * 10 < len(RECORDS):
                headers["Link"] = (
                    f'<{self.url}/v1/link?page={page + 1}>; rel="next", '
                    f'<{self.url}/v1/link?page=3>; rel="last"'
                )
            return 200, items, headers
        if path == "/v1/one":
            return 200, {"results": RECORDS[:3]}, {}
        if path == "/v1/slow":  # answers later than a client with a short timeout waits
            time.sleep(0.5)
            return 200, [{"id": 1}], {}
        if path == "/v1/echo":  # what the request sent, as one record
            return 200, [{k: v[0] for k, v in q.items()}], {}
        return 404, {"error": "no such endpoint"}, {}


class _Handler(BaseHTTPRequestHandler):
    api: Api

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        q = parse_qs(parts.query)
        api = self.server.api  # type: ignore[attr-defined]
        api.requests.append((parts.path, q, dict(self.headers.items())))
        name, want = api.auth
        if self.headers.get(name) != want:
            return self._send(401, {"error": "unauthorized"}, {})
        queue = api.failures.get(parts.path)
        if queue:
            status, retry_after = queue.pop(0)
            headers = {"Retry-After": retry_after} if retry_after is not None else {}
            return self._send(
                status,
                {"error": "try later", "echo": self.headers.get(name), "path": self.path},
                headers,
            )
        status, body, headers = api.answer(parts.path, q)
        self._send(status, body, headers)

    def do_POST(self) -> None:
        api = self.server.api  # type: ignore[attr-defined]
        raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        api.bodies.append(raw.decode())
        api.requests.append((urlsplit(self.path).path, {}, dict(self.headers.items())))
        if self.headers.get(api.auth[0]) != api.auth[1]:
            return self._send(401, {"error": "unauthorized"}, {})
        queue = api.failures.get(urlsplit(self.path).path)
        if queue:  # the answer echoes what was sent, as some APIs do
            status, retry_after = queue.pop(0)
            headers = {"Retry-After": retry_after} if retry_after is not None else {}
            return self._send(status, {"error": "try later", "sent": raw.decode()}, headers)
        body = json.loads(raw)
        start, rows = body["start"], body["rows"]
        self._send(200, {"result": RECORDS[:5][start : start + rows]}, {})

    def _send(self, status: int, body: Any, headers: dict[str, str]) -> None:
        raw = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(raw)


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> Iterator[Api]:
    monkeypatch.setenv(TOKEN_VAR, TOKEN)
    monkeypatch.setenv(KEY_VAR, KEY)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    state = Api(url=f"http://127.0.0.1:{server.server_address[1]}")
    server.api = state  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def bearer(api: Api, **kw: Any) -> HttpConnection:
    return HttpConnection(
        connection_name="svc",
        base_url=api.url + "/v1",
        headers={"User-Agent": "odibi-test"},
        auth={"mode": "bearer", "token": f"${{{TOKEN_VAR}}}"},
        **kw,
    )


def read(conn: HttpConnection, path: str, options: dict[str, Any]) -> pd.DataFrame:
    return PandasEngine().read(conn.location(path), "api", options, where="node 'n' (p.yaml:3)")


# --------------------------------------------------------------------------- pagination


@pytest.mark.parametrize(
    ("path", "options", "pages"),
    [
        (
            "offset",
            {
                "pagination": {
                    "type": "offset_limit",
                    "offset_param": "skip",
                    "limit_param": "limit",
                    "limit": 10,
                },
                "response": {"items_path": "results"},
            },
            3,
        ),
        (
            "pages",
            {
                "pagination": {"type": "page_number", "page_size": 10},
                "response": {"items_path": "data.items"},
            },
            3,
        ),
        (
            "cursor",
            {
                "pagination": {
                    "type": "cursor",
                    "cursor_param": "after",
                    "cursor_path": "pagination.next_cursor",
                },
                "response": {"items_path": "data"},
            },
            3,
        ),
        ("link", {"pagination": {"type": "link_header"}, "response": {"items_path": ""}}, 3),
    ],
)
def test_each_pagination_mode_reads_every_record_flattened(
    api: Api, path: str, options: dict[str, Any], pages: int
) -> None:
    df = read(bearer(api), path, options)
    assert list(df["id"]) == list(range(1, 26))
    assert list(df["address_city"][:3]) == ["Oslo", "Lima", "Lagos"]
    assert df["address_geo_lat"].iloc[9] == pytest.approx(1.0)
    assert df["tags"].iloc[1] == ["a", "b"]  # lists stay values
    assert api.count(f"/v1/{path}") == pages
    # every request carried the token, and nothing else of it was sent
    assert all(h.get("Authorization") == f"Bearer {TOKEN}" for _, _, h in api.requests)
    assert all(h.get("User-Agent") == "odibi-test" for _, _, h in api.requests)


def test_offset_limit_sends_odibis_parameters_and_stops_on_a_short_page(api: Api) -> None:
    df = read(
        bearer(api),
        "/offset",
        {
            "params": {"status": "active"},
            "pagination": {"type": "offset_limit", "offset_param": "skip", "limit": 12},
            "response": {"items_path": "results", "add_fields": {"_src": "fda", "_day": "$today"}},
        },
    )
    sent = [(q["skip"][0], q["limit"][0], q["status"][0]) for _, q, _ in api.requests]
    assert sent == [("0", "12", "active"), ("12", "12", "active"), ("24", "12", "active")]
    assert len(df) == 25 and set(df["_src"]) == {"fda"}
    assert df["_day"].iloc[0] == pd.Timestamp.now(tz="UTC").date().isoformat()


def test_max_pages_stops_the_read(api: Api) -> None:
    df = read(
        bearer(api),
        "pages",
        {
            "pagination": {"type": "page_number", "page_size": 5, "max_pages": 2},
            "response": {"items_path": "data.items"},
        },
    )
    assert list(df["id"]) == list(range(1, 11))
    assert api.count("/v1/pages") == 2


def test_no_pagination_is_one_request(api: Api) -> None:
    df = read(bearer(api), "one", {"response": {"items_path": "results"}})
    assert list(df["id"]) == [1, 2, 3] and api.count("/v1/one") == 1


# --------------------------------------------------------------------------- auth


def test_api_key_and_basic_auth_send_their_headers(api: Api) -> None:
    api.auth = ("X-Api-Key", KEY)
    conn = HttpConnection(
        connection_name="svc",
        base_url=api.url,
        auth={"mode": "api_key", "api_key": f"${{{KEY_VAR}}}"},
    )
    assert list(read(conn, "v1/one", {"response": {"items_path": "results"}})["id"]) == [1, 2, 3]
    basic = base64.b64encode(f"me:{KEY}".encode()).decode()
    api.auth = ("Authorization", f"Basic {basic}")
    conn = HttpConnection(
        connection_name="svc",
        base_url=api.url,
        auth={"mode": "basic", "username": "me", "password": f"${{{KEY_VAR}}}"},
    )
    assert len(read(conn, "v1/one", {"response": {"items_path": "results"}})) == 3
    # Odibi's config-model spelling: the key in value_template, header Authorization
    api.auth = ("Authorization", f"Token {KEY}")
    conn = HttpConnection(
        connection_name="svc",
        base_url=api.url,
        auth={"mode": "api_key", "value_template": f"Token ${{{KEY_VAR}}}"},
    )
    assert len(read(conn, "v1/one", {"response": {"items_path": "results"}})) == 3
    # a header written ${VAR} (Odibi's other way to send a key) is filled in and secret
    api.auth = ("X-Api-Key", KEY)
    conn = HttpConnection(
        connection_name="svc", base_url=api.url, headers={"X-API-Key": f"${{{KEY_VAR}}}"}
    )
    assert len(read(conn, "v1/one", {"response": {"items_path": "results"}})) == 3
    assert KEY in conn.secrets_given()


def test_refused_credentials_fail_naming_node_url_and_status_without_the_secret(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(TOKEN_VAR, "wrong-" + TOKEN)
    with pytest.raises(OdibiRunError) as err:
        read(bearer(api), "one", {"params": {"api_key": KEY, "q": "x"}})
    msg = str(err.value)
    assert msg.startswith("node 'n' (p.yaml:3): GET ")
    assert f"{api.url}/v1/one?api_key=***&q=x answered HTTP 401" in msg
    assert "check auth: / headers: of connection 'svc'" in msg
    assert TOKEN not in msg and KEY not in msg
    assert api.count("/v1/one") == 1  # 401 is not tried again


def test_connection_check_reports_reachable_refused_and_unreachable(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    from odibi_dagster.errors import OdibiConnectionError
    from odibi_dagster.setup_helpers import check_connections

    assert bearer(api).check() == f"{api.url}/v1 answered HTTP 404"
    monkeypatch.setenv(TOKEN_VAR, "wrong")
    with pytest.raises(OdibiConnectionError, match=r"refused the credentials \(HTTP 401\)"):
        bearer(api).check()
    monkeypatch.delenv(TOKEN_VAR)
    (status,) = check_connections({"svc": bearer(api)})
    assert not status.ok and f"environment variable {TOKEN_VAR}" in status.detail
    down = HttpConnection(connection_name="down", base_url="http://127.0.0.1:9")
    with pytest.raises(OdibiConnectionError, match="not reachable"):
        down.check()


# --------------------------------------------------------------------------- retries


def test_429_and_500_are_tried_again_honouring_retry_after(api: Api) -> None:
    api.failures["/v1/one"] = [(429, "0"), (500, "0"), (503, "0")]
    df = read(
        bearer(api), "one", {"response": {"items_path": "results"}, "retry": {"max_retries": 4}}
    )
    assert list(df["id"]) == [1, 2, 3]
    assert api.count("/v1/one") == 4


def test_odibis_earlier_http_retries_spelling_backs_off_without_retry_after(api: Api) -> None:
    api.failures["/v1/one"] = [(502, None), (504, None)]
    options = {
        "response": {"items_path": "results"},
        "http": {
            "timeout_s": 5,
            "retries": {"max_attempts": 3, "backoff": {"base_s": 0.01, "max_s": 0.05}},
            "rate_limit": {"type": "fixed", "requests_per_second": 50},
        },
    }
    assert len(read(bearer(api), "one", options)) == 3
    assert api.count("/v1/one") == 3
    policy = ApiOptions.model_validate(options).policy()
    assert (policy.attempts, policy.delay(1), policy.delay(5)) == (3, 0.01, 0.05)
    # retry: (Odibi's current spelling) wins over http.retries
    both = ApiOptions.model_validate({**options, "retry": {"max_retries": 5, "retry_codes": [503]}})
    assert (both.policy().attempts, both.policy().codes) == (5, frozenset({503}))


def test_failing_after_every_attempt_names_node_url_and_status(api: Api) -> None:
    api.failures["/v1/one"] = [(503, "0")] * 10
    with pytest.raises(OdibiStorageError) as err:  # may be retried by a run retry policy
        read(
            bearer(api),
            "one",
            {
                "params": {"token": TOKEN, "apiKey": KEY},
                "retry": {"max_retries": 3},
                "http": {"timeout_s": 5},
            },
        )
    msg = str(err.value)
    assert "node 'n' (p.yaml:3): GET " in msg
    assert "/v1/one?token=***&apiKey=*** answered HTTP 503 after 3 attempts" in msg
    assert TOKEN not in msg and KEY not in msg  # the answer echoed both: redacted
    assert api.count("/v1/one") == 3


def test_credentials_go_only_to_the_connections_site(api: Api) -> None:
    with pytest.raises(OdibiRunError, match="is on another site than connection 'svc'"):
        read(bearer(api), "http://localhost:1/v1/one", {})
    assert api.requests == []  # nothing was sent anywhere
    # an absolute address on the connection's own site is read (as Odibi allows)
    df = read(bearer(api), f"{api.url}/v1/one", {"response": {"items_path": "results"}})
    assert len(df) == 3 and api.count("/v1/one") == 1


def test_a_request_that_times_out_is_tried_again_then_fails_clearly(api: Api) -> None:
    options = {"http": {"timeout_s": 0.1}, "retry": {"max_retries": 2}}
    with pytest.raises(OdibiStorageError) as err:
        read(bearer(api), "slow", options)
    assert f"GET {api.url}/v1/slow failed after 2 attempt(s): TimeoutError" in str(err.value)
    assert api.count("/v1/slow") == 2


def test_a_server_that_is_not_there_fails_clearly(api: Api) -> None:
    conn = HttpConnection(connection_name="svc", base_url="http://127.0.0.1:9/v1")
    with pytest.raises(OdibiStorageError, match=r"GET http://127.0.0.1:9/v1/x failed after 1"):
        read(conn, "x", {"retry": {"max_retries": 1}, "http": {"timeout_s": 2}})


# --------------------------------------------------------------------------- records path


def test_a_records_path_not_in_the_response_names_the_key(api: Api) -> None:
    with pytest.raises(OdibiRunError) as err:
        read(bearer(api), "pages", {"response": {"items_path": "data.rows"}})
    msg = str(err.value)
    assert "read.options.response.items_path 'data.rows': key 'rows' is not in the response" in msg
    assert "under 'data'" in msg and "keys there: items" in msg
    with pytest.raises(OdibiRunError, match=r"set read\.options\.response\.items_path.*keys: data"):
        read(bearer(api), "pages", {})


def test_response_shapes_odibi_documents() -> None:
    def rec(body: Any, **response: Any) -> list[Any]:
        return records_at(body, ResponseOptions(**response), "n", "URL")

    assert rec([{"meta": 1}, [{"id": 1}, {"id": 2}]], items_path="[1]") == [{"id": 1}, {"id": 2}]
    assert rec({"series": [{"data": [{"id": 7}]}]}, items_path="series[0].data") == [{"id": 7}]
    assert rec({"temperature": 72}, wrap_single=True) == [{"temperature": 72}]
    rows = rec([[1640000000, 50000.5]], array_row_fields=["ts", "open"])
    assert rows == [{"ts": 1640000000, "open": 50000.5}]
    rates = rec({"rates": {"USD": 1.0, "EUR": 0.85}}, items_path="rates", dict_to_list=True)
    assert rates == [{"_key": "USD", "_value": 1.0}, {"_key": "EUR", "_value": 0.85}]
    assert rec({"data": None}, items_path="data") == []
    with pytest.raises(OdibiRunError, match=r"index \[3\] is not in the response under 'series'"):
        rec({"series": [1]}, items_path="series[3].data")


def test_date_variables_in_params_are_filled_in(api: Api) -> None:
    read(
        bearer(api),
        "echo",
        {"params": {"a": "$today_compact", "b": "{-1d:%Y%m%d}", "c": "x:[{today}+TO+{now:%Y}]"}},
    )
    _, sent, _ = api.requests[-1]
    today = pd.Timestamp.now(tz="UTC")
    assert sent["a"] == [today.strftime("%Y%m%d")]
    assert sent["b"] == [(today - pd.Timedelta(days=1)).strftime("%Y%m%d")]
    # + : [ ] are sent unescaped, as Odibi sends them (openFDA's search syntax)
    assert sent["c"] == [f"x:[{today.date().isoformat()} TO {today.year}]"]


def test_url_shown_in_messages_masks_secret_parameters() -> None:
    shown = shown_url("https://u:p@h.example/x?sig=abc&page=2", {"apikey": "v", "q": "S"}, ["S"])
    assert shown == "https://h.example/x?sig=***&page=2&apikey=***&q=***"


def test_flattening_matches_odibis_json_normalize() -> None:
    df = frame_of([{"a": {"b": 1, "c": {"d": "x"}}, "e": [1]}, {"a": {"b": 2}, "f": None}])
    assert list(df.columns) == ["e", "a_b", "a_c_d", "f"]
    assert df["a_b"].tolist() == [1, 2]


# --------------------------------------------------------------------------- a project


PROJECT = """\
project: api_demo
engine: {engine}
connections:
  fda:
    type: http
    base_url: "{url}/v1"
    headers:
      User-Agent: odibi-test
    auth:
      mode: bearer
      token: "${{env:{var}}}"
  lake:
    type: local
    base_path: ./lake
story:
  connection: lake
  path: stories
pipelines:
  - pipeline: p
    nodes:
      - name: recalls
        read:
          connection: fda
          format: api
          path: /offset
          options:
            params: {{source: test}}
            pagination: {{type: offset_limit, offset_param: skip, limit_param: limit, limit: 10}}
            response: {{items_path: results}}
            retry: {{max_retries: 3, backoff_factor: 1.5}}
        write: {{connection: lake, format: parquet, path: bronze/recalls.parquet}}
      - name: by_city
        depends_on: [recalls]
        transform:
          steps:
            - "SELECT address_city AS city, COUNT(*) AS n FROM recalls GROUP BY address_city ORDER BY city"
        write: {{connection: lake, format: csv, path: silver/by_city.csv}}
"""


def project(tmp_path: Path, api: Api, engine: str = "pandas") -> Path:
    path = tmp_path / "project.yaml"
    path.write_text(PROJECT.format(url=api.url, var=TOKEN_VAR, engine=engine))
    return path


def test_a_project_reads_the_api_and_keeps_the_token_out_of_everything(
    tmp_path: Path, api: Api, dagster_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    api.failures["/v1/offset"] = [(429, "0")]
    path = project(tmp_path, api)
    assert main(["validate", str(path)]) == 0
    result = run_job(path)
    assert result.success, failure_text(result)
    recalls = pd.read_parquet(tmp_path / "lake/bronze/recalls.parquet")
    assert len(recalls) == 25 and "address_geo_lat" in recalls.columns
    by_city = pd.read_csv(tmp_path / "lake/silver/by_city.csv")
    assert by_city.to_dict("records") == [
        {"city": "Lagos", "n": 8},
        {"city": "Lima", "n": 8},
        {"city": "Oslo", "n": 9},
    ]
    assert api.count("/v1/offset") == 4  # 3 pages, the first tried twice
    (mat,) = [m for m in result.asset_materializations_for_node("p__recalls")]
    meta = {k: v.value for k, v in mat.metadata.items()}
    assert (meta["odibi/api_pages"], meta["odibi/api_requests"]) == (3, 4)
    assert meta["odibi/api_records"] == 25
    # the token is nowhere: events (metadata), run config, stories, the loaded config
    events = json.dumps([str(e) for e in result.all_events])
    run = result.dagster_run
    seen = events + json.dumps(run.run_config, default=str) + str(load_project(path).config)
    for f in (tmp_path / "lake/stories").rglob("*"):
        if f.is_file():
            seen += f.read_text(errors="replace")
    seen += capsys.readouterr().out
    assert "stories" in str(list((tmp_path / "lake").iterdir()))
    assert TOKEN not in seen
    assert "read /offset (3 page(s), 4 request(s))" in seen  # the story says what it took
    assert f"${{{TOKEN_VAR}}}" in str(load_project(path).config.connections["fda"])


def test_a_failed_read_fails_the_node_with_a_clear_message_and_no_secret(
    tmp_path: Path, api: Api, dagster_home: Path
) -> None:
    api.failures["/v1/offset"] = [(500, "0")] * 10
    result = run_job(project(tmp_path, api))
    assert not result.success
    text = failure_text(result)
    assert "node 'recalls' (" in text and "project.yaml:21): GET " in text
    assert "/v1/offset?source=test&skip=0&limit=10 answered HTTP 500 after 3 attempts" in text
    assert TOKEN not in text
    assert not (tmp_path / "lake/bronze/recalls.parquet").exists()


def test_a_read_only_api_node_feeds_its_consumers(
    tmp_path: Path, api: Api, dagster_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ODIBI_TEST_STATE", "all")
    path = tmp_path / "project.yaml"
    path.write_text(
        textwrap.dedent(
            f"""\
            project: src
            connections:
              gh: {{type: http, base_url: "{api.url}/v1", auth: {{token: "${{{TOKEN_VAR}}}"}}}}
              lake: {{type: local, base_path: ./lake}}
            pipelines:
              - pipeline: p
                nodes:
                  - name: issues
                    read:
                      connection: gh
                      format: api
                      path: link
                      options: {{params: {{state: "${{ODIBI_TEST_STATE}}"}}, pagination: {{type: link_header}}}}
                  - name: lima
                    depends_on: [issues]
                    transform: {{steps: ["SELECT id FROM issues WHERE address_city = 'Lima'"]}}
                    write: {{connection: lake, format: csv, path: lima.csv}}
            """
        )
    )
    result = run_job(path)
    assert result.success, failure_text(result)
    assert pd.read_csv(tmp_path / "lake/lima.csv")["id"].tolist() == [2, 5, 8, 11, 14, 17, 20, 23]
    first = next(q for p, q, _ in api.requests if p == "/v1/link")
    assert first == {"state": ["all"]}


SECRET_PARAM_VALUE = "s3cr3tAPPIDvalue"
SECRET_BODY_VALUE = "pa55/word+body"  # characters a query or JSON would escape
SECRET_PATH_VALUE = "c1ty-s3cr3t"


def request_values_project(tmp_path: Path, api: Api) -> Path:
    """Three reads whose request values come from ${VAR}: a parameter with an innocent
    name, a request_body value (of a read-only node) and a query in read.path."""
    path = tmp_path / "project.yaml"
    path.write_text(
        textwrap.dedent(
            f"""\
            project: req
            connections:
              api: {{type: http, base_url: "{api.url}/v1", auth: {{token: "${{{TOKEN_VAR}}}"}}}}
              lake: {{type: local, base_path: ./lake}}
            story: {{connection: lake, path: stories}}
            pipelines:
              - pipeline: p
                nodes:
                  - name: weather
                    read:
                      connection: api
                      format: api
                      path: /one
                      options:
                        params: {{q: London, appid: "${{ODIBI_TEST_APPID}}"}}
                        response: {{items_path: results}}
                        retry: {{max_retries: 2}}
                    write: {{connection: lake, format: parquet, path: weather.parquet}}
                  - name: city
                    read:
                      connection: api
                      format: api
                      path: "/offset?city=${{ODIBI_TEST_CITY}}"
                      options: {{response: {{items_path: results}}}}
                    write: {{connection: lake, format: parquet, path: city.parquet}}
                  - name: login
                    read:
                      connection: api
                      format: api
                      path: /search
                      options:
                        method: POST
                        request_body: {{user: me, secret_word: "${{ODIBI_TEST_WORD}}", start: 0, rows: 5}}
                        response: {{items_path: result}}
                  - name: logged
                    depends_on: [login]
                    transform: {{steps: ["SELECT id FROM login"]}}
                    write: {{connection: lake, format: csv, path: logged.csv}}
            """
        )
    )
    return path


def everything_shown(tmp_path: Path, result: Any, log: str) -> str:
    """The text of every event of the run, its run config, its stories and files of the
    lake but the data, and the log."""
    seen = json.dumps([str(e) for e in result.all_events]) + log
    seen += json.dumps(result.dagster_run.run_config, default=str)
    for f in (tmp_path / "lake").rglob("*"):
        if f.is_file() and f.suffix != ".parquet":
            seen += f.read_text(errors="replace")
    return seen


@pytest.fixture
def request_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ODIBI_TEST_APPID", SECRET_PARAM_VALUE)
    monkeypatch.setenv("ODIBI_TEST_WORD", SECRET_BODY_VALUE)
    monkeypatch.setenv("ODIBI_TEST_CITY", SECRET_PATH_VALUE)


SECRETS = (SECRET_PARAM_VALUE, SECRET_BODY_VALUE, SECRET_PATH_VALUE)


def test_request_values_from_variables_are_sent_and_kept_out_of_everything(
    tmp_path: Path,
    api: Api,
    dagster_home: Path,
    request_secrets: None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    path = request_values_project(tmp_path, api)
    loaded = str(load_project(path).config)  # kept as written until the request
    assert "${ODIBI_TEST_APPID}" in loaded and "${ODIBI_TEST_CITY}" in loaded
    assert not any(s in loaded for s in SECRETS)
    result = run_job(path)
    assert result.success, failure_text(result)
    sent = {p: q for p, q, _ in api.requests}
    assert sent["/v1/one"] == {"q": ["London"], "appid": [SECRET_PARAM_VALUE]}
    assert sent["/v1/offset"] == {"city": [SECRET_PATH_VALUE]}
    assert json.loads(api.bodies[0])["secret_word"] == SECRET_BODY_VALUE
    assert pd.read_csv(tmp_path / "lake/logged.csv")["id"].tolist() == [1, 2, 3, 4, 5]
    seen = everything_shown(tmp_path, result, caplog.text)
    assert "read /offset?city=${ODIBI_TEST_CITY}" in seen  # the story shows it as written
    for secret in SECRETS:
        assert secret not in seen


def test_request_values_from_variables_are_masked_when_the_read_fails(
    tmp_path: Path,
    api: Api,
    dagster_home: Path,
    request_secrets: None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # the answers echo the query and the body: a 500 tried again (a warning), a 400
    api.failures["/v1/one"] = [(500, "0"), (400, None)]
    api.failures["/v1/offset"] = [(400, None)]
    api.failures["/v1/search"] = [(400, None)]
    result = run_job(request_values_project(tmp_path, api))
    assert not result.success
    text = failure_text(result)
    assert "/v1/one?q=London&appid=*** answered HTTP 400 after 2 attempts" in text
    assert "/v1/offset?city=*** answered HTTP 400" in text
    assert "POST " in text and "/v1/search answered HTTP 400" in text
    assert "trying again" in caplog.text
    seen = everything_shown(tmp_path, result, caplog.text)
    assert "node 'login' (" in seen and "node 'city' (" in seen  # the stories of the failures
    for secret in SECRETS:
        assert secret not in text
        assert secret not in seen
    # nor escaped as the query or the JSON body spells it
    assert "pa55%2Fword%2Bbody" not in seen and "pa55\\/word" not in seen


def test_an_unset_variable_of_a_request_value_fails_the_read_naming_it(api: Api) -> None:
    with pytest.raises(OdibiRunError) as err:
        read(bearer(api), "one", {"params": {"q": "${ODIBI_TEST_NOT_SET}"}})
    assert str(err.value) == (
        "node 'n' (p.yaml:3): environment variable ODIBI_TEST_NOT_SET "
        "(read.options.params.q) is not set in this process; export it where the run executes"
    )


def test_odibis_quick_start_runs_unchanged_against_a_local_api(
    tmp_path: Path, api: Api, dagster_home: Path
) -> None:
    corpus = Path(__file__).parent / "odibi_v3_corpus"
    for name in ("docs_api_data_sources_quick_start", "docs_api_ingestion_fixed_quick_start"):
        text = (corpus / f"{name}.yaml").read_text()
        path = tmp_path / name / "project.yaml"
        path.parent.mkdir()
        path.write_text(text.replace("https://api.fda.gov", api.url))  # only the address
        api.auth = ("User-Agent", "my-app/1.0")  # no auth: the header it sends is checked
        result = run_job(path, "fetch_fda_data")
        assert result.success, failure_text(result)
        df = pd.read_parquet(path.parent / "data/bronze/fda_recalls.parquet")
        assert list(df["id"]) == list(range(1, 26)) and "address_geo_lat" in df.columns
    sent = [q for p, q, _ in api.requests if p == "/food/enforcement.json"]
    assert [(q["skip"], q["limit"]) for q in sent] == [(["0"], ["1000"])] * 2
    assert "_fetched_at" in df.columns and "_load_date" in df.columns


@pytest.mark.spark
def test_spark_engine_reads_the_same_records(tmp_path: Path, api: Api, spark: Any) -> None:
    from odibi_dagster.engines.spark import SparkEngine

    options = {"pagination": {"type": "link_header"}}
    df = SparkEngine(spark).read(bearer(api).location("link"), "api", options, where="n")
    rows = sorted(df.select("id", "address_city", "address_geo_lat").collect())
    want = read(bearer(api), "link", options)
    assert [tuple(r) for r in rows] == [
        (int(a), b, pytest.approx(c))
        for a, b, c in want[["id", "address_city", "address_geo_lat"]].itertuples(index=False)
    ]


# --------------------------------------------------------------------------- load errors


HEAD = """\
project: p
connections:
  api:
    type: http
    base_url: https://api.example.com
    {auth}
  lake:
    type: local
    base_path: ./lake
pipelines:
  - pipeline: p
    nodes:
      - name: n
"""


@pytest.mark.parametrize(
    ("auth", "node", "message"),
    [
        (
            "",
            "read: {connection: api, format: api, path: x}\n"
            "        write: {connection: api, format: json, path: y}",
            "connection 'api' is an http connection, which is only read",
        ),
        ("", "read: {connection: api, format: csv, path: x}", "read it with format: api"),
        ("", "read: {connection: lake, format: api, path: x}", "connection 'lake' is type local"),
        (
            "",
            "read: {connection: api, format: api, path: x, options: {pagination: "
            "{type: offset_limit, offset_parm: skip}}}",
            "unknown key 'offset_parm'; did you mean 'offset_param'?",
        ),
        (
            "",
            "read: {connection: api, format: api, path: x, options: {pagination: {type: next}}}",
            "pagination type must be one of: none, offset_limit",
        ),
        (
            "",
            "read: {connection: api, format: api, path: x, options: {respons: {}}}",
            "unknown key 'respons'; did you mean 'response'?",
        ),
        (
            f"auth: {{mode: bearer, token: {TOKEN}}}",
            "read: {connection: api, format: api, path: x}",
            "auth.token must reference an environment variable",
        ),
        (
            "auth: {mode: api_key, header_name: X-Key, value_template: plain-key-123}",
            "read: {connection: api, format: api, path: x}",
            "auth.value_template must reference an environment variable",
        ),
        (
            "auth: {mode: oauth}",
            "read: {connection: api, format: api, path: x}",
            "auth mode 'oauth' is not supported",
        ),
    ],
)
def test_mistakes_are_reported_at_load_with_file_and_line(
    tmp_path: Path, auth: str, node: str, message: str
) -> None:
    path = tmp_path / "project.yaml"
    path.write_text(HEAD.format(auth=auth) + "        " + node + "\n")
    with pytest.raises(OdibiConfigError) as err:
        load_project(path)
    text = str(err.value)
    assert message in text and "project.yaml:" in text
    assert TOKEN not in text


def test_odibi_spellings_load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TOKEN_VAR, TOKEN)
    path = tmp_path / "project.yaml"
    text = HEAD.format(auth=f'auth: {{token: "${{env:{TOKEN_VAR}}}"}}') + textwrap.indent(
        textwrap.dedent(
            """\
            read:
              connection: api
              format: api
              path: /food/enforcement.json
              options:
                method: get
                params: {limit: 1000, search: "report_date:[$30_days_ago_compact+TO+$today_compact]"}
                pagination: {type: offset_limit, offset_param: skip, limit_param: limit, limit: 1000, max_pages: 10, stop_on_empty: true}
                response: {items_path: results, add_fields: {_fetched_at: $now}}
                retry: {max_retries: 5, backoff_factor: 2.0, retry_codes: [429, 500, 502, 503, 504]}
                rate_limit: {requests_per_second: 2}
                http: {timeout_s: 60}
            write: {connection: lake, format: parquet, path: bronze/fda.parquet}
            """
        ),
        "        ",
    )
    path.write_text(text)
    cfg = load_project(path).config
    conn = cfg.connections["api"]
    assert conn.auth == {"token": f"${{{TOKEN_VAR}}}"}
    opts = ApiOptions.model_validate(cfg.pipelines[0].nodes[0].read.options)
    assert opts.retry.max_retries == 5 and opts.pagination.type == "offset_limit"


def test_odibis_quick_reference_options_are_accepted() -> None:
    opts = ApiOptions.model_validate(
        {
            "method": "POST",
            "params": {"key": "value"},
            "request_body": {"filters": {"status": ["active"]}},
            "pagination": {"type": "offset_limit", "max_pages": 100, "start_offset": 0},
            "response": {"items_path": "results", "add_fields": {"_fetched_at": "2024-01-01"}},
            "http": {
                "timeout_s": 60,
                "retries": {
                    "max_attempts": 5,
                    "backoff": {"base_s": 1.0, "max_s": 60.0, "exponential_base": 2.0},
                    "retry_on_status": [429, 500, 502, 503, 504],
                },
                "rate_limit": {"type": "auto"},
            },
        }
    )
    assert opts.policy().attempts == 5 and opts.requests_per_second() is None


def test_post_sends_parameters_and_pages_in_the_json_body(api: Api) -> None:
    df = read(
        bearer(api),
        "search",
        {
            "method": "POST",
            "params": {"q": "x"},
            "request_body": {"filters": {"status": ["active"]}},
            "pagination": {
                "type": "offset_limit",
                "offset_param": "start",
                "limit_param": "rows",
                "limit": 2,
            },
            "response": {"items_path": "result"},
        },
    )
    bodies = [json.loads(b) for b in api.bodies]
    assert bodies[0] == {"filters": {"status": ["active"]}, "q": "x", "start": 0, "rows": 2}
    assert [b["start"] for b in bodies] == [0, 2, 4]
    assert list(df["id"]) == [1, 2, 3, 4, 5]


def test_fetch_records_reports_pages_and_requests(api: Api) -> None:
    api.failures["/v1/cursor"] = [(502, "0")]
    opts = ApiOptions.model_validate(
        {
            "pagination": {
                "type": "cursor",
                "cursor_param": "after",
                "cursor_path": "pagination.next_cursor",
            },
            "response": {"items_path": "data"},
        }
    )
    records, stats = fetch_records(bearer(api).settings(), "cursor", opts, "n")
    assert len(records) == 25 and (stats.pages, stats.requests) == (3, 4)
