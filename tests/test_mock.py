"""The mock survey: population, photometry, spectra, noise, ids, defects and the files it writes."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from specdiff_catalog.bands import BandSet
from specdiff_catalog.mock import MockConfig, make_mock_survey
from specdiff_catalog.mock.footprint import PHOTOMETRIC, SPECTROSCOPIC, SkyPatch, object_ids
from specdiff_catalog.mock.imaging import CatalogDefects, imaging_catalog
from specdiff_catalog.mock.noise import ImagingNoise, SpectroNoise, observe_imaging
from specdiff_catalog.mock.population import PopulationModel, draw_galaxies
from specdiff_catalog.mock.reddening import ReddeningModel, ebv
from specdiff_catalog.mock.spectra import (
    FibreModel,
    mw_transmission_spectrum,
    observed_flux,
    synthetic_maggies,
)

BANDS = BandSet.load("ls-dr10-south")


def _catalog(n: int, seed: int, kind: int = PHOTOMETRIC):
    galaxies = draw_galaxies(n, 1000 + seed, PopulationModel(), BANDS)
    table = imaging_catalog(
        galaxies,
        seed=seed,
        kind=kind,
        bandset=BANDS,
        patch=SkyPatch(),
        noise=ImagingNoise(),
        reddening=ReddeningModel(),
        defects=CatalogDefects(),
        fibre=FibreModel(),
        rng=np.random.default_rng(seed),
    )
    return galaxies, table


@pytest.fixture(scope="module")
def survey(tmp_path_factory):
    out = tmp_path_factory.mktemp("mock")
    summary = make_mock_survey(out, MockConfig(n_spec=700, n_phot=2000, seed=7, n_rest_spectra=20))
    return out, summary


def test_population_is_reproducible_and_inside_the_cuts():
    a = draw_galaxies(1500, 11, PopulationModel(), BANDS)
    b = draw_galaxies(1500, 11, PopulationModel(), BANDS)
    assert all(np.array_equal(x, y) for x, y in zip(vars(a).values(), vars(b).values(), strict=True))
    r = 22.5 - 2.5 * np.log10(a.flux[:, BANDS.names.index("r")])
    assert (a.redshift > 0).all() and a.redshift.max() <= 0.8 and r.max() < 22.5
    # the population is not a thin slice: median z ~0.4, both blue and red galaxies, r from < 18 to the limit
    assert 0.3 < np.median(a.redshift) < 0.5 and 0.15 < a.population.mean() < 0.4 and r.min() < 18
    np.testing.assert_allclose(a.coefficients.sum(axis=1), 1.0, rtol=1e-12)


def test_same_seed_same_catalog_other_seed_disjoint_ids():
    _, t1 = _catalog(1200, seed=3)
    _, t2 = _catalog(1200, seed=3)
    _, t3 = _catalog(1200, seed=4)
    _, spec = _catalog(1200, seed=3, kind=SPECTROSCOPIC)
    pd.testing.assert_frame_equal(t1, t2)
    assert t1["OBJECT_ID"].is_unique
    assert not set(t1["OBJECT_ID"]) & set(t3["OBJECT_ID"])
    assert not set(t1["OBJECT_ID"]) & set(spec["OBJECT_ID"])
    with pytest.raises(ValueError, match="seed"):
        object_ids(np.array([1]), 1024, PHOTOMETRIC)


def test_synthetic_photometry_of_noiseless_spectrum_matches_truth():
    from specdiff_catalog.io.desi import WAVE

    g = draw_galaxies(300, 5, PopulationModel(), BANDS)
    ebv_values = np.full(len(g), 0.05)
    spectrum = observed_flux(g.coefficients, g.stellar_mass, g.redshift, WAVE) * mw_transmission_spectrum(
        WAVE, ebv_values
    )
    transmission = BANDS.mw_transmission(ebv_values)
    for band in ("g", "r", "i"):
        i = BANDS.names.index(band)
        ratio = (
            synthetic_maggies(spectrum, WAVE, BANDS.bands[i].filter)
            * 1e9
            / (g.flux[:, i] * transmission[:, i])
        )
        assert np.abs(ratio - 1).max() < 0.01, band  # measured: r within 0.3%, g and i within 0.8%


def test_spectral_noise_chi2_is_one_off_sky_lines_and_larger_on_them():
    from specdiff_catalog.io.desi import ARM_WAVE

    noise = SpectroNoise()
    rng = np.random.default_rng(0)
    for arm in ("r", "z"):
        wave = ARM_WAVE[arm]
        clean = np.full((400, len(wave)), 0.5)
        observed, ivar = noise.observe(arm, wave, clean, rng)
        chi2 = np.mean((observed - clean) ** 2 * ivar, axis=0)
        on_lines = noise.sky_line_pixels(wave, contrast=10.0)
        off_lines = ~noise.sky_line_pixels(wave, contrast=0.05)
        assert abs(chi2[off_lines].mean() - 1) < 0.02, arm
        assert chi2[on_lines].mean() > 1.3, arm


def test_faint_galaxies_are_noise_dominated_bright_ones_are_not():
    from specdiff_catalog.io.desi import ARM_WAVE

    noise, wave = SpectroNoise(), ARM_WAVE["r"]
    g = draw_galaxies(400, 9, PopulationModel(), BANDS)
    flux = observed_flux(g.coefficients, g.stellar_mass, g.redshift, wave)
    snr = np.median(flux / np.sqrt(noise.variance("r", wave, flux)), axis=1)
    r = 22.5 - 2.5 * np.log10(g.flux[:, 1])
    assert np.median(snr[r > 22]) < 1.0 < np.median(snr[r < 19])


def test_imaging_depths_give_five_sigma_at_the_depth():
    noise, rng = ImagingNoise(), np.random.default_rng(1)
    names = BANDS.names
    true = np.tile(10 ** (-0.4 * (np.array([noise.depth5[b] for b in names]) - 22.5)), (20000, 1))
    flux, ivar = observe_imaging(true, np.ones_like(true), names, noise, rng)
    snr = np.median(flux * np.sqrt(ivar), axis=0)
    np.testing.assert_allclose(snr, 5.0, atol=0.25)


def test_catalog_bad_row_fractions_and_flux_errors():
    galaxies, t = _catalog(20000, seed=2)
    fluxes = [b.flux for b in BANDS.bands]
    ivars = [b.ivar for b in BANDS.bands]
    values = t[fluxes + ivars].to_numpy()
    all_zero = (values == 0).all(axis=1)
    missing_one = (t[ivars].to_numpy() == 0).sum(axis=1) == 1
    has_nan = t[fluxes + ivars + ["EBV"]].isna().any(axis=1)
    assert 0.007 < missing_one.mean() < 0.013
    assert 0.0008 < all_zero.mean() < 0.004
    assert 0.0008 < has_nan.mean() < 0.004
    good = ~(all_zero | missing_one | has_nan)
    assert (t.loc[good, ivars].to_numpy() > 0).all()
    # catalog fluxes scatter around truth x MW transmission by exactly their stated errors
    truth = galaxies.flux[good.to_numpy()] * t.loc[good, [b.mw_transmission for b in BANDS.bands]].to_numpy()
    pull = (t.loc[good, fluxes].to_numpy() - truth) * np.sqrt(t.loc[good, ivars].to_numpy())
    np.testing.assert_allclose(pull.std(axis=0), 1.0, atol=0.03)
    np.testing.assert_allclose(pull.mean(axis=0), 0.0, atol=0.03)


def test_reddening_is_a_property_of_the_sky():
    ra, dec = np.array([150.0, 150.01, 150.0, 30.0]), np.array([2.0, 2.0, 2.0, 80.0])
    e = ebv(ra, dec)
    assert e[0] == e[2] and 0.01 < e[0] < 0.15
    _, t = _catalog(3000, seed=8)
    assert 0.02 < t["EBV"].median() < 0.08 and t["EBV"].std() > 0.005
    finite = t["EBV"].notna()  # a few rows carry an injected NaN EBV
    np.testing.assert_allclose(
        t.loc[finite, "MW_TRANSMISSION_G"], BANDS.mw_transmission(t.loc[finite, "EBV"])[:, 0], rtol=1e-6
    )


def test_survey_files_read_back_through_the_project_readers(survey):
    import hats
    from astropy.io import fits

    from specdiff_catalog.io.catalog import open_catalog
    from specdiff_catalog.io.desi import read_coadd, read_redrock

    out, _summary = survey
    coadds = sorted((out / "spectra").glob("coadd-mock-*.fits"))
    assert [p.name for p in coadds] == ["coadd-mock-0000.fits", "coadd-mock-0001.fits"]
    n_read, masked = 0, 0
    for path in coadds:
        with fits.open(path) as hdul:
            assert hdul["B_FLUX"].data.shape[1] == 2751 and hdul["Z_FLUX"].data.shape[1] == 2881
            masked += sum(int((hdul[f"{a}_MASK"].data != 0).sum()) for a in "BRZ")
        coadd = read_coadd(path)
        redrock = read_redrock(str(path).replace("coadd-", "redrock-"))
        assert coadd.flux.shape == (len(coadd.targetid), 7781) and len(coadd.targetid) <= 500
        assert (coadd.fibermap["PHOTSYS"] == "S").all() and "FLUX_W2" in coadd.fibermap
        assert set(redrock["SPECTYPE"]) == {"GALAXY"}
        n_read += len(coadd.targetid)
    assert n_read == 700 and masked > 0

    truth = pd.read_parquet(out / "truth" / "spectroscopic.parquet")
    good = truth["ZWARN"] == 0
    dz = (truth["Z_REDROCK"] - truth["Z"]) / (1 + truth["Z"])
    assert np.abs(dz[good]).max() < 0.01 and 0.005 < (~good).mean() < 0.15

    catalog = open_catalog(out / "catalog")
    assert 10 <= len(catalog.partitions) <= 20
    assert hats.read_hats(out / "catalog").catalog_info.total_rows == 2000
    phot = pd.read_parquet(out / "truth" / "photometric.parquet")
    rows = pd.concat(pd.read_parquet(p.path) for p in catalog.partitions)
    assert set(rows["OBJECT_ID"]) == set(phot["OBJECT_ID"])
    assert {"_healpix_29", "RELEASE", "BRICKID", "OBJID", "TYPE", "FLUX_I", "MW_TRANSMISSION_W2"} <= set(rows)

    meta = json.loads((out / "mock.json").read_text())
    assert meta["counts"]["n_spec"] == 700 and meta["config"]["seed"] == 7 and "skypy" in meta["versions"]


def test_rest_spectra_reproduce_the_noiseless_observed_spectrum(survey):
    import zarr

    from specdiff_catalog.io.desi import read_coadd

    out, _ = survey
    group = zarr.open_group(out / "truth" / "rest_spectra.zarr", mode="r")
    wave, flux, z = group["wavelength"][:], group["flux"][:], group["z"][:]
    assert flux.shape == (20, len(wave)) and wave[0] == 2000.0
    coadd = read_coadd(out / "spectra" / "coadd-mock-0000.fits")
    ebv_values = coadd.fibermap["EBV"].to_numpy()[:20]
    model = np.stack([np.interp(coadd.wave / (1 + z[i]), wave, flux[i]) for i in range(20)])
    model *= group["aperture"][:][:, None] * mw_transmission_spectrum(coadd.wave, np.nan_to_num(ebv_values))
    good = coadd.fibermap["COADD_FIBERSTATUS"].to_numpy()[:20] == 0
    chi2 = np.nanmean(((coadd.flux[:20] - model) ** 2 * coadd.ivar[:20])[good][:, coadd.wave < 8000])
    assert chi2 < 1.5  # residuals at the noise level (sky-line residuals lift it above 1)


def test_real_desi_noise_level_is_reproduced(real_desi_dir):
    from astropy.io import fits
    from scipy.ndimage import median_filter

    with fits.open(real_desi_dir / "coadd-special-dark-27247.fits") as hdul:
        exptime = float(hdul["FIBERMAP"].data["COADD_EXPTIME"][0])
        model = SpectroNoise(exptime=exptime, n_exposures=int(hdul["FIBERMAP"].data["COADD_NUMEXP"][0]))
        for arm in "BRZ":
            wave = hdul[f"{arm}_WAVELENGTH"].data.astype(float)
            real = median_filter(1 / np.sqrt(hdul[f"{arm}_IVAR"].data[0]), 201)
            mock = median_filter(np.sqrt(model.variance(arm.lower(), wave, np.zeros((1, len(wave))))[0]), 201)
            middle = slice(len(wave) // 4, 3 * len(wave) // 4)
            np.testing.assert_allclose(
                np.median(mock[middle]), np.median(real[middle]), rtol=0.15, err_msg=arm
            )


def test_cli_refuses_to_overwrite_a_non_mock_directory(tmp_path, capsys):
    from specdiff_catalog.cli import main

    (tmp_path / "precious.txt").write_text("keep me")
    assert main(["mock", "--out", str(tmp_path), "--n-spec", "10", "--n-phot", "10"]) == 2
    assert main(["mock", "--out", str(tmp_path), "--n-spec", "10", "--n-phot", "10", "--overwrite"]) == 2
    assert (tmp_path / "precious.txt").exists()
    assert "not a mock survey" in capsys.readouterr().err
