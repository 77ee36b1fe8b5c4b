"""Partitions: one run computes one partition; ``${partition}`` placeholders; a
partitioned Delta write replaces just its partition; backfills through the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import dagster as dg
import deltalake
import pandas as pd
import pytest

import odibi_dagster
from odibi_dagster import load_project
from odibi_dagster.automation import scheduled_partitions
from odibi_dagster.partitions import Partition, fill, partition_of, partitioned_write
from odibi_dagster_tests.support.cli import run_cli
from odibi_dagster_tests.support.runs import failure_text

DAYS = ["2024-01-01", "2024-01-02", "2024-01-03"]


@pytest.fixture(params=["pandas", pytest.param("spark", marks=pytest.mark.spark)])
def engine_name(request: pytest.FixtureRequest) -> str:
    """Each engine in turn (Spark: the suite's one local session)."""
    if request.param == "spark":
        request.getfixturevalue("spark")
    return str(request.param)


def _project(tmp_path: Path, body: str, engine: str = "pandas") -> Path:
    text = textwrap.dedent(
        f"""\
        project: parts
        engine: {engine}
        connections:
          lake: {{type: local, base_path: {tmp_path / "lake"}}}
        story: {{connection: lake, path: stories}}
        """
    ) + textwrap.dedent(body)
    path = tmp_path / "p.yaml"
    path.write_text(text)
    return path


def _raw_day(tmp_path: Path, day: str, amounts: list[int]) -> None:
    raw = tmp_path / "lake" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"day": [day] * len(amounts), "amount": amounts}).to_csv(
        raw / f"sales_{day}.csv", index=False
    )


def _run(defs: dg.Definitions, key: str, job: str = "p") -> dg.ExecuteInProcessResult:
    return defs.resolve_job_def(job).execute_in_process(
        instance=dg.DagsterInstance.get(), partition_key=key, raise_on_error=False
    )


DELTA_PIPELINE = """\
pipelines:
  - pipeline: p
    partitions: {type: daily, start: 2024-01-01}
    nodes:
      - name: sales
        read: {connection: lake, path: "raw/sales_${partition}.csv", format: csv}
        validation: {not_empty: true}
      - name: totals
        depends_on: [sales]
        validation: {no_nulls: [day]}
        transform:
          steps:
            - "SELECT day, amount * 10 AS amount, '${partition.start}' AS w_start,
               '${partition.end}' AS w_end FROM sales"
        write:
          connection: lake
          path: gold/totals
          format: delta
          options: {partition_column: day}
"""


def _three_days_then_rerun_the_middle(tmp_path: Path, project: Path) -> pd.DataFrame:
    for i, day in enumerate(DAYS):
        _raw_day(tmp_path, day, [i + 1, i + 2])
    defs = odibi_dagster.load_definitions(project)
    for day in DAYS:
        result = _run(defs, day)
        assert result.success, failure_text(result)
    _raw_day(tmp_path, DAYS[1], [100])  # the middle day's input changes
    result = _run(defs, DAYS[1])
    assert result.success, failure_text(result)
    return result


def _delta_rows(path: Path) -> list[tuple[Any, ...]]:
    df = deltalake.DeltaTable(str(path)).to_pandas()
    df["day"] = df["day"].astype(str)  # Spark reads the CSV's days as dates
    df["amount"] = df["amount"].astype(int)
    return sorted(df[["day", "amount", "w_start", "w_end"]].itertuples(index=False, name=None))


EXPECTED_DELTA = [
    ("2024-01-01", 10, "2024-01-01", "2024-01-02"),
    ("2024-01-01", 20, "2024-01-01", "2024-01-02"),
    ("2024-01-02", 1000, "2024-01-02", "2024-01-03"),
    ("2024-01-03", 30, "2024-01-03", "2024-01-04"),
    ("2024-01-03", 40, "2024-01-03", "2024-01-04"),
]


