"""The Zarr output store: layout, dtypes, shard-aligned regions, padding, status, resume, concurrency."""

from __future__ import annotations

import json
import multiprocessing
import shutil
import uuid
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import zarr

from specdiff_catalog.flags import Flag
from specdiff_catalog.io.columns import output_columns
from specdiff_catalog.io.fingerprint import PartitionSource
from specdiff_catalog.io.store import (
    IncompleteStoreError,
    NotDoneError,
    OutputStore,
    PartitionDataError,
    PartitionStatus,
    StoreLayout,
    StoreMismatchError,
    StoreReplacedError,
    choose_shard_rows,
    create_store,
    open_dataset,
    open_store,
    padding,
    regions,
    shard_files,
)

LAYOUT = StoreLayout(
    quantiles=(0.05, 0.16, 0.5, 0.84, 0.95), latent_size=6, n_samples_saved=4, shard_rows=32, chunk_rows=8
)
# (norder, npix, n_rows): a full shard, a partial one, an empty pixel, a multi-shard one, a plain file.
PARTITIONS = [(3, 100, 32), (3, 101, 5), (3, 102, 0), (4, 900, 70), (None, None, 1)]
ATTRS = {
    "model": {"id": "default-mock", "sha256": {"diffusion.safetensors": "a" * 64}},
    "config": {"sampler": "dpm++", "steps": 20, "seed": 0},
    "input": {"path": "/data/ls_dr10", "hats_properties": {"obs_collection": "ls_dr10", "hats_nrows": "108"}},
    "command_line": "specdiff-catalog run --input /data/ls_dr10 --out out.zarr",
}
EXPECTED_DTYPES = {
    "object_id": "int64",
    "_healpix_29": "int64",
    "ra": "float64",
    "dec": "float64",
    "valid": "uint8",
    "flags": "uint16",
    "quantile": "float64",
    "z_quantiles": "float32",
    "z_median": "float32",
    "z_mode": "float32",
    "z_mean": "float32",
    "z_std": "float32",
    "latent": "float32",
    "latent_std": "float32",
    "z_samples": "float16",
}


