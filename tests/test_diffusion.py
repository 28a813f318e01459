"""The diffusion model: schedule, configuration, condition handling, loss, state round trip."""

import dataclasses
import math

import numpy as np
import pytest
import torch

from specdiff_catalog.config import ConfigError, available_presets, load_preset
from specdiff_catalog.features import feature_bands
from specdiff_catalog.models import load_diffusion
from specdiff_catalog.models.diffusion import (
    SOFTPLUS_SCALE,
    Z_FLOOR,
    Z_TRANSFORMS,
    CosineSchedule,
    DiffusionConfig,
    DiffusionModel,
    Standardisation,
)
from specdiff_catalog.models.store import (
    DiffusionSection,
    ModelConfig,
    ModelDirectoryError,
    read_config,
    write_config,
    write_tensors,
)

B, S = 5, 6
F = 3 * B - 1


@pytest.fixture(autouse=True)
def one_thread():
    """Small batches: one intra-op thread is faster on a shared machine (and bitwise reproducible)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def standardisation(z_transform="log1p"):
    rng = np.random.default_rng(0)
    return Standardisation(
        feature_mean=rng.normal(20, 2, F),
        feature_std=rng.uniform(0.5, 2, F),
        feature_bands=feature_bands(B),
        latent_mean=rng.normal(0, 1, S),
        latent_std=rng.uniform(0.5, 2, S),
        z_mean=0.3,
        z_std=0.15,
        z_transform=z_transform,
    )


def randomised(model, seed=0):
    """Replace the zero-initialised output layers etc. by random weights (an untrained but
    non-trivial net)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(
                torch.randn(p.shape, generator=gen) * (0.5 / math.sqrt(p.shape[-1]) if p.dim() > 1 else 0.3)
            )
    return model.eval()


def test_cosine_schedule_values():
    sched = CosineSchedule(1000)
    t = torch.arange(1001, dtype=torch.float64)
    abar = sched.alpha_bar(t)
    assert abar[0] == 1.0
    assert 1e-9 < abar[-1] < 3e-9  # beta clipped at 0.999: 1e-3 * abar(999) = 2.4e-9
    assert torch.all(torch.diff(abar) < 0)
    betas = sched.betas()
    assert float(betas.max()) == pytest.approx(0.999) and betas.min() > 0
    # betas of the closed form, as Nichol & Dhariwal's discrete table: beta_1 ~ 4e-5
    assert float(betas[0]) == pytest.approx(float(1 - abar[1]), rel=1e-12) and 3e-5 < betas[0] < 5e-5
    # continuous between integers, monotone across the clipped last step
    fine = sched.alpha_bar(torch.linspace(998, 1000, 2001, dtype=torch.float64))
    assert torch.all(torch.diff(fine) < 0)
    assert float(sched.alpha_bar(999.0)) == pytest.approx(float(abar[999]), rel=1e-12)
    # log-SNR and its inverse
    for time in (0.3, 1.0, 17.5, 500.0, 999.0, 999.5, 1000.0):
        assert sched.time_of_log_snr(sched.log_snr(time)) == pytest.approx(time, rel=1e-7)
    assert sched.log_snr(1000.0) == pytest.approx(-9.92, abs=0.01)


def test_presets_load_and_bad_values_are_named():
    assert set(available_presets("diffusion")) >= {"tiny", "small", "paper"}
    sizes = {}
    for name in ("tiny", "small", "paper"):
        config = DiffusionConfig.load(name)
        sizes[name] = sum(p.numel() for p in DiffusionModel(config, standardisation()).parameters())
    assert sizes["tiny"] < sizes["small"] < sizes["paper"]
    # photoz is small + dropout + H = 512 (the RAIL Informer default, docs/rail.md): nothing else may drift
    small, photoz = DiffusionConfig.load("small"), DiffusionConfig.load("photoz")
    assert (small.dropout, photoz.dropout, small.hidden, photoz.hidden) == (0.0, 0.1, 256, 512)
    assert dataclasses.replace(photoz, dropout=0.0, hidden=256) == small
    assert load_preset("diffusion", "photoz")["training"] == load_preset("diffusion", "small")["training"]
    with pytest.raises(ConfigError, match="hidden=100 must be a positive multiple of 64"):
        DiffusionConfig(hidden=100)
    with pytest.raises(ConfigError, match="prediction='x0'"):
        DiffusionConfig(prediction="x0")
    with pytest.raises(ConfigError, match="unknown diffusion preset"):
        DiffusionConfig.load("huge")


