"""Alerts: real runs on a real Dagster instance, the alert sensors evaluated against it as
the daemon does (``evaluate_tick`` with the cursor of the previous tick), and the messages
received by a local HTTP server."""

from __future__ import annotations

import json
import logging
import socket
import textwrap
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from dagster._core.remote_representation.external_data import RepositorySnap
from dagster._serdes import serialize_value

from odibi_dagster import LoadedProject, build_definitions, load_project
from odibi_dagster.alerts import Delivery, alert_sensors
from odibi_dagster.config.schema import json_schema
from odibi_dagster_tests.support.runs import run_job
from odibi_dagster_tests.support.webhook import Receiver, serving

# What the webhook URL carries, like a real one: it must never be shown.
TOKEN = "xoxb-7d3f9a2c41-T0KEN-do-not-show"
URL_VAR = "ODIBI_TEST_ALERT_URL"
DAGSTER_URL = "http://dagster.internal:3000"
FAST = Delivery(attempts=3, timeout_seconds=2.0, backoff_seconds=0.01, budget_seconds=5.0)

PROJECT = """\
project: shop
connections:
  lake: {{type: local, base_path: ./data}}
alerts:
{alerts}
pipelines:
  - pipeline: ingest
    nodes:
      - name: clean
        read: {{connection: lake, path: orders.csv, format: csv}}
        transform:
          steps:
            - SELECT order_id, no_such_column FROM __result__
  - pipeline: report
    nodes:
      - name: summary
        read: {{connection: lake, path: orders.csv, format: csv}}
        transform:
          steps:
            - SELECT count(*) AS n FROM __result__
"""


# --------------------------------------------------------------------------- a receiver


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with serving() as rec:
        yield rec


def closed_port_url() -> str:
    """A URL on a local port nothing listens on: every connection is refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/services/T000/B000/{TOKEN}"


# --------------------------------------------------------------------------- a project


@dataclass
class Alerting:
    """A project with alerts, its Definitions, and its alert sensors ticking against the
    Dagster instance of DAGSTER_HOME (each from the cursor its previous tick left)."""

    project: LoadedProject
    defs: dg.Definitions
    instance: dg.DagsterInstance
    sensors: dict[str, dg.SensorDefinition]
    cursors: dict[str, str | None] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # the daemon's first tick of a sensor sets its cursor; runs after it are alerted
        for name in self.sensors:
            self.tick(name)

    def run(self, job: str) -> dg.ExecuteInProcessResult:
        return run_job(self.defs, job, instance=self.instance)

    def tick(self, name: str) -> Any:
        context = dg.build_sensor_context(instance=self.instance, cursor=self.cursors.get(name))
        result = self.sensors[name].evaluate_tick(context)
        self.cursors[name] = result.cursor
        return result


def make_alerting(
    root: Path, alerts: str, delivery: Delivery | None = None, failing_sql: str | None = None
) -> Alerting:
    """The project above in ``root`` with these alerts (and maybe another failing SQL step),
    on the instance of DAGSTER_HOME; its sensors as compiled, or with ``delivery``."""
    (root / "data").mkdir(parents=True, exist_ok=True)
    (root / "data" / "orders.csv").write_text("order_id,amount\n1,10\n2,20\n")
    text = PROJECT.format(alerts=textwrap.indent(textwrap.dedent(alerts).strip(), "  "))
    if failing_sql is not None:
        text = text.replace(
            "SELECT order_id, no_such_column FROM __result__", json.dumps(failing_sql)
        )
    (root / "project.yaml").write_text(text)
    project = load_project(root)
    defs = build_definitions(project)
    sensors = (
        list(defs.sensors or [])
        if delivery is None
        else alert_sensors(project, list(defs.jobs or []), delivery)
    )
    return Alerting(project, defs, dg.DagsterInstance.get(), {s.name: s for s in sensors})


@pytest.fixture
def alerting(tmp_path: Path, dagster_home: Path) -> Callable[..., Alerting]:
    """``alerting(alerts_yaml, delivery=None, failing_sql=None)``: ``make_alerting`` in a
    directory and a Dagster instance of the test's own."""
    return lambda *args, **kwargs: make_alerting(tmp_path / "shop", *args, **kwargs)