def _columns(n: int, seed: int, layout: StoreLayout = LAYOUT) -> dict[str, np.ndarray]:
    """Results for one partition of n objects, reproducible from seed."""
    rng = np.random.default_rng(seed)
    q = np.sort(rng.uniform(0, 2, (n, len(layout.quantiles))), axis=1)
    return {
        "object_id": seed * 1000 + np.arange(n, dtype=np.int64),
        "_healpix_29": rng.integers(0, 2**40, n),
        "ra": rng.uniform(0, 360, n),
        "dec": rng.uniform(-90, 90, n),
        "flags": rng.choice([0, int(Flag.MISSING_BAND), int(Flag.OUTSIDE_TRAINING_DOMAIN)], n).astype(
            np.uint16
        ),
        "z_quantiles": q,
        "z_median": q[:, q.shape[1] // 2],
        "z_mode": q[:, q.shape[1] // 2] + 0.01,
        "z_mean": q.mean(axis=1),
        "z_std": q.std(axis=1),
        "latent": rng.normal(size=(n, layout.latent_size)),
        "latent_std": rng.uniform(size=(n, layout.latent_size)),
        "z_samples": rng.uniform(0, 2, (n, layout.n_samples_saved)),
        "coverage": rng.uniform(0, 1, n),
        **(
            {"ppc_chi2": rng.chisquare(2, n), "ppc_dof": np.full(n, 2), "ppc_pvalue": rng.uniform(0, 1, n)}
            if layout.latent_size
            else {}
        ),
    }


@pytest.fixture
def store(tmp_path) -> OutputStore:
    return create_store(tmp_path / "out.zarr", PARTITIONS, LAYOUT, ATTRS)


def _write_all(path: Path | str, indices) -> None:
    out = open_store(path)
    for i in indices:
        out.write_partition(i, _columns(PARTITIONS[i][2], seed=i))


def test_layout_validation():
    with pytest.raises(ValueError, match="inside"):
        StoreLayout(quantiles=(0.0, 0.5), latent_size=2)
    with pytest.raises(ValueError, match="increasing"):
        StoreLayout(quantiles=(0.5, 0.1), latent_size=2)
    with pytest.raises(ValueError, match="divide"):
        StoreLayout(quantiles=(0.5,), latent_size=2, shard_rows=32, chunk_rows=5)
    assert StoreLayout(quantiles=[0.5], latent_size=2, shard_rows=16).chunk_rows == 16


def test_arrays_dtypes_dimension_names(store):
    group = zarr.open_group(store.path, mode="r")
    n_objects = 32 + 32 + 0 + 96 + 32
    for name, dtype in EXPECTED_DTYPES.items():
        assert str(group[name].dtype) == dtype, name
    for name in (
        "object_id",
        "_healpix_29",
        "ra",
        "dec",
        "valid",
        "flags",
        "z_median",
        "z_mode",
        "z_mean",
        "z_std",
    ):
        assert group[name].shape == (n_objects,) and group[name].metadata.dimension_names == ("object",), name
    assert group["z_quantiles"].metadata.dimension_names == ("object", "quantile")
    assert group["z_quantiles"].shape == (n_objects, 5)
    assert group["latent"].metadata.dimension_names == ("object", "latent_dim")
    assert group["latent_std"].shape == (n_objects, 6)
    assert group["z_samples"].metadata.dimension_names == ("object", "sample")
    np.testing.assert_array_equal(group["quantile"][:], LAYOUT.quantiles)
    for name in ("norder", "npix", "start", "stop", "n_rows", "status", "error"):
        assert group["partitions"][name].metadata.dimension_names == ("partition",), name


def test_every_array_carries_the_column_spec_cf_attributes(store):
    """units and long_name from io.columns, the one definition of the output row; the
    status values are PartitionStatus's, decodable through flag_values / flag_meanings."""
    group = zarr.open_group(store.path, mode="r")
    spec = output_columns(5, 6, 4)
    assert set(spec) == set(group.array_keys()) - {"quantile"}
    for name, column in spec.items():
        attrs = dict(group[name].attrs)
        assert attrs["long_name"] == column.long_name and attrs.get("units") == column.units, name
    assert group["ra"].attrs["units"] == "deg" and group["z_median"].attrs["units"] == "1"
    assert "units" not in group["flags"].attrs and "units" not in group["object_id"].attrs
    status = dict(group["partitions"]["status"].attrs)
    meanings = dict(zip(status["flag_values"], status["flag_meanings"].split(), strict=True))
    assert meanings == {0: "pending", 1: "done", 2: "failed"}
    assert [int(s) for s in PartitionStatus] == [0, 1, 2]


def test_no_samples_or_latents_when_not_asked(tmp_path):
    layout = StoreLayout(quantiles=(0.5,), latent_size=0, n_samples_saved=0, shard_rows=8)
    out = create_store(tmp_path / "o.zarr", [(0, 1, 3)], layout, ATTRS)
    names = set(zarr.open_group(out.path, mode="r").array_keys())
    assert not names & {"z_samples", "latent", "latent_std"}
    columns = {
        k: v
        for k, v in _columns(3, 0, layout).items()
        if k not in ("z_samples", "latent", "latent_std", "ppc_chi2", "ppc_dof", "ppc_pvalue")
    }
    out.write_partition(0, columns)
    assert out.pending() == []


def test_attributes_record_provenance(store):
    attrs = open_store(store.path, mode="r").attrs
    assert attrs["model"]["sha256"]["diffusion.safetensors"] == "a" * 64
    assert attrs["config"]["steps"] == 20 and attrs["command_line"].startswith("specdiff-catalog run")
    assert attrs["input"]["hats_properties"]["obs_collection"] == "ls_dr10"
    assert attrs["layout"]["quantiles"] == list(LAYOUT.quantiles)
    assert attrs["software_version"] and attrs["created"].endswith("+00:00")
    assert attrs["format"] == "specdiff-catalog output" and attrs["state"] == "ready"
    # netCDF takes strings, numbers and lists of them: the rest is stored as JSON strings
    raw = zarr.open_group(store.path, mode="r").attrs
    assert json.loads(raw["config"]) == ATTRS["config"] and raw["format_version"] == 2
    assert set(raw["json_attributes"].split()) == {"model", "config", "input", "layout"}


def test_regions_are_shard_aligned_and_never_share_a_shard(store):
    parts = store.partitions()
    assert list(parts["start"]) == [0, 32, 64, 64, 160]
    assert list(parts["stop"]) == [32, 64, 64, 160, 192]
    assert list(parts["n_rows"]) == [n for _, _, n in PARTITIONS]
    assert list(parts["norder"]) == [3, 3, 3, 4, -1] and list(parts["npix"]) == [100, 101, 102, 900, -1]
    shard = LAYOUT.shard_rows
    owners: dict[int, int] = {}
    for i, (start, stop, n) in enumerate(parts[["start", "stop", "n_rows"]].itertuples(index=False)):
        assert start % shard == 0 and stop % shard == 0 and stop - start >= n
        for s in range(start // shard, stop // shard):
            assert owners.setdefault(s, i) == i, f"shard {s} shared by partitions {owners[s]} and {i}"
    group = zarr.open_group(store.path, mode="r")
    assert group["z_quantiles"].shards == (shard, 5) and group["z_quantiles"].chunks == (8, 5)
    assert group["ra"].shards == (shard,)


def test_regions_function():
    start, stop = regions([1, 4096, 4097, 0], 4096)
    assert list(start) == [0, 4096, 8192, 16384] and list(stop) == [4096, 8192, 16384, 16384]


def test_write_partition_pads_and_reads_back(store):
    _write_all(store.path, range(len(PARTITIONS)))
    group = zarr.open_group(store.path, mode="r")
    parts = store.partitions()
    for i, (start, stop, n) in enumerate(parts[["start", "stop", "n_rows"]].itertuples(index=False)):
        want = _columns(n, seed=i)
        real, pad = slice(start, start + n), slice(start + n, stop)
        np.testing.assert_array_equal(group["object_id"][real], want["object_id"])
        np.testing.assert_array_equal(group["z_quantiles"][real], want["z_quantiles"].astype(np.float32))
        np.testing.assert_array_equal(group["z_samples"][real], want["z_samples"].astype(np.float16))
        np.testing.assert_array_equal(group["flags"][real], want["flags"])
        assert np.all(group["valid"][real] == 1)
        assert np.all(group["valid"][pad] == 0)
        assert np.all(group["flags"][pad] == Flag.PADDING)
        assert np.all(group["object_id"][pad] == -1)
        assert np.all(np.isnan(group["z_median"][pad])) and np.all(np.isnan(group["latent"][pad]))
    assert int(group["valid"][:].sum()) == sum(n for _, _, n in PARTITIONS)
    assert store.pending() == [] and set(parts["status"]) == {"done"}


def test_write_partition_checks_names_and_shapes(store):
    columns = _columns(5, seed=1)
    with pytest.raises(ValueError, match="missing arrays \\['z_std'\\]"):
        store.write_partition(1, {k: v for k, v in columns.items() if k != "z_std"})
    with pytest.raises(ValueError, match="latent has shape"):
        store.write_partition(1, columns | {"latent": columns["latent"][:, :3]})
    assert 1 in store.pending()


def test_xarray_opens_it(store):
    xr = pytest.importorskip("xarray")
    _write_all(store.path, [0, 1])
    with xr.open_zarr(store.path) as ds:  # consolidated metadata: no fallback warning
        assert ds.sizes == {"object": 192, "quantile": 5, "latent_dim": 6, "sample": 4}
        assert ds["z_quantiles"].dims == ("object", "quantile")
        assert ds["latent"].dims == ("object", "latent_dim") and "latent" in ds.data_vars
        np.testing.assert_allclose(ds["quantile"].values, LAYOUT.quantiles)
        assert ds["object_id"].dtype == np.int64 and ds["valid"].dtype == np.uint8
        assert ds["flags"].dtype == np.uint16 and ds["z_samples"].dtype == np.float16
        good = ds.isel(object=(ds["valid"] == 1).values)
        assert good.sizes["object"] == 37
        np.testing.assert_array_equal(ds["object_id"].values[32:37], 1000 + np.arange(5))
        assert json.loads(ds.attrs["config"])["seed"] == 0
    with xr.open_zarr(store.path, group="partitions") as parts:
        assert list(parts["status"].values) == [1, 1, 0, 0, 0]
        assert parts["status"].attrs["flag_meanings"] == "pending done failed"


def test_resume_skips_done_partitions(store):
    _write_all(store.path, [0, 3])
    again = create_store(store.path, PARTITIONS, LAYOUT, ATTRS)  # overwrite=False: resume
    assert again.pending() == [1, 2, 4]
    np.testing.assert_array_equal(zarr.open_group(store.path, mode="r")["object_id"][0:32], np.arange(32))


def test_crash_between_arrays_and_status_leaves_partition_pending(store, monkeypatch):
    def killed(self, index, code, message):
        raise KeyboardInterrupt("killed before the status write")

    monkeypatch.setattr(OutputStore, "_set_status", killed)
    with pytest.raises(KeyboardInterrupt):
        store.write_partition(1, _columns(5, seed=1))
    monkeypatch.undo()
    reopened = open_store(store.path)
    assert 1 in reopened.pending()
    # The arrays were written before the status: the data is there, the status says "not done".
    np.testing.assert_array_equal(
        zarr.open_group(store.path, mode="r")["object_id"][32:37], 1000 + np.arange(5)
    )
    reopened.write_partition(1, _columns(5, seed=1))
    assert 1 not in reopened.pending()


def test_failed_partition_stays_pending_with_its_message(store):
    store.mark_failed(3, "Npix=900.parquet: unreadable Parquet file")
    parts = store.partitions()
    assert parts.loc[3, "status"] == "failed" and "Npix=900" in parts.loc[3, "error"]
    assert 3 in store.pending()
    _write_all(store.path, [3])
    parts = store.partitions()
    assert parts.loc[3, "status"] == "done" and parts.loc[3, "error"] == ""


def test_incompatible_store_refused(store):
    other_model = ATTRS | {"model": {"id": "default-mock", "sha256": {"diffusion.safetensors": "b" * 64}}}
    with pytest.raises(StoreMismatchError, match=r"different model.*sha256"):
        create_store(store.path, PARTITIONS, LAYOUT, other_model)
    with pytest.raises(StoreMismatchError, match=r"different config.*steps"):
        store.check_compatible(ATTRS | {"config": ATTRS["config"] | {"steps": 50}})
    with pytest.raises(StoreMismatchError, match="layout"):
        create_store(
            store.path, PARTITIONS, StoreLayout(quantiles=(0.5,), latent_size=6, shard_rows=32), ATTRS
        )
    with pytest.raises(StoreMismatchError, match="another input: the input has 4 partitions"):
        create_store(store.path, PARTITIONS[:-1], LAYOUT, ATTRS)
    store.check_compatible(ATTRS | {"command_line": "something else"})  # provenance only: accepted


def test_overwrite_starts_over(store):
    _write_all(store.path, [0])
    fresh = create_store(store.path, PARTITIONS[:2], LAYOUT, ATTRS | {"config": {"steps": 5}}, overwrite=True)
    assert fresh.pending() == [0, 1] and len(fresh) == 2
    assert np.all(zarr.open_group(store.path, mode="r")["valid"][:] == 0)


def test_overwrite_refuses_a_directory_that_is_not_a_store(tmp_path):
    (tmp_path / "precious.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not a specdiff-catalog output store"):
        create_store(tmp_path, PARTITIONS, LAYOUT, ATTRS, overwrite=True)
    assert (tmp_path / "precious.txt").exists()


def test_open_store_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        open_store(tmp_path / "nowhere.zarr")
    zarr.open_group(tmp_path / "other.zarr", mode="w", attributes={"x": 1})
    with pytest.raises(StoreMismatchError, match="not a specdiff-catalog output store"):
        open_store(tmp_path / "other.zarr")


def test_attributes_must_be_json(tmp_path):
    with pytest.raises(ValueError, match="JSON"):
        create_store(tmp_path / "o.zarr", PARTITIONS, LAYOUT, ATTRS | {"bad": object()})


def test_set_attrs_refreshes_consolidated_metadata(store):
    store.set_attrs({"summary": {"n_objects": 108}})
    consolidated = json.loads((store.path / "zarr.json").read_text())
    assert json.loads(consolidated["attributes"]["summary"]) == {"n_objects": 108}
    assert open_store(store.path, mode="r").attrs["summary"]["n_objects"] == 108


def test_empty_catalog_store(tmp_path):
    out = create_store(tmp_path / "o.zarr", [], LAYOUT, ATTRS)
    assert out.pending() == [] and len(out.partitions()) == 0
    assert zarr.open_group(out.path, mode="r")["ra"].shape == (0,)


def test_two_processes_write_different_partitions(tmp_path, store):
    """Partitions written by two processes at once equal those written by one."""
    serial = create_store(tmp_path / "serial.zarr", PARTITIONS, LAYOUT, ATTRS)
    _write_all(serial.path, range(len(PARTITIONS)))
    context = multiprocessing.get_context("spawn")  # zarr runs an event-loop thread: do not fork it
    with ProcessPoolExecutor(max_workers=2, mp_context=context) as pool:
        list(pool.map(_write_all, [store.path, store.path], [[0, 2, 4], [1, 3]]))
    assert store.pending() == []
    a, b = zarr.open_group(serial.path, mode="r"), zarr.open_group(store.path, mode="r")
    for name in EXPECTED_DTYPES:
        np.testing.assert_array_equal(a[name][:], b[name][:], err_msg=name)
    np.testing.assert_array_equal(a["partitions"]["status"][:], b["partitions"]["status"][:])


def test_status_chunks_are_one_per_partition(store):
    """Status and error are written by each partition's writer: one chunk each, never shared."""
    group = zarr.open_group(store.path, mode="r")
    assert group["partitions"]["status"].chunks == (1,) and group["partitions"]["error"].chunks == (1,)


def test_existing_empty_directory_is_used_and_other_directories_refused(tmp_path):
    (tmp_path / "empty.zarr").mkdir()
    assert create_store(tmp_path / "empty.zarr", PARTITIONS, LAYOUT, ATTRS).pending() == [0, 1, 2, 3, 4]
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "data.txt").write_text("x")
    with pytest.raises(FileExistsError, match="not a specdiff-catalog output store"):
        create_store(tmp_path / "full", PARTITIONS, LAYOUT, ATTRS)


# --- every array checked before anything is written; valid = 1 only after all of them -------


def _rows(store_path: Path, region: slice) -> dict[str, np.ndarray]:
    group = zarr.open_group(store_path, mode="r")
    return {name: group[name][region] for name in ("valid", "object_id", "z_median")}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        # --save-samples 50 --n-samples 8: the samples array is narrower than the layout's
        (lambda c: c | {"z_samples": c["z_samples"][:, :2]}, "z_samples has shape"),
        # NaN outputs in a row whose flags do not say why (--batch-size -5 gave that)
        (lambda c: c | {"z_median": np.full(70, np.nan)}, "z_median is not finite for 70 objects"),
        (lambda c: c | {"object_id": c["object_id"].astype(np.float64)}, "object_id is float64"),
        (lambda c: c | {"flags": c["flags"].astype(np.int64) + 70000}, "flags has values outside"),
        (lambda c: c | {"flags": c["flags"] | np.uint16(Flag.PADDING)}, "PADDING bit"),
    ],
)
def test_a_bad_partition_writes_nothing(store, change, message):
    """Nothing of a partition is written, valid stays 0, when any of its arrays is wrong."""
    region = store.region(3)
    with pytest.raises(PartitionDataError, match=message):
        store.write_partition(3, change(_columns(70, seed=3)))
    rows = _rows(store.path, region)
    assert not rows["valid"].any() and (rows["object_id"] == -1).all() and np.isnan(rows["z_median"]).all()
    assert 3 in store.pending()


