"""Alerts (``alerts:`` in the YAML): a message to Slack, Teams or any webhook when a run of a
pipeline fails, succeeds or starts, sent by a Dagster run-status sensor.

One sensor per alert and event, named ``odibi_alert_<index>_<type>_<event>``, watching the
jobs of the alert's pipelines (a pipeline's job has its name). Dagster's run-status sensor
machinery finds the runs and keeps the cursor, so an alert is sent once per run, also for
runs that ended while the daemon was down. Each tick handles one run, and records what
became of its alert.

The webhook URL is a secret: it carries its token. The loaded configuration keeps it as the
``${VAR}`` reference written in the YAML, and the sensor reads the variable when it sends.
No log line, skip reason, error, metadata or description holds the URL: an alert is named
by its place in the YAML (``alerts[0] (slack)``). A webhook that does not answer is tried a
few times within a bounded time, then the tick records that the alert was not sent; the
run is never affected.

Example::

    alerts:
      - type: slack
        url: ${SLACK_WEBHOOK_URL}
        on_events: [on_failure]
        metadata: {dagster_url: http://dagster.internal:3000}
"""

from __future__ import annotations

import json
import os
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import dagster as dg

# What a run-status sensor answers for a run it acted on (Dagster's own answer for None,
# which Dagster does not export).
from dagster._core.definitions.run_request import DagsterRunReaction

from odibi_dagster.config.loader import LoadedProject
from odibi_dagster.config.models import AlertConfig
from odibi_dagster.errors import first_line, redact

__all__ = ["Delivery", "alert_sensors"]

# How often Dagster's daemon evaluates an alert sensor: an alert follows its run within
# about this many seconds.
INTERVAL_SECONDS = 10

_STATUS = {
    "on_failure": dg.DagsterRunStatus.FAILURE,
    "on_success": dg.DagsterRunStatus.SUCCESS,
    "on_start": dg.DagsterRunStatus.STARTED,
}
# Odibi v3's events about a run's data: looked for in each run that ended (succeeded or
# failed), by a sensor per run status; a run without one is skipped
_DATA_EVENTS = ("on_gate_block", "on_quarantine")
_ENDED = (dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE)
_VERB = {
    "on_failure": "failed",
    "on_success": "succeeded",
    "on_start": "started",
    "on_gate_block": "had a quality gate fail",
    "on_quarantine": "quarantined rows",
}
_WHEN = {
    "on_failure": "fails",
    "on_success": "succeeds",
    "on_start": "starts",
    "on_gate_block": "ends with a failed quality gate",
    "on_quarantine": "ends having quarantined rows",
}
_ICON = {
    "on_failure": "\u274c",
    "on_success": "\u2705",
    "on_start": "\U0001f680",
    "on_gate_block": "\U0001f6a7",
    "on_quarantine": "\u26a0\ufe0f",
}
_TEAMS_COLOR = {
    "on_failure": "Attention",
    "on_success": "Good",
    "on_start": "Accent",
    "on_gate_block": "Warning",
    "on_quarantine": "Warning",
}
# Longest error text put in a message (Slack limits a block's text to 3,000 characters).
_MAX_ERROR = 500
# Where sends are counted for throttling, in the Dagster instance's key-value store.
_THROTTLE_KEY = "odibi_dagster/alerts/{project}/{sensor}/{pipeline}"


@dataclass(frozen=True)
class Delivery:
    """How an alert is posted: ``attempts`` tries, each waiting at most ``timeout_seconds``
    for an answer, ``backoff_seconds`` apart (doubled each time), all within
    ``budget_seconds``: a tick (which sends one alert) stays well under Dagster's 60 s limit
    for a sensor evaluation."""

    attempts: int = 3
    timeout_seconds: float = 5.0
    backoff_seconds: float = 0.5
    budget_seconds: float = 10.0


