"""Time `train_baseline` on ~20,000 training objects and score it on held-out objects.

Run from the repository root (2 threads, low priority):

    nice -n 10 python -m benchmarks.baseline_training --preset small --threads 2

Uses the toy population of tests/_toy_photometry.py (smooth colour-redshift relations,
so the absolute sigma_NMAD is far better than on real data); the timing is what this
script is for. Prints the training summary and a photoz_table on 5,000 test objects.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from specdiff_catalog.features import photometric_features
from specdiff_catalog.metrics import photoz_table
from specdiff_catalog.models import load_model
from specdiff_catalog.training.baseline import train_baseline
from tests._toy_photometry import toy_photometry


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--preset", default="small")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--n", type=int, default=22300, help="objects in the training set (10%% go to val)")
    parser.add_argument("--n-test", type=int, default=5000)
    args = parser.parse_args()
    pd.set_option("display.width", 200)

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "train.parquet"
        toy_photometry(args.n, seed=1).to_parquet(path)
        start = time.perf_counter()
        outcome = train_baseline(path, Path(tmp) / "model", preset=args.preset, threads=args.threads)
        print(f"train_baseline wall time: {time.perf_counter() - start:.1f} s")
        print(json.dumps(dataclasses.asdict(outcome), indent=1))
        loaded = load_model(Path(tmp) / "model")
        model, bands = loaded.baseline, loaded.bands
        assert model is not None and bands is not None
        size = (Path(tmp) / "model" / "baseline.cbm").stat().st_size
        print(f"baseline.cbm: {size / 1e6:.1f} MB")

    test = toy_photometry(args.n_test, seed=2)
    x = photometric_features(test, bands).values
    start = time.perf_counter()
    z_point, _ = model.predict(x)
    samples = model.sample(x, 200, seed=0)
    print(f"predict + 200 samples for {args.n_test} objects: {time.perf_counter() - start:.2f} s")
    z_true = test["Z"].to_numpy()
    r_mag = 22.5 - 2.5 * np.log10(np.clip(test["FLUX_R"].to_numpy(), 1e-3, None))
    table = photoz_table(
        {f"tree-{args.preset}": (z_point, samples)}, z_true, bins=("mag_r", r_mag, [17, 19, 20.5, 22])
    )
    print(table.round(4).to_string(index=False))


if __name__ == "__main__":
    main()
