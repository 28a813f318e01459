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
from specdiff_catalog.mock.population import QUIESCENT, PopulationModel, galaxy_parameters
from specdiff_catalog.mock.reddening import ReddeningModel, ebv
from specdiff_catalog.mock.spectra import (
    FibreModel,
    model_maggies,
    mw_transmission_spectrum,
    observed_flux,
    synthetic_maggies,
    true_dn4000,
)
from specdiff_catalog.mock.targets import select_targets

BANDS = BandSet.load("ls-dr10-south")


def _galaxies(n: int, seed: int, *, photometry: bool = False):
    """n galaxies at random z < 1.6 and 9 < log M < 11.5 with the population's parameters; fluxes
    synthesised when ``photometry`` (slower), else lognormal around 10 nanomaggies."""
    from astropy.cosmology import Planck18

    rng = np.random.default_rng(seed)
    g = galaxy_parameters(
        rng.uniform(0.02, 1.6, n), rng.uniform(9, 11.5, n), PopulationModel(), rng, Planck18
    )
    if photometry:
        g.flux = BANDS.maggies_to_flux(model_maggies(g, tuple(b.filter for b in BANDS.bands)))
        g.dn4000 = true_dn4000(g)
    else:
        g.flux = 10.0 * rng.lognormal(0.0, 1.0, (n, len(BANDS.bands)))
    return g


def _catalog(n: int, seed: int, kind: int = PHOTOMETRIC):
    galaxies = _galaxies(n, 1000 + seed)
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


def test_population_relations_hold():
    """Quiescent fraction and metallicity rise with mass; dust is set by mass; sigma by mass."""
    g = _galaxies(6000, 11)
    massive = g.log_mass > 10.8
    low = g.log_mass < 9.7
    assert (g.population[massive] == QUIESCENT).mean() > 0.6 > 0.15 > (g.population[low] == QUIESCENT).mean()
    # Curti et al. (2020): 12 + log O/H rises by ~0.15 dex from 10^9.5 to 10^11 M_sun
    assert np.median(g.metallicity[massive]) > 1.25 * np.median(g.metallicity[low])
    assert np.median(g.veldisp[massive]) > 1.5 * np.median(g.veldisp[low])
    sf = g.population != QUIESCENT
    assert np.median(g.av[sf & massive]) > 2 * np.median(g.av[sf & low])
    # quiescent galaxies are quiescent: sSFR at least 1 dex below the star-forming ones
    assert np.median(g.log_ssfr[~sf]) < np.median(g.log_ssfr[sf]) - 1.0
    assert (g.sfh_age > 0).all() and (g.sfh_age <= 13.8).all()
    # bursts: some galaxies of both kinds; a quiescent galaxy's burst is over (post-starburst)
    burst = g.burst_fraction > 0
    assert 0.05 < burst[~sf].mean() < burst[sf].mean() < 0.4
    assert (g.burst_age[burst & ~sf] >= 0.3 - 1e-9).all() and (g.burst_fraction[burst] <= 0.05).all()
    # dust is lognormal about the mass relation: no pile of dust-free star-forming galaxies
    assert (g.av[sf] > 0).all() and np.quantile(g.av[sf & low], 0.05) > 0.02


def test_star_formation_history_weights_and_bursts():
    """History rows sum to one; a burst puts its mass fraction into the bins of its time span."""
    from specdiff_catalog.mock import sps
    from specdiff_catalog.mock.population import BURST_DURATION

    g = _galaxies(400, 4)
    bins = sps.load_grids(sps.PHOTOMETRY_GRID).age_bins
    history = g.history(bins)
    np.testing.assert_allclose(history.sum(axis=1), 1.0, rtol=1e-9)
    one = sps.burst_weights(np.array([0.5]), BURST_DURATION, bins)[0]
    inside = (bins[:-1] < 0.5e9) & (bins[1:] > 0.4e9)
    assert one.sum() == pytest.approx(1.0) and one[~inside].sum() == 0.0
    ongoing = sps.burst_weights(np.array([0.03]), BURST_DURATION, bins)[0]  # began 30 Myr ago: until now
    assert ongoing[bins[1:] > 0.03e9 + 1e7].sum() == 0.0 and ongoing.sum() == pytest.approx(1.0)


