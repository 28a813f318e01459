"""A user band-set file all the way: `prepare --bands custom.toml`, then every `train` job through the CLI.

trainset.json stores the band set itself, so a set made from a file no preset names trains
(before format 2 it stored only the name, and every job failed to load it)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from specdiff_catalog.cli import main
from specdiff_catalog.inference import predict
from specdiff_catalog.io.trainset import TrainingSet
from specdiff_catalog.models import load_model
from specdiff_catalog.models.store import read_config
from tests._desi_files import fibermap, write_pair

ROOT = Path(__file__).resolve().parents[1]
CUSTOM = """
name = "my-rzg"
description = "a user's band set: r, z, g in that order, no MW_TRANSMISSION columns"
zeropoint = 22.5
flux_unit = "nanomaggy"
ebv_column = "EBV"
"""
for band, filt, r, b in (
    ("R", "decam2014-r", 2.165, 0.05),
    ("Z", "decam2014-z", 1.211, 0.1),
    ("G", "decam2014-g", 3.214, 0.03),
):
    CUSTOM += f"""
[[bands]]
name = "{band.lower()}"
flux = "FLUX_{band}"
ivar = "FLUX_IVAR_{band}"
mw_transmission = "MW_TRANSMISSION_{band}"
filter = "{filt}"
extinction_r = {r}
softening = {b}
"""


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_prepare_with_a_user_band_file_then_every_train_job(tmp_path, one_thread):
    ids = np.arange(1, 241)
    z = np.random.default_rng(0).uniform(0.05, 0.7, ids.size)
    write_pair(tmp_path / "desi", "a", ids, z)
    bands_file = tmp_path / "custom.toml"
    bands_file.write_text(CUSTOM)
    train, model = tmp_path / "train", tmp_path / "model"
    cpu = ["--device", "cpu", "--no-progress"]
    steps = [
        ["prepare", "--desi", tmp_path / "desi", "--out", train, "--bands", bands_file],
        [
            "train",
            "autoencoder",
            "--data",
            train,
            "--model",
            model,
            "--epochs",
            "1",
            *cpu,
            "--preset",
            ROOT / "tests" / "data" / "autoencoder_tiny_desi.toml",
        ],
        ["train", "diffusion", "--data", train, "--model", model, "--preset", "tiny", "--epochs", "1", *cpu],
        [
            "train",
            "diffusion",
            "--data",
            train,
            "--model",
            tmp_path / "pz_only",
            "--preset",
            "tiny",
            "--epochs",
            "1",
            "--no-spectra",
            *cpu,
        ],
        ["train", "baseline", "--data", train, "--model", model, "--preset", "tiny", "--threads", "1"],
    ]
    for argv in steps:
        assert main([str(a) for a in argv]) == 0, argv

    assert TrainingSet.open(train).bandset.names == ["r", "z", "g"]
    for directory in (model, tmp_path / "pz_only"):
        config = read_config(directory)
        assert config.bands is not None and config.bands.name == "my-rzg", directory
    config = read_config(model)
    assert config.baseline is not None and config.baseline.feature_names[:4] == (
        "mag_r",
        "mag_z",
        "mag_g",
        "r-z",
    )
    assert config.diffusion is not None and config.diffusion.standardisation.n_bands == 3
    loaded = load_model(model, notice=False)
    table = pd.DataFrame(fibermap(np.arange(5), seed=3))
    pred = predict(loaded, table, n_samples=8)
    assert np.isfinite(pred.summaries["z_median"]).all() and pred.summaries["latent"].shape == (5, 4)
