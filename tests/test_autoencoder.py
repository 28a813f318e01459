import numpy as np
import pytest
import torch

from specdiff_catalog.models.autoencoder import (
    AutoencoderConfig,
    SpectrumAutoencoder,
    chi2,
    consistency_loss,
    fit_amplitude,
    prepare_spectra,
    redshift_resample,
    redshift_spectra,
    rest_grid,
    shift_redshift,
)
from specdiff_catalog.spectral import SpectrumFlag

TINY = AutoencoderConfig(
    latent_size=3, conv_filters=(4, 8, 8), encoder_hidden=(8,), decoder_hidden=(8,), rebin=2, rest_step=8.0
)


def test_resampling_conserves_a_flat_spectrum_and_masks_outside():
    wave_rest = torch.linspace(3000.0, 8000.0, 3000)
    wave_obs = torch.linspace(3600.0, 9824.0, 7781)
    z = torch.tensor([0.0, 0.3, 0.8])
    flux, inside = redshift_resample(wave_rest, torch.full((3, 3000), 2.5), z, wave_obs)
    rest = wave_obs[None] / (1 + z[:, None])
    assert torch.equal(inside, (rest >= 3000.0) & (rest <= 8000.0))
    assert inside.sum(1).tolist() == [
        int(((wave_obs >= 3600) & (wave_obs <= 8000)).sum()),
        int(((wave_obs >= 3900) & (wave_obs <= 8000 * 1.3)).sum()),
        int(((wave_obs >= 5400) & (wave_obs <= 9824)).sum()),
    ]
    assert torch.allclose(flux[inside], torch.tensor(2.5)) and (flux[~inside] == 0).all()


def test_resampling_moves_a_line_to_one_plus_z_lambda_and_is_differentiable():
    wave_rest = torch.arange(4000.0, 6000.0, 0.1, dtype=torch.float64)
    line = torch.exp(-0.5 * ((wave_rest - 5000.0) / 3.0) ** 2)[None].repeat(3, 1).requires_grad_(True)
    wave_obs = torch.arange(4000.0, 9000.0, 0.05, dtype=torch.float64)
    z = torch.tensor([0.0, 0.25, 0.6], dtype=torch.float64)
    flux, _ = redshift_resample(wave_rest, line, z, wave_obs)
    centroid = (flux * wave_obs).sum(1) / flux.sum(1)
    assert torch.allclose(centroid, 5000.0 * (1 + z), atol=0.01)
    width = ((flux * (wave_obs - centroid[:, None]) ** 2).sum(1) / flux.sum(1)).sqrt()
    assert torch.allclose(width, 3.0 * (1 + z), rtol=1e-3)  # stretched by 1 + z
    flux.sum().backward()
    assert line.grad is not None and line.grad.abs().sum() > 0
    # the numpy convenience gives NaN outside the rest grid
    out = redshift_spectra(
        wave_rest.numpy(), line.detach().numpy()[:1], np.array([0.5]), np.array([5000.0, 7500.0])
    )
    assert np.isnan(out[0, 0]) and out[0, 1] == pytest.approx(1.0, abs=1e-6)


def test_shift_redshift_matches_observing_at_the_new_redshift():
    wave_obs = torch.linspace(3600.0, 9824.0, 3000, dtype=torch.float64)
    wave_rest = torch.linspace(1500.0, 10000.0, 20000, dtype=torch.float64)
    rest = (1 + torch.sin(wave_rest / 150.0))[None].repeat(2, 1)
    z, z_new = torch.tensor([0.1, 0.5], dtype=torch.float64), torch.tensor([0.4, 0.05], dtype=torch.float64)
    observed, _ = redshift_resample(wave_rest, rest, z, wave_obs)
    target, _ = redshift_resample(wave_rest, rest, z_new, wave_obs)
    valid = torch.ones_like(observed, dtype=torch.bool)
    valid[:, 100] = False
    shifted, shifted_valid = shift_redshift(wave_obs, observed, valid, z, z_new)
    assert torch.allclose(shifted[shifted_valid], target[shifted_valid], atol=2e-3)
    # moving to higher z empties the blue end, to lower z the red end; the masked pixel moves
    assert not shifted_valid[0, :50].any() and shifted_valid[0, -50:].all()
    assert not shifted_valid[1, -50:].any() and shifted_valid[1, :50].all()
    assert (~shifted_valid[0, 200:]).sum() >= 1


