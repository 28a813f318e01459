"""Quality against cost of every sampler setting, on held-out mock objects with truth.

    python benchmarks/quality_cost.py --model MODEL --mock MOCK [--extra-model LABEL=DIR ...] \\
        --objects 3000 --spectra 500 --ddpm-objects 300 --out docs/img/quality_cost

For the main model: its teacher with DPM-Solver++(2M) at 4, 6, 8, 12, 20, 50 steps, 1000-step
DDPM on the first ``--ddpm-objects`` objects (the reference), and its distilled students
(1, 2, 4 network evaluations, when present); for each extra model (e.g. a narrower
denoiser) its teacher at 20 steps and its students. Samples per galaxy 16, 32, 64, 100, 256
for the 20-step teacher and the students (the first K of 256 samples: with counter-based
noise those are exactly the samples a K-sample run draws), 100 for the others.

Metrics (``specdiff_catalog.metrics``): CRPS, its paired difference to the 20-step
100-sample teacher (mean and standard error over objects), sigma_NMAD and eta_0.15 of
the PDF medians, PIT KS, 68/95% coverage, on MOCK's photometric catalog (truth in
MOCK/truth/photometric.parquet); and the decoded spectra (latent summary of the same
samples) against MOCK/truth/rest_spectra.zarr for the spectroscopic targets that have a
noiseless truth: chi^2 per pixel of the reconstruction placed at the true z (free
amplitude) against the noiseless truth, with the observed spectrum's inverse variance
as weights (so 1 means "wrong by one DESI noise sigma per pixel"); and the rms fractional
difference over the observed rest range.

Cost: network evaluations per galaxy (evaluations per sample x K) and FLOP per galaxy
(``models.distill.flop_per_galaxy``, comparable across network sizes). The production
default is the cheapest setting (FLOP per galaxy) whose CRPS and sigma_NMAD are at most
1.02 x the 20-step 100-sample teacher's and whose PIT KS is at most 0.01 above it.
Writes OUT.md (table), OUT.json (every number) and OUT.png (CRPS and sigma_NMAD against
evaluations per galaxy).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from specdiff_catalog import spectral
from specdiff_catalog.hashing import hash_uniform
from specdiff_catalog.inference import DEFAULT_QUANTILES, predict
from specdiff_catalog.io.catalog import open_catalog
from specdiff_catalog.io.desi import Selection, read_coadd, read_redrock, redrock_path_for, select
from specdiff_catalog.metrics import crps, pdf_metrics, point_metrics
from specdiff_catalog.models import load_model
from specdiff_catalog.models.autoencoder import redshift_spectra
from specdiff_catalog.models.distill import flop_per_galaxy
from specdiff_catalog.models.student_io import set_default
from specdiff_catalog.reconstruct import decode
from specdiff_catalog.report.spectral_validation import coadd_files, fit_amplitude
from specdiff_catalog.summaries import summarize

TEACHER_STEPS = (4, 6, 8, 12, 20, 50)
SAMPLE_COUNTS = (16, 32, 64, 100, 256)
REFERENCE = ("dpmpp2m", 20, 100)  # sampler, evaluations per sample, K
CRPS_TOLERANCE, NMAD_TOLERANCE, PIT_KS_TOLERANCE = 0.02, 0.02, 0.01


@dataclass(frozen=True)
class Setting:
    """One sampler configuration of one model; ``counts``: the K evaluated (first K of max(counts))."""

    model: str
    sampler: str
    evaluations: int
    counts: tuple[int, ...]
    subset: str = "all"  # or "ddpm": the first --ddpm-objects objects only


@dataclass
class HeldOut:
    """Photo-z objects (table, ids, z) and spectroscopic objects with noiseless truth."""

    table: pd.DataFrame
    ids: np.ndarray
    z: np.ndarray
    spec_table: pd.DataFrame
    spec_ids: np.ndarray
    spec_z: np.ndarray
    wave_obs: np.ndarray
    ivar: np.ndarray
    truth_obs: np.ndarray  # (n, P) noiseless truth on the observed grid (reddened unless deredden)


def load_photometry(mock: Path, n: int) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """The first ``n`` objects of MOCK's photometric catalog in hash order (a fixed random subset)."""
    catalog = open_catalog(mock / "catalog")
    table = pd.concat([pd.read_parquet(p.path) for p in catalog.partitions], ignore_index=True)
    table = table.iloc[np.argsort(hash_uniform(table["OBJECT_ID"].to_numpy(), salt=7))[:n]].reset_index(
        drop=True
    )
    truth = pd.read_parquet(mock / "truth" / "photometric.parquet").set_index("OBJECT_ID")
    ids = table["OBJECT_ID"].to_numpy(np.int64)
    return table, ids, truth.loc[ids, "Z"].to_numpy(np.float64)


