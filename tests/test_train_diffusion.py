"""train diffusion / train baseline end to end, predict determinism, run + evaluate on the tiny model."""

import dataclasses
import json
import logging

import numpy as np
import pandas as pd
import pytest
import torch

from specdiff_catalog.cli import main
from specdiff_catalog.inference import predict, predict_columns
from specdiff_catalog.io.catalog import open_catalog
from specdiff_catalog.io.trainset import write_objects
from specdiff_catalog.metrics import photoz_table
from specdiff_catalog.models import load_model
from specdiff_catalog.models.store import ModelDirectoryError, Provenance, read_config, write_config
from specdiff_catalog.report.evaluate import evaluate_store, read_store_columns
from specdiff_catalog.training.diffusion import LATENTS, WORKDIR, train_diffusion


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny_store(trained_tiny, tmp_path_factory):
    """`run` of the tiny model over the tiny mock's catalog, 64 samples kept per object."""
    out = tmp_path_factory.mktemp("run") / "pz.zarr"
    status = main(
        [
            "run",
            "--input",
            str(trained_tiny.catalog),
            "--out",
            str(out),
            "--model",
            str(trained_tiny.model),
            "--n-samples",
            "64",
            "--save-samples",
            "64",
            "--n-workers",
            "1",
            "--threads-per-worker",
            "1",
            "--dashboard-address",
            ":0",
            "--no-progress",
        ]
    )
    assert status == 0
    return out


def test_tiny_chain_trains_through_the_cli(trained_tiny):
    config = read_config(trained_tiny.model)
    section = config.diffusion
    assert section is not None and config.autoencoder is not None and section.training is not None
    assert section.latent_size == config.autoencoder.latent_size == 4
    data = section.training.counts
    assert data["n_skipped_no_photometry"] == 0  # the SPS mock plants no photometry-less objects
    assert (
        data["n_train"]
        + data["n_val"]
        + data["n_skipped_no_photometry"]
        + data["n_skipped_bad_z"]
        + data["n_skipped_unusable_spectrum"]
        == data["n_objects"]
    )
    history = [
        json.loads(line) for line in (trained_tiny.model / WORKDIR / "log.jsonl").read_text().splitlines()
    ]
    val = [r["val"]["loss"] for r in history if "val" in r]
    assert len(val) == 10 and min(val) < 0.9 * val[0]
    metrics = section.training.validation
    assert metrics["point"]["n"] == data["n_val"] and metrics["pdf"]["n"] == data["n_val"]
    assert 0 < metrics["point"]["sigma_nmad"] < 0.3 and 0.3 < metrics["pdf"]["coverage_68"] <= 1.0
    assert np.load(trained_tiny.model / WORKDIR / LATENTS, allow_pickle=False).shape == (data["n_objects"], 4)
    model = load_model(trained_tiny.model)
    assert model.diffusion is not None and model.baseline is not None and model.autoencoder is not None
    assert not model.diffusion.training


def test_diffusion_needs_an_autoencoder_unless_photoz_only(trained_tiny, tmp_path):
    with pytest.raises(ValueError, match="no trained autoencoder"):
        train_diffusion(trained_tiny.trainset, tmp_path / "empty", preset="tiny", epochs=1, progress=False)


def test_photoz_only_mode_trains_on_a_parquet_file_and_runs(trained_tiny, tmp_path):
    parquet = tmp_path / "photoz.parquet"
    pd.read_parquet(trained_tiny.trainset / "objects.parquet").drop(columns=["ROW", "SPLIT"]).to_parquet(
        parquet
    )
    model_dir = tmp_path / "pz"
    assert (
        main(
            [
                "train",
                "diffusion",
                "--data",
                str(parquet),
                "--model",
                str(model_dir),
                "--preset",
                "tiny",
                "--epochs",
                "3",
                "--no-spectra",
                "--device",
                "cpu",
                "--no-progress",
            ]
        )
        == 0
    )
    model = load_model(model_dir)
    assert model.autoencoder is None and model.diffusion.data_dim == 1 and model.bands.name == "ls-grzw1w2"
    section = read_config(model_dir).diffusion
    assert section is not None and section.training is not None and section.training.settings["no_spectra"]
    out = tmp_path / "pz.zarr"
    assert (
        main(
            [
                "run",
                "--input",
                str(trained_tiny.catalog),
                "--out",
                str(out),
                "--model",
                str(model_dir),
                "--n-samples",
                "16",
                "--n-workers",
                "1",
                "--dashboard-address",
                ":0",
                "--no-progress",
            ]
        )
        == 0
    )
    columns, _attrs = read_store_columns(out, ["z_median", "latent"])
    assert "latent" not in columns and np.isfinite(columns["z_median"]).mean() > 0.98


