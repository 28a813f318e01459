"""The SPENDER spectrum autoencoder (Melchior et al. 2023; Liang, Melchior et al. 2023).

An encoder maps an observed, normalised spectrum to a latent vector s (S numbers);
a decoder maps s to a rest-frame spectrum on a fixed grid covering the training
redshift range; the rest-frame model is redshifted and linearly interpolated onto the
observed grid, where an inverse-variance-weighted chi^2 compares it with the data.

Grids: ``wave_obs`` (P,) is the model's observed grid (the instrument grid rebinned by
``config.rebin``); ``wave_rest`` (L,) runs from wave_obs[0] / (1 + z_max) to
wave_obs[-1] / (1 + max(z_min, 0)) of the training set in steps of ``config.rest_step``.

Normalisation (``config.normalisation``, docs/autoencoder.md):

- "amplitude" (every preset): the encoder sees flux / median |flux| of the valid pixels;
  the loss compares the data with A x (redshifted decoder output), A the closed-form
  ivar-weighted best amplitude of each spectrum, so every spectrum at every redshift
  trains. The decoder's output is shifted to unit mean over the rest-frame window
  ``config.norm_window`` (on the rest grid), and decoded spectra (``decode_latents``) are
  divided by their median there: unit median over the window of the *decoded* spectrum.
- "window" (models trained before it; the dataclass default, so their config.json reads
  as before): flux / its median in the rest-frame window ``config.norm_window`` of the
  *observed* spectrum; spectra whose window is not observed fall back and are skipped.
"""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from specdiff_catalog import spectral
from specdiff_catalog.config import from_dict

NORMALISATIONS = ("amplitude", "window")


@dataclass(frozen=True)
class AutoencoderConfig:
    """Architecture, preprocessing and loss of the spectrum autoencoder.

    conv_filters, conv_kernels: the three Conv1d blocks (SPENDER: 128/256/512, 5/11/21);
    pool: max-pool sizes after the first two blocks (SPENDER: the kernel sizes 5, 11).
    encoder_hidden, decoder_hidden: MLP widths (SPENDER: (128, 64, 32), (64, 256, 1024)).
    redshift_input: give z to the encoder's MLP (SPENDER paper I); off as in paper II,
        so the latent has no direct handle on z.
    deredden: divide spectra by the Milky Way transmission at their E(B-V) (needs EBV),
        so the decoder learns intrinsic rest-frame spectra.
    rebin: observed grid = instrument grid rebinned by this factor (ivar-weighted).
    rest_step: rest-frame grid spacing in Angstrom.
    normalisation: "amplitude" (fitted amplitude; decoded spectra have unit median over
        norm_window of the decoded spectrum) or "window" (``spectral.median_norm`` of the
        observed spectrum; the default, which reproduces models written before "amplitude").
    norm_window, norm_min_pixels: the rest-frame window of both conventions; the minimum
        valid pixels of "window" (``spectral.median_norm``).
    consistency: add SPENDER-II's redshift-augmentation consistency loss with weight
        consistency_weight and tolerance consistency_tol (in units of the batch's
        per-dimension latent standard deviation; ours, so shrinking the latent scale
        cannot satisfy it).
    """

    latent_size: int = 10
    conv_filters: tuple[int, int, int] = (128, 256, 512)
    conv_kernels: tuple[int, int, int] = (5, 11, 21)
    pool: tuple[int, int] = (5, 11)
    encoder_hidden: tuple[int, ...] = (128, 64, 32)
    decoder_hidden: tuple[int, ...] = (64, 256, 1024)
    redshift_input: bool = False
    deredden: bool = False
    rebin: int = 1
    rest_step: float = 0.8
    normalisation: str = "window"
    norm_window: tuple[float, float] = spectral.NORM_WINDOW
    norm_min_pixels: int = 10
    consistency: bool = False
    consistency_weight: float = 0.02
    consistency_tol: float = 0.3

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "autoencoder config") -> AutoencoderConfig:
        """Build from a preset/config dict; lists become tuples, unknown keys are refused."""
        data = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        config = from_dict(cls, data, source=source)
        if config.conv_filters[-1] % 2:
            raise ValueError(
                f"{source}: the last conv_filters entry must be even (half values, half weights)"
            )
        if config.normalisation not in NORMALISATIONS:
            raise ValueError(
                f"{source}: normalisation {config.normalisation!r} is not one of {NORMALISATIONS}"
            )
        return config

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def rest_grid(wave_obs: np.ndarray, z_min: float, z_max: float, step: float) -> np.ndarray:
    """(L,) rest-frame grid covering every observed pixel of every redshift in [z_min, z_max]."""
    lo = float(wave_obs[0]) / (1.0 + z_max)
    hi = float(wave_obs[-1]) / (1.0 + max(z_min, 0.0))
    return np.linspace(lo, hi, int(np.ceil((hi - lo) / step)) + 1)


