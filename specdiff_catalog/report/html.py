"""The validation report: one self-contained HTML file, its figures as PNG, and the metrics as JSON.

``write_report(DIR, evaluation, spectra)`` takes the photo-z evaluation
(``report.evaluate.EvaluationResult``) and, optionally, the spectral validation
(``report.spectral_validation.SpectralValidation``) and writes::

    DIR/report.html     figures embedded as base64 PNG: opens offline, can be mailed
    DIR/*.png           the same figures, one file each
    DIR/metrics.json    every number of the report (photo-z table, spectral summary)

``evaluation_report`` is what ``specdiff-catalog evaluate --report DIR`` runs.
"""

from __future__ import annotations

import base64
import html
import io
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from specdiff_catalog import __version__, defaults
from specdiff_catalog.report import plots

N_EXAMPLES = 12
DPI = 110
CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1500px; color: #222; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 2em; }
figure { margin: 1.2em 0; } figcaption { color: #555; font-size: .9em; max-width: 1100px; }
img { max-width: 100%; border: 1px solid #eee; }
table { border-collapse: collapse; font-size: .85em; margin: .8em 0; }
th, td { border: 1px solid #ccc; padding: .25em .6em; text-align: right; } th { background: #f2f2f2; }
.note { background: #fff4d6; border-left: 4px solid #e0a800; padding: .5em 1em; }
.meta td, .meta th { text-align: left; }
"""


@dataclass
class Report:
    """What ``write_report`` wrote: the HTML file, the PNG files (by figure name) and the JSON."""

    html: Path
    figures: dict[str, Path] = field(default_factory=dict)
    metrics: Path | None = None


class _Page:
    """Sections of figures and tables, rendered to one HTML document; figures also go to PNG files."""

    def __init__(self, out_dir: Path, title: str):
        self.out_dir, self.title = out_dir, title
        self.parts: list[str] = []
        self.files: dict[str, Path] = {}

    def heading(self, text: str) -> None:
        self.parts.append(f"<h2>{html.escape(text)}</h2>")

    def paragraph(self, text: str, css: str = "") -> None:
        self.parts.append(
            f'<p class="{css}">{html.escape(text)}</p>' if css else f"<p>{html.escape(text)}</p>"
        )

    def table(self, frame: pd.DataFrame, caption: str = "", css: str = "", index: bool = True) -> None:
        """A table; counts (rows or columns named n, n_*) print as integers, other numbers to 4 digits."""
        from specdiff_catalog.report.evaluate import display_frame

        body = display_frame(frame).to_html(na_rep="-", index=index, border=0, classes=css)
        self.parts.append((f"<p><b>{html.escape(caption)}</b></p>" if caption else "") + body)

    def figure(self, name: str, fig: Any, caption: str) -> None:
        import matplotlib.pyplot as plt

        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=DPI)
        plt.close(fig)
        data = buffer.getvalue()
        path = self.out_dir / f"{name}.png"
        path.write_bytes(data)
        self.files[name] = path
        encoded = base64.b64encode(data).decode("ascii")
        self.parts.append(
            f'<figure id="{name}"><img alt="{html.escape(caption)}" src="data:image/png;base64,{encoded}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        )

    def render(self) -> str:
        return (
            '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>{html.escape(self.title)}</title>"
            f"<style>{CSS}</style></head><body><h1>{html.escape(self.title)}</h1>\n"
            + "\n".join(self.parts)
            + "\n</body></html>\n"
        )


def _provenance(page: _Page, evaluation: Any, spectra: Any) -> None:
    info = dict(evaluation.info) if evaluation is not None else {}
    for key in ("simulated_note", "sample_count_note"):
        if info.get(key):
            page.paragraph(info[key], "note")
    rows: dict[str, Any] = {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "software": f"specdiff-catalog {__version__}",
    }
    for key in (
        "store",
        "input",
        "truth",
        "store_model",
        "baseline_model",
        "n_store",
        "n_truth",
        "n_matched",
    ):
        if key in info:
            rows[key] = info[key]
    if evaluation is not None:
        rows["diffusion PDFs from"] = evaluation.pdf_source
    if spectra is not None:
        rows |= {
            "spectra compared": len(spectra.objects),
            "spectra model": spectra.info.get("model"),
            "spectral truth": spectra.info.get("truth") or "none",
        }
    page.table(pd.DataFrame({"": list(rows.values())}, index=list(rows)), css="meta")


def _example_rows(objects: pd.DataFrame, n: int, seed: int = 0) -> np.ndarray:
    """n object rows spread over the true-redshift range (one per z_true quantile bin, seeded)."""
    rng = np.random.default_rng(seed)
    order = np.argsort(objects["z_true"].to_numpy(), kind="stable")
    return np.array(
        sorted(rng.choice(part) for part in np.array_split(order, min(n, len(order))) if len(part)),
        dtype=np.int64,
    )


def _photoz_section(page: _Page, evaluation: Any) -> None:
    objects, samples = evaluation.objects, evaluation.samples
    z_true = objects["z_true"].to_numpy()
    methods = list(samples)
    z_phot = {m: objects[f"z_phot_{m}"].to_numpy() for m in methods}
    mag_column = next(c for c in objects.columns if c.startswith("mag_"))
    mag = objects[mag_column].to_numpy()
    page.heading("Photometric redshifts")
    page.table(
        evaluation.summary("all"),
        caption="All objects: diffusion (the run's PDFs) vs the tree baseline "
        "(metric definitions: docs/metrics.md; dz = (z_phot - z_true)/(1 + z_true), z_phot = PDF median)",
    )
    page.figure(
        "zphot_vs_ztrue",
        plots.zphot_vs_ztrue(z_true, z_phot),
        "Photometric against true redshift, object density per cell (log scale); dashed: the outlier "
        "boundary |dz| = 0.15 (1 + z).",
    )
    mag_edges = np.arange(np.floor(np.nanpercentile(mag, 1) * 2) / 2, np.nanpercentile(mag, 99.5) + 0.5, 0.5)
    page.figure(
        "dz_vs_magnitude",
        plots.dz_versus(
            mag,
            f"{mag_column.replace('mag_', '')}-band magnitude [AB, de-reddened asinh]",
            z_true,
            z_phot,
            mag_edges,
        ),
        "Redshift error against magnitude: running median and 16-84% range per method.",
    )
    z_edges = np.linspace(0, np.nanpercentile(z_true, 99.5), 17)
    page.figure(
        "dz_vs_redshift",
        plots.dz_versus(z_true, "true redshift z_true", z_true, z_phot, z_edges),
        "Redshift error against true redshift.",
    )
    for binning, label in (
        (mag_column, f"{mag_column.replace('mag_', '')}-band magnitude bin [AB]"),
        ("z_phot", "z_phot bin (each method's own PDF median)"),
        ("coverage", "training-set coverage score bin ([0, 0.01) = LOW_COVERAGE; docs/coverage.md)"),
    ):
        if (evaluation.table["binning"] == binning).any():
            page.table(evaluation.summary(binning), caption=f"Per {label}")
            page.figure(
                f"metrics_by_{binning}",
                plots.metric_by_bin(evaluation.table, binning, label),
                f"Metrics per {label}, diffusion vs baseline.",
            )
    _nz_section(page, evaluation, z_true, z_phot)
    pits = {
        m: plots.rank_pit(objects[f"pit_{m}"].to_numpy(), np.isfinite(samples[m]).sum(axis=1))
        for m in methods
    }
    page.figure(
        "pit_histogram",
        plots.pit_histogram(pits),
        "Probability integral transform, as the randomised rank (rank + U)/(K + 1) of z_true among the K "
        "samples (uniform for calibrated PDFs, without the comb of the K + 1 discrete PIT values): flat = "
        "calibrated; a U shape means PDFs too narrow, a hump too wide.",
    )
    page.figure(
        "pit_qq",
        plots.pit_qq(pits),
        "PIT quantile-quantile plot (the same randomised PIT as the histogram) and its departure from the "
        "diagonal: above it at low quantiles and below at high ones means PDFs too wide, the reverse too "
        "narrow, a shift a bias.",
    )
    page.figure(
        "coverage",
        plots.coverage(samples, z_true),
        "Empirical coverage of central credible intervals against the nominal level "
        f"({len(plots.COVERAGE_LEVELS)} widths from 5% to 99%); on the diagonal = calibrated.",
    )
    rows = _example_rows(objects, N_EXAMPLES)
    labels = [
        f"id {objects['object_id'].iat[i]}  {mag_column[4:]}={mag[i]:.1f}  z_true={z_true[i]:.3f}"
        for i in rows
    ]
    page.figure(
        "example_pdfs",
        plots.example_pdfs({m: samples[m][rows] for m in methods}, z_true[rows], labels),
        "Example PDFs (histograms of the samples) of objects spread over the redshift range; black: z_true.",
    )


def _checks_section(page: _Page, evaluation: Any) -> None:
    """Where the model stands on its training data: the coverage map and the photometry check."""
    objects = evaluation.objects
    if "coverage" not in objects or not np.isfinite(objects["coverage"]).any():
        return
    from specdiff_catalog.flags import Flag

    mag_column = next(c for c in objects.columns if c.startswith("mag_"))
    colour = objects.columns[objects.columns.get_loc(mag_column) + 1]
    low = (objects["flags"].to_numpy() & Flag.LOW_COVERAGE) != 0
    page.heading("Training-set coverage and the photometry check")
    page.paragraph(
        f"{int(low.sum())} of {len(objects)} objects ({100 * low.mean():.1f}%) are LOW_COVERAGE (coverage "
        "score < 0.01: ~1% of objects drawn like the training set are). The metrics per coverage bin are "
        "in the tables above; docs/coverage.md explains both checks."
    )
    page.figure(
        "coverage_map",
        plots.coverage_map(
            objects[mag_column].to_numpy(),
            objects[colour].to_numpy(),
            low,
            f"{mag_column.replace('mag_', '')} [AB, de-reddened asinh]",
            colour,
        ),
        "Share of objects outside the training set's coverage (LOW_COVERAGE) per cell of "
        "colour-magnitude space.",
    )
    if "ppc_pvalue" in objects:
        pvalue = objects["ppc_pvalue"].to_numpy()
        flagged = (objects["flags"].to_numpy() & Flag.PHOTOMETRY_NOT_REPRODUCED) != 0
        page.paragraph(
            f"Posterior-predictive check: {int(flagged.sum())} objects ({100 * flagged.mean():.1f}%) "
            f"PHOTOMETRY_NOT_REPRODUCED (p < {defaults.PPC_PVALUE:g}); "
            f"{100 * flagged[~low].mean():.1f}% inside coverage, "
            f"{100 * flagged[low].mean() if low.any() else float('nan'):.1f}% outside."
        )
        page.figure(
            "ppc_pvalues",
            plots.ppc_pvalues({"inside coverage": pvalue[~low], "LOW_COVERAGE": pvalue[low]}),
            "Posterior-predictive p-values of the photometry (mean over 8 posterior draws of P(chi^2_dof > "
            "chi^2)): roughly flat, with a deficit at 0, for objects the model reproduces; a pile at 0 "
            "for photometry it does not.",
        )


def _nz_section(page: _Page, evaluation: Any, z_true: np.ndarray, z_phot: dict[str, np.ndarray]) -> None:
    """N(z) per z_phot bin: the stacked PDFs against the true redshift histogram (figure and table)."""
    nz = evaluation.nz
    if not len(nz):
        return
    page.table(
        nz.drop(columns=["bin_lo", "bin_hi"]).set_index(["method", "bin"]),
        caption="N(z) per bin of each method's own z_phot: mean and spread of the true redshifts against "
        "those of the stacked PDFs (delta_mean = stacked - true; the stack's spread includes each PDF's "
        "width)",
    )
    edges = np.unique(np.concatenate([nz["bin_lo"].to_numpy(), nz["bin_hi"].to_numpy()]))  # the z_phot bins
    page.figure(
        "nz_by_z_phot",
        plots.nz_by_bin(evaluation.samples, z_true, z_phot, edges),
        "N(z) per z_phot bin (each method's own PDF median): the histogram of the bin's true redshifts "
        "(filled) and the sum of its objects' PDFs (line), each normalised to unit area; bins of fewer than "
        "20 objects are not drawn.",
    )


def _spectra_section(page: _Page, spectra: Any, high_snr: float | None) -> None:
    from specdiff_catalog.report.spectral_validation import HIGH_SNR

    high_snr = HIGH_SNR if high_snr is None else high_snr
    summary = spectra.summary(high_snr)
    page.heading("Spectra from photometry")
    page.paragraph(
        f"{summary['n_objects']} galaxies with DESI-format spectra, predicted from their photometry alone. "
        "The reconstructed spectrum (decoded from the predicted latent) is compared with the observed one "
        "after fitting a free amplitude; chi^2 per pixel uses the observed inverse variance (0.8 A pixels)."
    )
    page.table(
        spectra.chi2_by_snr(),
        caption="Mean chi^2 per pixel by median S/N per pixel of the spectrum "
        "(at z_spec; at the photo-z median; the noiseless truth against the same data = the floor)",
        index=False,
    )
    page.table(
        spectra.dn4000_by_snr(),
        caption="Dn4000 from photometry minus observed (median, NMAD, std), "
        "and minus the truth, by S/N per pixel over rest 3850-4100 A",
        index=False,
    )
    high = summary["dn4000_high_snr"]
    page.paragraph(
        f"High-S/N objects (S/N_4000 >= {high_snr:g}, n = {high['n']}): Dn4000 from photometry - observed: "
        f"median {_fmt(high['median_diff'])}, NMAD {_fmt(high['nmad'])}, std {_fmt(high['std'])}."
    )
    if spectra.examples is not None:
        ex = spectra.examples
        labels = [
            f"TARGETID {r.targetid}  z_spec={r.z_spec:.3f}  S/N={r.snr:.2f}  chi2/pix={r.chi2_pix:.2f}"
            for r in ex.table.itertuples()
        ]
        page.figure(
            "spectra_examples",
            plots.spectra_grid(ex.wave, ex.flux, ex.ivar, ex.model, ex.truth, labels),
            "Observed spectra (grey, rebinned for display), the spectrum predicted from photometry (blue, at "
            "z_spec, free amplitude) and the noiseless truth (green), from the lowest to the highest S/N.",
        )
    page.figure(
        "dn4000",
        plots.dn4000_comparison(spectra.objects, high_snr),
        "Dn4000 (Balogh et al. 1999) of the spectrum predicted from photometry against the observed spectrum "
        "and the truth, and their difference against the S/N of the spectrum.",
    )
    page.figure(
        "chi2_vs_snr",
        plots.chi2_versus_snr(spectra.objects),
        "chi^2 per pixel of each spectrum against its S/N.",
    )
    page.figure(
        "residual_stack",
        plots.residual_stack(spectra.stack),
        "Residuals averaged over all objects in 20 A rest-frame bins, with the noise of that average, and "
        "the mean chi^2 per pixel per bin (sky-line residuals, absent from the ivar, raise it in the red).",
    )


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def write_report(
    out_dir: str | Path,
    evaluation: Any = None,
    spectra: Any = None,
    *,
    title: str = "specdiff-catalog validation report",
    high_snr: float | None = None,
) -> Report:
    """Write report.html, one PNG per figure and metrics.json into ``out_dir`` (created); with
    ``spectra`` also spectra.parquet, its per-object table (``SpectralValidation.objects``: e.g.
    to join Dn4000 to a mock's target classes).

    evaluation: an ``EvaluationResult`` (photo-z section); spectra: a ``SpectralValidation``
    (spectra section); at least one of them. high_snr: the S/N_4000 threshold of the
    Dn4000 headline numbers (default ``spectral_validation.HIGH_SNR``).
    """
    if evaluation is None and spectra is None:
        raise ValueError("a report needs a photo-z evaluation, a spectral validation or both")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    page = _Page(out_dir, title)
    _provenance(page, evaluation, spectra)
    metrics: dict[str, Any] = {"software_version": __version__}
    if evaluation is not None:
        _photoz_section(page, evaluation)
        _checks_section(page, evaluation)
        metrics["photoz"] = evaluation.to_json()
    if spectra is not None:
        _spectra_section(page, spectra, high_snr)
        metrics["spectra"] = spectra.summary(*(() if high_snr is None else (high_snr,)))
        spectra.objects.to_parquet(out_dir / "spectra.parquet", index=False)
    path = out_dir / "report.html"
    path.write_text(page.render(), encoding="utf-8")
    metrics_path = out_dir / "metrics.json"
    metrics_path.write_text(json.dumps(metrics, indent=1, default=_json_default))
    return Report(html=path, figures=page.files, metrics=metrics_path)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def evaluation_report(
    store: str | Path,
    truth: str | Path,
    out_dir: str | Path,
    *,
    model: str | Path | None = None,
    desi: str | Path | None = None,
    spectra_truth: str | Path | None = None,
    max_spectra: int | None = None,
    seed: int = defaults.SEED,
    partial: bool = False,
) -> tuple[Any, Report]:
    """``evaluate --report``: the photo-z evaluation of ``store`` against ``truth`` and, with
    ``desi`` (a directory of coadd files), the spectral validation with the store's model
    (``spectra_truth``: the mock truth directory; default: the directory of ``truth`` when it
    holds spectroscopic.parquet). The spectra are predicted with the model that wrote the
    store (``model`` only chooses the baseline); ``partial``: as ``evaluate_store``'s. Returns the
    EvaluationResult and the Report."""
    from specdiff_catalog.io.store import open_store
    from specdiff_catalog.models import load_model
    from specdiff_catalog.reconstruct import store_model_dir
    from specdiff_catalog.report.evaluate import evaluate_store
    from specdiff_catalog.report.spectral_validation import validate_spectra

    evaluation = evaluate_store(store, truth, model, seed=seed, partial=partial)
    spectra = None
    if desi is not None:
        if spectra_truth is None and (Path(truth).parent / "spectroscopic.parquet").is_file():
            spectra_truth = Path(truth).parent
        model_dir = store_model_dir(open_store(store, mode="r"))  # the model that wrote the store
        spectra = validate_spectra(
            desi, load_model(model_dir), truth=spectra_truth, max_objects=max_spectra, seed=seed
        )
    return evaluation, write_report(out_dir, evaluation, spectra)


CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def chromium_screenshot(
    html_path: str | Path,
    png_path: str | Path,
    *,
    width: int = 1500,
    height: int = 12000,
    timeout: float = 120.0,
) -> Path:
    """Render an HTML file in headless Chromium and save a width x height screenshot (PNG).

    A check that a report opens in a browser with every figure; raises FileNotFoundError
    when no Chromium binary is on PATH and RuntimeError when Chromium fails.
    """
    import shutil
    import subprocess
    import tempfile

    binary = next((found for name in CHROMIUM_NAMES if (found := shutil.which(name))), None)
    if binary is None:
        raise FileNotFoundError(f"no Chromium binary on PATH (looked for {', '.join(CHROMIUM_NAMES)})")
    png_path = Path(png_path).resolve()
    with tempfile.TemporaryDirectory() as profile:
        command = [
            binary,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--hide-scrollbars",
            f"--user-data-dir={profile}",
            f"--screenshot={png_path}",
            f"--window-size={width},{height}",
            Path(html_path).resolve().as_uri(),
        ]
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0 or not png_path.is_file():
        raise RuntimeError(f"{binary} failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    return png_path