def test_interrupted_diffusion_training_resumes_to_the_same_weights(trained_tiny, tmp_path, one_thread):
    config = dataclasses.replace(
        read_config(trained_tiny.model), diffusion=None, baseline=None, coverage=None
    )
    for name in ("a", "b"):  # both start from the trained autoencoder alone (copied)
        (tmp_path / name).mkdir()
        (tmp_path / name / "autoencoder.safetensors").write_bytes(
            (trained_tiny.model / "autoencoder.safetensors").read_bytes()
        )
        write_config(tmp_path / name, config)
    options = {"preset": "tiny", "epochs": 2, "progress": False, "device": "cpu"}
    straight = train_diffusion(trained_tiny.trainset, tmp_path / "a", **options)
    stopped = train_diffusion(
        trained_tiny.trainset, tmp_path / "b", **options, stop_after=lambda r: r["epoch"] == 0
    )
    assert not stopped.finished and read_config(tmp_path / "b").diffusion is None
    resumed = train_diffusion(trained_tiny.trainset, tmp_path / "b", **options, resume=True)
    assert resumed.finished and resumed.best_metric == straight.best_metric
    a, b = load_model(tmp_path / "a").diffusion, load_model(tmp_path / "b").diffusion
    for key, value in a.state_dict().items():
        assert torch.equal(value, b.state_dict()[key]), key  # the EMA weights, resumed exactly


def test_predict_gives_an_objects_samples_whatever_its_batch(trained_tiny, one_thread):
    model = load_model(trained_tiny.model)
    part = open_catalog(trained_tiny.catalog).partitions[0]
    table = pd.read_parquet(part.path)
    ids = table["OBJECT_ID"].to_numpy()
    whole = predict(model, table, ids, n_samples=24, seed=3)
    order = np.random.default_rng(0).permutation(len(table))
    shuffled = predict(model, table.iloc[order].reset_index(drop=True), ids[order], n_samples=24, seed=3)
    np.testing.assert_array_equal(shuffled.z_samples, whole.z_samples[order])
    # latents: within 1e-6 (one of 888 values once differed by 1 ulp with the order; not traced yet)
    np.testing.assert_allclose(shuffled.latent_samples, whole.latent_samples[order], rtol=1e-6, atol=0)
    single = predict(model, table.iloc[5:6], ids[5:6], n_samples=24, seed=3)
    np.testing.assert_array_equal(single.z_samples[0], whole.z_samples[5])
    columns = predict_columns(model, table, ids, batch_size=7, n_samples=24, seed=3)
    np.testing.assert_array_equal(columns["z_median"], whole.summaries["z_median"])
    other_seed = predict(model, table.iloc[5:6], ids[5:6], n_samples=24, seed=4)
    assert not np.array_equal(other_seed.z_samples[0], whole.z_samples[5])