def interp_linear(
    x_src: torch.Tensor, y_src: torch.Tensor, x_new: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Batched linear interpolation, differentiable in y_src (and x_new).

    x_src: (L,) or (N, L) increasing; y_src: (N, L); x_new: (N, P).
    Returns y (N, P), 0 outside [x_src first, x_src last], and inside (N, P) bool.
    """
    n_src = x_src.shape[-1]
    x_src = x_src.contiguous()
    idx = torch.searchsorted(x_src, x_new.contiguous()).clamp(1, n_src - 1)
    if x_src.dim() == 1:
        x0, x1 = x_src[idx - 1], x_src[idx]
        lo, hi = x_src[0], x_src[-1]
    else:
        x0, x1 = x_src.gather(1, idx - 1), x_src.gather(1, idx)
        lo, hi = x_src[:, :1], x_src[:, -1:]
    t = (x_new - x0) / (x1 - x0)
    y0, y1 = y_src.gather(1, idx - 1), y_src.gather(1, idx)
    inside = (x_new >= lo) & (x_new <= hi)
    y = torch.where(inside, y0 + t * (y1 - y0), torch.zeros((), dtype=y_src.dtype, device=y_src.device))
    return y, inside


def redshift_resample(
    wave_rest: torch.Tensor, flux_rest: torch.Tensor, z: torch.Tensor, wave_obs: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Redshift rest-frame spectra and sample them on an observed grid.

    wave_rest: (L,) Angstrom; flux_rest: (N, L); z: (N,); wave_obs: (P,) Angstrom.
    Observed pixel lambda takes the linear interpolant of flux_rest at lambda / (1 + z)
    (lambda_obs = (1 + z) lambda_rest; flux normalisation is left to the caller).
    Returns flux (N, P), 0 where lambda / (1 + z) is outside wave_rest, and inside (N, P).
    """
    x_new = wave_obs.to(flux_rest.dtype)[None, :] / (1.0 + z.to(flux_rest.dtype)[:, None])
    return interp_linear(wave_rest.to(flux_rest.dtype), flux_rest, x_new)


def shift_redshift(
    wave_obs: torch.Tensor, flux: torch.Tensor, valid: torch.Tensor, z: torch.Tensor, z_new: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Move observed spectra (N, P) on wave_obs (P,) from redshift z (N,) to z_new (N,).

    The augmentation of SPENDER paper II: the new spectrum at lambda is the old one at
    lambda (1 + z) / (1 + z_new). A new pixel is valid where both old neighbours were.
    Returns flux (N, P) and valid (N, P) bool.
    """
    x_new = wave_obs[None, :] * ((1.0 + z) / (1.0 + z_new))[:, None]
    both = torch.stack([flux, valid.to(flux.dtype)])
    shifted, inside = interp_linear(wave_obs, both.reshape(-1, flux.shape[1]), x_new.repeat(2, 1))
    new_flux, new_valid = shifted.reshape(2, *flux.shape)
    new_valid = (new_valid > 1 - 1e-4) & inside[: flux.shape[0]]
    return torch.where(new_valid, new_flux, torch.zeros_like(new_flux)), new_valid


def _mlp(n_in: int, hidden: tuple[int, ...], n_out: int) -> nn.Sequential:
    """Linear + LeakyReLU layers, linear output."""
    sizes = [n_in, *hidden]
    layers: list[nn.Module] = []
    for a, b in itertools.pairwise(sizes):
        layers += [nn.Linear(a, b), nn.LeakyReLU()]
    return nn.Sequential(*layers, nn.Linear(sizes[-1], n_out))


class SpectrumEncoder(nn.Module):
    """Conv1d blocks + attention pooling over wavelength + MLP: (N, P) spectra -> (N, S) latents."""

    def __init__(self, config: AutoencoderConfig):
        super().__init__()
        channels = [1, *config.conv_filters]
        self.blocks = nn.ModuleList(
            nn.Sequential(
                nn.Conv1d(c_in, c_out, k, padding=k // 2), nn.InstanceNorm1d(c_out), nn.PReLU(c_out)
            )
            for c_in, c_out, k in zip(channels[:-1], channels[1:], config.conv_kernels, strict=True)
        )
        self.pools = nn.ModuleList(nn.MaxPool1d(p, padding=p // 2) for p in config.pool)
        n_aux = 1 if config.redshift_input else 0
        self.redshift_input = config.redshift_input
        self.mlp = _mlp(config.conv_filters[-1] // 2 + n_aux, config.encoder_hidden, config.latent_size)

    def forward(self, flux: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        """flux: (N, P) normalised, 0 at masked pixels; z: (N,) used only with redshift_input."""
        x = flux.unsqueeze(1)
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i < len(self.pools):
                x = self.pools[i](x)
        values, logits = x.chunk(2, dim=1)
        pooled = (values * torch.softmax(logits, dim=-1)).sum(dim=-1)
        if self.redshift_input:
            if z is None:
                raise ValueError("this encoder takes the redshift as an input (redshift_input = true)")
            pooled = torch.cat([pooled, z[:, None].to(pooled.dtype)], dim=1)
        return self.mlp(pooled)


@dataclass
class PreparedSpectra:
    """Spectra on the model's observed grid, normalised.

    flux, ivar: (N, P) float32 (flux / norm, ivar * norm^2; ivar 0 where masked);
    z: (N,) float32; norm: (N,) float32 in the input flux unit (de-reddened when the model
    de-reddens); flags: (N,) uint8 ``spectral.SpectrumFlag``.
    """

    flux: np.ndarray
    ivar: np.ndarray
    z: np.ndarray
    norm: np.ndarray
    flags: np.ndarray


@dataclass
class EncodedSpectra:
    """latent: (N, S) float32 (NaN for UNUSABLE spectra); norm: (N,); flags: (N,) uint8 SpectrumFlag."""

    latent: np.ndarray
    norm: np.ndarray
    flags: np.ndarray


class SpectrumAutoencoder(nn.Module):
    """SPENDER autoencoder with its grids (buffers, saved with the weights).

    wave_obs: (P,) model observed grid, Angstrom; wave_rest: (L,) rest grid, Angstrom;
    z_range: (2,) training redshift range (the consistency loss draws new redshifts in it).
    """

    wave_obs: torch.Tensor  # buffers, saved with the weights
    wave_rest: torch.Tensor
    z_range: torch.Tensor

    def __init__(
        self,
        config: AutoencoderConfig,
        wave_obs: np.ndarray,
        wave_rest: np.ndarray,
        z_range: tuple[float, float],
    ):
        super().__init__()
        self.config = config
        self.encoder = SpectrumEncoder(config)
        self.decoder = _mlp(config.latent_size, config.decoder_hidden, len(wave_rest))
        self.register_buffer("wave_obs", torch.as_tensor(np.asarray(wave_obs), dtype=torch.float32))
        self.register_buffer("wave_rest", torch.as_tensor(np.asarray(wave_rest), dtype=torch.float32))
        self.register_buffer("z_range", torch.as_tensor(z_range, dtype=torch.float32))

    @classmethod
    def from_state(cls, config: AutoencoderConfig, tensors: dict[str, torch.Tensor]) -> SpectrumAutoencoder:
        """Rebuild from saved tensors (the grids come from the buffers); strict key check."""
        model = cls(
            config,
            tensors["wave_obs"].numpy(),
            tensors["wave_rest"].numpy(),
            tuple(tensors["z_range"].tolist()),
        )
        model.load_state_dict(tensors, strict=True)
        return model

    @property
    def n_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # --- tensors in, tensors out (training) ---------------------------------------------
    def encode(self, flux: torch.Tensor, ivar: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """(N, S) latents of normalised spectra flux, ivar (N, P) on wave_obs at redshifts z (N,)."""
        return self.encoder(torch.where(ivar > 0, flux, torch.zeros_like(flux)), z)

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """(N, L) rest-frame spectra on wave_rest: in units of the observed window median
        ("window"), or shifted to unit mean over ``config.norm_window`` ("amplitude": the loss
        fits the amplitude, so the decoder's overall level would be free; fixing the window
        mean additively is exact, differentiable and never divides by a small number)."""
        rest = self.decoder(latent)
        if self.fits_amplitude:
            rest = rest - self.window_mean(rest)[:, None].to(rest.dtype) + 1.0
        return rest

    def observe(self, rest: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Rest-frame spectra (N, L) -> observed model (N, P) on wave_obs (float32) and inside (N, P)."""
        return redshift_resample(self.wave_rest, rest.float(), z.float(), self.wave_obs)

    def window_mean(self, rest: torch.Tensor) -> torch.Tensor:
        """(N,) mean of rest-frame spectra (N, L) over the rest pixels in ``config.norm_window``."""
        lo, hi = self.config.norm_window
        inside = (self.wave_rest >= lo) & (self.wave_rest <= hi)
        return rest.float()[:, inside].mean(dim=1)

    @property
    def fits_amplitude(self) -> bool:
        """True for the "amplitude" normalisation (the loss fits each spectrum's amplitude)."""
        return self.config.normalisation == "amplitude"

    def forward(self, flux: torch.Tensor, ivar: torch.Tensor, z: torch.Tensor):
        """Latents (N, S), rest-frame (N, L) and observed-frame model (N, P) with its inside mask.

        "amplitude" models: the observed model is scaled by each spectrum's best amplitude
        (``fit_amplitude``, detached: d chi^2 / dA = 0 there, so no gradient changes).
        """
        latent = self.encode(flux, ivar, z)
        rest = self.decode(latent)
        model, inside = self.observe(rest, z)
        if self.fits_amplitude:
            model = model * fit_amplitude(flux, ivar, model, inside).detach()[:, None]
        return latent, rest, model, inside

    # --- numpy in, numpy out (notebooks, evaluation) --------------------------------------
    def prepare(
        self,
        wave: np.ndarray,
        flux: np.ndarray,
        ivar: np.ndarray,
        z: np.ndarray,
        ebv: np.ndarray | None = None,
    ) -> PreparedSpectra:
        """Instrument-grid spectra -> the model's grid, normalised (what ``encode`` expects).

        wave: (P_instr,) Angstrom, the instrument grid the model was trained on (for DESI
        the 7781-pixel merged grid); flux, ivar: (N, P_instr); z: (N,); ebv: (N,) SFD
        E(B-V), required when the model de-reddens (``config.deredden``).
        """
        return prepare_spectra(self.config, self.wave_obs.cpu().numpy(), wave, flux, ivar, z, ebv)

    @torch.no_grad()
    def encode_spectra(
        self,
        wave: np.ndarray,
        flux: np.ndarray,
        ivar: np.ndarray,
        z: np.ndarray,
        ebv: np.ndarray | None = None,
        batch_size: int = 1024,
    ) -> EncodedSpectra:
        """Latents of instrument-grid spectra: wave (P_instr,) A, flux/ivar (N, P_instr), z, ebv (N,)."""
        prepared = self.prepare(wave, flux, ivar, z, ebv)
        device = self.wave_obs.device
        self.eval()
        latent = np.concatenate(
            [
                self.encode(
                    *(
                        torch.as_tensor(a[i : i + batch_size], device=device)
                        for a in (prepared.flux, prepared.ivar, prepared.z)
                    )
                )
                .float()
                .cpu()
                .numpy()
                for i in range(0, len(prepared.z), batch_size)
            ]
            or [np.zeros((0, self.config.latent_size), np.float32)]
        )
        unusable = (prepared.flags & spectral.SpectrumFlag.UNUSABLE) > 0
        latent[unusable] = np.nan
        norm = prepared.norm
        if self.fits_amplitude:  # the flux of the unit-median decoded spectrum that fits the data
            norm = norm * self._fitted_amplitude(prepared, latent, batch_size)
            norm[unusable] = np.nan
        return EncodedSpectra(latent=latent, norm=norm.astype(np.float32), flags=prepared.flags)

    def _fitted_amplitude(self, prepared: PreparedSpectra, latent: np.ndarray, batch_size: int) -> np.ndarray:
        """(N,) best amplitude of each decoded, unit-median spectrum against its prepared data."""
        device = self.wave_obs.device
        rest = self.decode_latents(np.nan_to_num(latent), batch_size)
        out = []
        for i in range(0, len(latent), batch_size):
            flux, ivar, z, r = (
                torch.as_tensor(a[i : i + batch_size], device=device)
                for a in (prepared.flux, prepared.ivar, prepared.z, rest)
            )
            model, inside = self.observe(r, z)
            out.append(fit_amplitude(flux, ivar, model, inside).cpu().numpy())
        return np.concatenate(out) if out else np.zeros(0, np.float32)

    @torch.no_grad()
    def decode_latents(self, latent: np.ndarray, batch_size: int = 4096) -> np.ndarray:
        """(N, L) float32 rest-frame F_lambda on ``wave_rest`` of latents (N, S), normalised: unit
        median over ``config.norm_window`` of the decoded spectrum ("amplitude" models), or as the
        decoder gives it, in units of the observed window median ("window" models)."""
        device = self.wave_obs.device
        self.eval()
        latent = np.asarray(latent, dtype=np.float32)
        rest = np.concatenate(
            [
                self.decode(torch.as_tensor(latent[i : i + batch_size], device=device)).float().cpu().numpy()
                for i in range(0, len(latent), batch_size)
            ]
            or [np.zeros((0, len(self.wave_rest)), np.float32)]
        )
        if self.fits_amplitude:  # no positive median in the window: no normalisation, NaN
            median = spectral.window_median(self.rest_wave(), rest, self.config.norm_window)
            rest /= np.where(median > 0, median, np.nan).astype(np.float32)[:, None]
        return rest

    def rest_wave(self) -> np.ndarray:
        """(L,) rest-frame grid of decoded spectra, Angstrom."""
        return self.wave_rest.cpu().numpy().astype(np.float64)


def redshift_spectra(
    wave_rest: np.ndarray, flux_rest: np.ndarray, z: np.ndarray, wave_obs: np.ndarray
) -> np.ndarray:
    """Rest-frame spectra (N, L) on wave_rest (L,) -> (N, P) on any observed grid wave_obs (P,).

    Linear interpolation at wave_obs / (1 + z); NaN where that falls outside wave_rest.
    Shape-only: multiply by a normalisation to restore physical flux.
    """
    flux_rest = np.atleast_2d(np.asarray(flux_rest, dtype=np.float64))
    z = np.broadcast_to(np.asarray(z, dtype=np.float64), (flux_rest.shape[0],)).copy()
    out, inside = redshift_resample(
        torch.as_tensor(np.asarray(wave_rest, dtype=np.float64)),
        torch.as_tensor(flux_rest),
        torch.as_tensor(z),
        torch.as_tensor(np.asarray(wave_obs, dtype=np.float64)),
    )
    return np.where(inside.numpy(), out.numpy(), np.nan)


def prepare_spectra(
    config: AutoencoderConfig,
    model_wave: np.ndarray | None,
    wave: np.ndarray,
    flux: np.ndarray,
    ivar: np.ndarray,
    z: np.ndarray,
    ebv: np.ndarray | None = None,
) -> PreparedSpectra:
    """Clean, rebin by config.rebin, de-redden (config.deredden) and normalise spectra (N, P_instr).

    model_wave: the model's (P,) grid to check the rebinned grid against (None: no check).
    ebv: (N,) SFD E(B-V), required with config.deredden.
    """
    wave_b, flux_b, ivar_b = spectral.rebin(wave, flux, ivar, config.rebin)
    flags = np.zeros(len(flux_b), dtype=np.uint8)
    if config.deredden:
        if ebv is None:
            raise ValueError(
                "this autoencoder de-reddens spectra (deredden = true): E(B-V) per spectrum is needed"
            )
        flux_b, ivar_b, flags = spectral.deredden(wave_b, flux_b, ivar_b, ebv)
    if model_wave is not None and (
        wave_b.shape != model_wave.shape or not np.allclose(wave_b, model_wave, atol=0.01)
    ):
        raise ValueError(
            f"spectra on a {len(wave)}-pixel grid {wave[0]:.1f}-{wave[-1]:.1f} A do not match the model's "
            f"instrument grid ({len(model_wave)} pixels {model_wave[0]:.1f}-{model_wave[-1]:.1f} A after "
            f"rebinning by {config.rebin})"
        )
    z = np.asarray(z, dtype=np.float32)
    if config.normalisation == "amplitude":
        norm = spectral.scale_norm(flux_b, ivar_b)
    else:
        norm = spectral.median_norm(wave_b, flux_b, ivar_b, z, config.norm_window, config.norm_min_pixels)
    flux_n, ivar_n = spectral.normalise(flux_b, ivar_b, norm.norm)
    return PreparedSpectra(flux=flux_n, ivar=ivar_n, z=z, norm=norm.norm, flags=norm.flags | flags)


def chi2(data: torch.Tensor, ivar: torch.Tensor, model: torch.Tensor, inside: torch.Tensor):
    """Per-spectrum chi^2 (N,) = sum ivar (data - model)^2 over valid pixels, and their count (N,).

    Valid: ivar > 0 and the pixel inside the redshifted rest grid. float32 throughout.
    """
    weight = torch.where(inside, ivar.float(), torch.zeros((), device=ivar.device))
    return (weight * (data.float() - model.float()) ** 2).sum(dim=1), (weight > 0).sum(dim=1)


def fit_amplitude(
    data: torch.Tensor, ivar: torch.Tensor, model: torch.Tensor, inside: torch.Tensor
) -> torch.Tensor:
    """(N,) the amplitude A minimising sum ivar (data - A model)^2 over valid pixels, in closed
    form: A = sum(w data model) / sum(w model^2), w = ivar where inside (0 where the sum is 0)."""
    weight = torch.where(inside, ivar.float(), torch.zeros((), device=ivar.device))
    num = (weight * data.float() * model.float()).sum(dim=1)
    den = (weight * model.float() ** 2).sum(dim=1)
    return torch.where(den > 0, num / den.clamp_min(torch.finfo(den.dtype).tiny), torch.zeros_like(den))


def consistency_loss(latent: torch.Tensor, latent_aug: torch.Tensor, tol: float) -> torch.Tensor:
    """(N,) SPENDER-II consistency penalty sigmoid(d^2 / tol^2) - 0.5, in [0, 0.5).

    d^2: squared latent shift per dimension in units of the batch's latent variance
    (detached), averaged over dimensions: 0 when augmentation leaves the latent unchanged.
    """
    scale = latent.detach().float().var(dim=0, unbiased=False).clamp_min(1e-8)
    d2 = ((latent_aug.float() - latent.float()) ** 2 / scale).mean(dim=1)
    return torch.sigmoid(d2 / tol**2) - 0.5