def test_a_delta_partition_column_write_replaces_only_the_runs_day(
    tmp_path, dagster_home, engine_name
):
    project = _project(tmp_path, DELTA_PIPELINE, engine_name)
    result = _three_days_then_rerun_the_middle(tmp_path, project)
    assert _delta_rows(tmp_path / "lake" / "gold" / "totals") == EXPECTED_DELTA
    # the materialization names the partition and the rows it replaced
    (mat,) = [
        e.event_specific_data.materialization
        for e in result.all_events
        if e.event_type == dg.DagsterEventType.ASSET_MATERIALIZATION
    ]
    assert mat.partition == "2024-01-02"
    assert mat.metadata["replaced_where"].value == ("day >= '2024-01-02' AND day < '2024-01-03'")
    # so does the run's story
    story_dir = tmp_path / "lake" / "stories" / "p" / result.run_id
    doc = json.loads((story_dir / "story.json").read_text())
    assert {n["node"]: n["partition"] for n in doc["nodes"]} == {
        "sales": "2024-01-02",
        "totals": "2024-01-02",
    }
    assert "partition <code>2024-01-02</code>" in (story_dir / "story.html").read_text()


def test_rows_outside_the_partition_fail_the_write_and_keep_the_table(
    tmp_path, dagster_home, engine_name
):
    project = _project(tmp_path, DELTA_PIPELINE, engine_name)
    _raw_day(tmp_path, DAYS[0], [1])
    defs = odibi_dagster.load_definitions(project)
    assert _run(defs, DAYS[0]).success
    raw = tmp_path / "lake" / "raw" / f"sales_{DAYS[1]}.csv"
    raw.write_text(f"day,amount\n{DAYS[1]},5\n{DAYS[0]},7\n")  # a stray row of day 1
    result = _run(defs, DAYS[1])
    assert not result.success
    assert "node 'totals' (" in failure_text(result)
    assert _delta_rows(tmp_path / "lake" / "gold" / "totals") == [EXPECTED_DELTA[0]]


PARQUET_PIPELINE = """\
pipelines:
  - pipeline: p
    partitions: {type: daily, start: 2024-01-01}
    nodes:
      - name: sales
        read: {connection: lake, path: "raw/sales_${partition}.csv", format: csv}
      - name: totals
        depends_on: [sales]
        transform:
          steps: ["SELECT day, amount * 10 AS amount FROM sales"]
        write: {connection: lake, path: "gold/totals/day=${partition}/part.parquet",
                format: parquet}
      - name: report
        depends_on: [totals]
        transform:
          steps: ["SELECT day, SUM(amount) AS total FROM totals GROUP BY day"]
"""


def test_a_parquet_path_with_the_partition_holds_one_file_per_day(
    tmp_path, dagster_home, engine_name
):
    project = _project(tmp_path, PARQUET_PIPELINE, engine_name)
    _three_days_then_rerun_the_middle(tmp_path, project)
    gold = tmp_path / "lake" / "gold" / "totals"
    assert sorted(p.name for p in gold.iterdir()) == [f"day={d}" for d in DAYS]
    got = {d: sorted(pd.read_parquet(gold / f"day={d}" / "part.parquet")["amount"]) for d in DAYS}
    assert got == {DAYS[0]: [10, 20], DAYS[1]: [1000], DAYS[2]: [30, 40]}


def test_a_downstream_alone_reads_the_result_of_its_own_partition(tmp_path, dagster_home):
    """The intermediate store is keyed by run, and a run computes one partition: a node
    materialized on its own reads the upstream result of the same partition."""
    project = _project(
        tmp_path,
        PARQUET_PIPELINE.replace(
            "gold/totals/day=${partition}/part.parquet", "gold/t_${partition}.csv"
        ).replace("format: parquet", "format: csv"),
    )
    for i, day in enumerate(DAYS[:2]):
        _raw_day(tmp_path, day, [i + 1])
    defs = odibi_dagster.load_definitions(project)
    for day in DAYS[:2]:
        assert _run(defs, day).success
    instance = dg.DagsterInstance.get()
    report = dg.AssetKey(["p", "report"])
    job = defs.resolve_implicit_global_asset_job_def()
    for day, total in ((DAYS[0], 10), (DAYS[1], 20)):
        result = job.get_subset(asset_selection={report}).execute_in_process(
            instance=instance, partition_key=day, raise_on_error=False
        )
        assert result.success, failure_text(result)
        assert result.asset_value(report)["total"].tolist() == [total]


