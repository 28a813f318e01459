"""Photo-z metrics exactly as docs/metrics.md defines them.

Point estimates: bias, sigma_NMAD, eta_0.15 and the LSST outlier fraction of
dz = (z_phot - z_true) / (1 + z_true). PDFs given as samples: PIT (ties randomised)
with its KS statistic and outlier rate, CRPS (scoringrules), and the coverage of
central credible intervals. Objects whose estimate or truth is not finite are counted
in ``n_missing`` and left out of the statistics. docs/metrics.md has the details.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scoringrules
from scipy import stats

from specdiff_catalog.summaries import check_levels, sample_quantiles

NMAD_SCALE = 1.4826  # 1 / Phi^-1(3/4): NMAD of a Gaussian equals its sigma
IQR_SCALE = 1.349  # IQR of a unit Gaussian
ETA_CUT = 0.15
LSST_FLOOR = 0.06
PIT_OUTLIER = 1e-4  # PIT < 1e-4 or > 1 - 1e-4
CRPS_ESTIMATOR = (
    "qd"  # scoringrules' name; equals the energy form E|X-y| - E|X-X'|/2 exactly (docs/metrics.md)
)


@dataclass(frozen=True)
class PointMetrics:
    """Metrics of point estimates (dimensionless, in units of dz = dz/(1+z)).

    n: objects scored; n_missing: objects without a finite estimate or truth (not scored);
    bias: median(dz); sigma_nmad: 1.4826 median|dz - median(dz)|;
    eta_015: fraction |dz| > 0.15; eta_lsst: fraction |dz| > max(0.06, 3 IQR(dz)/1.349).
    """

    n: int
    n_missing: int
    bias: float
    sigma_nmad: float
    eta_015: float
    eta_lsst: float


@dataclass(frozen=True)
class PdfMetrics:
    """Metrics of PDFs given as samples.

    n: objects scored; n_missing: objects without finite samples or truth;
    pit_ks: KS statistic of the PIT values against U(0, 1); pit_outlier_rate: fraction
    of PIT < 1e-4 or > 0.9999; crps: mean CRPS over objects (redshift units);
    coverage_68, coverage_95: fraction of true redshifts inside the central 68% / 95%
    interval of the samples.
    """

    n: int
    n_missing: int
    pit_ks: float
    pit_outlier_rate: float
    crps: float
    coverage_68: float
    coverage_95: float


def delta_z(z_phot: np.ndarray, z_true: np.ndarray) -> np.ndarray:
    """(N,) dz = (z_phot - z_true) / (1 + z_true)."""
    z_phot, z_true = np.asarray(z_phot, dtype=np.float64), np.asarray(z_true, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (z_phot - z_true) / (1.0 + z_true)


def point_metrics(z_phot: np.ndarray, z_true: np.ndarray) -> PointMetrics:
    """Bias, sigma_NMAD and outlier fractions of point estimates z_phot (N,) against z_true (N,).

    Objects with a non-finite z_phot or z_true are counted in ``n_missing`` and not scored;
    with nothing to score every statistic is NaN.
    """
    dz = delta_z(z_phot, z_true)
    ok = np.isfinite(dz)
    dz = dz[ok]
    n, missing = int(dz.size), int((~ok).sum())
    if n == 0:
        return PointMetrics(0, missing, np.nan, np.nan, np.nan, np.nan)
    bias = float(np.median(dz))
    q25, q75 = np.percentile(dz, [25, 75])
    lsst_cut = max(LSST_FLOOR, 3.0 * (q75 - q25) / IQR_SCALE)
    return PointMetrics(
        n=n,
        n_missing=missing,
        bias=bias,
        sigma_nmad=float(NMAD_SCALE * np.median(np.abs(dz - bias))),
        eta_015=float(np.mean(np.abs(dz) > ETA_CUT)),
        eta_lsst=float(np.mean(np.abs(dz) > lsst_cut)),
    )


def _usable(samples: np.ndarray, z_true: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """float64 samples with non-finite values as NaN, z_true, and the rows that can be scored."""
    x = np.array(samples, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"samples must be (N, K), got shape {x.shape}")
    x[~np.isfinite(x)] = np.nan
    y = np.asarray(z_true, dtype=np.float64)
    if y.shape != x.shape[:1]:
        raise ValueError(f"z_true has shape {y.shape}, samples {x.shape}: need (N,) and (N, K)")
    return x, y, np.isfinite(y) & np.isfinite(x).any(axis=1)


def pit(samples: np.ndarray, z_true: np.ndarray, *, seed: int = 0) -> np.ndarray:
    """(N,) probability integral transform: the fraction of each row's finite samples <= z_true,
    ties randomised: PIT = (#{x < z} + U #{x == z}) / m with U ~ U(0, 1) from ``seed``.

    samples: (N, K); z_true: (N,). Rows without finite samples or truth give NaN. For
    calibrated samples PIT takes the values j/m, j uniform on 0..m, so its KS distance to
    U(0, 1) is at least ~1/(m + 1).
    """
    x, y, ok = _usable(samples, z_true)
    below = (x < y[:, None]).sum(axis=1)
    ties = (x == y[:, None]).sum(axis=1)
    m = np.isfinite(x).sum(axis=1)
    u = np.random.default_rng(seed).random(y.size)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(ok, (below + u * ties) / m, np.nan)


def crps(samples: np.ndarray, z_true: np.ndarray) -> np.ndarray:
    """(N,) CRPS of each row's empirical sample distribution: E|X - y| - E|X - X'| / 2.

    samples: (N, K); z_true: (N,); redshift units. Computed by ``scoringrules.crps_ensemble``
    with the quantile-decomposition estimator (O(K log K), identical to the O(K^2) energy
    form for the empirical distribution; not the "fair"/"pwm" estimator, which divides
    E|X - X'| by m(m - 1)). Rows are grouped by their number of finite samples, so partial
    NaN rows are scored on their finite samples; rows with none give NaN.
    """
    x, y, ok = _usable(samples, z_true)
    x = np.sort(x, axis=1)  # NaN last
    m = np.isfinite(x).sum(axis=1)
    out = np.full(y.size, np.nan)
    for count in np.unique(m[ok]):
        rows = ok & (m == count)
        out[rows] = scoringrules.crps_ensemble(
            y[rows], x[rows, :count], estimator=CRPS_ESTIMATOR, sorted_ensemble=True
        )
    return out


def coverage_curve(
    samples: np.ndarray, z_true: np.ndarray, levels: Sequence[float] | np.ndarray
) -> np.ndarray:
    """(L,) empirical coverage: for each nominal level c in (0, 1], the fraction of objects
    whose z_true lies in the central interval [q_{(1-c)/2}, q_{(1+c)/2}] (inclusive) of
    their samples (``summaries.sample_quantiles``, unbiased in probability). NaN without
    scorable rows."""
    c = check_levels(levels, closed=True, increasing=False)
    if (c == 0).any():
        raise ValueError("coverage levels must be in (0, 1]")
    x, y, ok = _usable(samples, z_true)
    if not ok.any():
        return np.full(c.size, np.nan)
    q = sample_quantiles(x[ok], np.concatenate([(1 - c) / 2, (1 + c) / 2]))
    lo, hi = q[:, : c.size], q[:, c.size :]
    yy = y[ok][:, None]
    return ((yy >= lo) & (yy <= hi)).mean(axis=0)


def pdf_metrics(samples: np.ndarray, z_true: np.ndarray, *, seed: int = 0) -> PdfMetrics:
    """PIT KS statistic and outlier rate, mean CRPS and 68%/95% coverage of samples (N, K)
    against z_true (N,). ``seed`` randomises PIT ties. Rows without finite samples or truth
    are counted in ``n_missing`` and not scored."""
    x, y, ok = _usable(samples, z_true)
    n, missing = int(ok.sum()), int((~ok).sum())
    if n == 0:
        return PdfMetrics(0, missing, np.nan, np.nan, np.nan, np.nan, np.nan)
    p = pit(x, y, seed=seed)[ok]
    cov68, cov95 = coverage_curve(x, y, [0.68, 0.95])
    return PdfMetrics(
        n=n,
        n_missing=missing,
        pit_ks=float(stats.kstest(p, "uniform").statistic),
        pit_outlier_rate=float(np.mean((p < PIT_OUTLIER) | (p > 1 - PIT_OUTLIER))),
        crps=float(np.nanmean(crps(x, y))),
        coverage_68=float(cov68),
        coverage_95=float(cov95),
    )


def _row(
    z_point: np.ndarray | None, samples: np.ndarray | None, z_true: np.ndarray, seed: int
) -> dict[str, float]:
    n = z_true.size
    point = point_metrics(np.full(n, np.nan) if z_point is None else z_point, z_true)
    pdf = pdf_metrics(np.full((n, 1), np.nan) if samples is None else samples, z_true, seed=seed)
    pdf_values = {k: v for k, v in dataclasses.asdict(pdf).items() if k not in ("n", "n_missing")}
    return dataclasses.asdict(point) | {"n_pdf": pdf.n} | pdf_values


def photoz_table(
    results: Mapping[str, tuple[np.ndarray | None, np.ndarray | None]],
    z_true: np.ndarray,
    *,
    bins: tuple[str, np.ndarray, Sequence[float]] | None = None,
    seed: int = 0,
) -> pd.DataFrame:
    """All metrics of several methods side by side (the "diffusion vs baseline" table).

    results: {method: (z_point (N,) or None, samples (N, K) or None)} for the same N
    objects; z_true: (N,). bins: optional (name, values (N,), edges (M+1,)): adds one row
    per method and bin [edge_i, edge_i+1) of ``values`` (e.g. ("mag_r", r, [18, 20, 22])
    or ("z_true", z_true, edges)). Returns one row per method (bin "all") and bin, columns
    method, [name, name_lo, name_hi,] then the PointMetrics fields (``n``, ``n_missing``
    count point estimates), ``n_pdf`` (objects with scorable samples) and the other
    PdfMetrics fields. A method without a point estimate or samples gets NaN there.
    """
    z_true = np.asarray(z_true, dtype=np.float64)
    selections: list[tuple[dict[str, object], np.ndarray]] = [({}, np.ones(z_true.size, dtype=bool))]
    if bins is not None:
        name, bin_values, bin_edges = bins
        values, edges = np.asarray(bin_values, dtype=np.float64), np.asarray(bin_edges, dtype=np.float64)
        selections = [({name: "all", f"{name}_lo": np.nan, f"{name}_hi": np.nan}, selections[0][1])]
        for lo, hi in itertools.pairwise(edges):
            label = {name: f"[{lo:g}, {hi:g})", f"{name}_lo": lo, f"{name}_hi": hi}
            selections.append((label, (values >= lo) & (values < hi)))
    rows = []
    for method, (z_point, samples) in results.items():
        for label, sel in selections:
            zp = None if z_point is None else np.asarray(z_point)[sel]
            xs = None if samples is None else np.asarray(samples)[sel]
            rows.append({"method": method, **label, **_row(zp, xs, z_true[sel], seed)})
    return pd.DataFrame(rows)


def stacked_nz(
    samples: np.ndarray, z_true: np.ndarray, z_phot: np.ndarray, edges: Sequence[float]
) -> pd.DataFrame:
    """Per bin [lo, hi) of z_phot: the true redshift distribution of its objects against the
    stack of their PDFs (each object's finite samples weighted to unit mass: the bin's
    estimated N(z)).

    samples: (N, K); z_true, z_phot: (N,). Objects without finite samples or truth are
    left out. Returns one row per bin: ``bin`` ("[lo, hi)"), ``bin_lo``, ``bin_hi``, ``n``
    (objects), ``z_true_mean``, ``z_stack_mean`` (the mean of the stacked PDF),
    ``delta_mean`` = z_stack_mean - z_true_mean, ``z_true_std``, ``z_stack_std`` (ddof 0;
    the stack's includes each PDF's own width); NaN where a bin is empty.
    """
    x = np.asarray(samples, dtype=np.float64)
    z_true = np.asarray(z_true, dtype=np.float64)
    z_phot = np.asarray(z_phot, dtype=np.float64)
    finite = np.isfinite(x)
    count = finite.sum(axis=1)
    keep = (count > 0) & np.isfinite(z_true) & np.isfinite(z_phot)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(finite, x, 0.0).sum(axis=1) / count
        second = np.where(finite, x**2, 0.0).sum(axis=1) / count
    rows = []
    for lo, hi in itertools.pairwise(np.asarray(edges, dtype=np.float64)):
        sel = keep & (z_phot >= lo) & (z_phot < hi)
        n = int(sel.sum())
        true_mean = float(z_true[sel].mean()) if n else np.nan
        stack_mean = float(mean[sel].mean()) if n else np.nan
        rows.append(
            {
                "bin": f"[{lo:g}, {hi:g})",
                "bin_lo": float(lo),
                "bin_hi": float(hi),
                "n": n,
                "z_true_mean": true_mean,
                "z_stack_mean": stack_mean,
                "delta_mean": stack_mean - true_mean,
                "z_true_std": float(z_true[sel].std()) if n else np.nan,
                "z_stack_std": float(np.sqrt(max(second[sel].mean() - stack_mean**2, 0.0))) if n else np.nan,
            }
        )
    return pd.DataFrame(rows)