def slack(**extra: str) -> str:
    lines = ["- type: slack", f"  url: ${{{URL_VAR}}}"]
    lines += [f"  {k}: {v}" for k, v in extra.items()]
    return "\n".join(lines)


def everything_shown(a: Alerting, *results: Any, logs: str = "") -> str:
    """All text a person could see: the results and skip reasons of ticks, the logs, the
    runs' tags and events, and what the code location sends to the UI."""
    snap = RepositorySnap.from_def(a.defs.get_repository_def())
    parts = [serialize_value(snap), logs, *(repr(r) for r in results)]
    for run in a.instance.get_runs():
        parts.append(repr(run.tags))
        parts += [
            repr(r.event_log_entry) for r in a.instance.get_records_for_run(run.run_id).records
        ]
    return "\n".join(parts)


# --------------------------------------------------------------------------- failures


@dataclass
class OneFailure:
    """One failed run of ``ingest``, and what four alerts of it sent."""

    run_id: str
    sensors: list[str]
    ticks: dict[str, list[Any]]
    posts: dict[str, Any]  # by the URL path each alert was sent to


@pytest.fixture(scope="module")
def one_failure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OneFailure]:
    """Shared by the tests of what messages hold: one run, each alert sensor ticked twice."""
    root = tmp_path_factory.mktemp("one_failure")
    home = root / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    with serving() as rec, pytest.MonkeyPatch.context() as mp:
        mp.setenv("DAGSTER_HOME", str(home))
        for var, path in [
            ("ODIBI_TEST_SLACK_URL", f"/services/T000/B000/{TOKEN}"),
            ("ODIBI_TEST_TEAMS_URL", f"/webhookb2/{TOKEN}"),
            ("ODIBI_TEST_WEBHOOK_URL", f"/hook?key={TOKEN}"),
            ("ODIBI_TEST_PLAIN_URL", "/plain"),
        ]:
            mp.setenv(var, rec.url(path))
        a = make_alerting(
            root / "shop",
            f"""
            - type: slack
              url: ${{ODIBI_TEST_SLACK_URL}}
              metadata: {{dagster_url: "{DAGSTER_URL}/", channel: "#data-alerts"}}
            - type: teams
              url: ${{ODIBI_TEST_TEAMS_URL}}
              metadata:
                mention: [data-team@example.com]
                dagster_url: {DAGSTER_URL}
            - type: webhook
              url: ${{ODIBI_TEST_WEBHOOK_URL}}
              metadata: {{dagster_url: {DAGSTER_URL}}}
            - type: webhook
              url: ${{ODIBI_TEST_PLAIN_URL}}
            """,
        )
        run = a.run("ingest")
        assert not run.success
        ticks = {name: [a.tick(name), a.tick(name)] for name in a.sensors}
        posts: dict[str, Any] = {}
        for path, body in rec.posts:
            assert path not in posts, f"sent twice to {path}"
            posts[path] = body
        yield OneFailure(run.run_id, list(a.sensors), ticks, posts)


def test_each_alert_gets_a_sensor_named_by_its_place_type_and_event(
    one_failure: OneFailure,
) -> None:
    assert one_failure.sensors == [
        "odibi_alert_0_slack_on_failure",
        "odibi_alert_1_teams_on_failure",
        "odibi_alert_2_webhook_on_failure",
        "odibi_alert_3_webhook_on_failure",
    ]


def test_a_failed_run_is_alerted_once_per_alert(one_failure: OneFailure) -> None:
    assert len(one_failure.posts) == 4
    for name, (first, second) in one_failure.ticks.items():
        # acted on (sent), then nothing new: the cursor moved past the run
        assert first.skip_message is None, name
        assert [r.dagster_run.run_id for r in first.dagster_run_reactions] == [one_failure.run_id]
        assert second.dagster_run_reactions == []


