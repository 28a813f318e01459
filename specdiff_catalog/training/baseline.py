"""The `train baseline` job: fit the tree baseline on a training set and save it in a model directory."""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from specdiff_catalog.bands import DEFAULT_BANDSET, BandSet
from specdiff_catalog.features import photometric_features
from specdiff_catalog.flags import Flag
from specdiff_catalog.io.trainset import TrainingSet
from specdiff_catalog.metrics import pdf_metrics, point_metrics
from specdiff_catalog.models.baseline import BaselineConfig, BaselineModel
from specdiff_catalog.models.store import CONFIG, read_config

log = logging.getLogger(__name__)

VALIDATION_SAMPLES = 200  # samples per validation object for the PDF metrics


def trainset_bandset(trainset: TrainingSet, bands: str | Path | None = None) -> BandSet:
    """The training set's band set: ``bands`` (a preset name or TOML/JSON file) when given,
    else the one recorded in trainset.json ("bands": a preset name, file path or band-set
    dict), else ls-grzw1w2 (e.g. a plain Parquet file without ``bands``).

    Raises ValueError when ``bands`` names another band set than trainset.json records.
    """
    recorded = trainset.summary.get("bands")
    recorded_set: BandSet | None = None
    if isinstance(recorded, dict):
        recorded_set = BandSet.from_dict(recorded, source=f"{trainset.path} bands")
    elif recorded is not None:
        recorded_set = BandSet.load(recorded)
    if bands is None:
        return recorded_set if recorded_set is not None else BandSet.load(DEFAULT_BANDSET)
    chosen = BandSet.load(bands)
    if recorded_set is not None and recorded_set.name != chosen.name:
        raise ValueError(
            f"{trainset.path} was prepared with band set {recorded_set.name!r}, not {chosen.name!r}"
        )
    return chosen


def check_model_bands(model_dir: Path, bandset: BandSet) -> None:
    """Refuse a model directory whose other components use another band set."""
    if not (model_dir / CONFIG).exists():
        return
    existing = read_config(model_dir).get("bands")
    name = existing.get("name") if isinstance(existing, dict) else existing
    if name is not None and name != bandset.name:
        raise ValueError(
            f"{model_dir}: its models use band set {name!r} but the training set has {bandset.name!r}; "
            "train the baseline on the same photometry or into another model directory"
        )


def train_baseline(
    data: TrainingSet | str | Path,
    model_dir: str | Path,
    *,
    preset: str | Path = "small",
    seed: int = 0,
    threads: int = -1,
    bands: str | Path | None = None,
) -> dict[str, Any]:
    """Fit the baseline on SPLIT == "train", early-stop and recalibrate on "val", and write
    it into ``model_dir`` (baseline.cbm + config.json "baseline" section).

    data: a TrainingSet or its path (a training-set directory or a photometry + Z Parquet
    file); preset: baseline preset name or TOML/JSON path; threads: CPU threads (-1: all);
    bands: the band set (preset name or file) of a Parquet file's columns (``trainset_bandset``).
    Rows flagged NO_PHOTOMETRY (in their FLAGS column or by the features) and rows without a
    finite Z are skipped and counted. Returns the training summary: counts, seconds, best
    iteration and validation metrics (PointMetrics and PdfMetrics fields; the validation
    split also chose the stopping point and the calibration, so these are optimistic).
    """
    trainset = data if isinstance(data, TrainingSet) else TrainingSet.open(data)
    model_dir = Path(model_dir)
    bandset = trainset_bandset(trainset, bands)
    check_model_bands(model_dir, bandset)
    config = BaselineConfig.load(preset)
    objects = trainset.objects
    features = photometric_features(objects, bandset)
    flags = features.flags | (objects["FLAGS"].to_numpy(dtype=np.uint16) if "FLAGS" in objects else 0)
    z = objects["Z"].to_numpy(dtype=np.float64)
    no_phot = (flags & Flag.NO_PHOTOMETRY) != 0
    bad_z = ~no_phot & ~(np.isfinite(z) & (z > -1))
    usable = ~no_phot & ~bad_z
    split = objects["SPLIT"].to_numpy()
    train, val = usable & (split == "train"), usable & (split == "val")
    if not train.any() or not val.any():
        raise ValueError(
            f"{trainset.path}: needs usable objects in both splits, has {train.sum()} train and {val.sum()} val"
        )
    log.info(
        "%d of %d objects skipped: %d without usable photometry (NO_PHOTOMETRY), %d without a finite Z",
        int((~usable).sum()),
        len(z),
        int(no_phot.sum()),
        int(bad_z.sum()),
    )

    x = features.values
    start = time.perf_counter()
    model = BaselineModel(config, features.names).fit(
        x[train], z[train], val=(x[val], z[val]), seed=seed, threads=threads
    )
    seconds = time.perf_counter() - start
    z_point, _ = model.predict(x[val])
    samples = model.sample(x[val], VALIDATION_SAMPLES, seed=seed)
    summary = {
        "data": str(trainset.path),
        "preset": str(preset),
        "seed": seed,
        "n_objects": len(z),
        "n_train": int(train.sum()),
        "n_val": int(val.sum()),
        "n_skipped_no_photometry": int(no_phot.sum()),
        "n_skipped_bad_z": int(bad_z.sum()),
        "train_seconds": round(seconds, 2),
        "best_iteration": model.best_iteration,
        "validation": {
            "point": dataclasses.asdict(point_metrics(z_point, z[val])),
            "pdf": dataclasses.asdict(pdf_metrics(samples, z[val], seed=seed))
            | {"n_samples": VALIDATION_SAMPLES},
        },
    }
    model.metadata = {"bands": bandset.to_dict(), "training": summary}
    model.save(model_dir)
    return summary
