import json
import re
import shutil

import numpy as np
import pytest

from specdiff_catalog import spectral
from specdiff_catalog.cli import main
from specdiff_catalog.report.html import CHROMIUM_NAMES, chromium_screenshot
from specdiff_catalog.report.spectral_validation import (
    dn4000_error,
    fit_amplitude,
    median_snr,
    validate_spectra,
)

FIGURES = (
    "zphot_vs_ztrue",
    "dz_vs_magnitude",
    "dz_vs_redshift",
    "metrics_by_mag_r",
    "metrics_by_z_phot",
    "nz_by_z_phot",
    "pit_histogram",
    "pit_qq",
    "coverage",
    "example_pdfs",
    "metrics_by_coverage",
    "coverage_map",
    "ppc_pvalues",
    "spectra_examples",
    "dn4000",
    "chi2_vs_snr",
    "residual_stack",
)


@pytest.fixture(scope="module")
def report_dir(trained_tiny, tiny_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    assert (
        main(
            [
                "evaluate",
                "--pz",
                str(tiny_run),
                "--truth",
                str(trained_tiny.truth),
                "--report",
                str(out),
                "--spectra",
                str(trained_tiny.mock / "spectra"),
                "--max-spectra",
                "120",
            ]
        )
        == 0
    )
    return out


def test_fit_amplitude_is_the_weighted_least_squares_scale():
    rng = np.random.default_rng(1)
    model = 1.0 + 0.5 * np.sin(np.linspace(0, 20, 4000))[None, :].repeat(3, axis=0)
    sigma = np.array([[0.1], [0.5], [2.0]])
    flux = 3.0 * model + sigma * rng.standard_normal(model.shape)
    ivar = np.broadcast_to(1 / sigma**2, model.shape).copy()
    ivar[:, :100] = 0  # masked pixels do not count
    model[0, 200:300] = np.nan  # nor pixels outside the model's range
    amp, chi2, n = fit_amplitude(flux, ivar, model)
    assert list(n) == [3800, 3900, 3900]
    assert np.allclose(amp, 3.0, atol=5 * sigma.ravel() / np.sqrt(n * 1.1))  # 5 standard errors
    assert np.allclose(chi2 / (n - 1), 1.0, atol=5 * np.sqrt(2 / n))
    assert np.allclose(median_snr(flux, ivar), 3.0 / sigma.ravel(), rtol=0.05)


def test_rank_pit_is_uniform_for_calibrated_samples():
    from scipy import stats

    from specdiff_catalog.metrics import pit
    from specdiff_catalog.report.plots import rank_pit

    rng = np.random.default_rng(4)
    samples = rng.normal(size=(20000, 100))
    truth = rng.normal(size=20000)  # drawn from the same distribution: calibrated
    raw = pit(samples, truth)
    counts = np.histogram(raw, bins=20, range=(0, 1))[0]
    assert (
        counts.max() / counts.min() > 1.12
    )  # the comb: bins hold 5 or 6 of the 101 values (expected ratio 1.2)
    smooth = rank_pit(raw, np.full(20000, 100))
    counts = np.histogram(smooth, bins=20, range=(0, 1))[0]
    assert stats.chisquare(counts).pvalue > 0.001 and stats.kstest(smooth, "uniform").pvalue > 0.001


def test_dn4000_error_is_the_scatter_of_noisy_measurements():
    rng = np.random.default_rng(2)
    wave = np.arange(3600.0, 4400.0, 0.8)[None, :].repeat(2000, axis=0)
    clean = 1.0 + 0.6 / (1 + np.exp(-(wave - 3975) / 15))  # a 4000 A break, Dn4000 ~1.7
    sigma = 0.5
    noisy = clean + sigma * rng.standard_normal(clean.shape)
    ivar = np.full(clean.shape, 1 / sigma**2)
    measured = spectral.dn4000(wave, noisy, ivar)
    predicted = dn4000_error(wave, noisy, ivar)
    # 2000 realisations: the std is known to ~1.6%; the error formula is first order
    assert np.std(measured) == pytest.approx(np.median(predicted), rel=0.06)


def test_spectral_validation_against_the_mock_truth(trained_tiny):
    result = validate_spectra(
        trained_tiny.mock / "spectra",
        trained_tiny.model,
        truth=trained_tiny.mock / "truth",
        max_objects=80,
        n_samples=32,
    )
    obj = result.objects
    assert len(obj) == 80 and obj["targetid"].is_unique
    # the noiseless truth is the floor: chi^2/pixel ~1.1 (sky-line residuals are not in the ivar;
    # docs/mock.md)
    assert obj["chi2_pix_truth"].between(0.95, 1.4).all()
    assert (obj["chi2_pix"] >= obj["chi2_pix_truth"] - 0.02).mean() > 0.95
    # Dn4000 of the truth is what the observed spectrum measures, at high S/N
    high = obj[obj["snr_4000"] >= 1]
    assert len(high) >= 5 and np.median(np.abs(high["dn4000_obs"] - high["dn4000_true"])) < 0.1
    summary = result.summary()
    assert summary["n_objects"] == 80 and summary["chi2_by_snr"][0]["n"] > 0
    assert 0.9 < summary["stack_chi2_pix"] < 3
    floor = result.stack.loc[result.stack["n"] > 1000, "chi2_pix_truth"]
    # one rest bin of the SPS mock's 80-object stack reached 3.39 (not traced further)
    assert floor.between(0.9, 4.0).all(), floor[~floor.between(0.9, 4.0)]
    assert abs(floor.iloc[:20].median() - 1) < 0.1  # blue end: noise only
    assert result.examples is not None and result.examples.flux.shape == (12, 7781)


def test_spectra_without_a_report_is_refused(trained_tiny, tiny_run, capsys):
    assert (
        main(
            [
                "evaluate",
                "--pz",
                str(tiny_run),
                "--truth",
                str(trained_tiny.truth),
                "--spectra",
                str(trained_tiny.mock / "spectra"),
            ]
        )
        == 2
    )
    assert "give --report DIR too" in capsys.readouterr().err


def test_report_has_every_figure_and_the_metrics(report_dir):
    html = (report_dir / "report.html").read_text()
    for name in FIGURES:
        assert (report_dir / f"{name}.png").stat().st_size > 10_000, name
        assert f'<figure id="{name}"><img' in html and "data:image/png;base64," in html
    assert 'src="http' not in html and "<script" not in html  # self-contained, opens offline
    metrics = json.loads((report_dir / "metrics.json").read_text())
    methods = {row["method"] for row in metrics["photoz"]["metrics"]}
    assert methods == {"diffusion", "baseline"}
    # metrics per coverage-score bin, both methods (the store's coverage column; docs/coverage.md)
    bins = {(r["method"], r["bin"]) for r in metrics["photoz"]["metrics"] if r["binning"] == "coverage"}
    assert ("diffusion", "[0.1, 1)") in bins and ("baseline", "[0.1, 1)") in bins
    assert "Training-set coverage and the photometry check" in html
    nz = metrics["photoz"]["nz"]
    assert {row["method"] for row in nz} == methods and all(isinstance(row["n"], int) for row in nz)
    assert sum(row["n"] for row in nz if row["method"] == "diffusion") > 380  # the scored objects
    # counts print as integers in the tables, e.g. the n row of the summary: no "400.0", no "1.2e+04"
    assert re.search(r"<th>n</th>\s*<td>\d+</td>\s*<td>\d+</td>", html)
    assert "samples per object are too few" not in html  # 64 samples: no too-few-samples note
    spectra = metrics["spectra"]
    assert spectra["n_objects"] == 120 and spectra["chi2_pix_mean"] > 0.9
    assert spectra["dn4000_high_snr"]["n"] >= 1
    # the per-object table, for joins the report does not make (e.g. Dn4000 per target class)
    import pandas as pd

    objects = pd.read_parquet(report_dir / "spectra.parquet")
    assert len(objects) == 120 and objects["targetid"].is_unique
    assert np.isfinite(objects["dn4000_rec"]).all() and np.isfinite(objects["dn4000_true"]).all()


@pytest.mark.skipif(not any(shutil.which(n) for n in CHROMIUM_NAMES), reason="no Chromium binary on PATH")
def test_report_renders_in_headless_chromium(report_dir, tmp_path):
    from PIL import Image

    png = chromium_screenshot(report_dir / "report.html", tmp_path / "shot.png", width=1400, height=9000)
    image = np.asarray(Image.open(png).convert("L"), dtype=np.float64)
    assert image.shape == (9000, 1400)
    # the figures are drawn: most 500-pixel bands of the page hold dark (plotted) pixels
    bands = [(image[i : i + 500] < 128).mean() for i in range(0, 9000, 500)]
    assert sum(b > 0.005 for b in bands) >= 14, bands


def test_evaluate_without_matching_or_with_repeated_ids_names_the_files(
    trained_tiny, tiny_run, tmp_path, capsys
):
    """It said "cannot reshape array of size 0" (no match) or failed without naming an id (repeats)."""
    import pandas as pd

    truth = pd.read_parquet(trained_tiny.truth)
    other = tmp_path / "other_truth.parquet"
    truth.assign(OBJECT_ID=truth["OBJECT_ID"] + (1 << 50)).to_parquet(other)
    assert main(["evaluate", "--pz", str(tiny_run), "--truth", str(other)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"no object of {tiny_run} (400 objects) has a true redshift in {other}" in err[0]
    repeated = tmp_path / "repeated_truth.parquet"
    pd.concat([truth, truth.iloc[[3, 7]]]).to_parquet(repeated)
    assert main(["evaluate", "--pz", str(tiny_run), "--truth", str(repeated)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    ids = ", ".join(str(i) for i in truth["OBJECT_ID"].iloc[[3, 7]])
    assert len(err) == 1 and f"{repeated} (OBJECT_ID): 2 object id(s) occur more than once: {ids}" in err[0]


def test_counts_display_as_integers():
    import pandas as pd

    from specdiff_catalog.report.evaluate import display_frame

    frame = pd.DataFrame(
        {"diffusion": [19956.0, 0.0123456, np.nan], "baseline": [19956, 0.5, 2.0]},
        index=["n", "bias", "crps"],
    )
    shown = display_frame(frame)
    assert list(shown["diffusion"]) == ["19956", "0.01235", "-"] and list(shown["baseline"]) == [
        "19956",
        "0.5",
        "2",
    ]
    wide = pd.DataFrame(
        [[12345.0, 0.25]], columns=pd.MultiIndex.from_tuples([("n", "diffusion"), ("bias", "diffusion")])
    )
    assert list(display_frame(wide, ".4f").iloc[0]) == ["12345", "0.2500"]


def test_evaluate_prints_integer_counts_and_the_nz_table(trained_tiny, tiny_run, capsys):
    assert main(["evaluate", "--pz", str(tiny_run), "--truth", str(trained_tiny.truth)]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^n\s+\d+\s+\d+$", out, flags=re.M)  # the summary's n row: integers
    nz = out.split("N(z) per bin of each method's own z_phot")[1]
    counts = re.findall(r"\)\s+(\S+)\s", nz)  # the n column, after each bin label
    assert len(counts) >= 10 and all(c.isdigit() for c in counts)


@pytest.mark.slow
def test_too_few_samples_warn_in_run_evaluate_and_the_report(trained_tiny, tmp_path, capsys):
    store = tmp_path / "k8.zarr"
    args = ["--n-workers", "1", "--threads-per-worker", "1", "--dashboard-address", ":0", "--no-progress"]
    command = [
        "run",
        "--input",
        str(trained_tiny.catalog),
        "--out",
        str(store),
        "--model",
        str(trained_tiny.model),
    ]
    assert main([*command, "--n-samples", "8", *args]) == 0
    err = capsys.readouterr().err
    assert "specdiff-catalog run: warning: 8 samples per object are too few for the quantile levels " in err
    assert "0.025, 0.05, 0.95, 0.975 (they need >= 39" in err
    report = tmp_path / "report"
    assert (
        main(["evaluate", "--pz", str(store), "--truth", str(trained_tiny.truth), "--report", str(report)])
        == 0
    )
    captured = capsys.readouterr()
    assert "specdiff-catalog evaluate: warning: 8 samples per object" in captured.err
    assert "warning: 8 samples per object" in captured.out  # in the printed report too
    html = (report / "report.html").read_text()
    assert '<p class="note">8 samples per object are too few' in html
    metrics = json.loads((report / "metrics.json").read_text())
    assert metrics["photoz"]["info"]["sample_count_note"].startswith("8 samples per object")
