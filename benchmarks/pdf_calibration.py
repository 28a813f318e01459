"""Why are a diffusion model's PDFs too wide or too narrow? Its calibration under several settings.

    python benchmarks/pdf_calibration.py --model MODEL [--data TRAIN] [--train-objects 1923]
        [--mock MOCK [--objects 3000] [--class BGS ...]] [--other-model NAME=DIR ...]
        [--setting NAME ...] [--json OUT]

100 samples per object with the same noise (counter-based: object id and seed) for each
setting WEIGHTS-OBJECTS-STEPS, DPM-Solver++(2M) with STEPS steps:

    WEIGHTS  ema      the saved (EMA) weights
             raw      the raw (not averaged) weights of the same best epoch
                      (MODEL/training/diffusion/best.safetensors): is the EMA widening them?
             NAME     the saved weights of ``--other-model NAME=DIR`` (e.g. a photo-z-only
                      model of the same training set): is the joint [latent, z] target?
    OBJECTS  val      the validation split of the training set (default: the one the
                      diffusion section records)
             train    ``--train-objects`` objects of the train split: do the objects the
                      network was fitted to come out just as wide (the network, not
                      generalisation)?
             catalog  with ``--mock``: ``--objects`` objects of a held-out mock's photometric
                      catalog (MOCK/catalog, true z and TARGET_CLASS from
                      MOCK/truth/photometric.parquet; the fixed hash-order subset of
                      benchmarks/quality_cost.py, of the ``--class`` classes only if given):
                      is the model calibrated on the photometric sample?
    STEPS    20 is what `train diffusion` stores as its validation metrics; 50: is the
             sampler's discretisation widening the PDFs?

Default settings: ema-val-20 (the reference), ema-val-50, raw-val-20, ema-train-20, and
ema-catalog-20 with ``--mock``. Prints per setting n, sigma_NMAD, bias, CRPS, PIT KS, 68/95%
coverage and the median width of the central 68% interval over (1 + z_true), on catalog
objects also per target class; paired with ema-OBJECTS-20 (when run) on the same objects
and noise, the median ratio of the 68% widths and the change in 68% coverage. Only
photometry and redshift are used (no spectra, no latents).
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
import pandas as pd
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
REFERENCE_STEPS = 20


@dataclasses.dataclass(frozen=True)
class Objects:
    """object_id (N,) int64, z (N,), features (N, F) raw photometric features, missing (N, B),
    target class (N,) str ("" for none) where known."""

    object_id: np.ndarray
    z: np.ndarray
    features: np.ndarray
    missing: np.ndarray
    target_class: np.ndarray | None = None


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


def catalog_objects(mock: Path, bands: BandSet, n: int, classes: list[str] | None) -> Objects:
    """``n`` objects of MOCK's photometric catalog (of ``classes`` only, if given) with their
    true z and target class (those with photometry)."""
    table, ids, z = load_photometry(mock, bands, None if classes else n)
    truth = pd.read_parquet(mock / "truth" / "photometric.parquet", columns=["OBJECT_ID", "TARGET_CLASS"])
    target_class = truth.set_index("OBJECT_ID").loc[ids, "TARGET_CLASS"].to_numpy(str)
    feats = photometric_features(table, bands)
    keep = (feats.flags & np.uint16(Flag.NO_PHOTOMETRY)) == 0
    if classes:
        keep &= np.isin(target_class, classes)
        keep &= np.cumsum(keep) <= n
    return Objects(ids[keep], z[keep], feats.values[keep], feats.missing[keep], target_class[keep])


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


def per_class(samples: np.ndarray, objects: Objects) -> dict[str, dict[str, float]]:
    """summary() of each target class ("none" for objects of no class)."""
    if objects.target_class is None:
        return {}
    rows = {name: objects.target_class == name for name in np.unique(objects.target_class)}
    return {name or "none": summary(samples[row], objects.z[row]) for name, row in rows.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, type=Path)
    parser.add_argument(
        "--data", type=Path, help="training set (default: the one the diffusion model records)"
    )
    parser.add_argument("--train-objects", type=int, default=1923, help="train-split objects (default 1923)")
    parser.add_argument("--mock", type=Path, help="held-out mock survey: the catalog objects")
    parser.add_argument("--objects", type=int, default=3000, help="catalog objects (default 3000)")
    parser.add_argument(
        "--class", dest="classes", action="append", help="only catalog objects of this TARGET_CLASS"
    )
    parser.add_argument(
        "--other-model", action="append", default=[], metavar="NAME=DIR", help="weights named NAME"
    )
    parser.add_argument("--setting", action="append", help="WEIGHTS-OBJECTS-STEPS (default: see above)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(1)
    loaded = load_model(args.model, notice=False)
    ema = loaded.diffusion
    if ema is None or loaded.config.diffusion is None or loaded.config.diffusion.training is None:
        raise SystemExit(f"{args.model}: no trained diffusion model")
    training = loaded.config.diffusion.training
    trainset = functools.cache(lambda: TrainingSet.open(args.data or training.data))
    objects: dict[str, Callable[[], Objects]] = {
        "val": functools.cache(lambda: split_objects(trainset(), "val", None, SEED)),
        "train": functools.cache(lambda: split_objects(trainset(), "train", args.train_objects, SEED)),
    }
    if args.mock is not None:
        if not (args.mock / "truth" / "photometric.parquet").is_file():
            raise SystemExit(f"{args.mock}: not a mock survey (no truth/photometric.parquet)")
        bands = loaded.bands
        if bands is None:
            raise SystemExit(f"{args.model}: config.json records no band set")
        objects["catalog"] = functools.cache(
            lambda: catalog_objects(args.mock, bands, args.objects, args.classes)
        )
    weights: dict[str, Callable[[], DiffusionModel]] = {
        "ema": lambda: ema,
        "raw": functools.cache(lambda: raw_weights(args.model, ema)),
    }
    for spec in args.other_model:
        name, _, path = spec.partition("=")
        if not name or "-" in name or name in weights or not path:
            raise SystemExit(f"--other-model {spec}: NAME=DIR, NAME without '-' and not {sorted(weights)}")
        weights[name] = functools.cache(lambda path=path: _diffusion(Path(path)))
    wanted = args.setting or ["ema-val-20", "ema-val-50", "raw-val-20", "ema-train-20"]
    if not args.setting and args.mock is not None:
        wanted.append("ema-catalog-20")
    for name in wanted:
        model_name, kind, steps = [*name.split("-", 2), "", "", ""][:3]
        if model_name not in weights or kind not in objects or not steps.isdigit():
            known = f"weights {sorted(weights)}, objects {sorted(objects)}"
            raise SystemExit(f"setting {name}: unknown; WEIGHTS-OBJECTS-STEPS with {known}")
    wanted.sort(key=lambda name: not name.startswith("ema-") or not name.endswith(f"-{REFERENCE_STEPS}"))
    results, references = {}, {}
    for name in wanted:
        model_name, kind, steps = name.split("-", 2)
        reference = f"ema-{kind}-{REFERENCE_STEPS}"
        start = time.perf_counter()
        samples, these = z_samples(weights[model_name](), objects[kind](), int(steps)), objects[kind]()
        row: dict[str, object] = {"setting": name, **summary(samples, these.z)}
        if name == reference:
            references[kind] = samples
        elif kind in references:
            row |= paired(samples, references[kind], these.z)
        if classes := per_class(samples, these):
            row["by_class"] = classes
        row["seconds"] = round(time.perf_counter() - start, 1)
        results[name] = row
        print(json.dumps(row))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


def _diffusion(path: Path) -> DiffusionModel:
    """The saved diffusion weights of the model directory ``path``."""
    model = load_model(path, notice=False).diffusion
    if model is None:
        raise SystemExit(f"{path}: no trained diffusion model")
    return model


if __name__ == "__main__":
    main()