def test_chi2_counts_only_valid_pixels_and_consistency_is_zero_when_unchanged():
    data = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    ivar = torch.tensor([[1.0, 0.0, 4.0, 1.0]])
    inside = torch.tensor([[True, True, True, False]])
    total, n = chi2(data, ivar, torch.zeros_like(data), inside)
    assert total.item() == pytest.approx(1 + 36) and n.item() == 2
    latent = torch.randn(64, 5, generator=torch.Generator().manual_seed(0))
    assert consistency_loss(latent, latent, 0.1).abs().max() == 0
    far = consistency_loss(latent, latent + 10 * latent.std(0), 0.1)
    assert (far > 0.49).all()
    # the penalty does not change when the whole latent space is rescaled
    assert torch.allclose(
        consistency_loss(3 * latent, 3 * (latent + 0.01), 0.1),
        consistency_loss(latent, latent + 0.01, 0.1),
        rtol=1e-4,
    )


def test_rest_grid_covers_the_redshift_range():
    grid = rest_grid(np.array([3600.0, 9824.0]), 0.0, 0.8, 0.8)
    assert grid[0] == pytest.approx(2000.0) and grid[-1] == pytest.approx(9824.0)
    assert np.diff(grid).max() <= 0.8 + 1e-9


def _model(rng_seed: int = 0) -> tuple[SpectrumAutoencoder, np.ndarray]:
    torch.manual_seed(rng_seed)
    wave = np.linspace(3600.0, 9824.0, 1558)
    wave_obs = wave[: 1558 // 2 * 2].reshape(-1, 2).mean(1)
    return SpectrumAutoencoder(TINY, wave_obs, rest_grid(wave_obs, 0.0, 0.8, 8.0), (0.0, 0.8)), wave


def test_numpy_api_encodes_decodes_and_flags():
    model, wave = _model()
    rng = np.random.default_rng(0)
    flux = rng.normal(5.0, 1.0, (5, wave.size)).astype(np.float32)
    ivar = np.ones_like(flux)
    flux[3] = -2.0  # no positive median anywhere: unusable
    ivar[4, ::3] = np.nan  # non-finite ivar counts as masked
    z = np.array([0.1, 0.2, 0.3, 0.4, 0.5])
    encoded = model.encode_spectra(wave, flux, ivar, z, batch_size=2)
    assert encoded.latent.shape == (5, 3) and encoded.latent.dtype == np.float32
    assert np.isnan(encoded.latent[3]).all() and np.isfinite(encoded.latent[[0, 1, 2, 4]]).all()
    assert encoded.flags[3] == SpectrumFlag.UNUSABLE and encoded.norm[0] == pytest.approx(5.0, rel=0.05)
    decoded = model.decode_latents(encoded.latent[:3])
    assert decoded.shape == (3, model.wave_rest.numel()) and np.isfinite(decoded).all()
    with pytest.raises(ValueError, match="do not match the model's instrument grid"):
        model.encode_spectra(wave[:-10], flux[:, :-10], ivar[:, :-10], z)
    prepared = prepare_spectra(TINY, None, wave, flux, ivar, z)
    assert prepared.flux.shape == (5, 779)


def test_encoder_ignores_masked_pixel_values():
    model, wave = _model()
    flux = np.random.default_rng(1).normal(5.0, 1.0, (1, wave.size)).astype(np.float32)
    ivar = np.ones_like(flux)
    ivar[0, 300:320] = 0
    changed = flux.copy()
    changed[0, 300:320] = 1e6
    a = model.encode_spectra(wave, flux, ivar, [0.2]).latent
    b = model.encode_spectra(wave, changed, ivar, [0.2]).latent
    assert np.array_equal(a, b)


def test_redshift_input_is_an_option():
    config = AutoencoderConfig.from_dict({**TINY.to_dict(), "redshift_input": True})
    model = SpectrumAutoencoder(
        config, np.linspace(3600, 9824, 779), np.linspace(2000, 9824, 900), (0.0, 0.8)
    )
    flux, ivar = torch.ones(2, 779), torch.ones(2, 779)
    a = model.encode(flux, ivar, torch.tensor([0.1, 0.7]))
    assert not torch.allclose(a[0], a[1])  # same spectrum, different z
    with pytest.raises(ValueError, match="even"):
        AutoencoderConfig.from_dict({"conv_filters": [4, 8, 9]})


def test_a_dereddening_model_needs_ebv():
    config = AutoencoderConfig.from_dict({**TINY.to_dict(), "deredden": True})
    wave = np.linspace(3600.0, 9824.0, 1558)
    flux = np.full((2, wave.size), 3.0, np.float32)
    with pytest.raises(ValueError, match="E\\(B-V\\) per spectrum is needed"):
        prepare_spectra(config, None, wave, flux, np.ones_like(flux), [0.1, 0.2])
    prepared = prepare_spectra(
        config, None, wave, flux, np.ones_like(flux), [0.1, 0.2], np.array([0.0, np.nan])
    )
    assert np.allclose(prepared.flux, 1.0) and list(prepared.flags) == [0, SpectrumFlag.NO_EXTINCTION]
    faded = prepare_spectra(config, None, wave, flux, np.ones_like(flux), [0.1, 0.1], np.array([0.0, 0.2]))
    assert faded.flux[1, 0] > 1.0 > faded.flux[1, -1]  # de-reddening tilts the normalised spectrum blue-ward


AMPLITUDE = AutoencoderConfig.from_dict({**TINY.to_dict(), "normalisation": "amplitude"})


def test_amplitude_normalisation_exists_at_every_redshift():
    """The fixed 5300-5850 A rest window leaves DESI's range above z = 0.85: "window" falls
    back there (and training skips those spectra); "amplitude" never does."""
    wave = np.linspace(3600.0, 9824.0, 1558)
    z = np.array([0.1, 0.6, 0.9, 1.2, 1.6])
    flux = np.tile(np.linspace(1.0, 3.0, wave.size, dtype=np.float32), (5, 1))
    flux[:, : wave.size // 2] *= -1  # the blue half negative: median |flux| is the scale, not the median
    ivar = np.ones_like(flux)
    ivar[4] = 0  # nothing valid: the only spectrum no normalisation can use
    window = prepare_spectra(TINY, None, wave, np.abs(flux), ivar, z)
    assert list(window.flags) == [0, 0, SpectrumFlag.NORM_FALLBACK, SpectrumFlag.NORM_FALLBACK, 2]
    amplitude = prepare_spectra(AMPLITUDE, None, wave, flux, ivar, z)
    assert list(amplitude.flags) == [0, 0, 0, 0, SpectrumFlag.UNUSABLE]
    np.testing.assert_allclose(amplitude.norm[:4], np.median(np.abs(flux[0])), rtol=3e-3)  # 2.0, rebinned
    assert np.median(np.abs(amplitude.flux[0])) == pytest.approx(1.0, rel=1e-3)
    with pytest.raises(ValueError, match="normalisation 'median' is not one of"):
        AutoencoderConfig.from_dict({"normalisation": "median"})
    assert AutoencoderConfig().normalisation == "window"  # what config.json before it means


def test_fit_amplitude_is_the_weighted_least_squares_solution():
    gen = torch.Generator().manual_seed(2)
    model = torch.rand(3, 200, generator=gen) + 0.5
    ivar = torch.rand(3, 200, generator=gen)
    inside = torch.ones(3, 200, dtype=torch.bool)
    inside[1, :100] = False
    data = model * torch.tensor([[2.5], [0.3], [-1.0]]) + 0.01 * torch.randn(3, 200, generator=gen)
    amplitude = fit_amplitude(data, ivar, model, inside)
    w = ivar * inside
    expected = (w * data * model).sum(1) / (w * model**2).sum(1)
    assert torch.allclose(amplitude, expected) and torch.allclose(
        amplitude, torch.tensor([2.5, 0.3, -1.0]), atol=0.01
    )
    # the chi^2 is stationary there: any other amplitude is worse
    best = chi2(data, ivar, amplitude[:, None] * model, inside)[0]
    assert (chi2(data, ivar, 1.01 * amplitude[:, None] * model, inside)[0] > best).all()
    assert fit_amplitude(data, torch.zeros_like(ivar), model, inside).tolist() == [0.0, 0.0, 0.0]


def test_amplitude_model_decodes_to_unit_window_median_and_norm_restores_the_flux():
    torch.manual_seed(0)
    wave = np.linspace(3600.0, 9824.0, 1558)
    wave_obs = wave[: 1558 // 2 * 2].reshape(-1, 2).mean(1)
    model = SpectrumAutoencoder(AMPLITUDE, wave_obs, rest_grid(wave_obs, 0.0, 1.5, 8.0), (0.0, 1.5))
    with torch.no_grad():  # the decoder's output is shifted to unit mean in the window, exactly
        assert torch.allclose(model.window_mean(model.decode(torch.randn(4, 3))), torch.ones(4), atol=1e-6)
    rng = np.random.default_rng(3)
    z = np.array([0.05, 0.9, 1.4])
    flux = rng.normal(7.0, 0.1, (3, wave.size)).astype(np.float32)
    encoded = model.encode_spectra(wave, flux, np.full_like(flux, 100.0), z)
    rest = model.decode_latents(encoded.latent)
    lo, hi = AMPLITUDE.norm_window
    in_window = (model.rest_wave() >= lo) & (model.rest_wave() <= hi)
    np.testing.assert_allclose(np.median(rest[:, in_window], axis=1), 1.0, rtol=1e-5)
    # norm x decoded spectrum, redshifted, is the best fit to the data: refitting gives A = 1
    observed = redshift_spectra(model.rest_wave(), rest * encoded.norm[:, None], z, wave)
    inside = np.isfinite(observed)
    refit = (np.where(inside, flux * observed, 0).sum(1)) / np.where(inside, observed**2, 0).sum(1)
    np.testing.assert_allclose(refit, 1.0, rtol=0.02)  # rebinning by 2 vs the full grid