def test_nan_outputs_are_accepted_where_a_flag_says_why(store):
    columns = _columns(5, seed=1)
    for name in ("z_quantiles", "z_median", "z_mode", "z_mean", "z_std", "latent", "latent_std", "z_samples"):
        columns[name][:2] = np.nan
    columns["flags"][:2] = [int(Flag.NO_PHOTOMETRY), int(Flag.SAMPLER_FAILURE)]
    store.write_partition(1, columns)
    rows = _rows(store.path, store.region(1))
    assert list(rows["valid"][:5]) == [1] * 5 and np.isnan(rows["z_median"][:2]).all()


def test_an_object_the_photometry_check_skipped_is_written(store):
    """ppc_chi2 and ppc_pvalue are NaN without a flag when the check did not run (ppc_dof 0: fewer
    than two usable bands, docs/coverage.md); the writer refused the whole partition for it
    (FLUX_G = -50 on an object without FLUX_Z failed its partition on every retry)."""
    columns = _columns(5, seed=1)
    columns["flags"][:] = 0
    columns["ppc_dof"][:2] = 0
    columns["ppc_chi2"][:2] = np.nan
    columns["ppc_pvalue"][:2] = np.nan
    store.write_partition(1, columns)
    group = zarr.open_group(store.path, mode="r")
    region = store.region(1)
    assert list(group["valid"][region][:5]) == [1] * 5 and list(group["ppc_dof"][region][:3]) == [0, 0, 2]
    assert np.isnan(group["ppc_chi2"][region][:2]).all()
    assert np.isfinite(group["ppc_pvalue"][region][2:5]).all()