def test_condition_input_standardises_and_zeroes_missing_bands():
    model = DiffusionModel(DiffusionConfig.load("tiny"), standardisation())
    std = model.standardisation
    rng = np.random.default_rng(1)
    features = rng.normal(20, 2, (3, F)).astype(np.float32)
    missing = np.zeros((3, B), bool)
    missing[1, 2] = True  # band 2 missing: its magnitude, two colours and S/N are NaN
    features[1, feature_bands(B)[:, 2]] = np.nan
    missing[2, 0] = True  # masked but its features still finite: the mask wins
    cond = model.condition_input(features, missing).numpy()
    assert cond.shape == (3, F + B)
    expected = ((features - std.feature_mean) / std.feature_std).astype(np.float32)
    np.testing.assert_allclose(cond[0, :F], expected[0], rtol=1e-5)
    assert np.all(cond[1, :F][feature_bands(B)[:, 2]] == 0)
    np.testing.assert_allclose(
        cond[1, :F][~feature_bands(B)[:, 2]], expected[1][~feature_bands(B)[:, 2]], rtol=1e-5
    )
    assert np.all(cond[2, :F][feature_bands(B)[:, 0]] == 0)
    assert np.array_equal(cond[:, F:], missing.astype(np.float32))


def test_z_weight_weights_the_redshift_dimension_of_the_loss():
    # zero-initialised output: the prediction is 0, so the squared error of dimension d is
    # target_d^2 with the loss's own draws of t and eps (replayed from the same generator seed);
    # the z column (last) is scaled by 3 so that its error differs from the latents'
    n = 4000
    x0 = torch.randn(n, S + 1, generator=torch.Generator().manual_seed(1))
    x0[:, -1] *= 3
    features = np.random.default_rng(2).normal(20, 2, (n, F)).astype(np.float32)
    missing = np.zeros((n, B), bool)
    model = DiffusionModel(DiffusionConfig.load("tiny"), standardisation())
    replay = torch.Generator().manual_seed(0)
    t = torch.rand(n, generator=replay) * model.config.timesteps
    eps = torch.randn(x0.shape, generator=replay)
    abar = model.schedule.alpha_bar(t.double()).float()[:, None]
    per_dim = ((abar.sqrt() * eps - (1 - abar).sqrt() * x0) ** 2).mean(0)  # (S + 1,)
    assert per_dim[-1] > 3 * per_dim[:-1].mean()
    for weight in (1.0, 10.0):
        model.config = dataclasses.replace(model.config, z_weight=weight)
        loss = model.loss(x0, features, missing, torch.Generator().manual_seed(0)).item()
        expected = (per_dim[:-1].sum() + weight * per_dim[-1]) / (S + weight)
        assert loss == pytest.approx(expected.item(), rel=1e-5)
    with pytest.raises(ConfigError, match="z_weight"):
        dataclasses.replace(model.config, z_weight=0.0)


def test_loss_is_unit_at_initialisation_and_decreases():
    # zero-initialised output: prediction 0, so the loss is E[target^2] = 1 for v and for eps
    # when x0 has unit variance (v = alpha eps - sigma x0, alpha^2 + sigma^2 = 1)
    rng = np.random.default_rng(2)
    n = 20000
    x0 = torch.randn(n, S + 1, generator=torch.Generator().manual_seed(1))
    features = rng.normal(20, 2, (n, F)).astype(np.float32)
    missing = np.zeros((n, B), bool)
    for prediction in ("v", "eps"):
        config = dataclasses.replace(DiffusionConfig.load("tiny"), prediction=prediction)
        model = DiffusionModel(config, standardisation())
        loss = model.loss(x0, features, missing, torch.Generator().manual_seed(0))
        assert loss.ndim == 0 and abs(loss.item() - 1.0) < 0.03
    # a few optimiser steps on one batch reduce it, and gradients reach the condition MLP
    model = DiffusionModel(DiffusionConfig.load("tiny"), standardisation()).train()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for step in range(30):
        loss = model.loss(x0[:512], features[:512], missing[:512], torch.Generator().manual_seed(step % 2))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert np.mean(losses[-4:]) < 0.9 * np.mean(losses[:2])
    assert model.net.condition[0].weight.grad.abs().sum() > 0


def test_model_with_missing_bands_gives_finite_samples():
    from specdiff_catalog.models.sampling import sample

    model = randomised(DiffusionModel(DiffusionConfig.load("tiny"), standardisation()))
    rng = np.random.default_rng(3)
    features = rng.normal(20, 2, (4, F)).astype(np.float32)
    missing = np.zeros((4, B), bool)
    missing[1, 3] = True
    missing[2] = True  # no photometry at all
    features[(missing.astype(float) @ feature_bands(B).T.astype(float)) > 0] = np.nan
    features[3, 0] = np.inf  # a non-finite value the mask does not know about
    x = sample(model, features, missing, np.arange(4), n_samples=16, seed=0, steps=8)
    assert x.shape == (4, 16, S + 1) and torch.isfinite(x).all()
    # a masked band changes the condition, so the samples
    y = sample(model, features[:1], missing[1:2] | missing[:1], np.arange(1), n_samples=16, seed=0, steps=8)
    assert not torch.equal(y[0], x[0])