def load_spectra(mock: Path, n: int, deredden: bool) -> dict[str, Any]:
    """Selected spectroscopic targets with a noiseless truth (MOCK/truth/rest_spectra.zarr):
    their fibermap rows, observed ivar and the truth on the observed grid."""
    import zarr

    group = zarr.open_group(mock / "truth" / "rest_spectra.zarr", mode="r")
    truth_ids = np.asarray(group["targetid"][:])
    rows, ivars, truths, wave = [], [], [], None
    for path in coadd_files(mock / "spectra"):
        coadd = read_coadd(path)
        chosen = select(coadd, read_redrock(redrock_path_for(path)), Selection())
        tid = coadd.targetid
        keep = np.flatnonzero(chosen.keep & np.isin(tid, truth_ids))
        if keep.size == 0:
            continue
        index = pd.Index(truth_ids).get_indexer(tid[keep])
        order = np.argsort(index)
        keep, index = keep[order], index[order]
        rest = np.asarray(group["flux"].get_orthogonal_selection((index, slice(None))), dtype=np.float64)
        rest = rest * np.asarray(group["aperture"][:])[index, None]  # the fibre's share (rest_spectra attrs)
        z_true = np.asarray(group["z"][:])[index]
        wave = coadd.wave
        truth_obs = redshift_spectra(np.asarray(group["wavelength"][:]), rest, z_true, wave)
        table = chosen.table.iloc[keep].reset_index(drop=True).assign(Z_TRUE=z_true)
        if not deredden:  # an autoencoder of observed (reddened) spectra is compared with reddened truth
            truth_obs = truth_obs * spectral.mw_transmission(wave, table["EBV"].to_numpy(np.float64))
        _, ivar = spectral.clean(coadd.flux[keep], coadd.ivar[keep])
        rows.append(table)
        ivars.append(ivar)
        truths.append(truth_obs)
        if sum(len(r) for r in rows) >= n:
            break
    table = pd.concat(rows, ignore_index=True).iloc[:n]
    return {
        "spec_table": table,
        "spec_ids": table["TARGETID"].to_numpy(np.int64),
        "spec_z": table["Z_TRUE"].to_numpy(np.float64),
        "wave_obs": wave,
        "ivar": np.concatenate(ivars)[:n],
        "truth_obs": np.concatenate(truths)[:n],
    }


def spectra_metrics(model: Any, latent: np.ndarray, held: HeldOut) -> dict[str, float]:
    """Median chi^2 per pixel (observed ivar as weights) of the decoded latents at the true z
    against the noiseless truth, and the median rms fractional difference."""
    auto = model.autoencoder
    rest = decode(auto, latent).astype(np.float64)
    model_obs = redshift_spectra(auto.rest_wave(), rest, held.spec_z, held.wave_obs)
    amp, chi2, n_pix = fit_amplitude(held.truth_obs, held.ivar, model_obs)
    with np.errstate(invalid="ignore", divide="ignore"):
        chi2_pix = chi2 / np.maximum(n_pix - 1, 1)
        used = (held.ivar > 0) & np.isfinite(model_obs) & np.isfinite(held.truth_obs)
        frac = np.where(used, amp[:, None] * model_obs / held.truth_obs - 1.0, np.nan)
        rms = np.sqrt(np.nanmean(frac**2, axis=1))
    return {"chi2_pix_median": float(np.nanmedian(chi2_pix)), "rms_frac_median": float(np.nanmedian(rms))}


def evaluate(
    model: Any, label: str, setting: Setting, held: HeldOut, n_ddpm: int, seed: int
) -> list[dict[str, Any]]:
    """One row per K of ``setting``: the photo-z metrics, spectra metrics, cost and wall time."""
    rows = slice(None) if setting.subset == "all" else slice(0, n_ddpm)
    k_max = max(setting.counts)
    start = time.perf_counter()
    options = {"n_samples": k_max, "seed": seed, "sampler": setting.sampler, "steps": setting.evaluations}
    phot = predict(model, held.table.iloc[rows], held.ids[rows], **options)
    seconds = time.perf_counter() - start
    spec = predict(model, held.spec_table, held.spec_ids, **options) if setting.subset == "all" else None
    network = model.students[setting.evaluations] if setting.sampler == "student" else model.diffusion
    out = []
    for k in setting.counts:
        z = phot.z_samples[:, :k]
        summary = summarize(z, None, DEFAULT_QUANTILES)
        point, pdf = point_metrics(summary["z_median"], held.z[rows]), pdf_metrics(z, held.z[rows], seed=seed)
        row = {
            "model": label,
            "sampler": setting.sampler,
            "evaluations": setting.evaluations,
            "samples": k,
            "subset": setting.subset,
            "n_objects": int(pdf.n),
            "evaluations_per_galaxy": setting.evaluations * k,
            "flop_per_galaxy": flop_per_galaxy(network, setting.evaluations, k),
            "seconds_per_galaxy_measured": seconds / len(held.ids[rows]) * k / k_max,
            "crps_per_object": crps(z, held.z[rows]),
            **{f"point_{key}": v for key, v in asdict(point).items()},
            **{f"pdf_{key}": v for key, v in asdict(pdf).items()},
        }
        if spec is not None:
            latent = summarize(spec.z_samples[:, :k], spec.latent_samples[:, :k], DEFAULT_QUANTILES)["latent"]
            row |= spectra_metrics(model, latent, held)
        out.append(row)
        print(
            f"{label:>8} {setting.sampler:>8} {setting.evaluations:>4} x {k:>3} ({setting.subset}): "
            f"CRPS {pdf.crps:.5f} sigma_NMAD {point.sigma_nmad:.5f} PIT KS {pdf.pit_ks:.4f} "
            + (f"chi2 {row['chi2_pix_median']:.3f}" if spec is not None else ""),
            flush=True,
        )
    return out