def test_failed_partition_rows_are_not_valid_and_readers_skip_them(store):
    """A partition written, then marked failed (a retry that failed), leaves valid = 0; a partition
    whose arrays were written but not its status (writer killed) is pending: no reader takes either."""
    _write_all(store.path, [0, 1, 3])
    store.mark_failed(3, "worker died")
    assert not _rows(store.path, store.region(3))["valid"].any()
    status = store.array("partitions/status")
    status[1] = int(PartitionStatus.PENDING)  # as if killed between valid = 1 and the status write
    reopened = open_store(store.path, mode="r")
    results = reopened.read_results(["object_id", "valid"])
    np.testing.assert_array_equal(results["object_id"], np.arange(32))  # partition 0 only
    with pytest.raises(NotDoneError, match=r"4 of 5 partitions are not done \(failed: Norder=4/Npix=900; "):
        reopened.require_done()
    assert reopened.require_done(partial=True) == 5 + 0 + 70 + 1


# --- self-describing: CF attributes, object_id coordinate, netCDF, open_dataset -------------


def test_cf_attributes_object_id_coordinate_and_netcdf(store, tmp_path):
    xr = pytest.importorskip("xarray")
    cf_xarray = pytest.importorskip("cf_xarray")
    _write_all(store.path, [0, 1])
    ds = xr.open_zarr(store.path)
    assert "object_id" in ds.coords and ds["z_median"].coords["object_id"].dtype == np.int64
    assert ds["flags"].attrs["flag_masks"] == [int(f) for f in Flag.__members__.values()]
    assert ds["flags"].attrs["flag_meanings"].split() == list(Flag.__members__)
    ds.to_netcdf(tmp_path / "out.nc")  # every attribute netCDF-serialisable
    with xr.open_dataset(tmp_path / "out.nc") as back:
        assert json.loads(back.attrs["config"]) == ATTRS["config"]
        flags = back["flags"]
        # the padding of partition 1 (5 objects in a 32-row shard); unwritten rows carry no flags
        assert cf_xarray.__version__ and (flags.cf == "PADDING").values.sum() == 32 - 5
        decoded = flags.cf.flags  # one boolean per flag meaning, through flag_masks / flag_meanings
        written = _columns(5, seed=1)["flags"]
        np.testing.assert_array_equal(
            decoded["MISSING_BAND"].values[32:37], (written & Flag.MISSING_BAND) != 0
        )
        np.testing.assert_array_equal(back["object_id"].values[32:37], 1000 + np.arange(5))