@pytest.mark.slow
def test_partitions_under_the_multiprocess_executor(tmp_path, dagster_home):
    """Each step in a process of its own reads its input's result of the run's day."""
    project = _project(
        tmp_path,
        PARQUET_PIPELINE.replace(
            "  - pipeline: p\n", "  - pipeline: p\n    executor: multiprocess\n"
        ),
    )
    for i, day in enumerate(DAYS[:2]):
        _raw_day(tmp_path, day, [i + 1, i + 2])
    for day in DAYS[:2]:
        result = dg.execute_job(
            dg.build_reconstructable_job(
                "odibi_dagster.cli", "pipeline_job", reconstructable_args=(str(project), "p")
            ),
            instance=dg.DagsterInstance.get(),
            tags={"dagster/partition": day},
        )
        assert result.success
    gold = tmp_path / "lake" / "gold" / "totals"
    assert sorted(pd.read_parquet(gold / f"day={DAYS[1]}" / "part.parquet")["amount"]) == [20, 30]


def test_a_run_for_no_partition_fails_naming_the_node(tmp_path, dagster_home):
    project = _project(tmp_path, DELTA_PIPELINE)
    defs = odibi_dagster.load_definitions(project)
    result = defs.resolve_job_def("p").execute_in_process(
        instance=dg.DagsterInstance.get(), raise_on_error=False
    )
    assert not result.success
    assert "node 'sales' (" in failure_text(result)
    assert "names the partition, but this run computes none" in failure_text(result)
    assert not (tmp_path / "lake" / "gold").exists()


# --------------------------------------------------------------------------- placeholders


def test_placeholders_fill_from_the_partition_and_leave_the_rest():
    day = Partition("2024-01-02", "2024-01-02", "2024-01-03")
    assert fill({"p": ["a/${partition}/${partition.start}..${partition.end}"]}, day, "w") == {
        "p": ["a/2024-01-02/2024-01-02..2024-01-03"]
    }
    assert fill("x_${OTHER}", day, "w") == "x_${OTHER}"
    region = Partition("eu")
    write = {"path": "t", "format": "delta", "options": {"partition_column": "region"}}
    assert partitioned_write(write, region, "w") == {
        "path": "t",
        "format": "delta",
        "options": {"predicate": "region = 'eu'"},
    }


@pytest.mark.parametrize(
    ("definition", "key", "start", "end"),
    [
        (
            dg.HourlyPartitionsDefinition("2024-01-01-00:00"),
            "2024-01-05-13:00",
            "2024-01-05T13:00:00",
            "2024-01-05T14:00:00",
        ),
        (
            dg.DailyPartitionsDefinition("2024-01-01", timezone="Europe/Amsterdam"),
            "2024-03-31",
            "2024-03-31",
            "2024-04-01",
        ),
        (dg.WeeklyPartitionsDefinition("2024-01-01"), "2024-01-07", "2024-01-07", "2024-01-14"),
        (dg.MonthlyPartitionsDefinition("2024-01-01"), "2024-02-01", "2024-02-01", "2024-03-01"),
    ],
    ids=["hourly", "daily_in_a_zone", "weekly", "monthly"],
)
def test_window_placeholders_are_iso_dates_or_hourly_timestamps(definition, key, start, end):
    window = definition.time_window_for_partition_key(key)
    assert partition_of(key, window, definition) == Partition(key, start, end)


