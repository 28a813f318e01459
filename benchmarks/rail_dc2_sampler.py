"""Calibration of specdiff models' DC2 PDFs by sampler setting, model and split.

Draws redshift samples for evenly spaced objects of pz-rail-base's DC2 files with each
model and sampler setting and prints this package's metrics of the raw samples (no qp
representation in between), so a change of calibration can be traced to the sampler, the
training or generalisation: ``--set test`` is the validation file ``benchmarks/rail_dc2.py``
scores; ``train`` / ``val`` are the training file's two splits as ``train diffusion`` made
them (``hashing.validation_mask`` of the Informer's TARGETID), i.e. objects the model was fitted to
and objects it selected its epoch on.

    python -m benchmarks.rail_dc2_sampler --model build/rail_dc2/model_specdiff.zip \
        --objects 1000 --settings dpmpp2m:20 dpmpp2m:50 ddim:50 ddim:200
    python -m benchmarks.rail_dc2_sampler --model small=small.zip --model photoz=photoz.zip \
        --set train --set val --set test --objects 1000
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from typing import Any

import numpy as np
import pandas as pd

from benchmarks.rail_dc2 import TEST_FILE, TRAIN_FILE, _data
from specdiff_catalog.hashing import validation_mask
from specdiff_catalog.inference import predict
from specdiff_catalog.io.trainset import VALIDATION_FRACTION
from specdiff_catalog.metrics import pdf_metrics, point_metrics
from specdiff_catalog.models import load_model
from specdiff_catalog.rail.boundary import MagnitudeColumns, magnitudes_to_fluxes, read_model_archive

LIMITS = {"u": 27.79, "g": 29.04, "r": 29.06, "i": 28.62, "z": 27.98, "y": 27.05}  # RAIL's mag_limits
COLUMNS = MagnitudeColumns(
    tuple(f"mag_{b}_lsst" for b in LIMITS),
    tuple(f"mag_err_{b}_lsst" for b in LIMITS),
    {f"mag_{b}_lsst": m for b, m in LIMITS.items()},
)
SETS = ("train", "val", "test")


def objects(name: str, n: int) -> dict[str, np.ndarray]:
    """n evenly spaced objects of one set (columns of the RAIL photometry table)."""
    photometry = _data(TEST_FILE if name == "test" else TRAIN_FILE)["photometry"]
    data = {k: np.asarray(v) for k, v in photometry.items()}
    keep = np.ones(data["redshift"].size, bool)
    if name != "test":
        # the Informer's TARGETID: RAIL's id_col ("object_id") where the table has it, else the row
        # number (pz-rail-base's DC2 files have "id", so the row number)
        ids = data.get("object_id", np.arange(data["redshift"].size)).astype(np.int64)
        val = validation_mask(ids, VALIDATION_FRACTION)
        keep = val if name == "val" else ~val
    rows = np.flatnonzero(keep)
    rows = rows[np.linspace(0, rows.size - 1, min(n, rows.size)).astype(int)]
    return {k: v[rows] for k, v in data.items()}


def scores(
    model: Any, table: dict[str, np.ndarray], sampler: str, steps: int, n_samples: int
) -> dict[str, Any]:
    """Point and PDF metrics, and the median 68% width / (1 + z), of one sampling run."""
    if model.bands is None:
        raise SystemExit("the model's config.json records no band set")
    fluxes = magnitudes_to_fluxes(table, model.bands, COLUMNS)
    z_true = table["redshift"]
    start = time.perf_counter()
    pred = predict(model, fluxes, table["id"], n_samples=n_samples, sampler=sampler, steps=steps)
    point = point_metrics(pred.summaries["z_median"], z_true)
    pdf = pdf_metrics(pred.z_samples, z_true)
    lo, hi = np.quantile(pred.z_samples, [0.16, 0.84], axis=1)
    return (
        {"seconds": round(time.perf_counter() - start, 1)}
        | {k: v for k, v in dataclasses.asdict(point).items() if k in ("sigma_nmad", "eta_015", "bias")}
        | {k: v for k, v in dataclasses.asdict(pdf).items() if k not in ("n", "n_missing")}
        | {"width_68": float(np.median((hi - lo) / (1 + z_true)))}
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", action="append", required=True, help="[LABEL=]model ZIP (SpecdiffInformer) or directory"
    )
    parser.add_argument("--set", action="append", choices=SETS, help="objects to score (default: test)")
    parser.add_argument("--objects", type=int, default=2000, help="evenly spaced objects per set")
    parser.add_argument("--samples", type=int, default=100, help="samples per object")
    parser.add_argument("--settings", nargs="+", default=["dpmpp2m:20"], help="SAMPLER:STEPS ...")
    args = parser.parse_args(argv)
    tables = {name: objects(name, args.objects) for name in args.set or ["test"]}
    rows = []
    for spec in args.model:
        label, _, path = spec.rpartition("=")
        model = load_model(read_model_archive(path))
        for setting in args.settings:
            sampler, steps = setting.split(":")
            for name, table in tables.items():
                row = {"model": label or path, "sampler": sampler, "steps": int(steps), "set": name}
                row |= {"n": table["redshift"].size} | scores(model, table, sampler, int(steps), args.samples)
                rows.append(row)
                print(pd.DataFrame(rows[-1:]).to_string(index=False), flush=True)
    print(pd.DataFrame(rows).to_markdown(index=False, floatfmt=".4f"))


if __name__ == "__main__":
    main()
