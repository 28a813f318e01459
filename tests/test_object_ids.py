"""Object ids are read exactly or refused by name (issue 13 case 2; the policy is in docs/output.md)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from specdiff_catalog.cli import main
from specdiff_catalog.io.catalog import ObjectIdError, object_ids, open_catalog, read_objects
from specdiff_catalog.io.store import open_store

BIG = 1 << 62  # ids beyond 2^53 do not survive a float64 round trip


def _partition(tmp_path: Path, **columns) -> object:
    n = len(next(iter(columns.values())))
    table = pa.table({"FLUX_G": np.linspace(1.0, 2.0, n), **columns})
    pq.write_table(table, tmp_path / "part.parquet")
    return open_catalog(tmp_path).partitions[0]


def test_large_ids_are_exact(tmp_path):
    ids = BIG + np.arange(1000, dtype=np.int64) * 977
    frame, got = read_objects(_partition(tmp_path, OBJECT_ID=ids), ["FLUX_G"])
    assert got.dtype == np.int64 and np.array_equal(got, ids)
    assert list(frame.columns) == ["FLUX_G"]


def test_null_ids_are_refused_naming_file_and_rows(tmp_path):
    """Three nulls pushed a partition's ids through float64 (365 of 877 changed, exit 0)."""
    values = [int(v) for v in BIG + np.arange(877)]
    for row in (5, 6, 400):
        values[row] = None
    part = _partition(tmp_path, OBJECT_ID=pa.array(values, pa.int64()))
    with pytest.raises(
        ObjectIdError, match=r"part.parquet: 3 null value\(s\) in id column OBJECT_ID at row\(s\) 5, 6, 400"
    ):
        read_objects(part, ["FLUX_G"])


def test_uint64_ids_above_int64_are_refused(tmp_path):
    """They wrapped negative."""
    ids = np.array([1, 2, (1 << 63) + 5, (1 << 64) - 1], dtype=np.uint64)
    with pytest.raises(ObjectIdError, match=r"2 id\(s\) in OBJECT_ID above 2\^63 - 1.*9223372036854775813"):
        read_objects(_partition(tmp_path, OBJECT_ID=ids), ["FLUX_G"])
    small = np.array([1, 2, (1 << 63) - 1], dtype=np.uint64)  # in range: kept, exactly
    _, got = read_objects(_partition(tmp_path, OBJECT_ID=small), ["FLUX_G"])
    assert got.tolist() == [1, 2, (1 << 63) - 1]


def test_duplicate_ids_are_refused_naming_them(tmp_path):
    ids = np.array([10, 11, 12, 11, 13, 10, 11], dtype=np.int64)
    with pytest.raises(ObjectIdError, match=r"part.parquet: 2 object id\(s\) occur more than once: 10, 11"):
        read_objects(_partition(tmp_path, OBJECT_ID=ids), ["FLUX_G"])


def test_float_id_column_is_refused(tmp_path):
    """--id-column RA gave 12 distinct ids for 2,000 objects."""
    part = _partition(tmp_path, OBJECT_ID=np.arange(5), RA=np.linspace(10.1, 10.9, 5))
    with pytest.raises(ObjectIdError, match="id column RA is double, not an integer column"):
        read_objects(part, ["FLUX_G"], id_column="ra")


def test_packed_ids_are_range_checked():
    table = pa.table(
        {"RELEASE": [10000, 9010], "BRICKID": [662174, 1], "OBJID": [5, 65535]},
    )
    assert object_ids(table).tolist() == [
        (10000 << 40) | (662174 << 16) | 5,
        (9010 << 40) | (1 << 16) | 65535,
    ]
    for column, bad in (("OBJID", [5, 65536]), ("BRICKID", [1 << 24, 1]), ("RELEASE", [-1, 9010])):
        with pytest.raises(ObjectIdError, match=rf"x.parquet: {column} outside 0\.\."):
            object_ids(
                table.set_column(table.column_names.index(column), column, pa.array(bad)), where="x.parquet"
            )


@pytest.mark.slow
def test_run_fails_the_partition_with_null_ids_and_keeps_the_rest_exact(trained_tiny, tmp_path, capsys):
    """A partition with null OBJECT_IDs fails by name (exit 1); no id of the others changes."""
    catalog = Path(shutil.copytree(trained_tiny.catalog, tmp_path / "catalog"))
    parts = open_catalog(catalog).partitions
    victim = parts[1].files[0]
    table = pq.read_table(victim.path)
    ids = table["OBJECT_ID"].to_pylist()
    ids[0] = ids[2] = ids[3] = None
    table = table.set_column(table.column_names.index("OBJECT_ID"), "OBJECT_ID", pa.array(ids, pa.int64()))
    pq.write_table(table, victim.path)
    out = tmp_path / "pz.zarr"
    argv = ["run", "--input", str(catalog), "--out", str(out), "--model", str(trained_tiny.model)]
    argv += ["--n-samples", "8", "--n-workers", "1", "--no-progress", "--dashboard-address", ":0"]
    assert main(argv) == 1
    printed = capsys.readouterr().out
    assert f"{parts[1].url}: 3 null value(s) in id column OBJECT_ID at row(s) 0, 2, 3" in printed
    store = open_store(out)
    status = store.partitions()["status"].tolist()
    assert status[1] == "failed" and status.count("done") == len(parts) - 1
    valid = store.read("valid") == 1
    want = np.concatenate(
        [
            pq.read_table(p.files[0].path, columns=["OBJECT_ID"])["OBJECT_ID"].to_numpy()
            for p in parts
            if p.index != 1
        ]
    )
    assert np.array_equal(np.sort(store.read("object_id")[valid]), np.sort(want))
