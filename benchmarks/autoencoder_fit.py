#!/usr/bin/env python
"""How well trained autoencoders fit a training set's validation spectra, by redshift and S/N.

    python benchmarks/autoencoder_fit.py --data TRAIN --model NAME=MODEL [--model NAME=MODEL ...]
        [--truth MOCK/truth] [--split val|train|all] [--json out.json]

For each model, on the split's spectra (the model's own preprocessing: rebinning,
de-reddening, normalisation; "amplitude" models at each spectrum's best amplitude):

- skipped: the share of spectra the normalisation could not handle (training skips them);
- chi^2 per valid pixel (sum chi^2 / sum pixels, the training metric) overall, per bin of
  redshift and per bin of S/N, defined model-independently as the median over valid pixels
  of flux x sqrt(ivar) after rebinning the 0.8 A spectrum by 4 (3.2 A pixels);
- with --truth (a mock's truth directory): the floor, i.e. the same chi^2 of the noiseless
  truth (truth/rest_spectra.zarr: aperture x rest flux at lambda / (1 + z), for the
  targets it holds) with its best amplitude on the same pixels, chi^2 per pixel per
  TARGET_CLASS (DEEP: a mock's deep-field spectra) below and above S/N 5, and the decoded Dn4000
  minus the truth's (truth/spectroscopic.parquet DN4000) per TARGET_CLASS: median and NMAD,
  overall and per bin of the true Dn4000 (``DN4000_EDGES``); where the truth holds the
  noiseless spectrum, also the Dn4000 of that spectrum sampled on the model's rest grid minus
  DN4000 (``grid_minus_truth``: what the rest grid alone changes in the index).
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from specdiff_catalog import spectral
from specdiff_catalog.io.trainset import TrainingSet
from specdiff_catalog.models import load_model
from specdiff_catalog.models.autoencoder import chi2, redshift_spectra

Z_EDGES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0, 1.2, 1.4, 1.7)
SNR_EDGES = (0.0, 1.0, 2.0, 5.0, 10.0, 1e9)
DN4000_EDGES = (0.0, 1.2, 1.4, 1.6, 1.8, 3.0)
NMAD_SCALE = 1.4826


def snr(wave: np.ndarray, flux: np.ndarray, ivar: np.ndarray) -> np.ndarray:
    """(N,) median S/N per 3.2 A pixel (the 0.8 A spectrum rebinned by 4) over valid pixels."""
    _, f, i = spectral.rebin(wave, flux, ivar, 4)
    with np.errstate(invalid="ignore"):
        return np.nanmedian(np.where(i > 0, f * np.sqrt(i), np.nan), axis=1)


def truth_spectra(truth: Path | None) -> tuple[np.ndarray, np.ndarray, dict[int, int]] | None:
    """rest_spectra.zarr's wavelength (L,), flux x aperture (n, L) and TARGETID -> row."""
    if truth is None or not (truth / "rest_spectra.zarr").exists():
        return None
    import zarr

    group = zarr.open_group(truth / "rest_spectra.zarr", mode="r")

    def read(name: str) -> np.ndarray:
        node = group[name]
        if not isinstance(node, zarr.Array):
            raise SystemExit(f"{truth}/rest_spectra.zarr: {name} is not an array")
        return np.asarray(node[:])

    ids = read("targetid")
    flux = read("flux") * read("aperture")[:, None]
    return np.asarray(read("wavelength"), dtype=np.float64), flux, {int(t): i for i, t in enumerate(ids)}