def alert_sensors(
    project: LoadedProject,
    jobs: Sequence[dg.UnresolvedAssetJobDefinition | dg.JobDefinition],
    delivery: Delivery | None = None,
) -> list[dg.SensorDefinition]:
    """The run-status sensors of the project's ``alerts:`` (one per alert and event), watching
    ``jobs`` (the pipelines' jobs) of the pipelines each alert names. Running by default:
    an alert is in the YAML to be sent."""
    delivery = delivery or Delivery()
    by_name = {job.name: job for job in jobs}
    sensors = []
    for index, alert in enumerate(project.config.alerts):
        names = list(
            dict.fromkeys(alert.pipelines or [p.pipeline for p in project.config.pipelines])
        )
        monitored = [by_name[n] for n in names if n in by_name]
        if not monitored:
            continue  # (Dagster would read an empty list as "every job")
        for event in alert.on_events:
            for status in _ENDED if event in _DATA_EVENTS else (_STATUS[event],):
                sensors.append(
                    _alert_sensor(project, index, alert, event, monitored, delivery, status)
                )
    return sensors


def _alert_sensor(
    project: LoadedProject,
    index: int,
    alert: AlertConfig,
    event: str,
    jobs: list[dg.UnresolvedAssetJobDefinition | dg.JobDefinition],
    delivery: Delivery,
    status: dg.DagsterRunStatus,
) -> dg.SensorDefinition:
    name = f"odibi_alert_{index}_{alert.type}_{event}"
    if event in _DATA_EVENTS:  # one sensor per run status
        name += f"_{status.value.lower()}"
    pipelines = ", ".join(j.name for j in jobs)
    description = (
        f"Sends a {alert.type} message (alerts[{index}] of {project.name}) when a run of "
        f"{pipelines} {_WHEN[event]}; the URL is read from ${{{alert.env_var}}} when it sends."
    )
    sender = _Sender(project, index, alert, event, name, delivery, status)

    @dg.run_status_sensor(
        run_status=status,
        name=name,
        monitored_jobs=jobs,
        description=description,
        minimum_interval_seconds=INTERVAL_SECONDS,
        default_status=dg.DefaultSensorStatus.RUNNING,
    )
    def _sensor(context: dg.RunStatusSensorContext) -> DagsterRunReaction | dg.SkipReason:
        return sender.send(context)

    return _sensor


# --------------------------------------------------------------------------- one alert


@dataclass
class RunFacts:
    """What a message says about one run."""

    project: str
    pipeline: str
    run_id: str
    event: str
    status: str
    failed_nodes: list[str] = field(default_factory=list)
    error: str | None = None
    run_url: str | None = None
    timestamp: str | None = None
    duration_seconds: float | None = None

    @property
    def headline(self) -> str:
        return f"{_ICON[self.event]} {self.project}: pipeline {self.pipeline} {_VERB[self.event]}"


class _Sender:
    """Sends one alert for one event: what the sensor function does for each run."""

    def __init__(
        self,
        project: LoadedProject,
        index: int,
        alert: AlertConfig,
        event: str,
        sensor_name: str,
        delivery: Delivery,
        status: dg.DagsterRunStatus,
    ) -> None:
        self.status = status
        self.project = project
        self.alert = alert
        self.event = event
        self.sensor_name = sensor_name
        self.delivery = delivery
        self.label = f"alerts[{index}] ({alert.type})"

    def send(self, context: dg.RunStatusSensorContext) -> DagsterRunReaction | dg.SkipReason:
        """Send the alert for the run of ``context``. The answer is never None: Dagster then
        ends the tick with this run (a tick may not mix runs acted on with skip reasons),
        so a tick records what became of each alert: acted on (sent), or skipped with the
        reason (not delivered, throttled, no URL)."""
        run = context.dagster_run
        what = f"{self.label}: {self.event} alert for run {run.run_id} of {run.job_name}"
        found: list[tuple[str, str]] = []
        if self.event in _DATA_EVENTS:
            found = _data_events(context, self.event)
            if not found:
                return dg.SkipReason(f"{what}: nothing to send (the run had no {self.event})")
        url = os.environ.get(self.alert.env_var)
        if not url:
            why = (
                f"{what} not sent: environment variable {self.alert.env_var} is not set where "
                "sensors run (the code location's process); export it there"
            )
            context.log.error(why)
            return dg.SkipReason(why)
        if not url.lower().startswith(("http://", "https://")):
            why = f"{what} not sent: {self.alert.env_var} does not hold an http(s) URL"
            context.log.error(why)
            return dg.SkipReason(why)

        now = time.time()
        key = _THROTTLE_KEY.format(
            project=self.project.name, sensor=self.sensor_name, pipeline=run.job_name
        )
        sent = _sent_times(context, key, now)
        throttled = _throttled(sent, now, self.alert)
        if throttled:
            context.log.info(f"{what} throttled: {throttled}")
            return dg.SkipReason(f"{what} throttled: {throttled}")

        secrets = _secrets(self.project)
        facts = run_facts(context, self.project.name, self.event, self.alert, secrets, self.status)
        if found:
            facts.failed_nodes = list(dict.fromkeys(node for node, _ in found))
            text = redact("; ".join(f"{node}: {why}" for node, why in found), secrets)
            facts.error = text if len(text) <= _MAX_ERROR else text[: _MAX_ERROR - 1] + "\u2026"
        payload = build_payload(self.alert, facts)
        failure = post(url, payload, self.delivery)
        if failure:
            why = f"{what} not delivered: {redact(failure, secrets)}"
            context.log.error(why)
            return dg.SkipReason(why)
        _record_send(context, key, [*sent, now])
        context.log.info(f"{what} sent")
        return DagsterRunReaction(dagster_run=run, run_status=self.status)


