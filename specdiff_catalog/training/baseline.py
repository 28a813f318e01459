"""The `train baseline` job: fit the tree baseline on a training set and save it in a model directory."""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from specdiff_catalog import defaults
from specdiff_catalog.io.trainset import TrainingSet
from specdiff_catalog.metrics import PdfMetrics, PointMetrics, pdf_metrics, point_metrics
from specdiff_catalog.models import store
from specdiff_catalog.models.baseline import BaselineConfig, BaselineModel

log = logging.getLogger(__name__)

VALIDATION_SAMPLES = 200  # samples per validation object for the PDF metrics


@dataclass(frozen=True)
class BaselineOutcome:
    """What ``train_baseline`` did: the training record written to config.json, and the
    validation metrics (the validation split also chose the stopping point and the
    calibration, so these are optimistic)."""

    record: store.TrainingRecord
    point: PointMetrics
    pdf: PdfMetrics


def train_baseline(
    data: TrainingSet | str | Path,
    model_dir: str | Path,
    *,
    preset: str | Path = defaults.PRESET,
    seed: int = defaults.SEED,
    threads: int = -1,
    bands: str | Path | None = None,
) -> BaselineOutcome:
    """Fit the baseline on SPLIT == "train", early-stop and recalibrate on "val", and write
    it into ``model_dir`` (baseline.cbm + config.json "baseline" section).

    data: a TrainingSet or its path (a training-set directory or a photometry + Z Parquet
    file); preset: baseline preset name or TOML/JSON path; threads: CPU threads (-1: all);
    bands: the band set of a Parquet file's columns (``TrainingSet.open``). Rows the
    training set's ``usable`` filter rejects are skipped and counted.
    """
    trainset = data if isinstance(data, TrainingSet) else TrainingSet.open(data, bands)
    model_dir = Path(model_dir)
    config = store.read_config(model_dir, missing_ok=True)
    config.check_bands(trainset.bandset, model_dir)
    baseline_config = BaselineConfig.load(preset)
    usable = trainset.usable()
    train, val = usable.mask & trainset.split("train"), usable.mask & trainset.split("val")
    if not train.any() or not val.any():
        raise ValueError(
            f"{trainset.path}: needs usable objects in both splits, "
            f"has {train.sum()} train and {val.sum()} val"
        )
    counts = usable.counts()
    log.info(
        "%d of %d objects skipped: %d without usable photometry (NO_PHOTOMETRY), %d without a finite Z",
        int((~usable.mask).sum()),
        len(trainset),
        counts["n_skipped_no_photometry"],
        counts["n_skipped_bad_z"],
    )

    x, names = trainset.features.values, trainset.features.names
    z = trainset.objects["Z"].to_numpy(dtype=np.float64)
    start = time.perf_counter()
    model = BaselineModel(baseline_config, names).fit(
        x[train], z[train], val=(x[val], z[val]), seed=seed, threads=threads
    )
    seconds = time.perf_counter() - start
    z_point, _ = model.predict(x[val])
    samples = model.sample(x[val], VALIDATION_SAMPLES, seed=seed)
    point, pdf = point_metrics(z_point, z[val]), pdf_metrics(samples, z[val], seed=seed)
    record = store.TrainingRecord(
        preset=str(preset),
        data=str(trainset.path),
        seed=seed,
        seconds=round(seconds, 2),
        counts={"n_objects": len(trainset), "n_train": int(train.sum()), "n_val": int(val.sum()), **counts},
        best_step=model.best_iteration,
        validation={
            "point": dataclasses.asdict(point),
            "pdf": dataclasses.asdict(pdf) | {"n_samples": VALIDATION_SAMPLES},
        },
    )
    section = store.write_baseline(model_dir, model, record)
    config = dataclasses.replace(config, baseline=section)
    store.write_config(
        model_dir, config.with_training_set(trainset.bandset, trainset.summary, trainset.simulated)
    )
    return BaselineOutcome(record=record, point=point, pdf=pdf)
