"""Odibi's other spellings of the project shell and its connections (config/compat.py): mapped
onto ours where they mean the same, accepted and reported once where they have no effect
here, and refused at ``file:line`` only where a node (or the story) uses what cannot run."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pandas as pd
import pytest
from deltalake import DeltaTable

from odibi_dagster.cli import main
from odibi_dagster.config.loader import load_project
from odibi_dagster.errors import OdibiConfigError
from odibi_dagster.resources.azure_adls import AzureADLS
from odibi_dagster.resources.local import LocalStorage

PIPE = """\
pipelines:
  - pipeline: p
    nodes:
      - name: raw
        read: {connection: data, format: csv, path: in.csv}
"""


@pytest.fixture(autouse=True)
def _here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # file names in messages are relative to it


def project(tmp_path: Path, connections: str, extra: str = "", pipes: str = PIPE) -> Path:
    text = (
        "project: compat\nconnections:\n  data:\n    type: local\n    base_path: ./data\n"
        + textwrap.indent(textwrap.dedent(connections), "  ")
        + textwrap.dedent(extra)
        + textwrap.dedent(pipes)
    )
    path = tmp_path / "project.yaml"
    path.write_text(text)
    return path


def problems(path: Path) -> list[str]:
    with pytest.raises(OdibiConfigError) as exc:
        load_project(path)
    return [str(p) for p in exc.value.problems]


def notes(path: Path) -> dict[str, str]:
    return {n.key: str(n) for n in load_project(path).notes}


def test_azure_blob_with_a_key_vault_auth_block_is_our_azure_adls(tmp_path: Path) -> None:
    path = project(
        tmp_path,
        """\
        lake:
          type: azure_blob
          account_name: rawdata
          container: landing
          auth:
            mode: key_vault
            key_vault: kv-data
            secret: rawdata-key
        """,
    )
    loaded = load_project(path)
    res = loaded.connection_resources()["lake"]
    assert isinstance(res, AzureADLS)
    assert (res.account, res.container, res.auth_mode) == ("rawdata", "landing", "key_vault")
    assert (res.key_vault_name, res.secret_name) == ("kv-data", "rawdata-key")
    assert loaded.notes == []  # every key applied


def test_odibis_older_azure_adls_auth_spelling_and_an_account_key(tmp_path: Path) -> None:
    path = project(
        tmp_path,
        """\
        vaulted:
          type: azure_adls
          account: rawdata
          container: landing
          auth_mode: key_vault
          auth:
            key_vault_name: kv-data
            secret_name: rawdata-key
        keyed:
          type: azure_adls
          account: curated
          container: gold
          auth:
            account_key: ${CURATED_KEY}
        """,
    )
    loaded = load_project(path, environ={"CURATED_KEY": "a2V5"})
    res = loaded.connection_resources()
    assert (res["vaulted"].key_vault_name, res["vaulted"].secret_name) == ("kv-data", "rawdata-key")
    assert res["keyed"].auth_mode == "direct_key"  # detected from the key, as Odibi does
    assert res["keyed"].account_key == "CURATED_KEY"  # the variable, read when a run starts


def test_an_unknown_key_in_the_auth_block_is_still_an_error(tmp_path: Path) -> None:
    path = project(
        tmp_path,
        """\
        lake:
          type: azure_adls
          account: rawdata
          container: landing
          auth:
            key_vault_name: kv-data
            secret_name: rawdata-key
            secrte: x
        """,
    )
    assert any(
        "connections.lake.auth: Odibi's auth block" in p and "not read: secrte" in p
        for p in problems(path)
    )


def test_path_and_format_on_a_local_connection_and_an_unknown_top_level_key_are_notes(
    tmp_path: Path,
) -> None:
    path = project(
        tmp_path,
        """\
        out:
          type: local
          path: ./output/tank_data.csv
          format: csv
        """,
        extra="plant: Local Testing\n",
    )
    found = notes(path)
    assert set(found) == {"connections.out.path", "connections.out.format", "plant"}
    assert found["plant"].startswith("project.yaml:10: accepted, not applied: plant: Odibi ")
    assert "node paths are relative to `base_path`" in found["connections.out.path"]
    # Odibi's default base_path, ./data of the working directory
    assert load_project(path).config.connections["out"].base_path.endswith("data")


def test_a_misspelt_top_level_key_is_still_an_error(tmp_path: Path) -> None:
    path = project(tmp_path, "", extra="stroy:\n  connection: data\n  path: stories\n")
    assert any("unknown key 'stroy' (did you mean 'story'?)" in p for p in problems(path))


def test_a_delta_connection_with_a_path_is_a_local_directory(tmp_path: Path) -> None:
    path = project(tmp_path, "silver:\n  type: delta\n  path: ./lake/silver\n")
    res = load_project(path).connection_resources()["silver"]
    assert isinstance(res, LocalStorage)
    assert res.base_path == str(tmp_path / "lake" / "silver")


SQL = """\
dw:
  type: azure_sql
  server: myserver.database.windows.net
  database: analytics
  auth_mode: aad_msi