# --------------------------------------------------------------------------- the run


def run_facts(
    context: dg.RunStatusSensorContext,
    project: str,
    event: str,
    alert: AlertConfig,
    secrets: Iterable[str] = (),
    status: dg.DagsterRunStatus | None = None,
) -> RunFacts:
    """What happened in the run the sensor was called for: for a failure, the nodes that
    failed and the first line of the first error (secrets redacted)."""
    run = context.dagster_run
    facts = RunFacts(
        project=project,
        pipeline=run.job_name,
        run_id=run.run_id,
        event=event,
        status=(status or _STATUS[event]).value,
    )
    base = alert.metadata.dagster_url
    if base:
        facts.run_url = f"{base}/runs/{run.run_id}"
    try:
        stats = context.instance.get_run_stats(run.run_id)
        at = stats.start_time if event == "on_start" else stats.end_time
        if at:
            facts.timestamp = datetime.fromtimestamp(at, timezone.utc).isoformat()
        if event != "on_start" and stats.start_time and stats.end_time:
            facts.duration_seconds = round(stats.end_time - stats.start_time, 2)
    except Exception:
        pass  # the message goes out without times
    if event == "on_failure":
        facts.failed_nodes, error = _failure(context)
        if error:
            text = redact(first_line(error), list(secrets))
            facts.error = text if len(text) <= _MAX_ERROR else text[: _MAX_ERROR - 1] + "\u2026"
    return facts


def _failure(context: dg.RunStatusSensorContext) -> tuple[list[str], str | None]:
    """The failed nodes (asset keys, or step keys where a step has no asset) and the first
    error message: the steps' failures, or the run's own when no step failed (a run that
    could not start)."""
    instance = context.instance
    run = context.dagster_run
    records = instance.get_records_for_run(
        run_id=run.run_id, of_type=dg.DagsterEventType.STEP_FAILURE
    ).records
    steps: list[str] = []
    error: str | None = None
    for record in records:
        event = record.event_log_entry.dagster_event
        if event is None or event.step_key is None:
            continue
        if event.step_key not in steps:
            steps.append(event.step_key)
        if error is None:
            error = _error_text(event.event_specific_data)
    if error is None:
        error = _error_text(context.dagster_event.event_specific_data) or (
            context.dagster_event.message
        )
    assets = _step_assets(instance, run)
    nodes: list[str] = []
    for step in steps:
        nodes.extend(assets.get(step) or [step])
    return list(dict.fromkeys(nodes)), error


