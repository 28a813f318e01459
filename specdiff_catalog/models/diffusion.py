"""The conditional latent diffusion model: schedule, denoiser, standardisation and training loss.

The model learns p(x0 | c) (docs/diffusion.md):

- x0 (D = S + 1): the autoencoder latent s standardised per dimension, then t(z), a
  standardised transform of redshift (log(1+z) by default).
- c: ``features.photometric_features`` values (F) standardised with training mean/std,
  NaN (missing band) -> 0, with the missing-band mask (B) appended.
- Forward process x_t = sqrt(abar(t)) x0 + sqrt(1 - abar(t)) eps with the cosine
  schedule of Nichol & Dhariwal (2021), continuous in t in [0, T].
- Denoiser: a residual MLP; every block gets scale, shift and gate from
  SiLU(condition embedding + timestep embedding) (adaLN-Zero, Peebles & Xie 2023).
  It predicts v = sqrt(abar) eps - sqrt(1 - abar) x0 (Salimans & Ho 2022) or eps.

Samplers (``models/sampling.py``) need only ``embed_condition`` (once per galaxy) and
``denoise`` (x0 from x_t at one time for a (G, K, D) batch of G galaxies x K samples).
The training helpers (band dropout, flux perturbation, EMA) live in ``training/``, the
files in ``models/store.py``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from specdiff_catalog.config import ConfigError, from_dict, load_preset
from specdiff_catalog.features import feature_bands

PREDICTIONS = ("v", "eps")


@dataclass(frozen=True)
class DiffusionConfig:
    """Architecture, noise schedule and training regularisation (``presets/diffusion/*.toml``).

    hidden: width H of the residual MLP and of both embeddings. A multiple of 64, so that
        every element-wise op runs on whole SIMD vectors and a sample's bits do not depend
        on its position in a batch (scalar loop tails round transcendental functions
        differently).
    n_blocks, mlp_ratio: residual blocks and their inner width mlp_ratio * H.
    cond_layers: linear layers of the condition MLP. time_frequencies: sinusoids in the
        timestep embedding (even). dropout: inside the blocks, training only.
    prediction: "v" or "eps". timesteps: T. cosine_s, beta_max: the cosine schedule's
        offset and its clip of the last beta.
    band_dropout: training probability of hiding each present band. ema_decay: of the
        weights' exponential moving average. z_weight: the loss weight of the redshift
        dimension relative to each latent dimension (1: all alike).
    z_transform: the redshift transform of the target (a key of ``Z_TRANSFORMS``); the
        default log1p is what models before "softplus_log1p" were trained with.
    """

    hidden: int = 256
    n_blocks: int = 4
    mlp_ratio: int = 2
    cond_layers: int = 2
    time_frequencies: int = 64
    dropout: float = 0.0
    prediction: str = "v"
    timesteps: int = 1000
    cosine_s: float = 0.008
    beta_max: float = 0.999
    band_dropout: float = 0.1
    ema_decay: float = 0.999
    z_transform: str = "log1p"
    z_weight: float = 1.0

    def __post_init__(self) -> None:
        problems = []
        if self.z_transform not in Z_TRANSFORMS:
            problems.append(f"z_transform={self.z_transform!r} must be one of {sorted(Z_TRANSFORMS)}")
        if self.hidden <= 0 or self.hidden % 64:
            problems.append(f"hidden={self.hidden} must be a positive multiple of 64")
        if self.prediction not in PREDICTIONS:
            problems.append(f"prediction={self.prediction!r} must be one of {PREDICTIONS}")
        if self.time_frequencies <= 0 or self.time_frequencies % 2:
            problems.append(f"time_frequencies={self.time_frequencies} must be positive and even")
        if min(self.n_blocks, self.mlp_ratio, self.cond_layers, self.timesteps) < 1:
            problems.append("n_blocks, mlp_ratio, cond_layers and timesteps must be >= 1")
        if not (0 <= self.band_dropout < 1 and 0 <= self.dropout < 1 and 0 <= self.ema_decay < 1):
            problems.append("band_dropout, dropout and ema_decay must be in [0, 1)")
        if not self.z_weight > 0:
            problems.append(f"z_weight={self.z_weight} must be > 0")
        if not 0 < self.beta_max < 1:
            problems.append(f"beta_max={self.beta_max} must be in (0, 1)")
        if problems:
            raise ConfigError("diffusion config: " + "; ".join(problems))

    @classmethod
    def load(cls, name_or_path: str | Path = "small") -> DiffusionConfig:
        """A bundled preset (tiny, small, photoz, paper) or a user TOML/JSON file (its [training]
        table is the training job's, ``training.diffusion.load_diffusion_preset``)."""
        data = load_preset("diffusion", name_or_path)
        data.pop("training", None)
        return from_dict(cls, data, source=f"diffusion preset {name_or_path}")


# --- noise schedule ----------------------------------------------------------------------


@dataclass(frozen=True)
class CosineSchedule:
    """abar(t) of Nichol & Dhariwal (2021), continuous in t in [0, T] (float64).

    abar(t) = f(t) / f(0), f(t) = cos^2((t/T + s) / (1 + s) pi/2) for t <= T - 1; on
    [T - 1, T] it falls geometrically to (1 - beta_max) abar(T - 1), their clip of the
    last beta (the closed form would reach 0, an infinite log-SNR). At integer t this is
    the discrete schedule with betas 1 - abar(t) / abar(t - 1).
    """

    timesteps: int = 1000
    s: float = 0.008
    beta_max: float = 0.999

    def _f(self, t: torch.Tensor) -> torch.Tensor:
        return torch.cos((t / self.timesteps + self.s) / (1 + self.s) * (math.pi / 2)) ** 2

    def alpha_bar(self, t: torch.Tensor | float) -> torch.Tensor:
        """abar at times t (any shape, float64), t in [0, T]."""
        t = torch.as_tensor(t, dtype=torch.float64)
        head = self._f(t.clamp(max=self.timesteps - 1)) / self._f(torch.zeros((), dtype=torch.float64))
        return head * (1 - self.beta_max) ** (t - (self.timesteps - 1)).clamp(0, 1)

    def alpha_sigma(self, t: float) -> tuple[float, float]:
        """(sqrt(abar), sqrt(1 - abar)) at one time, as Python floats."""
        abar = float(self.alpha_bar(t))
        return math.sqrt(abar), math.sqrt(1.0 - abar)

    def log_snr(self, t: float) -> float:
        """lambda(t) = log(alpha / sigma) = 0.5 log(abar / (1 - abar))."""
        abar = float(self.alpha_bar(t))
        return 0.5 * math.log(abar / (1.0 - abar))

    def time_of_log_snr(self, lam: float) -> float:
        """The t in (0, T] with log_snr(t) = lam (inverse of the closed form; clamped to [0, T])."""
        abar = 1.0 / (1.0 + math.exp(-2.0 * lam))
        last = float(self.alpha_bar(self.timesteps - 1))
        if abar < last:  # the clipped last step
            return min(
                self.timesteps - 1 + math.log(abar / last) / math.log(1 - self.beta_max), self.timesteps
            )
        f0 = math.cos(self.s / (1 + self.s) * math.pi / 2) ** 2
        angle = math.acos(min(math.sqrt(abar * f0), 1.0))
        return max(self.timesteps * (angle / (math.pi / 2) * (1 + self.s) - self.s), 0.0)

    def betas(self) -> torch.Tensor:
        """(T,) the discrete betas of steps 1..T."""
        abar = self.alpha_bar(torch.arange(self.timesteps + 1, dtype=torch.float64))
        return 1 - abar[1:] / abar[:-1]


# --- standardisation ---------------------------------------------------------------------

SOFTPLUS_SCALE = 0.02
"""u0 of the "softplus_log1p" transform: below log(1 + z) ~ u0 it is logarithmic, above linear."""
Z_FLOOR = 1e-4
"""Training redshifts below this are raised to it by "softplus_log1p" (its t(0) is -inf)."""


def _softplus_log1p(z: np.ndarray) -> np.ndarray:
    """t = log(expm1(u / u0)) with u = log(1 + max(z, Z_FLOOR)): inverse of u0 softplus(t)."""
    a = np.log1p(np.maximum(np.asarray(z, dtype=np.float64), Z_FLOOR)) / SOFTPLUS_SCALE
    return a + np.log(-np.expm1(-a))  # log(expm1(a)) without overflow


def _softplus_expm1(t: torch.Tensor) -> torch.Tensor:
    """z = expm1(u0 softplus(t)) >= 0 for every t: the positive-support inverse."""
    return torch.expm1(SOFTPLUS_SCALE * F.softplus(t))


# forward transform (numpy, for training targets) and inverse (torch, for samples).
# log1p and identity can give z < 0 (inference clips those samples at 0, flag Z_CLIPPED);
# softplus_log1p cannot: t(z) is log(1 + z) / u0 above z ~ u0 and log(z / u0) below.
Z_TRANSFORMS: dict[str, tuple[Callable[[np.ndarray], np.ndarray], Callable[[torch.Tensor], torch.Tensor]]] = {
    "log1p": (np.log1p, torch.expm1),
    "identity": (np.asarray, torch.clone),
    "softplus_log1p": (_softplus_log1p, _softplus_expm1),
}


@dataclass
class Standardisation:
    """The maps between physical quantities and the model's standardised space.

    feature_mean, feature_std: (F,) of ``photometric_features`` values over the training
        set, NaN ignored. feature_bands: (F, B) bool, the bands each feature uses.
    latent_mean, latent_std: (S,) of the autoencoder latents.
    z_transform: a key of Z_TRANSFORMS; z_mean, z_std: of the transformed redshift.
    """

    feature_mean: np.ndarray
    feature_std: np.ndarray
    feature_bands: np.ndarray
    latent_mean: np.ndarray
    latent_std: np.ndarray
    z_mean: float
    z_std: float
    z_transform: str = "log1p"

    def __post_init__(self) -> None:
        self.feature_mean = np.asarray(self.feature_mean, dtype=np.float64)
        self.feature_std = np.asarray(self.feature_std, dtype=np.float64)
        self.feature_bands = np.asarray(self.feature_bands, dtype=bool)
        self.latent_mean = np.asarray(self.latent_mean, dtype=np.float64)
        self.latent_std = np.asarray(self.latent_std, dtype=np.float64)
        self.z_mean, self.z_std = float(self.z_mean), float(self.z_std)
        if self.z_transform not in Z_TRANSFORMS:
            raise ConfigError(f"z_transform {self.z_transform!r} is not one of {sorted(Z_TRANSFORMS)}")
        if self.feature_bands.ndim != 2 or len(self.feature_bands) != len(self.feature_mean):
            raise ConfigError(
                f"feature_bands {self.feature_bands.shape} is not ({len(self.feature_mean)}, B)"
            )

    @classmethod
    def fit(
        cls,
        features: np.ndarray,
        latent: np.ndarray,
        z: np.ndarray,
        *,
        bands: np.ndarray | None = None,
        z_transform: str = "log1p",
    ) -> Standardisation:
        """From training data: features (N, F) with NaN, latent (N, S), z (N,).

        bands: (F, B) bool feature -> band map; default ``feature_bands(B)`` for the
        (3B-1)-column layout of ``photometric_features``.
        """
        features = np.asarray(features, dtype=np.float64)
        if bands is None:
            bands = feature_bands((features.shape[1] + 1) // 3)
        finite = np.isfinite(features)
        count = np.maximum(finite.sum(axis=0), 1)
        mean = np.where(finite, features, 0.0).sum(axis=0) / count
        std = np.sqrt(np.where(finite, (features - mean) ** 2, 0.0).sum(axis=0) / count)
        tz = Z_TRANSFORMS[z_transform][0](np.asarray(z, dtype=np.float64))
        latent = np.asarray(latent, dtype=np.float64)
        return cls(
            feature_mean=mean,
            feature_std=np.where(std > 1e-6, std, 1.0),
            feature_bands=bands,
            latent_mean=latent.mean(axis=0),
            latent_std=np.maximum(latent.std(axis=0), 1e-6),
            z_mean=tz.mean(),
            z_std=max(tz.std(), 1e-6),
            z_transform=z_transform,
        )

    @property
    def latent_dim(self) -> int:
        return len(self.latent_mean)

    @property
    def data_dim(self) -> int:
        """D = S + 1."""
        return self.latent_dim + 1

    @property
    def n_features(self) -> int:
        return len(self.feature_mean)

    @property
    def n_bands(self) -> int:
        return self.feature_bands.shape[1]

    def to_standard(self, z: np.ndarray, latent: np.ndarray) -> np.ndarray:
        """x0 (N, D) float32 from z (N,) and latent (N, S): the training target."""
        tz = (Z_TRANSFORMS[self.z_transform][0](np.asarray(z, dtype=np.float64)) - self.z_mean) / self.z_std
        s = (np.asarray(latent, dtype=np.float64) - self.latent_mean) / self.latent_std
        return np.concatenate([s, tz[:, None]], axis=1).astype(np.float32)

    def to_physical(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(z (...), latent (..., S)) from standardised x (..., D); inverse of to_standard."""
        mean = torch.as_tensor(self.latent_mean, dtype=x.dtype, device=x.device)
        std = torch.as_tensor(self.latent_std, dtype=x.dtype, device=x.device)
        z = Z_TRANSFORMS[self.z_transform][1](x[..., -1] * self.z_std + self.z_mean)
        return z, x[..., :-1] * std + mean

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (config.json's ``diffusion.standardisation``)."""
        return {
            "feature_mean": self.feature_mean.tolist(),
            "feature_std": self.feature_std.tolist(),
            "feature_bands": self.feature_bands.astype(int).tolist(),
            "latent_mean": self.latent_mean.tolist(),
            "latent_std": self.latent_std.tolist(),
            "z_mean": self.z_mean,
            "z_std": self.z_std,
            "z_transform": self.z_transform,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "diffusion standardisation") -> Standardisation:
        return from_dict(cls, dict(data), source=source)


# --- the network -------------------------------------------------------------------------


class GroupedLinear(nn.Linear):
    """nn.Linear that runs a 3-D input (G, M, in) as G separate (M, in) matrix products.

    BLAS picks kernels (and so summation orders) by matrix shape: in one (G*M, in)
    product a row's last bits depend on G. Grouped by galaxy, a galaxy's result depends
    only on its own (M, in) shape. 2-D inputs (training) are one product, and so are
    inputs on a GPU: cuBLAS promises no shape-independent bits either way, and G small
    products (M = 1 for the per-galaxy modulation) would leave most of a GPU idle.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 3 and x.device.type == "cpu":
            return torch.baddbmm(self.bias, x, self.weight.t().expand(x.shape[0], -1, -1))
        return super().forward(x)


def timestep_embedding(t: torch.Tensor, n: int, timesteps: int) -> torch.Tensor:
    """(..., n) cos/sin embedding of times t (...) on the 0..1000 scale whatever T is."""
    freqs = torch.exp(
        -math.log(10000.0) * torch.arange(n // 2, dtype=torch.float32, device=t.device) / (n // 2)
    )
    args = (t.float() * (1000.0 / timesteps))[..., None] * freqs
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class _Block(nn.Module):
    """h + gate * MLP(LayerNorm(h) * (1 + scale) + shift), (shift, scale, gate) from c."""

    def __init__(self, hidden: int, ratio: int, dropout: float) -> None:
        super().__init__()
        self.modulation = GroupedLinear(hidden, 3 * hidden)
        self.fc1 = GroupedLinear(hidden, ratio * hidden)
        self.fc2 = GroupedLinear(ratio * hidden, hidden)
        self.dropout = nn.Dropout(dropout)
        nn.init.zeros_(self.modulation.weight)  # adaLN-Zero: each block starts as the identity
        nn.init.zeros_(self.modulation.bias)

    def forward(self, h: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale, gate = self.modulation(c).chunk(3, dim=-1)
        y = F.layer_norm(h, h.shape[-1:]) * (1 + scale) + shift
        return h + gate * self.fc2(self.dropout(F.silu(self.fc1(y))))


class Denoiser(nn.Module):
    """Residual MLP on x_t (D) conditioned on c (C = F + B inputs) and t in every block.

    Shapes: training x_t (N, D), t (N,), cond_emb (N, H); sampling x_t (G, K, D), t
    scalar, cond_emb (G, 1, H), broadcast over the K samples of each galaxy.
    """

    def __init__(self, data_dim: int, cond_dim: int, config: DiffusionConfig) -> None:
        super().__init__()
        hidden = config.hidden
        layers: list[nn.Module] = [GroupedLinear(cond_dim, hidden)]
        for _ in range(config.cond_layers - 1):
            layers += [nn.SiLU(), GroupedLinear(hidden, hidden)]
        self.condition = nn.Sequential(*layers)
        self.time = nn.Sequential(
            nn.Linear(config.time_frequencies, hidden), nn.SiLU(), nn.Linear(hidden, hidden)
        )
        self.time_frequencies, self.timesteps = config.time_frequencies, config.timesteps
        self.inp = GroupedLinear(data_dim, hidden)
        self.blocks = nn.ModuleList(
            _Block(hidden, config.mlp_ratio, config.dropout) for _ in range(config.n_blocks)
        )
        self.final_modulation = GroupedLinear(hidden, 2 * hidden)
        self.out = GroupedLinear(hidden, data_dim)
        for layer in (self.final_modulation, self.out):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def embed(self, cond: torch.Tensor) -> torch.Tensor:
        """(..., C) standardised condition -> (..., H) embedding."""
        return self.condition(cond)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, cond_emb: torch.Tensor) -> torch.Tensor:
        """The v (or eps) prediction, shaped like x_t."""
        c = F.silu(cond_emb + self.time(timestep_embedding(t, self.time_frequencies, self.timesteps)))
        h = self.inp(x_t)
        for block in self.blocks:
            h = block(h, c)
        shift, scale = self.final_modulation(c).chunk(2, dim=-1)
        return self.out(F.layer_norm(h, h.shape[-1:]) * (1 + scale) + shift)


# --- the model ---------------------------------------------------------------------------


class DiffusionModel(nn.Module):
    """Denoiser + schedule + standardisation: what training writes and sampling reads."""

    feature_mean: torch.Tensor  # buffers (not saved: the standardisation holds them): (F,)
    feature_std: torch.Tensor  # (F,)
    feature_bands: torch.Tensor  # (B, F) 0/1

    def __init__(self, config: DiffusionConfig, standardisation: Standardisation) -> None:
        super().__init__()
        self.config, self.standardisation = config, standardisation
        self.schedule = CosineSchedule(config.timesteps, config.cosine_s, config.beta_max)
        self.net = Denoiser(
            standardisation.data_dim, standardisation.n_features + standardisation.n_bands, config
        )
        std = standardisation
        for name, value in [
            ("feature_mean", std.feature_mean),
            ("feature_std", std.feature_std),
            ("feature_bands", std.feature_bands.T),  # (B, F)
        ]:
            self.register_buffer(
                name, torch.as_tensor(np.asarray(value), dtype=torch.float32), persistent=False
            )

    @property
    def data_dim(self) -> int:
        return self.standardisation.data_dim

    @property
    def device(self) -> torch.device:
        return self.feature_mean.device

    def condition_input(self, features: Any, missing: Any) -> torch.Tensor:
        """(N, F + B) network input from raw features (N, F) (NaN allowed) and missing (N, B)
        (numpy arrays or tensors).

        Features standardised; those using a missing band, and any non-finite value, -> 0;
        the mask appended as 0/1.
        """
        values = torch.as_tensor(features, dtype=torch.float32, device=self.device)
        missing = torch.as_tensor(missing, dtype=torch.bool, device=self.device)
        values = (values - self.feature_mean) / self.feature_std
        unusable = (missing.float() @ self.feature_bands > 0) | ~torch.isfinite(values)
        return torch.cat([values.masked_fill(unusable, 0.0), missing.float()], dim=-1)

    def embed_condition(self, features: Any, missing: Any) -> torch.Tensor:
        """(N, H) condition embedding, computed galaxy by galaxy (bitwise batch-independent)."""
        return self.net.embed(self.condition_input(features, missing)[:, None, :])[:, 0, :]

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, cond_emb: torch.Tensor) -> torch.Tensor:
        """The network's raw prediction (v or eps, per ``config.prediction``)."""
        return self.net(x_t, t, cond_emb)

    def denoise(self, x_t: torch.Tensor, t: float, cond_emb: torch.Tensor) -> torch.Tensor:
        """x0 predicted from x_t (G, K, D) at one time t with cond_emb (G, 1, H)."""
        alpha, sigma = self.schedule.alpha_sigma(t)
        # torch.full: a fill kernel with t as its argument, no host-to-device copy
        out = self.net(x_t, torch.full((), t, dtype=torch.float32, device=x_t.device), cond_emb)
        if self.config.prediction == "v":
            return alpha * x_t - sigma * out
        return (x_t - sigma * out) / alpha

    def loss(
        self, x0: torch.Tensor, features: Any, missing: Any, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Mean squared error of the v (or eps) prediction at t ~ U(0, T), one draw per row,
        the redshift dimension weighted by ``config.z_weight`` (weights normalised to mean 1).

        x0: (N, D) standardised targets (``Standardisation.to_standard``); features (N, F)
        raw with NaN; missing (N, B) (band dropout, if any, already applied:
        ``training.augment.drop_bands``). ``generator`` (on x0's device) draws t and the noise.
        """
        x0 = x0.to(self.device)
        n = x0.shape[0]
        missing = torch.as_tensor(missing, dtype=torch.bool, device=self.device)
        cond_emb = self.net.embed(self.condition_input(features, missing))
        t = torch.rand(n, generator=generator, device=self.device) * self.config.timesteps
        eps = torch.randn(x0.shape, generator=generator, device=self.device)
        abar = self.schedule.alpha_bar(t.double()).float()[:, None].to(self.device)
        alpha, sigma = abar.sqrt(), (1 - abar).sqrt()
        target = alpha * eps - sigma * x0 if self.config.prediction == "v" else eps
        err = (self.net(alpha * x0 + sigma * eps, t, cond_emb) - target) ** 2
        weight = torch.ones(x0.shape[1], device=self.device)
        weight[-1] = self.config.z_weight
        return (err * weight).mean() * (x0.shape[1] / weight.sum())

    def to_physical(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(z (N, K), latent (N, K, S)) from standardised samples x (N, K, D)."""
        return self.standardisation.to_physical(x)

    @classmethod
    def from_state(
        cls, config: DiffusionConfig, standardisation: Standardisation, tensors: dict[str, torch.Tensor]
    ) -> DiffusionModel:
        """Rebuild from the network's state dict (``net.state_dict()``); strict key check."""
        model = cls(config, standardisation)
        model.net.load_state_dict(tensors, strict=True)
        return model