def test_env_substitution_leaves_the_partition_placeholders(tmp_path, monkeypatch):
    monkeypatch.setenv("ZONE", "raw")
    monkeypatch.setenv("partition", "not me")
    project = _project(
        tmp_path,
        """\
        pipelines:
          - pipeline: p
            partitions: {type: static, values: [eu, us]}
            nodes:
              - name: sales
                read: {connection: lake, path: "${ZONE}/${partition}.csv", format: csv}
        """,
    )
    loaded = load_project(project)
    read = loaded.config.pipelines[0].nodes[0].read
    assert read is not None and read.path == "raw/${partition}.csv"


def test_compiled_assets_and_job_carry_the_partitions(tmp_path, dagster_home):
    project = _project(
        tmp_path,
        """\
        pipelines:
          - pipeline: up
            partitions: {type: daily, start: 2024-01-01, timezone: Europe/Amsterdam}
            nodes:
              - name: sales
                read: {connection: lake, path: "raw/${partition}.csv", format: csv}
              - name: daily
                depends_on: [sales]
                write: {connection: lake, path: gold/daily, format: delta,
                        options: {partition_column: day}}
          - pipeline: down
            partitions: {type: daily, start: 2024-01-01, timezone: Europe/Amsterdam}
            nodes:
              - name: report
                read: {connection: lake, path: gold/daily, format: delta}
                transform: {steps: ["SELECT * FROM __result__ WHERE day = '${partition}'"]}
          - pipeline: regions
            partitions: {type: static, values: [eu, us]}
            nodes:
              - name: by_region
                read: {connection: lake, path: gold/daily, format: delta}
                write: {connection: lake, path: "regions/${partition}.parquet", format: parquet}
        """,
    )
    defs = odibi_dagster.load_definitions(project)
    graph = defs.resolve_asset_graph()
    daily = graph.get(dg.AssetKey(["up", "daily"])).partitions_def
    assert isinstance(daily, dg.DailyPartitionsDefinition)
    assert daily.timezone == "Europe/Amsterdam"
    assert graph.get(dg.AssetKey(["up", "sales"])).partitions_def == daily
    assert defs.resolve_job_def("up").partitions_def == daily
    # a daily reader of a daily writer in another pipeline: day to day
    report = dg.AssetKey(["down", "report"])
    mapping = graph.get_partition_mapping(report, dg.AssetKey(["up", "daily"]))
    assert isinstance(mapping, (dg.IdentityPartitionMapping, dg.TimeWindowPartitionMapping))
    assert mapping.get_upstream_mapped_partitions_result_for_partitions(
        daily.subset_with_partition_keys(["2024-01-02"]), daily, daily
    ).partitions_subset.get_partition_keys() == ["2024-01-02"]
    # static regions over daily data: every day
    mapping = graph.get_partition_mapping(
        dg.AssetKey(["regions", "by_region"]), dg.AssetKey(["up", "daily"])
    )
    assert isinstance(mapping, dg.AllPartitionMapping)
    # and a day of the reader reads that day of what the writer wrote
    for i, day in enumerate(DAYS[:2]):
        raw = tmp_path / "lake" / "raw"
        raw.mkdir(parents=True, exist_ok=True)
        (raw / f"{day}.csv").write_text(f"day,amount\n{day},{i + 1}\n")
        assert _run(defs, day, "up").success
    result = _run(defs, DAYS[1], "down")
    assert result.success, failure_text(result)
    assert result.asset_value(report)["amount"].tolist() == [2]


def test_a_schedule_on_a_partitioned_pipeline_requests_the_latest_day():
    daily = dg.DailyPartitionsDefinition(start_date="2024-01-01")
    import datetime as dt

    at = dt.datetime(2024, 3, 5, 6, 0, tzinfo=dt.timezone.utc)
    (req,) = scheduled_partitions(daily, at)  # type: ignore[misc]
    assert req.partition_key == "2024-03-04"
    regions = scheduled_partitions(dg.StaticPartitionsDefinition(["eu", "us"]), at)
    assert [r.partition_key for r in regions] == ["eu", "us"]  # type: ignore[union-attr]


