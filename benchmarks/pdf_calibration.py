"""Why are a diffusion model's PDFs too wide or too narrow? Its calibration under several settings.

    python benchmarks/pdf_calibration.py --model MODEL [--data TRAIN] [--train-objects 1923]
        [--mock MOCK [--objects 3000]] [--setting NAME ...] [--json OUT]

On the objects of the training set the model was trained on (default: the one its diffusion
section records), 100 samples per object with the same noise (counter-based: object id and
seed), for each setting:

    ema-val-20    the saved (EMA) weights, validation split, DPM-Solver++(2M) 20 steps (the
                  reference: what `train diffusion` stores as its validation metrics)
    ema-val-50    the same at 50 steps: is the sampler's discretisation widening the PDFs?
    raw-val-20    the raw (not averaged) weights of the same best epoch
                  (MODEL/training/diffusion/best.safetensors): is the EMA?
    ema-train-20  ``--train-objects`` objects of the train split: do the objects the network was
                  fitted to come out just as wide (the network, not generalisation)?
    catalog-20    with ``--mock``: ``--objects`` objects of a held-out mock's photometric catalog
                  (MOCK/catalog, true z from MOCK/truth/photometric.parquet; the fixed hash-order
                  subset of benchmarks/quality_cost.py), 20 steps: is the model calibrated on
                  the photometric sample, not only on objects like its spectroscopic targets?

Prints per setting n, sigma_NMAD, bias, CRPS, PIT KS, 68/95% coverage and the median width of
the central 68% interval over (1 + z_true); for the validation settings also, paired with the
reference on the same objects and noise, the median ratio of the 68% widths and the change in
68% coverage. Only photometry and redshift are used (no spectra, no latents).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from quality_cost import load_photometry  # benchmarks/: run as a script

from specdiff_catalog.bands import BandSet
from specdiff_catalog.features import photometric_features
from specdiff_catalog.flags import Flag
from specdiff_catalog.io.trainset import TrainingSet
from specdiff_catalog.metrics import pdf_metrics, point_metrics
from specdiff_catalog.models import load_model
from specdiff_catalog.models.diffusion import DiffusionModel
from specdiff_catalog.models.sampling import sample
from specdiff_catalog.summaries import sample_quantiles
from specdiff_catalog.training.loop import model_state

N_SAMPLES = 100
SEED = 0
REFERENCE = "ema-val-20"


@dataclasses.dataclass(frozen=True)
class Objects:
    """object_id (N,) int64, z (N,), features (N, F) raw photometric features, missing (N, B)."""

    object_id: np.ndarray
    z: np.ndarray
    features: np.ndarray
    missing: np.ndarray


def split_objects(trainset: TrainingSet, split: str, limit: int | None, seed: int) -> Objects:
    """The usable objects of a split (finite Z, usable photometry), at most ``limit`` at random."""
    objects = trainset.objects
    feats = trainset.features
    usable = trainset.usable(np.zeros((len(objects), 0), np.float32)).mask & trainset.split(split)
    rows = np.flatnonzero(usable)
    if limit is not None and rows.size > limit:
        rows = np.sort(np.random.default_rng(seed).choice(rows, limit, replace=False))
    return Objects(
        objects["TARGETID"].to_numpy(np.int64)[rows],
        objects["Z"].to_numpy(np.float64)[rows],
        feats.values[rows],
        feats.missing[rows],
    )


def catalog_objects(mock: Path, bands: BandSet, n: int) -> Objects:
    """``n`` objects of MOCK's photometric catalog with their true z (those with photometry)."""
    table, ids, z = load_photometry(mock, bands, n)
    feats = photometric_features(table, bands)
    keep = (feats.flags & np.uint16(Flag.NO_PHOTOMETRY)) == 0
    return Objects(ids[keep], z[keep], feats.values[keep], feats.missing[keep])


def raw_weights(model_dir: Path, ema: DiffusionModel) -> DiffusionModel:
    """The best epoch's raw (not averaged) network, in the trainee checkpoint as model.model.net.*."""
    state = model_state(model_dir / "training" / "diffusion" / "best.safetensors")
    raw = {k.removeprefix("model.net."): v for k, v in state.items() if k.startswith("model.net.")}
    return DiffusionModel.from_state(ema.config, ema.standardisation, raw).eval()


