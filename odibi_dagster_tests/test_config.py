"""Loading Odibi YAML: the broken-config corpus, the reference configs, the loader's rules.

The corpus lives in ``broken_configs/``: one ``<case>.yaml`` file, or one ``<case>/``
directory (``project.yaml`` + ``pipelines/*.yaml`` + maybe ``transforms.py``), per
mistake. Comment lines at the very top of the file (of ``project.yaml`` for a
directory) say which problems loading it must report::

    # expect-file: pipelines/b.yaml        (relative to the case; omit for the case file)
    # expect-line: 12                      (or: none)
    # expect-key: pipelines[0].nodes[1].read.format
    # expect-message: unsupported format 'excel'     (a substring of the message)
    # ---                                  (between the blocks of several problems)
    # xfail: <reason>                      (the loader does not do this well yet)
    # expect-absent: <text>                (must not appear anywhere in the error)
    # set-env: NAME=value                  (set while loading)

Every case is otherwise valid, so the loader must report exactly the listed problems.
"""

from __future__ import annotations

import itertools
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from odibi_dagster import OdibiConfigError, load_project
from odibi_dagster.config.loader import find_cycle
from odibi_dagster.errors import Problem

HERE = Path(__file__).resolve().parent
BROKEN = HERE / "broken_configs"
REFERENCE = HERE.parents[1] / "shared" / "odibi_reference"

needs_reference = pytest.mark.skipif(
    not REFERENCE.is_dir(), reason=f"Odibi reference configs not found at {REFERENCE}"
)


# --------------------------------------------------------------------------- the corpus


@dataclass
class Expected:
    file: Path
    line: int | None
    key: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.key}: ...{self.message}..."

    def matches(self, problem: Problem) -> bool:
        return (
            Path(problem.file).resolve() == self.file
            and problem.line == self.line
            and problem.key_path == self.key
            and self.message in problem.message
        )


@dataclass
class Case:
    name: str
    path: Path
    expected: list[Expected]
    xfail: str | None = None
    absent: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)


def _header(file: Path) -> list[str]:
    """The comment lines at the top of ``file``, without their ``#``."""
    lines = []
    for raw in file.read_text(encoding="utf-8").splitlines():
        if not raw.startswith("#"):
            break
        lines.append(raw[1:].strip())
    return lines


def _parse_case(path: Path) -> Case:
    header_file = path / "project.yaml" if path.is_dir() else path
    case_dir = path if path.is_dir() else path.parent
    name = path.name if path.is_dir() else path.stem
    blocks: list[dict[str, str]] = [{}]
    case = Case(name=name, path=path, expected=[])
    for text in _header(header_file):
        if text == "---":
            blocks.append({})
            continue
        directive, sep, value = text.partition(":")
        directive, value = directive.strip(), value.strip()
        if not sep:
            continue
        if directive in ("expect-file", "expect-line", "expect-key", "expect-message"):
            assert directive not in blocks[-1], f"{header_file}: {directive} twice in a block"
            blocks[-1][directive] = value
        elif directive == "expect-absent":
            case.absent.append(value)
        elif directive == "xfail":
            case.xfail = value
        elif directive == "set-env":
            var, _, var_value = value.partition("=")
            case.env[var.strip()] = var_value
    for block in blocks:
        missing = {"expect-line", "expect-key", "expect-message"} - set(block)
        assert not missing, f"{header_file}: expectation block lacks {sorted(missing)}"
        file = case_dir / block["expect-file"] if block.get("expect-file") else header_file
        line = None if block["expect-line"].lower() == "none" else int(block["expect-line"])
        case.expected.append(
            Expected(file.resolve(), line, block["expect-key"], block["expect-message"])
        )
    return case


def _corpus() -> list[Case]:
    paths = sorted(
        p
        for p in BROKEN.iterdir()
        if (p.is_dir() and not p.name.startswith(("_", "."))) or p.suffix in (".yaml", ".yml")
    )
    return [_parse_case(p) for p in paths]


CASES = _corpus()


def _param(case: Case) -> object:
    marks = [pytest.mark.xfail(strict=True, reason=case.xfail)] if case.xfail else []
    return pytest.param(case, id=case.name, marks=marks)


def test_corpus_has_at_least_36_distinct_cases() -> None:
    names = [c.name for c in CASES]
    assert len(names) >= 36
    assert len(set(names)) == len(names)


