"""Paired bootstrap of the diffusion-minus-baseline differences of an `evaluate` result, overall,
per DESI target class and per bin of true redshift; Dn4000 from photometry per target class.

Both methods are scored on the same objects, so their differences are compared on the
same bootstrap resamples of objects: for bias, sigma_NMAD, eta_0.15, mean CRPS, PIT KS and
the 68% / 95% coverage it prints both methods' values, the difference and its bootstrap
standard error and 95% interval (docs/photoz.md). The statistics are those of
``metrics.photoz_table`` (the same numbers `evaluate` prints for all objects).

    python -m benchmarks.photoz_paired_bootstrap --pz PZ.zarr --truth TRUTH.parquet [--n 1000]
        [--model MODEL] [--seed 0] [--z-edges 0,0.2,...,1.6] [--json OUT]
        [--spectra REPORT/spectra.parquet --spectra-truth MOCK/truth]

Groups: all objects; per ``TARGET_CLASS`` of the truth table when it has that column (a
mock's truth: BGS / LRG / ELG, and objects no class selects as "none"); per bin of the
*true* redshift (``--z-edges``): binning on z_true keeps the two methods on the same objects,
which the pairing needs (``evaluate``'s own z bins are each method's z_phot).

``--spectra``: the per-object table of `evaluate --report DIR --spectra ...` (DIR/spectra.parquet:
spectra decoded from the photometry of DESI-format galaxies against their noiseless truth),
joined on TARGETID to ``--spectra-truth``'s spectroscopic.parquet: median and NMAD of
Dn4000 (decoded - true) per TARGET_CLASS.
"""

from __future__ import annotations

import argparse
import itertools
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from specdiff_catalog.metrics import ETA_CUT, NMAD_SCALE, delta_z
from specdiff_catalog.report.evaluate import evaluate_store
from specdiff_catalog.summaries import sample_quantiles

METHODS = ("diffusion", "baseline")
STATISTICS = ("bias", "sigma_nmad", "eta_015", "crps", "pit_ks", "coverage_68", "coverage_95")
Z_EDGES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0, 1.2, 1.4, 1.6)
NO_CLASS = "none"  # objects no DESI target class selects
CHUNK = 50  # bootstrap resamples evaluated at once (memory: CHUNK x objects x 5 float64)


def per_object(objects: pd.DataFrame, samples: np.ndarray, method: str) -> dict[str, np.ndarray]:
    """(N,) dz, CRPS, PIT and whether z_true lies in the central 68% / 95% interval of the samples
    (the ``metrics.coverage_curve`` intervals: type-6 sample quantiles, inclusive)."""
    return scored_values(
        objects[f"z_phot_{method}"].to_numpy(),
        samples,
        objects["z_true"].to_numpy(),
        crps=objects[f"crps_{method}"].to_numpy(),
        pit=objects[f"pit_{method}"].to_numpy(),
    )


def scored_values(
    z_phot: np.ndarray, samples: np.ndarray, z_true: np.ndarray, *, crps: np.ndarray, pit: np.ndarray
) -> dict[str, np.ndarray]:
    """The per-object values ``statistics`` reduces: dz, CRPS, PIT and in68 / in95 (z_true inside
    the central interval of samples: (N, K)), for N objects."""
    q = sample_quantiles(samples, [0.16, 0.84, 0.025, 0.975])
    return {
        "dz": delta_z(z_phot, z_true),
        "crps": crps,
        "pit": pit,
        "in68": ((z_true >= q[:, 0]) & (z_true <= q[:, 1])).astype(np.float64),
        "in95": ((z_true >= q[:, 2]) & (z_true <= q[:, 3])).astype(np.float64),
    }


def ks_uniform(p: np.ndarray) -> np.ndarray:
    """KS statistic of the values along the last axis of p against U(0, 1) (as scipy.stats.kstest)."""
    p = np.sort(p, axis=-1)
    n = p.shape[-1]
    i = np.arange(1, n + 1)
    return np.maximum((i / n - p).max(axis=-1), (p - (i - 1) / n).max(axis=-1))


def statistics(values: dict[str, np.ndarray]) -> np.ndarray:
    """(7, ...) the STATISTICS along the last axis of each per-object array."""
    dz = values["dz"]
    bias = np.median(dz, axis=-1)
    return np.stack(
        [
            bias,
            NMAD_SCALE * np.median(np.abs(dz - bias[..., None]), axis=-1),
            (np.abs(dz) > ETA_CUT).mean(axis=-1),
            values["crps"].mean(axis=-1),
            ks_uniform(values["pit"]),
            values["in68"].mean(axis=-1),
            values["in95"].mean(axis=-1),
        ]
    )


def paired_bootstrap(
    values: dict[str, dict[str, np.ndarray]],
    n: int,
    rng: np.random.Generator,
    methods: tuple[str, str] = METHODS,
) -> pd.DataFrame:
    """One row per statistic: both methods, first - second, its bootstrap s.e. and 95% interval."""
    first, second = methods
    size = len(values[first]["dz"])
    point = {m: statistics(values[m]) for m in methods}
    diffs = []
    for start in range(0, n, CHUNK):
        draws = rng.integers(0, size, size=(min(CHUNK, n - start), size))
        diffs.append(
            statistics({k: v[draws] for k, v in values[first].items()})
            - statistics({k: v[draws] for k, v in values[second].items()})
        )
    boot = np.concatenate(diffs, axis=1)
    lo, hi = np.percentile(boot, [2.5, 97.5], axis=1)
    return pd.DataFrame(
        {
            "statistic": STATISTICS,
            first: point[first],
            second: point[second],
            "difference": point[first] - point[second],
            "se": boot.std(axis=1),
            "lo95": lo,
            "hi95": hi,
        }
    )


