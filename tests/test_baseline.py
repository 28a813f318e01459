import dataclasses
import json

import numpy as np
import pytest

from specdiff_catalog.bands import BandSet
from specdiff_catalog.config import ConfigError
from specdiff_catalog.io.trainset import TrainingSet, write_objects
from specdiff_catalog.metrics import coverage_curve, point_metrics
from specdiff_catalog.models import load_baseline
from specdiff_catalog.models.baseline import BaselineConfig, BaselineModel, _cdf_rows, _interp_rows
from specdiff_catalog.models.store import (
    ModelConfig,
    ModelDirectoryError,
    read_config,
    write_baseline,
    write_config,
)
from specdiff_catalog.training.baseline import train_baseline
from tests._toy_photometry import toy_photometry

NOISE = 0.03  # sigma of dz in the synthetic problem


def _synthetic(n, seed):
    """z a known function of 6 features plus Gaussian dz noise whose width depends on x3
    (0.5x to 1.5x NOISE); 5% of the features missing."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 6)).astype(np.float32)
    z_clean = 0.45 + 0.25 * np.tanh(x[:, 0]) + 0.08 * x[:, 1] * x[:, 2]
    width = NOISE * (0.5 + 1.0 * (x[:, 3] > 0))
    z = z_clean + width * (1 + z_clean) * rng.normal(size=n)
    x[rng.random(x.shape) < 0.05] = np.nan
    return x, np.clip(z, 0.01, None)


@pytest.fixture(scope="module")
def fitted():
    x, z = _synthetic(12000, seed=0)
    model = BaselineModel(BaselineConfig.load("tiny"), [f"f{i}" for i in range(6)])
    model.fit(x[:8000], z[:8000], val=(x[8000:10000], z[8000:10000]), seed=0, threads=2)
    return model, x[10000:], z[10000:]


def test_presets_load_and_are_validated(tmp_path):
    small = BaselineConfig.load("small")
    assert 0.5 in small.quantile_levels and small.depth == 6
    bad = tmp_path / "bad.toml"
    bad.write_text("quantile_levels = [0.1, 1.0]\n")
    with pytest.raises(ConfigError, match=r"bad.toml: quantile level 1.0 is not strictly inside"):
        BaselineConfig.load(bad)
    bad.write_text("quantile_levels = [0.1, 0.9]\nn_leaves = 3\n")
    with pytest.raises(ConfigError, match="n_leaves"):
        BaselineConfig.load(bad)


def test_it_learns_the_function(fitted):
    model, x, z = fitted
    z_point, z_q = model.predict(x)
    # the noise alone (a 50/50 mix of dz widths 0.015 and 0.045) gives sigma_NMAD = 0.024; measured 0.029
    assert point_metrics(z_point, z).sigma_nmad < 0.034
    assert point_metrics(np.full_like(z, np.median(z)), z).sigma_nmad > 0.1  # what not learning would give
    assert z_q.shape == (len(z), len(model.levels)) and (np.diff(z_q, axis=1) >= 0).all()


def test_quantiles_are_calibrated_on_held_out_data(fitted):
    model, x, z = fitted
    samples = model.sample(x, 200, seed=1)
    cov68, cov95 = coverage_curve(samples, z, [0.68, 0.95])
    assert 0.64 <= cov68 <= 0.72 and 0.92 <= cov95 <= 0.97
    # the spread follows the noise: objects with x3 > 0 (1.5x NOISE) get intervals ~3x wider
    _, q = model.predict(x)
    width = q[:, list(model.levels).index(0.84)] - q[:, list(model.levels).index(0.16)]
    known = np.isfinite(x[:, 3])
    assert np.median(width[known & (x[:, 3] > 0)]) > 2 * np.median(width[known & (x[:, 3] <= 0)])


@pytest.mark.parametrize(("recalibrate", "low", "high"), [(True, 0.64, 0.72), (False, 0.40, 0.56)])
def test_recalibration_fixes_overconfidence(recalibrate, low, high):
    # validation and test redshifts carry extra dz noise of 0.05 the training set lacks, so
    # the raw quantiles are too narrow (68% intervals measured to cover 0.49); the validation
    # PIT distribution maps the levels back (measured 0.69)
    x, z = _synthetic(12000, seed=0)
    noisy = z + 0.05 * (1 + z) * np.random.default_rng(1).normal(size=z.size)
    config = dataclasses.replace(BaselineConfig.load("tiny"), recalibrate=recalibrate)
    model = BaselineModel(config).fit(x[:8000], z[:8000], val=(x[8000:10000], noisy[8000:10000]), threads=2)
    cov68 = coverage_curve(model.sample(x[10000:], 200, seed=1), noisy[10000:], [0.68])[0]
    assert low <= cov68 <= high


def test_samples_follow_the_predicted_quantiles(fitted):
    model, x, _ = fitted
    samples = model.sample(x[:3], 40000, seed=2)
    q = model.quantiles(x[:3], np.array([0.05, 0.16, 0.5, 0.84, 0.95]))
    empirical = np.quantile(samples, [0.05, 0.16, 0.5, 0.84, 0.95], axis=1).T
    np.testing.assert_allclose(empirical, q, atol=0.01 * (q[:, -1:] - q[:, :1]).max())
    np.testing.assert_array_equal(samples, model.sample(x[:3], 40000, seed=2))


def test_rows_without_features_give_nan(fitted):
    model, x, _ = fitted
    x = x[:4].copy()
    x[1] = np.nan
    z_point, z_q = model.predict(x)
    assert np.isnan(z_point[1]) and np.isnan(z_q[1]).all() and np.isnan(model.sample(x, 5)[1]).all()
    assert np.isfinite(np.delete(z_q, 1, axis=0)).all()
    with pytest.raises(ValueError, match=r"\(N, 6\)"):
        model.predict(x[:, :5])


def test_quantile_function_and_its_inverse():
    knots = np.array([0.0, 0.1, 0.5, 0.9, 1.0])
    values = np.array([[0.0, 1.0, 2.0, 2.0, 5.0], [1.0, 1.5, 2.0, 3.0, 4.0]])
    u = np.array([[0.05, 0.3, 0.7, 0.95], [0.0, 0.1, 0.5, 1.0]])
    np.testing.assert_allclose(_interp_rows(knots, values, u), [[0.5, 1.5, 2.0, 3.5], [1.0, 1.5, 2.0, 4.0]])
    np.testing.assert_allclose(_cdf_rows(knots, values, np.array([1.5, 3.5])), [0.3, 0.95])
    assert _cdf_rows(knots, values, np.array([-1.0, 9.0])).tolist() == [0.0, 1.0]


def test_save_load_round_trip_and_tampering(fitted, tmp_path):
    model, x, _ = fitted
    model_dir = tmp_path / "model"
    write_config(model_dir, ModelConfig(baseline=write_baseline(model_dir, model)))
    loaded = load_baseline(model_dir)
    for a, b in zip(model.predict(x), loaded.predict(x), strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(model.sample(x, 50, seed=3), loaded.sample(x, 50, seed=3))
    assert loaded.config == model.config and loaded.feature_names == model.feature_names
    section = json.loads((model_dir / "config.json").read_text())["baseline"]
    assert section["target"] == "log1p(z)" and len(section["calibration"]["level"]) == 101
    assert section["weights"]["file"] == "baseline.cbm"

    path = model_dir / "baseline.cbm"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte
    path.write_bytes(bytes(data))
    with pytest.raises(ModelDirectoryError, match="sha256"):
        load_baseline(model_dir)
    write_config(tmp_path / "empty", ModelConfig())
    with pytest.raises(ModelDirectoryError, match="no baseline"):
        load_baseline(tmp_path / "empty")


def test_train_baseline_on_a_training_set(tmp_path):
    objects = toy_photometry(3000, seed=5)
    objects.loc[:4, "Z"] = np.nan  # a bad redshift
    write_objects(tmp_path, objects, {"bands": "ls-grzw1w2"})  # a band set by name, as before format 2
    trainset = TrainingSet.open(tmp_path)
    outcome = train_baseline(trainset, tmp_path / "model", preset="tiny", seed=0, threads=2)
    counts = outcome.record.counts

    no_phot = int((objects.filter(like="FLUX_IVAR").to_numpy() == 0).all(axis=1).sum())
    assert no_phot > 0 and counts["n_skipped_no_photometry"] == no_phot and counts["n_skipped_bad_z"] == 5
    assert counts["n_train"] + counts["n_val"] + no_phot + 5 == 3000
    # toy colours are smooth in z, so the toy sigma_NMAD is far below real photo-z (measured 0.012)
    assert outcome.point.sigma_nmad < 0.02
    assert 0.6 < outcome.pdf.coverage_68 < 0.76

    config = read_config(tmp_path / "model")
    assert config.bands is not None and config.bands.name == "ls-grzw1w2"
    assert config.baseline is not None and config.baseline.feature_names[0] == "mag_g"
    assert config.baseline.training == outcome.record

    write_config(tmp_path / "other", ModelConfig(bands=BandSet.load("lsst")))
    with pytest.raises(ValueError, match="band set 'lsst'"):
        train_baseline(tmp_path, tmp_path / "other", preset="tiny")


def test_train_baseline_on_a_photometry_parquet_file(tmp_path):
    path = tmp_path / "phot.parquet"
    toy_photometry(1500, seed=6).rename(columns=str.lower).to_parquet(path)
    outcome = train_baseline(path, tmp_path / "model", preset="tiny", threads=2)
    assert outcome.record.counts["n_train"] > 1200 and outcome.point.n == outcome.record.counts["n_val"]