def test_fibre_fractions_follow_the_profiles():
    """Point sources get the analytic Gaussian fraction; larger galaxies lose more light; large de
    Vaucouleurs galaxies keep more in the fibre than exponentials of the same half-light radius (their
    cusp; measured 0.28 vs 0.23 at 1.2", 0.17 vs 0.09 at 2.4")."""
    fibre = FibreModel()
    sigma = fibre.catalog_seeing_fwhm / 2.3548
    point = fibre.catalog_fraction(np.array([1e-4]), np.array([0]))[0]
    assert point == pytest.approx(1 - np.exp(-((fibre.catalog_diameter / 2) ** 2) / (2 * sigma**2)), rel=1e-3)
    radius = np.array([0.3, 0.6, 1.2, 2.4])
    exp_disk = fibre.catalog_fraction(radius, np.zeros(4, np.int8))
    dev = fibre.catalog_fraction(radius, np.full(4, QUIESCENT, np.int8))
    assert (np.diff(exp_disk) < 0).all() and (np.diff(dev) < 0).all() and (dev[2:] > 1.2 * exp_disk[2:]).all()
    # without seeing, half the light is inside the half-light radius for both profiles
    from specdiff_catalog.mock.spectra import _encircled

    for n in (1, 4):
        grid, fraction = _encircled(n, 0.6, 0.05)
        assert np.interp(np.log10(0.6), grid, fraction) == pytest.approx(0.5, abs=0.003)


def test_distance_table_matches_astropy():
    from astropy.cosmology import Planck18

    from specdiff_catalog.mock.distances import distances

    z = np.array([0.01, 0.3, 1.0, 1.6, 2.9])
    table = distances(Planck18)
    np.testing.assert_allclose(table.age(z), Planck18.age(z).value, rtol=1e-5)
    np.testing.assert_allclose(
        table.luminosity_distance(z), Planck18.luminosity_distance(z).to_value("cm"), rtol=1e-4
    )
    with pytest.raises(ValueError, match="outside"):
        table.age(np.array([3.5]))


def test_target_cuts_follow_the_published_boundaries():
    """Hand-made rows on either side of each class boundary (MW transmission 1, S/N 100)."""
    mags = {  # g, r, z, W1, gfib, rfib, zfib -> expected class
        "BGS": (19.5, 18.7, 18.3, 18.5, 21.0, 20.5, 20.0),
        "": (20.5, 19.7, 19.3, 19.5, 22.0, 21.5, 21.0),  # r = 19.7: too faint for BGS, too blue for LRG
        "LRG": (23.5, 21.8, 20.2, 18.8, 24.0, 22.5, 21.0),
        "ELG": (23.0, 22.8, 22.2, 21.5, 23.5, 23.3, 22.7),
    }
    rows = {}
    for i, name in enumerate(["G", "R", "Z", "W1"]):
        flux = np.array([10 ** (-0.4 * (m[i] - 22.5)) for m in mags.values()])
        rows[f"FLUX_{name}"], rows[f"FLUX_IVAR_{name}"] = flux, (100 / flux) ** 2
        rows[f"MW_TRANSMISSION_{name}"] = np.ones(len(mags))
    for i, name in enumerate(["G", "R", "Z"]):
        rows[f"FIBERFLUX_{name}"] = np.array([10 ** (-0.4 * (m[4 + i] - 22.5)) for m in mags.values()])
    chosen = select_targets(pd.DataFrame(rows))
    assert list(chosen["TARGET_CLASS"]) == list(mags)
    assert chosen["DESI_TARGET"].iloc[2] & 1 and chosen["DESI_TARGET"].iloc[3] & (1 << 5)
    assert chosen["BGS_TARGET"].iloc[0] == 2 and chosen["DESI_TARGET"].iloc[0] & (1 << 60)


