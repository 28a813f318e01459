import numpy as np
import pytest
import xarray as xr
from _stores import write_store
from astropy.io import fits

from specdiff_catalog import spectral
from specdiff_catalog.cli import main
from specdiff_catalog.io.desi import WAVE
from specdiff_catalog.io.spectra_file import write_spectra
from specdiff_catalog.io.store import open_store
from specdiff_catalog.models import load_autoencoder
from specdiff_catalog.models.store import model_id
from specdiff_catalog.reconstruct import ObjectSelection, reconstruct_spectra, select_rows


@pytest.fixture(scope="module")
def model_and_store(trained_tiny, tmp_path_factory):
    """The tiny trained model and a store of its id whose latents scatter around the training
    latents' mean by half their std (two objects per partition without photometry: NaN)."""
    from specdiff_catalog.models.store import read_config

    path = write_store(
        tmp_path_factory.mktemp("reconstruct") / "out.zarr",
        sizes=(120, 60),
        latent_size=4,
        failed=None,
        attrs={"model": model_id(trained_tiny.model), "model_path": str(trained_tiny.model)},
    )
    diffusion = read_config(trained_tiny.model).diffusion
    assert diffusion is not None
    mean, std = (
        np.asarray(a, np.float32)
        for a in (diffusion.standardisation.latent_mean, diffusion.standardisation.latent_std)
    )
    group = open_store(path).group
    group["latent"][:] = mean + 0.5 * std * group["latent"][:]  # NaN rows stay NaN, padding rows stay NaN
    return trained_tiny.model, path


def test_selections(model_and_store):
    _, path = model_and_store
    store = open_store(path, mode="r")
    ids = store.group["object_id"][:]
    rows = select_rows(store, ObjectSelection(ids=(1150, 1000, 1121)))
    assert list(ids[rows]) == [1150, 1000, 1121]  # the order given; 1121 is in the second partition
    rows = select_rows(store, ObjectSelection(rows=(118, 123)))
    assert list(ids[rows]) == [1118, 1119, 1120, 1121, 1122]  # padding rows 120..127 are skipped
    a = select_rows(store, ObjectSelection(random=25, seed=3))
    assert np.array_equal(a, select_rows(store, ObjectSelection(random=25, seed=3))) and len(set(a)) == 25
    assert not np.array_equal(a, select_rows(store, ObjectSelection(random=25, seed=4)))
    assert (store.group["valid"][:][a] == 1).all()
    with pytest.raises(ValueError, match=r"2 object id.*not in the store's done partitions: 5, 1180"):
        select_rows(store, ObjectSelection(ids=(1000, 5, 1180)))
    assert ObjectSelection.parse("rows=3:7") == ObjectSelection(rows=(3, 7))
    assert ObjectSelection.parse("random=4", seed=2) == ObjectSelection(random=4, seed=2)
    with pytest.raises(ValueError, match="use ids="):
        ObjectSelection.parse("first=3")


def test_selections_do_not_depend_on_the_read_block_size(model_and_store, monkeypatch):
    from specdiff_catalog.io.store import OutputStore

    _, path = model_and_store
    store = open_store(path, mode="r")
    choices = [
        ObjectSelection(ids=(1150, 1000, 1121, 1179)),
        ObjectSelection(rows=(100, 150)),
        ObjectSelection(random=60, seed=5),
    ]
    whole = [select_rows(store, c) for c in choices]
    blocks = OutputStore.blocks
    monkeypatch.setattr(OutputStore, "blocks", lambda self, names, block_rows=None: blocks(self, names, 128))
    assert all(
        np.array_equal(a, select_rows(store, c)) for a, c in zip(whole, choices, strict=True)
    )  # two 128-row blocks


def test_decoded_spectra_are_the_decoder_output_with_dn4000(model_and_store):
    model_dir, path = model_and_store
    spectra = reconstruct_spectra(path, ObjectSelection(rows=(0, 40)), redshift="mode", observed="desi")
    autoencoder = load_autoencoder(model_dir)
    latent = open_store(path, mode="r").group["latent"][:40]
    ok = np.isfinite(latent).all(axis=1)
    assert list(np.flatnonzero(~ok)) == [0, 1]  # the two objects without photometry
    assert np.array_equal(spectra.has_latent, ok) and np.isnan(spectra.flux_rest[~ok]).all()
    assert np.allclose(spectra.flux_rest[ok], autoencoder.decode_latents(latent[ok]))
    assert np.allclose(spectra.dn4000[ok], spectral.dn4000(spectra.wave_rest, spectra.flux_rest[ok]))
    assert np.isnan(spectra.dn4000[~ok]).all() and np.isfinite(spectra.dn4000[ok]).all()
    # observed frame: pixel lambda carries the rest spectrum at lambda / (1 + z_mode)
    assert spectra.wave_obs.shape == WAVE.shape and np.allclose(spectra.z, spectra.z_mode, equal_nan=True)
    i = np.flatnonzero(ok)[0]
    expected = np.interp(
        WAVE / (1 + spectra.z[i]), spectra.wave_rest, spectra.flux_rest[i], left=np.nan, right=np.nan
    )
    assert np.allclose(spectra.flux_obs[i], expected, equal_nan=True, atol=1e-5)
    assert np.isfinite(spectra.flux_obs[i]).sum() > 0.9 * WAVE.size


