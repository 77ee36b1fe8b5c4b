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
    "azure_etl_project.yaml": (
        "an azure_sql connection and Odibi's older azure_adls auth spelling (not supported)",
        "connections.adls_source.auth: unknown key 'auth'",
    ),
    "cheme_L00_tank_data.yaml": (
        "path/format on a local connection (which Odibi ignores; keys are checked here); "
        "its simulation read is supported (test_simulation.py runs it)",
        "connections.output_csv.path: unknown key 'path'",
    ),
    "cheme_L06_tank_pi.yaml": (
        "path/format on a local connection (which Odibi ignores; keys are checked here); "
        "its simulation read is supported (test_simulation.py runs it)",
        "connections.output.path: unknown key 'path'",
    ),
    "diagnostics_demo_pipeline.odibi.yaml": (
        "transformer: names functions of the original project's Python, which is not in the corpus",
        "node 'enrich_data': unknown function 'enrich_customers'",
    ),
    "docs_configuration_basic_example.yaml": (
        "a delta (metastore) connection and write.table, not supported",
        "unsupported connection type 'delta'",
    ),
    "docs_configuration_complete_example.yaml": (
        "delta and azure_blob connections, write.table, v3 validation is fine",
        "connections.landing.type: unsupported connection type 'azure_blob'",
    ),
    "docs_environments_guide.yaml": (
        "a read without format: (Odibi v3 requires format as well)",
        "missing required key 'format'",
    ),
    "docs_pipelines_yaml_structure.yaml": (
        "path: on a local connection (Odibi ignores it and uses ./data; keys are checked here)",
        "connections.bronze.path: unknown key 'path'",
    ),
    "docs_quick_start_config.yaml": (
        "a top-level key Odibi ignores (plant:); keys are checked here",
        "unknown key 'plant'",
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
    "odibi_climate_pipeline.yaml": (
        "a custom read format (Odibi format plugins), not supported",
        "unsupported format 'weather'",
    ),
    "odibi_metrics.yaml": (
        "transformer: names functions of the original project's Python, which is not in the corpus",
        "node 'fetch_issues': unknown function 'fetch_github_issues'",
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
    "simulation_example.yaml": (
        "an older project shape (name: for project: and pipeline:, no connections, "
        "transform: as a list, validate:); its simulation block is supported "
        "(test_simulation.py generates it)",
        "name: unknown key 'name'",
    ),
}

FILES = sorted(p.name for p in CORPUS.glob("*.yaml"))


def test_the_corpus_lists_every_file() -> None:
    assert len(FILES) >= 20
    assert set(EXPECTED_FAILURES) <= set(FILES)
    assert (CORPUS / "LICENSE").is_file()


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