def _data_events(context: dg.RunStatusSensorContext, event: str) -> list[tuple[str, str]]:
    """(asset, what happened) for each failed quality gate (``on_gate_block``) or each
    materialization that quarantined rows (``on_quarantine``) of the run."""
    from dagster._core.definitions.asset_checks.asset_check_evaluation import (
        AssetCheckEvaluation,
    )

    from odibi_dagster.quality import GATE_MARK, QUARANTINE_PATH, ROWS_QUARANTINED

    kind = (
        dg.DagsterEventType.ASSET_CHECK_EVALUATION
        if event == "on_gate_block"
        else dg.DagsterEventType.ASSET_MATERIALIZATION
    )
    records = context.instance.get_records_for_run(
        run_id=context.dagster_run.run_id, of_type=kind
    ).records
    out: list[tuple[str, str]] = []
    for record in records:
        data = record.event_log_entry.dagster_event
        found: Any = data.event_specific_data if data is not None else None
        if isinstance(found, AssetCheckEvaluation):
            if GATE_MARK in found.metadata and not found.passed:
                out.append((found.asset_key.to_user_string(), found.description or "gate failed"))
            continue
        mat: Any = getattr(found, "materialization", None)
        if event != "on_quarantine" or mat is None:
            continue
        rows = mat.metadata.get(ROWS_QUARANTINED)
        if rows is not None and isinstance(rows.value, int) and rows.value > 0:
            where = mat.metadata.get(QUARANTINE_PATH)
            to = f" to {where.value}" if where is not None else ""
            out.append((mat.asset_key.to_user_string(), f"{rows.value} rows quarantined{to}"))
    return out


def _error_text(data: Any) -> str | None:
    """The message a person wants from a failure's data: a Failure's description, else the
    innermost error (the user's exception rather than Dagster's wrapper of it)."""
    failure = getattr(data, "user_failure_data", None)
    if failure is not None and failure.description:
        return str(failure.description)
    err = getattr(data, "error", None)
    if err is None:
        return None
    while err.cause is not None:
        err = err.cause
    text = first_line(err.message)
    # "package.module.ValueError: ..." -> "ValueError: ..."
    head, sep, rest = text.partition(": ")
    if sep and head.endswith(err.cls_name) and "." in head:
        return f"{err.cls_name}: {rest}"
    return text


def _step_assets(instance: dg.DagsterInstance, run: dg.DagsterRun) -> dict[str, list[str]]:
    """Step key -> the asset keys its outputs materialize, from the run's plan."""
    try:
        snapshot_id = run.execution_plan_snapshot_id
        if snapshot_id is None:
            return {}
        plan = instance.get_execution_plan_snapshot(snapshot_id)
        out: dict[str, list[str]] = {}
        for step in plan.steps:
            for output in step.outputs:
                props = getattr(output, "properties", None)
                key = getattr(props, "asset_key", None)
                if key is not None:
                    out.setdefault(step.key, []).append(key.to_user_string())
        return out
    except Exception:
        return {}  # the step keys name the nodes well enough


def _secrets(project: LoadedProject) -> list[str]:
    """Values no message may show: every alert's URL (and its path and token, should an
    error quote only part of it), and the connections' secrets set in this process."""
    out: list[str] = []
    for alert in project.config.alerts:
        url = os.environ.get(alert.env_var)
        if url:
            out.extend(_url_parts(url))
    for conn in project.connection_resources().values():
        out += conn.secrets_given()
    return out


def _url_parts(url: str) -> list[str]:
    parts = urllib.parse.urlsplit(url)
    found = [url, parts.path, parts.query, parts.password or ""]
    found += [p for p in parts.path.split("/") if len(p) >= 8]
    found += [v for _, v in urllib.parse.parse_qsl(parts.query) if len(v) >= 8]
    return [p for p in found if len(p) > 1]


# --------------------------------------------------------------------------- throttling


def _throttled(sent: list[float], now: float, alert: AlertConfig) -> str | None:
    """Why an alert is held back, or None: Odibi's ``throttle_minutes`` (since the last
    alert for this pipeline and event) and ``max_per_hour``."""
    m = alert.metadata
    if m.throttle_minutes and sent and now - max(sent) < m.throttle_minutes * 60:
        minutes = (now - max(sent)) / 60
        return (
            f"the last one was sent {minutes:.1f} min ago (throttle_minutes: {m.throttle_minutes})"
        )
    if len(sent) >= m.max_per_hour:
        return f"{len(sent)} sent in the last hour (max_per_hour: {m.max_per_hour})"
    return None