def test_a_compiled_schedule_on_a_daily_pipeline_runs_yesterday(tmp_path, dagster_home):
    project = _project(
        tmp_path,
        DELTA_PIPELINE.replace(
            "    partitions: {type: daily, start: 2024-01-01}",
            '    partitions: {type: daily, start: 2024-01-01}\n    schedule: "0 6 * * *"',
        ),
    )
    defs = odibi_dagster.load_definitions(project)
    schedule = defs.resolve_schedule_def("p_schedule")
    import datetime as dt

    at = dt.datetime(2024, 2, 10, 6, 0, tzinfo=dt.timezone.utc)
    with dg.build_schedule_context(
        instance=dg.DagsterInstance.get(),
        scheduled_execution_time=at,
        repository_def=defs.get_repository_def(),
    ) as context:
        data = schedule.evaluate_tick(context)
    assert [r.partition_key for r in data.run_requests or []] == ["2024-02-09"]


# --------------------------------------------------------------------------- backfill


@pytest.mark.slow
def test_a_cli_backfill_of_a_range_runs_every_day(tmp_path, dagster_home):
    """``dagster job backfill --from --to`` submits one run per day. The default run
    coordinator only queues them for the daemon; with the DefaultRunCoordinator the CLI
    launches them itself (no daemon), as here."""
    project = _project(tmp_path, DELTA_PIPELINE)
    for i, day in enumerate(DAYS):
        _raw_day(tmp_path, day, [i + 1])
    defs_file = tmp_path / "definitions.py"
    defs_file.write_text(
        f"import odibi_dagster\n\ndefs = odibi_dagster.load_definitions({str(project)!r})\n"
    )
    (dagster_home / "dagster.yaml").write_text(
        "telemetry:\n  enabled: false\nrun_coordinator:\n"
        "  module: dagster._core.run_coordinator\n  class: DefaultRunCoordinator\n"
    )
    dagster = Path(sys.executable).with_name("dagster")
    args = ["job", "backfill", "-f", str(defs_file), "-j", "p", "--noprompt"]
    args += ["--from", DAYS[0], "--to", DAYS[2]]
    out = subprocess.run(
        [str(dagster), *args],
        capture_output=True,
        text=True,
        env=os.environ.copy(),
        timeout=600,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Launched backfill job" in out.stdout
    runs = _finished_runs(dg.DagsterInstance.get(), 3)
    assert sorted(r.tags["dagster/partition"] for r in runs) == DAYS
    assert {r.status for r in runs} == {dg.DagsterRunStatus.SUCCESS}
    assert len({r.tags["dagster/backfill"] for r in runs}) == 1
    assert _delta_rows(tmp_path / "lake" / "gold" / "totals") == [
        (d, 10 * (i + 1), d, n)
        for i, (d, n) in enumerate(zip(DAYS, [*DAYS[1:], "2024-01-04"], strict=True))
    ]


def _finished_runs(instance: dg.DagsterInstance, count: int) -> list[dg.DagsterRun]:
    """The instance's runs once ``count`` of them have finished (the code server that
    launched them may still be executing the last one when the CLI returns)."""
    import time

    finished = {dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE}
    for _ in range(600):
        runs = list(instance.get_runs())
        if len(runs) >= count and all(r.status in finished for r in runs):
            return runs
        time.sleep(0.5)
    return list(instance.get_runs())


@pytest.mark.slow
def test_odibi_dagster_run_computes_the_partition_it_is_given(tmp_path, dagster_home):
    project = _project(tmp_path, DELTA_PIPELINE)
    _raw_day(tmp_path, DAYS[1], [4])
    refused = run_cli("odibi-dagster", "run", project)
    assert refused.returncode == 1
    assert "pipeline p is partitioned: give the partition to run with --partition" in (
        refused.stderr
    )
    assert run_cli("odibi-dagster", "run", project, "--partition", "2023-12-31").returncode == 1
    done = run_cli("odibi-dagster", "run", project, "--partition", DAYS[1])
    assert done.returncode == 0, done.stderr
    assert _delta_rows(tmp_path / "lake" / "gold" / "totals") == [(DAYS[1], 40, DAYS[1], DAYS[2])]
    # a range: a run per day, each replacing its own day
    _raw_day(tmp_path, DAYS[0], [1])
    _raw_day(tmp_path, DAYS[1], [5])
    done = run_cli("odibi-dagster", "run", project, "--partition", f"{DAYS[0]}..{DAYS[1]}")
    assert done.returncode == 0, done.stderr
    assert f"pipeline p partition {DAYS[0]}" in done.stdout
    assert "done: 2 run(s) of 1 pipeline(s) succeeded" in done.stdout
    assert _delta_rows(tmp_path / "lake" / "gold" / "totals") == [
        (DAYS[0], 10, DAYS[0], DAYS[1]),
        (DAYS[1], 50, DAYS[1], DAYS[2]),
    ]
    backwards = run_cli("odibi-dagster", "run", project, "--partition", f"{DAYS[1]}..{DAYS[0]}")
    assert backwards.returncode == 1
    assert f"'{DAYS[1]}' comes after '{DAYS[0]}'" in backwards.stderr


LAUNCH_BACKFILL = """
mutation($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message }
  }
}
"""


@pytest.mark.daemon
def test_a_backfill_launched_as_the_web_ui_does_runs_every_day(tmp_path):
    """The UI's Launch backfill (the webserver's GraphQL mutation) records a backfill,
    which the daemon turns into one run per day."""
    from odibi_dagster_tests.support.daemon import Daemon, write_workspace
    from odibi_dagster_tests.support.webserver import (
        REPOSITORY_NAME,
        make_dagster_home,
        start_webserver,
    )

    root = tmp_path / "proj"
    root.mkdir()
    project = _project(root, DELTA_PIPELINE)
    project.rename(root / "project.yaml")
    for i, day in enumerate(DAYS):
        _raw_day(root, day, [i + 1])
    workspace = write_workspace(root)
    home = make_dagster_home(tmp_path / "home")
    server = start_webserver(workspace, home, tmp_path / "web.log", ["project"])
    daemon = Daemon(workspace, home).start()
    try:
        data = server.graphql.query(
            LAUNCH_BACKFILL,
            {
                "params": {
                    "selector": {
                        "partitionSetName": "p_partition_set",
                        "repositorySelector": {
                            "repositoryLocationName": "project",
                            "repositoryName": REPOSITORY_NAME,
                        },
                    },
                    "partitionNames": DAYS,
                }
            },
        )
        assert data["launchPartitionBackfill"]["__typename"] == "LaunchBackfillSuccess", data
        runs = daemon.wait_for_runs("p", 3, timeout=300)
    finally:
        daemon.stop()
        server.stop()
    assert sorted(r.tags["dagster/partition"] for r in runs) == DAYS
    assert {r.status for r in runs} == {dg.DagsterRunStatus.SUCCESS}
    assert sorted(d for d, *_ in _delta_rows(root / "lake" / "gold" / "totals")) == DAYS


def test_odibi_dagster_run_of_everything_leaves_out_partitioned_pipelines_naming_them(
    tmp_path, dagster_home, capsys
):
    from odibi_dagster.cli import main

    project = _project(
        tmp_path,
        DELTA_PIPELINE
        + """\
  - pipeline: plain
    nodes:
      - name: one
        transform: {steps: ["SELECT 1 AS x"]}
        write: {connection: lake, path: plain.parquet, format: parquet}
""",
    )
    assert main(["run", str(project)]) == 0
    out = capsys.readouterr().out
    assert "skipped: pipeline p is partitioned: give --partition KEY" in out
    assert "pipeline plain" in out and "done: 1 pipeline(s) succeeded" in out
    assert (tmp_path / "lake" / "plain.parquet").is_file()
    assert not (tmp_path / "lake" / "gold").exists()  # p did not run
    # chosen by name, it needs its partition
    assert main(["run", str(project), "-p", "p"]) == 1
    assert "pipeline p is partitioned" in capsys.readouterr().err
