"""The posterior-predictive check of the photometry (docs/coverage.md, "Posterior-predictive check").

Do the model's own draws of [latent, z], decoded into spectra and observed through the
band set's filters, reproduce the fluxes the draws were conditioned on? For each object
the first ``draws`` samples are decoded (rest frame), redshifted to their z, and the bands
whose filter support lies inside the redshifted rest grid (``synphot``) are synthesised.
Each draw m gives chi^2_m of the de-reddened catalog fluxes against its predicted ones
with a free amplitude (the latent carries the spectrum's shape, not its brightness) and
a fractional floor; with n bands usable in every draw, dof = n - 1.

If the model is right, one posterior draw is distributed, jointly with the data, like the
galaxy's true spectrum (a draw from p(s, z | fluxes) given fluxes drawn from p(fluxes)),
so each chi^2_m follows the chi^2 distribution with dof degrees of freedom. A trained
model's draws reproduce some bands less well than the IVAR says: the floor is per band,
calibrated on the model's validation objects (``calibrate_floors``, run by ``train
coverage``) and kept in the coverage section of config.json. The stored
``ppc_pvalue`` is the posterior-predictive p-value (Gelman, Meng & Stern 1996) computed
analytically: the mean over draws of P(chi^2_dof > chi^2_m); ``ppc_chi2`` is the mean
chi^2_m. PHOTOMETRY_NOT_REPRODUCED: p-value < ``defaults.PPC_PVALUE``.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
from scipy import stats

from specdiff_catalog import defaults
from specdiff_catalog.bands import BandSet
from specdiff_catalog.features import Photometry
from specdiff_catalog.models import SpecdiffModel
from specdiff_catalog.models.autoencoder import SpectrumAutoencoder, redshift_resample
from specdiff_catalog.synphot import SyntheticPhotometry, best_amplitude_chi2

SPECTRA_CHUNK = 4096  # decoded spectra per block: 4096 x ~4,000 rest pixels x 4 bytes = 66 MB
Z_STEP = 0.002  # the redshift grid of the flux tables
Z_MARGIN = 0.5  # the grid reaches this far beyond the training range; draws beyond it are computed exactly


@dataclass
class CheckResult:
    """chi2: (N,) mean chi^2 over the draws; dof: (N,) int8 degrees of freedom (0: not checked,
    fewer than two usable bands); pvalue: (N,) posterior-predictive p-value (NaN unchecked);
    chi2_draws: (N, M) the chi^2 of each draw (each follows chi^2_dof if the model is right)."""

    chi2: np.ndarray
    dof: np.ndarray
    pvalue: np.ndarray
    chi2_draws: np.ndarray


def coverable_bands(autoencoder: SpectrumAutoencoder, synth: SyntheticPhotometry) -> np.ndarray:
    """(B,) bool: bands whose support fits inside the redshifted rest grid at some z in the
    autoencoder's training range (W1 and W2 never do: 2.8-5.3 um is beyond 9824 A x (1 + 1.6))."""
    rest = autoencoder.rest_wave()
    z_lo, z_hi = autoencoder.z_range.tolist()
    lo, hi = synth.support[:, 0], synth.support[:, 1]
    return np.maximum(z_lo, hi / rest[-1] - 1) <= np.minimum(z_hi, lo / rest[0] - 1)


