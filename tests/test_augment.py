"""Training-time augmentation: band dropout and flux perturbation."""

import math

import numpy as np
import torch

from specdiff_catalog.training.augment import drop_bands, perturb_fluxes

B = 5


def test_band_dropout_hides_present_bands_at_the_configured_rate():
    missing = torch.zeros((20000, B), dtype=torch.bool)
    missing[:, 0] = True
    dropped = drop_bands(missing, 0.1, torch.Generator().manual_seed(0))
    assert dropped[:, 0].all()  # a missing band never comes back
    rate = dropped[:, 1:].float().mean().item()
    assert abs(rate - 0.1) < 5 * math.sqrt(0.1 * 0.9 / 80000)
    assert torch.equal(drop_bands(missing, 0.0, None), missing)


def test_perturb_fluxes_scatters_within_the_errors():
    rng = np.random.default_rng(6)
    flux = rng.uniform(1, 100, (50000, 3))
    ivar = rng.uniform(0.1, 10, (50000, 3))
    ivar[:100, 1] = 0.0
    flux[100:200, 2] = np.nan
    out = perturb_fluxes(flux, ivar, np.random.default_rng(7))
    pull = ((out - flux) * np.sqrt(ivar))[200:]
    assert abs(pull.mean()) < 0.01 and abs(pull.std() - 1) < 0.01
    assert np.array_equal(out[:100, 1], flux[:100, 1]) and np.isnan(out[100:200, 2]).all()
