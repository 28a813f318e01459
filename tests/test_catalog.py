"""HATS / Parquet-directory catalogs: writing, discovery, row counts from metadata, column reading."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from specdiff_catalog.bands import MissingColumnError
from specdiff_catalog.io import catalog as catalog_module
from specdiff_catalog.io.catalog import CatalogError, open_catalog, read_partition, write_hats

N_ROWS = 2000
ORDER = 1


def _table(n: int = N_ROWS, seed: int = 0) -> pd.DataFrame:
    """Objects uniform on the sphere with Legacy Surveys column names."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "OBJID": np.arange(n, dtype=np.int64),
            "RA": rng.uniform(0.0, 360.0, n),
            "DEC": np.degrees(np.arcsin(rng.uniform(-1.0, 1.0, n))),
            "FLUX_G": rng.lognormal(size=n).astype(np.float32),
            "FLUX_R": rng.lognormal(size=n).astype(np.float32),
            "TYPE": rng.choice(["PSF", "REX", "EXP"], n),
        }
    )


@pytest.fixture(scope="module")
def hats_dir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cat") / "hats_cat"
    write_hats(
        _table(), path, order=ORDER, catalog_name="test_cat", extra_properties={"obs_title": "unit test"}
    )
    return path


@pytest.fixture
def hats_copy(hats_dir, tmp_path) -> Path:
    """A private copy that a test may damage."""
    return Path(shutil.copytree(hats_dir, tmp_path / "copy"))


