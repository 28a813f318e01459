"""The notebook API: lazy names, predict on pandas / Arrow / dict tables, ids, Photoz, open_store."""

import subprocess
import sys
import warnings

import numpy as np
import pandas as pd
import pytest
from _stores import write_store

from specdiff_catalog.flags import Flag
from specdiff_catalog.io.catalog import demo_catalog_dir


@pytest.fixture(scope="module")
def model():
    import torch

    from specdiff_catalog import load_model

    torch.set_num_threads(1)
    return load_model(notice=False)


@pytest.fixture(scope="module")
def table():
    return pd.read_parquet(demo_catalog_dir() / "dataset").head(12).reset_index(drop=True)


def test_import_is_lazy_and_the_names_resolve():
    heavy = ("torch", "dask", "distributed", "xarray", "zarr", "pandas", "numpy", "scipy")
    code = (
        f"import sys, specdiff_catalog as s; loaded = [m for m in {heavy} if m in sys.modules]; "
        "assert not loaded, loaded; from specdiff_catalog import open_store; "
        "assert 'torch' not in sys.modules and 'distributed' not in sys.modules; "
        "from specdiff_catalog import load_model, predict, run_catalog, RunOptions, ClusterConfig, Photoz; "
        "print(s.__all__)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert "run_catalog" in done.stdout
    import specdiff_catalog

    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        specdiff_catalog.nope  # noqa: B018


def test_predict_pandas_arrow_and_dict_agree_and_ids_key_the_noise(model, table):
    import pyarrow as pa

    from specdiff_catalog import predict

    pz = predict(model, table, n_samples=39)
    assert list(pz.object_id) == list(table["OBJECT_ID"]) and pz.z_samples.shape == (12, 39)
    frame = pz.to_pandas()
    assert frame.index.name == "object_id" and list(frame.columns[4:13]) == [
        f"z_q{q:g}" for q in (0.025, 0.05, 0.16, 0.25, 0.5, 0.75, 0.84, 0.95, 0.975)
    ]
    assert np.allclose(frame["z_q0.5"], frame["z_median"]) and frame["z_median"].between(0, 2).all()
    arrow = predict(model, pa.Table.from_pandas(table.iloc[::-1]), n_samples=39)
    as_dict = predict(model, {c: table[c].to_numpy() for c in table.columns}, n_samples=39, batch_size=5)
    for other in (arrow, as_dict):
        got = other.to_pandas().loc[frame.index]
        assert np.allclose(got["z_median"], frame["z_median"], atol=1e-5)
    # without an id column the rows are numbered; the packed Legacy Surveys id when only those columns exist
    no_ids = predict(
        model,
        table.drop(columns=["OBJECT_ID", "RELEASE", "BRICKID", "OBJID"]),
        n_samples=8,
        quantiles=(0.2, 0.5, 0.8),
    )
    assert list(no_ids.object_id) == list(range(12))
    packed = predict(model, table.drop(columns=["OBJECT_ID"]).head(2), n_samples=8, quantiles=(0.5,))
    release, brick, objid = (
        table[c].to_numpy()[:2].astype(np.int64) for c in ("RELEASE", "BRICKID", "OBJID")
    )
    assert list(packed.object_id) == list((release << 40) | (brick << 16) | objid)


def test_rows_without_photometry_are_kept_and_flagged(model, table):
    from specdiff_catalog import predict

    broken = table.head(3).copy()
    for band in ("G", "R", "Z", "W1", "W2"):
        broken.loc[1, f"FLUX_{band}"] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # 8 samples resolve these levels: no warning
        pz = predict(model, broken, n_samples=8, quantiles=(0.16, 0.5, 0.84))
    assert list(pz.has_pdf) == [True, False, True] and pz.flags[1] & Flag.NO_PHOTOMETRY
    assert np.isnan(pz.z_samples[1]).all() and np.isnan(pz.latent[1]).all()


def test_too_few_samples_warn(model, table):
    from specdiff_catalog import predict
    from specdiff_catalog.summaries import SampleCountWarning

    with pytest.warns(SampleCountWarning, match=r"16 samples per object are too few .* >= 39"):
        predict(model, table.head(2), n_samples=16)


def test_xarray_and_spectra_of_a_prediction(model, table):
    from specdiff_catalog import predict

    pz = predict(model, table.head(4), n_samples=8, quantiles=(0.16, 0.5, 0.84), latent_samples=True)
    ds = pz.to_xarray()
    assert dict(ds.sizes) == {"object": 4, "quantile": 3, "sample": 8, "latent_dim": pz.latent.shape[1]}
    assert list(ds["object_id"].values) == list(pz.object_id) and pz.latent_samples.shape[:2] == (4, 8)
    spectra = pz.spectra(redshift="mode", observed="desi")
    assert model.autoencoder is not None
    expected = model.autoencoder.decode_latents(pz.latent)
    assert np.allclose(spectra.flux_rest, expected) and np.array_equal(
        spectra.z, pz.z_mode.astype(np.float64)
    )
    assert spectra.flux_obs.shape == (4, 7781) and np.isfinite(spectra.dn4000).all()


def test_open_store_gives_the_done_rows_only(tmp_path):
    from specdiff_catalog import open_store

    path = write_store(tmp_path / "out.zarr", sizes=(300, 150, 200, 50), shard_rows=128, failed=3)
    with pytest.warns(UserWarning, match="50 objects of failed or pending partitions"):
        ds = open_store(path)
    ids = ds["object_id"].values
    assert ds.sizes["object"] == 650 and list(ids) == list(range(1000, 1650))  # no padding, no failed rows
    assert (
        (ds["valid"].values == 1).all()
        and ds["z_median"].attrs["units"] == "1"
        and ds["ra"].attrs["units"] == "deg"
    )
    assert int(np.isnan(ds["z_median"].values).sum()) == 6  # 2 objects without photometry per partition