def evaluate(model_dir: Path, ts: TrainingSet, split: str | None, truth: Path | None) -> pd.DataFrame:
    """One row per spectrum: TARGETID, Z, snr, chi2, n, floor, n_floor, skipped, dn4000 (decoded),
    dn4000_grid (the noiseless truth on the model's rest grid; NaN without it)."""
    ae = load_model(model_dir, notice=False).autoencoder
    if ae is None:
        raise SystemExit(f"{model_dir}: no trained autoencoder")
    rest_wave = ae.rest_wave()
    noiseless = truth_spectra(truth)
    rows = []
    for batch in ts.batches(split, 256):
        ids = batch.objects["TARGETID"].to_numpy()
        z = batch.objects["Z"].to_numpy()
        flux, ivar = batch.spectra()
        ebv = batch.objects["EBV"].to_numpy() if ae.config.deredden else None
        prep = ae.prepare(ts.wave, flux, ivar, z, ebv)
        skipped = (prep.flags & spectral.SpectrumFlag.skip()) != 0
        with torch.no_grad():
            latent, _, observed, inside = ae(*(torch.as_tensor(a) for a in (prep.flux, prep.ivar, prep.z)))
            c, n = chi2(torch.as_tensor(prep.flux), torch.as_tensor(prep.ivar), observed, inside)
        decoded = ae.decode_latents(latent.numpy())
        floor, n_floor, dn4000_grid = np.full(len(z), np.nan), np.zeros(len(z)), np.full(len(z), np.nan)
        if noiseless is not None:
            t_wave, t_flux, where = noiseless
            have = np.array([int(t) in where for t in ids])
            if have.any():
                model = redshift_spectra(t_wave, t_flux[[where[int(t)] for t in ids[have]]], z[have], ts.wave)
                _, t_obs, _ = spectral.rebin(
                    ts.wave, np.nan_to_num(model), ivar[have] * np.isfinite(model), ae.config.rebin
                )
                w = prep.ivar[have] * inside.numpy()[have] * (t_obs != 0)
                amp = (w * prep.flux[have] * t_obs).sum(1) / (w * t_obs**2).sum(1)
                floor[have] = (w * (prep.flux[have] - amp[:, None] * t_obs) ** 2).sum(1)
                n_floor[have] = (w > 0).sum(1)
                on_grid = redshift_spectra(
                    t_wave, t_flux[[where[int(t)] for t in ids[have]]], np.zeros(int(have.sum())), rest_wave
                )
                dn4000_grid[have] = spectral.dn4000(rest_wave, on_grid)
        rows.append(
            pd.DataFrame(
                {
                    "TARGETID": ids,
                    "Z": z,
                    "snr": snr(ts.wave, flux, ivar),
                    "chi2": c.numpy(),
                    "n": n.numpy(),
                    "floor": floor,
                    "n_floor": n_floor,
                    "skipped": skipped,
                    "dn4000": spectral.dn4000(rest_wave, decoded),
                    "dn4000_grid": dn4000_grid,
                }
            )
        )
    return pd.concat(rows, ignore_index=True)


def binned(frame: pd.DataFrame, column: str, edges: tuple[float, ...]) -> list[dict]:
    """chi^2 per pixel (and its floor) per bin of a column, pixel-weighted, skipped spectra left out."""
    out = []
    used = frame[~frame["skipped"]]
    for lo, hi in itertools.pairwise(edges):
        sel = used[(used[column] >= lo) & (used[column] < hi)]
        if len(sel):
            has_floor = sel["n_floor"] > 0
            out.append(
                {
                    column: f"[{lo:g}, {hi:g})",
                    "n": len(sel),
                    "chi2_per_pixel": float(sel["chi2"].sum() / sel["n"].sum()),
                    "median_chi2_per_pixel": float((sel["chi2"] / sel["n"]).median()),
                    "floor_per_pixel": float(sel["floor"][has_floor].sum() / sel["n_floor"][has_floor].sum())
                    if has_floor.any()
                    else None,
                    "n_floor": int(has_floor.sum()),
                }
            )
    return out


def _median_nmad(d: np.ndarray) -> dict:
    d = d[np.isfinite(d)]
    if not d.size:
        return {"n": 0}
    med = float(np.median(d))
    return {"n": int(d.size), "median": med, "nmad": float(NMAD_SCALE * np.median(np.abs(d - med)))}


