"""Paired bootstrap of the diffusion-minus-baseline differences of an `evaluate` result.

Both methods are scored on the same objects, so their differences are compared on the
same bootstrap resamples of objects: prints the difference in sigma_NMAD, eta_0.15 and
mean CRPS with its bootstrap standard error and 95% interval (docs/photoz.md).

    python -m benchmarks.photoz_paired_bootstrap --pz PZ.zarr --truth TRUTH.parquet [--n 1000]
"""

from __future__ import annotations

import argparse

import numpy as np

from specdiff_catalog.metrics import ETA_CUT, NMAD_SCALE, delta_z
from specdiff_catalog.report.evaluate import evaluate_store


def statistics(dz: np.ndarray, crps: np.ndarray) -> np.ndarray:
    """(3, ...) sigma_NMAD, eta_0.15, mean CRPS along the last axis of dz / crps."""
    median = np.median(dz, axis=-1, keepdims=True)
    nmad = NMAD_SCALE * np.median(np.abs(dz - median), axis=-1)
    return np.stack([nmad, (np.abs(dz) > ETA_CUT).mean(axis=-1), crps.mean(axis=-1)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pz", required=True)
    parser.add_argument("--truth", required=True)
    parser.add_argument("--model")
    parser.add_argument("--n", type=int, default=1000, help="bootstrap resamples (default 1000)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    objects = evaluate_store(args.pz, args.truth, args.model, seed=args.seed).objects
    scored = objects.dropna(subset=["z_phot_diffusion", "z_phot_baseline", "crps_diffusion", "crps_baseline"])
    z = scored["z_true"].to_numpy()
    dz = {m: delta_z(scored[f"z_phot_{m}"].to_numpy(), z) for m in ("diffusion", "baseline")}
    crps = {m: scored[f"crps_{m}"].to_numpy() for m in ("diffusion", "baseline")}
    rng = np.random.default_rng(args.seed)
    draws = rng.integers(0, len(z), size=(args.n, len(z)))
    diff = statistics(dz["diffusion"][draws], crps["diffusion"][draws]) - statistics(
        dz["baseline"][draws], crps["baseline"][draws]
    )
    point = statistics(dz["diffusion"], crps["diffusion"]) - statistics(dz["baseline"], crps["baseline"])
    print(f"{len(z)} objects, {args.n} paired bootstrap resamples: diffusion - baseline")
    for name, d, b in zip(("sigma_nmad", "eta_015", "crps"), point, diff, strict=True):
        lo, hi = np.percentile(b, [2.5, 97.5])
        print(f"  {name:10s} {d:+.5f}  (s.e. {b.std():.5f}; 95% interval {lo:+.5f} .. {hi:+.5f})")


if __name__ == "__main__":
    main()
