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
so each chi^2_m follows the chi^2 distribution with dof degrees of freedom. The stored
``ppc_pvalue`` is the posterior-predictive p-value (Gelman, Meng & Stern 1996) computed
analytically: the mean over draws of P(chi^2_dof > chi^2_m); ``ppc_chi2`` is the mean
chi^2_m. PHOTOMETRY_NOT_REPRODUCED: p-value < ``defaults.PPC_PVALUE``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy import stats

from specdiff_catalog import defaults
from specdiff_catalog.bands import BandSet
from specdiff_catalog.features import Photometry
from specdiff_catalog.models.autoencoder import SpectrumAutoencoder, redshift_resample
from specdiff_catalog.synphot import SyntheticPhotometry, best_amplitude_chi2

SPECTRA_CHUNK = 4096  # decoded spectra per block: 4096 x ~4,000 rest pixels x 4 bytes = 66 MB


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


class PhotometryCheck:
    """The check for one model: its decoder and the band set's synthetic photometry.

    bands: the indices (into the band set) of the coverable bands; the others never count.
    """

    def __init__(
        self,
        autoencoder: SpectrumAutoencoder,
        bandset: BandSet,
        draws: int = defaults.PPC_DRAWS,
        floor: float = defaults.PPC_FLUX_FLOOR,
    ) -> None:
        self.autoencoder, self.draws, self.floor = autoencoder, draws, floor
        every = SyntheticPhotometry.from_bandset(bandset, autoencoder.config.rest_step)
        self.bands = np.flatnonzero(coverable_bands(autoencoder, every))
        self.synth = SyntheticPhotometry.from_bandset(bandset, autoencoder.config.rest_step, list(self.bands))
        device = autoencoder.wave_rest.device
        self._wave = torch.as_tensor(self.synth.wave, dtype=torch.float32, device=device)
        self._weights = torch.as_tensor(self.synth.weights, dtype=torch.float32, device=device)
        self._band_of = torch.as_tensor(self.synth.band_of, device=device)

    def predicted(self, z: np.ndarray, latent: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Band fluxes (n, B') of the decoded spectra of latents (n, S) at redshifts z (n,), and
        (n, B') bool: the band's whole support inside the redshifted rest grid."""
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
            flux[:, None, :], ivar[:, None, :], np.nan_to_num(predicted), self.floor
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