def test_evaluate_scores_the_store_and_the_baseline_like_for_like(trained_tiny, tiny_store, tmp_path, capsys):
    assert (
        main(
            [
                "evaluate",
                "--pz",
                str(tiny_store),
                "--truth",
                str(trained_tiny.truth),
                "--json",
                str(tmp_path / "m.json"),
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "z_samples (K = 64" in printed and "sigma_nmad" in printed and "per bin of mag_r" in printed
    result = evaluate_store(tiny_store, trained_tiny.truth)
    truth = pd.read_parquet(trained_tiny.truth)
    assert result.info["n_matched"] == len(truth) == result.info["n_store"]
    # the diffusion row is the metrics of the store's own arrays against the truth
    columns, _ = read_store_columns(tiny_store, ["object_id", "z_median", "z_samples"])
    z = truth.set_index("OBJECT_ID").loc[columns["object_id"], "Z"].to_numpy()
    expected = photoz_table({"diffusion": (columns["z_median"], columns["z_samples"].astype(np.float64))}, z)
    got = result.table[(result.table["binning"] == "all") & (result.table["method"] == "diffusion")]
    for name in ("n", "bias", "sigma_nmad", "eta_015", "crps", "pit_ks", "coverage_68", "coverage_95"):
        assert got[name].iloc[0] == pytest.approx(expected[name].iloc[0], rel=1e-12), name
    # the baseline row: the model's baseline on the same objects
    baseline = result.table[(result.table["binning"] == "all") & (result.table["method"] == "baseline")]
    assert baseline["n"].iloc[0] == got["n"].iloc[0]  # the same objects (those with photometry)
    saved = json.loads((tmp_path / "m.json").read_text())
    assert {r["binning"] for r in saved["metrics"]} == {"all", "mag_r", "z_phot", "coverage"}
    mag_bins = result.table[(result.table["binning"] == "mag_r") & (result.table["method"] == "diffusion")]
    assert (
        mag_bins["n"].sum() + result.objects["mag_r"].isna().sum()
        == got["n"].iloc[0] + got["n_missing"].iloc[0]
    )


def test_evaluate_without_samples_uses_the_quantiles_and_says_so(trained_tiny, tmp_path):
    out = tmp_path / "q.zarr"
    assert (
        main(
            [
                "run",
                "--input",
                str(trained_tiny.catalog),
                "--out",
                str(out),
                "--model",
                str(trained_tiny.model),
                "--n-samples",
                "32",
                "--n-workers",
                "1",
                "--dashboard-address",
                ":0",
                "--no-progress",
            ]
        )
        == 0
    )
    result = evaluate_store(out, trained_tiny.truth)
    assert result.pdf_source.startswith("the store's 9 quantiles")
    row = result.table[(result.table["binning"] == "all") & (result.table["method"] == "diffusion")].iloc[0]
    assert 0 < row["crps"] < 0.35 and 0 <= row["coverage_68"] <= 1  # tiny model, 0 < z < 1.6: 0.277


def test_evaluate_refuses_a_model_without_baseline(trained_tiny, tiny_store, tmp_path):
    model_dir = tmp_path / "nobase"
    model_dir.mkdir()
    for file in ("autoencoder.safetensors", "diffusion.safetensors"):
        (model_dir / file).write_bytes((trained_tiny.model / file).read_bytes())
    write_config(
        model_dir, dataclasses.replace(read_config(trained_tiny.model), baseline=None, coverage=None)
    )
    with pytest.raises(ValueError, match="no baseline"):
        evaluate_store(tiny_store, trained_tiny.truth, model_dir)


def test_altered_diffusion_weights_are_refused(trained_tiny, tmp_path):
    model_dir = tmp_path / "altered"
    model_dir.mkdir()
    for file in trained_tiny.model.iterdir():
        if file.is_file():
            (model_dir / file.name).write_bytes(file.read_bytes())
    data = bytearray((model_dir / "diffusion.safetensors").read_bytes())
    data[-1] ^= 1
    (model_dir / "diffusion.safetensors").write_bytes(bytes(data))
    with pytest.raises(ModelDirectoryError, match=r"diffusion.safetensors"):
        load_model(model_dir)


def test_simulated_models_say_so_when_loaded(trained_tiny, tmp_path, caplog):
    model_dir = tmp_path / "sim"
    model_dir.mkdir()
    for file in trained_tiny.model.iterdir():
        if file.is_file():
            (model_dir / file.name).write_bytes(file.read_bytes())
    write_config(
        model_dir, dataclasses.replace(read_config(model_dir), provenance=Provenance(simulated=True))
    )
    with caplog.at_level(logging.WARNING):
        load_model(model_dir)
    assert "trained on SIMULATED galaxies" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        load_model(trained_tiny.model)
    assert "SIMULATED" not in caplog.text


def _lsst_photometry(n: int, seed: int) -> pd.DataFrame:
    """n objects with TARGETID, Z, EBV and the lsst preset's nJy flux/ivar columns; the colours
    are linear in z so that redshift is learnable."""
    rng = np.random.default_rng(seed)
    z = rng.uniform(0.05, 1.5, n)
    i_mag = rng.uniform(20.0, 24.0, n)
    table = {"TARGETID": np.arange(n, dtype=np.int64) + 7 * 10**9, "Z": z, "EBV": np.zeros(n)}
    for j, band in enumerate("ugrizy"):
        mag = i_mag + (3 - j) * (0.1 + 0.4 * z)
        sigma = 10 ** (-0.4 * (27.5 - 31.4))  # nJy
        table[f"{band.upper()}_CMODELFLUX"] = 10 ** (-0.4 * (mag - 31.4)) + sigma * rng.normal(size=n)
        table[f"{band.upper()}_CMODELFLUX_IVAR"] = np.full(n, sigma**-2)
    return pd.DataFrame(table)


def test_photoz_only_training_accepts_another_band_set_from_the_cli(tmp_path, one_thread, capsys):
    parquet = tmp_path / "lsst.parquet"
    _lsst_photometry(600, seed=3).to_parquet(parquet)
    args = ["train", "diffusion", "--data", str(parquet), "--preset", "tiny", "--epochs", "2"]
    args += ["--no-spectra", "--device", "cpu", "--no-progress"]
    assert main([*args, "--model", str(tmp_path / "default")]) == 2  # a Parquet file means ls-grzw1w2
    assert "missing column(s) FLUX_G" in capsys.readouterr().err
    assert main([*args, "--model", str(tmp_path / "pz"), "--bands", "lsst"]) == 0
    model = load_model(tmp_path / "pz")
    assert model.bands.name == "lsst" and model.diffusion.data_dim == 1
    training = read_config(tmp_path / "pz").diffusion.training
    assert training is not None and training.counts["n_train"] > 500
    pred = predict(model, _lsst_photometry(50, seed=4), n_samples=16)
    assert np.isfinite(pred.z_samples).all()


def test_a_prepared_training_set_refuses_another_band_set(tmp_path):
    write_objects(tmp_path, _lsst_photometry(100, seed=5), {"bands": "ls-grzw1w2"})
    with pytest.raises(ValueError, match="prepared with band set 'ls-grzw1w2', not 'lsst'"):
        train_diffusion(
            tmp_path, tmp_path / "m", preset="tiny", no_spectra=True, bands="lsst", progress=False
        )
