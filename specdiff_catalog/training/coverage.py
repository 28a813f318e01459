"""``train coverage``: the training-set coverage score of a model directory (docs/coverage.md).

A reference sample of the training set's train split and a calibration sample of its
validation split, in the standardised feature space of the model's diffusion network, are
written to MODEL/coverage.safetensors with the ``coverage`` section of config.json. With
an autoencoder, the section also holds the photometry check's per-band flux floors,
calibrated on the posterior draws of validation objects (``ppc.calibrate_floors``).
``train diffusion`` does this at its end; ``train coverage`` adds it to an existing model
(e.g. the bundled one) from the training set its diffusion section records, or another.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np

from specdiff_catalog import defaults
from specdiff_catalog.features import deredden
from specdiff_catalog.inference import predict
from specdiff_catalog.io.trainset import TrainingSet
from specdiff_catalog.models import load_model, store
from specdiff_catalog.models.coverage import CoverageConfig, CoverageModel
from specdiff_catalog.ppc import PhotometryCheck, calibrate_floors

HELD_OUT = 5000  # train-split objects kept out of the reference and scored to check the threshold


def _standardisation(config: store.ModelConfig, trainset: TrainingSet, train: np.ndarray):
    """feature mean, std, bands: the diffusion network's, else the training set's own."""
    if config.diffusion is not None:
        std = config.diffusion.standardisation
        return std.feature_mean, std.feature_std, std.feature_bands
    from specdiff_catalog.features import feature_bands

    values = trainset.features.values[train].astype(np.float64)
    finite = np.isfinite(values)
    count = np.maximum(finite.sum(axis=0), 1)
    mean = np.where(finite, values, 0.0).sum(axis=0) / count
    std = np.sqrt(np.where(finite, (values - mean) ** 2, 0.0).sum(axis=0) / count)
    return mean, np.where(std > 1e-6, std, 1.0), feature_bands(trainset.features.missing.shape[1])


def _ppc_floors(
    model_dir: Path, config: store.ModelConfig, trainset: TrainingSet, rows: np.ndarray, seed: int
) -> dict[str, float]:
    """The photometry check's per-band floors from the posterior draws (the model's production
    sampler, ``defaults.PPC_DRAWS`` each) of up to ``defaults.PPC_CALIBRATION`` of ``rows``;
    {} for a model without an autoencoder or diffusion network."""
    if config.autoencoder is None or config.diffusion is None:
        return {}
    model = load_model(model_dir, notice=False)
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(rows, size=min(defaults.PPC_CALIBRATION, len(rows)), replace=False))
    table = trainset.objects.iloc[rows].reset_index(drop=True)
    draws = predict(
        model, table, table["TARGETID"].to_numpy(np.int64), n_samples=defaults.PPC_DRAWS, seed=seed
    )
    return calibrate_floors(
        PhotometryCheck.of(model), deredden(table, trainset.bandset), draws.z_samples, draws.latent_samples
    )


def train_coverage(
    model_dir: str | Path, data: str | Path | None = None, config: CoverageConfig | None = None
) -> store.CoverageSection:
    """Build the coverage score of ``model_dir`` from training set ``data`` (default: the one
    its diffusion section records) and write it into the model directory. Returns the section.
    A photometry Parquet file is read with the model's band set (the one its diffusion
    network was trained on, e.g. ``train diffusion --bands lsst``).

    Rows: the training set's usable objects (``TrainingSet.usable``: photometry and a finite
    Z); reference from the train split (up to n_reference, leaving at least 5% of it, at most
    HELD_OUT objects, out), calibration from the validation split. The section's training
    record holds the fraction of the held-out train-split objects below the threshold,
    which should be ~``threshold``.
    """
    model_dir = Path(model_dir)
    config = config or CoverageConfig()
    model_config = store.read_config(model_dir, missing_ok=True)
    if data is None:
        recorded = model_config.diffusion.training if model_config.diffusion is not None else None
        if recorded is None or not recorded.data:
            raise ValueError(f"{model_dir}: no training set recorded; give the training data (--data)")
        data = recorded.data
    trainset = TrainingSet.open(data, model_config.bands if Path(data).is_file() else None)
    model_config.check_bands(trainset.bandset, model_dir)
    start = time.perf_counter()
    usable = trainset.usable().mask
    train = np.flatnonzero(usable & trainset.split("train"))
    val = np.flatnonzero(usable & trainset.split("val"))
    if len(train) < config.k or len(val) == 0:
        raise ValueError(
            f"{trainset.path}: coverage needs >= {config.k} usable train and >= 1 validation objects, "
            f"has {len(train)} and {len(val)}"
        )
    values = trainset.features.values
    rng = np.random.default_rng(config.seed)
    order = rng.permutation(len(train))  # the reference is a random subset; 5% at least held out
    n_reference = min(config.n_reference, len(train) - min(HELD_OUT, len(train) // 20))
    reference = train[np.sort(order[:n_reference])]
    held_out = train[np.sort(order[n_reference:][:HELD_OUT])]
    calibration = np.sort(rng.choice(val, size=min(config.n_calibration, len(val)), replace=False))
    mean, std, bands = _standardisation(model_config, trainset, train)
    coverage = CoverageModel.fit(config, values[reference], values[calibration], mean, std, bands)
    fitted = time.perf_counter() - start
    start = time.perf_counter()
    floors = _ppc_floors(
        model_dir, model_config, trainset, calibration, config.seed
    )  # before the files change
    ppc_seconds = time.perf_counter() - start
    start = time.perf_counter()
    scores = coverage.score(values[held_out], trainset.features.missing[held_out])
    seconds_per_object = (time.perf_counter() - start) / max(len(held_out), 1)
    record = store.TrainingRecord(
        preset="",
        data=str(trainset.path),
        seed=config.seed,
        seconds=round(fitted, 2),
        counts={"n_train_usable": len(train), "n_val_usable": len(val), "n_held_out": len(held_out)},
        validation={
            "held_out_low_fraction": float(np.mean(coverage.low(scores))) if len(held_out) else None,
            "held_out_median_score": float(np.nanmedian(scores)) if len(held_out) else None,
            "seconds_per_object": seconds_per_object,
            "ppc_calibration_objects": min(defaults.PPC_CALIBRATION, len(calibration)) if floors else 0,
            "ppc_calibration_seconds": round(ppc_seconds, 2),
        },
    )
    section = store.CoverageSection(
        weights=store.write_tensors(model_dir, store.COVERAGE_FILE, coverage.state()),
        config=config,
        feature_names=tuple(trainset.features.names),
        n_reference=len(coverage.reference),
        n_calibration=len(coverage.calibration),
        training=record,
        ppc_floors=floors,
    )
    model_config = dataclasses.replace(model_config, coverage=section)
    store.write_config(
        model_dir, model_config.with_training_set(trainset.bandset, trainset.summary, trainset.simulated)
    )
    return section
