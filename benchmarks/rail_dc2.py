"""RAIL comparison on DC2: this package's photo-z-only model against RAIL's own estimators.

Every method is trained (``inform``) on pz-rail-base's ``test_dc2_training_9816.hdf5``
(10,225 galaxies, LSST ugrizy magnitudes) and run (``estimate``) on
``test_dc2_validation_9816.hdf5`` (20,449 galaxies) through its RAIL stages with the stages'
default configuration; specdiff through ``SpecdiffInformer``/``SpecdiffEstimator``
(``--specdiff-preset``, default ``photoz``, the Informer's). Each method's qp ensemble is written to
OUT/<method>.hdf5 by RAIL and reused on a later run (``--rerun`` to redo it).

All ensembles are scored the same way, with this package's metrics (``metrics.photoz_table``):
each PDF's CDF is evaluated on a fine common grid (0..3.5, dz = 0.001) and inverted at the K
levels (k + 0.5)/K (``--levels``, default 200); those K quantiles are the "samples" of the
PDF metrics (PIT, CRPS, coverage) and their median is every method's point estimate. So a
method's representation (hist, interp grid, Gaussian mixture, Gaussian) is scored as qp
gives it, and no method gets its own scoring code.

    flock /work/locks/cpu python -m benchmarks.rail_dc2 --out build/rail_dc2
    python -m benchmarks.rail_dc2 --out build/rail_dc2 --methods specdiff,flexzboost   # a subset

Needs the ``[benchmarks]`` extra (the RAIL estimators); docs/rail.md has the table.
"""

from __future__ import annotations

import argparse
import copy
import importlib
import json
import time
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchmarks.photoz_paired_bootstrap import paired_bootstrap, scored_values
from specdiff_catalog.metrics import crps, photoz_table, pit

TRAIN_FILE = "examples_data/testdata/test_dc2_training_9816.hdf5"
TEST_FILE = "examples_data/testdata/test_dc2_validation_9816.hdf5"
SCORE_GRID = np.linspace(0.0, 3.5, 3501)
COLUMNS = ["sigma_nmad", "eta_015", "eta_lsst", "bias", "crps", "pit_ks", "pit_outlier_rate"]
COLUMNS += ["coverage_68", "coverage_95"]


@dataclass(frozen=True)
class RailMethod:
    """A RAIL informer/estimator pair: module, class names, the package that provides them and
    the options passed besides the file names (none but specdiff's preset and seeds)."""

    module: str
    informer: str
    estimator: str
    package: str
    inform_options: dict[str, Any] = field(default_factory=dict)
    estimate_options: dict[str, Any] = field(default_factory=dict)


METHODS = {
    "specdiff": RailMethod(
        "rail.estimation.algos.specdiff", "SpecdiffInformer", "SpecdiffEstimator", "specdiff-catalog"
    ),
    "flexzboost": RailMethod(
        "rail.estimation.algos.flexzboost", "FlexZBoostInformer", "FlexZBoostEstimator", "pz-rail-flexzboost"
    ),
    "knn": RailMethod(
        "rail.estimation.algos.k_nearneigh", "KNearNeighInformer", "KNearNeighEstimator", "pz-rail-sklearn"
    ),
    "cmnn": RailMethod("rail.estimation.algos.cmnn", "CMNNInformer", "CMNNEstimator", "pz-rail-cmnn"),
    "gpz": RailMethod("rail.estimation.algos.gpz", "GPzInformer", "GPzEstimator", "pz-rail-gpz-v1"),
    "dnf": RailMethod("rail.estimation.algos.dnf", "DNFInformer", "DNFEstimator", "pz-rail-dnf"),
    "pzflow": RailMethod(
        "rail.estimation.algos.pzflow_nf", "PZFlowInformer", "PZFlowEstimator", "pz-rail-pzflow"
    ),
    "bpz": RailMethod("rail.estimation.algos.bpz_lite", "BPZliteInformer", "BPZliteEstimator", "pz-rail-bpz"),
}


def _data(relative: str) -> dict[str, Any]:
    import tables_io
    from rail.utils.path_utils import find_rail_file

    return tables_io.read(find_rail_file(relative))


def run_method(name: str, method: RailMethod, train: Any, test: Any, out: Path) -> dict[str, Any]:
    """Inform and estimate one method through its RAIL stages; the ensemble goes to OUT/<name>.hdf5."""
    module = importlib.import_module(method.module)
    informer_class, estimator_class = getattr(module, method.informer), getattr(module, method.estimator)
    model_suffix = informer_class.outputs[0][1].suffix
    # some stages draw from numpy's global generator unseeded (GPz's training permutation):
    # seeded here, each method's row is the same on every run of this script
    np.random.seed(0)
    start = time.perf_counter()
    informer = informer_class.make_stage(
        name=f"inform_{name}", model=str(out / f"model_{name}.{model_suffix}"), **method.inform_options
    )
    # FlexZBoost, CMNN, DNF and BPZ replace non-detections in the table they are given, in place:
    # each method gets its own copy, so no method sees another's edits and the order does not matter
    informer.inform(copy.deepcopy(train))
    inform_seconds = time.perf_counter() - start
    estimator = estimator_class.make_stage(
        name=f"estimate_{name}",
        model=informer.get_handle("model"),
        output=str(out / f"{name}.hdf5"),
        **method.estimate_options,
    )
    estimator.estimate(copy.deepcopy(test))
    return {
        "inform_seconds": round(inform_seconds, 1),
        "estimate_seconds": round(time.perf_counter() - start - inform_seconds, 1),
        "package": method.package,
        "version": version(method.package),
        "options": {"inform": method.inform_options, "estimate": method.estimate_options},
    }