def settings_for(model: Any, label: str, main: bool) -> list[Setting]:
    teacher = [Setting(label, "dpmpp2m", 20, SAMPLE_COUNTS)]
    if main:
        teacher += [Setting(label, "dpmpp2m", s, (100,)) for s in TEACHER_STEPS if s != 20]
        teacher += [
            Setting(label, "ddpm", model.diffusion.schedule.timesteps, (100,), "ddpm"),
            Setting(label, "dpmpp2m", 20, (100,), "ddpm"),
        ]
    return teacher + [Setting(label, "student", n, SAMPLE_COUNTS) for n in sorted(model.students)]


def with_references(rows: list[dict[str, Any]], main: str) -> pd.DataFrame:
    """The table, with each row's CRPS difference to the reference on the same objects and the rule."""
    ref = {
        r["subset"]: r
        for r in rows
        if r["model"] == main and (r["sampler"], r["evaluations"], r["samples"]) == REFERENCE
    }
    for r in rows:
        base = ref[r["subset"]]
        diff = r["crps_per_object"] - base["crps_per_object"]
        ok = np.isfinite(diff)
        r["crps_diff_mean"] = float(np.mean(diff[ok]))
        r["crps_diff_se"] = float(np.std(diff[ok], ddof=1) / np.sqrt(ok.sum()))
        r["crps_ratio"] = r["pdf_crps"] / base["pdf_crps"]
        r["nmad_ratio"] = r["point_sigma_nmad"] / base["point_sigma_nmad"]
        r["pit_ks_diff"] = r["pdf_pit_ks"] - base["pdf_pit_ks"]
        r["passes"] = bool(
            r["subset"] == "all"
            and r["crps_ratio"] <= 1 + CRPS_TOLERANCE
            and r["nmad_ratio"] <= 1 + NMAD_TOLERANCE
            and r["pit_ks_diff"] <= PIT_KS_TOLERANCE
        )
    return pd.DataFrame([{k: v for k, v in r.items() if k != "crps_per_object"} for r in rows])


def markdown(table: pd.DataFrame, chosen: pd.Series | None) -> str:
    lines = [
        "| model | sampler | evals/sample | K | evals/galaxy | MFLOP/galaxy | CRPS | CRPS / ref | "
        "dCRPS (se) | sigma_NMAD | / ref | eta_0.15 | PIT KS | cov 68 | cov 95 | chi2/pix spectra | "
        "rms frac | rule |",
        "|---" * 18 + "|",
    ]
    for _, r in table.iterrows():
        spectra = (
            f"{r['chi2_pix_median']:.3f} | {r['rms_frac_median']:.3f}"
            if np.isfinite(r.get("chi2_pix_median", np.nan))
            else "- | -"
        )
        mark = (
            "**default**" if chosen is not None and r.name == chosen.name else ("yes" if r["passes"] else "")
        )
        lines.append(
            f"| {r['model']} | {r['sampler']}{' (DDPM subset)' if r['subset'] == 'ddpm' else ''} | "
            f"{r['evaluations']} | {r['samples']} | {r['evaluations_per_galaxy']:,} | "
            f"{r['flop_per_galaxy'] / 1e6:,.0f} | {r['pdf_crps']:.5f} | {r['crps_ratio']:.3f} | "
            f"{r['crps_diff_mean']:+.5f} ({r['crps_diff_se']:.5f}) | {r['point_sigma_nmad']:.5f} | "
            f"{r['nmad_ratio']:.3f} | {r['point_eta_015']:.4f} | {r['pdf_pit_ks']:.4f} | "
            f"{r['pdf_coverage_68']:.3f} | {r['pdf_coverage_95']:.3f} | {spectra} | {mark} |"
        )
    return "\n".join(lines) + "\n"


