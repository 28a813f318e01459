import numpy as np
import pytest
from scipy import stats

from specdiff_catalog.summaries import (
    check_levels,
    conditional_latent,
    kde_bandwidth,
    kde_mode,
    sample_quantiles,
    shortest_interval,
    summarize,
)

LEVELS = [0.025, 0.16, 0.5, 0.84, 0.975]


def _mixture(rng, n, k, weight, m1, s1, m2, s2):
    first = rng.random((n, k)) < weight
    return np.where(first, rng.normal(m1, s1, (n, k)), rng.normal(m2, s2, (n, k)))


def test_sample_quantiles_are_numpy_type6_per_row_ignoring_nan():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 40))
    np.testing.assert_allclose(
        sample_quantiles(x, LEVELS), np.quantile(x, LEVELS, axis=1, method="weibull").T, atol=1e-14
    )
    x[::3, 25:] = np.nan
    x[1, [0, 7]] = np.inf
    q = sample_quantiles(x, LEVELS)
    for i in (0, 1, 3):
        finite = x[i][np.isfinite(x[i])]
        np.testing.assert_allclose(q[i], np.quantile(finite, LEVELS, method="weibull"), atol=1e-14)


def test_quantiles_of_known_distributions():
    # K = 4000 draws: a sample quantile's standard error is sqrt(p(1-p)/K)/f(q) <= 0.008 (uniform),
    # 0.02 sigma (normal)
    rng = np.random.default_rng(1)
    uniform = sample_quantiles(rng.random((3, 4000)), LEVELS)
    np.testing.assert_allclose(uniform, np.tile(LEVELS, (3, 1)), atol=0.025)
    normal = sample_quantiles(rng.normal(0.5, 0.1, (3, 4000)), LEVELS)
    np.testing.assert_allclose(normal, np.tile(stats.norm.ppf(LEVELS, 0.5, 0.1), (3, 1)), atol=0.1 * 0.07)


def test_levels_are_validated():
    for bad in ([0.0, 0.5], [0.5, 1.0], [0.5, 0.2], [], [np.nan]):
        with pytest.raises(ValueError, match="quantile level"):
            check_levels(bad)
    assert check_levels([0.0, 1.0], closed=True).tolist() == [0.0, 1.0]
    with pytest.raises(ValueError, match="strictly inside"):
        summarize(np.zeros((2, 5)), None, [0.5, 1.0])


def test_shortest_interval_by_hand():
    x = np.array([[0.0, 10.0, 10.5, 11.0, 30.0], [1.0, 2.5, np.nan, 3.0, np.nan], [np.nan] * 5])
    got = shortest_interval(x, 0.6)  # 3 of 5 samples: 10..11; 2 of the 3 finite ones: 2.5..3
    np.testing.assert_allclose(got[:2], [1.0, 0.5])
    assert np.isnan(got[2])


def test_mode_of_a_gaussian_is_its_mean():
    # 2000 rows of K=200 draws from N(0.5, 0.05): the KDE mode is unbiased and scatters by 0.27 sigma
    # (measured 0.271 at seed 0; the median's scatter is 0.09 sigma, the price of a mode)
    rng = np.random.default_rng(0)
    mode = kde_mode(rng.normal(0.5, 0.05, (2000, 200)))
    err = (mode - 0.5) / 0.05
    assert abs(err.mean()) < 0.03 and 0.2 < err.std() < 0.32


def test_mode_matches_a_direct_kde_evaluation():
    rng = np.random.default_rng(2)
    x = _mixture(rng, 5, 150, 0.5, 0.3, 0.03, 0.6, 0.05)
    h = kde_bandwidth(x)
    grid = np.linspace(0.0, 1.0, 100001)
    direct = [
        grid[np.exp(-0.5 * ((grid[:, None] - row[None, :]) / hi) ** 2).sum(axis=1).argmax()]
        for row, hi in zip(x, h, strict=True)
    ]
    np.testing.assert_allclose(kde_mode(x), direct, atol=0.02 * h.min())


@pytest.mark.parametrize(
    ("weight", "s_high", "s_low", "expected"),
    [
        (0.6, 0.02, 0.02, 0.98),  # 60/40 mixture of equal widths: the heavier component (measured 0.988)
        (0.45, 0.02, 0.06, 0.99),  # a narrow peak with less mass than a 3x broader one (measured 0.999)
    ],
)
def test_bimodal_mixture_gives_the_higher_mode(weight, s_high, s_low, expected):
    rng = np.random.default_rng(3)
    x = _mixture(rng, 2000, 200, weight, 0.3, s_high, 0.8, s_low)
    assert np.mean(np.abs(kde_mode(x) - 0.3) < 0.02) >= expected


