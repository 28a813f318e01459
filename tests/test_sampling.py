"""Samplers: bitwise batch independence, update formulas, and agreement with known distributions.

The distribution tests use a conditional 2-D Gaussian mixture p(x | c) whose exact
denoiser E[x0 | x_t, c] is closed-form (``ConditionalGMM``), so they test the samplers
without training noise; one slow test trains a tiny denoiser on the same mixture.
"""

import dataclasses
import math

import numpy as np
import pytest
import scipy.spatial.distance
import scipy.stats
import torch

from specdiff_catalog import defaults
from specdiff_catalog.features import feature_bands
from specdiff_catalog.models.diffusion import CosineSchedule, DiffusionConfig, DiffusionModel, Standardisation
from specdiff_catalog.models.sampling import SAMPLERS, CounterNoise, ddim, sample, sample_times
from specdiff_catalog.training.ema import EMA

CONDITIONS = np.array([-0.8, 0.0, 0.8])


@pytest.fixture(autouse=True)
def one_thread():
    """Bitwise reproducibility is a contract for one intra-op thread (docs/diffusion.md);
    one thread is also much faster for these small batches on a shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class ConditionalGMM:
    """p(x | c) = w(c) N(mu_1(c), s_1^2 I) + (1 - w(c)) N(mu_2(c), s_2^2 I) in 2-D, c in [-1, 1].

    w(c) = 0.5 + 0.35 c, mu_1 = (-1.5, 0.5 + c), mu_2 = (1.5, -c/2): the components sit on
    either side of x[0] = 0. ``denoise`` is the exact posterior mean E[x0 | x_t, c].
    """

    data_dim = 2
    device = torch.device("cpu")

    def __init__(self, scales=(0.3, 0.5)):
        self.scales = np.asarray(scales, dtype=np.float64)
        self.schedule = CosineSchedule()

    @staticmethod
    def weights(c):
        w1 = 0.5 + 0.35 * np.asarray(c, dtype=np.float64)
        return np.stack([w1, 1 - w1], axis=-1)

    @staticmethod
    def means(c):
        c = np.asarray(c, dtype=np.float64)
        first = np.stack([np.full_like(c, -1.5), 0.5 + c], axis=-1)
        second = np.stack([np.full_like(c, 1.5), -0.5 * c], axis=-1)
        return np.stack([first, second], axis=-2)  # (..., 2 components, 2 dims)

    def embed_condition(self, features, missing):
        return torch.as_tensor(np.asarray(features), dtype=torch.float64)  # (G, 1): c itself

    def denoise(self, x_t, t, cond):
        alpha, sigma = self.schedule.alpha_sigma(t)
        c = cond[..., 0].numpy()  # (G, 1)
        mu = torch.as_tensor(self.means(c))  # (G, 1, M, 2)
        var0 = torch.as_tensor(self.scales**2)  # (M,)
        var_t = alpha**2 * var0 + sigma**2  # of x_t given the component
        x = x_t.double()[..., None, :]  # (G, K, 1, 2)
        log_r = (
            torch.log(torch.as_tensor(self.weights(c)))
            - ((x - alpha * mu) ** 2).sum(-1) / (2 * var_t)
            - torch.log(var_t)
        )
        posterior = mu + (alpha * var0 / var_t)[:, None] * (x - alpha * mu)
        return (torch.softmax(log_r, dim=-1)[..., None] * posterior).sum(-2).float()

    def draw(self, c, n, rng):
        component = (rng.random(n) >= self.weights(c)[0]).astype(int)
        return self.means(c)[component] + self.scales[component][:, None] * rng.standard_normal((n, 2))

    def marginal_cdf(self, c, dim):
        w, mu = self.weights(c), self.means(c)
        return lambda x: sum(w[m] * scipy.stats.norm.cdf((x - mu[m, dim]) / self.scales[m]) for m in range(2))


def draw_samples(model, sampler, steps, n_samples=4000, seed=1):
    x = sample(
        model,
        CONDITIONS[:, None],
        np.zeros((3, 1), bool),
        np.arange(3),
        n_samples=n_samples,
        seed=seed,
        sampler=sampler,
        steps=steps,
    )
    return x.double().numpy()


def energy_test(a, b, rng, n_perm=500):
    """Permutation p-value of the two-sample energy distance (Szekely & Rizzo 2004)."""
    pooled = np.concatenate([a, b])
    d = scipy.spatial.distance.cdist(pooled, pooled)
    n, m = len(a), len(b)
    # group indicators: the observed split, then n_perm random relabellings
    labels = np.zeros((n_perm + 1, n + m))
    labels[0, :n] = 1
    for row in labels[1:]:
        row[rng.permutation(n + m)[:n]] = 1
    dl = labels @ d  # (P, n + m)
    within_a = np.einsum("pi,pi->p", dl, labels)
    across = dl.sum(axis=1) - within_a
    within_b = d.sum() - within_a - 2 * across
    stat = 2 * across / (n * m) - within_a / n**2 - within_b / m**2
    return (1 + np.sum(stat[1:] >= stat[0])) / (1 + n_perm)


def check_against_truth(gmm, x, *, min_p=None, max_ks=None, weight_se=4.0):
    """Per condition: mixture weight within weight_se binomial errors; per dimension a KS
    test against the exact marginal CDF: p-value > min_p or statistic D < max_ks."""
    for i, c in enumerate(CONDITIONS):
        w = gmm.weights(c)[0] + gmm.weights(c)[1] * scipy.stats.norm.cdf(-1.5 / gmm.scales[1])
        n = x.shape[1]
        assert abs(np.mean(x[i, :, 0] < 0) - w) < weight_se * math.sqrt(w * (1 - w) / n), (
            c,
            np.mean(x[i, :, 0] < 0),
            w,
        )
        for dim in range(2):
            ks = scipy.stats.kstest(x[i, :, dim], gmm.marginal_cdf(c, dim))
            if min_p is not None:
                assert ks.pvalue > min_p, (c, dim, ks)
            if max_ks is not None:
                assert ks.statistic < max_ks, (c, dim, ks)


def tiny_model(prediction="v"):
    b, s = 5, 4
    f = 3 * b - 1
    std = Standardisation(np.zeros(f), np.ones(f), feature_bands(b), np.zeros(s), np.ones(s), 0.0, 1.0)
    model = DiffusionModel(dataclasses.replace(DiffusionConfig.load("tiny"), prediction=prediction), std)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():  # random weights everywhere, including the zero-initialised ones
        for p in model.parameters():
            p.copy_(
                torch.randn(p.shape, generator=gen) * (0.5 / math.sqrt(p.shape[-1]) if p.dim() > 1 else 0.3)
            )
    return model.eval()


def test_sample_times():
    sched = CosineSchedule()
    for steps in (1, 2, 12, 20, 50):
        times = sample_times(sched, steps)
        assert len(times) == steps + 1 and times[0] == 1000 and times[-1] == 0
        assert np.all(np.diff(times) < 0)
    lambdas = [sched.log_snr(t) for t in sample_times(sched, 12)[1:-1]]
    np.testing.assert_allclose(lambdas, np.linspace(-2.0, 5.0, 11), atol=1e-9)
    assert sample_times(sched, 1000) == list(range(1000, -1, -1))


@pytest.mark.parametrize(
    "sampler,steps,eta", [("dpmpp2m", 12, 0.0), ("ddim", 10, 0.0), ("ddim", 10, 0.7), ("ddpm", 30, 0.0)]
)
@pytest.mark.parametrize("prediction", ["v", "eps"])
def test_a_galaxys_samples_do_not_depend_on_its_batch(sampler, steps, eta, prediction):
    model = tiny_model(prediction)
    rng = np.random.default_rng(0)
    n, k = 23, 16
    features = rng.normal(0, 1, (n, 14)).astype(np.float32)
    missing = rng.random((n, 5)) < 0.2
    ids = rng.integers(0, 2**50, n)
    kw = {"n_samples": k, "seed": 11, "sampler": sampler, "steps": steps, "eta": eta}
    ref = sample(model, features, missing, ids, batch_size=n * k, **kw)
    assert ref.shape == (n, k, 5) and torch.isfinite(ref).all()
    for batch_size in (1, k, 3 * k, 7 * k):  # 1 galaxy per chunk, 3, 7 (with a ragged last chunk)
        assert torch.equal(sample(model, features, missing, ids, batch_size=batch_size, **kw), ref)
    order = rng.permutation(n)
    assert torch.equal(
        sample(model, features[order], missing[order], ids[order], batch_size=5 * k, **kw), ref[order]
    )
    alone = sample(model, features[7:8], missing[7:8], ids[7:8], **kw)
    assert torch.equal(alone[0], ref[7])
    # other ids or another seed: other samples, element by element
    assert not torch.any(sample(model, features, missing, ids + 1, **kw) == ref)
    assert not torch.any(sample(model, features, missing, ids, **(kw | {"seed": 12})) == ref)


def test_unknown_sampler_and_training_mode_are_refused():
    model = tiny_model()
    with pytest.raises(ValueError, match="unknown sampler 'euler'"):
        sample(model, np.zeros((1, 14)), np.zeros((1, 5), bool), [0], n_samples=2, seed=0, sampler="euler")
    with pytest.raises(ValueError, match="training mode"):
        sample(model.train(), np.zeros((1, 14)), np.zeros((1, 5), bool), [0], n_samples=2, seed=0)


class _AffineX0:
    """A 'model' predicting x0 = b + x_t / 2: isolates the sampler updates."""

    data_dim = 3
    schedule = CosineSchedule()

    def __init__(self, b):
        self.b = b

    def denoise(self, x_t, t, cond):
        return self.b + 0.5 * x_t


class _Noise:
    """noise(0) = x_t, noise(j >= 1) = z_j: lets a test choose every random number."""

    def __init__(self, x_t, z):
        self.x_t, self.z = x_t, z

    def __call__(self, step):
        return self.x_t if step == 0 else self.z * step


def test_ddim_eta1_is_the_ddpm_posterior_and_eta0_uses_only_x_T():
    gen = torch.Generator().manual_seed(0)
    x_t, b, z = (torch.randn(4, 6, 3, generator=gen, dtype=torch.float64) for _ in range(3))
    model = _AffineX0(b)
    x0 = model.denoise(x_t, 0.0, None)
    sched = model.schedule
    t, s = 400.0, 399.0
    abar_t, abar_s = float(sched.alpha_bar(t)), float(sched.alpha_bar(s))
    beta = 1 - abar_t / abar_s
    # Ho et al. (2020) eq. 7: mean and variance of q(x_{t-1} | x_t, x0)
    mean = (
        math.sqrt(abar_s) * beta / (1 - abar_t) * x0 + math.sqrt(1 - beta) * (1 - abar_s) / (1 - abar_t) * x_t
    )
    var = (1 - abar_s) / (1 - abar_t) * beta
    got = ddim(model, None, _Noise(x_t, z), [t, s], eta=1.0)
    torch.testing.assert_close(got, mean + math.sqrt(var) * z, rtol=1e-10, atol=1e-12)
    # eta = 0: later noise is never drawn, the result is a function of x_T alone
    times = sample_times(sched, 8)
    a = ddim(model, None, _Noise(x_t, z), times, eta=0.0)
    assert torch.equal(a, ddim(model, None, _Noise(x_t, -z), times, eta=0.0))
    assert not torch.equal(
        ddim(model, None, _Noise(x_t, z), times, eta=0.5), ddim(model, None, _Noise(x_t, -z), times, eta=0.5)
    )


def test_counter_noise_keys():
    noise = CounterNoise(5, torch.tensor([3, 9]), 4, 3)
    a = noise(2)
    assert a.shape == (2, 4, 3) and a.dtype == torch.float32
    assert torch.equal(CounterNoise(5, torch.tensor([9]), 4, 3)(2)[0], a[1])
    assert not torch.any(noise(3) == a)


@pytest.mark.parametrize("scales", [(0.3, 0.5), (0.05, 0.1)])
def test_samplers_reproduce_an_exact_gaussian_mixture(scales):
    """Exact denoiser, 3 conditions x 4000 samples, KS distance D to the true marginals.

    Sampling noise alone: D_99 = 0.026 at n = 4000. Worst D at n = 16000
    (benchmarks/sampler_accuracy.py, docs/diffusion.md): DDPM(1000) 0.013 (noise),
    DPM-Solver++(2M) 20 steps 0.012, DDIM(50) 0.023, DPM-Solver++(2M) 12 steps 0.040.
    Tolerances: noise + bias. Mixture weights within 4 binomial standard errors (5 for
    12 steps).
    """
    gmm = ConditionalGMM(scales)
    ddpm = draw_samples(gmm, "ddpm", None, seed=1)
    dpm20 = draw_samples(gmm, "dpmpp2m", 20, seed=2)
    check_against_truth(gmm, ddpm, max_ks=0.026)
    check_against_truth(gmm, dpm20, max_ks=0.035)
    check_against_truth(gmm, draw_samples(gmm, "ddim", 50, seed=3), max_ks=0.045)
    check_against_truth(gmm, draw_samples(gmm, "dpmpp2m", 12, seed=4), max_ks=0.06, weight_se=5.0)
    # the samplers agree with each other and with exact draws in 2-D (joint structure)
    rng = np.random.default_rng(0)
    for i, c in enumerate(CONDITIONS):
        assert energy_test(ddpm[i, :600], dpm20[i, :600], rng) > 0.01
        assert energy_test(dpm20[i, :600], gmm.draw(c, 600, rng), rng) > 0.01


def test_too_few_steps_fail_the_same_checks():
    """The checks above have power: 6 DPM-Solver++ steps visibly distort the mixture."""
    gmm = ConditionalGMM((0.05, 0.1))
    with pytest.raises(AssertionError):
        check_against_truth(gmm, draw_samples(gmm, "dpmpp2m", 6, seed=4), max_ks=0.06, weight_se=5.0)


@pytest.mark.slow
def test_trained_tiny_denoiser_learns_the_mixture_and_samplers_agree():
    """~40 s: train the tiny preset (v-prediction, EMA) on the conditional mixture for 2000
    steps of 512, then sample with DDPM(1000), DDIM(50) and DPM-Solver++(2M)(20).
    Tolerances include the network's own error: weights within 0.04, component means
    within 0.1, KS distance to the truth < 0.06 (D_95 = 0.021-0.035 at these sizes)."""
    torch.manual_seed(0)
    gmm = ConditionalGMM()
    config = dataclasses.replace(DiffusionConfig.load("tiny"), band_dropout=0.0)
    std = Standardisation([0.0], [0.6], [[True]], [0.0], [1.0], 0.0, 1.0, "identity")
    model = DiffusionModel(config, std).train()
    ema = EMA(model, config.ema_decay)
    steps = 2000
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    schedule = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps)
    rng, gen = np.random.default_rng(0), torch.Generator().manual_seed(0)
    for _ in range(steps):
        c = rng.uniform(-1, 1, 512)
        x0 = _draw_batch(gmm, c, rng)
        loss = model.loss(torch.as_tensor(x0, dtype=torch.float32), c[:, None], np.zeros((512, 1), bool), gen)
        opt.zero_grad()
        loss.backward()
        opt.step()
        schedule.step()
        ema.update(model)
    model = ema.average  # the averaged weights, in eval mode
    ddpm = draw_samples(model, "ddpm", None, n_samples=1500, seed=1)
    dpm20 = draw_samples(model, "dpmpp2m", 20, seed=2)
    for x in (ddpm, draw_samples(model, "ddim", 50, seed=3), dpm20):
        for i, c in enumerate(CONDITIONS):
            left, right = x[i, x[i, :, 0] < 0], x[i, x[i, :, 0] >= 0]
            assert abs(len(left) / x.shape[1] - gmm.weights(c)[0]) < 0.04
            assert np.abs(left.mean(axis=0) - gmm.means(c)[0]).max() < 0.1
            assert np.abs(right.mean(axis=0) - gmm.means(c)[1]).max() < 0.1
            for dim in range(2):
                assert scipy.stats.kstest(x[i, :, dim], gmm.marginal_cdf(c, dim)).statistic < 0.06
    rng = np.random.default_rng(1)
    for i in range(len(CONDITIONS)):
        assert energy_test(ddpm[i, :600], dpm20[i, :600], rng) > 0.01


def _draw_batch(gmm, c, rng):
    """One draw from p(x | c_i) for each condition c_i (vectorised ``ConditionalGMM.draw``)."""
    component = (rng.random(len(c)) >= gmm.weights(c)[:, 0]).astype(int)
    mu = gmm.means(c)[np.arange(len(c)), component]
    return mu + gmm.scales[component][:, None] * rng.standard_normal((len(c), 2))


def test_the_samplers_are_the_ones_the_defaults_name():
    assert set(SAMPLERS) == set(defaults.SAMPLERS) and defaults.SAMPLER in SAMPLERS
