"""The Zarr output store: layout, dtypes, shard-aligned regions, padding, status, resume, concurrency."""

from __future__ import annotations

import json
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import zarr

from specdiff_catalog.flags import Flag
from specdiff_catalog.io.columns import output_columns
from specdiff_catalog.io.store import (
    OutputStore,
    PartitionStatus,
    StoreLayout,
    StoreMismatchError,
    create_store,
    open_store,
    regions,
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


def _write_all(path: Path, indices) -> None:
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
    attrs = zarr.open_group(store.path, mode="r").attrs
    assert attrs["model"]["sha256"]["diffusion.safetensors"] == "a" * 64
    assert attrs["config"]["steps"] == 20 and attrs["command_line"].startswith("specdiff-catalog run")
    assert attrs["input"]["hats_properties"]["obs_collection"] == "ls_dr10"
    assert attrs["layout"]["quantiles"] == list(LAYOUT.quantiles)
    assert attrs["software_version"] and attrs["created"].endswith("+00:00")
    assert attrs["format"] == "specdiff-catalog output"


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
        assert ds.attrs["config"]["seed"] == 0
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
    with pytest.raises(StoreMismatchError, match="other partitions"):
        create_store(store.path, PARTITIONS[:-1], LAYOUT, ATTRS)
    store.check_compatible(ATTRS | {"command_line": "something else"})  # provenance only: accepted


def test_overwrite_starts_over(store):
    _write_all(store.path, [0])
    fresh = create_store(store.path, PARTITIONS[:2], LAYOUT, ATTRS | {"config": {"steps": 5}}, overwrite=True)
    assert fresh.pending() == [0, 1] and len(fresh) == 2
    assert np.all(zarr.open_group(store.path, mode="r")["valid"][:] == 0)


def test_overwrite_refuses_a_directory_that_is_not_a_store(tmp_path):
    (tmp_path / "precious.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not a Zarr store"):
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
    assert consolidated["attributes"]["summary"] == {"n_objects": 108}
    assert zarr.open_group(store.path, mode="r").attrs["summary"]["n_objects"] == 108


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
    with pytest.raises(FileExistsError, match="not a Zarr store"):
        create_store(tmp_path / "full", PARTITIONS, LAYOUT, ATTRS)