def test_summarize_shapes_values_and_nan_rows():
    rng = np.random.default_rng(4)
    n, k, s = 30, 120, 6
    z = rng.normal(0.6, 0.05, (n, k))
    latent = rng.normal(size=(n, k, s))
    z[3] = np.nan  # no usable photometry
    z[5, :60] = np.nan  # partial: summarised from the other 60
    out = summarize(z, latent, LEVELS)
    assert {name: (v.shape, v.dtype) for name, v in out.items()} == {
        "z_quantiles": ((n, 5), np.float32),
        "z_median": ((n,), np.float32),
        "z_mode": ((n,), np.float32),
        "z_mean": ((n,), np.float32),
        "z_std": ((n,), np.float32),
        "latent": ((n, s), np.float32),
        "latent_std": ((n, s), np.float32),
    }
    for name, value in out.items():
        assert np.isnan(value[3]).all(), name
        assert np.isfinite(np.delete(value, 3, axis=0)).all(), name
    full = np.delete(np.arange(n), [3, 5])
    np.testing.assert_allclose(out["z_median"][full], np.median(z[full], axis=1), rtol=1e-6)
    np.testing.assert_allclose(out["z_mean"][full], z[full].mean(axis=1), rtol=1e-6)
    np.testing.assert_allclose(out["z_std"][full], z[full].std(axis=1, ddof=1), rtol=1e-5)
    np.testing.assert_allclose(out["z_mean"][5], z[5, 60:].mean(), rtol=1e-6)
    assert (
        summarize(np.full((2, 10), np.nan), None, [0.5])["z_mode"].tolist()
        == [pytest.approx(np.nan, nan_ok=True)] * 2
    )


def test_identical_samples_and_single_samples():
    out = summarize(np.array([[0.4, 0.4, 0.4], [0.7, np.nan, np.nan]]), None, [0.1, 0.9])
    assert out["z_mode"].tolist() == pytest.approx([0.4, 0.7]) and out["z_quantiles"][
        1
    ].tolist() == pytest.approx([0.7, 0.7])
    assert out["z_std"][0] == pytest.approx(0.0, abs=1e-12) and np.isnan(out["z_std"][1])


def test_latent_summary_belongs_to_the_mode():
    # joint samples: 65% at z=0.3 with latent +1, 35% at z=0.8 with latent -1 (each +-0.1)
    rng = np.random.default_rng(5)
    first = rng.random((500, 200)) < 0.65
    z = np.where(first, rng.normal(0.3, 0.02, first.shape), rng.normal(0.8, 0.02, first.shape))
    latent = np.where(first, 1.0, -1.0)[..., None] + 0.1 * rng.normal(size=(*first.shape, 2))
    out = summarize(z, latent, [0.5])
    assert np.median(np.abs(out["latent"] - 1.0)) < 0.02  # the plain mean would be 0.3
    assert np.median(out["latent_std"]) == pytest.approx(0.1, abs=0.01)


def test_latent_summary_of_independent_samples_is_their_mean():
    rng = np.random.default_rng(6)
    z = rng.normal(0.5, 0.05, (400, 200))
    latent = rng.normal(2.0, 0.5, (400, 200, 3))
    out = summarize(z, latent, [0.5])
    # ~40% of the samples carry the kernel weight: scatter ~0.5/sqrt(80) = 0.056 around 2
    assert abs(out["latent"].mean() - 2.0) < 0.01 and out["latent"].std() < 0.08
    assert np.mean(out["latent_std"]) == pytest.approx(0.5, abs=0.02)