def with_truth(frame: pd.DataFrame, truth: Path | None) -> pd.DataFrame | None:
    """The frame joined to the truth's DN4000 and TARGET_CLASS ("" where it has none) on TARGETID."""
    if truth is None or not (truth / "spectroscopic.parquet").exists():
        return None
    table = pd.read_parquet(truth / "spectroscopic.parquet")
    if "DN4000" not in table:
        return None
    columns = ["TARGETID", "DN4000"] + (["TARGET_CLASS"] if "TARGET_CLASS" in table else [])
    joined = frame.merge(table[columns], on="TARGETID", how="inner")
    joined["TARGET_CLASS"] = joined["TARGET_CLASS"].fillna("") if "TARGET_CLASS" in joined else ""
    return joined


def by_class(joined: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """("all", every row), then (class, its rows) for each TARGET_CLASS of the joined frame."""
    names = sorted(set(joined["TARGET_CLASS"]) - {""})
    return [("all", joined), *((name, joined[joined["TARGET_CLASS"] == name]) for name in names)]


def chi2_by_class(joined: pd.DataFrame | None) -> dict:
    """Per TARGET_CLASS (and all): chi^2 per pixel of every spectrum and of those at S/N > 5."""
    if joined is None:
        return {}
    return {name: binned(sel, "snr", (0.0, 5.0, 1e9)) for name, sel in by_class(joined)}


def dn4000_by_class(joined: pd.DataFrame | None) -> dict:
    """Per TARGET_CLASS (and all): decoded minus true Dn4000 (median, NMAD), the same per bin of the
    true Dn4000, and the truth on the rest grid minus the true Dn4000 where the truth has spectra."""
    if joined is None:
        return {}
    out = {}
    for name, sel in by_class(joined):
        row = _median_nmad((sel["dn4000"] - sel["DN4000"]).to_numpy())
        if row["n"]:
            row["by_true_dn4000"] = {
                f"[{lo:g}, {hi:g})": _median_nmad((part["dn4000"] - part["DN4000"]).to_numpy())
                for lo, hi in itertools.pairwise(DN4000_EDGES)
                if len(part := sel[(sel["DN4000"] >= lo) & (sel["DN4000"] < hi)])
            }
            grid = _median_nmad((sel["dn4000_grid"] - sel["DN4000"]).to_numpy())
            if grid["n"]:
                row["grid_minus_truth"] = grid
            out[name] = row
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", required=True, type=Path)
    parser.add_argument("--model", required=True, action="append", metavar="NAME=DIR")
    parser.add_argument("--truth", type=Path, help="mock truth directory (floor and Dn4000)")
    parser.add_argument(
        "--split",
        default="val",
        choices=("val", "train", "all"),
        help="the training set's split to score (all: every spectrum, e.g. of a held-out set)",
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    ts = TrainingSet.open(args.data)
    results = {}
    for item in args.model:
        name, _, path = item.partition("=")
        start = time.perf_counter()
        frame = evaluate(Path(path), ts, None if args.split == "all" else args.split, args.truth)
        used, joined = frame[~frame["skipped"]], with_truth(frame, args.truth)
        results[name] = {
            "model": path,
            "n": len(frame),
            "skipped_fraction": float(frame["skipped"].mean()),
            "chi2_per_pixel": float(used["chi2"].sum() / used["n"].sum()),
            "by_z": binned(frame, "Z", Z_EDGES),
            "by_snr": binned(frame, "snr", SNR_EDGES),
            "snr_above_5": binned(frame, "snr", (5.0, 1e9)),
            "by_class_snr": chi2_by_class(joined),
            "dn4000_minus_truth": dn4000_by_class(joined),
            "seconds": round(time.perf_counter() - start, 1),
        }
    text = json.dumps(results, indent=1)
    print(text)
    if args.json:
        args.json.write_text(text)


if __name__ == "__main__":
    main()
