"""Noiseless galaxy spectra and synthetic photometry: kcorrect mixtures, redshifted, through a fibre.

Flux densities are in DESI's unit, 1e-17 erg/s/cm^2/A, on vacuum wavelengths (the DESI
arm grids are ``io.desi.ARM_WAVE``). The
kcorrect templates are sampled at d(ln lambda) = 8.6e-4 (R ~ 1200 per pixel, 1.7-8.6 A
over 2000-9824 A rest), coarser than DESI's resolution (R ~ 2000-5500) everywhere on the
DESI range, so they are interpolated, not smoothed; their emission lines are broader
than real DESI lines.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np
from astropy.cosmology import FLRW, Planck18

DESI_UNIT = 1e-17  # erg/s/cm^2/A of one unit of DESI flux


def rest_wavelength(lo: float = 2000.0, hi: float = 9824.0, step: float = 2.0) -> np.ndarray:
    """(R,) rest-frame grid of the truth spectra: 2000-9824 A at 2 A (the autoencoder's range)."""
    return lo + step * np.arange(round((hi - lo) / step) + 1)


@cache
def _templates() -> tuple[np.ndarray, np.ndarray]:
    """kcorrect templates (5, K) erg/s/cm^2/A per unit mass at 10 pc, and their wavelengths (K,) A."""
    from skypy.galaxies.spectrum import kcorrect

    return (
        np.asarray(kcorrect.templates.value, dtype=np.float64),
        np.asarray(kcorrect.wavelength.value, dtype=np.float64),
    )


def _interpolated_mixture(weights: np.ndarray, rest: np.ndarray) -> np.ndarray:
    """(N, P) sum_k weights[:, k] T_k(rest) with rest (N, P) or (P,), linear in wavelength."""
    templates, wave = _templates()
    rest = np.broadcast_to(rest, (len(weights), *np.shape(rest)[-1:]))
    lo = max(np.searchsorted(wave, rest.min()) - 1, 0)
    hi = min(np.searchsorted(wave, rest.max()) + 1, len(wave) - 1)
    mixture = weights @ templates[:, lo : hi + 1]  # (N, K') on the template grid
    sub = wave[lo : hi + 1]
    i0 = np.clip(np.searchsorted(sub, rest) - 1, 0, len(sub) - 2)
    frac = (rest - sub[i0]) / (sub[i0 + 1] - sub[i0])
    left = np.take_along_axis(mixture, i0, axis=1)
    right = np.take_along_axis(mixture, i0 + 1, axis=1)
    return left + frac * (right - left)


def rest_frame_flux(
    coefficients: np.ndarray,
    stellar_mass: np.ndarray,
    redshift: np.ndarray,
    rest: np.ndarray,
    cosmology: FLRW = Planck18,
) -> np.ndarray:
    """(N, P) rest-frame spectrum r in DESI units such that the observed total flux is r(lambda / (1+z)).

    coefficients: (N, 5); stellar_mass: (N,) kcorrect units; rest: (P,) or (N, P) A.
    r = mass * sum_k c_k T_k(rest) * 10^(-0.4 DM(z)) / (1+z), the templates being at 10 pc.
    """
    z = np.asarray(redshift, dtype=float)
    scale = 10.0 ** (-0.4 * cosmology.distmod(z).value) / (1 + z) / DESI_UNIT
    weights = coefficients * (stellar_mass * scale)[:, None]
    return _interpolated_mixture(weights, rest)


def observed_flux(
    coefficients: np.ndarray,
    stellar_mass: np.ndarray,
    redshift: np.ndarray,
    wave: np.ndarray,
    cosmology: FLRW = Planck18,
) -> np.ndarray:
    """(N, P) observed-frame total flux density (DESI units) on ``wave`` (P,), no fibre, no dust."""
    rest = np.asarray(wave)[None, :] / (1 + np.asarray(redshift))[:, None]
    return rest_frame_flux(coefficients, stellar_mass, redshift, rest, cosmology)


@dataclass(frozen=True)
class FibreModel:
    """DESI fibre (1.52 arcsec diameter) and seeing (FWHM, arcsec) for aperture fractions.

    Galaxy light is approximated by a circular Gaussian of the same half-light radius.
    """

    diameter: float = 1.52
    seeing_fwhm: float = 1.1

    def fraction(self, half_light_radius: np.ndarray) -> np.ndarray:
        """(N,) fraction of a galaxy's light inside the fibre (FIBERFLUX / FLUX)."""
        sigma2 = (np.asarray(half_light_radius) / 1.1774) ** 2 + (self.seeing_fwhm / 2.3548) ** 2
        return 1.0 - np.exp(-((self.diameter / 2) ** 2) / (2 * sigma2))

    def aperture(self, half_light_radius: np.ndarray) -> np.ndarray:
        """(N,) spectrum flux / total flux: DESI calibrates spectra to point sources."""
        return self.fraction(half_light_radius) / self.fraction(np.zeros(1))


def mw_transmission_spectrum(wave: np.ndarray, ebv: np.ndarray) -> np.ndarray:
    """(N, P) Milky Way transmission at ``wave`` (A) for SFD E(B-V) ``ebv`` (N,): DESI's own F99 curve."""
    from desiutil.dust import dust_transmission

    a_per_ebv = -2.5 * np.log10(dust_transmission(np.asarray(wave, dtype=float), 1.0))
    return 10.0 ** (-0.4 * np.outer(ebv, a_per_ebv))


def synthetic_maggies(flux: np.ndarray, wave: np.ndarray, filter_name: str) -> np.ndarray:
    """(N,) AB maggies of spectra ``flux`` (N, P) in DESI units through a speclite filter.

    The spectra are zero-padded where the filter's tabulated range exceeds ``wave``.
    """
    import speclite.filters

    response = speclite.filters.load_filter(filter_name)
    padded, padded_wave = response.pad_spectrum(flux * DESI_UNIT, wave, method="zero")
    return np.asarray(response.get_ab_maggies(padded, padded_wave), dtype=float)


@cache
def template_maggies(
    filter_names: tuple[str, ...], z_max: float, dz: float = 5e-4
) -> tuple[np.ndarray, np.ndarray]:
    """(z_grid (Z,), maggies (Z, 5, B)): each template at 10 pc, redshifted to z, through each filter.

    maggies include the (1+z) bandwidth factor; multiply by mass * 10^(-0.4 DM(z)) for a
    galaxy. Equivalent to SkyPy's ``mag_ab`` with a shifted filter, vectorised over z.
    """
    import speclite.filters

    templates, wave = _templates()
    z_grid = np.arange(0.0, z_max + 2 * dz, dz)
    table = np.empty((len(z_grid), len(templates), len(filter_names)))
    for b, name in enumerate(filter_names):
        response = speclite.filters.load_filter(name)
        obs = np.asarray(response.wavelength, dtype=float)
        for start in range(0, len(z_grid), 200):
            z = z_grid[start : start + 200]
            rest = obs[None, :] / (1 + z)[:, None]
            shifted = np.stack([np.interp(rest, wave, t) for t in templates], axis=1) / (1 + z)[:, None, None]
            table[start : start + 200, :, b] = response.get_ab_maggies(shifted, obs)
    return z_grid, table


def model_fluxes(
    coefficients: np.ndarray,
    stellar_mass: np.ndarray,
    redshift: np.ndarray,
    filter_names: tuple[str, ...],
    cosmology: FLRW = Planck18,
) -> np.ndarray:
    """(N, B) noiseless observed AB maggies of galaxies through ``filter_names`` (no dust, total flux)."""
    z = np.asarray(redshift, dtype=float)
    z_grid, table = template_maggies(tuple(filter_names), float(np.max(z, initial=0.0)) + 0.01)
    pos = np.clip(np.interp(z, z_grid, np.arange(len(z_grid))), 0, len(z_grid) - 1.000001)
    i0 = pos.astype(int)
    frac = (pos - i0)[:, None, None]
    per_template = table[i0] + frac * (table[i0 + 1] - table[i0])  # (N, 5, B)
    scale = stellar_mass * 10.0 ** (-0.4 * cosmology.distmod(z).value)
    return np.einsum("nk,nkb->nb", coefficients, per_template) * scale[:, None]