def test_open_dataset_gives_the_results_only(store):
    _write_all(store.path, [0, 1, 4])
    store.mark_failed(3, "unreadable file")
    with pytest.warns(UserWarning, match="70 objects of failed or pending partitions"):
        ds = open_dataset(store.path)
    assert ds.sizes["object"] == 32 + 5 + 1  # no padding, nothing of partitions 2 (empty) and 3
    np.testing.assert_array_equal(ds["object_id"].values, np.r_[np.arange(32), 1000 + np.arange(5), 4000])
    np.testing.assert_allclose(ds["quantile"].values, LAYOUT.quantiles)
    assert (ds["valid"].values == 1).all() and not (ds["flags"].values & Flag.PADDING).any()
    np.testing.assert_allclose(
        ds["z_quantiles"].values[:32], _columns(32, 0)["z_quantiles"].astype(np.float32)
    )


def test_open_dataset_of_a_relative_path_reads_the_same_store_after_a_chdir(store, tmp_path, monkeypatch):
    """The dataset is lazy: a relative path resolved at read time read missing chunks after a change
    of directory, i.e. fill values (object_id -1, valid 0) without an error (found by the docs test)."""
    _write_all(store.path, range(len(PARTITIONS)))
    monkeypatch.chdir(store.path.parent)
    ds = open_dataset(store.path.name)
    monkeypatch.chdir(tmp_path.parent)
    assert (ds["valid"].values == 1).all() and (ds["object_id"].values >= 0).all()
    assert ds.sizes["object"] == sum(n for _, _, n in PARTITIONS)


