"""Samples per second of each sampler and step count: N galaxies x K samples, one preset.

    python benchmarks/sampler_speed.py --preset small --galaxies 1000 --samples 100 --threads 1

The network has random weights (its cost does not depend on training); features are
random with 10% missing bands. Prints one row per (sampler, steps); no asserts.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from specdiff_catalog.features import feature_bands
from specdiff_catalog.models.diffusion import DiffusionConfig, DiffusionModel, Standardisation
from specdiff_catalog.models.sampling import CounterNoise, sample

RUNS = [("dpmpp2m", 12), ("dpmpp2m", 20), ("ddim", 20), ("ddim", 50), ("ddpm", 1000)]


def build_model(preset: str, n_bands: int, latent_dim: int, device: str) -> DiffusionModel:
    f = 3 * n_bands - 1
    std = Standardisation(
        np.zeros(f), np.ones(f), feature_bands(n_bands), np.zeros(latent_dim), np.ones(latent_dim), 0, 1
    )
    model = DiffusionModel(DiffusionConfig.load(preset), std)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(
                torch.randn(p.shape, generator=gen) * (0.5 / math.sqrt(p.shape[-1]) if p.dim() > 1 else 0.1)
            )
    return model.to(device).eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="small")
    parser.add_argument("--galaxies", type=int, default=1000)
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--bands", type=int, default=5)
    parser.add_argument("--latent", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=32768, help="rows (galaxies x samples) per chunk")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--ddpm-galaxies", type=int, default=10, help="galaxies for the 1000-step DDPM row")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    model = build_model(args.preset, args.bands, args.latent, args.device)
    rng = np.random.default_rng(0)
    features = rng.normal(20, 2, (args.galaxies, 3 * args.bands - 1)).astype(np.float32)
    missing = rng.random((args.galaxies, args.bands)) < 0.1
    ids = np.arange(args.galaxies)
    n_params = sum(p.numel() for p in model.parameters())
    print(
        f"preset={args.preset} ({n_params / 1e6:.2f}M parameters) D={args.latent + 1} "
        f"galaxies={args.galaxies} samples={args.samples} batch_size={args.batch_size} "
        f"device={args.device} threads={args.threads} torch={torch.__version__}"
    )

    rows = min(args.batch_size // args.samples, args.galaxies) * args.samples
    with torch.inference_mode():
        start = time.perf_counter()
        cond = model.embed_condition(features, missing)
        embed_s = time.perf_counter() - start
        start = time.perf_counter()
        CounterNoise(0, torch.as_tensor(ids[: rows // args.samples]), args.samples, model.data_dim)(0)
        noise_s = time.perf_counter() - start
        x = torch.randn(rows // args.samples, args.samples, model.data_dim, device=args.device)
        model.denoise(x, 500.0, cond[: rows // args.samples, None])
        start = time.perf_counter()
        model.denoise(x, 500.0, cond[: rows // args.samples, None])
        step_s = time.perf_counter() - start
    print(f"condition embedding: {args.galaxies / embed_s:,.0f} galaxies/s")
    print(f"counter noise: {rows * model.data_dim / noise_s / 1e6:,.1f} M deviates/s")
    print(f"one network evaluation on {rows} rows: {step_s * 1e3:.1f} ms ({rows / step_s:,.0f} rows/s)")
    print(f"{'sampler':>8} {'steps':>5} {'galaxies':>8} {'seconds':>8} {'samples/s':>11} {'galaxies/s':>10}")
    for sampler, steps in RUNS:
        n = args.ddpm_galaxies if sampler == "ddpm" else args.galaxies
        start = time.perf_counter()
        sample(
            model,
            features[:n],
            missing[:n],
            ids[:n],
            n_samples=args.samples,
            seed=0,
            sampler=sampler,
            steps=steps,
            batch_size=args.batch_size,
        )
        seconds = time.perf_counter() - start
        print(
            f"{sampler:>8} {steps:>5} {n:>8} {seconds:>8.2f} "
            f"{n * args.samples / seconds:>11,.0f} {n / seconds:>10,.1f}"
        )


if __name__ == "__main__":
    main()