def _sent_times(context: dg.RunStatusSensorContext, key: str, now: float) -> list[float]:
    """When this alert was sent for this pipeline in the last hour. Kept in the instance's
    key-value store: a run-status sensor's own cursor belongs to Dagster."""
    try:
        raw = context.instance.daemon_cursor_storage.get_cursor_values({key}).get(key)
        times = [float(t) for t in json.loads(raw)] if raw else []
    except Exception as exc:
        context.log.warning(f"alert throttling state unreadable ({type(exc).__name__}); ignored")
        return []
    return [t for t in times if now - t < 3600]


def _record_send(context: dg.RunStatusSensorContext, key: str, times: list[float]) -> None:
    try:
        context.instance.daemon_cursor_storage.set_cursor_values({key: json.dumps(times)})
    except Exception as exc:
        context.log.warning(f"alert throttling state not saved ({type(exc).__name__})")


# --------------------------------------------------------------------------- payloads


def build_payload(alert: AlertConfig, facts: RunFacts) -> dict[str, Any]:
    """The JSON body for the alert's ``type``."""
    if alert.type == "slack":
        return slack_payload(facts, alert.metadata.channel)
    if alert.type == "teams":
        return teams_payload(facts, alert.metadata.mentions)
    return webhook_payload(facts)


def webhook_payload(facts: RunFacts) -> dict[str, Any]:
    """A plain JSON object; ``event_type``, ``message``, ``duration`` and ``timestamp`` are
    the names Odibi's generic webhook uses."""
    return {
        "project": facts.project,
        "pipeline": facts.pipeline,
        "run_id": facts.run_id,
        "status": facts.status,
        "event": facts.event,
        "event_type": facts.event,
        "failed_nodes": facts.failed_nodes,
        "error": facts.error,
        "run_url": facts.run_url,
        "message": _plain_text(facts),
        "timestamp": facts.timestamp,
        "duration": facts.duration_seconds,
    }


def _plain_text(facts: RunFacts) -> str:
    lines = [f"{facts.headline} (run {facts.run_id})"]
    if facts.failed_nodes:
        lines.append(f"Failed: {', '.join(facts.failed_nodes)}")
    if facts.error:
        lines.append(f"Error: {facts.error}")
    if facts.run_url:
        lines.append(facts.run_url)
    return "\n".join(lines)


def _slack_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_payload(facts: RunFacts, channel: str | None = None) -> dict[str, Any]:
    """A Slack message: ``text`` (what notifications show) and Block Kit ``blocks``."""
    esc = _slack_escape
    run = f"<{facts.run_url}|{facts.run_id}>" if facts.run_url else f"`{facts.run_id}`"
    text = [f"{esc(facts.headline)} (run {run})"]
    fields = [
        {"type": "mrkdwn", "text": f"*Project:*\n{esc(facts.project)}"},
        {"type": "mrkdwn", "text": f"*Pipeline:*\n{esc(facts.pipeline)}"},
        {"type": "mrkdwn", "text": f"*Status:*\n{facts.status}"},
        {"type": "mrkdwn", "text": f"*Run:*\n{run}"},
    ]
    if facts.duration_seconds is not None:
        fields.append({"type": "mrkdwn", "text": f"*Duration:*\n{facts.duration_seconds:.2f}s"})
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": facts.headline[:150]}},
        {"type": "section", "fields": fields},
    ]
    if facts.failed_nodes or facts.error:
        detail = []
        if facts.failed_nodes:
            nodes = ", ".join(f"`{esc(n)}`" for n in facts.failed_nodes)
            detail.append(f"*Failed:* {nodes}")
            text.append(f"Failed: {nodes}")
        if facts.error:
            detail.append(f"*Error:* {esc(facts.error)}")
            text.append(f"Error: {esc(facts.error)}")
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": "\n".join(detail)}})
    if facts.run_url:
        blocks.append(
            {
                "type": "actions",
                "elements": [
                    {
                        "type": "button",
                        "text": {"type": "plain_text", "text": "View run in Dagster"},
                        "url": facts.run_url,
                    }
                ],
            }
        )
    payload: dict[str, Any] = {"text": "\n".join(text), "blocks": blocks}
    if channel:
        payload["channel"] = channel
    return payload


