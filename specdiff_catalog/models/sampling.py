"""Samplers of p(x0 | c): ancestral DDPM, DDIM and DPM-Solver++(2M), with counter-based noise.

All three run on a (G, K, D) batch: G galaxies x K samples, the condition embedding
computed once per galaxy and broadcast over its samples and every step. Every random
number is ``hashing.counter_normals_torch(seed, object_id, k, step, d)``, and every
network product is grouped by galaxy (``diffusion.GroupedLinear``), so a galaxy's
samples are bitwise the same whatever else shares its batch (docs/diffusion.md).

- ``ddpm``: ancestral sampling over all T steps (Ho et al. 2020), the reference;
  implemented as DDIM with eta = 1, which is the same update (Song et al. 2021, eq. 16).
- ``ddim``: DDIM, deterministic given x_T at eta = 0, stochastic for eta > 0.
- ``dpmpp2m``: DPM-Solver++(2M) (Lu et al. 2022, algorithm 2), multistep second order
  in the data prediction, first order at the first and the final step.

A sampler with ``steps`` = n evaluates the network n times: at T, at n - 1 times uniform
in log-SNR, and the last x0 prediction is the sample (``sample_times``); ``ddpm`` with
all T steps uses every integer t. The samplers only need x0 predictions, so they serve
v- and eps-models alike.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np
import torch

from specdiff_catalog import defaults
from specdiff_catalog.hashing import counter_normals_torch
from specdiff_catalog.models.diffusion import CosineSchedule


class SamplerModel(Protocol):
    """What a sampler needs of a model (``DiffusionModel`` is one)."""

    schedule: CosineSchedule

    @property
    def data_dim(self) -> int:
        """D of the sampled vectors."""

    @property
    def device(self) -> torch.device:
        """Where the network runs."""

    def embed_condition(self, features: Any, missing: Any) -> torch.Tensor:
        """(G, H) condition embedding, one row per galaxy."""

    def denoise(self, x_t: torch.Tensor, t: float, cond_emb: torch.Tensor) -> torch.Tensor:
        """x0 prediction for x_t (G, K, D) at time t given cond_emb (G, 1, H)."""


class CounterNoise:
    """N(0, 1) float32 noise (G, K, D) of one step: deviate (seed, object_id, k, step, d)."""

    def __init__(self, seed: int, object_ids: torch.Tensor, n_samples: int, data_dim: int) -> None:
        self.seed, self.data_dim = seed, data_dim
        self.ids = object_ids.to(torch.int64)[:, None]
        self.samples = torch.arange(n_samples, dtype=torch.int64, device=object_ids.device)[None, :]

    def __call__(self, step: int) -> torch.Tensor:
        return counter_normals_torch(self.seed, self.ids, self.samples, step, self.data_dim).float()


LOG_SNR_RANGE = (-2.0, 5.0)


def sample_times(
    schedule: CosineSchedule, steps: int, log_snr_range: tuple[float, float] = LOG_SNR_RANGE
) -> list[float]:
    """steps + 1 times from T down to 0: T, then steps - 1 times uniform in log-SNR
    lambda over ``log_snr_range``, then 0 (the last network call returns x0).

    lambda(T) = -9.9, but little is resolved below lambda ~ -2 in unit-variance data, and
    above lambda = 5 the noise (sigma/alpha < 0.007) is below the sharpest scale we
    resolve; docs/diffusion.md has the measurements behind the defaults.
    """
    if steps == schedule.timesteps:
        return np.linspace(schedule.timesteps, 0.0, steps + 1).tolist()
    lambdas = np.linspace(*log_snr_range, steps - 1).tolist() if steps > 1 else []
    return [float(schedule.timesteps), *(schedule.time_of_log_snr(lam) for lam in lambdas), 0.0]


def ddim(
    model: SamplerModel, cond: torch.Tensor, noise: CounterNoise, times: list[float], eta: float = 0.0
) -> torch.Tensor:
    """DDIM from x_T = noise(0) along ``times``; fresh noise(i + 1) at step i when eta > 0.

    x_s = sqrt(abar_s) x0 + sqrt(1 - abar_s - c^2) eps + c z with
    c = eta sqrt((1 - abar_s) / (1 - abar_t) (1 - abar_t / abar_s)).
    """
    x = noise(0)
    for i, (t, s) in enumerate(itertools.pairwise(times)):
        x0 = model.denoise(x, t, cond)
        abar_t, abar_s = float(model.schedule.alpha_bar(t)), float(model.schedule.alpha_bar(s))
        eps = (x - math.sqrt(abar_t) * x0) / math.sqrt(1.0 - abar_t)
        c = eta * math.sqrt((1.0 - abar_s) / (1.0 - abar_t) * (1.0 - abar_t / abar_s))
        x = math.sqrt(abar_s) * x0 + math.sqrt(max(1.0 - abar_s - c * c, 0.0)) * eps
        if c > 0:
            x = x + c * noise(i + 1)
    return x


def dpmpp_2m(
    model: SamplerModel, cond: torch.Tensor, noise: CounterNoise, times: list[float], eta: float = 0.0
) -> torch.Tensor:
    """DPM-Solver++(2M) from x_T = noise(0) along ``times`` (deterministic; eta unused).

    With lambda = log(alpha / sigma), h = lambda_s - lambda_t, r = h_prev / h:
    D = (1 + 1/(2r)) x0_t - 1/(2r) x0_prev and x_s = sigma_s/sigma_t x_t + alpha_s (1 - e^-h) D.
    The last step (to t = 0, sigma = 0) returns the last x0 prediction.
    """
    x = noise(0)
    x0_prev: torch.Tensor | None = None
    h_prev = 0.0
    for t, s in itertools.pairwise(times):
        x0 = model.denoise(x, t, cond)
        if s <= 0:
            return x0
        (alpha_t, sigma_t), (alpha_s, sigma_s) = model.schedule.alpha_sigma(t), model.schedule.alpha_sigma(s)
        h = math.log(alpha_s / sigma_s) - math.log(alpha_t / sigma_t)
        d = x0
        if x0_prev is not None:
            half_inv_r = h / (2.0 * h_prev)
            d = (1.0 + half_inv_r) * x0 - half_inv_r * x0_prev
        x = (sigma_s / sigma_t) * x - (alpha_s * math.expm1(-h)) * d
        x0_prev, h_prev = x0, h
    return x


def _ddpm(
    model: SamplerModel, cond: torch.Tensor, noise: CounterNoise, times: list[float], eta: float = 0.0
) -> torch.Tensor:
    """Ancestral DDPM: DDIM with eta = 1 (the posterior variance of q(x_s | x_t, x0))."""
    return ddim(model, cond, noise, times, eta=1.0)


# the names are those of defaults.SAMPLER_STEPS (tests/test_sampling.py checks)
SAMPLERS: dict[str, Callable[..., torch.Tensor]] = {"ddpm": _ddpm, "ddim": ddim, "dpmpp2m": dpmpp_2m}


def sample(
    model: SamplerModel,
    features: Any,
    missing: Any,
    object_ids: Any,
    *,
    n_samples: int,
    seed: int,
    sampler: str = defaults.SAMPLER,
    steps: int | None = None,
    eta: float = 0.0,
    batch_size: int = defaults.SAMPLER_BATCH_ROWS,
) -> torch.Tensor:
    """(N, K) samples of x0 (standardised space) for each of N galaxies: (N, K, D) float32 on CPU.

    features: (N, F) raw ``photometric_features`` values (NaN for missing); missing:
    (N, B) bool; object_ids: (N,) int64, the noise keys. sampler: ddpm, ddim or dpmpp2m;
    steps: network evaluations (default ``defaults.SAMPLER_STEPS``: all T for ddpm, 50 for
    ddim, 20 for dpmpp2m);
    eta: DDIM stochasticity. batch_size: rows (galaxies x samples) per chunk; chunks
    hold whole galaxies and never change the result. ``model`` must be in eval mode.
    """
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; known: {', '.join(SAMPLERS)}")
    if getattr(model, "training", False):
        raise ValueError("the model is in training mode (dropout); call model.eval() before sampling")
    ids = torch.as_tensor(np.asarray(object_ids).astype(np.int64))
    n = len(ids)
    steps = steps or defaults.SAMPLER_STEPS[sampler] or model.schedule.timesteps
    times = sample_times(model.schedule, steps)
    out = torch.empty((n, n_samples, model.data_dim), dtype=torch.float32)
    per_chunk = max(1, batch_size // n_samples)
    with torch.inference_mode():
        for lo in range(0, n, per_chunk):
            hi = min(n, lo + per_chunk)
            cond = model.embed_condition(features[lo:hi], missing[lo:hi])[:, None, :]
            noise = CounterNoise(seed, ids[lo:hi].to(model.device), n_samples, model.data_dim)
            out[lo:hi] = SAMPLERS[sampler](model, cond, noise, times, eta).cpu()
    return out
