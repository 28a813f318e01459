"""The figures of the validation report, each from plain arrays (matplotlib, Agg backend).

Every function returns a ``matplotlib.figure.Figure`` with labelled axes (units in
brackets), a legend where more than one thing is drawn and a title that says what
the panel shows. Methods are drawn in fixed colours (``COLORS``) across figures.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping

import matplotlib

matplotlib.use("Agg")  # no display: figures are written to files

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib import colors, ticker
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from specdiff_catalog.metrics import coverage_curve, delta_z
from specdiff_catalog.spectral import rebin

COLORS = {
    "diffusion": "#1f77b4",
    "baseline": "#d62728",
    "observed": "0.55",
    "reconstructed": "#1f77b4",
    "truth": "#2ca02c",
}
COVERAGE_LEVELS = np.round(np.linspace(0.05, 0.99, 48), 4)
OUTLIER_CUT = 0.15
METRIC_NAMES = {
    "bias": "bias = median(dz)",
    "sigma_nmad": "sigma_NMAD of dz",
    "eta_015": "outliers |dz| > 0.15",
    "crps": "mean CRPS",
    "pit_ks": "PIT KS statistic",
    "coverage_68": "68% interval coverage",
}


def _figure(width: float, height: float, ncols: int = 1, nrows: int = 1, **kwargs):
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(width, height), squeeze=False, layout="constrained", **kwargs
    )
    return fig, axes


def _plain_log_ticks(axis) -> None:
    """Numbers like 0.5, 2, 10 on a log axis instead of 5x10^-1."""
    axis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(ticker.NullFormatter())


def _color(method: str, i: int) -> str:
    return COLORS.get(method, f"C{i + 2}")


def zphot_vs_ztrue(
    z_true: np.ndarray, z_phot: Mapping[str, np.ndarray], z_max: float | None = None
) -> Figure:
    """One 2-D density panel per method: z_phot (PDF median) against z_true, log colour scale,
    the 1:1 line and the |dz| = 0.15 (1 + z) outlier boundaries."""
    top = z_max or float(np.nanpercentile(z_true, 99.5) * 1.1)
    fig, axes = _figure(5.2 * len(z_phot), 4.8, ncols=len(z_phot), sharey=True)
    edges = np.linspace(0, top, 81)
    line = np.array([0, top])
    for ax, (method, zp) in zip(axes[0], z_phot.items(), strict=True):
        ok = np.isfinite(zp) & np.isfinite(z_true)
        counts, _, _ = np.histogram2d(z_true[ok], zp[ok], bins=[edges, edges])
        image = ax.pcolormesh(
            edges, edges, np.ma.masked_equal(counts.T, 0), cmap="viridis", norm=colors.LogNorm(vmin=1)
        )
        ax.plot(line, line, "w-", lw=1.2, label="z_phot = z_true")
        for sign in (1, -1):
            ax.plot(
                line,
                line + sign * OUTLIER_CUT * (1 + line),
                "w--",
                lw=0.9,
                label="|dz| = 0.15 (1 + z)" if sign == 1 else None,
            )
        ax.set(
            xlim=(0, top),
            ylim=(0, top),
            xlabel="true redshift z_true",
            title=f"{method} ({ok.sum()} objects)",
        )
        ax.set_facecolor("0.93")
        ax.legend(loc="upper left", fontsize=8, facecolor="0.3", labelcolor="w", framealpha=0.8)
        fig.colorbar(image, ax=ax, label="objects per cell", shrink=0.85)
    axes[0, 0].set_ylabel("photometric redshift z_phot (PDF median)")
    return fig


def _running(x: np.ndarray, y: np.ndarray, edges: np.ndarray, min_count: int = 10):
    """Bin centres, median, 16th and 84th percentile of y in bins of x (NaN where < min_count)."""
    centre = 0.5 * (edges[:-1] + edges[1:])
    stats = np.full((3, centre.size), np.nan)
    idx = np.digitize(x, edges) - 1
    for i in range(centre.size):
        values = y[(idx == i) & np.isfinite(y)]
        if values.size >= min_count:
            stats[:, i] = np.percentile(values, [50, 16, 84])
    return centre, stats


def dz_versus(
    x: np.ndarray, xlabel: str, z_true: np.ndarray, z_phot: Mapping[str, np.ndarray], edges: np.ndarray
) -> Figure:
    """dz = (z_phot - z_true)/(1 + z_true) against x (magnitude or redshift): the running median
    and 16-84% band per method, over the points of the first method."""
    fig, axes = _figure(7.5, 4.4)
    ax = axes[0, 0]
    first = next(iter(z_phot))
    dz0 = delta_z(z_phot[first], z_true)
    ax.scatter(x, dz0, s=2, c="0.75", alpha=0.4, rasterized=True, label=f"{first}: objects")
    for i, (method, zp) in enumerate(z_phot.items()):
        centre, (med, lo, hi) = _running(x, delta_z(zp, z_true), edges)
        ax.plot(centre, med, "-o", ms=3, color=_color(method, i), label=f"{method}: median")
        ax.fill_between(centre, lo, hi, color=_color(method, i), alpha=0.18, label=f"{method}: 16-84%")
    ax.axhline(0, color="k", lw=0.8)
    for sign in (1, -1):
        ax.axhline(sign * OUTLIER_CUT, color="k", ls=":", lw=0.8, label="|dz| = 0.15" if sign == 1 else None)
    ax.set(
        xlabel=xlabel,
        ylabel="dz = (z_phot - z_true) / (1 + z_true)",
        ylim=(-0.4, 0.4),
        xlim=(edges[0], edges[-1]),
        title=f"photo-z error against {xlabel.split(' [')[0]}",
    )
    ax.legend(fontsize=8, ncol=2, loc="upper left")
    return fig


def metric_by_bin(
    table: pd.DataFrame,
    binning: str,
    xlabel: str,
    metrics: tuple[str, ...] = ("bias", "sigma_nmad", "eta_015", "crps"),
) -> Figure:
    """Metrics per bin (x: the bins in order, labelled [lo, hi)) for each method, from the rows
    of an evaluation table (columns binning, bin, bin_lo, method and the metrics)."""
    rows = table[table["binning"] == binning].sort_values("bin_lo", kind="stable")
    labels = list(dict.fromkeys(rows["bin"]))
    fig, axes = _figure(3.4 * len(metrics), 3.6, ncols=len(metrics))
    for ax, metric in zip(axes[0], metrics, strict=True):
        for i, (method, part) in enumerate(rows.groupby("method", sort=False)):
            ax.plot(
                [labels.index(b) for b in part["bin"]],
                part[metric],
                "-o",
                ms=4,
                color=_color(method, i),
                label=method,
            )
        if metric == "bias":
            ax.axhline(0, color="k", lw=0.8)
        ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right", fontsize=7)
        ax.set(xlabel=xlabel, title=METRIC_NAMES.get(metric, metric))
    axes[0, 0].legend(fontsize=8)
    return fig


def rank_pit(pit: np.ndarray, n_samples: np.ndarray, seed: int = 0) -> np.ndarray:
    """PIT values for display: (rank + U) / (K + 1), rank = round(PIT x K), U ~ U(0, 1) (seeded).

    With K samples the PIT of docs/metrics.md takes only the K + 1 values j / K, so a histogram
    whose bin edges fall on them shows a comb; the randomised rank is exactly uniform on
    (0, 1) for calibrated PDFs and keeps the same shape otherwise. pit, n_samples: (N,).
    """
    k = np.asarray(n_samples, dtype=np.float64)
    rank = np.round(np.asarray(pit, dtype=np.float64) * k)
    return (rank + np.random.default_rng(seed).random(rank.size)) / (k + 1)


def pit_histogram(pit: Mapping[str, np.ndarray], n_bins: int = 20) -> Figure:
    """PIT histograms (density) per method with the uniform expectation and its +-1 sigma band."""
    fig, axes = _figure(6.5, 4.0)
    ax = axes[0, 0]
    edges = np.linspace(0, 1, n_bins + 1)
    n = 0
    for i, (method, values) in enumerate(pit.items()):
        values = values[np.isfinite(values)]
        n = max(n, values.size)
        ax.hist(
            values,
            bins=edges,
            density=True,
            histtype="step",
            lw=1.8,
            color=_color(method, i),
            label=f"{method} ({values.size} objects)",
        )
    if n:
        sigma = np.sqrt((n / n_bins) * (1 - 1 / n_bins)) / (n / n_bins)
        ax.axhspan(1 - sigma, 1 + sigma, color="0.85", label="uniform +- 1 sigma (counting noise)")
    ax.axhline(1, color="k", lw=0.8)
    ax.set(
        xlabel="PIT (randomised rank of z_true among the PDF samples)",
        ylabel="density",
        xlim=(0, 1),
        title="PIT histogram (flat = calibrated; U shape = too narrow)",
    )
    ax.legend(fontsize=8, loc="lower center")
    return fig


def pit_qq(pit: Mapping[str, np.ndarray]) -> Figure:
    """Quantile-quantile plot of the PIT per method against U(0, 1) (top) and its departure
    from the diagonal (bottom): above the diagonal at low quantiles and below it at high ones
    = PDFs too wide; the reverse = too narrow; shifted = biased."""
    fig, axes = _figure(5.4, 6.2, nrows=2, sharex=True, height_ratios=(3, 1.4))
    top, bottom = axes[0, 0], axes[1, 0]
    for i, (method, values) in enumerate(pit.items()):
        values = np.sort(values[np.isfinite(values)])
        uniform = (np.arange(values.size) + 0.5) / max(values.size, 1)
        color = _color(method, i)
        top.plot(uniform, values, "-", lw=1.8, color=color, label=f"{method} ({values.size} objects)")
        bottom.plot(uniform, values - uniform, "-", lw=1.4, color=color)
    top.plot([0, 1], [0, 1], "k--", lw=0.8, label="calibrated")
    bottom.axhline(0, color="k", ls="--", lw=0.8)
    top.set(
        xlim=(0, 1),
        ylim=(0, 1),
        ylabel="quantile of the PIT values",
        title="PIT quantile-quantile plot (on the diagonal = calibrated)",
    )
    bottom.set(xlabel="quantile of U(0, 1)", ylabel="PIT quantile - uniform")
    top.legend(fontsize=8, loc="upper left")
    return fig


def nz_by_bin(
    samples: Mapping[str, np.ndarray],
    z_true: np.ndarray,
    z_phot: Mapping[str, np.ndarray],
    edges: np.ndarray,
    min_count: int = 20,
    ncols: int = 3,
) -> Figure:
    """N(z) per z_phot bin, one panel per bin: for each method, the histogram of the true
    redshifts of the objects its own z_phot puts in the bin (filled) and the stack of their
    PDFs (line; each object's samples weighted to unit mass), in objects per grid step. Bins
    where no method has ``min_count`` objects are not drawn. samples: method -> (N, K);
    z_true (N,); z_phot: method -> (N,); edges (M + 1,)."""
    top = float(np.nanpercentile(z_true, 99.5) * 1.15)
    grid = np.linspace(0, top, 61).tolist()
    finite = {m: np.isfinite(np.asarray(x, dtype=np.float64)) for m, x in samples.items()}
    selections = [
        {
            m: finite[m].any(axis=1) & np.isfinite(z_true) & (z_phot[m] >= lo) & (z_phot[m] < hi)
            for m in samples
        }
        for lo, hi in itertools.pairwise(edges)
    ]
    shown = [b for b, sel in enumerate(selections) if max(s.sum() for s in sel.values()) >= min_count]
    fig, panels = _panel_grid(max(len(shown), 1), ncols, 4.2, 3.0)
    for (k, ax), b in zip(panels, shown, strict=False):
        for i, method in enumerate(samples):
            sel, color = selections[b][method], _color(method, i)
            x, ok = np.asarray(samples[method], dtype=np.float64)[sel], finite[method][sel]
            weights = np.where(ok, 1.0 / ok.sum(axis=1, keepdims=True), 0.0)
            ax.hist(
                z_true[sel], bins=grid, color=color, alpha=0.25, label=f"{method}: true ({int(sel.sum())})"
            )
            ax.hist(
                np.where(ok, x, 0.0).ravel(),
                bins=grid,
                weights=weights.ravel(),
                histtype="step",
                lw=1.6,
                color=color,
                label=f"{method}: stacked PDFs",
            )
        ax.axvspan(edges[b], edges[b + 1], color="0.85", zorder=0)
        ax.set_xlim(0, top)
        ax.set_title(f"z_phot in [{edges[b]:g}, {edges[b + 1]:g})", fontsize=9)
        ax.tick_params(labelsize=7)
        if k == 0:
            ax.legend(fontsize=7)
        if k % ncols == 0:
            ax.set_ylabel(f"objects per dz = {top / 60:.3g}", fontsize=8)
        ax.set_xlabel("redshift z", fontsize=8)
    return fig


def coverage(
    samples: Mapping[str, np.ndarray], z_true: np.ndarray, levels: np.ndarray = COVERAGE_LEVELS
) -> Figure:
    """Empirical coverage of central credible intervals against their nominal level, per method."""
    fig, axes = _figure(5.0, 4.6)
    ax = axes[0, 0]
    for i, (method, x) in enumerate(samples.items()):
        ax.plot(levels, coverage_curve(x, z_true, levels), "-", lw=1.8, color=_color(method, i), label=method)
    ax.plot([0, 1], [0, 1], "k--", lw=0.8, label="nominal = empirical")
    for level in (0.68, 0.95):
        ax.axvline(level, color="0.7", lw=0.7)
    ax.set(
        xlabel="nominal coverage of the central interval",
        ylabel="fraction of z_true inside",
        xlim=(0, 1),
        ylim=(0, 1),
        title="coverage of credible intervals",
    )
    ax.legend(fontsize=8, loc="upper left")
    return fig


def coverage_map(
    mag: np.ndarray, colour: np.ndarray, low: np.ndarray, mag_label: str, colour_label: str
) -> Figure:
    """Share of LOW_COVERAGE objects (low (N,) bool) per hexagonal cell of colour (N,) vs magnitude (N,)."""
    fig, axes = _figure(6.4, 4.6)
    ax = axes[0, 0]
    ok = np.isfinite(mag) & np.isfinite(colour)
    cells = ax.hexbin(
        mag[ok],
        colour[ok],
        C=np.asarray(low, dtype=float)[ok],
        reduce_C_function=np.mean,
        gridsize=30,
        cmap="magma_r",
        vmin=0,
        vmax=1,
        mincnt=3,
    )
    fig.colorbar(cells, ax=ax, label="share with LOW_COVERAGE")
    ax.set(xlabel=mag_label, ylabel=colour_label, title="training-set coverage (cells with >= 3 objects)")
    return fig


def ppc_pvalues(pvalues: Mapping[str, np.ndarray], n_bins: int = 20) -> Figure:
    """Histograms (density) of posterior-predictive p-values, one line per group."""
    fig, axes = _figure(5.6, 4.2)
    ax = axes[0, 0]
    bins = np.linspace(0, 1, n_bins + 1)
    for i, (label, p) in enumerate(pvalues.items()):
        p = np.asarray(p)[np.isfinite(p)]
        if p.size:
            ax.hist(
                p,
                bins=bins,
                density=True,
                histtype="step",
                lw=1.8,
                color=f"C{i}",
                label=f"{label} ({p.size})",
            )
    ax.set(xlabel="posterior-predictive p-value of the photometry", ylabel="density", xlim=(0, 1))
    ax.legend(fontsize=8)
    return fig


def _panel_grid(n: int, ncols: int, width: float, height: float) -> tuple[Figure, list[tuple[int, Axes]]]:
    """A figure of n panels (width x height inches each) in rows of ncols; unused panels hidden."""
    nrows = -(-n // ncols)
    fig, axes = _figure(width * ncols, height * nrows, ncols=ncols, nrows=nrows)
    for ax in axes.flat[n:]:
        ax.axis("off")
    return fig, list(enumerate(axes.flat[:n]))


def example_pdfs(
    samples: Mapping[str, np.ndarray], z_true: np.ndarray, labels: list[str], ncols: int = 4
) -> Figure:
    """A grid of PDFs (sample histograms per method) with the true redshift marked."""
    fig, panels = _panel_grid(len(labels), ncols, 3.2, 2.4)
    for k, ax in panels:
        rows = [x[k][np.isfinite(x[k])] for x in samples.values()]
        pooled = np.concatenate([*rows, [z_true[k]]])
        lo, hi = np.percentile(pooled, [0.5, 99.5])
        pad = max(0.05, 0.15 * (hi - lo))
        edges = np.linspace(max(lo - pad, 0), hi + pad, 41)
        for i, (method, values) in enumerate(zip(samples, rows, strict=True)):
            ax.hist(
                values,
                bins=edges.tolist(),
                density=True,
                histtype="stepfilled" if i == 0 else "step",
                lw=1.5,
                alpha=0.45 if i == 0 else 1,
                color=_color(method, i),
                label=method,
            )
        ax.axvline(z_true[k], color="k", lw=1.5, label="z_true")
        ax.set_title(labels[k], fontsize=8)
        ax.set_xlabel("z", fontsize=8)
        ax.tick_params(labelsize=7)
        if k == 0:
            ax.legend(fontsize=7)
            ax.set_ylabel("p(z)", fontsize=8)
    return fig


def _smooth(wave: np.ndarray, flux: np.ndarray, ivar: np.ndarray, factor: int):
    """Inverse-variance-weighted rebinning of one spectrum for display; NaN where fully masked."""
    wave_b, flux_b, ivar_b = rebin(wave, flux[None], ivar[None], factor)
    return wave_b, np.where(ivar_b[0] > 0, flux_b[0], np.nan)


def spectra_grid(
    wave: np.ndarray,
    flux: np.ndarray,
    ivar: np.ndarray,
    model: np.ndarray,
    truth: np.ndarray,
    labels: list[str],
    ncols: int = 3,
    rebin: int = 8,
) -> Figure:
    """Observed spectra (rebinned by ``rebin`` for display, inverse-variance weighted) with the
    spectrum reconstructed from photometry and, where known, the noiseless truth."""
    fig, panels = _panel_grid(len(labels), ncols, 5.0, 2.6)
    for k, ax in panels:
        w, f = _smooth(wave, flux[k], ivar[k], rebin)
        ax.plot(w, f, color=COLORS["observed"], lw=0.6, label=f"observed (rebinned x{rebin})")
        if np.isfinite(truth[k]).any():
            ax.plot(wave, truth[k], color=COLORS["truth"], lw=0.9, label="noiseless truth")
        ax.plot(wave, model[k], color=COLORS["reconstructed"], lw=1.0, label="from photometry")
        finite = f[np.isfinite(f)]
        if finite.size:
            lo, hi = np.percentile(finite, [1, 99])
            ax.set_ylim(min(lo, 0) - 0.1 * (hi - lo), hi + 0.3 * (hi - lo))
        ax.set_title(labels[k], fontsize=8)
        ax.tick_params(labelsize=7)
        ax.set_xlabel("observed wavelength [Angstrom]", fontsize=8)
        if k % ncols == 0:
            ax.set_ylabel("F_lambda [1e-17 erg/s/cm^2/A]", fontsize=8)
        if k == 0:
            ax.legend(fontsize=7, loc="upper right")
    return fig


def dn4000_comparison(objects: pd.DataFrame, high_snr: float) -> Figure:
    """Dn4000 reconstructed from photometry against the observed (colour: S/N per pixel near
    4000 A) and against the truth; the difference against S/N with running median and scatter."""
    has_truth = objects["dn4000_true"].notna().any()
    fig, axes = _figure(4.6 * (3 if has_truth else 2), 4.3, ncols=3 if has_truth else 2)
    snr = objects["snr_4000"].to_numpy()
    lim = (0.9, 2.3)
    ax = axes[0, 0]
    points = ax.scatter(
        objects["dn4000_obs"],
        objects["dn4000_rec"],
        c=np.log10(np.clip(snr, 0.05, None)),
        s=8,
        cmap="plasma",
        vmin=-1,
        vmax=1,
    )
    high = snr >= high_snr
    ax.scatter(
        objects["dn4000_obs"][high],
        objects["dn4000_rec"][high],
        s=30,
        facecolors="none",
        edgecolors="k",
        lw=0.8,
        label=f"S/N_4000 >= {high_snr:g}",
    )
    ax.plot(lim, lim, "k--", lw=0.8, label="1:1")
    ax.set(
        xlim=lim,
        ylim=lim,
        xlabel="Dn4000 of the observed spectrum",
        ylabel="Dn4000 from photometry",
        title="reconstructed vs observed",
    )
    ax.legend(fontsize=8, loc="upper left")
    fig.colorbar(points, ax=ax, label="log10 S/N per pixel (rest 3850-4100 A)", shrink=0.85)
    if has_truth:
        ax = axes[0, 1]
        ax.scatter(
            objects["dn4000_true"],
            objects["dn4000_rec"],
            s=8,
            color=COLORS["reconstructed"],
            label="from photometry",
        )
        ax.scatter(
            objects["dn4000_true"],
            objects["dn4000_obs"],
            s=6,
            color=COLORS["observed"],
            alpha=0.5,
            label="observed spectrum",
        )
        ax.plot(lim, lim, "k--", lw=0.8, label="1:1")
        ax.set(
            xlim=lim,
            ylim=lim,
            xlabel="Dn4000 of the noiseless true spectrum",
            ylabel="Dn4000",
            title="against the truth",
        )
        ax.legend(fontsize=8, loc="upper left")
    ax = axes[0, -1]
    diff = (objects["dn4000_rec"] - objects["dn4000_obs"]).to_numpy()
    ax.scatter(snr, diff, s=6, color="0.6", alpha=0.6, label="objects")
    edges = np.geomspace(max(np.nanpercentile(snr, 1), 0.05), np.nanmax(snr) * 1.01, 9)
    centre, (med, lo, hi) = _running(snr, diff, edges, min_count=5)
    ax.plot(centre, med, "-o", color="k", ms=3, label="median")
    ax.fill_between(centre, lo, hi, color="k", alpha=0.15, label="16-84%")
    ax.axhline(0, color="k", lw=0.8)
    ax.axvline(high_snr, color="0.5", ls=":", lw=0.8)
    ax.set(
        xscale="log",
        ylim=(-1, 1),
        xlabel="S/N per pixel (rest 3850-4100 A, 0.8 A pixels)",
        ylabel="Dn4000 from photometry - observed",
        title="agreement against spectral S/N",
    )
    _plain_log_ticks(ax.xaxis)
    ax.legend(fontsize=8)
    return fig


def chi2_versus_snr(objects: pd.DataFrame) -> Figure:
    """chi^2 per pixel against the spectrum's S/N: reconstruction at z_spec, at z_photo, truth floor."""
    fig, axes = _figure(6.5, 4.2)
    ax = axes[0, 0]
    snr = objects["snr"].to_numpy()
    for column, label, color in (
        ("chi2_pix", "from photometry, at z_spec", COLORS["reconstructed"]),
        ("chi2_pix_zphot", "from photometry, at z_phot", "#ff7f0e"),
        ("chi2_pix_truth", "noiseless truth (floor)", COLORS["truth"]),
    ):
        if objects[column].notna().any():
            ax.scatter(snr, objects[column], s=5, color=color, alpha=0.5, label=label)
    ax.axhline(1, color="k", lw=0.8)
    top = np.nanpercentile(objects[["chi2_pix", "chi2_pix_zphot"]].to_numpy(dtype=np.float64), 99.5)
    ax.set(
        xscale="log",
        ylim=(0.9, max(1.5, top)),
        xlabel="median S/N per pixel of the observed spectrum",
        ylabel="chi^2 per pixel (free amplitude)",
        title="reconstructed vs observed spectra",
    )
    _plain_log_ticks(ax.xaxis)
    ax.legend(fontsize=8)
    return fig


def residual_stack(stack: pd.DataFrame) -> Figure:
    """Residuals (observed - A model)/A averaged over objects in rest-frame bins, with the noise
    of that average, and the mean chi^2 per pixel of each bin."""
    stack = stack[stack["n"] >= max(100, 0.02 * stack["n"].max())]  # leave out the thinly covered ends
    centre = 0.5 * (stack["wave_lo"] + stack["wave_hi"])
    fig, axes = _figure(9.0, 5.2, nrows=2, sharex=True)
    ax = axes[0, 0]
    error = stack["rms_noise"] / np.sqrt(stack["n"])
    ax.fill_between(centre, -error, error, color="0.8", step="mid", label="noise of the mean (+- 1 sigma)")
    ax.step(
        centre,
        stack["mean_residual"],
        where="mid",
        color=COLORS["reconstructed"],
        lw=1,
        label="mean residual over objects",
    )
    ax.axhline(0, color="k", lw=0.6)
    ax.set(
        ylabel="(observed - A model) / A",
        title="stacked residuals in the rest frame (units of the normalised spectrum)",
    )
    ax.legend(fontsize=8, loc="upper right")
    ax = axes[1, 0]
    if "chi2_pix_truth" in stack:
        ax.step(
            centre,
            stack["chi2_pix_truth"],
            where="mid",
            color=COLORS["truth"],
            lw=2.5,
            alpha=0.6,
            label="noiseless truth (floor: noise + sky residuals)",
        )
    ax.step(
        centre,
        stack["chi2_pix"],
        where="mid",
        color=COLORS["reconstructed"],
        lw=1,
        label="from photometry: mean chi^2 per pixel",
    )
    ax.axhline(1, color="0.5", ls="--", lw=0.8, label="noise level (chi^2 = 1)")
    ax.set(xlabel="rest-frame wavelength [Angstrom]", ylabel="chi^2 per pixel", ylim=(0.5, None))
    ax.legend(fontsize=8, loc="upper left")
    return fig
