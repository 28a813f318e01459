import numpy as np
import pandas as pd
import pytest
from scipy import stats

from specdiff_catalog.metrics import (
    PdfMetrics,
    PointMetrics,
    coverage_curve,
    crps,
    delta_z,
    pdf_metrics,
    photoz_table,
    pit,
    point_metrics,
)


def _calibrated(rng, n, k, scale=1.0):
    """True redshifts and K samples per object; samples scaled by ``scale`` around the mean
    (1 = calibrated, < 1 over-confident)."""
    mu = rng.uniform(0.1, 1.0, n)
    sigma = 0.03 * (1 + mu)
    z_true = mu + sigma * rng.normal(size=n)
    samples = mu[:, None] + scale * sigma[:, None] * rng.normal(size=(n, k))
    return samples, z_true, mu, sigma


def _z(d, z_true):
    """z_phot with dz = d exactly (up to rounding) for the given truth."""
    return z_true + np.asarray(d) * (1 + z_true)


def test_delta_z():
    assert delta_z(np.array([1.2, 0.0]), np.array([1.0, 0.5])).tolist() == pytest.approx([0.1, -1 / 3])


def test_point_metrics_by_hand_with_the_lsst_floor():
    d = [-0.01, -0.01, 0, 0, 0, 0, 0.01, 0.01, 0.07, 0.2]
    z_true = np.linspace(0.1, 1.0, 10)
    m = point_metrics(_z(d, z_true), z_true)
    # median 0; |dz| sorted 0,0,0,0,.01,.01,.01,.01,.07,.2 -> median .01; IQR = .01 - 0, so
    # 3 sigma_IQR = 0.0222 < 0.06: the floor applies and 0.07 is an LSST outlier but not an eta_0.15 one
    assert m.n == 10 and m.n_missing == 0
    assert m.bias == pytest.approx(0.0, abs=1e-15)
    assert m.sigma_nmad == pytest.approx(1.4826 * 0.01, rel=1e-12)
    assert m.eta_015 == pytest.approx(0.1) and m.eta_lsst == pytest.approx(0.2)


def test_point_metrics_by_hand_with_the_iqr_cut_and_missing_values():
    d = [-0.3, -0.1, -0.05, -0.02, 0, 0.02, 0.05, 0.1, 0.3]
    z_true = np.full(9, 0.5)
    z_phot = np.append(_z(d, z_true), [np.nan, 0.4])
    m = point_metrics(z_phot, np.append(z_true, [0.5, np.inf]))
    # percentiles 25/75 = -0.05/0.05 -> 3 sigma_IQR = 0.3/1.349 = 0.2224: only +-0.3 are outliers
    # (with the 0.06 floor 0.1 and -0.1 would be too); |dz| sorted ...,0.02,0.05,... -> median 0.05
    assert (m.n, m.n_missing) == (9, 2)
    assert m.sigma_nmad == pytest.approx(1.4826 * 0.05, rel=1e-12)
    assert m.eta_lsst == pytest.approx(2 / 9) and m.eta_015 == pytest.approx(2 / 9)
    shifted = point_metrics(_z(np.array(d) + 0.01, z_true), z_true)
    assert shifted.bias == pytest.approx(0.01, rel=1e-9)
    assert point_metrics(np.full(3, np.nan), np.ones(3)) == PointMetrics(
        0, 3, *[pytest.approx(np.nan, nan_ok=True)] * 4
    )


def test_pit_by_hand():
    samples = np.array([[1.0, 2.0, 3.0, 4.0]] * 3 + [[1.0, np.nan, 3.0, np.nan], [np.nan] * 4])
    p = pit(samples, np.array([2.5, 0.0, 5.0, 2.0, 1.0]))
    assert p[:4].tolist() == [0.5, 0.0, 1.0, 0.5] and np.isnan(p[4])