def groups(objects: pd.DataFrame, truth: pd.DataFrame, z_edges: tuple[float, ...]) -> dict[str, np.ndarray]:
    """name -> boolean mask over the objects: all, each target class (when the truth has them),
    each bin [lo, hi) of z_true."""
    out = {"all": np.ones(len(objects), dtype=bool)}
    if "TARGET_CLASS" in truth:
        label = truth.set_index("OBJECT_ID")["TARGET_CLASS"].fillna("").replace("", NO_CLASS)
        classes = label.reindex(objects["object_id"]).fillna(NO_CLASS).to_numpy()
        for name in [*sorted(set(classes) - {NO_CLASS}), NO_CLASS]:
            out[f"class {name}"] = classes == name
    z = objects["z_true"].to_numpy()
    for lo, hi in itertools.pairwise(z_edges):
        out[f"z_true [{lo:g}, {hi:g})"] = (z >= lo) & (z < hi)
    return out


def dn4000_by_class(spectra: Path, truth_dir: Path) -> pd.DataFrame:
    """Per TARGET_CLASS (and all): n, median and NMAD of dn4000_rec - dn4000_true of a spectral
    validation's per-object table, and the same for the observed spectrum's own Dn4000."""
    table = pd.read_parquet(spectra).merge(
        pd.read_parquet(truth_dir / "spectroscopic.parquet")[["TARGETID", "TARGET_CLASS"]],
        left_on="targetid",
        right_on="TARGETID",
        how="left",
    )
    rows = []
    for name, sel in [("all", table), *table.groupby("TARGET_CLASS", sort=True)]:
        row: dict[str, object] = {"class": name}
        for label, column in (("decoded", "dn4000_rec"), ("observed", "dn4000_obs")):
            d = (sel[column] - sel["dn4000_true"]).to_numpy()
            d = d[np.isfinite(d)]
            median = float(np.median(d)) if d.size else np.nan
            row |= {
                f"n_{label}": d.size,
                f"median_{label}": median,
                f"nmad_{label}": float(NMAD_SCALE * np.median(np.abs(d - median))) if d.size else np.nan,
            }
        rows.append(row)
    return pd.DataFrame(rows)


def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(v) for v in text.split(","))


def _print(title: str, frame: pd.DataFrame, fmt: Callable[[float], str] = "{:+.5f}".format) -> None:
    print(f"\n{title}")
    print(frame.to_string(index=False, float_format=fmt))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pz", required=True)
    parser.add_argument("--truth", required=True, type=Path)
    parser.add_argument("--model")
    parser.add_argument("--n", type=int, default=1000, help="bootstrap resamples (default 1000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--z-edges", type=_floats, default=Z_EDGES, help="true-redshift bin edges (default 0,0.2,...,1.6)"
    )
    parser.add_argument(
        "--spectra", type=Path, help="DIR/spectra.parquet of `evaluate --report DIR --spectra`"
    )
    parser.add_argument("--spectra-truth", type=Path, help="mock truth directory (spectroscopic.parquet)")
    parser.add_argument("--json", type=Path, help="write every table as JSON")
    args = parser.parse_args()
    if (args.spectra is None) != (args.spectra_truth is None):
        parser.error("--spectra and --spectra-truth go together")

    result = evaluate_store(args.pz, args.truth, args.model, seed=args.seed)
    objects = result.objects.reset_index(drop=True)
    scored = np.ones(len(objects), dtype=bool)
    for m in METHODS:
        scored &= objects[[f"z_phot_{m}", f"crps_{m}", f"pit_{m}"]].notna().all(axis=1).to_numpy()
    values = {m: per_object(objects, result.samples[m], m) for m in METHODS}
    masks = groups(objects, pd.read_parquet(args.truth), args.z_edges)
    rng = np.random.default_rng(args.seed)
    print(f"{scored.sum()} objects scored by both methods; {args.n} paired bootstrap resamples")
    tables: dict[str, object] = {}
    for name, mask in masks.items():
        use = mask & scored
        if use.sum() < 2:
            continue
        table = paired_bootstrap({m: {k: v[use] for k, v in values[m].items()} for m in METHODS}, args.n, rng)
        _print(f"{name}: {use.sum()} objects (diffusion - baseline)", table)
        tables[name] = {"n": int(use.sum()), "table": table.to_dict(orient="records")}
    out: dict[str, object] = {"n_scored": int(scored.sum()), "n_resamples": args.n, "groups": tables}
    if args.spectra is not None:
        dn = dn4000_by_class(args.spectra, args.spectra_truth)
        _print("Dn4000 minus the truth's, per target class (decoded from photometry; observed spectrum)", dn)
        out["dn4000_by_class"] = dn.to_dict(orient="records")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