def z_samples(model: DiffusionModel, objects: Objects, steps: int) -> np.ndarray:
    """(N, K) redshift samples, DPM-Solver++(2M) with ``steps`` steps."""
    with torch.inference_mode():
        x = sample(
            model,
            objects.features,
            objects.missing,
            objects.object_id,
            n_samples=N_SAMPLES,
            seed=SEED,
            sampler="dpmpp2m",
            steps=steps,
        )
    return model.to_physical(x)[0].numpy()


def summary(samples: np.ndarray, z: np.ndarray) -> dict[str, float]:
    """Point and PDF metrics, and the median 68% width / (1 + z)."""
    q = sample_quantiles(samples, [0.16, 0.5, 0.84])
    point = point_metrics(q[:, 1], z)
    pdf = pdf_metrics(samples, z, seed=SEED)
    return {
        "n": pdf.n,
        "sigma_nmad": point.sigma_nmad,
        "bias": point.bias,
        "crps": pdf.crps,
        "pit_ks": pdf.pit_ks,
        "coverage_68": pdf.coverage_68,
        "coverage_95": pdf.coverage_95,
        "width_68": float(np.median((q[:, 2] - q[:, 0]) / (1 + z))),
    }


def paired(samples: np.ndarray, reference: np.ndarray, z: np.ndarray) -> dict[str, float]:
    """Against the reference's samples of the same objects: median 68% width ratio, coverage change."""
    q, r = sample_quantiles(samples, [0.16, 0.84]), sample_quantiles(reference, [0.16, 0.84])
    inside = (z >= q[:, 0]) & (z <= q[:, 1])
    inside_ref = (z >= r[:, 0]) & (z <= r[:, 1])
    return {
        "width_ratio_median": float(np.median((q[:, 1] - q[:, 0]) / (r[:, 1] - r[:, 0]))),
        "coverage_68_change": float(inside.mean() - inside_ref.mean()),
        "objects_in_out": int((inside & ~inside_ref).sum()),
        "objects_out_in": int((~inside & inside_ref).sum()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, type=Path)
    parser.add_argument(
        "--data", type=Path, help="training set (default: the one the diffusion model records)"
    )
    parser.add_argument("--train-objects", type=int, default=1923, help="train-split objects (default 1923)")
    parser.add_argument("--mock", type=Path, help="held-out mock survey: adds the catalog-20 setting")
    parser.add_argument("--objects", type=int, default=3000, help="catalog objects (default 3000)")
    parser.add_argument("--setting", action="append", help="settings to run (default: all)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(1)
    loaded = load_model(args.model, notice=False)
    ema = loaded.diffusion
    if ema is None or loaded.config.diffusion is None or loaded.config.diffusion.training is None:
        raise SystemExit(f"{args.model}: no trained diffusion model")
    training = loaded.config.diffusion.training
    trainset = functools.cache(lambda: TrainingSet.open(args.data or training.data))
    val = functools.cache(lambda: split_objects(trainset(), "val", None, SEED))
    train = functools.cache(lambda: split_objects(trainset(), "train", args.train_objects, SEED))
    settings: dict[str, Callable[[], tuple[np.ndarray, Objects]]] = {
        "ema-val-20": lambda: (z_samples(ema, val(), 20), val()),
        "ema-val-50": lambda: (z_samples(ema, val(), 50), val()),
        "raw-val-20": lambda: (z_samples(raw_weights(args.model, ema), val(), 20), val()),
        "ema-train-20": lambda: (z_samples(ema, train(), 20), train()),
    }
    if args.mock is not None:
        if not (args.mock / "truth" / "photometric.parquet").is_file():
            raise SystemExit(f"{args.mock}: not a mock survey (no truth/photometric.parquet)")
        bands = loaded.bands
        if bands is None:
            raise SystemExit(f"{args.model}: config.json records no band set")
        catalog = functools.cache(lambda: catalog_objects(args.mock, bands, args.objects))
        settings["catalog-20"] = lambda: (z_samples(ema, catalog(), 20), catalog())
    wanted = args.setting or list(settings)
    if REFERENCE not in wanted and any(name.split("-")[1] == "val" for name in wanted):
        wanted.insert(0, REFERENCE)
    results, reference = {}, None
    for name in wanted:
        start = time.perf_counter()
        samples, objects = settings[name]()
        row: dict[str, float | str] = {"setting": name, **summary(samples, objects.z)}
        if name == REFERENCE:
            reference = samples
        elif name.split("-")[1] == "val" and reference is not None:
            row |= paired(samples, reference, objects.z)
        row["seconds"] = round(time.perf_counter() - start, 1)
        results[name] = row
        print(json.dumps(row))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