def test_slack_message_names_the_pipeline_failed_node_error_and_links_the_run(
    one_failure: OneFailure,
) -> None:
    run_id = one_failure.run_id
    body = one_failure.posts[f"/services/T000/B000/{TOKEN}"]
    assert body["channel"] == "#data-alerts"
    text = body["text"]
    link = f"{DAGSTER_URL}/runs/{run_id}"
    assert text.startswith(f"\u274c shop: pipeline ingest failed (run <{link}|{run_id}>)")
    assert "Failed: `ingest/clean`" in text
    error = next(line for line in text.splitlines() if line.startswith("Error: "))
    assert "node 'clean'" in error and "no_such_column" in error
    assert "Stack Trace" not in text and "Traceback" not in text

    blocks = body["blocks"]
    assert [b["type"] for b in blocks] == ["header", "section", "section", "actions"]
    assert blocks[0]["text"] == {
        "type": "plain_text",
        "text": "\u274c shop: pipeline ingest failed",
    }
    fields = [f["text"] for f in blocks[1]["fields"]]
    assert "*Pipeline:*\ningest" in fields and "*Status:*\nFAILURE" in fields
    assert f"*Run:*\n<{link}|{run_id}>" in fields
    assert "*Failed:* `ingest/clean`" in blocks[2]["text"]["text"]
    assert "no_such_column" in blocks[2]["text"]["text"]
    assert blocks[3]["elements"][0]["url"] == link


def test_teams_message_is_an_adaptive_card_with_the_facts_a_mention_and_the_run_link(
    one_failure: OneFailure,
) -> None:
    body = one_failure.posts[f"/webhookb2/{TOKEN}"]
    assert body["type"] == "message"
    [attachment] = body["attachments"]
    assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
    card = attachment["content"]
    assert card["type"] == "AdaptiveCard" and card["version"] == "1.4"
    assert card["body"][0]["text"] == "\u274c shop: pipeline ingest failed"
    assert card["body"][0]["color"] == "Attention"
    facts = {f["title"]: f["value"] for f in card["body"][1]["facts"]}
    assert facts["Pipeline"] == "ingest" and facts["Run"] == one_failure.run_id
    assert facts["Status"] == "FAILURE" and facts["Failed"] == "ingest/clean"
    assert "no_such_column" in card["body"][2]["text"]
    assert card["body"][3]["text"] == "<at>data-team@example.com</at>"
    assert card["msteams"]["entities"][0]["mentioned"]["id"] == "data-team@example.com"
    assert card["actions"] == [
        {
            "type": "Action.OpenUrl",
            "title": "View run in Dagster",
            "url": f"{DAGSTER_URL}/runs/{one_failure.run_id}",
        }
    ]


def test_webhook_message_is_a_plain_json_object_of_the_run_facts(
    one_failure: OneFailure,
) -> None:
    body = one_failure.posts[f"/hook?key={TOKEN}"]
    assert {k: body[k] for k in ("project", "pipeline", "run_id", "status", "event")} == {
        "project": "shop",
        "pipeline": "ingest",
        "run_id": one_failure.run_id,
        "status": "FAILURE",
        "event": "on_failure",
    }
    assert body["event_type"] == "on_failure"  # Odibi's name for it
    assert body["failed_nodes"] == ["ingest/clean"]
    assert "node 'clean'" in body["error"] and "\n" not in body["error"]
    assert body["run_url"] == f"{DAGSTER_URL}/runs/{one_failure.run_id}"
    assert body["duration"] >= 0 and body["timestamp"].endswith("+00:00")
    assert body["message"].startswith("\u274c shop: pipeline ingest failed")


def test_without_a_dagster_url_the_message_has_no_link(one_failure: OneFailure) -> None:
    body = one_failure.posts["/plain"]
    assert body["run_url"] is None and "http" not in body["message"]