@pytest.mark.parametrize("case", [_param(c) for c in CASES])
def test_broken_config_reports_expected_problems(
    case: Case, monkeypatch: pytest.MonkeyPatch
) -> None:
    for var, value in case.env.items():
        monkeypatch.setenv(var, value)
    with pytest.raises(OdibiConfigError) as info:
        load_project(case.path)
    error = info.value
    rendered = str(error)
    report = "\n".join(str(p) for p in error.problems)

    assert "Traceback" not in rendered
    for problem in error.problems:
        assert str(problem) in rendered
    if all(e.line is not None for e in case.expected):
        assert all(p.line is not None for p in error.problems), report
    for text in case.absent:
        assert text not in rendered
        assert all(text not in p.message for p in error.problems)
    for expected in case.expected:
        assert any(expected.matches(p) for p in error.problems), (
            f"expected {expected}\ngot:\n{report}"
        )
    assert len(error.problems) == len(case.expected), f"unexpected extra problems:\n{report}"


def test_literal_account_key_is_never_echoed_in_the_error() -> None:
    path = BROKEN / "adls_direct_key_literal_key.yaml"
    literal = yaml.safe_load(path.read_text(encoding="utf-8"))["connections"]["curated"][
        "account_key"
    ]
    problems = _problems(path)
    assert problems
    assert all(literal not in p.message for p in problems)
    assert literal not in str(OdibiConfigError(problems))


# --------------------------------------------------------------------------- helpers

PROJECT_HEAD = """\
project: test_project
connections:
  raw:
    type: local
    base_path: ./data
"""

ONE_PIPELINE = """\
pipelines:
  - pipeline: orders
    nodes:
      - name: load_orders
        read:
          connection: raw
          path: orders.csv
          format: csv
"""


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def _problems(path: Path) -> list[Problem]:
    with pytest.raises(OdibiConfigError) as info:
        load_project(path)
    return info.value.problems


# --------------------------------------------------------------------------- reference configs


@needs_reference
def test_reference_example_local_loads_two_pipelines_with_their_nodes() -> None:
    loaded = load_project(REFERENCE / "example_local.yaml")
    assert [(p.pipeline, [n.name for n in p.nodes]) for p in loaded.config.pipelines] == [
        ("bronze_to_silver", ["load_raw_sales", "clean_sales", "save_silver"]),
        ("silver_to_gold", ["load_silver_sales", "customer_summary", "save_gold"]),
    ]


@needs_reference
def test_reference_example_local_base_path_is_resolved_against_the_yaml_directory() -> None:
    base_path = load_project(REFERENCE / "example_local.yaml").config.connections["data"].base_path
    assert Path(base_path).is_absolute()
    assert Path(base_path).parts[-2:] == ("odibi_reference", "data")
    assert Path(base_path) == (REFERENCE / "data").resolve()


@needs_reference
def test_reference_getting_started_directory_loads_its_three_pipelines() -> None:
    loaded = load_project(REFERENCE / "getting_started")
    pipelines = {p.pipeline: [n.name for n in p.nodes] for p in loaded.config.pipelines}
    assert sorted(pipelines) == ["advanced_etl", "simple_etl", "transform_etl"]
    assert all("load_sales" in nodes for nodes in pipelines.values())


@needs_reference
def test_reference_getting_started_defaults_block_is_applied() -> None:
    config = load_project(REFERENCE / "getting_started").config
    assert config.retry is not None
    assert config.retry.enabled is False
    assert config.retry.max_attempts == 1
    assert config.logging is not None
    assert config.logging.level == "INFO"
    assert config.story is not None
    assert config.story.auto_generate is False
    assert config.story.active is False


# --------------------------------------------------------------------------- environment


def test_env_var_is_replaced_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ODIBI_TEST_CFG_LAKE_DIR", str(tmp_path / "lake"))
    project = _write(
        tmp_path / "project.yaml",
        PROJECT_HEAD.replace("./data", "${ODIBI_TEST_CFG_LAKE_DIR}/raw") + ONE_PIPELINE,
    )
    config = load_project(project).config
    assert config.connections["raw"].base_path == str(tmp_path / "lake" / "raw")