# --- shard size held to the catalog -----------------------------------------------------------


def test_shard_rows_keep_padding_small():
    demo = [163, 880, 48, 593, 171, 145]  # the bundled demo catalog: 2,000 objects in 6 partitions
    shard = choose_shard_rows(demo)
    assert shard == 64 and padding(demo, shard) == 176  # 2,176 rows, not 6,144
    assert choose_shard_rows([5_000_000] * 200) == 65536  # big partitions: the upper bound
    assert choose_shard_rows([1000] * 1_000_000) == 1024  # one shard per partition: 2.4% padding
    # 1e9 objects in partitions just over a power of two: 4096 keeps padding at 6% but takes
    # 17 shards per partition (259,386 files per array); the file bound raises it to 16384
    over = [65_537] * 15_258
    assert padding(over, 4096) < 0.1 * sum(over) < padding(over, 8192)
    assert choose_shard_rows(over) == 16384 and shard_files(over, 16384) <= 2**17 < shard_files(over, 8192)
    assert choose_shard_rows([]) == 64


# --- overwrite deletes only a store this package made, holding only its own arrays ----------


def test_overwrite_refuses_a_store_with_unrelated_files_inside(store):
    (store.path / "notes.txt").write_text("keep me")
    (store.path / "z_median" / "extra").mkdir()
    with pytest.raises(FileExistsError, match=r"not part of a specdiff-catalog output store \(notes.txt"):
        create_store(store.path, PARTITIONS, LAYOUT, ATTRS, overwrite=True)
    assert (store.path / "notes.txt").read_text() == "keep me"
    assert open_store(store.path).pending() == [0, 1, 2, 3, 4]