def test_another_model_is_refused(model_and_store, tmp_path):
    model_dir, path = model_and_store
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.json").write_text((model_dir / "config.json").read_text() + " ")
    with pytest.raises(ValueError, match="is not the model that wrote"):
        reconstruct_spectra(path, ObjectSelection(rows=(0, 2)), model_dir=other)


def test_fits_and_zarr_files(model_and_store, tmp_path):
    _, path = model_and_store
    spectra = reconstruct_spectra(path, ObjectSelection(ids=(1001, 1005, 1130)), observed="model")
    write_spectra(spectra, tmp_path / "s.fits")
    with fits.open(tmp_path / "s.fits", checksum=True) as hdul:
        assert hdul["WAVELENGTH"].header["BUNIT"] == "Angstrom" and hdul["FLUX"].header["BUNIT"] == ""
        assert hdul["FLUX"].header.comments["BUNIT"] == "F_lambda / its median, rest 5300-5850 A"
        assert "5300-5850 A" in hdul[0].header["FLUXNORM"] and hdul[0].header["ZTYPE"] == "z_median"
        assert hdul["OBS_FLUX"].data.shape == (3, spectra.wave_obs.size)
        table = hdul["OBJECTS"].data
        assert list(table["OBJECT_ID"]) == [1001, 1005, 1130]
        assert np.allclose(table["DN4000"], spectra.dn4000, equal_nan=True)
        assert np.allclose(hdul["FLUX"].data, spectra.flux_rest, equal_nan=True)
        assert list(table["HAS_LATENT"]) == [False, True, True]
    write_spectra(spectra, tmp_path / "s.zarr")
    assert "dispaxis" not in xr.open_zarr(tmp_path / "s.zarr").attrs
    ds = xr.open_zarr(tmp_path / "s.zarr")
    assert ds["flux"].dims == ("object", "wavelength") and ds["wavelength"].attrs["units"] == "Angstrom"
    assert np.allclose(ds["obs_flux"].values, spectra.flux_obs, equal_nan=True)
    with pytest.raises(ValueError, match=r"FITS .* or Zarr"):
        write_spectra(spectra, tmp_path / "s.txt")


def test_specutils_reads_the_fits_file(model_and_store, tmp_path):
    specutils = pytest.importorskip("specutils")  # the [specutils] extra
    import astropy.units as u

    _, path = model_and_store
    spectra = reconstruct_spectra(path, ObjectSelection(ids=(1001, 1005, 1130)), observed="desi")
    write_spectra(spectra, tmp_path / "s.fits")
    reader = getattr(specutils, "Spectrum", None) or specutils.Spectrum1D  # Spectrum1D before specutils 2
    rest = reader.read(tmp_path / "s.fits")  # no format, no hdu: identified from the file
    assert rest.flux.shape == (3, spectra.wave_rest.size) and rest.flux.unit == u.dimensionless_unscaled
    assert np.allclose(rest.spectral_axis.to_value(u.AA), spectra.wave_rest, rtol=1e-6)  # float32 grid
    assert np.allclose(rest.flux.value, spectra.flux_rest, equal_nan=True)
    assert np.isnan(rest.flux.value[0]).all() and np.isfinite(rest.flux.value[1:]).all()  # 1001: no latent
    observed = reader.read(tmp_path / "s.fits", hdu="OBS_FLUX")
    assert np.allclose(observed.spectral_axis.to_value(u.AA), WAVE, rtol=1e-10)
    assert np.allclose(observed.flux.value, spectra.flux_obs, equal_nan=True)


def test_cli_spectra(model_and_store, tmp_path, capsys):
    _, path = model_and_store
    out = tmp_path / "s.fits"
    assert (
        main(
            [
                "spectra",
                "--pz",
                str(path),
                "--select",
                "random=5",
                "--seed",
                "1",
                "--observed",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert "5 objects" in capsys.readouterr().out
    with fits.open(out) as hdul:
        assert hdul["OBS_WAVELENGTH"].data.size == WAVE.size and len(hdul["OBJECTS"].data) == 5
    assert main(["spectra", "--pz", str(path), "--select", "ids=77", "--out", str(tmp_path / "x.fits")]) == 2
    assert "not in the store's done partitions: 77" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("select", "message"),
    [
        (f"ids=1000,{2**63}", f"object id(s) {2**63} outside the int64 range"),  # was an OverflowError
        ("rows=150:400", "rows=150:400 goes past the end: the store has 180 written objects (rows 0:180)"),
        ("rows=180:190", "rows=180:190 goes past the end"),  # was an empty file with exit 0
        ("ids=", "ids= names no object id"),
    ],
)
def test_spectra_selection_errors_are_one_line(model_and_store, tmp_path, capsys, select, message):
    _, path = model_and_store
    out = tmp_path / "s.fits"
    assert main(["spectra", "--pz", str(path), "--select", select, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not out.exists()