def test_rest_spectra_are_not_a_rank_five_family():
    """A 5-component PCA of 300 noiseless spectra leaves residuals above the noise of S/N = 50 pixels
    (measured: median chi^2 per pixel 1.79 at S/N 50, 90th percentile 5.7; a rank-5 family gives 0).
    On the noisy observed spectra the difference shows from S/N ~1 per pixel (docs/mock.md)."""
    from specdiff_catalog.mock.spectra import rest_frame_flux, rest_wavelength

    g = _galaxies(600, 5)
    wave = rest_wavelength()
    flux = rest_frame_flux(g)[:, (wave > 3700) & (wave < 7000)]
    flux /= np.median(flux, axis=1, keepdims=True)
    train, test = flux[:300], flux[300:]
    mean = train.mean(axis=0)
    basis = np.linalg.svd(train - mean, full_matrices=False)[2][:5]
    coeff = (test - mean) @ basis.T
    residual = test - mean - coeff @ basis
    chi2 = np.mean((residual / (np.abs(test) / 50.0)) ** 2, axis=1)
    assert np.median(chi2) > 1.4 and np.quantile(chi2, 0.9) > 4.0


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

    g = _galaxies(200, 5, photometry=True)
    g = g.take(g.redshift > 0.05)
    ebv_values = np.full(len(g), 0.05)
    spectrum = observed_flux(g, WAVE) * mw_transmission_spectrum(WAVE, ebv_values)
    transmission = BANDS.mw_transmission(ebv_values)
    for band in ("g", "r", "i"):
        i = BANDS.names.index(band)
        ratio = (
            synthetic_maggies(spectrum, WAVE, BANDS.bands[i].filter)
            * 1e9
            / (g.flux[:, i] * transmission[:, i])
        )
        # R ~ 125 photometry bins vs the 30 km/s spectrum: measured median 0.1%, max 4.4% (a strong
        # emission line in a bin at a steep filter edge, where the bins assume a flat response)
        assert np.median(np.abs(ratio - 1)) < 0.005 and np.abs(ratio - 1).max() < 0.06, band


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
    assert meta["counts"]["n_spec"] == 700 and meta["config"]["seed"] == 7 and "bagpipes" in meta["versions"]


def test_target_classes_have_desi_like_redshifts_and_pass_their_cuts(survey):
    from specdiff_catalog.io.desi import read_coadd

    out, _ = survey
    truth = pd.read_parquet(out / "truth" / "spectroscopic.parquet")
    fraction = truth["TARGET_CLASS"].value_counts(normalize=True)
    assert set(fraction.index) == {"BGS", "LRG", "ELG"} and fraction.min() > 0.1
    z = truth.groupby("TARGET_CLASS")["Z"]
    assert z.quantile(0.95)["BGS"] < 0.45 and z.max()["BGS"] < 0.7
    assert 0.4 < z.median()["LRG"] < 0.9 and z.quantile(0.95)["LRG"] < 1.2
    assert z.median()["ELG"] > 0.9 and z.max()["ELG"] > 1.3
    # the ELG tail below z = 0.6 that DESI's cuts nearly avoid: measured 18% (seed 0, 2,000 spectra)
    assert (truth.loc[truth["TARGET_CLASS"] == "ELG", "Z"] < 0.6).mean() < 0.3
    assert truth["Z"].max() <= 1.6 and np.isfinite(truth["DN4000"]).all()
    assert (
        truth.groupby("TARGET_CLASS")["DN4000"].median()["LRG"]
        > 1.4
        > truth.groupby("TARGET_CLASS")["DN4000"].median()["ELG"]
    )
    # the fibermap photometry the spectra carry passes the class cut it was selected by
    coadd = read_coadd(out / "spectra" / "coadd-mock-0000.fits")
    fm = coadd.fibermap.reset_index(drop=True)
    for band in ("G", "R", "Z", "W1"):
        fm[f"MW_TRANSMISSION_{band}"] = BANDS.mw_transmission(np.nan_to_num(fm["EBV"].to_numpy()))[
            :, BANDS.names.index(band.lower() if band != "W1" else "W1")
        ]
    again = select_targets(fm)
    expected = truth.set_index("TARGETID").loc[fm["TARGETID"], "TARGET_CLASS"].to_numpy()
    assert (
        again["TARGET_CLASS"].to_numpy() == expected
    ).mean() > 0.98  # rows with injected defects may differ
    np.testing.assert_array_equal(
        fm["DESI_TARGET"].to_numpy(), truth.set_index("TARGETID").loc[fm["TARGETID"], "DESI_TARGET"]
    )


