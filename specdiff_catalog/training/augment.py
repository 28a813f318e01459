"""Training-time augmentation of the diffusion model's conditions: band dropout and flux noise."""

from __future__ import annotations

import numpy as np
import torch


def drop_bands(missing: torch.Tensor, p: float, generator: torch.Generator | None) -> torch.Tensor:
    """Band dropout: ``missing`` (N, B) bool with each present band also marked missing with
    probability p, so the model learns the conditions a catalog with gaps produces."""
    if p <= 0:
        return missing
    return missing | (torch.rand(missing.shape, generator=generator, device=missing.device) < p)


def perturb_fluxes(
    flux: np.ndarray, ivar: np.ndarray, rng: np.random.Generator, scale: float = 1.0
) -> np.ndarray:
    """flux (N, B) + scale * N(0, 1) / sqrt(ivar) where ivar > 0, in the flux's unit.

    Apply before ``photometric_features``; missing entries (ivar <= 0 or non-finite)
    stay as they are. ivar is left unchanged: the model sees the catalog's quoted errors.
    """
    flux = np.asarray(flux, dtype=np.float64)
    ivar = np.asarray(ivar, dtype=np.float64)
    usable = np.isfinite(flux) & np.isfinite(ivar) & (ivar > 0)
    sigma = np.where(usable, 1.0 / np.sqrt(np.where(usable, ivar, 1.0)), 0.0)
    return flux + scale * sigma * rng.standard_normal(flux.shape)
