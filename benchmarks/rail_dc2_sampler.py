"""Calibration of a specdiff model's DC2 PDFs against the sampler and its number of steps.

Draws redshift samples for an evenly spaced subset of pz-rail-base's DC2 validation file
(the objects ``benchmarks/rail_dc2.py`` scores) with each sampler setting and prints this
package's metrics of the raw samples (no qp representation in between), so a change of
calibration can be traced to the sampler rather than to training:

    flock /work/locks/cpu python -m benchmarks.rail_dc2_sampler --model build/rail_dc2/model_specdiff.zip \
        --objects 2000 --settings dpmpp2m:20 dpmpp2m:50 ddim:50 ddim:200
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import numpy as np
import pandas as pd

from benchmarks.rail_dc2 import TEST_FILE, _data
from specdiff_catalog.inference import predict
from specdiff_catalog.metrics import pdf_metrics, point_metrics
from specdiff_catalog.models import load_model
from specdiff_catalog.rail.boundary import MagnitudeColumns, magnitudes_to_fluxes, read_model_archive

LIMITS = {"u": 27.79, "g": 29.04, "r": 29.06, "i": 28.62, "z": 27.98, "y": 27.05}  # RAIL's mag_limits
COLUMNS = MagnitudeColumns(
    tuple(f"mag_{b}_lsst" for b in LIMITS),
    tuple(f"mag_err_{b}_lsst" for b in LIMITS),
    {f"mag_{b}_lsst": m for b, m in LIMITS.items()},
)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="model ZIP (SpecdiffInformer) or model directory")
    parser.add_argument("--objects", type=int, default=2000, help="evenly spaced validation objects")
    parser.add_argument("--samples", type=int, default=100, help="samples per object")
    parser.add_argument("--settings", nargs="+", default=["dpmpp2m:20"], help="SAMPLER:STEPS ...")
    args = parser.parse_args(argv)
    model = load_model(read_model_archive(args.model))
    if model.bands is None:
        raise SystemExit(f"{args.model}: config.json records no band set")
    data = _data(TEST_FILE)["photometry"]
    take = np.linspace(0, len(data["redshift"]) - 1, args.objects).astype(int)
    table = {k: np.asarray(v)[take] for k, v in data.items()}
    fluxes = magnitudes_to_fluxes(table, model.bands, COLUMNS)
    z_true = table["redshift"]
    rows = []
    for setting in args.settings:
        sampler, steps = setting.split(":")
        start = time.perf_counter()
        pred = predict(model, fluxes, table["id"], n_samples=args.samples, sampler=sampler, steps=int(steps))
        point = point_metrics(pred.summaries["z_median"], z_true)
        pdf = pdf_metrics(pred.z_samples, z_true)
        rows.append(
            {"sampler": sampler, "steps": int(steps), "seconds": round(time.perf_counter() - start, 1)}
            | {k: v for k, v in dataclasses.asdict(point).items() if k in ("sigma_nmad", "eta_015", "bias")}
            | {k: v for k, v in dataclasses.asdict(pdf).items() if k not in ("n", "n_missing")}
        )
        print(pd.DataFrame(rows[-1:]).to_string(index=False), flush=True)
    print(pd.DataFrame(rows).to_markdown(index=False, floatfmt=".4f"))


if __name__ == "__main__":
    main()