def test_a_deep_field_adds_spectra_of_the_catalog_galaxies_the_desi_selections_leave_out(tmp_path):
    from scipy.stats import ks_2samp

    from specdiff_catalog.io.desi import read_coadd

    config = MockConfig(n_spec=200, n_phot=600, n_deep=300, seed=8, n_rest_spectra=5)
    summary = make_mock_survey(tmp_path, config)
    assert summary["counts"]["n_deep"] == 300 and summary["counts"]["target_class"]["DEEP"] == 300
    truth = pd.read_parquet(tmp_path / "truth" / "spectroscopic.parquet")
    catalog = pd.read_parquet(tmp_path / "truth" / "photometric.parquet")
    deep = truth[truth["TARGET_CLASS"] == "DEEP"]
    assert truth["TARGETID"].is_unique and (truth["TARGET_CLASS"] != "DEEP").sum() == 200
    # drawn after the targets: nearly all are galaxies no DESI selection takes (seed 8: all 300)
    assert ((deep["DESI_TARGET"] == 0) & (deep["BGS_TARGET"] == 0)).mean() > 0.95
    assert not set(deep["TARGETID"]) & set(truth.loc[truth["TARGET_CLASS"] != "DEEP", "TARGETID"])

    def r_mag(rows: pd.DataFrame) -> np.ndarray:
        return 22.5 - 2.5 * np.log10(rows["FLUX_R_TRUE"].to_numpy())

    # as faint as the catalog (seed 8: median r 22.85 vs 22.79; KS p 0.14 on z, 0.57 on r)
    assert ks_2samp(deep["Z"], catalog["Z"]).pvalue > 0.01
    assert ks_2samp(r_mag(deep), r_mag(catalog)).pvalue > 0.01
    assert np.median(r_mag(deep)) > np.median(r_mag(truth[truth["TARGET_CLASS"] != "DEEP"]))
    fibermap = pd.concat(read_coadd(f).fibermap for f in sorted((tmp_path / "spectra").glob("coadd-*.fits")))
    exptime = fibermap.set_index("TARGETID").loc[deep["TARGETID"], "COADD_EXPTIME"]
    assert (exptime == config.exptime["DEEP"]).all()
    with pytest.raises(ValueError, match="n-deep"):
        MockConfig(n_deep=-1).validate()


def _resolve(resolution: np.ndarray, flux: np.ndarray) -> np.ndarray:
    """(N, P) R @ flux per spectrum with a coadd's RESOLUTION data (N, ndiag, P), desispec's convention:
    diagonal d holds offset k = ndiag//2 - d and R[p, p + k] = data[d, p + k]."""
    n_diag, n_pix = resolution.shape[1:]
    out = np.zeros_like(flux)
    for d in range(n_diag):
        k = n_diag // 2 - d
        src = np.arange(max(0, k), min(n_pix, n_pix + k))
        out[:, src - k] += resolution[:, d, src] * flux[:, src]
    return out


def test_rest_spectra_reproduce_the_noiseless_observed_spectrum(survey):
    """rest spectrum -> redshift -> aperture and Milky Way -> the arm's resolution matrix from the coadd
    file itself gives the observed flux to the noise; without the resolution the emission lines miss."""
    import zarr
    from astropy.io import fits

    out, _ = survey
    group = zarr.open_group(out / "truth" / "rest_spectra.zarr", mode="r")
    wave, flux, z = group["wavelength"][:], group["flux"][:], group["z"][:]
    assert flux.shape == (20, len(wave)) and 1300 <= wave[0] < 1301 and wave[-1] <= 9900
    chi2, chi2_unresolved = [], []
    with fits.open(out / "spectra" / "coadd-mock-0000.fits") as hdul:
        fibermap = hdul["FIBERMAP"].data
        good = fibermap["COADD_FIBERSTATUS"][:20] == 0
        for arm in "BRZ":
            arm_wave = hdul[f"{arm}_WAVELENGTH"].data.astype(float)
            model = np.stack([np.interp(arm_wave / (1 + z[i]), wave, flux[i]) for i in range(20)])
            model *= group["aperture"][:][:, None] * mw_transmission_spectrum(
                arm_wave, np.nan_to_num(fibermap["EBV"][:20].astype(float))
            )
            data = hdul[f"{arm}_FLUX"].data[:20][good]
            ivar = hdul[f"{arm}_IVAR"].data[:20][good]
            resolved = _resolve(hdul[f"{arm}_RESOLUTION"].data[:20].astype(float), model)[good]
            blue = arm_wave < 8000  # away from the z-arm sky lines
            chi2.append(((data - resolved) ** 2 * ivar)[:, blue])
            chi2_unresolved.append(((data - model[good]) ** 2 * ivar)[:, blue])
    total = np.nanmean(np.concatenate(chi2, axis=1))
    assert total < 1.5  # residuals at the noise level (sky-line residuals lift it above 1)
    assert np.nanmean(np.concatenate(chi2_unresolved, axis=1)) > total


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
