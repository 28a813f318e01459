"""Synthetic photometry and the posterior-predictive check of the photometry (issue 14 item 4)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import speclite.filters
import torch
from astropy import units as u
from scipy import stats

from specdiff_catalog.bands import BandSet
from specdiff_catalog.features import deredden
from specdiff_catalog.models.autoencoder import AutoencoderConfig, SpectrumAutoencoder, rest_grid
from specdiff_catalog.ppc import PhotometryCheck, calibrate_floors
from specdiff_catalog.synphot import SyntheticPhotometry, best_amplitude_chi2

BANDS = BandSet.load("ls-dr10-south")  # g, r, i, z, W1, W2


def test_synthetic_fluxes_have_speclite_colours():
    synth = SyntheticPhotometry.from_bandset(BANDS, step=2.0, bands=[0, 1, 2, 3])
    wave = np.linspace(3000.0, 11000.0, 8001)
    rng = np.random.default_rng(0)
    for _ in range(3):  # smooth random spectra with a break and a line
        flux = (wave / 5000.0) ** rng.uniform(-3, 1) * (
            1 + rng.uniform(0, 1) * (wave > rng.uniform(4000, 8000))
        )
        flux += rng.uniform(0, 5) * np.exp(-0.5 * ((wave - rng.uniform(4000, 9500)) / 4.0) ** 2)
        ours = synth.fluxes(np.interp(synth.wave, wave, flux)[None])[0]
        filters = speclite.filters.load_filters(*[b.filter for b in BANDS.bands[:4]])
        theirs = np.array(
            filters.get_ab_maggies(flux * u.erg / (u.cm**2 * u.s * u.AA), wave * u.AA).as_array().tolist()[0]
        )
        # colours agree to 2% (measured 1.2% at most, g of the reddest spectrum): the responses
        # below 1% of the peak are left out, DECam g's red leak (0.8% of it for a flat spectrum)
        np.testing.assert_allclose(ours / ours[1], theirs / theirs[1], rtol=0.02)
    flat_fnu = synth.fluxes((1.0 / synth.wave**2)[None])[0]  # F_lambda ~ lambda^-2: AB colours 0
    np.testing.assert_allclose(flat_fnu / flat_fnu[0], 1.0, rtol=1e-4)


def test_best_amplitude_chi2_follows_chi2_with_n_minus_one_dof():
    rng = np.random.default_rng(1)
    predicted = rng.uniform(1, 10, (20000, 4))
    sigma = rng.uniform(0.1, 1.0, (20000, 4))
    observed = 3.0 * predicted + sigma * rng.normal(size=predicted.shape)
    chi2, amplitude = best_amplitude_chi2(observed, sigma**-2, predicted)
    assert np.median(amplitude) == pytest.approx(3.0, abs=0.01)
    assert stats.kstest(chi2, stats.chi2(3).cdf).statistic < 0.015  # chi^2 with 4 - 1 dof
    ivar = sigma**-2
    ivar[:, 3] = 0  # a band that does not count
    assert (
        stats.kstest(best_amplitude_chi2(observed, ivar, predicted)[0], stats.chi2(2).cdf).statistic < 0.015
    )
    # a floor adds variance: chi^2 only goes down
    assert (best_amplitude_chi2(observed, sigma**-2, predicted, 0.05)[0] <= chi2 + 1e-9).all()


def _autoencoder(seed: int = 0, normalisation: str = "window") -> SpectrumAutoencoder:
    """An untrained but non-trivial decoder with positive output on a 0 < z < 1.6 rest grid."""
    torch.manual_seed(seed)
    config = AutoencoderConfig(
        latent_size=3,
        conv_filters=(4, 8, 8),
        encoder_hidden=(8,),
        decoder_hidden=(16,),
        rest_step=4.0,
        normalisation=normalisation,
    )
    wave_obs = np.linspace(3600.0, 9824.0, 500)
    model = SpectrumAutoencoder(config, wave_obs, rest_grid(wave_obs, 0.0, 1.6, 4.0), (0.0, 1.6))
    with torch.no_grad():
        model.decoder[-1].bias.add_(3.0)
    return model.eval()


def _photometry(fluxes: np.ndarray, sigma: np.ndarray) -> pd.DataFrame:
    """A catalog table of ls-dr10-south with the given g, r, i, z fluxes (W1, W2 measured too)."""
    n = len(fluxes)
    table = {"EBV": np.zeros(n)}
    for j, band in enumerate(BANDS.bands):
        table[band.flux] = fluxes[:, j] if j < 4 else np.full(n, 50.0)
        table[band.ivar] = sigma[:, j] ** -2 if j < 4 else np.full(n, 1.0)
    return pd.DataFrame(table)


def test_the_check_follows_chi2_when_the_model_is_right_and_flags_photometry_it_cannot_make():
    ae = _autoencoder()
    check = PhotometryCheck(ae, BANDS, draws=4, floor=0.0)
    assert check.synth.names == ("g", "r", "i", "z")  # W1/W2 lie beyond 9824 A x (1 + 1.6)
    rng = np.random.default_rng(2)
    n = 3000
    z = rng.uniform(0.1, 1.4, n)
    latent = rng.normal(size=(n, 3)).astype(np.float32)
    truth, covered = check.predicted(z, latent)
    assert covered.all()
    scale = rng.uniform(0.5, 20, n)[:, None] / truth[:, 1:2]
    sigma = 0.05 * scale * truth.mean(axis=1, keepdims=True) * rng.uniform(0.5, 2, (n, 4))
    observed = scale * truth + sigma * rng.normal(size=truth.shape)
    table = _photometry(observed, sigma)
    # the posterior is the truth itself (4 identical draws): each chi^2 is chi^2 with 3 dof
    z_samples = np.repeat(z[:, None], 4, axis=1)
    latent_samples = np.repeat(latent[:, None], 4, axis=1)
    result = check(deredden(table, BANDS), z_samples, latent_samples)
    assert (result.dof == 3).all()
    assert stats.kstest(result.chi2, stats.chi2(3).cdf).statistic < 0.03
    assert np.mean(result.pvalue < 0.001) < 0.004 and abs(np.mean(result.pvalue < 0.05) - 0.05) < 0.015
    # a g band 0.75 mag brighter than the decoded spectra make: not reproduced
    brighter = observed * np.array([2.0, 1.0, 1.0, 1.0])
    other = check(deredden(_photometry(brighter, sigma), BANDS), z_samples, latent_samples)
    assert np.mean(other.pvalue < 0.001) > 0.8  # measured 0.89 (the rest have large g errors)
    # low z: the z band (to 10100 A) leaves the rest grid (9824 A at z = 0): 3 bands, 2 dof
    low = check(deredden(table.iloc[:5], BANDS), np.full((5, 4), 0.01), latent_samples[:5])
    assert (low.dof == 2).all()
    # unusable draws or fewer than two bands: not checked
    missing = table.iloc[:3].copy()
    for band in ("G", "R", "I"):
        missing[f"FLUX_IVAR_{band}"] = 0.0
    none = check(deredden(missing, BANDS), z_samples[:3], latent_samples[:3])
    assert (none.dof == 0).all() and np.isnan(none.pvalue).all() and np.isnan(none.chi2).all()


def test_calibrated_floors_recover_the_draws_flux_error_band_by_band():
    """Draws whose fluxes err by 8% in g, 3% in i and not at all in r and z (on top of the
    IVAR's noise): ``calibrate_floors`` finds those fractions (the band-by-band median rule),
    and with them the check's chi^2 follows chi^2_dof where the 3% floor does not."""
    ae = _autoencoder()
    check = PhotometryCheck(ae, BANDS, draws=4)
    rng = np.random.default_rng(5)
    n = 3000
    z = rng.uniform(0.1, 1.4, n)
    latent = rng.normal(size=(n, 3)).astype(np.float32)
    truth, _ = check.predicted(z, latent)
    true_floors = np.array([0.08, 0.0, 0.03, 0.0])
    scale = rng.uniform(0.5, 20, n)[:, None] / truth[:, 1:2]
    sigma = 0.02 * scale * truth.mean(axis=1, keepdims=True) * rng.uniform(0.5, 2, (n, 4))
    model_error = true_floors * scale * truth * rng.normal(size=truth.shape)
    observed = scale * truth + model_error + sigma * rng.normal(size=truth.shape)
    photometry = deredden(_photometry(observed, sigma), BANDS)
    z_samples, latent_samples = np.repeat(z[:, None], 4, axis=1), np.repeat(latent[:, None], 4, axis=1)
    floors = calibrate_floors(check, photometry, z_samples, latent_samples)
    assert list(floors) == ["g", "r", "i", "z"]
    found = np.array(list(floors.values()))
    # measured 0.0797, 0, 0.0293, 0.0086 (seed 5): within 10% of the errors; what the g error
    # leaks into z through the shared amplitude stays below 0.015
    np.testing.assert_allclose(found[[0, 2]], true_floors[[0, 2]], rtol=0.1)
    assert found[1] < 0.015 and found[3] < 0.015
    calibrated = PhotometryCheck(ae, BANDS, draws=4, floor=floors)(photometry, z_samples, latent_samples)
    fixed = PhotometryCheck(ae, BANDS, draws=4)(photometry, z_samples, latent_samples)
    assert stats.kstest(calibrated.chi2, stats.chi2(3).cdf).statistic < 0.03
    # measured KS 0.015 against 0.056 at the 3% floor (mean chi^2 2.94 against 3.47; 3 expected)
    assert stats.kstest(fixed.chi2, stats.chi2(3).cdf).statistic > 0.04
    # too few objects to calibrate on: nothing, so the check keeps the default floor
    assert (
        calibrate_floors(
            check,
            deredden(_photometry(observed[:50], sigma[:50]), BANDS),
            z_samples[:50],
            latent_samples[:50],
        )
        == {}
    )


@pytest.mark.parametrize("normalisation", ["window", "amplitude"])
def test_the_flux_tables_give_the_exact_fluxes(normalisation):
    """Fluxes from the z-gridded tables (the decoder's last layer, resampling and filters folded
    into one affine map per redshift node) against decoding, redshifting and integrating."""
    model = _autoencoder(3, normalisation)
    with torch.no_grad():  # smooth the output along wavelength (20 A), as a trained decoder's is
        last = model.decoder[-1]
        kernel = torch.exp(-0.5 * (torch.arange(-15, 16) / 5.0) ** 2)
        kernel = (kernel / kernel.sum())[None, None]
        smooth = lambda x: torch.nn.functional.conv1d(x[None, None], kernel, padding=15)[0, 0]  # noqa: E731
        last.weight.copy_(torch.stack([smooth(c) for c in last.weight.T]).T)
        last.bias.copy_(smooth(last.bias) + 1.0)
    check = PhotometryCheck(model, BANDS)
    rng = np.random.default_rng(4)
    z = np.r_[0.0, 1.6, 2.05, 2.3, rng.uniform(0.0, 1.7, 500)]  # 2.3 lies beyond the tables: exact path
    latent = rng.normal(size=(len(z), 3)).astype(np.float32)
    tabled, covered = check.predicted(z, latent)
    exact, covered_exact = check.exact(z, latent)
    assert (covered <= covered_exact).all() and covered.mean() > 0.99 * covered_exact.mean()
    # 6.5e-4 at most (2.5e-4 at the 99th percentile) for the bundled model's decoder on 2048 draws
    np.testing.assert_allclose(tabled[covered], exact[covered], rtol=1e-3)
    np.testing.assert_allclose(tabled[3], exact[3], rtol=1e-6)  # off the grid: computed exactly
