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
    (root / "hats.properties").write_text(
        "obs_collection=mixed\ndataproduct_type=object\nhats_col_ra=RA\nhats_col_dec=DEC\n"
    )
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


# --- hats layouts, URLs, collections and margins ------------------------------------------------


def _rows(cat) -> pd.DataFrame:
    frames = [read_partition(p, ["OBJID", "RA", "DEC", "FLUX_G", "FLUX_R", "TYPE"]) for p in cat.partitions]
    return _sorted(pd.concat(frames, ignore_index=True))


def _assert_same_rows(got: pd.DataFrame, want: pd.DataFrame) -> None:
    for column in want.columns:
        np.testing.assert_array_equal(got[column].to_numpy(), want[column].to_numpy(), err_msg=column)


def test_npix_suffix_directory_per_pixel_as_lsdb_reads_it(tmp_path):
    """hats_npix_suffix=/ (a directory per pixel) was refused; now each pixel directory is one
    partition, its files read together, and hats and LSDB agree on the rows."""
    import hats

    root = tmp_path / "dirs"
    cat = write_hats(_table(), root, order=ORDER, catalog_name="dirs", npix_suffix="/")
    assert (root / "hats.properties").read_text().count("hats_npix_suffix=/") == 1
    assert cat.kind == "hats" and len(cat.partitions) == 48 and cat.n_rows == N_ROWS
    first = cat.partitions[0]
    assert first.path.is_dir() and first.path.name == f"Npix={first.pixel}"
    assert [f.name for f in first.files] == [f"Npix={first.pixel}.parquet"]
    # a second file in one pixel directory: the partition reads both, in name order
    extra = _table(7, seed=9).assign(OBJID=np.arange(N_ROWS, N_ROWS + 7))
    extra.insert(0, "_healpix_29", np.full(7, first.pixel << (2 * (29 - ORDER)), dtype=np.int64))
    pq.write_table(pa.Table.from_pandas(extra, preserve_index=False), first.path / "z_more.parquet")
    (root / "dataset" / "_metadata").unlink()
    cat = open_catalog(root)
    assert [f.name for f in cat.partitions[0].files] == [f"Npix={first.pixel}.parquet", "z_more.parquet"]
    assert cat.n_rows == N_ROWS + 7 and cat.partitions[0].n_rows == first.n_rows + 7
    _assert_same_rows(_rows(cat), _sorted(pd.concat([_table(), extra.drop(columns="_healpix_29")])))
    assert hats.read_hats(root).catalog_info.npix_suffix == "/"
    lsdb = pytest.importorskip("lsdb")
    assert len(lsdb.open_catalog(root).compute()) == N_ROWS + 7


def test_hats_catalog_in_memory_url_round_trips():
    """write_hats into fsspec's memory:// filesystem, read back through open_catalog: same rows."""
    url = "memory://specdiff-catalog-test/mem_cat"
    cat = write_hats(_table(), url, order=ORDER, catalog_name="mem", overwrite=True)
    assert cat.url == url and cat.kind == "hats" and cat.n_rows == N_ROWS
    assert all(p.url.startswith(url + "/dataset/Norder=1/") for p in cat.partitions)
    assert cat.properties["obs_collection"] == "mem"
    _assert_same_rows(_rows(open_catalog(url)), _table())


def test_file_url_opens_the_same_catalog(hats_dir):
    by_path, by_url = open_catalog(hats_dir), open_catalog(f"file://{hats_dir}")
    assert by_url.url == f"file://{hats_dir}"
    assert [(p.order, p.pixel, p.n_rows) for p in by_url.partitions] == [
        (p.order, p.pixel, p.n_rows) for p in by_path.partitions
    ]
    _assert_same_rows(_rows(by_url), _table())


def test_unknown_scheme_is_a_one_line_error():
    from specdiff_catalog.io.paths import PathError

    with pytest.raises(PathError, match="unknown URL scheme 'nosuch'"):
        open_catalog("nosuch://bucket/catalog")