def test_env_var_default_is_used_when_the_variable_is_unset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ODIBI_TEST_CFG_UNSET_WITH_DEFAULT", raising=False)
    project = _write(
        tmp_path / "project.yaml",
        PROJECT_HEAD.replace("./data", "${ODIBI_TEST_CFG_UNSET_WITH_DEFAULT:-./fallback}")
        + ONE_PIPELINE.replace("orders.csv", "${ODIBI_TEST_CFG_UNSET_WITH_DEFAULT:-in}/o.csv"),
    )
    config = load_project(project).config
    assert config.connections["raw"].base_path == str(tmp_path / "fallback")
    read = config.pipelines[0].nodes[0].read
    assert read is not None
    assert read.path == "in/o.csv"


def test_account_key_env_reference_is_kept_and_its_value_stays_out_of_the_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "c2VjcmV0LXN0b3JhZ2Uta2V5LW9kaWJpLXRlc3Q0Mg=="
    monkeypatch.setenv("ODIBI_TEST_CFG_LAKE_KEY", secret)
    project = _write(
        tmp_path / "project.yaml",
        PROJECT_HEAD
        + """\
  lake:
    type: azure_adls
    account: salesdatalake01
    container: bronze
    auth_mode: direct_key
    account_key: ${ODIBI_TEST_CFG_LAKE_KEY}
"""
        + ONE_PIPELINE.replace("connection: raw", "connection: lake"),
    )
    config = load_project(project).config
    assert config.connections["lake"].account_key == "${ODIBI_TEST_CFG_LAKE_KEY}"
    assert secret not in repr(config.model_dump())


# --------------------------------------------------------------------------- reporting


def test_all_problems_are_reported_at_once_sorted_by_line(tmp_path: Path) -> None:
    project = _write(
        tmp_path / "project.yaml",
        """\
        project: test_project
        engine: polars
        connections:
          raw:
            type: local
            base_path: ./data
        pipelines:
          - pipeline: orders
            nodes:
              - name: load_orders
                read:
                  connection: raw
                  path: orders.xlsx
                  format: excel
              - name: save_orders
                depends_on: [load_orders]
                write:
                  connection: raw
                  path: out.csv
                  format: csv
                  mode: replace
        """,
    )
    problems = _problems(project)
    assert [(p.line, p.key_path) for p in problems] == [
        (2, "engine"),
        (14, "pipelines[0].nodes[0].read.format"),
        (21, "pipelines[0].nodes[1].write.mode"),
    ]


@pytest.mark.xfail(
    strict=True,
    reason="the checks across keys (unknown connection, cycles, ...) need a valid model, so "
    "they run only once the schema errors are fixed",
)
def test_problems_found_by_different_checks_are_reported_together(tmp_path: Path) -> None:
    project = _write(
        tmp_path / "project.yaml",
        """\
        project: test_project
        connections:
          raw:
            type: local
            base_path: ${ODIBI_TEST_SURELY_UNSET_VAR_3}/raw
        pipelines:
          - pipeline: orders
            nodes:
              - name: load_orders
                read:
                  connection: raw
                  path: orders.csv
                  format: excel
              - name: save_orders
                depends_on: [load_orders]
                write:
                  connection: warehouse
                  path: out.csv
                  format: csv
        """,
    )
    problems = _problems(project)
    assert [(p.line, p.key_path) for p in problems] == [
        (5, "connections.raw.base_path"),
        (13, "pipelines[0].nodes[0].read.format"),
        (17, "pipelines[0].nodes[1].write.connection"),
    ]


def test_problem_in_a_pipeline_file_names_that_file_and_line(tmp_path: Path) -> None:
    _write(tmp_path / "proj" / "project.yaml", PROJECT_HEAD)
    _write(
        tmp_path / "proj" / "pipelines" / "a_orders.yaml",
        """\
        pipeline: orders
        nodes:
          - name: load_orders
            read:
              connection: raw
              path: orders.csv
              format: csv
        """,
    )
    returns = _write(
        tmp_path / "proj" / "pipelines" / "b_returns.yaml",
        """\
        pipeline: returns
        nodes:
          - name: load_returns
            read:
              connection: raw
              path: returns.csv
              format: csv
          - name: save_returns
            depends_on: [load_returns]
            write:
              connection: raw
              path: returns.parquet
              format: parquett
        """,
    )
    [problem] = _problems(tmp_path / "proj")
    assert Path(problem.file).resolve() == returns.resolve()
    assert problem.line == 13
    assert problem.key_path == "pipelines[1].nodes[1].write.format"