def teams_payload(facts: RunFacts, mentions: Sequence[str] = ()) -> dict[str, Any]:
    """A Teams message holding an Adaptive Card (what Teams workflows and incoming webhooks
    accept)."""
    facts_set = [
        {"title": "Project", "value": facts.project},
        {"title": "Pipeline", "value": facts.pipeline},
        {"title": "Status", "value": facts.status},
        {"title": "Run", "value": facts.run_id},
    ]
    if facts.duration_seconds is not None:
        facts_set.append({"title": "Duration", "value": f"{facts.duration_seconds:.2f}s"})
    if facts.failed_nodes:
        facts_set.append({"title": "Failed", "value": ", ".join(facts.failed_nodes)})
    body: list[dict[str, Any]] = [
        {
            "type": "TextBlock",
            "text": facts.headline,
            "weight": "Bolder",
            "size": "Medium",
            "color": _TEAMS_COLOR[facts.event],
            "wrap": True,
        },
        {"type": "FactSet", "facts": facts_set},
    ]
    if facts.error:
        body.append({"type": "TextBlock", "text": facts.error, "wrap": True, "isSubtle": True})
    card: dict[str, Any] = {
        "type": "AdaptiveCard",
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "version": "1.4",
        "body": body,
        "msteams": {"width": "Full"},
    }
    if mentions:
        tags = [f"<at>{m}</at>" for m in mentions]
        body.append({"type": "TextBlock", "text": " ".join(tags), "wrap": True})
        card["msteams"]["entities"] = [
            {"type": "mention", "text": tag, "mentioned": {"id": m, "name": m}}
            for tag, m in zip(tags, mentions, strict=True)
        ]
    if facts.run_url:
        card["actions"] = [
            {"type": "Action.OpenUrl", "title": "View run in Dagster", "url": facts.run_url}
        ]
    return {
        "type": "message",
        "attachments": [
            {
                "contentType": "application/vnd.microsoft.card.adaptive",
                "contentUrl": None,
                "content": card,
            }
        ],
    }


# --------------------------------------------------------------------------- sending


def post(url: str, payload: Mapping[str, Any], delivery: Delivery) -> str | None:
    """POST ``payload`` as JSON; None once an attempt is answered with a status below 400,
    else why the last attempt failed: an HTTP status and the start of the answer, or an
    error's class and the operating system's words, never the URL (urllib's and
    http.client's own messages may quote it)."""
    body = json.dumps(payload).encode("utf-8")
    deadline = time.monotonic() + delivery.budget_seconds
    wait = delivery.backoff_seconds
    why = "not attempted"
    for attempt in range(1, delivery.attempts + 1):
        left = deadline - time.monotonic()
        if left <= 0:
            break
        request = urllib.request.Request(
            url,
            data=body,
            method="POST",
            headers={"Content-Type": "application/json", "User-Agent": "odibi_dagster"},
        )
        try:
            with urllib.request.urlopen(request, timeout=min(delivery.timeout_seconds, left)) as r:
                r.read(1024)
            return None
        except urllib.error.HTTPError as exc:
            why = f"HTTP {exc.code}{_answer(exc)}"
        except Exception as exc:
            why = _reason(exc)
        why = f"{why} (attempt {attempt} of {delivery.attempts})"
        if attempt < delivery.attempts and time.monotonic() + wait < deadline:
            time.sleep(wait)
            wait *= 2
    return why


def _answer(exc: urllib.error.HTTPError) -> str:
    """``: <the start of the answer>`` (Slack says what is wrong there: ``no_service``,
    ``invalid_payload``); the caller redacts it, in case a server quotes the request."""
    try:
        text = first_line(exc.read(200).decode("utf-8", "replace"))
    except Exception:
        text = ""
    finally:
        exc.close()
    return f": {text[:80]}" if text else ""


def _reason(exc: BaseException) -> str:
    """An error's class and, for a system error, its words, which hold no URL (urllib's and
    http.client's own messages may quote it)."""
    inner = exc.reason if isinstance(exc, urllib.error.URLError) else exc
    if not isinstance(inner, BaseException):
        return type(exc).__name__
    if isinstance(inner, socket.timeout | TimeoutError):
        return "timed out"
    if isinstance(inner, OSError) and inner.strerror:
        return f"{type(inner).__name__}: {inner.strerror}"
    return type(inner).__name__