def _sorted(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values("OBJID").reset_index(drop=True)


def test_write_hats_layout_and_properties(hats_dir):
    cat = open_catalog(hats_dir)
    assert cat.kind == "hats" and cat.n_rows == N_ROWS
    assert cat.columns[0] == "_healpix_29"
    assert cat.properties["dataproduct_type"] == "object"
    assert cat.properties["obs_collection"] == "test_cat"
    assert cat.properties["hats_nrows"] == str(N_ROWS)
    assert cat.properties["hats_col_ra"] == "RA" and cat.properties["hats_col_dec"] == "DEC"
    assert cat.properties["hats_order"] == str(ORDER)
    assert cat.properties["obs_title"] == "unit test"
    assert int(cat.properties["hats_max_rows"]) == max(p.n_rows for p in cat.partitions)
    for name in ("dataset/_metadata", "dataset/_common_metadata", "partition_info.csv", "hats.properties"):
        assert (hats_dir / name).is_file(), name
    info = pd.read_csv(hats_dir / "partition_info.csv")
    assert list(info.columns) == ["Norder", "Npix"]
    # Uniform points at order 1 fill all 48 pixels; each file sits at Norder=K/Dir=D/Npix=N.
    assert len(cat.partitions) == 48
    for part in cat.partitions:
        assert part.path == hats_dir / "dataset" / f"Norder={ORDER}" / "Dir=0" / f"Npix={part.pixel}.parquet"
        index = pq.read_table(part.path, columns=["_healpix_29"])["_healpix_29"].to_numpy()
        assert index.dtype == np.int64
        assert np.all(np.diff(index) >= 0), "rows sorted by _healpix_29"
        assert np.all(index >> (2 * (29 - ORDER)) == part.pixel), "every row lies in its pixel"


def test_write_hats_spatial_index_matches_hats(hats_dir):
    from hats.pixel_math.spatial_index import compute_spatial_index

    part = open_catalog(hats_dir).partitions[5]
    frame = read_partition(part, ["_healpix_29", "RA", "DEC"])
    np.testing.assert_array_equal(frame["_healpix_29"], compute_spatial_index(frame["RA"], frame["DEC"]))


def test_hats_read_hats_opens_it(hats_dir):
    import hats

    hc = hats.read_hats(hats_dir)
    assert hc.catalog_info.total_rows == N_ROWS
    assert hc.catalog_info.ra_column == "RA"
    assert len(hc.get_healpix_pixels()) == 48
    assert set(hc.schema.names) >= {"_healpix_29", "OBJID", "RA", "DEC", "FLUX_G", "TYPE"}


def test_lsdb_opens_it_with_the_same_rows(hats_dir):
    lsdb = pytest.importorskip("lsdb")
    got = lsdb.open_catalog(hats_dir).compute().reset_index()
    want = _table()
    assert len(got) == N_ROWS
    got = _sorted(pd.DataFrame(got[want.columns]))
    for column in want.columns:
        np.testing.assert_array_equal(got[column].to_numpy(), want[column].to_numpy(), err_msg=column)


def test_catalog_reader_gives_back_every_row(hats_dir):
    cat = open_catalog(hats_dir)
    frames = [read_partition(p, ["OBJID", "RA", "DEC", "FLUX_G", "FLUX_R", "TYPE"]) for p in cat.partitions]
    got = _sorted(pd.concat(frames, ignore_index=True))
    want = _table()
    for column in want.columns:
        np.testing.assert_array_equal(got[column].to_numpy(), want[column].to_numpy(), err_msg=column)


def test_write_hats_refuses_existing_unless_overwrite(hats_copy):
    with pytest.raises(FileExistsError, match="copy"):
        write_hats(_table(10), hats_copy, order=0, catalog_name="x")
    cat = write_hats(_table(10), hats_copy, order=0, catalog_name="x", overwrite=True)
    assert cat.n_rows == 10 and {p.order for p in cat.partitions} == {0}


def test_write_hats_rejects_nonfinite_coordinates(tmp_path):
    table = _table(5)
    table.loc[2, "DEC"] = np.nan
    with pytest.raises(ValueError, match="DEC"):
        write_hats(table, tmp_path / "c", order=0, catalog_name="x")


def test_partitions_in_nested_order_across_orders(tmp_path):
    """Mixed orders sort like _healpix_29: (1, 4) covers order-2 pixels 16..19, so it comes after (2, 3)."""
    root = tmp_path / "mixed"
    pixels = [(2, 20), (1, 4), (2, 3), (0, 2)]
    for k, n in pixels:
        file = root / "dataset" / f"Norder={k}" / "Dir=0" / f"Npix={n}.parquet"
        file.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table({"x": np.arange(k + 1)}), file)
    (root / "hats.properties").write_text("obs_collection=mixed\ndataproduct_type=object\n")
    cat = open_catalog(root)
    assert [(p.order, p.pixel) for p in cat.partitions] == [(2, 3), (1, 4), (2, 20), (0, 2)]
    assert [p.index for p in cat.partitions] == [0, 1, 2, 3]
    assert [p.n_rows for p in cat.partitions] == [3, 2, 3, 1]


def test_discovery_without_partition_info_or_metadata(hats_dir, hats_copy):
    want = [(p.order, p.pixel, p.n_rows) for p in open_catalog(hats_dir).partitions]
    (hats_copy / "partition_info.csv").unlink()
    (hats_copy / "dataset" / "_metadata").unlink()
    (hats_copy / "dataset" / "_common_metadata").unlink()
    cat = open_catalog(hats_copy)
    assert [(p.order, p.pixel, p.n_rows) for p in cat.partitions] == want
    assert "FLUX_G" in cat.columns


def test_legacy_properties_file(hats_dir, hats_copy):
    (hats_copy / "hats.properties").unlink()
    assert (hats_copy / "properties").is_file()
    cat = open_catalog(hats_copy)
    assert cat.kind == "hats" and cat.properties["obs_collection"] == "test_cat"
    assert cat.n_rows == N_ROWS