"""


def test_an_unused_connection_that_cannot_run_here_is_a_note(tmp_path: Path) -> None:
    found = notes(project(tmp_path, SQL))
    assert list(found) == ["connections.dw"]
    assert "accepted, not applied: connections.dw: type `azure_sql`" in found["connections.dw"]


def test_a_node_writing_through_it_fails_at_its_line_naming_the_node(tmp_path: Path) -> None:
    pipes = PIPE + (
        "      - name: to_sql\n"
        "        depends_on: [raw]\n"
        "        write:\n"
        "          connection: dw\n"
        "          table: dbo.out\n"
    )
    found = problems(project(tmp_path, SQL, pipes=pipes))
    # one problem: the write's other keys (table:, no path/format) are not reported besides
    assert len(found) == 1, found
    assert found[0].startswith(
        "project.yaml:19: pipelines[0].nodes[1].write.connection: node 'to_sql': connection "
        "'dw' cannot be used here: type `azure_sql`"
    )


def test_an_azure_auth_mode_that_cannot_run_here_fails_where_used(tmp_path: Path) -> None:
    conns = """\
    lake:
      type: azure_blob
      account_name: rawdata
      container: landing
      auth:
        mode: aad_msi
    """
    extra = "story:\n  connection: lake\n  path: stories\n"
    found = problems(project(tmp_path, conns, extra=extra))
    assert len(found) == 1
    assert (
        "story.connection: the story's connection 'lake' cannot be used here: auth mode "
        in (found[0])
    )
    assert "managed identity auth is not supported" in found[0]


def test_an_empty_node_is_reported_by_name_and_index(tmp_path: Path) -> None:
    pipes = PIPE + "      - name: nothing_here\n"
    found = problems(project(tmp_path, "", pipes=pipes))
    assert found == [
        "project.yaml:11: pipelines[0].nodes[1]: node 'nothing_here': a node needs at least "
        "one of `read:`, `transformer:`, `transform:` or `write:`"
    ]


def test_a_pipeline_key_at_the_top_is_misplaced_not_ignored(tmp_path: Path) -> None:
    path = project(tmp_path, "", extra="nodes: []\n")
    assert any("nodes: unknown key 'nodes'" in p for p in problems(path))


def test_a_sensor_watching_a_connection_that_cannot_run_fails_at_its_line(
    tmp_path: Path,
) -> None:
    pipes = PIPE.replace(
        "    nodes:\n",
        "    sensors:\n      - new_files: {connection: dw, path: landing}\n    nodes:\n",
    )
    found = problems(project(tmp_path, SQL, pipes=pipes))
    assert len(found) == 1, found
    assert (
        "pipelines[0].sensors[0].new_files.connection: a new-files sensor's connection 'dw'"
        in (found[0])
    )


def test_two_different_auth_modes_are_an_error_not_a_choice(tmp_path: Path) -> None:
    path = project(
        tmp_path,
        """\
        lake:
          type: azure_adls
          account: rawdata
          container: landing
          auth_mode: key_vault
          auth:
            mode: account_key
            account_key: ${KEY}
        """,
    )
    found = problems(path)
    assert any(
        "connections.lake.auth: Odibi's auth block" in p and "not read: mode" in p for p in found
    ), found


IO_PIPE = """\
pipelines:
  - pipeline: p
    nodes:
      - name: raw
        read:
          connection: data
          format: delta
          path: bronze/orders
          streaming: false
          time_travel: {as_of_version: 3}
        write:
          connection: data
          format: delta
          path: silver/orders
          partition_by: [day]
          merge_schema: true
          zorder_by: []
          skip_if_unchanged: false
"""


def test_odibi_v3_read_and_write_keys_become_options_or_notes(tmp_path: Path) -> None:
    loaded = load_project(project(tmp_path, "", pipes=IO_PIPE))
    node = loaded.config.pipelines[0].nodes[0]
    assert node.read is not None and node.write is not None
    assert node.read.options == {"versionAsOf": 3}
    assert node.write.options == {"partition_by": ["day"], "mergeSchema": True}
    noted = {n.key: n.why for n in loaded.notes}
    assert set(noted) == {
        "pipelines[0].nodes[0].read.streaming",
        "pipelines[0].nodes[0].write.zorder_by",
        "pipelines[0].nodes[0].write.skip_if_unchanged",
    }
    assert all("Odibi's default" in why for why in noted.values())


def test_an_odibi_v3_key_that_does_something_there_is_refused_saying_what_instead(
    tmp_path: Path,
) -> None:
    pipes = IO_PIPE.replace("zorder_by: []", "zorder_by: [customer_id]").replace(
        "          partition_by: [day]\n", ""
    )
    pipes = pipes.replace("path: silver/orders", "table: silver.orders")
    found = problems(project(tmp_path, "", pipes=pipes))
    text = "\n".join(found)
    assert "write.table: node 'raw': unknown key 'table' (Odibi v3's, not supported here): " in text
    assert (
        "write.zorder_by: node 'raw': unknown key 'zorder_by' (Odibi v3's, not supported " in text
    )


def test_partition_by_and_time_travel_written_odibis_way_apply_in_a_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "in.csv").write_text("id,day\n1,2024-01-01\n2,2024-01-02\n")
    pipes = """\
    pipelines:
      - pipeline: load
        nodes:
          - name: raw
            read: {connection: data, format: csv, path: in.csv}
            write:
              connection: data
              format: delta
              path: lake/t
              mode: append
              partition_by: [day]
      - pipeline: past
        nodes:
          - name: first
            read:
              connection: data
              format: delta
              path: lake/t
              time_travel: {as_of_version: 0}
            write: {connection: data, format: parquet, path: first.parquet}
    """
    path = project(tmp_path, "", pipes=pipes)
    for _ in range(2):
        assert main(["run", str(path), "--pipeline", "load"]) == 0
    assert main(["run", str(path), "--pipeline", "past"]) == 0
    capsys.readouterr()
    table = DeltaTable(str(tmp_path / "data" / "lake" / "t"))
    assert table.metadata().partition_columns == ["day"]
    assert len(table.to_pandas()) == 4  # two appends
    assert sorted(pd.read_parquet(tmp_path / "data" / "first.parquet")["id"]) == [1, 2]
