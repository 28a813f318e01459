"""Noiseless galaxy spectra and synthetic photometry from the population's SPS parameters.

Flux densities are in DESI's unit, 1e-17 erg/s/cm^2/A, on vacuum wavelengths (the DESI
arm grids are ``io.desi.ARM_WAVE``). Spectra come from ``sps.synthesize`` on 30 km/s
log-lambda pixels (``sps.SPECTRUM_GRID``), broadened by each galaxy's velocity dispersion;
catalog fluxes from the same synthesis on R ~ 125 bins (``sps.PHOTOMETRY_GRID``), exact
filter integrals over those bins.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np
from astropy.cosmology import FLRW, Planck18

from specdiff_catalog.mock.distances import distances
from specdiff_catalog.mock.population import QUIESCENT, STAR_FORMING, Galaxies
from specdiff_catalog.mock.sps import L_SUN, PHOTOMETRY_GRID, SPECTRUM_GRID, GridSpec, synthesize

DESI_UNIT = 1e-17  # erg/s/cm^2/A of one unit of DESI flux
REST_RANGE = (1300.0, 9900.0)  # A: the truth grid, DESI's 3600-9824 A for 0 < z <= 1.6
DN4000_GRID = GridSpec(3700.0, 4250.0, 5e-4)  # 150 km/s pixels: Dn4000 averages over 100 A
# galaxies synthesised at once on the photometry grid (8 MB arrays) and on the spectrum grid (10 MB):
# small arrays are reused by the allocator, large ones cost page faults (measured: 20,000 at once spent
# more time in the kernel than in numpy)
CHUNK = 2000
SPECTRUM_CHUNK = 64
_C_A = 2.99792458e18  # speed of light, A/s


def rest_wavelength() -> np.ndarray:
    """(R,) rest-frame grid of the truth spectra: 1300-9900 A in 30 km/s (d ln lambda = 1e-4) pixels."""
    wave = SPECTRUM_GRID.wavelength()
    return wave[(wave >= REST_RANGE[0]) & (wave <= REST_RANGE[1])]


def luminosity_scale(redshift: np.ndarray, cosmology: FLRW = Planck18) -> np.ndarray:
    """(N,) DESI flux units per L_sun/A of rest-frame luminosity density: L_sun / (4 pi d_L^2 (1+z))."""
    z = np.asarray(redshift, dtype=float)
    d_l = distances(cosmology).luminosity_distance(z)
    return L_SUN / (4 * np.pi * d_l**2 * (1 + z)) / DESI_UNIT


def rest_frame_flux(galaxies: Galaxies, cosmology: FLRW = Planck18) -> np.ndarray:
    """(N, R) rest-frame spectra r on ``rest_wavelength()``: the observed total flux is r(lambda / (1+z))."""
    wave = SPECTRUM_GRID.wavelength()
    keep = np.flatnonzero((wave >= REST_RANGE[0]) & (wave <= REST_RANGE[1]))
    out = np.empty((len(galaxies), len(keep)))
    for start in range(0, len(galaxies), SPECTRUM_CHUNK):
        part = galaxies.take(np.arange(start, min(start + SPECTRUM_CHUNK, len(galaxies))))
        lum = synthesize(part.sps_parameters(), SPECTRUM_GRID)[:, keep[0] : keep[-1] + 1]
        out[start : start + len(part)] = lum * luminosity_scale(part.redshift, cosmology)[:, None]
    return out


def redshift_onto(
    rest: np.ndarray, rest_wave: np.ndarray, redshift: np.ndarray, wave: np.ndarray
) -> np.ndarray:
    """(N, P) rest spectra (N, R) on ``rest_wave`` (R,) at ``wave`` (P,) / (1+z), linearly; 0 outside."""
    position = np.interp(
        np.log(wave[None, :] / (1 + redshift[:, None])),
        np.log(rest_wave),
        np.arange(len(rest_wave)),
        left=-1,
        right=-1,
    )
    inside = position >= 0
    i0 = np.clip(position.astype(int), 0, len(rest_wave) - 2)
    frac = position - i0
    left = np.take_along_axis(rest, i0, axis=1)
    right = np.take_along_axis(rest, i0 + 1, axis=1)
    return np.where(inside, left + frac * (right - left), 0.0)


def observed_flux(galaxies: Galaxies, wave: np.ndarray, cosmology: FLRW = Planck18) -> np.ndarray:
    """(N, P) observed-frame total flux density (DESI units) on ``wave`` (P,), no fibre, no dust."""
    return redshift_onto(rest_frame_flux(galaxies, cosmology), rest_wavelength(), galaxies.redshift, wave)


@cache
def band_response(filter_name: str, z_max: float = 1.7, dz: float = 1e-3) -> tuple[np.ndarray, np.ndarray]:
    """(z_grid (Z,), response (Z, L)): AB maggies = sum_l r_l response[z, l] for a rest-frame SED r
    (erg/s/cm^2/A, bin averages on ``PHOTOMETRY_GRID``) redshifted to z (r(lambda / (1+z))).

    response[z, l] = int over bin l shifted to z of T(lambda) lambda dlambda / (c int T / lambda dlambda)
    / 3631 Jy: exact for bin-averaged SEDs, with T linear between its tabulated points.
    """
    import speclite.filters

    filt = speclite.filters.load_filter(filter_name)
    lam = np.asarray(filt.wavelength, dtype=float)
    fine = np.linspace(lam[0], lam[-1], 20 * len(lam))
    t = np.interp(fine, lam, np.asarray(filt.response, dtype=float))
    cumulative = np.r_[0.0, np.cumsum(0.5 * (t[1:] * fine[1:] + t[:-1] * fine[:-1]) * np.diff(fine))]
    norm = _C_A * np.trapezoid(t / fine, fine) * 3631e-23
    z_grid = np.arange(0.0, z_max + dz, dz)
    edges = (1 + z_grid)[:, None] * PHOTOMETRY_GRID.edges()[None, :]
    integral = np.interp(edges, fine, cumulative)
    return z_grid, np.diff(integral, axis=1) / norm


def model_maggies(
    galaxies: Galaxies, filter_names: tuple[str, ...], cosmology: FLRW = Planck18
) -> np.ndarray:
    """(N, B) noiseless observed AB maggies of the galaxies through ``filter_names``.

    Total light, no Milky Way dust. Synthesised in chunks of ``CHUNK`` galaxies.
    """
    maggies = np.empty((len(galaxies), len(filter_names)))
    for start in range(0, len(galaxies), CHUNK):
        part = galaxies.take(np.arange(start, min(start + CHUNK, len(galaxies))))
        params = part.sps_parameters()
        sed = (
            synthesize(params, PHOTOMETRY_GRID)
            * (luminosity_scale(part.redshift, cosmology) * DESI_UNIT)[:, None]
        )
        for b, name in enumerate(filter_names):
            z_grid, response = band_response(name)
            pos = np.interp(part.redshift, z_grid, np.arange(len(z_grid)))
            i0 = np.minimum(pos.astype(int), len(z_grid) - 2)
            frac = pos - i0
            lo = np.einsum("nl,nl->n", sed, response[i0])
            hi = np.einsum("nl,nl->n", sed, response[i0 + 1])
            maggies[start : start + len(part), b] = lo + frac * (hi - lo)
    return maggies


def true_dn4000(galaxies: Galaxies) -> np.ndarray:
    """(N,) Dn4000 of the noiseless rest-frame spectra (``spectral.dn4000`` on 150 km/s pixels)."""
    from specdiff_catalog.spectral import dn4000

    out = np.empty(len(galaxies))
    for start in range(0, len(galaxies), CHUNK):
        part = galaxies.take(np.arange(start, min(start + CHUNK, len(galaxies))))
        out[start : start + len(part)] = dn4000(
            DN4000_GRID.wavelength(), synthesize(part.sps_parameters(), DN4000_GRID)
        )
    return out


SERSIC_B = {1: 1.6783, 4: 7.6692}  # b_n of exp(-b_n (r / R_e)^(1/n)): half the light inside R_e


@cache
def _sersic_transform(n: int) -> tuple[np.ndarray, np.ndarray]:
    """(u (U,), I~(u) (U,)): the Hankel transform of a unit-flux Sersic profile of R_e = 1 at
    spatial frequency u (cycles per R_e); I~(0) = 1. Exponential: analytic; de Vaucouleurs:
    numerical, on r <= 40 R_e (the light beyond is < 0.1%)."""
    from scipy.special import j0

    u = np.r_[0.0, np.geomspace(1e-3, 40.0, 800)]
    if n == 1:
        return u, (1.0 + (2 * np.pi * u / SERSIC_B[1]) ** 2) ** -1.5
    r = np.r_[np.geomspace(1e-8, 1.0, 4000)[:-1], np.arange(1.0, 40.0, 0.004)]
    weight = np.gradient(r) * 2 * np.pi * r * np.exp(-SERSIC_B[n] * r ** (1.0 / n))
    return u, (j0(2 * np.pi * u[:, None] * r[None, :]) @ weight) / weight.sum()


@cache
def _encircled(n: int, radius: float, seeing_fwhm: float) -> tuple[np.ndarray, np.ndarray]:
    """(log10 R_e (T,), fraction (T,)): the fraction of a Sersic-n galaxy's light within ``radius``
    arcsec after Gaussian seeing, F = 2 pi a int I~(k) exp(-2 pi^2 sigma^2 k^2) J1(2 pi k a) dk."""
    from scipy.special import j1

    sigma = seeing_fwhm / 2.3548
    k = np.linspace(0.0, 7.0 / (2 * np.pi * sigma), 3000)  # arcsec^-1: the seeing ends it
    psf_disk = np.exp(-2 * np.pi**2 * sigma**2 * k**2) * j1(2 * np.pi * k * radius) * 2 * np.pi * radius
    log_re = np.linspace(-3.0, 1.5, 181)
    u, transform = _sersic_transform(n)
    profile = np.interp(k[None, :] * 10.0 ** log_re[:, None], u, transform, right=0.0)
    return log_re, np.trapezoid(profile * psf_disk, k, axis=1)


@dataclass(frozen=True)
class FibreModel:
    """Fibre-aperture fractions of galaxy light: exponential profiles for star-forming galaxies and
    de Vaucouleurs profiles for quiescent ones, circular, of the drawn half-light radius, convolved
    with Gaussian seeing (FWHM, arcsec).

    The catalog's FIBERFLUX follows the Legacy Surveys definition (flux in a 1.5" diameter fibre
    under 1" seeing); the spectra get the light in a DESI fibre (1.52") under ``seeing_fwhm``.
    """

    diameter: float = 1.52
    seeing_fwhm: float = 1.1
    catalog_diameter: float = 1.5
    catalog_seeing_fwhm: float = 1.0

    @staticmethod
    def _fraction(
        half_light_radius: np.ndarray, population: np.ndarray, diameter: float, seeing: float
    ) -> np.ndarray:
        log_re = np.log10(np.clip(np.asarray(half_light_radius, dtype=float), 1e-3, 30.0))
        out = np.empty(len(log_re))
        for pop, n in ((STAR_FORMING, 1), (QUIESCENT, 4)):
            rows = np.asarray(population) == pop
            grid, fraction = _encircled(n, diameter / 2, seeing)
            out[rows] = np.interp(log_re[rows], grid, fraction)
        return out

    def catalog_fraction(self, half_light_radius: np.ndarray, population: np.ndarray) -> np.ndarray:
        """(N,) FIBERFLUX / FLUX of the Legacy Surveys catalog."""
        return self._fraction(half_light_radius, population, self.catalog_diameter, self.catalog_seeing_fwhm)

    def aperture(self, half_light_radius: np.ndarray, population: np.ndarray) -> np.ndarray:
        """(N,) spectrum flux / total flux: the light in a DESI fibre relative to a point source's
        (DESI calibrates spectra to point sources)."""
        point = self._fraction(np.zeros(1), np.zeros(1, np.int8), self.diameter, self.seeing_fwhm)
        return self._fraction(half_light_radius, population, self.diameter, self.seeing_fwhm) / point


def instrument_resolution(flux: np.ndarray, sigma_pix: float | np.ndarray) -> np.ndarray:
    """(N, P) spectra ``flux`` (N, P) on one DESI arm convolved with that arm's resolution matrix.

    sigma_pix: Gaussian sigma (pixels, scalar or (P,)) of the line-spread function, the same
    that ``desi_files.write_coadd`` writes as the RESOLUTION HDU (``resolution_diagonals``):
    the spectra in a coadd are R @ (true flux), as in desispec.
    """
    import scipy.sparse

    from specdiff_catalog.mock.desi_files import RESOLUTION_NDIAG, resolution_diagonals

    n_pix = flux.shape[1]
    half = RESOLUTION_NDIAG // 2
    offsets = np.arange(half, -half - 1, -1)
    matrix = scipy.sparse.dia_array((resolution_diagonals(sigma_pix, n_pix), offsets), shape=(n_pix, n_pix))
    return np.asarray((matrix.tocsr() @ flux.T).T)


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