def test_base_path_is_the_same_whatever_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write(tmp_path / "proj" / "project.yaml", PROJECT_HEAD + ONE_PIPELINE)
    (tmp_path / "elsewhere" / "deeper").mkdir(parents=True)

    monkeypatch.chdir(tmp_path / "proj")
    from_project_dir = load_project("project.yaml").config.connections["raw"].base_path
    monkeypatch.chdir(tmp_path / "elsewhere" / "deeper")
    from_elsewhere = load_project("../../proj/project.yaml").config.connections["raw"].base_path

    assert from_project_dir == from_elsewhere
    assert Path(from_project_dir) == (tmp_path / "proj" / "data").resolve()


def test_thousand_node_chain_loads(tmp_path: Path) -> None:
    lines = [PROJECT_HEAD, "pipelines:\n  - pipeline: long_chain\n    nodes:\n"]
    lines.append("      - name: n0\n        read: {connection: raw, path: n0.csv, format: csv}\n")
    for i in range(1, 1000):
        lines.append(
            f"      - name: n{i}\n        depends_on: [n{i - 1}]\n"
            f'        transform: {{steps: ["SELECT * FROM n{i - 1}"]}}\n'
        )
    project = tmp_path / "project.yaml"
    project.write_text("".join(lines), encoding="utf-8")

    nodes = load_project(project).config.pipelines[0].nodes
    assert len(nodes) == 1000
    assert nodes[-1].name == "n999"
    assert nodes[-1].depends_on == ["n998"]


# --------------------------------------------------------------------------- find_cycle


def _chain(n: int) -> tuple[list[str], dict[str, list[str]]]:
    """n0 -> n1 -> ... -> n<n-1> (each node's list holds the next one)."""
    names = [f"n{i}" for i in range(n)]
    graph: dict[str, list[str]] = {a: [b] for a, b in itertools.pairwise(names)}
    return names, graph


def test_find_cycle_returns_none_for_a_diamond() -> None:
    graph = {"d": ["b", "c"], "b": ["a"], "c": ["a"], "a": []}
    assert find_cycle(graph) is None


def test_find_cycle_returns_a_three_node_cycle_in_edge_order() -> None:
    assert find_cycle({"a": ["b"], "b": ["c"], "c": ["a"]}) == ["a", "b", "c", "a"]


def test_find_cycle_leaves_out_the_nodes_leading_into_the_cycle() -> None:
    graph = {"load": [], "x": ["load", "y"], "y": ["z"], "z": ["x"], "w": ["x"]}
    assert find_cycle(graph) == ["x", "y", "z", "x"]


def test_find_cycle_finds_a_self_loop() -> None:
    assert find_cycle({"a": [], "b": ["a", "b"]}) == ["b", "b"]


def test_find_cycle_on_a_2000_node_chain_with_a_back_edge_to_its_start() -> None:
    names, graph = _chain(2000)
    graph[names[-1]] = [names[0]]
    assert find_cycle(graph) == [*names, names[0]]


def test_find_cycle_on_a_2000_node_chain_with_a_back_edge_to_its_middle() -> None:
    names, graph = _chain(2000)
    graph[names[-1]] = [names[1000]]
    assert find_cycle(graph) == [*names[1000:], names[1000]]


def test_find_cycle_returns_none_for_a_2000_node_chain() -> None:
    names, graph = _chain(2000)
    graph[names[-1]] = []
    assert find_cycle(graph) is None


def test_a_problem_inside_a_node_names_the_node_as_well_as_its_index(tmp_path: Path):
    bad = tmp_path / "p.yaml"
    bad.write_text(
        "connections:\n"
        "  lake: {type: local, base_path: .}\n"
        "pipelines:\n"
        "  - pipeline: p\n"
        "    nodes:\n"
        "      - name: first\n"
        "        read: {connection: lake, path: a.csv, format: csv}\n"
        "      - name: second\n"
        "      - name: third\n"
        "        read: {connection: lake, path: a.csv, formt: csv}\n"
    )
    with pytest.raises(OdibiConfigError) as info:
        load_project(bad)
    found = {(p.line, p.key_path, p.message) for p in info.value.problems}
    assert found == {
        (
            8,
            "pipelines[0].nodes[1]",
            "node 'second': a node needs at least one of `read:`, `transformer:`, `transform:` or `write:`",
        ),
        (
            10,
            "pipelines[0].nodes[2].read.formt",
            "node 'third': unknown key 'formt' (did you mean 'format'?)",
        ),
    }