def test_latent_summary_is_finite_when_every_kernel_weight_underflows():
    """Samples > 38 bandwidths from z0 all got weight exp(-u^2/2) = 0, so latent = 0/0 = NaN in a row
    without a flag, and the store refused the whole partition (the tiny model's posteriors piled
    against z = 0: S_20 ~ 1e-8, h ~ 4e-9, mode 0.0027). The weights are relative to the nearest
    sample now: the same where nothing underflows, the nearest samples' latents where all would,
    also in a row with a NaN z sample (row 0: it made the nearest weight NaN and the latent NaN)."""
    z = np.array([[0.0, 0.1, 0.2, np.nan], [0.29, 0.3, 0.31, 0.5]])
    latent = np.array([[[1.0], [3.0], [7.0], [9.0]], [[1.0], [2.0], [3.0], [np.nan]]])
    z0, h = np.array([0.05, 0.3]), np.array([1e-3, 0.01])
    mean, std = conditional_latent(z, latent, z0, h)
    assert mean[0, 0] == pytest.approx(2.0) and std[0, 0] == pytest.approx(1.0)  # 0.0 and 0.1, equally near
    w = np.exp(-0.5 * np.array([1.0, 0.0, 1.0]))  # nothing underflows: the plain Nadaraya-Watson weights
    assert mean[1, 0] == pytest.approx((w @ [1.0, 2.0, 3.0]) / w.sum(), rel=1e-12)
    rng = np.random.default_rng(0)
    piled = np.concatenate([10 ** rng.uniform(-16, -7, 15), 10 ** rng.uniform(-2.3, 0.15, 49)])[None, :]
    out = summarize(piled, rng.normal(size=(1, 64, 2)), [0.5])
    assert np.isfinite(out["latent"]).all() and np.isfinite(out["latent_std"]).all()


def test_min_samples_is_where_the_outer_levels_stop_being_clamped():
    from specdiff_catalog.summaries import min_samples, resolved_levels, sample_count_note

    levels = np.array([0.025, 0.05, 0.16, 0.5, 0.84, 0.95, 0.975])
    assert min_samples(levels) == 39 and min_samples([0.05, 0.95]) == 19 and min_samples([0.16]) == 6
    assert list(resolved_levels(levels, 16)) == [False, False, True, True, True, False, False]
    assert resolved_levels(levels, 39).all() and not resolved_levels(levels, 38).all()
    assert sample_count_note(levels, 39) is None
    note = sample_count_note(levels, 16)
    assert note is not None and "0.025, 0.05, 0.95, 0.975" in note and ">= 39" in note
    # uniform samples: F(q) = q, so E[F(q_0.025)] is 0.025 from K = 39 on; below, the clamped
    # "0.025 quantile" is the smallest sample, E = 1 / (K + 1)
    rng = np.random.default_rng(3)
    for k, expected in ((39, 0.025), (100, 0.025), (16, 1 / 17)):
        q = sample_quantiles(rng.random((40000, k)), [0.025])[:, 0]
        assert q.mean() == pytest.approx(expected, abs=0.0015), k


def test_the_cdf_of_extended_quantiles_is_proper_with_ties():
    from specdiff_catalog.summaries import extend_quantiles, quantile_cdf

    levels = np.array([0.1, 0.5, 0.9])
    full, locs = extend_quantiles(levels, np.array([[0.5, 0.7, 0.9], [0.02, 0.1, 0.2], [0.3, 0.3, 0.3]]))
    assert np.allclose(full, [0, 0.1, 0.5, 0.9, 1])
    assert np.allclose(locs[0], [0.45, 0.5, 0.7, 0.9, 0.95])  # slope 0.5 per unit level
    assert np.allclose(locs[1], [0.0, 0.02, 0.1, 0.2, 0.225])  # 0.02 - 0.1 x 0.2 = 0: clipped, not < 0
    x = np.array([-1.0, 0.0, 0.45, 0.5, 0.6, 0.9, 0.95, 2.0, 0.3 - 1e-12, 0.3])
    cdf = quantile_cdf(full, locs, x)
    assert np.allclose(cdf[0, :8], [0, 0, 0, 0.1, 0.3, 0.9, 1, 1])
    assert np.all(np.diff(np.sort(cdf, axis=1), axis=1) >= 0) and cdf.min() >= 0 and cdf.max() <= 1
    assert cdf[2, -2] == 0 and cdf[2, -1] == 1  # all quantiles tied: a step of 1 at z = 0.3
    _, below = extend_quantiles(levels, np.array([[-0.02, 0.1, 0.1]]))
    assert np.allclose(below, [[-0.05, -0.02, 0.1, 0.1, 0.1]])  # a first quantile below 0 is kept
    with pytest.raises(ValueError, match="from 0 to 1"):
        quantile_cdf(levels, locs[:, 1:-1], x)