def test_standardisation_round_trip_and_fit():
    rng = np.random.default_rng(4)
    n = 5000
    z = rng.uniform(0.01, 1.5, n)
    latent = rng.normal(3, 2, (n, S))
    features = rng.normal(21, 1.5, (n, F))
    features[rng.random((n, F)) < 0.1] = np.nan
    std = Standardisation.fit(features, latent, z)
    assert np.allclose(std.feature_mean, np.nanmean(features, axis=0)) and np.allclose(
        std.feature_std, np.nanstd(features, axis=0)
    )
    assert std.n_bands == B and std.data_dim == S + 1
    x0 = std.to_standard(z, latent)
    assert x0.shape == (n, S + 1)
    assert np.allclose(x0.mean(axis=0), 0, atol=1e-5) and np.allclose(x0.std(axis=0), 1, atol=1e-4)
    back_z, back_latent = std.to_physical(torch.as_tensor(x0))
    np.testing.assert_allclose(back_z.numpy(), z, rtol=2e-5, atol=2e-6)
    np.testing.assert_allclose(back_latent.numpy(), latent, rtol=1e-5, atol=2e-5)
    assert Standardisation.from_dict(std.to_dict()).to_dict() == std.to_dict()


def test_softplus_log1p_transform_has_positive_support_and_round_trips():
    """The new models' z transform: z = expm1(u0 softplus(t)) >= 0 for every t, linear in
    log(1 + z) above z ~ u0 = 0.02, and the inverse of the forward map above Z_FLOOR."""
    forward, inverse = Z_TRANSFORMS["softplus_log1p"]
    z = np.r_[Z_FLOOR, np.geomspace(1e-3, 2.0, 200)]
    t = forward(z)
    assert np.isfinite(t).all() and (np.diff(t) > 0).all()
    np.testing.assert_allclose(inverse(torch.as_tensor(t)).numpy(), z, rtol=1e-9)
    # z <= Z_FLOOR (and z = 0, even slightly negative redrock redshifts) train at the floor
    np.testing.assert_array_equal(forward(np.array([0.0, -0.003, Z_FLOOR])), forward(np.array([Z_FLOOR] * 3)))
    # above z ~ u0 the transform is log(1 + z) / u0 up to exp(-log(1+z)/u0) corrections
    assert forward(np.array([1.0]))[0] == pytest.approx(np.log(2.0) / SOFTPLUS_SCALE, abs=1e-12)
    # every standardised value maps to z >= 0, the extremes included (float32 sampler outputs)
    x = torch.tensor([-1e30, -1e4, -50.0, 0.0, 50.0, 1e4], dtype=torch.float32)
    out = inverse(x)
    assert (out[:4] >= 0).all() and out[-1] == float("inf")  # inf is caught as a sampler failure
    assert DiffusionConfig.load("small").z_transform == "softplus_log1p"
    assert DiffusionConfig().z_transform == "log1p"  # what a config.json written before it means
    with pytest.raises(ConfigError, match="z_transform='sqrt'"):
        DiffusionConfig(z_transform="sqrt")


def test_state_round_trip_through_the_model_directory(tmp_path):
    model = randomised(DiffusionModel(DiffusionConfig.load("tiny"), standardisation()))
    section = DiffusionSection(
        weights=write_tensors(tmp_path, "diffusion.safetensors", model.net.state_dict()),
        config=model.config,
        standardisation=model.standardisation,
        n_parameters=sum(p.numel() for p in model.parameters()),
    )
    write_config(tmp_path, ModelConfig(diffusion=section))
    stored = read_config(tmp_path).diffusion
    assert stored is not None and stored.config.hidden == 64 and stored.latent_size == S
    loaded = load_diffusion(tmp_path)
    assert not loaded.training
    features = np.random.default_rng(5).normal(20, 2, (3, F)).astype(np.float32)
    missing = np.zeros((3, B), bool)
    cond_a = model.embed_condition(features, missing)
    cond_b = loaded.embed_condition(features, missing)
    assert torch.equal(cond_a, cond_b)
    x = torch.randn(3, 4, S + 1)
    assert torch.equal(model.denoise(x, 321.0, cond_a[:, None]), loaded.denoise(x, 321.0, cond_b[:, None]))
    with pytest.raises(RuntimeError, match="Missing key"):
        DiffusionModel.from_state(model.config, model.standardisation, {})


def test_model_directory_without_diffusion_section(tmp_path):
    write_config(tmp_path, ModelConfig())
    with pytest.raises(ModelDirectoryError, match="no diffusion component"):
        load_diffusion(tmp_path)
