"""PIT KS of perfectly calibrated samples: the floor of the statistic at K samples per object.

METHOD.md's PIT is the fraction of an object's K samples <= z_true, so it takes only the
values j/K and its KS distance to U(0, 1) is not zero even when the samples come from the
truth's own distribution. This draws truths and samples from one standard normal and scores
them with ``metrics.pdf_metrics`` (what `evaluate` reports), to read a store's PIT KS against:

    python benchmarks/pit_floor.py --objects 20000 --k 64 100 256 --repeats 5
"""

import argparse

import numpy as np

from specdiff_catalog.metrics import pdf_metrics


def floor(n_objects: int, k: int, seed: int) -> float:
    """PIT KS of (n_objects, k) standard normal samples against standard normal truths."""
    rng = np.random.default_rng(seed)
    samples = rng.standard_normal((n_objects, k))
    return pdf_metrics(samples, rng.standard_normal(n_objects)).pit_ks


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--objects", type=int, default=20000)
    parser.add_argument("--k", type=int, nargs="+", default=[64, 100, 256])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    print(f"{args.objects} objects, {args.repeats} repeats (seeds 0..{args.repeats - 1})")
    for k in args.k:
        values = [floor(args.objects, k, seed) for seed in range(args.repeats)]
        print(f"K = {k:4d}: PIT KS mean {np.mean(values):.4f} (range {min(values):.4f} .. {max(values):.4f})")


if __name__ == "__main__":
    main()