@dataclass
class FluxTables:
    """Band fluxes of decoded spectra as affine functions of the decoder's last hidden layer,
    tabulated on a redshift grid (``Z_STEP``).

    The decoder's last layer is affine (W h + b, and the "amplitude" models' shift to unit
    window mean is affine too), redshifting and linear resampling are linear in the rest
    spectrum and so is synthetic photometry: the flux of band b at z is gain(z)_b . h +
    offset(z)_b. Between grid nodes it is interpolated linearly in z (the fluxes vary on the
    scale of a filter edge, ~0.02 in z; measured against the exact path: 1e-3 relative, see
    tests/test_ppc.py). A draw then costs the decoder's hidden layers and B dot products,
    instead of a full rest spectrum resampled onto every filter grid (~20x less).

    gain: (Z, B, H) float32; offset: (Z, B); covered: (Z, B) bool (the band's whole support
    inside the redshifted rest grid at that node).
    """

    z_step: float
    gain: torch.Tensor
    offset: torch.Tensor
    covered: torch.Tensor

    @classmethod
    def build(
        cls,
        autoencoder: SpectrumAutoencoder,
        synth: SyntheticPhotometry,
        z_max: float,
        z_step: float = Z_STEP,
    ) -> FluxTables:
        last = autoencoder.decoder[-1]
        if not isinstance(last, torch.nn.Linear):
            raise TypeError("the decoder's last layer must be nn.Linear")
        weight = last.weight.detach().double().cpu().numpy()  # (L, H)
        bias = last.bias.detach().double().cpu().numpy()  # (L,)
        rest = autoencoder.rest_wave()
        if autoencoder.fits_amplitude:  # decode() shifts to unit mean over the window: affine as well
            lo, hi = autoencoder.config.norm_window
            window = (rest >= lo) & (rest <= hi)
            weight = weight - weight[window].mean(axis=0)
            bias = bias - bias[window].mean() + 1.0
        z = np.arange(0.0, z_max + 2 * z_step, z_step)
        n_bands, n_rest = synth.weights.shape[1], len(rest)
        gain = np.empty((len(z), n_bands, weight.shape[1]), np.float32)
        offset = np.empty((len(z), n_bands))
        covered = np.empty((len(z), n_bands), bool)
        for start in range(0, len(z), 64):  # 64 nodes x B x L kernels at a time
            zz = z[start : start + 64]
            x = synth.wave[None, :] / (1.0 + zz[:, None])  # (z, P) rest wavelengths
            idx = np.clip(np.searchsorted(rest, x), 1, n_rest - 1)
            t = (x - rest[idx - 1]) / (rest[idx] - rest[idx - 1])
            inside = (x >= rest[0]) & (x <= rest[-1])
            kernel = np.zeros((len(zz), n_bands, n_rest))
            node = np.arange(len(zz))[:, None]
            for b in range(n_bands):
                w = np.where(inside, synth.weights[:, b][None, :], 0.0)
                np.add.at(kernel[:, b], (np.broadcast_to(node, idx.shape), idx - 1), w * (1 - t))
                np.add.at(kernel[:, b], (np.broadcast_to(node, idx.shape), idx), w * t)
                covered[start : start + len(zz), b] = inside[:, synth.band_of == b].all(axis=1)
            gain[start : start + len(zz)] = kernel @ weight
            offset[start : start + len(zz)] = kernel @ bias
        device = autoencoder.wave_rest.device
        return cls(
            z_step=z_step,
            gain=torch.as_tensor(gain, device=device),
            offset=torch.as_tensor(offset, dtype=torch.float32, device=device),
            covered=torch.as_tensor(covered, device=device),
        )

    def fluxes(
        self, hidden: torch.Tensor, z: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Band fluxes (n, B) and covered (n, B) of hidden layers (n, H) at z (n,); and (n,) bool,
        the draws on the grid (the others are garbage here: compute them exactly)."""
        u = z.double() / self.z_step
        node = torch.floor(u).long()
        on_grid = (u >= 0) & (node + 1 < len(self.gain))
        node = node.clamp(0, len(self.gain) - 2)
        t = (u - node).float()[:, None]
        h = hidden.float()
        flux = (1 - t) * (torch.einsum("nbh,nh->nb", self.gain[node], h) + self.offset[node]) + t * (
            torch.einsum("nbh,nh->nb", self.gain[node + 1], h) + self.offset[node + 1]
        )
        return flux, self.covered[node] & self.covered[node + 1], on_grid


_TABLES: weakref.WeakKeyDictionary[SpectrumAutoencoder, dict[tuple, FluxTables]] = weakref.WeakKeyDictionary()


def _tables(autoencoder: SpectrumAutoencoder, synth: SyntheticPhotometry) -> FluxTables:
    """The flux tables of a loaded autoencoder and band set, built once per process (seconds)
    and kept while the autoencoder lives (the tables hold arrays only, not the model)."""
    key = (synth.names, float(synth.wave[0]), float(synth.wave[-1]), len(synth.wave))
    per_model = _TABLES.setdefault(autoencoder, {})
    if key not in per_model:
        per_model[key] = FluxTables.build(autoencoder, synth, float(autoencoder.z_range[1]) + Z_MARGIN)
    return per_model[key]


class PhotometryCheck:
    """The check for one model: its decoder and the band set's synthetic photometry.

    bands: the indices (into the band set) of the coverable bands; the others never count.
    floor: the fractional flux floor, one number or per band name (bands without one get
    ``defaults.PPC_FLUX_FLOOR``); ``floors``: (B',) the floor of each checked band.
    """

    def __init__(
        self,
        autoencoder: SpectrumAutoencoder,
        bandset: BandSet,
        draws: int = defaults.PPC_DRAWS,
        floor: float | Mapping[str, float] = defaults.PPC_FLUX_FLOOR,
    ) -> None:
        self.autoencoder, self.draws = autoencoder, draws
        every = SyntheticPhotometry.from_bandset(bandset, autoencoder.config.rest_step)
        self.bands = np.flatnonzero(coverable_bands(autoencoder, every))
        self.synth = SyntheticPhotometry.from_bandset(bandset, autoencoder.config.rest_step, list(self.bands))
        per_band = floor if isinstance(floor, Mapping) else dict.fromkeys(self.synth.names, floor)
        self.floors = np.array([per_band.get(name, defaults.PPC_FLUX_FLOOR) for name in self.synth.names])
        device = autoencoder.wave_rest.device
        self._wave = torch.as_tensor(self.synth.wave, dtype=torch.float32, device=device)
        self._weights = torch.as_tensor(self.synth.weights, dtype=torch.float32, device=device)
        self._band_of = torch.as_tensor(self.synth.band_of, device=device)

    @classmethod
    def of(cls, model: SpecdiffModel) -> PhotometryCheck:
        """The check of a loaded model with an autoencoder and a band set: its calibrated floors
        (config.json's coverage section) where it has them."""
        if model.autoencoder is None or model.bands is None:
            raise ValueError(f"{model.path}: the photometry check needs an autoencoder and a band set")
        coverage = model.config.coverage
        floors = coverage.ppc_floors if coverage is not None else {}
        return cls(model.autoencoder, model.bands, floor=floors)

    def predicted(self, z: np.ndarray, latent: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Band fluxes (n, B') of the decoded spectra of latents (n, S) at redshifts z (n,), and
        (n, B') bool: the band's whole support inside the redshifted rest grid. From the flux
        tables (``FluxTables``); draws beyond their redshift grid exactly (``exact``)."""
        tables = _tables(self.autoencoder, self.synth)
        fluxes, covered = np.zeros((len(z), len(self.bands))), np.zeros((len(z), len(self.bands)), bool)
        device = self._wave.device
        hidden_layers = self.autoencoder.decoder[:-1]
        with torch.inference_mode():
            for lo in range(0, len(z), SPECTRA_CHUNK):
                s = torch.as_tensor(latent[lo : lo + SPECTRA_CHUNK], dtype=torch.float32, device=device)
                zz = torch.as_tensor(z[lo : lo + SPECTRA_CHUNK], device=device)
                flux, inside, on_grid = tables.fluxes(hidden_layers(s), zz)
                fluxes[lo : lo + len(zz)] = flux.double().cpu().numpy()
                covered[lo : lo + len(zz)] = inside.cpu().numpy()
                off = lo + np.flatnonzero(~on_grid.cpu().numpy())
                if off.size:
                    fluxes[off], covered[off] = self.exact(z[off], latent[off])
        return fluxes, covered

    def exact(self, z: np.ndarray, latent: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``predicted`` without the tables: each rest spectrum decoded, redshifted and resampled
        onto the filter grids (the reference the tables are tested against)."""
        n_bands = len(self.bands)
        fluxes, covered = np.zeros((len(z), n_bands)), np.zeros((len(z), n_bands), bool)
        device = self._wave.device
        with torch.inference_mode():
            for lo in range(0, len(z), SPECTRA_CHUNK):
                s = torch.as_tensor(latent[lo : lo + SPECTRA_CHUNK], dtype=torch.float32, device=device)
                zz = torch.as_tensor(z[lo : lo + SPECTRA_CHUNK], dtype=torch.float32, device=device)
                rest = self.autoencoder.decode(s).float()
                flux, inside = redshift_resample(self.autoencoder.wave_rest, rest, zz, self._wave)
                outside = torch.zeros(len(zz), n_bands, device=device).index_add_(
                    1, self._band_of, (~inside).float()
                )
                fluxes[lo : lo + len(zz)] = (flux @ self._weights).double().cpu().numpy()
                covered[lo : lo + len(zz)] = (outside == 0).cpu().numpy()
        return fluxes, covered

    def __call__(
        self, photometry: Photometry, z_samples: np.ndarray, latent_samples: np.ndarray
    ) -> CheckResult:
        """The check of N objects: their de-reddened photometry (``features.deredden``),
        z_samples (N, K) and latent_samples (N, K, S) (NaN rows: not checked)."""
        n, k = z_samples.shape
        m = min(self.draws, k)
        z = z_samples[:, :m].reshape(-1)
        latent = latent_samples[:, :m].reshape(n * m, -1)
        ok = np.isfinite(z) & np.isfinite(latent).all(axis=1)
        predicted = np.full((n * m, len(self.bands)), np.nan)
        covered = np.zeros((n * m, len(self.bands)), bool)
        if ok.any():
            predicted[ok], covered[ok] = self.predicted(z[ok], latent[ok])
        predicted, covered = predicted.reshape(n, m, -1), covered.reshape(n, m, -1)
        flux = photometry.flux[:, self.bands]
        used = (
            ~photometry.missing[:, self.bands] & covered.all(axis=1) & ok.reshape(n, m).all(axis=1)[:, None]
        )
        dof = used.sum(axis=1) - 1
        ivar = np.where(used, photometry.ivar[:, self.bands], 0.0)
        chi2, _ = best_amplitude_chi2(
            flux[:, None, :], ivar[:, None, :], np.nan_to_num(predicted), self.floors
        )
        checked = dof >= 1
        with np.errstate(invalid="ignore"):
            pvalue = stats.chi2.sf(chi2, np.maximum(dof, 1)[:, None]).mean(axis=1)
        return CheckResult(
            chi2=np.where(checked, chi2.mean(axis=1), np.nan).astype(np.float32),
            dof=np.where(checked, dof, 0).astype(np.int8),
            pvalue=np.where(checked, pvalue, np.nan).astype(np.float32),
            chi2_draws=np.where(checked[:, None], chi2, np.nan).astype(np.float32),
        )


CHI2_1_MEDIAN = float(stats.chi2(1).median())
MIN_CALIBRATION_OBJECTS = 100


def calibrate_floors(
    check: PhotometryCheck,
    photometry: Photometry,
    z_samples: np.ndarray,
    latent_samples: np.ndarray,
    iterations: int = 10,
) -> dict[str, float]:
    """Per checked band, the fractional flux floor that makes the check's chi^2 honest on
    objects the model should reproduce (its validation split): the floor s_b at which the
    draws' normalised residuals w_b r_b^2 / (1 - h_b) in band b have the median of chi^2_1
    (r_b = f_b - A p_b at the best amplitude A, w_b = 1 / (1/ivar_b + (s_b A p_b)^2), h_b the
    band's leverage on A), 0 where the IVAR alone already gives it. A median, so a few
    catastrophic draws do not set it; the amplitude is refitted ``iterations`` times (an error
    in one band leaks into the others through the shared amplitude until it is down-weighted:
    tests/test_ppc.py measures what is left).

    photometry: the N objects' de-reddened photometry (``features.deredden``); z_samples
    (N, K), latent_samples (N, K, S): their posterior draws (the first ``check.draws`` used).
    Only objects with every checked band measured and covered in every draw count; with
    fewer than ``MIN_CALIBRATION_OBJECTS`` of them (or one checked band) it returns {}.
    """
    n, k = z_samples.shape
    m = min(check.draws, k)
    flux, ivar = photometry.flux[:, check.bands], photometry.ivar[:, check.bands]
    z, latent = z_samples[:, :m].reshape(-1), latent_samples[:, :m].reshape(n * m, -1)
    finite = (np.isfinite(z) & np.isfinite(latent).all(axis=1)).reshape(n, m).all(axis=1)
    rows = np.flatnonzero(finite & (~photometry.missing[:, check.bands] & (ivar > 0)).all(axis=1))
    if len(rows) < MIN_CALIBRATION_OBJECTS or len(check.bands) < 2:
        return {}
    take = (rows[:, None] * m + np.arange(m)).reshape(-1)
    predicted, covered = check.predicted(z[take], latent[take])
    predicted, covered = predicted.reshape(len(rows), m, -1), covered.reshape(len(rows), m, -1)
    keep = covered.all(axis=(1, 2))
    if keep.sum() < MIN_CALIBRATION_OBJECTS:
        return {}
    p, f, iv = predicted[keep], flux[rows[keep]][:, None, :], ivar[rows[keep]][:, None, :]
    floors = np.full(len(check.bands), defaults.PPC_FLUX_FLOOR)  # not the check's own: reproducible
    for _ in range(iterations):
        _, amplitude = best_amplitude_chi2(f, iv, p, floors)
        model = amplitude[..., None] * p
        residual2 = (f - model) ** 2
        for b in range(len(floors)):
            floors[b] = _band_floor(b, floors, iv, model, residual2)
    return {name: float(v) for name, v in zip(check.synth.names, floors, strict=True)}


def _band_floor(
    b: int, floors: np.ndarray, ivar: np.ndarray, model: np.ndarray, residual2: np.ndarray
) -> float:
    """The floor of band b (the others held) at which median(w_b r_b^2 / (1 - h_b)) is
    chi^2_1's median, by bisection on [0, 1] (the statistic falls as the floor grows)."""

    def statistic(s: float) -> float:
        trial = floors.copy()
        trial[b] = s
        weight = 1.0 / (1.0 / ivar + (trial * model) ** 2)
        leverage = weight[..., b] * model[..., b] ** 2 / (weight * model**2).sum(axis=-1)
        return float(np.median(weight[..., b] * residual2[..., b] / np.maximum(1.0 - leverage, 1e-6)))

    if statistic(0.0) <= CHI2_1_MEDIAN:
        return 0.0
    lo, hi = 0.0, 1.0
    for _ in range(40):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if statistic(mid) > CHI2_1_MEDIAN else (lo, mid)
    return 0.5 * (lo + hi)
