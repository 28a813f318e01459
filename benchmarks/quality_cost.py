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
1.02 x the 20-step 100-sample teacher's and whose PIT KS is at most 0.01 above it, among
those drawing at least ``summaries.min_samples(defaults.QUANTILES)`` samples (39: fewer
would clamp ``run``'s outer quantiles). ``--set-default`` records the cheapest such
setting of the main model (a student, or the teacher at fewer steps) in its config.json
(``training.distill.set_production_default``),
so that ``run`` uses it. Writes OUT.md (table), OUT.json (every number) and OUT.png (CRPS
and sigma_NMAD against FLOP per galaxy).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypedDict

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from specdiff_catalog import defaults, spectral
from specdiff_catalog.bands import BandSet
from specdiff_catalog.hashing import hash_uniform
from specdiff_catalog.inference import predict
from specdiff_catalog.io.catalog import open_catalog, read_objects
from specdiff_catalog.io.desi import read_coadd, read_redrock, redrock_path_for
from specdiff_catalog.metrics import crps, pdf_metrics, point_metrics
from specdiff_catalog.models import SpecdiffModel, load_model
from specdiff_catalog.models.autoencoder import redshift_spectra
from specdiff_catalog.models.diffusion import DiffusionModel
from specdiff_catalog.models.distill import StudentModel, flop_per_galaxy
from specdiff_catalog.models.sampling import SamplerModel
from specdiff_catalog.reconstruct import decode
from specdiff_catalog.report.spectral_validation import coadd_files, fit_amplitude
from specdiff_catalog.selection import SpectroSelection, select
from specdiff_catalog.summaries import min_samples, summarize
from specdiff_catalog.training.distill import set_production_default

TEACHER_STEPS = (4, 6, 8, 12, 20, 50)
SAMPLE_COUNTS = (16, 32, 64, 100, 256)
REFERENCE = (defaults.TEACHER_SAMPLER, 20, defaults.N_SAMPLES)  # sampler, evaluations per sample, K
CRPS_TOLERANCE, NMAD_TOLERANCE, PIT_KS_TOLERANCE = 0.02, 0.02, 0.01
MIN_PRODUCTION_SAMPLES = min_samples(defaults.QUANTILES)
"""A production setting draws at least this many samples (39 for the default quantile levels),
so that ``run``'s stored quantiles are never clamped to the smallest or largest sample."""


@dataclass(frozen=True)
class Setting:
    """One sampler configuration of one model; ``counts``: the K evaluated (first K of max(counts))."""

    model: str
    sampler: str
    evaluations: int
    counts: tuple[int, ...]
    subset: str = "all"  # or "ddpm": the first --ddpm-objects objects only


class PredictOptions(TypedDict):
    """The sampler options ``evaluate`` passes to ``inference.predict``."""

    n_samples: int
    seed: int
    sampler: str
    steps: int


@dataclass
class HeldSpectra:
    """Spectroscopic objects with a noiseless truth: their fibermap rows (table), ids, true z,
    the observed grid (P,), the observed ivar (n, P) and the truth on that grid (n, P),
    reddened unless the autoencoder models de-reddened spectra."""

    table: pd.DataFrame
    ids: np.ndarray
    z: np.ndarray
    wave_obs: np.ndarray
    ivar: np.ndarray
    truth_obs: np.ndarray


@dataclass
class HeldOut:
    """Photo-z objects (table, ids, z) and, when the mock has them, spectra with a noiseless truth."""

    table: pd.DataFrame
    ids: np.ndarray
    z: np.ndarray
    spectra: HeldSpectra | None


def load_photometry(mock: Path, bands: BandSet, n: int | None) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """The first ``n`` (None: all) objects of MOCK's photometric catalog in hash order (a fixed
    random subset): the band set's columns, their exact ids, and the true z of
    MOCK/truth/photometric.parquet."""
    catalog = open_catalog(mock / "catalog")
    columns = [c for b in bands.bands for c in (b.flux, b.ivar)]
    optional = [b.mw_transmission for b in bands.bands] + [bands.ebv_column]
    parts = [read_objects(p, columns, optional=optional) for p in catalog.partitions]
    table = pd.concat([t for t, _ in parts], ignore_index=True)
    ids = np.concatenate([i for _, i in parts])
    order = np.argsort(hash_uniform(ids, salt=7))[:n]
    truth = pd.read_parquet(mock / "truth" / "photometric.parquet").set_index("OBJECT_ID")
    return (
        table.iloc[order].reset_index(drop=True),
        ids[order],
        truth.loc[ids[order], "Z"].to_numpy(np.float64),
    )


def load_spectra(mock: Path, n: int, deredden: bool) -> HeldSpectra | None:
    """Selected spectroscopic targets with a noiseless truth (MOCK/truth/rest_spectra.zarr:
    wavelength, targetid, z, aperture, flux, as ``mock`` writes it whatever its spectral
    model): their fibermap rows, observed ivar and the truth on the observed grid (no
    instrumental resolution applied). None without such targets."""
    import zarr

    truth_path = mock / "truth" / "rest_spectra.zarr"
    if n <= 0 or not truth_path.exists():
        return None
    group = zarr.open_group(truth_path, mode="r")

    def array(name: str) -> zarr.Array:
        node = group[name]
        if not isinstance(node, zarr.Array):
            raise SystemExit(f"{truth_path}: {name} is not an array")
        return node

    truth_ids = np.asarray(array("targetid")[:])
    rows, ivars, truths, wave = [], [], [], None
    for path in coadd_files(mock / "spectra"):
        coadd = read_coadd(path)
        chosen = select(coadd, read_redrock(redrock_path_for(path)), SpectroSelection())
        tid = coadd.targetid
        keep = np.flatnonzero(chosen.keep & np.isin(tid, truth_ids))
        if keep.size == 0:
            continue
        index = pd.Index(truth_ids).get_indexer(tid[keep])
        order = np.argsort(index)
        keep, index = keep[order], index[order]
        rest = np.asarray(array("flux").get_orthogonal_selection((index, slice(None))), dtype=np.float64)
        rest = rest * np.asarray(array("aperture")[:])[index, None]  # the fibre's share (rest_spectra attrs)
        z_true = np.asarray(array("z")[:])[index]
        wave = coadd.wave
        truth_obs = redshift_spectra(np.asarray(array("wavelength")[:]), rest, z_true, wave)
        table = chosen.table.iloc[keep].reset_index(drop=True).assign(Z_TRUE=z_true)
        if not deredden:  # an autoencoder of observed (reddened) spectra is compared with reddened truth
            truth_obs = truth_obs * spectral.mw_transmission(wave, table["EBV"].to_numpy(np.float64))
        _, ivar = spectral.clean(coadd.flux[keep], coadd.ivar[keep])
        rows.append(table)
        ivars.append(ivar)
        truths.append(truth_obs)
        if sum(len(r) for r in rows) >= n:
            break
    if not rows or wave is None:  # wave is set whenever rows is not empty
        return None
    table = pd.concat(rows, ignore_index=True).iloc[:n]
    return HeldSpectra(
        table=table,
        ids=table["TARGETID"].to_numpy(np.int64),
        z=table["Z_TRUE"].to_numpy(np.float64),
        wave_obs=wave,
        ivar=np.concatenate(ivars)[:n],
        truth_obs=np.concatenate(truths)[:n],
    )


def architecture(network: SamplerModel) -> DiffusionModel:
    """The ``DiffusionModel`` whose layer shapes ``flop_per_galaxy`` counts: the network
    itself, or a student's (a student has its teacher's architecture)."""
    if isinstance(network, StudentModel):
        return network.model
    if isinstance(network, DiffusionModel):
        return network
    raise TypeError(f"{type(network).__name__}: neither a DiffusionModel nor a StudentModel")


def spectra_metrics(model: SpecdiffModel, latent: np.ndarray, held: HeldSpectra) -> dict[str, float]:
    """Median chi^2 per pixel (observed ivar as weights) of the decoded latents at the true z
    against the noiseless truth, and the median rms fractional difference."""
    auto = model.autoencoder
    assert auto is not None  # main() checks that the model decodes spectra
    rest = decode(auto, latent).astype(np.float64)
    model_obs = redshift_spectra(auto.rest_wave(), rest, held.z, held.wave_obs)
    amp, chi2, n_pix = fit_amplitude(held.truth_obs, held.ivar, model_obs)
    with np.errstate(invalid="ignore", divide="ignore"):
        chi2_pix = chi2 / np.maximum(n_pix - 1, 1)
        used = (held.ivar > 0) & np.isfinite(model_obs) & np.isfinite(held.truth_obs)
        frac = np.where(used, amp[:, None] * model_obs / held.truth_obs - 1.0, np.nan)
        rms = np.sqrt(np.nansum(frac**2, axis=1) / used.sum(axis=1))  # NaN without a usable pixel
    return {"chi2_pix_median": float(np.nanmedian(chi2_pix)), "rms_frac_median": float(np.nanmedian(rms))}


def evaluate(
    model: SpecdiffModel, label: str, setting: Setting, held: HeldOut, n_ddpm: int, seed: int
) -> list[dict[str, Any]]:
    """One row per K of ``setting``: the photo-z metrics, spectra metrics, cost and wall time."""
    rows = slice(None) if setting.subset == "all" else slice(0, n_ddpm)
    k_max = max(setting.counts)
    start = time.perf_counter()
    options: PredictOptions = {
        "n_samples": k_max,
        "seed": seed,
        "sampler": setting.sampler,
        "steps": setting.evaluations,
    }
    phot = predict(model, held.table.iloc[rows], held.ids[rows], **options)
    seconds = time.perf_counter() - start
    spectra = held.spectra if setting.subset == "all" else None
    spec = predict(model, spectra.table, spectra.ids, **options) if spectra is not None else None
    network = model.network(setting.sampler, setting.evaluations)
    out = []
    for k in setting.counts:
        z = phot.z_samples[:, :k]
        summary = summarize(z, None, defaults.QUANTILES)
        point, pdf = point_metrics(summary["z_median"], held.z[rows]), pdf_metrics(z, held.z[rows], seed=seed)
        row = {
            "model": label,
            "sampler": setting.sampler,
            "evaluations": setting.evaluations,
            "samples": k,
            "subset": setting.subset,
            "n_objects": int(pdf.n),
            "evaluations_per_galaxy": setting.evaluations * k,
            "flop_per_galaxy": flop_per_galaxy(architecture(network), setting.evaluations, k),
            "seconds_per_galaxy_measured": seconds / len(held.ids[rows]) * k / k_max,
            "crps_per_object": crps(z, held.z[rows]),
            **{f"point_{key}": v for key, v in asdict(point).items()},
            **{f"pdf_{key}": v for key, v in asdict(pdf).items()},
        }
        if spec is not None and spectra is not None:
            latent = summarize(spec.z_samples[:, :k], spec.latent_samples[:, :k], defaults.QUANTILES)[
                "latent"
            ]
            row |= spectra_metrics(model, latent, spectra)
        out.append(row)
        print(
            f"{label:>8} {setting.sampler:>8} {setting.evaluations:>4} x {k:>3} ({setting.subset}): "
            f"CRPS {pdf.crps:.5f} sigma_NMAD {point.sigma_nmad:.5f} PIT KS {pdf.pit_ks:.4f} "
            + (f"chi2 {row['chi2_pix_median']:.3f}" if spec is not None else ""),
            flush=True,
        )
    return out


def settings_for(model: SpecdiffModel, label: str, main: bool) -> list[Setting]:
    """The 20-step teacher and the students at every K; for the main model also the teacher's
    step sweep at K = 100 and the DDPM reference (with the 20-step teacher on its subset)."""
    sampler, steps, k = REFERENCE
    teacher = [Setting(label, sampler, steps, SAMPLE_COUNTS)]
    if main:
        assert model.diffusion is not None
        teacher += [Setting(label, sampler, s, (k,)) for s in TEACHER_STEPS if s != steps]
        teacher += [
            Setting(label, "ddpm", model.diffusion.schedule.timesteps, (k,), "ddpm"),
            Setting(label, sampler, steps, (k,), "ddpm"),
        ]
    return teacher + [
        Setting(label, defaults.STUDENT_SAMPLER, n, SAMPLE_COUNTS) for n in sorted(model.students)
    ]


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
        r["eligible"] = r["passes"] and r["samples"] >= MIN_PRODUCTION_SAMPLES
    return pd.DataFrame([{k: v for k, v in r.items() if k != "crps_per_object"} for r in rows])


def markdown(table: pd.DataFrame, chosen: pd.Series | None) -> str:
    lines = [
        "| model | sampler | evals/sample | K | evals/galaxy | MFLOP/galaxy | CRPS | CRPS / ref | "
        "dCRPS (se) | sigma_NMAD | / ref | eta_0.15 | PIT KS | cov 68 | cov 95 | rms frac | rule |",
        "|---" * 17 + "|",
    ]  # no chi2/pix column (it is in OUT.json): the same for every setting, it ranks none
    for _, r in table.iterrows():
        spectra = f"{r['rms_frac_median']:.3f}" if np.isfinite(r.get("rms_frac_median", np.nan)) else "-"
        if chosen is not None and r.name == chosen.name:
            mark = "**default**"
        elif r["passes"]:
            mark = "yes" if r["eligible"] else f"quality only (K < {MIN_PRODUCTION_SAMPLES})"
        else:
            mark = ""
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
    teacher, _, k_ref = REFERENCE
    for (model, sampler, evaluations), group in data.groupby(["model", "sampler", "evaluations"]):
        if sampler == teacher and len(group) == 1:
            continue  # the step sweep is drawn as one line below
        group = group.sort_values("samples")
        k_range = f"{group['samples'].min()}-{group['samples'].max()}"
        label = f"{model} {sampler}, {evaluations} eval./sample, K = {k_range}"
        for ax, column in zip(axes, ("pdf_crps", "point_sigma_nmad"), strict=True):
            ax.plot(group["flop_per_galaxy"] / 1e6, group[column], "o-", label=label, ms=4)
    for model, group in data[(data["sampler"] == teacher) & (data["samples"] == k_ref)].groupby("model"):
        if len(group) == 1:
            continue  # no step sweep (an extra model): its point is on the K line above
        group = group.sort_values("evaluations")
        steps = f"{group['evaluations'].min()}-{group['evaluations'].max()}"
        label = f"{model} {teacher}, {steps} steps, K = {k_ref}"
        for ax, column in zip(axes, ("pdf_crps", "point_sigma_nmad"), strict=True):
            ax.plot(group["flop_per_galaxy"] / 1e6, group[column], "s--", label=label)
    for ax, name in zip(axes, ("CRPS", "sigma_NMAD"), strict=True):
        ax.set_xscale("log")
        ax.set_xlabel("MFLOP per galaxy (matrix products, models.distill.flop_per_galaxy)")
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
    parser.add_argument(
        "--set-default",
        action="store_true",
        help="record the cheapest passing setting of the main model as its production setting",
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    main_label = "main"
    models = {main_label: load_model(args.model)}
    for item in args.extra_model:
        label, _, path = item.partition("=")
        models[label] = load_model(path)
    main_model = models[main_label]
    if main_model.bands is None or main_model.diffusion is None:
        raise SystemExit(f"{args.model}: the model has no diffusion component (train diffusion first)")
    table, ids, z = load_photometry(args.mock, main_model.bands, args.objects)
    auto = main_model.autoencoder
    spectra = load_spectra(args.mock, args.spectra, auto.config.deredden) if auto is not None else None
    held = HeldOut(table, ids, z, spectra)
    print(
        f"held out: {len(ids)} photometric objects, {0 if spectra is None else len(spectra.ids)} spectra "
        f"with truth, {args.ddpm_objects} for DDPM; torch threads {torch.get_num_threads()}",
        flush=True,
    )
    rows = []
    for label, model in models.items():
        for setting in settings_for(model, label, label == main_label):
            rows += evaluate(model, label, setting, held, args.ddpm_objects, args.seed)
    result = with_references(rows, main_label)
    candidates = result[result["eligible"]].sort_values(["flop_per_galaxy", "pdf_crps"])
    chosen = candidates.iloc[0] if len(candidates) else None
    own = candidates[(candidates["model"] == main_label) & (candidates["subset"] == "all")]
    production = own.iloc[0] if len(own) else None
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
        "min_production_samples": MIN_PRODUCTION_SAMPLES,
        "chosen": None if chosen is None else chosen.to_dict(),
        "chosen_of_main": None if production is None else production.to_dict(),
        "rows": result.to_dict(orient="records"),
    }
    args.out.with_suffix(".json").write_text(json.dumps(meta, indent=1, default=float))
    print(text)
    if chosen is None:
        print("production default: no setting passes the rule")
        return
    print("production default:", chosen[["model", "sampler", "evaluations", "samples"]].to_dict())
    if production is None:
        print("no setting of the main model passes the rule: nothing to record")
        return
    if production.name != chosen.name:
        print(
            "the cheapest passing setting is not the main model's; its cheapest passing setting: "
            f"{production['sampler']} {production['evaluations']} evaluations x "
            f"{production['samples']} samples"
        )
    if args.set_default:
        set_production_default(
            args.model, int(production["evaluations"]), int(production["samples"]), str(production["sampler"])
        )
        print(
            f"recorded in {args.model}/config.json: {production['sampler']} at {production['evaluations']} "
            f"evaluations, {production['samples']} samples per object"
        )


if __name__ == "__main__":
    main()
