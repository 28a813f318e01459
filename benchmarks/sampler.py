"""Galaxies per second of the production default sampler and of the 20-step teacher, side by side.

    PYTHONPATH=. python benchmarks/sampler.py --device cpu [--model MODEL] [--threads 1]
    PYTHONPATH=. python benchmarks/sampler.py --device cuda --precision bf16 --galaxies 200000

Needs torch, numpy and safetensors only (it imports no module of the package that needs
more), so it runs on a bare GPU node. In one process, on one device:

- the production default: what ``run`` samples with (``models.choose_sampling``: the
  model's production student and sample count when it has students;
  ``--sampler``/``--steps``/``--samples`` override), and today's reference: the teacher
  with DPM-Solver++(2M), 20 steps x 100 samples;
- galaxies/s of each (the best of ``--repeats`` timed runs after a warm-up chunk) and
  their ratio;
- FLOP per galaxy from the network's shapes (``models.distill.flop_per_galaxy``: matrix
  products only) and the achieved FLOP/s divided by that of plain matrix multiplies of
  the same shapes (each layer's (rows, in) x (in, out) product at the run's chunk size,
  timed on the same device in the same dtype);
- on CUDA: peak GPU memory of each run and the chunk size chosen from free memory.

``--quality FILE.npz`` (features (N, F), missing (N, B), object_id (N,), z (N,): a fixed
set of mock objects with true redshifts, written by ``--write-quality``) adds CRPS,
sigma_NMAD and PIT KS of both settings on those objects (numpy versions of
``specdiff_catalog.metrics``' definitions), and ``--save-samples OUT.npz`` keeps the
redshift samples for a full comparison elsewhere.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict

import numpy as np
import torch

from specdiff_catalog import defaults
from specdiff_catalog.models import choose_sampling, load_diffusion, load_students, store
from specdiff_catalog.models.diffusion import DiffusionModel
from specdiff_catalog.models.distill import flop_per_galaxy, flop_per_row, layer_shapes
from specdiff_catalog.models.sampling import ChunkSampler, autocast_dtype, compile_network, sample

TEACHER = (
    defaults.TEACHER_SAMPLER,
    defaults.SAMPLER_STEPS[defaults.TEACHER_SAMPLER],
    defaults.N_SAMPLES,
)  # today's setting: 20 DPM-Solver++(2M) steps x 100 samples


@dataclass
class Setting:
    name: str
    network: Any
    sampler: str
    steps: int
    n_samples: int


class SampleOptions(TypedDict):
    """The options ``time_sampler`` passes to ``ChunkSampler`` and ``sample``."""

    n_samples: int
    seed: int
    sampler: str
    steps: int


def synthetic_inputs(
    model: DiffusionModel, n: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """In-distribution stand-ins: features ~ N(training mean, training std), 10% bands missing."""
    std = model.standardisation
    rng = np.random.default_rng(seed)
    features = rng.normal(std.feature_mean, std.feature_std, (n, std.n_features)).astype(np.float32)
    missing = rng.random((n, std.n_bands)) < 0.1
    return features, missing, np.arange(n, dtype=np.int64)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_sampler(
    setting: Setting,
    inputs: tuple[np.ndarray, np.ndarray, np.ndarray],
    precision: str,
    batch_size: int | None,
    repeats: int,
) -> dict[str, Any]:
    """Best-of-``repeats`` galaxies/s of one setting after a warm-up chunk, and its chunk size."""
    features, missing, ids = inputs
    device = setting.network.device
    kw: SampleOptions = {
        "n_samples": setting.n_samples,
        "seed": 0,
        "sampler": setting.sampler,
        "steps": setting.steps,
    }
    chunks = ChunkSampler(setting.network, features, missing, ids, precision=precision, **kw)
    galaxies = chunks.chunk_galaxies(batch_size)  # on CUDA: measures the footprint, from free memory
    sample(setting.network, features[:64], missing[:64], ids[:64], precision=precision, **kw)  # warm-up
    best, peak = np.inf, None
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        _sync(device)
        start = time.perf_counter()
        sample(
            setting.network,
            features,
            missing,
            ids,
            precision=precision,
            batch_size=galaxies * setting.n_samples,
            **kw,
        )
        _sync(device)
        best = min(best, time.perf_counter() - start)
        if device.type == "cuda":
            peak = torch.cuda.max_memory_allocated(device)
    return {
        "seconds": best,
        "galaxies_per_s": len(ids) / best,
        "peak_gpu_bytes": peak,
        "galaxies_per_chunk": min(galaxies, len(ids)),
    }


def gemm_seconds(
    model: DiffusionModel, galaxies: int, n_samples: int, dtype: torch.dtype | None, reps: int = 5
) -> float:
    """Seconds per network evaluation of plain (rows, in) x (in, out) products with the shapes
    of every per-row and per-galaxy layer of a chunk of ``galaxies`` x ``n_samples`` rows."""
    device = model.device
    dtype = dtype or torch.float32
    rows = {"row": galaxies * n_samples, "galaxy_evaluation": galaxies}
    total = 0.0
    for where, n_in, n_out in layer_shapes(model):
        if where not in rows:
            continue
        a = torch.randn(rows[where], n_in, device=device, dtype=dtype)
        b = torch.randn(n_in, n_out, device=device, dtype=dtype)
        torch.mm(a, b)
        _sync(device)
        start = time.perf_counter()
        for _ in range(reps):
            torch.mm(a, b)
        _sync(device)
        total += (time.perf_counter() - start) / reps
    return total


def numpy_metrics(z: np.ndarray, z_true: np.ndarray) -> dict[str, float]:
    """CRPS (empirical-CDF form, as ``metrics.crps``), sigma_NMAD of the medians, PIT KS."""
    ok = np.isfinite(z).all(axis=1) & np.isfinite(z_true)
    x, y = np.sort(z[ok].astype(np.float64), axis=1), z_true[ok]
    k = x.shape[1]
    weights = (2 * np.arange(1, k + 1) - k - 1) / k**2
    crps = np.abs(x - y[:, None]).mean(axis=1) - (x * weights).sum(axis=1)
    dz = (np.median(x, axis=1) - y) / (1 + y)
    nmad = 1.4826 * np.median(np.abs(dz - np.median(dz)))
    pit = np.sort((x < y[:, None]).mean(axis=1))
    n = len(pit)
    ks = max(np.max(np.arange(1, n + 1) / n - pit), np.max(pit - np.arange(n) / n))
    return {"n": int(ok.sum()), "crps": float(crps.mean()), "sigma_nmad": float(nmad), "pit_ks": float(ks)}


def write_quality(path: Path, model_dir: Path, mock: Path, n: int) -> None:
    """A fixed quality set from a mock survey's catalog + truth (needs pandas and the package's
    feature code: run it where the package is installed, carry the .npz to the GPU node)."""
    import pandas as pd

    from specdiff_catalog.features import photometric_features
    from specdiff_catalog.flags import Flag
    from specdiff_catalog.hashing import hash_uniform
    from specdiff_catalog.io.catalog import open_catalog, read_objects

    bands = store.read_config(model_dir).bands
    if bands is None:
        raise SystemExit(f"{model_dir}: config.json records no band set")
    columns = [c for b in bands.bands for c in (b.flux, b.ivar)]
    optional = [b.mw_transmission for b in bands.bands] + [bands.ebv_column]
    parts = [read_objects(p, columns, optional=optional) for p in open_catalog(mock / "catalog").partitions]
    table = pd.concat([t for t, _ in parts], ignore_index=True)
    all_ids = np.concatenate([i for _, i in parts])
    order = np.argsort(hash_uniform(all_ids, salt=7))[:n]
    table, all_ids = table.iloc[order].reset_index(drop=True), all_ids[order]
    truth = pd.read_parquet(mock / "truth" / "photometric.parquet").set_index("OBJECT_ID")
    feats = photometric_features(table, bands)
    usable = (feats.flags & Flag.NO_PHOTOMETRY) == 0
    ids = all_ids[usable]
    np.savez(
        path,
        features=feats.values[usable].astype(np.float32),
        missing=feats.missing[usable],
        object_id=ids,
        z=truth.loc[ids, "Z"].to_numpy(np.float64),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=store.default_model_dir())
    parser.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    parser.add_argument("--precision", default=defaults.PRECISION, choices=defaults.PRECISIONS)
    parser.add_argument("--galaxies", type=int, default=1000, help="galaxies of the production default")
    parser.add_argument(
        "--teacher-galaxies", type=int, help="galaxies of the 20-step teacher (default: --galaxies)"
    )
    parser.add_argument(
        "--sampler", default=defaults.SAMPLER, help="production sampler (default: what run uses, auto)"
    )
    parser.add_argument("--steps", type=int, help="production steps / student evaluations")
    parser.add_argument("--samples", type=int, help="production samples per galaxy")
    parser.add_argument(
        "--batch-size", type=int, help="rows per chunk (default: 32768 on CPU, from free memory on CUDA)"
    )
    parser.add_argument("--threads", type=int, default=1, help="torch CPU intra-op threads")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument(
        "--compile", help="torch.compile mode of the networks (default, reduce-overhead, ...)"
    )
    parser.add_argument("--quality", type=Path, help="a quality set .npz (see --write-quality)")
    parser.add_argument("--quality-objects", type=int, help="the first N objects of the quality set only")
    parser.add_argument("--save-samples", type=Path, help="write both settings' z samples on the quality set")
    parser.add_argument(
        "--write-quality", nargs=2, metavar=("MOCK", "N"), help="write --quality from a mock and exit"
    )
    parser.add_argument("--json", type=Path, help="also write the results as JSON")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    if args.write_quality:
        write_quality(args.quality, args.model, Path(args.write_quality[0]), int(args.write_quality[1]))
        print(f"wrote {args.quality}")
        return
    config = store.read_config(args.model)
    teacher = load_diffusion(args.model, device, config=config)
    students = load_students(args.model, device, config=config)
    chosen = choose_sampling(config, args.sampler, args.steps, args.samples)
    is_student = chosen.sampler == defaults.STUDENT_SAMPLER
    steps = chosen.steps or defaults.SAMPLER_STEPS.get(chosen.sampler) or teacher.schedule.timesteps
    network = students[steps] if is_student else teacher
    production = Setting("production", network, chosen.sampler, steps, chosen.n_samples)
    teacher_sampler, teacher_steps, teacher_samples = TEACHER  # steps: 20 (None, all T, is ddpm's only)
    reference = Setting(
        "teacher", teacher, teacher_sampler, teacher_steps or teacher.schedule.timesteps, teacher_samples
    )
    for setting in (production, reference):
        compile_network(setting.network, args.compile)
    dtype = autocast_dtype(device, args.precision)
    print(
        f"model {args.model}; device {device}"
        + (
            f" ({torch.cuda.get_device_name(device)})"
            if device.type == "cuda"
            else f", {args.threads} thread(s)"
        )
        + f"; torch {torch.__version__}; precision {args.precision} (autocast {dtype})"
        + f"; compile {args.compile}"
    )
    results = {}
    for setting, n in ((production, args.galaxies), (reference, args.teacher_galaxies or args.galaxies)):
        inputs = synthetic_inputs(teacher, n)
        timing = time_sampler(setting, inputs, args.precision, args.batch_size, args.repeats)
        galaxies_per_chunk = timing["galaxies_per_chunk"]
        flop = flop_per_galaxy(setting.network, setting.steps, setting.n_samples)
        achieved = flop * timing["galaxies_per_s"]
        gemm = gemm_seconds(teacher, galaxies_per_chunk, setting.n_samples, dtype)
        f = flop_per_row(teacher)
        gemm_rate = galaxies_per_chunk * (setting.n_samples * f["row"] + f["galaxy_evaluation"]) / gemm
        results[setting.name] = {
            "sampler": setting.sampler,
            "evaluations": setting.steps,
            "samples": setting.n_samples,
            "galaxies": n,
            "flop_per_galaxy": flop,
            "achieved_flop_per_s": achieved,
            "gemm_flop_per_s": gemm_rate,
            "efficiency_vs_gemm": achieved / gemm_rate,
            **timing,
        }
    print(
        f"{'setting':>10} {'sampler':>8} {'evals':>5} {'K':>4} {'galaxies/s':>12} {'GFLOP/gal':>10} "
        f"{'GFLOP/s':>9} {'GEMM GFLOP/s':>12} {'eff.':>5} {'chunk gal.':>10} {'peak GPU':>9}"
    )
    for name, r in results.items():
        peak = f"{r['peak_gpu_bytes'] / 2**30:.2f} GiB" if r["peak_gpu_bytes"] else "-"
        print(
            f"{name:>10} {r['sampler']:>8} {r['evaluations']:>5} {r['samples']:>4} "
            f"{r['galaxies_per_s']:>12,.1f} {r['flop_per_galaxy'] / 1e9:>10.3f} "
            f"{r['achieved_flop_per_s'] / 1e9:>9.1f} {r['gemm_flop_per_s'] / 1e9:>12.1f} "
            f"{r['efficiency_vs_gemm']:>5.2f} {r['galaxies_per_chunk']:>10} {peak:>9}"
        )
    ratio = results["production"]["galaxies_per_s"] / results["teacher"]["galaxies_per_s"]
    print(f"ratio production / teacher galaxies/s: {ratio:.2f}")
    output: dict[str, Any] = {"device": str(device), "precision": args.precision, "ratio": ratio, **results}
    if args.quality:
        data = {k: v[: args.quality_objects] for k, v in np.load(args.quality).items()}
        quality_inputs = (data["features"], data["missing"], data["object_id"])
        saved = {}
        for setting in (production, reference):
            x = sample(
                setting.network,
                *quality_inputs,
                n_samples=setting.n_samples,
                seed=0,
                sampler=setting.sampler,
                steps=setting.steps,
                precision=args.precision,
                batch_size=args.batch_size,
            )
            z = setting.network.to_physical(x)[0].numpy()
            saved[setting.name] = z.astype(np.float32)
            output[f"quality_{setting.name}"] = numpy_metrics(z, data["z"])
            print(f"quality {setting.name:>10} ({args.precision}): {output[f'quality_{setting.name}']}")
        if args.save_samples:
            np.savez_compressed(args.save_samples, z_true=data["z"], object_id=data["object_id"], **saved)
    if args.json:
        args.json.write_text(json.dumps(output, indent=1, default=float))


if __name__ == "__main__":
    main()
