"""``odibi-dagster validate`` over real Odibi v3 configs (``odibi_v3_corpus/``, copied unchanged
from Odibi's examples and documentation; see its README.md and LICENSE).

Each file is either expected to validate, or listed in EXPECTED_FAILURES with the reason and a
piece of the first problem reported. A file that starts to pass (a feature arrived) or starts
to fail for another reason makes the test fail, so the list stays true. ``test_pass_rate``
prints the pass rate.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from odibi_dagster.cli import main

CORPUS = Path(__file__).resolve().parent / "odibi_v3_corpus"

# file -> (why it does not validate here, a piece of the first problem reported)
EXPECTED_FAILURES: dict[str, tuple[str, str]] = {
    "diagnostics_demo_pipeline.odibi.yaml": (
        "transformer: names functions of the original project's Python, which is not in the corpus",
        "node 'enrich_data': unknown function 'enrich_customers'",
    ),
    "azure_etl_config.yaml": (
        "an azure_adls connection with service principal auth and an azure_sql write (accepted, "
        "not applied; nodes use them)",
        "connection 'data_lake' cannot be used here: auth mode 'service_principal'",
    ),
    "azure_etl_project.yaml": (
        "a node writes an azure_sql table (the connection is accepted, not applied)",
        "connection 'sql_dest' cannot be used here: type `azure_sql`",
    ),
    "docs_azure_connections_complete_project.yaml": (
        "every connection is one that cannot run here: service principal auth, Delta at an "
        "abfss:// URL, SQL Server",
        "none of these connections can be used here",
    ),
    "docs_canonical_02_incremental_sql.yaml": (
        "a node reads a SQL Server table (format jdbc, table:)",
        "connection 'source_db' cannot be used here: type `sql_server`",
    ),
    "docs_configuration_basic_example.yaml": (
        "a node writes a Delta catalog table (type delta with catalog + schema, write.table)",
        "connection 'silver' cannot be used here: type `delta`",
    ),
    "docs_configuration_complete_example.yaml": (
        "managed identity Azure auth and Delta catalog connections (its transformer:, validation tests, gate and alerts load)",
        "connections: none of these connections can be used here",
    ),
    "docs_environments_guide.yaml": (
        "a read without format: (Odibi v3 requires format as well)",
        "missing required key 'format'",
    ),
    "docs_spark_getting_started_project.yaml": (
        "a project file shown without its pipelines (Odibi needs pipelines too)",
        "missing required key 'pipelines'",
    ),
    "docs_stories_complete_story_configuration.yaml": (
        "a page fragment: no connections, and operation:/query: directly under transform: "
        "(Odibi too needs them in a step of transform.steps)",
        "missing required key 'connections'",
    ),
    "example_delta_pipeline.yaml": (
        "placeholder storage account names (YOUR_STORAGE_ACCOUNT), checked at load here",
        "storage account name 'YOUR_STORAGE_ACCOUNT' is invalid",
    ),
    "odibi_climate_pipeline.yaml": (
        "a custom read format (Odibi format plugins), not supported",
        "unsupported format 'weather'",
    ),
    "odibi_factory_pipeline.yaml": (
        "the example's own Python function (resample_timeseries), in a file not copied here",
        "unknown function 'resample_timeseries'",
    ),
    "odibi_flix_pipeline.yaml": (
        "the example's own Python function (explode_genres), in a file not copied here",
        "unknown function 'explode_genres'",
    ),
    "odibi_guard_pipeline.yaml": (
        "the example's own Python function (parse_logs), in a file not copied here",
        "unknown function 'parse_logs'",
    ),
    "improvement_target.odibi.yaml": (
        "base paths from environment variables its test harness sets (BOUND_SOURCE_ROOT), and "
        "transformer: deduplicate",
        "environment variable BOUND_SOURCE_ROOT is not set",
    ),
    "odibi_law_pipeline.yaml": (
        "the example's own Python function (summarize_bill), in a file not copied here",
        "unknown function 'summarize_bill'",
    ),
    "odibi_match_pipeline.yaml": (
        "the example's own Python functions (flatten_events, extract_shots), in a file not "
        "copied here",
        "unknown function 'flatten_events'",
    ),
    "odibi_metrics.yaml": (
        "transformer: names functions of the original project's Python, which is not in the corpus",
        "node 'fetch_issues': unknown function 'fetch_github_issues'",
    ),
    "optimized_merge.yaml": (
        "transformer: merge with a target path and no connection (Odibi writes it relative to the working directory; here a target names its connection: <connection>.<path>)",
        "target 'silver/sales_optimized' names no connection",
    ),
    "pandas_hwm_example_project.yaml": (
        "read.query / write.first_run_query (incremental SQL reads), not yet supported",
        "unknown key 'query'",
    ),
    "phase1_date_dimension.yaml": (
        "a pipeline fragment without connections; write keys (partition_by, zorder_by, ...) "
        "and contracts: not supported; transformer: date_dimension is Odibi's pattern",
        "missing required key 'connections'",
    ),
    "phase1_monthly_sales_agg.yaml": (
        "a pipeline fragment without connections, reading a SQL table with transformer:",
        "missing required key 'connections'",
    ),
    "real_world_gold.yaml": (
        "connections: written twice (a YAML loader keeps the second; here a repeated key is "
        "an error)",
        "duplicate key 'connections'",
    ),
    "simulation_example.yaml": (
        "read.format: simulation with no connections, and no project:/pipeline: names "
        "(name: instead), which Odibi's own validator refuses too",
        "name: unknown key 'name'",
    ),
}

FILES = sorted(p.name for p in CORPUS.glob("*.yaml"))


def test_the_corpus_lists_every_file() -> None:
    assert len(FILES) >= 40
    assert set(EXPECTED_FAILURES) <= set(FILES)
    assert (CORPUS / "LICENSE").is_file()
    readme = (CORPUS / "README.md").read_text()
    assert [f for f in FILES if f"| {f} | " not in readme] == []  # each with its source


@pytest.mark.parametrize("name", FILES)
def test_validate_odibi_v3_config(
    name: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(CORPUS)
    code = main(["validate", name])
    out, err = capsys.readouterr()
    if name in EXPECTED_FAILURES:
        why, problem = EXPECTED_FAILURES[name]
        assert code == 1, f"{name} validates now; remove it from EXPECTED_FAILURES ({why})"
        first = err.splitlines()[0]
        assert problem in first, f"{name}: expected a problem with {problem!r}, got:\n{err}"
        assert first.startswith(f"{name}:")  # file:line
    else:
        assert code == 0, f"{name} no longer validates:\n{err}"
        assert out.splitlines()[-1].startswith(f"ok: {name}")


def test_pass_rate(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(CORPUS)
    passed = [name for name in FILES if main(["validate", name]) == 0]
    capsys.readouterr()
    expected = [name for name in FILES if name not in EXPECTED_FAILURES]
    assert passed == expected
    with capsys.disabled():
        print(
            f"\nOdibi v3 corpus: {len(passed)}/{len(FILES)} configs validate "
            f"({100 * len(passed) / len(FILES):.0f}%)"
        )
