#!/usr/bin/env python
"""Validate the training-set coverage score and the posterior-predictive check on a mock survey.

    python benchmarks/coverage_check.py --model MODEL --mock MOCK [--n 4000] [--seed 0]
        [--sampler auto] [--n-samples K] [--steps S] [--img docs/img] [--json out.json]
    (or --catalog CATALOG --truth TRUTH.parquet instead of --mock)

On ``--n`` objects drawn (seeded) from the mock's photometric catalog (MOCK/catalog) with
their truth (MOCK/truth/photometric.parquet: OBJECT_ID, Z, and TARGET_CLASS when the mock
has target classes), ``inference.predict`` gives PDFs, the coverage score and the photometry
check (sampler, steps, K as ``models.choose_sampling`` makes them concrete: by default the
model's production setting, what `run` uses). Printed (and written with --json):

- photo-z metrics (docs/metrics.md) per coverage-score bin [0, 0.01) = LOW_COVERAGE,
  [0.01, 0.1), [0.1, 1], and inside / outside the DESI target selection, with 68%
  bootstrap intervals (200 resamples) of sigma_NMAD and CRPS;
- the posterior-predictive check: for objects with coverage >= 0.1, the KS distance of the
  per-draw chi^2 from chi^2_dof (each draw follows it if the model is right) for each dof,
  and the share flagged PHOTOMETRY_NOT_REPRODUCED per coverage bin; when the truth has the
  noiseless FLUX_<BAND>_TRUE, its error budget (``flux_error_budget``: the catalog's noise
  against the IVAR, the per-draw chi^2 by S/N and flux floor, the draws' own flux error);
- out of distribution by construction: 300 covered objects with their r flux doubled; the
  share each check flags;
- cost per object of the sampler (the same setting, timed alone), the coverage score and the
  check, measured on the same objects (wall time, this process, its torch threads).

With --img: coverage_map.png (the LOW_COVERAGE share in colour-magnitude and colour-colour
space, training-set contours) and ppc_chi2.png (per-draw chi^2 CDF against chi^2_dof;
p-values inside and outside coverage). Re-run it on the final model (docs/coverage.md).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import itertools
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy import stats

from specdiff_catalog import defaults
from specdiff_catalog.features import deredden, photometric_features
from specdiff_catalog.flags import Flag
from specdiff_catalog.inference import predict
from specdiff_catalog.io.catalog import object_ids, open_catalog, read_partition
from specdiff_catalog.metrics import crps, photoz_table
from specdiff_catalog.models import choose_sampling, load_model
from specdiff_catalog.models.sampling import sample
from specdiff_catalog.ppc import PhotometryCheck
from specdiff_catalog.synphot import best_amplitude_chi2

COVERAGE_EDGES = (0.0, 0.01, 0.1, 1.0 + 1e-6)
BATCH = 1024


def read_mock(catalog_dir: Path, truth_file: Path, bands, n: int, seed: int) -> pd.DataFrame:
    """n random catalog rows (band columns, object_id) joined with their truth."""
    catalog = open_catalog(catalog_dir)
    wanted = [c for b in bands.bands for c in (b.flux, b.ivar)]
    optional = [b.mw_transmission for b in bands.bands] + [bands.ebv_column, "OBJECT_ID"]
    frames = []
    for partition in catalog.partitions:
        table = read_partition(partition, wanted, optional=optional)
        frames.append(table.assign(object_id=object_ids(table, None, where=str(partition.path))))
    rows = pd.concat(frames, ignore_index=True)
    truth = pd.read_parquet(truth_file)
    truth = truth.rename(columns={"OBJECT_ID": "object_id", "Z": "z_true"})
    true_fluxes = [
        f"FLUX_{b.name.upper()}_TRUE" for b in bands.bands if f"FLUX_{b.name.upper()}_TRUE" in truth
    ]
    keep = ["object_id", "z_true"] + (["TARGET_CLASS"] if "TARGET_CLASS" in truth else []) + true_fluxes
    rows = rows.merge(truth[keep], on="object_id", how="inner", validate="one_to_one")
    pick = np.sort(np.random.default_rng(seed).choice(len(rows), size=min(n, len(rows)), replace=False))
    return rows.iloc[pick].reset_index(drop=True)


def bootstrap(values: np.ndarray, statistic, n: int = 200, seed: int = 0) -> tuple[float, float]:
    """16th and 84th percentiles of statistic over bootstrap resamples of values."""
    rng = np.random.default_rng(seed)
    draws = [statistic(values[rng.integers(0, len(values), len(values))]) for _ in range(n)]
    return float(np.percentile(draws, 16)), float(np.percentile(draws, 84))


def nmad(dz: np.ndarray) -> float:
    dz = dz[np.isfinite(dz)]
    return float(1.4826 * np.median(np.abs(dz - np.median(dz))))


def run(
    model_dir: Path,
    catalog: Path,
    truth: Path,
    n: int,
    seed: int,
    sampler: str,
    n_samples: int | None,
    steps: int | None,
) -> dict:
    model = load_model(model_dir, notice=False)
    if model.coverage is None or model.diffusion is None:
        raise SystemExit(f"{model_dir}: needs a diffusion model with a coverage section (train coverage)")
    bands = model.bands
    if bands is None:
        raise SystemExit(f"{model_dir}: config.json records no band set")
    chosen = choose_sampling(model.config, sampler, steps, n_samples)
    run_predict = functools.partial(
        predict, seed=seed, sampler=chosen.sampler, steps=chosen.steps, n_samples=chosen.n_samples
    )
    table = read_mock(catalog, truth, bands, n, seed)
    columns = {
        c: table[c].to_numpy() for c in table.columns if c != "TARGET_CLASS" and not c.endswith("_TRUE")
    }
    ids = table["object_id"].to_numpy(np.int64)
    parts, seconds = [], {"sampler": 0.0, "coverage": 0.0, "ppc": 0.0, "predict": 0.0}
    for i in range(0, len(table), BATCH):
        chunk = {k: v[i : i + BATCH] for k, v in columns.items()}
        start = time.perf_counter()
        pred = run_predict(model, chunk, ids[i : i + BATCH])
        seconds["predict"] += time.perf_counter() - start
        feats = photometric_features(chunk, bands)
        use = (feats.flags & Flag.NO_PHOTOMETRY) == 0
        start = time.perf_counter()
        with torch.inference_mode():
            sample(
                model.network(chosen.sampler, chosen.steps),
                feats.values[use],
                feats.missing[use],
                ids[i : i + BATCH][use],
                seed=seed,
                sampler=chosen.sampler,
                steps=chosen.steps,
                n_samples=chosen.n_samples,
            )
        seconds["sampler"] += time.perf_counter() - start
        start = time.perf_counter()
        model.coverage.score(feats.values, feats.missing)
        seconds["coverage"] += time.perf_counter() - start
        check = None
        if model.autoencoder is not None:
            start = time.perf_counter()
            check = PhotometryCheck.of(model)(deredden(chunk, bands), pred.z_samples, pred.latent_samples)
            seconds["ppc"] += time.perf_counter() - start
        parts.append((pred, feats, check))
    n_obj = len(table)
    z = np.concatenate([p.z_samples for p, _, _ in parts])
    flags = np.concatenate([p.flags for p, _, _ in parts])
    coverage = np.concatenate([p.checks["coverage"] for p, _, _ in parts])
    z_median = np.concatenate([p.summaries["z_median"] for p, _, _ in parts])
    values = np.concatenate([f.values for _, f, _ in parts])
    names = parts[0][1].names
    z_true = table["z_true"].to_numpy()
    result: dict = {
        "model": str(model_dir),
        "catalog": str(catalog),
        "truth": str(truth),
        "n_objects": n_obj,
        **dataclasses.asdict(chosen),
        "ms_per_object": {k: 1e3 * v / n_obj for k, v in seconds.items()},
        "low_coverage_fraction": float(np.mean((flags & Flag.LOW_COVERAGE) != 0)),
    }
    result["cost_vs_sampler"] = {
        k: result["ms_per_object"][k] / result["ms_per_object"]["sampler"] for k in ("coverage", "ppc")
    }
    ok = np.isfinite(z_median)
    metrics = photoz_table(
        {"diffusion": (z_median[ok], z[ok])},
        z_true[ok],
        bins=("coverage", coverage[ok], COVERAGE_EDGES),
        seed=seed,
    )
    result["metrics_by_coverage"] = metrics.to_dict(orient="records")
    dz = (z_median - z_true) / (1 + z_true)

    crps_obj = crps(z, z_true)
    intervals = {}
    for lo, hi in itertools.pairwise(COVERAGE_EDGES):
        sel = ok & (coverage >= lo) & (coverage < hi)
        if sel.sum() >= 20:
            intervals[f"[{lo:g}, {hi:g})"] = {
                "n": int(sel.sum()),
                "sigma_nmad_68": bootstrap(dz[sel], nmad, seed=seed),
                "crps_68": bootstrap(crps_obj[sel], np.mean, seed=seed),
            }
    result["bootstrap"] = intervals
    if "TARGET_CLASS" in table:
        selected = (table["TARGET_CLASS"].fillna("") != "").to_numpy()
        result["metrics_by_selection"] = photoz_table(
            {"diffusion": (z_median[ok], z[ok])},
            z_true[ok],
            bins=("in_selection", selected[ok].astype(float), (-0.5, 0.5, 1.5)),
            seed=seed,
        ).to_dict(orient="records")
        result["low_coverage_in_selection"] = float(np.mean(((flags & Flag.LOW_COVERAGE) != 0)[selected]))
        result["low_coverage_outside_selection"] = float(
            np.mean(((flags & Flag.LOW_COVERAGE) != 0)[~selected])
        )
    checks = [c for _, _, c in parts if c is not None]  # every batch's or none (no autoencoder)
    if checks:
        chi2_draws = np.concatenate([c.chi2_draws for c in checks])
        dof = np.concatenate([c.dof for c in checks])
        pvalue = np.concatenate([c.pvalue for c in checks])
        covered = coverage >= 0.1
        ks = {}
        for d in np.unique(dof[dof > 0]):
            x = chi2_draws[covered & (dof == d)].ravel()
            x = x[np.isfinite(x)]
            if x.size >= 50:
                ks[int(d)] = {
                    "n_draws": int(x.size),
                    "ks": float(stats.kstest(x, stats.chi2(d).cdf).statistic),
                    "mean": float(x.mean()),
                }
        flagged = (flags & Flag.PHOTOMETRY_NOT_REPRODUCED) != 0
        result["ppc"] = {
            "floor": defaults.PPC_FLUX_FLOOR,
            "pvalue_threshold": defaults.PPC_PVALUE,
            "ks_per_dof_covered": ks,
            "flagged_by_coverage": {
                f"[{lo:g}, {hi:g})": float(np.mean(flagged[(coverage >= lo) & (coverage < hi)]))
                for lo, hi in itertools.pairwise(COVERAGE_EDGES)
                if ((coverage >= lo) & (coverage < hi)).any()
            },
        }
        if "TARGET_CLASS" in table:
            result["ppc"]["flagged_in_selection"] = float(np.mean(flagged[selected]))
            result["ppc"]["flagged_outside_selection"] = float(np.mean(flagged[~selected]))
        result["_arrays"] = {"chi2_draws": chi2_draws, "dof": dof, "pvalue": pvalue}
        latent = np.concatenate([p.latent_samples[:, : defaults.PPC_DRAWS] for p, _, _ in parts])
        result["ppc"]["flux_error_budget"] = flux_error_budget(model, columns, table, z, latent, covered)
    result["perturbed"] = perturbed(model, columns, ids, coverage, run_predict)
    result["_arrays"] = {
        **result.get("_arrays", {}),
        "coverage": coverage,
        "flags": flags,
        "values": values,
        "names": names,
        "reference": _reference_raw(model),
    }
    return result


SNR_EDGES = (0.0, 10.0, 30.0, 100.0, np.inf)
FLOORS = (0.0, defaults.PPC_FLUX_FLOOR, 0.05)  # fixed fractions, next to the model's calibrated floors


def flux_error_budget(
    model, columns: dict, table: pd.DataFrame, z: np.ndarray, latent: np.ndarray, covered: np.ndarray
) -> dict:
    """Where the per-draw chi^2 departs from chi^2_dof, on covered objects with every checked band
    (needs the truth's FLUX_<BAND>_TRUE, intrinsic noiseless fluxes): the chi^2 of the catalog
    against the true fluxes (the catalog's noise alone; mean dof when the IVAR is right), the
    per-draw chi^2 by S/N of the faintest checked band for a few fixed flux floors and the
    model's own (config.json's coverage section: "model"), and the
    draws' own flux error: per band, the NMAD of (A x predicted - true) / true with the
    equal-weight best amplitude A, over all draws and over draws within 0.01 (1 + z) of z_true."""
    check = PhotometryCheck.of(model)
    names = [model.bands.bands[i].name for i in check.bands]
    true_columns = [f"FLUX_{name.upper()}_TRUE" for name in names]
    if not set(true_columns) <= set(table.columns):
        return {}
    phot = deredden(columns, model.bands)
    flux, ivar = (
        phot.flux[:, check.bands],
        np.where(phot.missing[:, check.bands], 0.0, phot.ivar[:, check.bands]),
    )
    m = latent.shape[1]
    ok = covered & (ivar > 0).all(axis=1) & np.isfinite(z[:, :m]).all(axis=1)
    predicted, inside = check.predicted(z[ok, :m].reshape(-1), latent[ok].reshape(-1, latent.shape[-1]))
    predicted = predicted.reshape(ok.sum(), m, -1)
    ok_rows = inside.reshape(ok.sum(), m, -1).all(axis=(1, 2))
    predicted = predicted[ok_rows]
    rows = np.flatnonzero(ok)[ok_rows]
    flux, ivar, true = flux[rows], ivar[rows], table[true_columns].to_numpy(np.float64)[rows]
    dof = len(names) - 1
    snr = (flux * np.sqrt(ivar)).min(axis=1)
    out: dict = {"bands": names, "dof": dof, "n_objects": len(rows), "draws": m}
    out["catalog_vs_true_mean_chi2"] = {
        f"{f:g}": float(np.nanmean(best_amplitude_chi2(flux, ivar, true, f)[0])) for f in FLOORS
    }
    per_floor = {}
    floors: dict[str, float | np.ndarray] = {f"{f:g}": f for f in FLOORS[1:]} | {"model": check.floors}
    out["model_floors"] = dict(zip(names, check.floors.tolist(), strict=True))
    for label, f in floors.items():
        chi2 = best_amplitude_chi2(flux[:, None], ivar[:, None], predicted, f)[0]
        bins = {}
        for lo, hi in itertools.pairwise(SNR_EDGES):
            x = chi2[(snr >= lo) & (snr < hi)].ravel()
            x = x[np.isfinite(x)]
            if x.size >= 50:
                bins[f"[{lo:g}, {hi:g})"] = {
                    "n_draws": int(x.size),
                    "mean": float(x.mean()),
                    "ks": float(stats.kstest(x, stats.chi2(dof).cdf).statistic),
                }
        x = chi2[np.isfinite(chi2)]
        per_floor[label] = {
            "mean": float(x.mean()),
            "ks": float(stats.kstest(x, stats.chi2(dof).cdf).statistic),
            "by_snr": bins,
        }
    out["draws_chi2_by_floor"] = per_floor
    amplitude = (predicted * true[:, None]).sum(-1, keepdims=True) / (predicted**2).sum(-1, keepdims=True)
    residual = (amplitude * predicted - true[:, None]) / true[:, None]
    z_true = table["z_true"].to_numpy()[rows]
    near = np.abs(z[rows, :m] - z_true[:, None]) / (1 + z_true[:, None]) < 0.01
    out["draw_flux_error_nmad"] = {
        name: {"all": nmad(residual[..., i].ravel()), "near_z_true": nmad(residual[..., i][near])}
        for i, name in enumerate(names)
    }
    out["n_draws_near_z_true"] = int(near.sum())
    return out


PERTURB = 2.0  # the r flux of covered objects times this: a colour no galaxy of the training set has
N_PERTURBED = 300


def perturbed(model, columns: dict, ids: np.ndarray, coverage: np.ndarray, run_predict) -> dict:
    """Out-of-distribution by construction: objects with coverage >= 0.1 whose r flux is doubled
    (0.75 mag; g - r and r - z change by as much). Shares flagged by each check, before and after."""
    rows = np.flatnonzero(coverage >= 0.1)[:N_PERTURBED]
    if not rows.size:
        return {}
    band = next(b for b in model.bands.bands if b.name == "r")
    chunk = {k: v[rows] for k, v in columns.items()}
    chunk[band.flux] = chunk[band.flux] * PERTURB
    pred = run_predict(model, chunk, ids[rows])
    share = {
        name: float(np.mean((pred.flags & Flag[name]) != 0))
        for name in ("LOW_COVERAGE", "PHOTOMETRY_NOT_REPRODUCED")
    }
    either = float(np.mean((pred.flags & (Flag.LOW_COVERAGE | Flag.PHOTOMETRY_NOT_REPRODUCED)) != 0))
    return {"n": int(rows.size), "r_flux_factor": PERTURB, "flagged": share, "flagged_by_either": either}


def _reference_raw(model) -> np.ndarray:
    """The coverage reference sample back in raw feature units (for the training-set contours)."""
    cov = model.coverage
    return cov.reference * cov.feature_std + cov.feature_mean


def figures(result: dict, img: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    a = result["_arrays"]
    names, values, low = a["names"], a["values"], (a["flags"] & Flag.LOW_COVERAGE) != 0
    ref = a["reference"]
    col = {name: i for i, name in enumerate(names)}
    panels = [("mag_r", "g-r"), ("r-z", "g-r")]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.6), constrained_layout=True)
    for ax, (xn, yn) in zip(axes, panels, strict=True):
        x, y = values[:, col[xn]], values[:, col[yn]]
        good = np.isfinite(x) & np.isfinite(y)
        hb = ax.hexbin(
            x[good],
            y[good],
            C=low[good].astype(float),
            reduce_C_function=np.mean,
            gridsize=40,
            cmap="magma_r",
            vmin=0,
            vmax=1,
            mincnt=3,
        )
        rx, ry = ref[:, col[xn]], ref[:, col[yn]]
        rgood = np.isfinite(rx) & np.isfinite(ry)
        h, xe, ye = np.histogram2d(rx[rgood], ry[rgood], bins=50)
        ax.contour(
            0.5 * (xe[1:] + xe[:-1]),
            0.5 * (ye[1:] + ye[:-1]),
            h.T,
            levels=np.percentile(h[h > 0], [50, 90]),
            colors="tab:cyan",
            linewidths=1,
        )
        ax.set(xlabel=xn.replace("mag_", "") + (" [AB]" if xn.startswith("mag") else ""), ylabel=yn)
    fig.colorbar(hb, ax=axes, label="share of objects with LOW_COVERAGE")
    fig.suptitle("Training-set coverage of the photometric sample (cyan: training-set density contours)")
    fig.savefig(img / "coverage_map.png", dpi=110)
    plt.close(fig)
    if "chi2_draws" not in a:
        return
    cov = a["coverage"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), constrained_layout=True)
    for d in sorted({int(v) for v in a["dof"] if v > 0}):
        x = a["chi2_draws"][(cov >= 0.1) & (a["dof"] == d)].ravel()
        x = np.sort(x[np.isfinite(x)])
        if x.size < 50:
            continue
        axes[0].plot(x, np.arange(1, x.size + 1) / x.size, label=f"draws, dof {d} (n = {x.size})")
        grid = np.linspace(0, 15, 200)
        axes[0].plot(grid, stats.chi2(d).cdf(grid), "k--", lw=0.8)
    axes[0].set(
        xlabel="chi^2 of one posterior draw",
        ylabel="cumulative fraction",
        xlim=(0, 15),
        title="coverage >= 0.1: per-draw chi^2 vs chi^2_dof (dashed)",
    )
    axes[0].legend(fontsize=8)
    bins = np.linspace(0, 1, 21)
    for label, sel in (("coverage >= 0.1", cov >= 0.1), ("LOW_COVERAGE", cov < 0.01)):
        p = a["pvalue"][sel]
        p = p[np.isfinite(p)]
        if p.size:
            axes[1].hist(p, bins=bins, density=True, histtype="step", lw=1.5, label=f"{label} (n = {p.size})")
    axes[1].set(xlabel="posterior-predictive p-value", ylabel="density", title="ppc_pvalue")
    axes[1].legend(fontsize=8)
    fig.savefig(img / "ppc_chi2.png", dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", required=True, type=Path)
    parser.add_argument(
        "--mock", type=Path, help="mock survey: MOCK/catalog and MOCK/truth/photometric.parquet"
    )
    parser.add_argument("--catalog", type=Path, help="catalog (default MOCK/catalog)")
    parser.add_argument("--truth", type=Path, help="truth Parquet (default MOCK/truth/photometric.parquet)")
    parser.add_argument("--n", type=int, default=4000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sampler", default="auto", choices=defaults.SAMPLERS)
    parser.add_argument("--n-samples", type=int, help="default: the setting's (models.choose_sampling)")
    parser.add_argument("--steps", type=int)
    parser.add_argument("--img", type=Path)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    catalog = args.catalog or args.mock / "catalog"
    truth = args.truth or args.mock / "truth" / "photometric.parquet"
    result = run(args.model, catalog, truth, args.n, args.seed, args.sampler, args.n_samples, args.steps)
    if args.img:
        args.img.mkdir(parents=True, exist_ok=True)
        figures(result, args.img)
    result.pop("_arrays")
    text = json.dumps(result, indent=1, default=lambda v: v.item() if isinstance(v, np.generic) else str(v))
    print(text)
    if args.json:
        args.json.write_text(text)


if __name__ == "__main__":
    main()