def quantile_samples(ensemble: Any, levels: np.ndarray, chunk: int = 2000) -> np.ndarray:
    """(N, K) quantiles of every PDF at ``levels``, by inverting its CDF on SCORE_GRID."""
    out = np.empty((ensemble.npdf, levels.size))
    for lo in range(0, ensemble.npdf, chunk):
        cdf = np.asarray(ensemble[lo : lo + chunk].cdf(SCORE_GRID), dtype=np.float64)
        cdf = np.maximum.accumulate(np.nan_to_num(cdf, nan=0.0), axis=1)
        for i, row in enumerate(cdf):
            out[lo + i] = np.interp(levels, row, SCORE_GRID) if row[-1] > 0 else np.nan
    return out


def score(
    out: Path, names: list[str], z_true: np.ndarray, n_levels: int
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{method: (median (N,), quantile "samples" (N, K))} of every method's ensemble (OUT/<name>.hdf5)."""
    import qp

    levels = np.append((np.arange(n_levels) + 0.5) / n_levels, 0.5)  # the samples, then the median
    results = {}
    for name in names:
        quantiles = quantile_samples(qp.read(str(out / f"{name}.hdf5")), levels)
        if quantiles.shape[0] != z_true.size:
            raise ValueError(f"{name}: {quantiles.shape[0]} PDFs for {z_true.size} objects")
        results[name] = (quantiles[:, -1], quantiles[:, :-1])
    return results


def paired_differences(
    results: dict[str, tuple[np.ndarray, np.ndarray]], z_true: np.ndarray, n: int, seed: int = 0
) -> pd.DataFrame:
    """The first method minus each other one on the same bootstrap resamples of the objects:
    ``photoz_paired_bootstrap.paired_bootstrap``'s statistics, difference, s.e. and 95% interval."""
    values = {
        name: scored_values(median, x, z_true, crps=crps(x, z_true), pit=pit(x, z_true, seed=seed))
        for name, (median, x) in results.items()
    }
    first, *others = results
    rng = np.random.default_rng(seed)
    tables = [
        paired_bootstrap(values, n, rng, (first, other))
        .assign(versus=other)[["versus", "statistic", first, other, "difference", "se", "lo95", "hi95"]]
        .rename(columns={other: "other"})
        for other in others
    ]
    return pd.concat(tables, ignore_index=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="directory for models, ensembles and tables")
    parser.add_argument(
        "--methods", default=",".join(METHODS), help=f"comma-separated, of {','.join(METHODS)}"
    )
    parser.add_argument("--specdiff-preset", default="photoz", help="diffusion preset of SpecdiffInformer")
    parser.add_argument("--seed", type=int, default=0, help="specdiff training and sampling seed")
    parser.add_argument("--levels", type=int, default=200, help="quantile levels per PDF for the scores")
    parser.add_argument(
        "--bootstrap",
        type=int,
        default=0,
        metavar="N",
        help="also print the first method minus each other's statistics over N paired bootstrap resamples",
    )
    parser.add_argument(
        "--rerun", action="store_true", help="inform and estimate again even if OUT/<m>.hdf5 exists"
    )
    args = parser.parse_args(argv)
    names = args.methods.split(",")
    METHODS["specdiff"] = RailMethod(
        "rail.estimation.algos.specdiff",
        "SpecdiffInformer",
        "SpecdiffEstimator",
        "specdiff-catalog",
        {"preset": args.specdiff_preset, "seed": args.seed},
        {"seed": args.seed},
    )
    args.out.mkdir(parents=True, exist_ok=True)
    train, test = _data(TRAIN_FILE), _data(TEST_FILE)
    runs_file = args.out / "runs.json"
    runs = json.loads(runs_file.read_text()) if runs_file.exists() else {}
    for name in names:
        if args.rerun or not (args.out / f"{name}.hdf5").exists():
            print(f"{name}: inform + estimate", flush=True)
            runs[name] = run_method(name, METHODS[name], train, test, args.out)
            runs_file.write_text(json.dumps(runs, indent=2))
    z_true = np.asarray(test["photometry"]["redshift"])
    results = score(args.out, names, z_true, args.levels)
    table = photoz_table(results, z_true)
    table["inform_s"] = [runs.get(m, {}).get("inform_seconds", np.nan) for m in table["method"]]
    table["estimate_s"] = [runs.get(m, {}).get("estimate_seconds", np.nan) for m in table["method"]]
    table.to_csv(args.out / "metrics.csv", index=False)
    shown = table[["method", "n", *COLUMNS, "inform_s", "estimate_s"]]
    print(shown.to_markdown(index=False, floatfmt=".4f"))
    if args.bootstrap:
        differences = paired_differences(results, z_true, args.bootstrap)
        differences.to_csv(args.out / "paired_bootstrap.csv", index=False)
        print(f"\n{names[0]} minus each method, {args.bootstrap} paired bootstrap resamples of the objects")
        print(differences.to_markdown(index=False, floatfmt=".5f"))


if __name__ == "__main__":
    main()
