"""The training-set coverage score: k-NN distances, its calibration, missing bands, the model
directory round trip, the CLI and the selection effect it exists to catch (issue 14 item 3)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import spatial

from specdiff_catalog.bands import BandSet
from specdiff_catalog.cli import main
from specdiff_catalog.features import feature_bands, photometric_features
from specdiff_catalog.models import load_coverage, load_model
from specdiff_catalog.models.coverage import CoverageConfig, CoverageModel, kth_distance
from specdiff_catalog.models.store import read_config
from tests._toy_photometry import toy_photometry

BANDS = BandSet.load("ls-grzw1w2")


def test_kth_distance_is_the_brute_force_one():
    rng = np.random.default_rng(0)
    reference, query = rng.normal(size=(3000, 6)), rng.normal(size=(700, 6))
    expected = spatial.cKDTree(reference).query(query, k=7)[0][:, -1]
    np.testing.assert_allclose(kth_distance(query, reference, 7), expected, rtol=1e-9)
    assert np.isnan(kth_distance(query[:2], reference[:5], 7)).all()


def _gaussian_model(n_ref=20000, n_cal=5000, dim=5, seed=1):
    """A coverage model of a standard normal population in `dim` features of `dim` bands."""
    rng = np.random.default_rng(seed)
    bands = np.eye(dim, dtype=bool)
    config = CoverageConfig(n_reference=n_ref, n_calibration=n_cal)
    return CoverageModel.fit(
        config,
        rng.normal(size=(n_ref, dim)),
        rng.normal(size=(n_cal, dim)),
        np.zeros(dim),
        np.ones(dim),
        bands,
    )


def test_scores_are_calibrated_for_training_like_objects_and_low_outside():
    model = _gaussian_model()
    rng = np.random.default_rng(2)
    like = rng.normal(size=(4000, 5))
    scores = model.score(like, np.zeros((4000, 5), bool))
    # a conformal p-value: uniform on (0, 1] for objects drawn like the calibration sample
    assert abs(np.mean(model.low(scores)) - 0.01) < 0.006  # binomial sd 0.0016 at n = 4000
    assert abs(np.median(scores) - 0.5) < 0.03
    far = rng.normal(size=(1000, 5)) + np.array([3.0, 0, 0, 0, 0])  # 3 sigma off in one feature
    assert np.mean(model.low(model.score(far, np.zeros((1000, 5), bool)))) > 0.25
    assert (model.score(np.full((2, 5), 40.0), np.zeros((2, 5), bool)) < 0.01).all()


def test_missing_bands_are_left_out_of_the_distance_not_counted_against_the_object():
    model = _gaussian_model()
    rng = np.random.default_rng(3)
    values = rng.normal(size=(3000, 5))
    missing = np.zeros((3000, 5), bool)
    missing[:, 4] = True
    values[:, 4] = np.nan  # a missing band's features are NaN
    scores = model.score(values, missing)
    assert abs(np.mean(model.low(scores)) - 0.01) < 0.007  # still calibrated, in the 4-D subspace
    none = model.score(np.full((1, 5), np.nan), np.ones((1, 5), bool))
    assert np.isnan(none).all() and not model.low(none).any()  # no photometry: NO_PHOTOMETRY, not this


def test_a_narrow_spectroscopic_selection_leaves_the_faint_photometric_sample_uncovered(tmp_path):
    """Train on a bright (r < 20) sample, score a photometric sample to r = 21.5: the faint
    objects lie where the training set has nothing, and the score says so."""
    phot = toy_photometry(30000, seed=4)
    r_mag = 22.5 - 2.5 * np.log10(np.clip(phot["FLUX_R"], 1e-3, None))
    bright = phot[r_mag < 20.0].reset_index(drop=True)
    bright.to_parquet(tmp_path / "train.parquet")
    section_status = main(
        ["train", "coverage", "--model", str(tmp_path / "m"), "--data", str(tmp_path / "train.parquet")]
    )
    assert section_status == 0
    coverage = load_coverage(tmp_path / "m")
    test = toy_photometry(6000, seed=5)
    feats = photometric_features(test, BANDS)
    scores = coverage.score(feats.values, feats.missing)
    r_test = 22.5 - 2.5 * np.log10(np.clip(test["FLUX_R"].to_numpy(), 1e-3, None))
    low = coverage.low(scores)
    inside, faint = r_test < 19.5, r_test > 21.0
    assert np.mean(low[inside]) < 0.03  # measured 0.006
    assert np.mean(low[faint]) > 0.5  # measured 0.95
    section = read_config(tmp_path / "m").coverage
    assert section is not None and section.training is not None
    assert (
        section.n_reference + section.training.counts["n_held_out"]
        == section.training.counts["n_train_usable"]
    )
    held = section.training.validation["held_out_low_fraction"]
    assert held == pytest.approx(0.01, abs=0.01)
    # the model directory round trip: the same scores from a fresh load
    again = load_model(tmp_path / "m").coverage
    assert again is not None
    np.testing.assert_array_equal(again.score(feats.values, feats.missing), scores)
    assert section.feature_names == tuple(feats.names)


def test_coverage_of_a_model_records_its_training_set(tmp_path, capsys):
    phot = toy_photometry(3000, seed=6)
    phot.to_parquet(tmp_path / "train.parquet")
    assert main(["train", "coverage", "--model", str(tmp_path / "m")]) == 2  # nothing recorded to use
    assert "give the training data (--data)" in capsys.readouterr().err
    status = main(
        [
            "train",
            "coverage",
            "--model",
            str(tmp_path / "m"),
            "--data",
            str(tmp_path / "train.parquet"),
            "--k",
            "5",
        ]
    )
    assert status == 0 and "of held-out training objects below 0.01" in capsys.readouterr().out
    config = read_config(tmp_path / "m")
    assert config.coverage is not None and config.coverage.config.k == 5
    assert config.bands is not None and config.bands.name == "ls-grzw1w2"
    assert config.coverage.weights.file == "coverage.safetensors"
    assert feature_bands(5).shape == load_coverage(tmp_path / "m").feature_bands.shape


def test_run_ends_with_the_share_outside_coverage_impossible_to_miss():
    from specdiff_catalog.pipeline.run import RunReport

    report = RunReport(store=Path("o.zarr"), n_partitions=3, done=3, n_objects=1000, seconds=2.0)
    report.checks = {"written": 1000, "LOW_COVERAGE": 57}
    lines = report.summary().splitlines()
    assert (
        "WARNING: 57 of 1000 objects (5.7%) lie outside the training set's coverage: their PDFs and "
        "spectra extrapolate (docs/coverage.md) (LOW_COVERAGE)" in lines
    )
    assert "PHOTOMETRY_NOT_REPRODUCED: not checked, the model has no spectra (photo-z only)" in lines
    report.checks = {"written": 1000, "LOW_COVERAGE": 9, "PHOTOMETRY_NOT_REPRODUCED": 2}
    lines = report.summary().splitlines()
    assert lines[1].startswith("9 of 1000 objects (0.9%) lie outside")  # ~1% is expected: no warning
    assert lines[2].startswith("2 of 1000 objects (0.2%) have fluxes that spectra decoded")


def test_train_coverage_calibrates_the_photometry_check_floors_that_predict_uses(
    trained_tiny, tmp_path, monkeypatch, capsys
):
    """`train coverage` of a model with an autoencoder stores per-band floors of the photometry
    check from its validation objects' posterior draws; a loaded model's check uses them."""
    import shutil

    from specdiff_catalog import ppc

    model_dir = tmp_path / "model"
    shutil.copytree(trained_tiny.model, model_dir)
    monkeypatch.setattr(ppc, "MIN_CALIBRATION_OBJECTS", 10)  # the tiny survey has ~50 validation objects
    argv = ["train", "coverage", "--model", str(model_dir), "--data", str(trained_tiny.trainset)]
    assert main(argv) == 0
    assert "photometry-check floors g " in capsys.readouterr().out
    section = read_config(model_dir).coverage
    assert section is not None and section.training is not None
    assert set(section.ppc_floors) == {"g", "r", "z"}  # the bands inside the rest grid; not W1, W2
    assert all(0.0 <= v < 1.0 for v in section.ppc_floors.values())
    assert section.training.validation["ppc_calibration_objects"] >= 10
    check = ppc.PhotometryCheck.of(load_model(model_dir, notice=False))
    np.testing.assert_array_equal(check.floors, [section.ppc_floors[b] for b in check.synth.names])
