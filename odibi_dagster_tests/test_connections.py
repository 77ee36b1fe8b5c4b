"""The connection seam: every kind lists the files under a folder or prefix the same way
(for sensors), and checks itself; the YAML models follow from the resource classes."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from odibi_dagster.config.models import CONNECTION_MODELS
from odibi_dagster.errors import OdibiConnectionError
from odibi_dagster.resources.azure_adls import AzureADLS
from odibi_dagster.resources.connection import listed
from odibi_dagster.resources.kinds import CONNECTION_KINDS
from odibi_dagster.resources.local import LocalStorage
from odibi_dagster_tests.support.lake import RAW, Lake

FILES = {
    "landing/orders/a.csv": b"id\n1\n",
    "landing/orders/b.csv": b"id\n2\n3\n",
    "landing/orders/notes.txt": b"not data",
    "landing/orders/2024/c.csv": b"id\n4\n",
    "landing/orders/_SUCCESS": b"",
    "landing/orders/.hidden.csv": b"id\n5\n",
    "landing/orders/d.csv.tmp-0123": b"id\n6\n",
    "landing/orders_old/e.csv": b"id\n7\n",
    "other/f.csv": b"id\n8\n",
}
EXPECTED_CSV = ["landing/orders/2024/c.csv", "landing/orders/a.csv", "landing/orders/b.csv"]


def test_local_listing_shows_data_files_under_a_folder_by_pattern(tmp_path: Path):
    for rel, data in FILES.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(data)
    conn = LocalStorage(base_path=str(tmp_path))
    listed = {f.path: f for f in conn.list_files("landing/orders/", "*.csv")}
    assert sorted(listed) == EXPECTED_CSV
    assert listed["landing/orders/b.csv"].size == len(FILES["landing/orders/b.csv"])
    # a prefix that is not a folder name matches as a prefix
    assert sorted(f.path for f in conn.list_files("landing/orders_", "*")) == [
        "landing/orders_old/e.csv"
    ]
    # a changed file gets another version
    before = listed["landing/orders/a.csv"].version
    time.sleep(0.01)
    (tmp_path / "landing/orders/a.csv").write_bytes(b"id\n1\n9\n")
    os.utime(tmp_path / "landing/orders/a.csv")
    (after,) = [f for f in conn.list_files("landing/orders", "a.csv")]
    assert after.version != before


@pytest.mark.parametrize(
    ("name", "shown"),
    [
        ("in/a.csv", True),
        ("in/.a.csv.tmp-0123", False),
        ("in/a.csv.tmp-0123", False),
        ("in/a.csv.staged-0123abcd", False),
        ("in/part-0.parquet#1", False),
        ("in/part-0.parquet#12", False),
        ("in/_SUCCESS", False),
        ("in/.a.csv.lock", False),
        ("in/week#1.csv", True),
        ("in/x.tmp-0123/a.csv", False),
    ],
)
def test_listings_leave_out_hidden_and_temporary_names(name: str, shown: bool):
    assert listed(name, "*") is shown


def test_azure_listing_is_the_same_as_local(lake: Lake):
    conn = AzureADLS(
        account=RAW,
        container=lake.raw_container,
        path_prefix="zone",
        auth_mode="direct_key",
        account_key=lake.key(RAW),
        blob_endpoint=lake.azurite.blob_endpoint(RAW),
    )
    for rel, data in FILES.items():
        lake.azurite.upload_blob(RAW, lake.raw_container, f"zone/{rel}", data)
    listed = {f.path: f for f in conn.list_files("landing/orders/", "*.csv")}
    assert sorted(listed) == EXPECTED_CSV
    assert listed["landing/orders/b.csv"].size == len(FILES["landing/orders/b.csv"])
    assert all(f.version and f.modified for f in listed.values())
    assert sorted(f.path for f in conn.list_files("landing/orders_", "*")) == [
        "landing/orders_old/e.csv"
    ]
    assert "reachable" in conn.check()


def test_a_local_check_says_what_is_wrong(tmp_path: Path):
    assert LocalStorage(base_path=str(tmp_path)).check().endswith("exists and is writable")
    with pytest.raises(OdibiConnectionError, match=r"base_path .*nowhere does not exist"):
        LocalStorage(base_path=str(tmp_path / "nowhere"), connection_name="c").check()


def test_every_kind_has_a_yaml_model_with_its_fields_and_type():
    assert set(CONNECTION_MODELS) == set(CONNECTION_KINDS) == {"local", "azure_adls", "http"}
    for name, resource in CONNECTION_KINDS.items():
        fields = set(CONNECTION_MODELS[name].model_fields)
        assert fields == {"type"} | set(resource.model_fields) - set(resource.runtime_fields)
