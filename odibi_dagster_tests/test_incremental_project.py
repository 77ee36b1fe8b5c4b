"""One project that uses every idempotent and incremental feature at once, run batch by
batch on pandas and on Spark, on local disk and on Azure storage (Azurite): the tables it
leaves equal an independent pandas computation of what they should hold, so the two
engines give the same answer from the same YAML.

The project (``PROJECT``), three batches landing one after another in ``landing/``:

- ``load``: ``customers`` upserted by ``customer_id`` into a Delta table and a Parquet
  file; ``events`` written ``append_once`` by ``event_id`` (a batch repeats some events).
- ``stream``: ``processed`` reads the events table ``stateful`` on ``batch`` (each event
  once, whatever run it landed in) and appends; ``recent`` reads it with a two-day
  ``rolling_window`` on ``event_ts``.
- ``daily`` (daily partitions): each day's totals replace that day in a Delta table
  (``partition_column``); a late event makes the rerun of its day change that day only.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd
import pytest

import odibi_dagster
from odibi_dagster.engines.pandas import PandasEngine
from odibi_dagster.incremental import ROWS_READ_KEY
from odibi_dagster.resources.azure_adls import AzureADLS
from odibi_dagster.resources.base import Location
from odibi_dagster.resources.local import LocalStorage
from odibi_dagster_tests.emulators.azurite import AzuriteService
from odibi_dagster_tests.emulators.fixtures import DEV_ACCOUNT, DEV_KEY
from odibi_dagster_tests.support.runs import failure_text, run_job

NOW = datetime.now(timezone.utc).replace(microsecond=0)


def ts(days_ago: float) -> str:
    return (NOW - timedelta(days=days_ago)).strftime("%Y-%m-%d %H:%M:%S")


# (customer_id, name, tier) and (event_id, customer_id, amount, event_date, days ago)
BATCHES: list[tuple[list[tuple[str, str, str]], list[tuple[int, str, float, str, float]]]] = [
    (
        [("c1", "Ann", "silver"), ("c2", "Bob", "bronze"), ("c3", "Cy", "gold")],
        [
            (1, "c1", 10.0, "2024-01-01", 9),
            (2, "c2", 5.5, "2024-01-01", 8),
            (3, "c1", 7.25, "2024-01-02", 5),
            (4, "c3", 1.0, "2024-01-02", 4),
        ],
    ),
    (
        [("c2", "Bob", "silver"), ("c4", "Di", "bronze")],  # c2 changed tier, c4 new
        [
            (3, "c1", 7.25, "2024-01-02", 5),  # sent again: already there
            (4, "c3", 1.0, "2024-01-02", 4),
            (5, "c4", 20.0, "2024-01-03", 1.5),
            (6, "c2", 3.0, "2024-01-03", 1),
        ],
    ),
    (
        [("c1", "Ann", "gold")],
        [
            (6, "c2", 3.0, "2024-01-03", 1),  # sent again
            (7, "c3", 8.0, "2024-01-03", 0.5),
            (8, "c4", 2.5, "2024-01-01", 0.25),  # a late event of the first day
        ],
    ),
]
DAYS = ["2024-01-01", "2024-01-02", "2024-01-03"]

PROJECT = """
engine: {engine}
connections:
  lake: {lake}
pipelines:
  - pipeline: load
    nodes:
      - name: batch_customers
        read: {{connection: lake, path: landing/customers.csv, format: csv}}
      - name: batch_events
        read: {{connection: lake, path: landing/events.csv, format: csv}}
      - name: customers
        depends_on: [batch_customers]
        transform: {{steps: ["SELECT customer_id, name, tier FROM batch_customers"]}}
        write:
          connection: lake
          path: silver/customers
          format: delta
          mode: upsert
          options: {{keys: [customer_id]}}
      - name: customers_file
        depends_on: [customers]
        write:
          connection: lake
          path: silver/customers.parquet
          format: parquet
          mode: upsert
          options: {{keys: [customer_id]}}
      - name: events
        depends_on: [batch_events]
        transform:
          steps:
            - >-
              SELECT event_id, customer_id, amount, event_date,
                     CAST(event_ts AS TIMESTAMP) AS event_ts, batch
              FROM batch_events
        write:
          connection: lake
          path: silver/events
          format: delta
          mode: append_once
          options: {{keys: [event_id]}}

  - pipeline: stream
    nodes:
      - name: processed
        read:
          connection: lake
          path: silver/events
          format: delta
          incremental: {{mode: stateful, column: batch}}
        transform: {{steps: ["SELECT event_id, amount * 2 AS doubled FROM __result__"]}}
        write: {{connection: lake, path: gold/processed, format: delta, mode: append}}
      - name: recent
        read:
          connection: lake
          path: silver/events
          format: delta
          incremental: {{mode: rolling_window, column: event_ts, lookback: 2, unit: day}}
        transform: {{steps: ["SELECT event_id, customer_id, amount FROM __result__"]}}
        write: {{connection: lake, path: gold/recent, format: delta}}

  - pipeline: daily
    partitions: {{type: daily, start: 2024-01-01, timezone: UTC}}
    nodes:
      - name: day_totals
        read: {{connection: lake, path: silver/events, format: delta}}
        transform:
          steps:
            - >-
              SELECT event_date, COUNT(*) AS events, ROUND(SUM(amount), 2) AS amount
              FROM __result__ WHERE event_date = '${{partition}}' GROUP BY event_date
        write:
          connection: lake
          path: gold/day_totals
          format: delta
          options: {{partition_column: event_date}}