def test_row_counts_come_from_metadata_without_reading_data(hats_dir, monkeypatch):
    """With _metadata, no data file is opened at all; without it only footers are read."""
    opened: list[str] = []
    real = pq.read_metadata

    def spy(where, *args, **kwargs):
        opened.append(Path(where).name)
        return real(where, *args, **kwargs)

    def no_data(*args, **kwargs):
        raise AssertionError("data pages read during discovery")

    monkeypatch.setattr(catalog_module.pq, "read_metadata", spy)
    monkeypatch.setattr(catalog_module.pq, "read_table", no_data)
    monkeypatch.setattr(pq.ParquetFile, "read", no_data)
    cat = open_catalog(hats_dir)
    assert opened == ["_metadata"]
    assert cat.n_rows == N_ROWS


def test_row_counts_from_footers_when_metadata_absent(hats_copy, monkeypatch):
    (hats_copy / "dataset" / "_metadata").unlink()
    opened: list[str] = []
    real = pq.read_metadata

    def spy(where, *args, **kwargs):
        opened.append(Path(where).name)
        return real(where, *args, **kwargs)

    monkeypatch.setattr(catalog_module.pq, "read_metadata", spy)
    monkeypatch.setattr(catalog_module.pq, "read_table", lambda *a, **k: pytest.fail("data read"))
    cat = open_catalog(hats_copy)
    assert len(opened) == 48 and all(name.startswith("Npix=") for name in opened)
    assert cat.n_rows == N_ROWS


def test_plain_parquet_directory(tmp_path):
    table = _table(300)
    for i, name in enumerate(["b.parquet", "a.parquet", "c.parquet"]):
        table.iloc[i * 100 : (i + 1) * 100].to_parquet(tmp_path / name)  # pandas keeps its index
    (tmp_path / "notes.txt").write_text("not parquet")
    cat = open_catalog(tmp_path)
    assert cat.kind == "parquet" and cat.properties == {}
    assert [p.path.name for p in cat.partitions] == ["a.parquet", "b.parquet", "c.parquet"]
    assert all(p.order is None and p.pixel is None and p.n_rows == 100 for p in cat.partitions)
    assert "__index_level_0__" not in cat.columns and "OBJID" in cat.columns
    frame = read_partition(cat.partitions[1], ["OBJID"])
    np.testing.assert_array_equal(frame["OBJID"], np.arange(100))  # b.parquet holds rows 0..99


def test_single_parquet_file(tmp_path):
    _table(7).to_parquet(tmp_path / "one.parquet", index=False)
    cat = open_catalog(tmp_path / "one.parquet")
    assert cat.kind == "parquet" and cat.n_rows == 7 and len(cat.partitions) == 1


def test_columns_matched_case_insensitively_with_requested_spelling(hats_dir):
    part = open_catalog(hats_dir).partitions[0]
    frame = read_partition(part, ["flux_g", "Ra"], optional=["Flux_R", "FLUX_W1"])
    assert list(frame.columns) == ["flux_g", "Ra", "Flux_R"]
    assert len(frame) == part.n_rows
    raw = pq.read_table(part.path, columns=["FLUX_G"])["FLUX_G"].to_numpy()
    np.testing.assert_array_equal(frame["flux_g"].to_numpy(), raw)
    assert frame["flux_g"].dtype == np.float32


def test_missing_column_names_file_and_column(hats_dir):
    part = open_catalog(hats_dir).partitions[0]
    with pytest.raises(MissingColumnError) as err:
        read_partition(part, ["FLUX_G", "FLUX_W1", "EBV"])
    message = str(err.value)
    assert str(part.path) in message and "FLUX_W1" in message and "EBV" in message
    assert "FLUX_G," not in message


def test_corrupt_parquet_is_named(hats_copy):
    (hats_copy / "dataset" / "_metadata").unlink()
    victim = hats_copy / "dataset" / "Norder=1" / "Dir=0" / "Npix=7.parquet"
    victim.write_bytes(b"this is not parquet at all")
    with pytest.raises(CatalogError, match=r"Npix=7.parquet"):
        open_catalog(hats_copy)


