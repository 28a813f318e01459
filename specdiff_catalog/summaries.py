"""Posterior samples -> the per-object summaries the output store holds.

Every function works on a batch of N objects with K samples each and treats
non-finite samples (NaN, inf) and absurd ones (|x| > SAMPLE_LIMIT) as absent: a row
with some NaN samples is summarised from its finite ones, a row with none gives NaN
outputs, never an exception.
Definitions and tolerances are in docs/metrics.md ("Summaries").
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

MODE_GRID = 512  # grid points of the binned KDE per object
MODE_CHUNK_ROWS = 4096  # objects per FFT batch in kde_mode (bounds memory at ~40 MB)
_TAIL = 0.005  # the KDE grid spans the central 99% of the samples plus 3 bandwidths
LOCAL_FRACTION = 0.2  # kde_bandwidth's local scale: the shortest interval holding 20% of samples
LOCAL_SCALE = 2 * 0.2533471  # its width for a unit Gaussian: 2 Phi^-1(0.6)


def check_levels(
    levels: Sequence[float] | np.ndarray, *, closed: bool = False, increasing: bool = True
) -> np.ndarray:
    """Quantile levels as a float64 array, validated: 1-D, non-empty, strictly inside
    (0, 1) (inside [0, 1] when ``closed``), strictly increasing (unless not ``increasing``).
    Raises ValueError naming the bad value."""
    levels = np.atleast_1d(np.asarray(levels, dtype=np.float64))
    if levels.ndim != 1 or levels.size == 0:
        raise ValueError(f"quantile levels must be a non-empty 1-D sequence, got shape {levels.shape}")
    bad = ~((levels >= 0) & (levels <= 1)) if closed else ~((levels > 0) & (levels < 1))
    if bad.any():
        interval = "[0, 1]" if closed else "strictly inside (0, 1)"
        raise ValueError(f"quantile level {float(levels[bad][0])!r} is not {interval}")
    if increasing and (np.diff(levels) <= 0).any():
        raise ValueError(f"quantile levels must be strictly increasing, got {levels.tolist()}")
    return levels


SAMPLE_LIMIT = 1e30
"""Samples with |x| above this count as absent (like NaN): every summary of the rest, even a
standard deviation, then fits the float32 the store keeps."""


def _finite(samples: np.ndarray) -> np.ndarray:
    """float64 copy with every non-finite value, and every |value| > SAMPLE_LIMIT, replaced by NaN."""
    x = np.array(samples, dtype=np.float64)
    x[~(np.abs(x) <= SAMPLE_LIMIT)] = np.nan
    return x


def sample_quantiles(samples: np.ndarray, levels: Sequence[float] | np.ndarray) -> np.ndarray:
    """(N, Q) quantiles of each row's finite samples at ``levels`` (in [0, 1]).

    samples: (N, K). Estimator: Hyndman & Fan (1996) type 6 (numpy ``method="weibull"``),
    the order statistic at rank p (m + 1) for m finite samples, linearly interpolated and
    clamped to the sample range. For draws from the true distribution F it is unbiased in
    probability, E[F(q_p)] = p, so credible intervals built from it have their nominal
    coverage at any K (numpy's default type 7 under-covers a 95% interval of 100 samples
    by ~2%). Rows without finite samples give NaN.
    """
    levels = check_levels(levels, closed=True, increasing=False)
    x = np.sort(_finite(samples), axis=1)  # NaN sorts last
    n, k = x.shape
    if k == 0:
        return np.full((n, levels.size), np.nan)
    m = np.isfinite(x).sum(axis=1)
    rank = np.clip(levels[None, :] * (m[:, None] + 1), 1, np.maximum(m, 1)[:, None])  # 1-based
    lo = np.floor(rank).astype(np.intp)
    frac = rank - lo
    hi = np.minimum(lo + 1, np.maximum(m, 1)[:, None])
    x_lo = np.take_along_axis(x, lo - 1, axis=1)
    x_hi = np.take_along_axis(x, hi - 1, axis=1)
    with np.errstate(invalid="ignore"):
        q = x_lo + frac * (x_hi - x_lo)
    q[m == 0] = np.nan
    return q


def _mean_std(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row mean and sample standard deviation (ddof=1) of finite values; NaN where undefined."""
    ok = np.isfinite(x)
    m = ok.sum(axis=1)
    filled = np.where(ok, x, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = filled.sum(axis=1) / m
        var = (np.where(ok, x - mean[:, None], 0.0) ** 2).sum(axis=1) / (m - 1)
    return mean, np.where(m >= 2, np.sqrt(var), np.nan)


def shortest_interval(samples: np.ndarray, fraction: float) -> np.ndarray:
    """(N,) width of the shortest interval holding ``fraction`` of each row's finite samples
    (the "shorth" of Rousseeuw & Leroy 1988 for fraction 1/2); NaN without samples."""
    x = np.sort(_finite(samples), axis=1)
    _n, k = x.shape
    m = np.isfinite(x).sum(axis=1)
    span = np.maximum(np.ceil(fraction * m).astype(np.intp) - 1, 0)  # samples j..j+span
    end = np.arange(k)[None, :] + span[:, None]
    valid = end < m[:, None]
    widths = np.take_along_axis(x, np.minimum(end, k - 1), axis=1) - x
    widths = np.where(valid, widths, np.inf)
    return np.where(m > 0, widths.min(axis=1, initial=np.inf), np.nan)


def kde_bandwidth(samples: np.ndarray) -> np.ndarray:
    """(N,) Gaussian-KDE bandwidth per row: Silverman's (1986, eq. 3.31) rule of thumb
    h = 0.9 A m^(-1/5) with the scale A = min(std, IQR/1.349, S_20/0.5067), where S_20 is the
    width of the shortest interval holding 20% of the samples (0.5067 sigma for a
    Gaussian). The third, local scale keeps a narrow peak from being smoothed away next
    to a broad one with more mass (Silverman's global scale oversmooths such a pair).
    Zero scales are skipped; h = 0 when all finite samples are equal, NaN without any."""
    x = _finite(samples)
    m = np.isfinite(x).sum(axis=1)
    _, std = _mean_std(x)
    std = np.where(m == 1, 0.0, std)
    q25, q75 = sample_quantiles(x, [0.25, 0.75]).T
    scales = np.stack([std, (q75 - q25) / 1.349, shortest_interval(x, LOCAL_FRACTION) / LOCAL_SCALE])
    scale = np.min(np.where(scales > 0, scales, np.inf), axis=0)
    constant = np.nanmax(x, axis=1, initial=-np.inf) == np.nanmin(x, axis=1, initial=np.inf)
    scale = np.where(np.isfinite(scale) & ~constant, scale, 0.0)  # std of equal values can round to 1e-17
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(m > 0, 0.9 * scale * m.astype(np.float64) ** -0.2, np.nan)


def _binned_kde_argmax(
    x: np.ndarray, h: np.ndarray, start: np.ndarray, stop: np.ndarray, size: int
) -> np.ndarray:
    """Location of the maximum of each row's Gaussian KDE, by linear binning onto a
    ``size``-point grid over [start, stop] and an FFT convolution (Silverman 1982,
    Applied Statistics 31, 93). x: (n, K) with NaN for absent samples; h, start, stop: (n,)."""
    n = x.shape[0]
    dx = (stop - start) / (size - 1)
    pos = (x - start[:, None]) / dx[:, None]
    cell = np.floor(pos)
    inside = np.isfinite(pos) & (cell >= 0) & (cell < size - 1)
    frac = np.where(inside, pos - cell, 0.0)
    flat = np.where(inside, np.arange(n)[:, None] * size + cell, 0).astype(np.intp).ravel()
    weight = inside.ravel()
    hist = np.bincount(flat, weights=weight * (1 - frac.ravel()), minlength=n * size)
    hist += np.bincount(flat + 1, weights=weight * frac.ravel(), minlength=n * size)
    padded = 2 * size  # zero padding: the circular convolution cannot wrap around
    freq = np.fft.rfftfreq(padded)  # cycles per grid step
    sigma = (h / dx)[:, None]  # kernel width in grid steps
    density = np.fft.irfft(
        np.fft.rfft(hist.reshape(n, size), n=padded, axis=1) * np.exp(-2 * (np.pi * freq * sigma) ** 2),
        n=padded,
        axis=1,
    )[:, :size]
    j = np.clip(np.argmax(density, axis=1), 1, size - 2)
    y0, y1, y2 = (np.take_along_axis(density, (j + d)[:, None], axis=1)[:, 0] for d in (-1, 0, 1))
    curvature = y0 - 2 * y1 + y2
    with np.errstate(invalid="ignore", divide="ignore"):
        offset = np.where(curvature < 0, 0.5 * (y0 - y2) / curvature, 0.0)
    return start + (j + np.clip(offset, -0.5, 0.5)) * dx  # parabolic refinement between grid points


def kde_mode(
    samples: np.ndarray, bandwidth: np.ndarray | None = None, *, grid_size: int = MODE_GRID
) -> np.ndarray:
    """(N,) mode of each row's Gaussian kernel density estimate.

    samples: (N, K); bandwidth: (N,) (default ``kde_bandwidth``). The KDE is evaluated on
    a per-object grid of ``grid_size`` points spanning the central 99% of the samples
    plus 3 bandwidths, in one batched FFT per chunk of rows; the maximum is refined by
    a parabola through its grid neighbours, and kept within the sample range (where the
    exact mode lies). Rows whose bandwidth is 0 (all samples equal) return that value;
    rows without finite samples return NaN.
    """
    x = _finite(samples)
    h = kde_bandwidth(x) if bandwidth is None else np.asarray(bandwidth, dtype=np.float64)
    lo, hi, median = sample_quantiles(x, [_TAIL, 1 - _TAIL, 0.5]).T
    start, stop = lo - 3 * h, hi + 3 * h
    mode = np.where(h == 0, median, np.nan)
    todo = np.flatnonzero((h > 0) & (stop > start))
    for chunk in np.array_split(todo, max(1, -(-todo.size // MODE_CHUNK_ROWS))):
        if chunk.size:
            mode[chunk] = _binned_kde_argmax(x[chunk], h[chunk], start[chunk], stop[chunk], grid_size)
    # a Gaussian mixture rises below its lowest and falls above its highest centre: the exact
    # mode lies between them, and so does the estimate (the grid and the parabola may not)
    return np.clip(mode, sample_quantiles(x, [0.0])[:, 0], sample_quantiles(x, [1.0])[:, 0])


def conditional_latent(
    z_samples: np.ndarray, latent_samples: np.ndarray, z0: np.ndarray, bandwidth: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Kernel-weighted mean and std of the latent samples whose redshift lies near ``z0``.

    z_samples: (N, K); latent_samples: (N, K, S); z0, bandwidth: (N,). Weights
    w_k = exp(-(z_k - z0)^2 / 2h^2) (Nadaraya-Watson): the result estimates
    E[s | z = z0] and the spread of s there, so for a multimodal redshift PDF the latent
    belongs to the redshift it is decoded at rather than averaging galaxies of the other
    mode. Samples with a non-finite z or latent get zero weight. Returns two (N, S) arrays.
    """
    z = _finite(z_samples)
    s = np.asarray(latent_samples, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        u = np.where(
            bandwidth[:, None] > 0,
            (z - z0[:, None]) / bandwidth[:, None],
            np.where(z == z0[:, None], 0.0, np.inf),
        )
    # a NaN z (a failed draw, or one beyond SAMPLE_LIMIT) would make min() NaN: it gets u^2 = inf
    u2 = np.where(np.isfinite(u) & np.isfinite(s).all(axis=2), u**2, np.inf)
    nearest = np.min(u2, axis=1, keepdims=True)
    # the nearest sample's weight is 1 (a constant factor, which cancels): weights cannot all
    # underflow to 0 when z0 lies many bandwidths from every sample
    with np.errstate(invalid="ignore"):
        w = np.exp(-0.5 * (u2 - np.where(np.isfinite(nearest), nearest, 0.0)))
    w = np.where(np.isfinite(w), w, 0.0)
    total = w.sum(axis=1, keepdims=True)
    s = np.where(w[..., None] > 0, s, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.einsum("nk,nks->ns", w, s) / total
        var = np.einsum("nk,nks->ns", w, (s - mean[:, None, :]) ** 2) / total
    return mean, np.sqrt(var)


def _summarize_rows(z: np.ndarray, latent: np.ndarray | None, levels: np.ndarray) -> dict[str, np.ndarray]:
    h = kde_bandwidth(z)
    mode = kde_mode(z, h)
    mean, std = _mean_std(z)
    out = {
        "z_quantiles": sample_quantiles(z, levels),
        "z_median": sample_quantiles(z, [0.5])[:, 0],
        "z_mode": mode,
        "z_mean": mean,
        "z_std": std,
    }
    if latent is not None:
        out["latent"], out["latent_std"] = conditional_latent(z, latent, mode, h)
    return {name: value.astype(np.float32) for name, value in out.items()}


def summarize(
    z_samples: np.ndarray, latent_samples: np.ndarray | None, quantiles: Sequence[float] | np.ndarray
) -> dict[str, np.ndarray]:
    """Per-object summaries of N objects' posterior samples.

    z_samples: (N, K) redshift samples; latent_samples: (N, K, S) spectral-latent samples
    drawn jointly with them, or None; quantiles: (Q,) levels strictly inside (0, 1),
    strictly increasing. Returns float32 arrays: ``z_quantiles`` (N, Q) (type-6 sample
    quantiles), ``z_median``, ``z_mode`` (Gaussian-KDE mode), ``z_mean``, ``z_std``
    (ddof=1) (N,), and with latents ``latent``, ``latent_std`` (N, S): the latent mean and
    spread among the samples whose z is within about one KDE bandwidth of z_mode
    (``conditional_latent``). Non-finite samples are ignored per row; rows with none
    give NaN. Rows are processed in chunks of MODE_CHUNK_ROWS, so memory stays at a few
    float64 copies of one chunk's samples.
    """
    levels = check_levels(quantiles)
    z = np.asarray(z_samples)
    if z.ndim != 2:
        raise ValueError(f"z_samples must be (N, K), got shape {z.shape}")
    if latent_samples is not None and (latent_samples.ndim != 3 or latent_samples.shape[:2] != z.shape):
        raise ValueError(
            f"latent_samples must be (N, K, S) with (N, K) = {z.shape}, got {latent_samples.shape}"
        )
    parts = [
        _summarize_rows(_finite(z[rows]), None if latent_samples is None else latent_samples[rows], levels)
        for rows in (slice(i, i + MODE_CHUNK_ROWS) for i in range(0, max(len(z), 1), MODE_CHUNK_ROWS))
    ]
    return {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}


# --- stored quantiles: how many samples they need, and the distribution they describe ------------


def min_samples(levels: Sequence[float] | np.ndarray) -> int:
    """The fewest samples per object K for which every level's type-6 rank p (K + 1) lies in [1, K].

    Below it ``sample_quantiles`` clamps the outer levels to the smallest or largest sample,
    so e.g. the 0.025 and 0.05 quantiles of 16 samples are both the smallest one (ties
    that describe no distribution). The rule is K + 1 >= 1 / min(p, 1 - p) over the
    levels: 0.025 or 0.975 need K >= 39, 0.05 / 0.95 K >= 19, 0.16 / 0.84 K >= 6.
    """
    levels = check_levels(levels, increasing=False)
    tail = float(np.minimum(levels, 1 - levels).min())
    return max(1, int(np.ceil(1 / tail - 1e-9)) - 1)


def resolved_levels(levels: Sequence[float] | np.ndarray, n_samples: int) -> np.ndarray:
    """(Q,) bool: the levels whose type-6 rank p (K + 1) lies in [1, K] for K = ``n_samples``,
    i.e. whose sample quantile is an order statistic or between two, not clamped to an end."""
    levels = check_levels(levels, increasing=False)
    rank = levels * (n_samples + 1)
    return (rank >= 1 - 1e-9) & (rank <= n_samples + 1e-9)


class SampleCountWarning(UserWarning):
    """Too few samples per object for the requested quantile levels (``sample_count_note``)."""


def sample_count_note(levels: Sequence[float] | np.ndarray, n_samples: int) -> str | None:
    """The warning for K = ``n_samples`` too small for the quantile ``levels`` (``min_samples``), or None."""
    need = min_samples(levels)
    if n_samples >= need:
        return None
    levels = check_levels(levels, increasing=False)
    clamped = levels[~resolved_levels(levels, n_samples)]
    return (
        f"{n_samples} samples per object are too few for the quantile levels "
        f"{', '.join(f'{q:g}' for q in clamped)} (they need >= {need}: the rank p (K + 1) of "
        "each level must lie in [1, K]); those quantiles are the smallest or largest sample"
    )


def extend_quantiles(levels: np.ndarray, locs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Levels (Q,) strictly inside (0, 1) and locations (N, Q) -> (Q + 2,) and (N, Q + 2) with 0 and 1.

    The new locations continue the line through the two outermost quantiles (as qp's
    ``pad_quantiles``); the one at level 0 is clipped at z = 0 unless the first stored
    quantile is itself <= 0 (a redshift PDF has no support below 0).
    """
    levels = check_levels(levels)
    if levels.size < 2:
        raise ValueError(f"at least two quantile levels are needed, got {levels.tolist()}")
    locs = np.asarray(locs, dtype=np.float64)
    lo = locs[:, 0] - levels[0] * (locs[:, 1] - locs[:, 0]) / (levels[1] - levels[0])
    hi = locs[:, -1] + (1 - levels[-1]) * (locs[:, -1] - locs[:, -2]) / (levels[-1] - levels[-2])
    lo = np.where(locs[:, 0] > 0, np.maximum(lo, 0.0), lo)
    return np.concatenate([[0.0], levels, [1.0]]), np.column_stack([lo, locs, hi])


def quantile_cdf(levels: np.ndarray, locs: np.ndarray, x: np.ndarray) -> np.ndarray:
    """(N, X) CDF at ``x`` (X,) of the distributions whose quantile function is piecewise linear
    through (levels (Q,), locs (N, Q)), levels from 0 to 1 (``extend_quantiles``).

    The CDF rises linearly by levels[j+1] - levels[j] between locs[:, j] and locs[:, j+1];
    a segment of zero width (tied quantiles) is a step. It is non-decreasing, 0 before the
    first location and 1 from the last one on, whatever the ties.
    """
    levels = check_levels(levels, closed=True)
    locs = np.asarray(locs, dtype=np.float64)
    x = np.asarray(x, dtype=np.float64)
    if levels[0] != 0 or levels[-1] != 1:
        raise ValueError(f"quantile_cdf needs levels from 0 to 1, got {levels[0]:g}..{levels[-1]:g}")
    if np.any(np.diff(locs, axis=1) < 0):
        raise ValueError("quantile locations must be non-decreasing along each row")
    out = np.zeros((locs.shape[0], x.size))
    for j in range(levels.size - 1):
        start, width = locs[:, j : j + 1], (locs[:, j + 1] - locs[:, j])[:, None]
        with np.errstate(divide="ignore", invalid="ignore"):
            rise = np.where(width > 0, np.clip((x - start) / width, 0.0, 1.0), (x >= start).astype(float))
        out += (levels[j + 1] - levels[j]) * rise
    return out