def test_a_secret_in_the_error_of_the_run_is_redacted_in_the_message(
    alerting: Callable[..., Alerting], receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = receiver.url(f"/services/T000/B000/{TOKEN}")
    monkeypatch.setenv(URL_VAR, url)
    # the error of the failing SQL quotes the token, as an error quoting a setting might
    a = alerting(f"- type: webhook\n  url: ${{{URL_VAR}}}", failing_sql=f'SELECT * FROM "{TOKEN}"')
    a.run("ingest")
    a.tick("odibi_alert_0_webhook_on_failure")
    [body] = receiver.bodies
    assert TOKEN not in json.dumps(body)
    assert "***" in body["error"]


# --------------------------------------------------------------------------- events and filters


def test_on_success_alerts_a_successful_run_only(
    alerting: Callable[..., Alerting], receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(URL_VAR, receiver.url("/hook"))
    a = alerting(f"- type: webhook\n  url: ${{{URL_VAR}}}\n  on_events: [on_success]")
    assert list(a.sensors) == ["odibi_alert_0_webhook_on_success"]
    a.run("ingest")  # fails
    ok = a.run("report")
    assert ok.success
    a.tick("odibi_alert_0_webhook_on_success")
    a.tick("odibi_alert_0_webhook_on_success")

    [body] = receiver.bodies
    assert (body["pipeline"], body["status"], body["event"]) == ("report", "SUCCESS", "on_success")
    assert body["failed_nodes"] == [] and body["error"] is None
    assert body["message"].startswith("\u2705 shop: pipeline report succeeded")


def test_on_start_alerts_when_a_run_starts(
    alerting: Callable[..., Alerting], receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(URL_VAR, receiver.url("/hook"))
    a = alerting(f"- type: slack\n  url: ${{{URL_VAR}}}\n  on_events: [on_start, on_failure]")
    assert list(a.sensors) == ["odibi_alert_0_slack_on_start", "odibi_alert_0_slack_on_failure"]
    run = a.run("report")
    a.tick("odibi_alert_0_slack_on_start")
    a.tick("odibi_alert_0_slack_on_failure")
    [body] = receiver.bodies
    assert body["text"].startswith("\U0001f680 shop: pipeline report started")
    assert run.run_id in body["text"]


def test_an_alert_for_some_pipelines_watches_only_their_jobs(
    alerting: Callable[..., Alerting], receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(URL_VAR, receiver.url("/hook"))
    a = alerting(
        f"""
        - type: webhook
          url: ${{{URL_VAR}}}
          on_events: [on_failure, on_success]
          pipelines: [report]
        """
    )
    a.run("ingest")  # fails, but is not watched
    a.run("report")
    for name in a.sensors:
        a.tick(name)
        a.tick(name)
    assert [(b["pipeline"], b["event"]) for b in receiver.bodies] == [("report", "on_success")]
    assert "when a run of report succeeds" in (
        a.sensors["odibi_alert_0_webhook_on_success"].description or ""
    )


def test_alert_sensors_run_by_default_every_ten_seconds(
    alerting: Callable[..., Alerting],
) -> None:
    a = alerting(slack())
    sensor = a.defs.resolve_sensor_def("odibi_alert_0_slack_on_failure")
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    assert sensor.minimum_interval_seconds == 10


# --------------------------------------------------------------------------- throttling


def test_a_second_failure_within_throttle_minutes_is_held_back(
    alerting: Callable[..., Alerting], receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(URL_VAR, receiver.url("/hook"))
    a = alerting(f"- type: webhook\n  url: ${{{URL_VAR}}}")  # Odibi's default: 15 minutes
    name = "odibi_alert_0_webhook_on_failure"
    a.run("ingest")
    a.tick(name)
    a.run("ingest")
    held = a.tick(name)
    assert len(receiver.posts) == 1
    assert "throttled" in held.skip_message and "throttle_minutes: 15" in held.skip_message
    assert a.tick(name).skip_message != held.skip_message  # the run is not tried again


def test_throttle_minutes_zero_sends_every_failure_up_to_max_per_hour(
    alerting: Callable[..., Alerting], receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(URL_VAR, receiver.url("/hook"))
    a = alerting(
        f"""
        - type: webhook
          url: ${{{URL_VAR}}}
          metadata: {{throttle_minutes: 0, max_per_hour: 2}}
        """
    )
    name = "odibi_alert_0_webhook_on_failure"
    runs = [a.run("ingest").run_id for _ in range(3)]
    results = [a.tick(name) for _ in range(3)]
    assert [b["run_id"] for b in receiver.bodies] == runs[:2]
    assert "2 sent in the last hour (max_per_hour: 2)" in results[2].skip_message


# --------------------------------------------------------------------------- delivery and secrets


def test_a_receiver_that_is_down_ends_the_tick_in_bounded_time_and_the_log_has_no_url(
    alerting: Callable[..., Alerting],
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv(URL_VAR, closed_port_url())
    a = alerting(slack(), delivery=FAST)
    name = "odibi_alert_0_slack_on_failure"
    run = a.run("ingest")

    started = time.monotonic()
    result = a.tick(name)
    assert time.monotonic() - started < 5

    assert result.skip_message.startswith(
        f"alerts[0] (slack): on_failure alert for run {run.run_id} of ingest not delivered: "
        "ConnectionRefusedError"
    )
    assert "(attempt 3 of 3)" in result.skip_message
    logs = capfd.readouterr().err + caplog.text
    assert "not delivered" in logs
    # the run is what it was, and the next tick does not try it again
    assert a.instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.FAILURE
    assert a.tick(name).skip_message == "Sensor function returned an empty result"
    assert TOKEN not in everything_shown(a, result, logs=logs)


def test_a_webhook_answering_an_error_is_tried_three_times_and_its_answer_redacted(
    alerting: Callable[..., Alerting], receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    receiver.status = 500
    receiver.answer = f"no service at /services/{TOKEN}\n<html>details</html>"
    monkeypatch.setenv(URL_VAR, receiver.url(f"/services/{TOKEN}"))
    a = alerting(slack(), delivery=FAST)
    a.run("ingest")
    result = a.tick("odibi_alert_0_slack_on_failure")
    assert len(receiver.posts) == 3
    assert result.skip_message.endswith(
        "not delivered: HTTP 500: no service at *** (attempt 3 of 3)"
    )


def test_a_webhook_that_never_answers_is_given_up_within_the_budget(
    alerting: Callable[..., Alerting], monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        monkeypatch.setenv(URL_VAR, f"http://127.0.0.1:{silent.getsockname()[1]}/{TOKEN}")
        delivery = Delivery(attempts=3, timeout_seconds=5, backoff_seconds=0.01, budget_seconds=0.6)
        a = alerting(slack(), delivery=delivery)
        a.run("ingest")
        started = time.monotonic()
        result = a.tick("odibi_alert_0_slack_on_failure")
        assert time.monotonic() - started < 2
    assert "not delivered: timed out" in result.skip_message


def test_an_unset_url_variable_loads_and_is_named_at_the_tick(
    alerting: Callable[..., Alerting],
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.delenv(URL_VAR, raising=False)
    a = alerting(slack())  # the URL is read when an alert is sent, not at load
    a.run("ingest")
    result = a.tick("odibi_alert_0_slack_on_failure")
    assert f"environment variable {URL_VAR} is not set where sensors run" in result.skip_message
    assert f"environment variable {URL_VAR} is not set" in capfd.readouterr().err
    assert a.tick("odibi_alert_0_slack_on_failure").skip_message == (
        "Sensor function returned an empty result"
    )


def test_the_url_is_in_no_definition_run_log_or_result(
    alerting: Callable[..., Alerting],
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv(URL_VAR, receiver.url(f"/services/T000/B000/{TOKEN}"))
    a = alerting(
        f"""
        - type: slack
          url: ${{{URL_VAR}}}
          on_events: [on_failure, on_success, on_start]
        """
    )
    assert a.project.config.alerts[0].url == f"${{{URL_VAR}}}"  # kept as written
    a.run("ingest")
    a.run("report")
    results = [a.tick(name) for name in a.sensors for _ in range(2)]
    assert len(receiver.posts) == 4  # ingest: start, failure; report: start, success
    logs = capfd.readouterr().err + caplog.text
    assert "sent" in logs
    shown = everything_shown(a, *results, logs=logs)
    assert TOKEN not in shown and "/services/T000" not in shown
    assert f"${{{URL_VAR}}}" in shown  # the sensors name the variable instead


# --------------------------------------------------------------------------- schema


def test_the_json_schema_describes_alerts() -> None:
    schema = json_schema()
    alerts = schema["properties"]["alerts"]
    assert alerts["items"] == {"$ref": "#/$defs/AlertConfig"}
    alert = schema["$defs"]["AlertConfig"]
    assert alert["required"] == ["type", "url"]
    assert alert["properties"]["type"]["enum"] == ["webhook", "slack", "teams"]
    assert alert["properties"]["on_events"]["items"]["enum"] == [
        "on_failure",
        "on_success",
        "on_start",
        "on_gate_block",
        "on_quarantine",
    ]
    assert alert["additionalProperties"] is False
    meta = schema["$defs"]["AlertMetadata"]["properties"]
    assert set(meta) == {"throttle_minutes", "max_per_hour", "channel", "mention", "dagster_url"}
    assert all(p.get("description") for p in [*alert["properties"].values(), *meta.values()])
