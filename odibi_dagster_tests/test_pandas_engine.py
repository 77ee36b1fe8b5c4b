"""PandasEngine: reads, writes (every format x every mode), atomicity, SQL, previews.

Results are checked with readers independent of the engine (csv module, json module,
pyarrow.parquet, deltalake.DeltaTable) against literal expected values.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import time
import uuid
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable, write_deltalake
from deltalake.exceptions import DeltaError
from fsspec.implementations.local import LocalFileSystem
from fsspec.implementations.memory import MemoryFileSystem

from odibi_dagster.engines.pandas import PandasEngine
from odibi_dagster.errors import OdibiRunError
from odibi_dagster.resources.base import Location
from odibi_dagster.resources.local import LocalStorage
from odibi_dagster.vocabulary import FORMATS

WHERE = "node 'n' (p.yaml:7)"
NAMES = {"csv": "out.csv", "parquet": "out.parquet", "json": "out.json", "delta": "out_delta"}

OLD = pd.DataFrame({"id": [1, 2], "name": ["a", "b"]})
NEW = pd.DataFrame({"id": [3], "name": ["c"]})
OLD_ROWS = [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]
NEW_ROWS = [{"id": 3, "name": "c"}]


@pytest.fixture
def engine() -> PandasEngine:
    return PandasEngine()


def loc_for(tmp_path: Path, rel: str) -> Location:
    return LocalStorage(base_path=str(tmp_path)).location(rel)


def strict_json(text: str) -> Any:
    """json.loads that rejects NaN/Infinity, which are not JSON."""

    def reject(name: str) -> Any:
        raise ValueError(f"invalid JSON constant {name}")

    return json.loads(text, parse_constant=reject)


def rows_from_bytes(data: bytes, fmt: str) -> list[dict[str, Any]]:
    """Rows of a csv/json/parquet file's bytes, read without the engine."""
    if fmt == "csv":
        return list(csv.DictReader(io.StringIO(data.decode("utf-8"), newline="")))
    if fmt == "json":
        return [strict_json(line) for line in data.decode("utf-8").splitlines() if line.strip()]
    rows: list[dict[str, Any]] = pq.read_table(io.BytesIO(data)).to_pylist()
    return rows


def read_back(path: Path, fmt: str) -> list[dict[str, Any]]:
    """Rows at ``path``, read without the engine, sorted by id, ids as int."""
    if fmt == "delta":
        rows = DeltaTable(str(path)).to_pyarrow_table().to_pylist()
    else:
        rows = rows_from_bytes(path.read_bytes(), fmt)
    return sorted(({**r, "id": int(r["id"])} for r in rows), key=lambda r: r["id"])


def siblings(tmp_path: Path) -> list[str]:
    """Names in ``tmp_path``, sorted; temporary .tmp-/.old- siblings would show up here."""
    return sorted(p.name for p in tmp_path.iterdir())


def snapshot(path: Path) -> dict[str, bytes]:
    """Every byte under ``path`` (a file or a directory), keyed by relative name."""
    if path.is_file():
        return {"": path.read_bytes()}
    return {
        str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()
    }


# ----------------------------------------------------------------- write modes