"""


@dataclass
class Storage:
    """Where the project's ``lake`` connection points, and how a test puts files there."""

    connection: dict[str, Any]
    resource: LocalStorage | AzureADLS
    put: Callable[[str, bytes], None]

    def location(self, path: str) -> Location:
        return self.resource.location(path)


def local_storage(root: Path) -> Storage:
    base = root / "lake"
    base.mkdir()

    def put(path: str, data: bytes) -> None:
        (base / path).parent.mkdir(parents=True, exist_ok=True)
        (base / path).write_bytes(data)

    return Storage(
        {"type": "local", "base_path": str(base)}, LocalStorage(base_path=str(base)), put
    )


def azure_storage(azurite: AzuriteService, monkeypatch: pytest.MonkeyPatch) -> Storage:
    """A fresh container in devstoreaccount1 (the account Spark reaches through the
    emulator), the key in an environment variable."""
    container = f"incr-{uuid.uuid4().hex[:10]}"
    azurite.create_container(DEV_ACCOUNT, container)
    env_var = f"INCR_KEY_{uuid.uuid4().hex[:8].upper()}"
    monkeypatch.setenv(env_var, DEV_KEY)
    fields = {
        "account": DEV_ACCOUNT,
        "container": container,
        "auth_mode": "direct_key",
        "blob_endpoint": azurite.blob_endpoint(DEV_ACCOUNT),
    }
    resource = AzureADLS(**fields, account_key=DEV_KEY, connection_name="lake")
    return Storage(
        {"type": "azure_adls", **fields, "account_key": "${" + env_var + "}"},
        resource,
        lambda path, data: azurite.upload_blob(DEV_ACCOUNT, container, path, data),
    )


def land(storage: Storage, n: int) -> None:
    customers, events = BATCHES[n]
    c = pd.DataFrame(customers, columns=["customer_id", "name", "tier"])
    e = pd.DataFrame(
        [(i, cid, amt, day, ts(ago), n + 1) for i, cid, amt, day, ago in events],
        columns=["event_id", "customer_id", "amount", "event_date", "event_ts", "batch"],
    )
    storage.put("landing/customers.csv", c.to_csv(index=False).encode())
    storage.put("landing/events.csv", e.to_csv(index=False).encode())


# ------------------------------------------------------------------ the expected tables,
# computed from BATCHES with plain pandas, independently of the project


def expected() -> dict[str, list[tuple[Any, ...]]]:
    customers: dict[str, tuple[str, str, str]] = {}
    events: dict[int, tuple[int, str, float, str, float]] = {}
    for batch_customers, batch_events in BATCHES:
        customers.update({c[0]: c for c in batch_customers})  # the latest version wins
        for e in batch_events:
            events.setdefault(e[0], e)  # the first one that landed stays
    frame = pd.DataFrame(list(events.values()), columns=["id", "cid", "amount", "day", "ago"])
    totals = frame.groupby("day").agg(events=("id", "size"), amount=("amount", "sum"))
    return {
        "customers": sorted(customers.values()),
        "processed": sorted((i, e[2] * 2) for i, e in events.items()),
        "recent": sorted((i, e[1], e[2]) for i, e in events.items() if e[4] <= 2),
        "day_totals": [(d, int(r.events), round(r.amount, 2)) for d, r in totals.iterrows()],
    }