def test_corrupt_data_pages_named_on_read(hats_copy):
    """Footer intact, data pages overwritten: discovery works, reading names the file."""
    victim = hats_copy / "dataset" / "Norder=1" / "Dir=0" / "Npix=7.parquet"
    data = bytearray(victim.read_bytes())
    data[4:200] = b"\x00" * 196
    victim.write_bytes(bytes(data))
    part = next(p for p in open_catalog(hats_copy).partitions if p.pixel == 7)
    with pytest.raises(CatalogError, match=r"Npix=7.parquet"):
        read_partition(part, ["_healpix_29", "OBJID", "RA", "DEC", "FLUX_G", "FLUX_R", "TYPE"])


def test_stale_metadata_row_count_is_caught(hats_copy):
    part = next(p for p in open_catalog(hats_copy).partitions if p.pixel == 7)
    pq.write_table(pq.read_table(part.path).slice(0, 3), part.path)
    with pytest.raises(CatalogError, match="stale"):
        read_partition(part, ["OBJID"])


def test_missing_partition_file(hats_copy):
    (hats_copy / "dataset" / "Norder=1" / "Dir=0" / "Npix=7.parquet").unlink()
    (hats_copy / "dataset" / "_metadata").unlink()
    with pytest.raises(FileNotFoundError, match=r"Npix=7.parquet"):
        open_catalog(hats_copy)


def test_not_a_catalog(tmp_path):
    (tmp_path / "readme.txt").write_text("hello")
    with pytest.raises(CatalogError, match=str(tmp_path)):
        open_catalog(tmp_path)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        open_catalog(tmp_path / "nowhere")


def test_hats_collection_opens_its_primary_catalog(hats_dir, tmp_path):
    """data.lsdb.io serves collections: collection.properties names the primary catalog."""
    collection = tmp_path / "ls_dr10_collection"
    shutil.copytree(hats_dir, collection / "ls_dr10")
    (collection / "collection.properties").write_text(
        "obs_collection=ls_dr10_collection\nhats_primary_table_url=ls_dr10\n"
    )
    cat = open_catalog(collection)
    assert cat.root == collection / "ls_dr10" and cat.kind == "hats" and cat.n_rows == N_ROWS


def test_read_partition_keeps_dtypes(hats_dir):
    frame = read_partition(open_catalog(hats_dir).partitions[0], ["objid", "type", "flux_r"])
    want = pq.read_table(
        open_catalog(hats_dir).partitions[0].path, columns=["OBJID", "TYPE", "FLUX_R"]
    ).to_pandas()
    assert list(frame.dtypes) == list(want.dtypes)


def test_write_hats_refuses_an_empty_table(tmp_path):
    with pytest.raises(ValueError, match="empty"):
        write_hats(_table(0), tmp_path / "c", order=0, catalog_name="x")


def test_object_ids_from_column_or_ls_id_packing():
    from specdiff_catalog.io.catalog import object_ids

    ls = pd.DataFrame({"release": [10000, 9010], "BRICKID": [662174, 1], "OBJID": [5, 65535]})
    ids = object_ids(ls)
    assert ids[0] == (10000 << 40) + (662174 << 16) + 5
    assert ids[1] >> 40 == 9010 and (ids[1] >> 16) & 0xFFFFFF == 1 and ids[1] & 0xFFFF == 65535
    assert list(object_ids(ls.assign(object_id=[7, 8]))) == [7, 8]
    assert list(object_ids(ls.assign(MYID=[3, 4]), "myid")) == [3, 4]
    with pytest.raises(MissingColumnError, match=r"part.parquet.*OBJID"):
        object_ids(ls.drop(columns="OBJID"), where="part.parquet")


def test_spatial_index_matches_hats_and_marks_bad_coordinates():
    from hats.pixel_math.spatial_index import compute_spatial_index

    from specdiff_catalog.io.catalog import spatial_index

    ra, dec = np.array([10.0, np.nan, 200.0]), np.array([-5.0, 1.0, 60.0])
    index = spatial_index(ra, dec)
    assert index[1] == -1
    assert list(index[[0, 2]]) == list(compute_spatial_index(ra[[0, 2]], dec[[0, 2]]))