def test_overwrite_refuses_a_zarr_group_of_another_program(tmp_path):
    zarr.open_group(tmp_path / "other.zarr", mode="w", attributes={"x": 1}).create_array(
        "data", data=np.arange(3)
    )
    with pytest.raises(FileExistsError, match="did not make"):
        create_store(tmp_path / "other.zarr", PARTITIONS, LAYOUT, ATTRS, overwrite=True)
    np.testing.assert_array_equal(zarr.open_group(tmp_path / "other.zarr")["data"][:], np.arange(3))


# --- resume fingerprint ----------------------------------------------------------------------


def _sources(size: int = 1234, stamp: str = "17") -> list[PartitionSource]:
    return [
        PartitionSource(k, p, n, f"dataset/Norder={k}/Dir=0/Npix={p}.parquet", size, stamp)
        if k is not None
        else PartitionSource(k, p, n, "plain.parquet", size, stamp)
        for k, p, n in PARTITIONS
    ]


def _fingerprinted(catalog: str) -> dict:
    return ATTRS | {"input_fingerprint": {"catalog": catalog, "columns_sha256": "c" * 64}}


def test_resume_with_another_input_is_refused_naming_the_difference(tmp_path):
    path = tmp_path / "out.zarr"
    create_store(path, _sources(), LAYOUT, _fingerprinted("/data/a"))
    assert create_store(path, _sources(), LAYOUT, _fingerprinted("/data/a")).pending() == [0, 1, 2, 3, 4]
    with pytest.raises(StoreMismatchError, match=r"input catalog /data/b != /data/a recorded"):
        create_store(path, _sources(), LAYOUT, _fingerprinted("/data/b"))
    with pytest.raises(
        StoreMismatchError, match=r"partition Norder=3/Npix=100: file size 1240 != 1234 recorded"
    ):
        create_store(path, _sources(size=1240), LAYOUT, _fingerprinted("/data/a"))
    with pytest.raises(StoreMismatchError, match=r"Norder=3/Npix=100: file modification stamp 18 != 17"):
        create_store(path, _sources(stamp="18"), LAYOUT, _fingerprinted("/data/a"))
    other_columns = ATTRS | {"input_fingerprint": {"catalog": "/data/a", "columns_sha256": "d" * 64}}
    with pytest.raises(StoreMismatchError, match="columns differ"):
        create_store(path, _sources(), LAYOUT, other_columns)