def test_pit_randomises_ties_with_a_seed():
    samples = np.tile([0.0, 1.0, 1.0, 2.0], (20000, 1))
    p = pit(samples, np.ones(20000), seed=7)
    assert ((p >= 0.25) & (p <= 0.75)).all()
    assert stats.kstest((p - 0.25) / 0.5, "uniform").statistic < 0.015  # U spread over the two tied samples
    np.testing.assert_array_equal(p, pit(samples, np.ones(20000), seed=7))
    assert not np.array_equal(p, pit(samples, np.ones(20000), seed=8))


def test_pit_of_calibrated_samples_is_uniform_and_of_overconfident_ones_is_not():
    rng = np.random.default_rng(0)
    samples, z_true, *_ = _calibrated(rng, 20000, 200)
    good = pdf_metrics(samples, z_true, seed=0)
    # KS floor for K samples is ~1/(K+1) = 0.005; 95% sampling scatter 1.36/sqrt(N) = 0.0096 (measured 0.0078)
    assert good.pit_ks < 0.02
    # a calibrated K-sample PDF puts PIT at exactly 0 or 1 with probability 2/(K+1) = 0.00995
    assert good.pit_outlier_rate == pytest.approx(2 / 201, abs=0.003)
    over, z_true2, *_ = _calibrated(rng, 20000, 200, scale=0.3)
    bad = pdf_metrics(over, z_true2, seed=0)
    assert bad.pit_ks > 0.2 and bad.pit_outlier_rate > 0.3


def test_coverage_of_calibrated_gaussians_is_nominal():
    rng = np.random.default_rng(1)
    samples, z_true, *_ = _calibrated(rng, 20000, 200)
    cov = coverage_curve(samples, z_true, [0.68, 0.95])
    binomial = 3 * np.sqrt(np.array([0.68 * 0.32, 0.95 * 0.05]) / 20000)  # 0.0099, 0.0046
    assert np.all(np.abs(cov - [0.68, 0.95]) < binomial)
    m = pdf_metrics(samples, z_true)
    assert (m.coverage_68, m.coverage_95) == tuple(cov)


def test_coverage_is_unbiased_even_for_few_samples():
    # K = 20: numpy's default (type 7) quantiles would cover 0.68 * 19/21 = 0.615
    rng = np.random.default_rng(2)
    samples, z_true, *_ = _calibrated(rng, 20000, 20)
    assert coverage_curve(samples, z_true, [0.68])[0] == pytest.approx(0.68, abs=0.01)
    with pytest.raises(ValueError):
        coverage_curve(samples, z_true, [0.0])
    with pytest.raises(ValueError):
        coverage_curve(samples, z_true, [1.2])


def _crps_direct(x, y):
    """O(K^2) definition on the finite samples of one row: E|X - y| - E|X - X'| / 2."""
    x = x[np.isfinite(x)]
    return np.mean(np.abs(x - y)) - 0.5 * np.mean(np.abs(x[:, None] - x[None, :]))


def test_crps_equals_the_energy_form_exactly():
    rng = np.random.default_rng(3)
    x = rng.normal(0.5, 0.1, (60, 37))
    x[:20] = np.round(x[:20], 2)  # ties among samples and with the truth
    x[20:30, 30:] = np.nan  # partial rows are scored on their finite samples
    x[30] = np.nan
    y = np.where(np.arange(60) < 10, x[:, 0], rng.normal(0.5, 0.1, 60))
    got = crps(x, y)
    expected = [
        _crps_direct(row, yi) if np.isfinite(row).any() else np.nan for row, yi in zip(x, y, strict=True)
    ]
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-10)


def test_crps_matches_the_gaussian_closed_form():
    rng = np.random.default_rng(4)
    samples, z_true, mu, sigma = _calibrated(rng, 2000, 1000)
    w = (z_true - mu) / sigma
    closed = sigma * (w * (2 * stats.norm.cdf(w) - 1) + 2 * stats.norm.pdf(w) - 1 / np.sqrt(np.pi))
    # the empirical CRPS exceeds the true one by E|X-X'|/2K, 1/K of its mean for calibrated
    # samples: 0.1% here;
    # per-object Monte-Carlo scatter ~2% averages down to ~0.05% over 2000 objects
    assert pdf_metrics(samples, z_true).crps == pytest.approx(closed.mean(), rel=0.005)