def plot(table: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    data = table[table["subset"] == "all"]
    for (model, sampler, evaluations), group in data.groupby(["model", "sampler", "evaluations"]):
        if sampler == "dpmpp2m" and len(group) == 1:
            continue  # the step sweep is drawn as one line below
        group = group.sort_values("samples")
        k_range = f"{group['samples'].min()}-{group['samples'].max()}"
        label = f"{model} {sampler}, {evaluations} eval./sample, K = {k_range}"
        for ax, column in zip(axes, ("pdf_crps", "point_sigma_nmad"), strict=True):
            ax.plot(group["evaluations_per_galaxy"], group[column], "o-", label=label, ms=4)
    for model, group in data[(data["sampler"] == "dpmpp2m") & (data["samples"] == 100)].groupby("model"):
        group = group.sort_values("evaluations")
        label = f"{model} dpmpp2m, {group['evaluations'].min()}-{group['evaluations'].max()} steps, K = 100"
        for ax, column in zip(axes, ("pdf_crps", "point_sigma_nmad"), strict=True):
            ax.plot(group["evaluations_per_galaxy"], group[column], "s--", label=label)
    for ax, name in zip(axes, ("CRPS", "sigma_NMAD"), strict=True):
        ax.set_xscale("log")
        ax.set_xlabel("network evaluations per galaxy (evaluations per sample x samples)")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, type=Path, help="the main model directory")
    parser.add_argument("--mock", required=True, type=Path, help="held-out mock survey (mock --seed 2 ...)")
    parser.add_argument(
        "--extra-model",
        action="append",
        default=[],
        metavar="LABEL=DIR",
        help="another model (e.g. narrower)",
    )
    parser.add_argument("--objects", type=int, default=3000, help="photometric objects")
    parser.add_argument(
        "--spectra", type=int, default=500, help="spectroscopic objects with a noiseless truth"
    )
    parser.add_argument(
        "--ddpm-objects", type=int, default=300, help="objects of the 1000-step DDPM reference"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--out", required=True, type=Path, help="output prefix: OUT.md, OUT.json, OUT.png")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    models = {"main": load_model(args.model)}
    for item in args.extra_model:
        label, _, path = item.partition("=")
        models[label] = load_model(path)
    main_label = "main"
    table, ids, z = load_photometry(args.mock, args.objects)
    spectra = load_spectra(args.mock, args.spectra, models[main_label].autoencoder.config.deredden)
    held = HeldOut(table, ids, z, **spectra)
    print(
        f"held out: {len(ids)} photometric objects, {len(held.spec_ids)} spectra with truth, "
        f"{args.ddpm_objects} for DDPM; torch threads {torch.get_num_threads()}",
        flush=True,
    )
    rows = []
    for label, model in models.items():
        for setting in settings_for(model, label, label == main_label):
            rows += evaluate(model, label, setting, held, args.ddpm_objects, args.seed)
    result = with_references(rows, main_label)
    candidates = result[result["passes"]]
    chosen = candidates.sort_values(["flop_per_galaxy", "pdf_crps"]).iloc[0] if len(candidates) else None
    args.out.parent.mkdir(parents=True, exist_ok=True)
    text = markdown(result, chosen)
    args.out.with_suffix(".md").write_text(text)
    plot(result, args.out.with_suffix(".png"))
    meta = {
        "command": " ".join(sys.argv),
        "models": {k: str(m.path) for k, m in models.items()},
        "mock": str(args.mock),
        "reference": dict(zip(("sampler", "evaluations", "samples"), REFERENCE, strict=True)),
        "tolerances": {"crps": CRPS_TOLERANCE, "sigma_nmad": NMAD_TOLERANCE, "pit_ks": PIT_KS_TOLERANCE},
        "chosen": None if chosen is None else chosen.to_dict(),
        "rows": result.to_dict(orient="records"),
    }
    args.out.with_suffix(".json").write_text(json.dumps(meta, indent=1, default=float))
    print(text)
    if chosen is None:
        print("production default: no setting passes the rule")
        return
    print("production default:", chosen[["model", "sampler", "evaluations", "samples"]].to_dict())
    if args.set_default and chosen["model"] == main_label and chosen["sampler"] == "student":
        set_default(args.model, int(chosen["evaluations"]), int(chosen["samples"]))
        print(
            f"recorded in {args.model}/config.json: the {chosen['evaluations']}-evaluation student, "
            f"{chosen['samples']} samples"
        )
    elif args.set_default:
        print("not recorded: the chosen setting is not a student of the main model")


if __name__ == "__main__":
    main()