def test_csv_append_keeps_a_single_header_and_old_lines_first(engine, tmp_path):
    loc = loc_for(tmp_path, "out.csv")
    engine.write(OLD, loc, "csv", "overwrite")
    engine.write(NEW, loc, "csv", "append")
    assert (tmp_path / "out.csv").read_text().splitlines() == ["id,name", "1,a", "2,b", "3,c"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_append_creates_the_target_when_absent(engine, tmp_path, fmt):
    loc = loc_for(tmp_path, f"sub/dir/{NAMES[fmt]}")
    assert engine.write(OLD, loc, fmt, "append") is True
    assert read_back(tmp_path / "sub" / "dir" / NAMES[fmt], fmt) == OLD_ROWS


@pytest.mark.parametrize("fmt", FORMATS)
def test_ignore_mode_skips_and_leaves_old_bytes_untouched(engine, tmp_path, fmt):
    loc = loc_for(tmp_path, NAMES[fmt])
    engine.write(OLD, loc, fmt, "overwrite")
    before = snapshot(tmp_path / NAMES[fmt])
    assert engine.write(NEW, loc, fmt, "ignore") is False
    assert snapshot(tmp_path / NAMES[fmt]) == before


@pytest.mark.parametrize("fmt", ["csv", "parquet", "json"])
def test_file_formats_go_through_the_location_filesystem(engine, tmp_path, fmt):
    fs = MemoryFileSystem()
    root = f"/{tmp_path.name}-{fmt}"
    loc = Location(uri=f"memory:/{root}/out", fs=fs, fs_path=f"{root}/d/out.{fmt}", delta_uri="")
    try:
        engine.write(OLD, loc, fmt, "overwrite")
        engine.write(NEW, loc, fmt, "append")
        rows = rows_from_bytes(fs.cat_file(f"{root}/d/out.{fmt}"), fmt)
        assert [{**r, "id": int(r["id"])} for r in rows] == OLD_ROWS + NEW_ROWS
        assert fs.ls(f"{root}/d", detail=False) == [f"{root}/d/out.{fmt}"]
        assert not (tmp_path / "d").exists()
    finally:
        fs.rm(root, recursive=True)


# ------------------------------------------------------------------ atomicity

MIXED = pd.DataFrame({"id": [1, 2], "name": [1, "two"]})  # pyarrow cannot convert "name"


@pytest.mark.parametrize(
    ("fmt", "mode", "frame", "options"),
    [
        ("parquet", "overwrite", MIXED, {}),
        ("parquet", "append", MIXED, {}),
        ("csv", "overwrite", pd.DataFrame({"id": [1], "name": ["é"]}), {"encoding": "ascii"}),
        ("csv", "append", pd.DataFrame({"id": [1], "name": ["é"]}), {"encoding": "ascii"}),
    ],
    ids=["parquet-overwrite", "parquet-append", "csv-overwrite", "csv-append"],
)
def test_failed_serialization_leaves_old_file_byte_identical_and_no_temp_file(
    engine, tmp_path, fmt, mode, frame, options
):
    target = tmp_path / f"out.{fmt}"
    loc = loc_for(tmp_path, target.name)
    engine.write(OLD, loc, fmt, "overwrite")
    before = target.read_bytes()
    with pytest.raises(OdibiRunError) as err:
        engine.write(frame, loc, fmt, mode, options, where=WHERE)
    assert str(err.value).startswith(WHERE + ": ")
    assert "left unchanged" in str(err.value)
    if fmt == "parquet":
        assert "column 'name'" in str(err.value)
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == [target.name]


def test_failed_delta_write_leaves_the_table_unchanged(engine, tmp_path):
    loc = loc_for(tmp_path, "t")
    engine.write(OLD, loc, "delta")
    with pytest.raises(OdibiRunError, match="column 'name'"):
        engine.write(MIXED, loc, "delta", "overwrite", where=WHERE)
    assert DeltaTable(str(tmp_path / "t")).version() == 0


# ---------------------------------------------------------------- read options


def test_csv_header_true_takes_column_names_from_the_first_line(engine, tmp_path):
    (tmp_path / "in.csv").write_text("id,name\n1,a\n2,b\n")
    df = engine.read(loc_for(tmp_path, "in.csv"), "csv", {"header": True})
    assert list(df.columns) == ["id", "name"]
    assert df.to_dict("records") == OLD_ROWS


def test_csv_header_false_reads_every_line_as_data(engine, tmp_path):
    (tmp_path / "in.csv").write_text("id,name\n1,a\n")
    df = engine.read(loc_for(tmp_path, "in.csv"), "csv", {"header": False})
    assert list(df.columns) == [0, 1]
    assert df.to_dict("records") == [{0: "id", 1: "name"}, {0: "1", 1: "a"}]


def test_csv_dtype_option_is_passed_to_pandas(engine, tmp_path):
    (tmp_path / "in.csv").write_text("code,qty\n007,1\n010,2\n")
    df = engine.read(loc_for(tmp_path, "in.csv"), "csv", {"dtype": {"code": "str"}})
    assert df["code"].tolist() == ["007", "010"]
    assert df["qty"].tolist() == [1, 2]


def test_csv_write_options_are_passed_to_pandas(engine, tmp_path):
    engine.write(OLD, loc_for(tmp_path, "out.csv"), "csv", options={"sep": ";"})
    assert (tmp_path / "out.csv").read_text().splitlines() == ["id;name", "1;a", "2;b"]


def test_parquet_directory_of_part_files_is_read_as_one_table(engine, tmp_path):
    folder = tmp_path / "spark_out.parquet"
    folder.mkdir()
    pq.write_table(pa.table({"id": [1, 2], "name": ["a", "b"]}), folder / "part-00000.parquet")
    pq.write_table(pa.table({"id": [3], "name": ["c"]}), folder / "part-00001.parquet")
    (folder / "_SUCCESS").write_bytes(b"")
    df = engine.read(loc_for(tmp_path, "spark_out.parquet"), "parquet")
    assert sorted(df.to_dict("records"), key=lambda r: r["id"]) == OLD_ROWS + NEW_ROWS


def test_csv_directory_of_part_files_is_read_as_one_table(engine, tmp_path):
    folder = tmp_path / "spark_out.csv"
    folder.mkdir()
    (folder / "part-00000.csv").write_text("id,name\n1,a\n2,b\n")
    (folder / "part-00001.csv").write_text("id,name\n3,c\n")
    (folder / "_SUCCESS").write_bytes(b"")
    (folder / ".part-00000.csv.crc").write_bytes(b"\x00garbage")
    df = engine.read(loc_for(tmp_path, "spark_out.csv"), "csv", {"header": True})
    assert df.to_dict("records") == OLD_ROWS + NEW_ROWS


# whole, readable files beside the data: a read that took them for data would count them
LEFTOVERS = (
    ".a.{fmt}.tmp-0123abcd",  # a temporary being written (or left by a writer that died)
    "b.{fmt}.tmp-0123abcd",  # the same, as earlier versions named it
    "c.{fmt}.staged-0123abcd",  # a staged result
    "part-00000.{fmt}#1",  # delta-rs' temporary on local disk
    "_d.{fmt}",
    ".e.{fmt}",
)


@pytest.mark.parametrize("fmt", ["csv", "json", "parquet"])
def test_a_folder_read_skips_hidden_and_temporary_files(engine, tmp_path, fmt):
    (tmp_path / "data").mkdir()
    engine.write(OLD, loc_for(tmp_path, f"data/a.{fmt}"), fmt, "overwrite")
    data = (tmp_path / "data" / f"a.{fmt}").read_bytes()
    for name in LEFTOVERS:
        (tmp_path / "data" / name.format(fmt=fmt)).write_bytes(data)
    (tmp_path / "data" / f"f.{fmt}.tmp-0123abcd").mkdir()  # a folder being written
    (tmp_path / "data" / f"f.{fmt}.tmp-0123abcd" / f"part-0.{fmt}").write_bytes(data)
    assert engine.read(loc_for(tmp_path, "data"), fmt).to_dict("records") == OLD_ROWS


def test_a_partitioned_parquet_folder_read_skips_leftovers_and_keeps_its_partitions(
    engine, tmp_path
):
    root = tmp_path / "run=1" / "sales"  # a folder name with '=' above the dataset
    for g in ("a", "b"):
        (root / f"g={g}").mkdir(parents=True)
        pq.write_table(pa.table({"id": [1, 2]}), root / f"g={g}" / "part-0.parquet")
    pq.write_table(pa.table({"id": [9]}), root / "g=a" / "part-1.parquet.tmp-0123abcd")
    (root / "g=b" / "part-2.parquet#1").write_bytes(b"PAR1 half written")
    df = engine.read(loc_for(tmp_path, "run=1/sales"), "parquet")
    assert list(df.columns) == ["id", "g"]  # no column 'run' from above the folder read
    assert sorted(zip(df["g"].astype(str), df["id"], strict=True)) == [
        ("a", 1),
        ("a", 2),
        ("b", 1),
        ("b", 2),
    ]


def test_parquet_compression_write_option_is_applied(engine, tmp_path):
    engine.write(OLD, loc_for(tmp_path, "out.parquet"), "parquet", options={"compression": "gzip"})
    meta = pq.ParquetFile(tmp_path / "out.parquet").metadata
    assert meta.row_group(0).column(0).compression == "GZIP"


def test_json_is_written_as_json_lines_by_default(engine, tmp_path):
    engine.write(OLD, loc_for(tmp_path, "out.json"), "json")
    lines = (tmp_path / "out.json").read_text().splitlines()
    assert [json.loads(line) for line in lines] == OLD_ROWS


def test_json_lines_false_writes_one_array(engine, tmp_path):
    engine.write(OLD, loc_for(tmp_path, "out.json"), "json", options={"lines": False})
    assert json.loads((tmp_path / "out.json").read_text()) == OLD_ROWS


def test_json_lines_are_read_by_default(engine, tmp_path):
    (tmp_path / "in.json").write_text('{"id": 1, "name": "a"}\n{"id": 2, "name": "b"}\n')
    df = engine.read(loc_for(tmp_path, "in.json"), "json")
    assert df.to_dict("records") == OLD_ROWS


def test_delta_timestamp_as_of_reads_the_version_current_then(engine, tmp_path):
    loc = loc_for(tmp_path, "t")
    engine.write(OLD, loc, "delta", "overwrite")
    engine.write(NEW, loc, "delta", "append")
    first_commit_ms = DeltaTable(str(tmp_path / "t")).history()[-1]["timestamp"]
    when = pd.Timestamp(first_commit_ms, unit="ms", tz="UTC").isoformat()
    df = engine.read(loc, "delta", {"timestampAsOf": when})
    assert sorted(df.to_dict("records"), key=lambda r: r["id"]) == OLD_ROWS


@pytest.mark.parametrize("fmt", ["csv", "parquet", "json"])
def test_partition_by_is_rejected_for_file_formats(engine, tmp_path, fmt):
    with pytest.raises(OdibiRunError) as err:
        engine.write(OLD, loc_for(tmp_path, NAMES[fmt]), fmt, options={"partition_by": ["id"]})
    assert "delta" in str(err.value) and "partition_by" in str(err.value)
    assert list(tmp_path.iterdir()) == []


def test_unknown_read_option_is_named_in_the_error(engine, tmp_path):
    (tmp_path / "in.csv").write_text("id\n1\n")
    with pytest.raises(OdibiRunError) as err:
        engine.read(loc_for(tmp_path, "in.csv"), "csv", {"inferSchema": True}, where=WHERE)
    message = str(err.value)
    assert message.startswith(WHERE + ": read option 'inferSchema' is not accepted by ")
    assert "pandas.read_csv" in message and "Remove it" in message


def test_unknown_delta_write_option_is_named_in_the_error(engine, tmp_path):
    with pytest.raises(OdibiRunError, match="'zorder'"):
        engine.write(OLD, loc_for(tmp_path, "t"), "delta", options={"zorder": "id"})


SECRET = "s3cr3t-key-value"


def with_storage_options(loc: Location, options: dict[str, Any]) -> Location:
    return Location(
        uri=loc.uri,
        fs=loc.fs,
        fs_path=loc.fs_path,
        delta_uri=loc.delta_uri,
        storage_options=options,
    )


@pytest.mark.parametrize(
    ("rel", "action"),
    [
        ("t", lambda e, loc: e.read(loc, "delta", where=WHERE)),
        ("t", lambda e, loc: e.write(NEW, loc, "delta", "append", where=WHERE)),
        ("t", lambda e, loc: e.write(NEW, loc, "delta", "overwrite", where=WHERE)),
        ("new_table", lambda e, loc: e.write(NEW, loc, "delta", "overwrite", where=WHERE)),
    ],
    ids=["read", "append", "overwrite", "create"],
)
def test_storage_option_values_never_appear_in_error_messages(engine, tmp_path, rel, action):
    write_deltalake(str(tmp_path / "t"), pa.table({"id": [1], "name": ["a"]}))
    options = {"max_retries": SECRET}  # delta-rs cannot parse it and quotes it back
    with pytest.raises(DeltaError) as raw:
        DeltaTable(str(tmp_path / "t"), storage_options=options)
    assert SECRET in str(raw.value)  # so the engine really has something to hide
    loc = with_storage_options(loc_for(tmp_path, rel), options)
    with pytest.raises(OdibiRunError) as err:
        action(engine, loc)
    message = str(err.value)
    assert message.startswith(WHERE + ": ")
    assert str(tmp_path / rel) in message
    assert "max_retries" in message and SECRET not in message
    assert DeltaTable(str(tmp_path / "t")).to_pyarrow_table().to_pylist() == [
        {"id": 1, "name": "a"}
    ]


# ------------------------------------------------------------------------ SQL


def test_sql_does_not_see_python_variables(engine):
    # The engine holds each registered DataFrame in a local variable named ``frame``;
    # with DuckDB's replacement scans on, "FROM frame" would silently read it.
    with pytest.raises(OdibiRunError, match="refers to table 'frame'"):
        engine.sql("SELECT * FROM frame", {"a": NEW})


# ---------------------------------------------------------------- summaries


# ------------------------------------------- modes against whatever is at the path


def put_foreign(tmp_path: Path, name: str, kind: str) -> Path:
    """Put data that is not a Delta table at ``tmp_path/name``: a plain file or a directory
    of parquet part files."""
    path = tmp_path / name
    if kind == "file":
        path.write_bytes(b"not,a,table\n1,2,3\n")
    else:
        path.mkdir()
        pq.write_table(pa.table({"id": [9]}), path / "part-00000.parquet")
    return path


@pytest.mark.parametrize("kind", ["file", "parquet-dir"])
@pytest.mark.parametrize("fmt", FORMATS)
def test_exists_and_modes_error_ignore_agree_on_anything_at_the_path(engine, tmp_path, fmt, kind):
    path = put_foreign(tmp_path, "target", kind)
    before = snapshot(path)
    loc = loc_for(tmp_path, "target")
    assert engine.exists(loc, fmt) is True
    with pytest.raises(OdibiRunError) as err:
        engine.write(NEW, loc, fmt, "error", where=WHERE)
    assert str(err.value).startswith(WHERE + ": ")
    assert f"'{path}' already exists" in str(err.value)
    assert engine.write(NEW, loc, fmt, "ignore", where=WHERE) is False
    assert snapshot(path) == before
    assert siblings(tmp_path) == ["target"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_exists_is_false_and_error_mode_writes_when_nothing_is_there(engine, tmp_path, fmt):
    loc = loc_for(tmp_path, NAMES[fmt])
    assert engine.exists(loc, fmt) is False
    assert engine.write(OLD, loc, fmt, "error") is True
    assert engine.exists(loc, fmt) is True


@pytest.mark.parametrize("mode", ["overwrite", "append"])
@pytest.mark.parametrize("kind", ["file", "parquet-dir"])
def test_delta_write_refuses_a_path_holding_other_data(engine, tmp_path, kind, mode):
    path = put_foreign(tmp_path, "target", kind)
    before = snapshot(path)
    with pytest.raises(OdibiRunError) as err:
        engine.write(NEW, loc_for(tmp_path, "target"), "delta", mode, where=WHERE)
    message = str(err.value)
    assert message.startswith(WHERE + ": ")
    assert f"'{path}' exists but is not a Delta table" in message
    assert snapshot(path) == before
    assert not (path / "_delta_log").exists()


def test_delta_write_into_an_existing_empty_directory_creates_the_table(engine, tmp_path):
    (tmp_path / "t").mkdir()
    assert engine.write(OLD, loc_for(tmp_path, "t"), "delta", "overwrite") is True
    assert read_back(tmp_path / "t", "delta") == OLD_ROWS


def test_a_delta_write_deletes_what_delta_rs_left_half_written_an_hour_ago(engine, tmp_path):
    engine.write(OLD, loc_for(tmp_path, "t"), "delta", "overwrite")
    stale = tmp_path / "t" / f"part-00001-{uuid.uuid4()}-c000.snappy.parquet#1"
    fresh = tmp_path / "t" / f"part-00002-{uuid.uuid4()}-c000.snappy.parquet#1"
    stale.write_bytes(b"PAR1 half written")
    fresh.write_bytes(b"PAR1 being written")
    two_hours_ago = time.time() - 2 * 3600
    os.utime(stale, (two_hours_ago, two_hours_ago))
    engine.write(NEW, loc_for(tmp_path, "t"), "delta", "append")
    assert not stale.exists()
    assert fresh.exists()  # delta-rs may be writing it right now
    assert read_back(tmp_path / "t", "delta") == OLD_ROWS + NEW_ROWS


# ------------------------------------------------- replacing a directory target


def part_files_dir(path: Path) -> None:
    path.mkdir()
    (path / "part-00000.csv").write_text("id,name\n7,x\n")
    (path / "part-00001.csv").write_text("id,name\n8,y\n")
    (path / "_SUCCESS").write_bytes(b"")


@pytest.mark.parametrize("fmt", ["csv", "parquet", "json"])
def test_overwrite_replaces_a_directory_of_part_files_with_no_leftovers(engine, tmp_path, fmt):
    part_files_dir(tmp_path / NAMES[fmt])
    assert engine.write(OLD, loc_for(tmp_path, NAMES[fmt]), fmt, "overwrite") is True
    assert (tmp_path / NAMES[fmt]).is_file()
    assert read_back(tmp_path / NAMES[fmt], fmt) == OLD_ROWS
    assert siblings(tmp_path) == [NAMES[fmt]]


class FailingMoveFS(LocalFileSystem):
    """A local filesystem whose move of a temporary file into place fails."""

    def mv(self, path1: Any, path2: Any, *args: Any, **kwargs: Any) -> None:
        if ".tmp-" in str(path1):
            raise OSError("simulated failure moving the new file into place")
        super().mv(path1, path2, *args, **kwargs)


def test_failed_move_into_a_directory_target_puts_the_old_directory_back(engine, tmp_path):
    part_files_dir(tmp_path / "out.csv")
    before = snapshot(tmp_path / "out.csv")
    base = loc_for(tmp_path, "out.csv")
    loc = Location(uri=base.uri, fs=FailingMoveFS(), fs_path=base.fs_path, delta_uri="")
    with pytest.raises(OSError, match="simulated failure"):
        engine.write(OLD, loc, "csv", "overwrite")
    assert (tmp_path / "out.csv").is_dir()
    assert snapshot(tmp_path / "out.csv") == before
    assert siblings(tmp_path) == ["out.csv"]


# ---------------------------------------------------- write option errors


@pytest.mark.parametrize(
    ("fmt", "options", "name"),
    [
        ("csv", {"sep": 5}, "sep"),
        ("csv", {"quoting": "all", "na_rep": "-"}, "quoting"),
        ("csv", {"encoding": "no-such-codec"}, "encoding"),
        ("json", {"orient": "split"}, "orient"),
        ("json", {"indent": "wide"}, "indent"),
        ("parquet", {"row_group_size": "big"}, "row_group_size"),
        ("parquet", {"compression": 5}, "compression"),
    ],
)
def test_bad_write_option_value_is_named_not_blamed_on_the_data(
    engine, tmp_path, fmt, options, name
):
    loc = loc_for(tmp_path, NAMES[fmt])
    engine.write(OLD, loc, fmt, "overwrite")
    before = snapshot(tmp_path / NAMES[fmt])
    with pytest.raises(OdibiRunError) as err:
        engine.write(NEW, loc, fmt, "overwrite", options, where=WHERE)
    message = str(err.value)
    assert message.startswith(f"{WHERE}: write option '{name}' is not valid for ")
    assert "could not be serialized" not in message
    assert "left unchanged" in message
    assert snapshot(tmp_path / NAMES[fmt]) == before
    assert siblings(tmp_path) == [NAMES[fmt]]


@pytest.mark.parametrize("fmt", ["csv", "json", "parquet"])
def test_unknown_write_option_is_named_in_the_error(engine, tmp_path, fmt):
    with pytest.raises(OdibiRunError) as err:
        engine.write(OLD, loc_for(tmp_path, NAMES[fmt]), fmt, options={"inferSchema": True})
    assert "write option 'inferSchema' is not accepted by " in str(err.value)
    assert list(tmp_path.iterdir()) == []


def test_data_error_with_valid_options_is_still_reported_as_data(engine, tmp_path):
    with pytest.raises(OdibiRunError) as err:
        engine.write(MIXED, loc_for(tmp_path, "out.parquet"), "parquet", options={"version": "2.6"})
    assert "column 'name' could not be serialized" in str(err.value)
    assert "write option" not in str(err.value)


# ---------------------------------------------------------- appends and JSON


@pytest.mark.parametrize(
    ("fmt", "old_text"), [("csv", "id,name\n1,a"), ("json", '{"id":1,"name":"a"}')]
)
def test_append_to_a_file_without_a_final_newline_starts_a_new_line(
    engine, tmp_path, fmt, old_text
):
    (tmp_path / NAMES[fmt]).write_text(old_text)
    engine.write(NEW, loc_for(tmp_path, NAMES[fmt]), fmt, "append")
    assert read_back(tmp_path / NAMES[fmt], fmt) == [OLD_ROWS[0], *NEW_ROWS]


NAN_FRAME = pd.DataFrame({"id": [1, 2, 3], "x": [math.nan, math.inf, 1.5], "s": [None, "b", "c"]})
NAN_ROWS = [
    {"id": 1, "x": None, "s": None},
    {"id": 2, "x": None, "s": "b"},
    {"id": 3, "x": 1.5, "s": "c"},
]


def test_json_lines_write_nan_and_infinity_as_null(engine, tmp_path):
    loc = loc_for(tmp_path, "out.json")
    engine.write(NAN_FRAME, loc, "json")
    engine.write(NAN_FRAME.iloc[:1], loc, "json", "append")
    lines = (tmp_path / "out.json").read_text().splitlines()
    assert [strict_json(line) for line in lines] == [*NAN_ROWS, NAN_ROWS[0]]


def test_json_array_writes_nan_and_infinity_as_null(engine, tmp_path):
    loc = loc_for(tmp_path, "out.json")
    engine.write(NAN_FRAME, loc, "json", options={"lines": False})
    engine.write(NAN_FRAME.iloc[:1], loc, "json", "append", {"lines": False})
    assert strict_json((tmp_path / "out.json").read_text()) == [*NAN_ROWS, NAN_ROWS[0]]


def test_a_delta_table_created_from_an_empty_result_takes_later_rows(
    engine: PandasEngine, tmp_path: Path
):
    # an empty SQL result has object columns with no value, which arrow types as null: a
    # table created with such a column would refuse every later write with values in it
    loc = loc_for(tmp_path, "t")
    empty = pd.DataFrame({"id": pd.Series([], dtype="int64"), "name": pd.Series([], dtype=object)})
    engine.write(empty, loc, "delta")
    assert pa.schema(DeltaTable(str(tmp_path / "t")).schema().to_arrow()).field("name").type == (
        pa.string()
    )
    engine.write(pd.DataFrame({"id": [1], "name": ["ann"]}), loc, "delta", "append")
    nothing = pd.DataFrame({"id": [2], "name": [None]})  # all null: the table's type
    engine.write(nothing, loc, "delta", "append")
    engine.write(pd.DataFrame({"id": [3], "name": ["cy"]}), loc, "delta", "overwrite")
    got = DeltaTable(str(tmp_path / "t")).to_pandas()
    assert got.to_dict("records") == [{"id": 3, "name": "cy"}]