def rows(storage: Storage, path: str, fmt: str, columns: list[str]) -> list[tuple[Any, ...]]:
    """What the project left at ``path``, read with pandas (delta-rs, pyarrow)."""
    df = PandasEngine().read(storage.location(path), fmt)
    out = []
    for rec in df[columns].itertuples(index=False):
        out.append(tuple(round(v, 2) if isinstance(v, float) else _plain(v) for v in rec))
    return sorted(out)


def _plain(v: Any) -> Any:
    return v.item() if hasattr(v, "item") else v


def run(defs: dg.Definitions, job: str, partition: str | None = None) -> dict[str, Any]:
    """Run ``job`` (one partition of it) on the current instance; each asset's metadata."""
    result = run_job(defs, job, instance=dg.DagsterInstance.get(), partition_key=partition)
    assert result.success, failure_text(result)
    return {
        e.asset_key.path[-1]: {
            k: getattr(v, "value", v) for k, v in e.materialization.metadata.items()
        }
        for e in result.get_asset_materialization_events()
    }


def run_project(storage: Storage, root: Path, engine: str) -> dict[str, list[Any]]:
    """Land the three batches one by one, running the project after each; what each run
    read and wrote, per batch."""
    project = root / "project.yaml"
    project.write_text(PROJECT.format(engine=engine, lake=json.dumps(storage.connection)))
    defs = odibi_dagster.load_definitions(project)
    seen: dict[str, list[Any]] = {"read": [], "inserted": [], "updated": []}
    for n in range(len(BATCHES)):
        land(storage, n)
        load = run(defs, "load")
        seen["inserted"].append(
            (load["customers"]["odibi/rows_inserted"], load["events"]["odibi/rows_inserted"])
        )
        seen["updated"].append(load["customers"]["odibi/rows_updated"])
        seen["read"].append(run(defs, "stream")["processed"][ROWS_READ_KEY])
        days = sorted({e[3] for e in BATCHES[n][1]})
        for day in days:
            run(defs, "daily", day)
        if n == 0:
            # the same batch again changes nothing: upsert and append_once are idempotent,
            # the stateful read finds no new rows, a day run twice gives the same totals
            before = {p: rows(storage, p, "delta", cols) for p, cols in TABLES.items()}
            again = run(defs, "load")
            assert again["events"]["odibi/rows_inserted"] == 0
            assert again["customers"]["odibi/rows_inserted"] == 0
            assert run(defs, "stream")["processed"][ROWS_READ_KEY] == 0
            run(defs, "daily", days[0])
            assert {p: rows(storage, p, "delta", cols) for p, cols in TABLES.items()} == before
    return seen


TABLES = {
    "silver/customers": ["customer_id", "name", "tier"],
    "gold/processed": ["event_id", "doubled"],
    "gold/day_totals": ["event_date", "events", "amount"],
}


def check(storage: Storage, seen: dict[str, list[Any]]) -> None:
    want = expected()
    assert (
        rows(storage, "silver/customers", "delta", TABLES["silver/customers"]) == want["customers"]
    )
    assert (
        rows(storage, "silver/customers.parquet", "parquet", TABLES["silver/customers"])
        == want["customers"]
    )
    assert rows(storage, "gold/processed", "delta", TABLES["gold/processed"]) == want["processed"]
    assert (
        rows(storage, "gold/recent", "delta", ["event_id", "customer_id", "amount"])
        == want["recent"]
    )
    assert (
        rows(storage, "gold/day_totals", "delta", TABLES["gold/day_totals"]) == want["day_totals"]
    )
    events = rows(storage, "silver/events", "delta", ["event_id"])
    assert events == sorted(set(events))  # each event once
    # each run read only the events that were new to it; inserts and updates per batch
    assert seen["read"] == [4, 2, 2]
    assert seen["inserted"] == [(3, 4), (1, 2), (0, 2)]
    assert seen["updated"] == [0, 1, 1]


ENGINES = ["pandas", pytest.param("spark", marks=pytest.mark.spark)]


@pytest.mark.parametrize("engine", ENGINES)
def test_same_yaml_same_answer_on_local_disk(engine: str, tmp_path: Path, dagster_home: Path):
    storage = local_storage(tmp_path)
    check(storage, run_project(storage, tmp_path, engine))


@pytest.mark.parametrize("engine", ENGINES)
def test_same_yaml_same_answer_on_azure_storage(
    engine: str,
    tmp_path: Path,
    dagster_home: Path,
    azurite_devstore: AzuriteService,
    monkeypatch: pytest.MonkeyPatch,
):
    storage = azure_storage(azurite_devstore, monkeypatch)
    check(storage, run_project(storage, tmp_path, engine))