def test_pdf_metrics_skip_rows_without_samples_or_truth():
    rng = np.random.default_rng(5)
    samples, z_true, *_ = _calibrated(rng, 100, 50)
    samples[:5] = np.nan
    z_true[5] = np.nan
    m = pdf_metrics(samples, z_true)
    assert (m.n, m.n_missing) == (94, 6) and np.isfinite([m.pit_ks, m.crps, m.coverage_68]).all()
    empty = pdf_metrics(np.full((3, 4), np.nan), np.ones(3))
    assert empty.n == 0 and empty.n_missing == 3 and np.isnan(empty.crps)
    assert isinstance(empty, PdfMetrics)


def test_photoz_table_compares_methods_overall_and_in_bins():
    rng = np.random.default_rng(6)
    samples, z_true, *_ = _calibrated(rng, 3000, 100)
    point = np.median(samples, axis=1)
    mag = rng.uniform(18, 23, 3000)
    table = photoz_table(
        {"diffusion": (point, samples), "tree": (point + 0.01, None)},
        z_true,
        bins=("mag_r", mag, [18, 20, 23]),
    )
    assert isinstance(table, pd.DataFrame) and len(table) == 6
    assert table["mag_r"].tolist() == ["all", "[18, 20)", "[20, 23)"] * 2
    overall = table.iloc[0]
    assert overall["sigma_nmad"] == point_metrics(point, z_true).sigma_nmad
    assert overall["crps"] == pdf_metrics(samples, z_true).crps
    bright = mag < 20
    assert table.iloc[1]["n"] == bright.sum()
    assert table.iloc[1]["coverage_68"] == pdf_metrics(samples[bright], z_true[bright]).coverage_68
    assert table.iloc[3:]["crps"].isna().all() and table.iloc[3:]["bias"].notna().all()
    assert list(photoz_table({"d": (point, samples)}, z_true).columns[:3]) == ["method", "n", "n_missing"]


def test_stacked_nz_of_calibrated_pdfs_matches_the_true_distribution():
    from specdiff_catalog.metrics import stacked_nz

    rng = np.random.default_rng(5)
    n, sigma = 40000, 0.05
    z_true = rng.uniform(0.1, 0.9, n)
    centre = z_true + sigma * rng.standard_normal(n)  # the posterior of z given an observation
    samples = centre[:, None] + sigma * rng.standard_normal((n, 50))
    samples[:10] = np.nan  # no PDF: left out
    # bins away from the prior's edges at 0.1 and 0.9, where this posterior would not be calibrated
    table = stacked_nz(samples, z_true, centre, [0.3, 0.45, 0.6, 0.7])
    assert list(table["bin"]) == ["[0.3, 0.45)", "[0.45, 0.6)", "[0.6, 0.7)"]
    inside = (centre >= 0.3) & (centre < 0.7) & ~np.isnan(samples[:, 0])
    assert table["n"].dtype.kind == "i" and table["n"].sum() == inside.sum()
    # calibrated: the stack's mean is the bin's true mean (to its noise, ~sigma_bin / sqrt(n) ~ 1e-3)
    assert np.abs(table["delta_mean"]).max() < 0.003
    # and it is as wide as the true distribution
    assert table.loc[1, "z_stack_std"] == pytest.approx(table.loc[1, "z_true_std"], rel=0.05)
    # PDFs twice too narrow: the stack is narrower than the truth
    narrow = centre[:, None] + 0.5 * sigma * rng.standard_normal((n, 50))
    assert (
        stacked_nz(narrow, z_true, centre, [0.45, 0.6])["z_stack_std"][0] < 0.9 * table.loc[1, "z_true_std"]
    )
    empty = stacked_nz(samples, z_true, centre, [5.0, 6.0])
    assert empty["n"][0] == 0 and np.isnan(empty["delta_mean"][0])