@pytest.mark.parametrize("content", [b"\xff\xfe\x00garbage\x80\x81", b"no equals sign here\n"])
def test_garbage_properties_file_is_named(hats_copy, content):
    """It said "'utf-8' codec can't decode byte"; now one line naming the file."""
    (hats_copy / "hats.properties").write_bytes(content)
    with pytest.raises(CatalogError) as err:
        open_catalog(hats_copy)
    message = str(err.value)
    assert message.startswith(f"{hats_copy / 'hats.properties'}: not a readable HATS properties file")
    assert "\n" not in message


def _margin_of(hats_dir: Path, where: Path) -> Path:
    """A copy of the catalog relabelled as its margin catalog (what hats-import writes beside it)."""
    from hats.catalog import TableProperties

    shutil.copytree(hats_dir, where)
    info = TableProperties.read_from_dir(where)
    margin = info.copy_and_update(
        catalog_name="test_cat_margin",
        catalog_type="margin",
        primary_catalog="test_cat",
        margin_threshold=10.0,
    )
    (where / "properties").unlink()
    margin.to_properties_file(where)
    return where


def test_margin_catalog_is_refused(hats_dir, tmp_path):
    margin = _margin_of(hats_dir, tmp_path / "margin")
    with pytest.raises(CatalogError, match=r"margin catalog .*10.0 arcsec.*give the main catalog"):
        open_catalog(margin)


def test_collection_reads_its_main_catalog_not_its_margin(hats_dir, tmp_path):
    """A collection as hats-import writes it: main catalog + margin; only the main one is read."""
    import hats

    collection = tmp_path / "collection"
    shutil.copytree(hats_dir, collection / "main")
    _margin_of(hats_dir, collection / "main_10arcs")
    (collection / "collection.properties").write_text(
        "obs_collection=test_collection\nhats_primary_table_url=main\n"
        "all_margins=main_10arcs\ndefault_margin=main_10arcs\n"
    )
    assert hats.read_hats(collection).default_margin == "main_10arcs"
    cat = open_catalog(collection)
    assert cat.root == collection / "main" and cat.n_rows == N_ROWS


def test_columns_differing_only_in_case_are_an_error_naming_both(tmp_path):
    """FLUX_G and flux_g: the later silently won; now reading either is an error naming both."""
    from specdiff_catalog.bands import AmbiguousColumnError

    table = pa.table({"FLUX_G": [1.0, 2.0], "flux_g": [3.0, 4.0], "OBJECT_ID": [1, 2]})
    pq.write_table(table, tmp_path / "a.parquet")
    part = open_catalog(tmp_path).partitions[0]
    with pytest.raises(
        AmbiguousColumnError, match=r"a.parquet: columns FLUX_G and flux_g differ only in case"
    ):
        read_partition(part, ["flux_g"])
    assert list(read_partition(part, ["object_id"])["object_id"]) == [1, 2]


@pytest.mark.slow
def test_run_reads_a_file_url_as_it_reads_the_path(trained_tiny, tiny_run, tmp_path):
    """`run --input file://...` end to end: the same store, array for array, as with the plain path."""
    import xarray as xr

    from specdiff_catalog.cli import main
    from specdiff_catalog.io.store import open_store

    out = tmp_path / "pz.zarr"
    url = f"file://{trained_tiny.catalog}"
    argv = ["run", "--input", url, "--out", str(out), "--model", str(trained_tiny.model)]
    argv += ["--n-samples", "64", "--save-samples", "64", "--n-workers", "1", "--threads-per-worker", "1"]
    assert main([*argv, "--dashboard-address", ":0", "--no-progress"]) == 0
    assert open_store(out).attrs["input"] == url
    want, got = xr.open_zarr(tiny_run), xr.open_zarr(out)
    assert int(got["valid"].sum()) == 400
    for name in ("object_id", "valid", "ra", "z_samples", "z_quantiles", "latent", "flags"):
        np.testing.assert_array_equal(got[name].values, want[name].values, err_msg=name)