def test_store_records_its_input_partitions(tmp_path):
    out = create_store(tmp_path / "out.zarr", _sources(), LAYOUT, _fingerprinted("/data/a"))
    assert out.sources() == _sources()
    table = out.partitions()
    assert (
        table.loc[3, "file"] == "dataset/Norder=4/Dir=0/Npix=900.parquet"
        and table.loc[3, "file_size"] == 1234
    )


# --- a store replaced under a writer ---------------------------------------------------------


def test_a_writer_of_a_replaced_store_writes_nothing(tmp_path):
    path = tmp_path / "out.zarr"
    first = create_store(path, PARTITIONS, LAYOUT, ATTRS)
    ref = first.ref()
    second = create_store(path, PARTITIONS, LAYOUT, ATTRS | {"config": {"seed": 1}}, overwrite=True)
    assert second.uuid != ref.uuid
    with pytest.raises(StoreReplacedError, match="replaced by another store"):
        ref.open()
    with pytest.raises(StoreReplacedError):
        first.write_partition(0, _columns(32, seed=0))
    with pytest.raises(StoreReplacedError):
        first.mark_failed(1, "x")
    with pytest.raises(StoreReplacedError):
        first.set_attrs({"last_run": {}})
    assert not zarr.open_group(path, mode="r")["valid"][:].any() and second.pending() == [0, 1, 2, 3, 4]
    shutil.rmtree(path)
    with pytest.raises(StoreReplacedError, match="removed"):
        ref.open()


# --- URL stores: fsspec memory:// in this process ---------------------------------------------


def test_memory_url_store_with_creation_marker():
    """A memory:// store (no rename there): state "creating" until the last write; an interrupted
    creation is refused by readers and recreated by create_store without overwrite."""
    url = f"memory://stores/{uuid.uuid4().hex}/out.zarr"
    create_store(url, PARTITIONS, LAYOUT, ATTRS)
    _write_all(url, [0, 1])
    again = open_store(url, mode="r")
    assert again.pending() == [2, 3, 4] and str(again.path) == url
    np.testing.assert_array_equal(again.read("object_id", slice(32, 37)), 1000 + np.arange(5))

    broken = f"memory://stores/{uuid.uuid4().hex}/out.zarr"
    with mock.patch("specdiff_catalog.io.store._create_partition_table", side_effect=KeyboardInterrupt):
        with pytest.raises(KeyboardInterrupt):
            create_store(broken, PARTITIONS, LAYOUT, ATTRS)
    with pytest.raises(IncompleteStoreError, match="creation was interrupted"):
        open_store(broken)
    assert create_store(broken, PARTITIONS, LAYOUT, ATTRS).pending() == [0, 1, 2, 3, 4]
