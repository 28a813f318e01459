#!/usr/bin/env python
"""Quality of trained autoencoders on a mock survey's validation split; prints its figures.

    python benchmarks/autoencoder_quality.py --data TRAIN --mock MOCK \\
        --model small=MODEL_DIR [--model other=MODEL_DIR ...] [--img docs/img] [--json out.json]

For each model, on the training set's validation split (or --split):
- chi^2 per valid pixel of the model, and of the noiseless truth with a best-fit amplitude
  (the floor: the mock's sky-subtraction residuals are not in IVAR), on the model's
  rebinned grid and on the instrument's full 0.8 A grid;
- decoded rest-frame spectra vs the noiseless truth, re-synthesised from the SPS parameters
  of truth/spectroscopic.parquet (``mock.survey.galaxies_from_truth`` +
  ``mock.spectra.rest_frame_flux``; the script checks that this reproduces
  truth/rest_spectra.zarr), both normalised by their median in 5300-5850 A: the
  fractional residual over the rest range each spectrum observed;
- Dn4000 and emission-line equivalent widths of decoded, observed and true spectra;
- Pearson and Spearman correlation of each latent dimension with z, and the R^2 with which
  z is predicted from all latents (linear least squares, and 10-nearest-neighbour
  regression, leave-one-out), next to the same R^2 from the true SPS parameters of the
  spectra's shapes (history, metallicity, dust, ionisation, dispersion): the population
  itself changes with z, so that is the floor a latent cannot go below.
The first model's reconstructions and Dn4000 are plotted into --img.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import zarr
from scipy import spatial, stats

from specdiff_catalog import spectral
from specdiff_catalog.io.trainset import TrainingSet
from specdiff_catalog.mock.spectra import instrument_resolution, mw_transmission_spectrum
from specdiff_catalog.models import load_model
from specdiff_catalog.models.autoencoder import AutoencoderConfig, chi2, redshift_spectra

# the truth columns that set a spectrum's shape (not its amplitude): the floor of latent-z correlations
SHAPE_PARAMETERS = [
    "SFH_AGE",
    "SFH_TAU",
    "BURST_FRACTION",
    "BURST_AGE",
    "LOG_SSFR",
    "METALLICITY",
    "LOG_U",
    "AV",
    "DUST_DELTA",
    "VELDISP",
]
RESOLUTION_SIGMA_PIX = (
    0.83  # the mock's line-spread function on the merged 0.8 A grid (b 0.82, r 0.76, z 0.90)
)


def true_rest(truth: pd.DataFrame, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(wave (R,), flux (N, R)): noiseless rest-frame spectra of targets ``ids`` re-synthesised from
    their SPS truth, on the mock's 30 km/s truth grid (1e-17 erg/s/cm^2/A at the observer)."""
    from specdiff_catalog.mock.spectra import rest_frame_flux, rest_wavelength
    from specdiff_catalog.mock.survey import galaxies_from_truth

    rows = truth.loc[ids].reset_index()
    return rest_wavelength(), rest_frame_flux(galaxies_from_truth(rows))


def normalise_rest(wave: np.ndarray, flux: np.ndarray) -> np.ndarray:
    """flux (N, P) divided by its median in the 5300-5850 A rest window on grid wave (P,)."""
    window = (wave >= spectral.NORM_WINDOW[0]) & (wave <= spectral.NORM_WINDOW[1])
    return flux / np.median(flux[:, window], axis=1, keepdims=True)


def zarr_array(group: zarr.Group, name: str) -> zarr.Array:
    """The array ``name`` of ``group``; SystemExit if it is a group."""
    node = group[name]
    if not isinstance(node, zarr.Array):
        raise SystemExit(f"{group.store_path}: {name} is not an array")
    return node


def check_rest_spectra(mock: Path, truth: pd.DataFrame) -> float:
    """Largest |difference| between normalised truth/rest_spectra.zarr and the re-synthesised truth."""
    group = zarr.open_group(mock / "truth" / "rest_spectra.zarr", mode="r")
    ids = np.asarray(zarr_array(group, "targetid")[:])
    common = np.flatnonzero(np.isin(ids, truth.index))[:100]
    if not common.size:
        return float("nan")
    wave = np.asarray(zarr_array(group, "wavelength")[:])
    flux = zarr_array(group, "flux").get_orthogonal_selection((common, slice(None)))
    theirs = normalise_rest(wave, np.asarray(flux))
    t_wave, t_flux = true_rest(truth, ids[common])
    ours = normalise_rest(wave, np.stack([np.interp(wave, t_wave, m) for m in t_flux]))
    return float(np.abs(theirs - ours).max())


def r2_linear(x: np.ndarray, y: np.ndarray) -> float:
    """R^2 of y on [1, x] by least squares."""
    design = np.column_stack([np.ones(len(x)), x])
    resid = y - design @ np.linalg.lstsq(design, y, rcond=None)[0]
    return float(1 - resid.var() / y.var())


def r2_knn(x: np.ndarray, y: np.ndarray, k: int = 10) -> float:
    """Leave-one-out R^2 of the mean y of the k nearest neighbours in standardised x."""
    x = (x - x.mean(0)) / x.std(0)
    _, idx = spatial.cKDTree(x).query(x, k=k + 1)
    pred = y[idx[:, 1:]].mean(axis=1)
    return float(1 - ((y - pred) ** 2).mean() / y.var())


def robust(d: np.ndarray) -> dict[str, float]:
    """median, 1.4826 MAD, std, n of the finite values of d."""
    d = d[np.isfinite(d)]
    med = float(np.median(d)) if d.size else float("nan")
    return {
        "median": med,
        "nmad": float(1.4826 * np.median(np.abs(d - med))) if d.size else float("nan"),
        "std": float(d.std()) if d.size else float("nan"),
        "n": int(d.size),
    }


def evaluate(model_dir: Path, ts: TrainingSet, truth: pd.DataFrame, split: str) -> dict:
    """Per-object arrays of one model on one split (see the module docstring)."""
    ae = load_model(model_dir).autoencoder
    if ae is None:
        raise SystemExit(f"{model_dir}: no trained autoencoder")
    rest_wave = ae.rest_wave()
    out: dict[str, list] = {
        k: []
        for k in (
            "targetid",
            "z",
            "z_true",
            "latent",
            "chi2",
            "n",
            "floor",
            "flags",
            "snr",
            "rest",
            "data_flux",
            "data_ivar",
            "resid",
            "chi2_full",
            "n_full",
            "floor_full",
            "truth_rest",
            "dn_truth",
            *(f"ew_truth_{name}" for name in spectral.LINE_BANDS),
        )
    }
    for batch in ts.batches(split, 512):
        ids = batch.objects["TARGETID"].to_numpy()
        z = batch.objects["Z"].to_numpy()
        ebv = batch.objects["EBV"].to_numpy() if ae.config.deredden else None
        flux, ivar = batch.spectra()
        prep = ae.prepare(ts.wave, flux, ivar, z, ebv)
        with torch.no_grad():
            latent, rest, observed, inside = ae(*(torch.as_tensor(a) for a in (prep.flux, prep.ivar, prep.z)))
            c, n = chi2(torch.as_tensor(prep.flux), torch.as_tensor(prep.ivar), observed, inside)
        # the noiseless truth on the same rebinned pixels, with its best-fit amplitude
        z_true = truth.loc[ids, "Z"].to_numpy()
        t_wave, t_flux = true_rest(truth, ids)
        full = redshift_spectra(t_wave, t_flux, z_true, ts.wave)
        if not ae.config.deredden:  # the spectra carry the Milky Way's dust
            full = full * mw_transmission_spectrum(ts.wave, np.nan_to_num(batch.objects["EBV"].to_numpy()))
        full = np.where(
            np.isfinite(full), instrument_resolution(np.nan_to_num(full), RESOLUTION_SIGMA_PIX), np.nan
        )
        _, t_obs, _ = spectral.rebin(ts.wave, np.nan_to_num(full), ivar * np.isfinite(full), ae.config.rebin)
        w = prep.ivar * inside.numpy() * (t_obs != 0)
        amp = (w * prep.flux * t_obs).sum(1) / (w * t_obs**2).sum(1)
        floor = (w * (prep.flux - amp[:, None] * t_obs) ** 2).sum(1)
        # the same at the instrument's full resolution (0.8 A): what rebinning by k gave up
        flux_f, ivar_f = spectral.clean(flux, ivar)
        if ebv is not None:  # the model de-reddens
            flux_f, ivar_f, _ = spectral.deredden(ts.wave, flux_f, ivar_f, ebv)
        flux_f, ivar_f = spectral.normalise(flux_f, ivar_f, prep.norm)
        model_f = redshift_spectra(rest_wave, rest.numpy().astype(np.float64), z, ts.wave)
        w_f = np.where(np.isfinite(model_f) & np.isfinite(full), ivar_f, 0.0)
        chi2_full = (w_f * (flux_f - np.nan_to_num(model_f)) ** 2).sum(1)
        t_full = np.nan_to_num(full)
        amp_f = (w_f * flux_f * t_full).sum(1) / (w_f * t_full**2).sum(1)
        floor_full = (w_f * (flux_f - amp_f[:, None] * t_full) ** 2).sum(1)
        # decoded vs true rest-frame shape over the rest range this spectrum observed
        rest_np = rest.numpy().astype(np.float64)
        t_rest = normalise_rest(rest_wave, np.stack([np.interp(rest_wave, t_wave, m) for m in t_flux]))
        d_rest = normalise_rest(rest_wave, rest_np)
        seen = (rest_wave[None] >= ts.wave[0] / (1 + z[:, None])) & (
            rest_wave[None] <= ts.wave[-1] / (1 + z[:, None])
        )
        resid = np.sqrt(np.nanmean(np.where(seen, (d_rest - t_rest) / t_rest, np.nan) ** 2, axis=1))
        band = (ae.wave_obs.numpy()[None] / (1 + z[:, None]) > 3850) & (
            ae.wave_obs.numpy()[None] / (1 + z[:, None]) < 4100
        )
        snr = np.nanmedian(np.where(band & (prep.ivar > 0), prep.flux * np.sqrt(prep.ivar), np.nan), axis=1)
        for key, value in (
            ("targetid", ids),
            ("z", z),
            ("z_true", z_true),
            ("latent", latent.numpy()),
            ("chi2", c.numpy()),
            ("n", n.numpy()),
            ("floor", floor),
            ("flags", prep.flags),
            ("snr", snr),
            ("rest", rest_np.astype(np.float32)),
            ("data_flux", prep.flux),
            ("data_ivar", prep.ivar),
            ("resid", resid),
            ("chi2_full", chi2_full),
            ("n_full", (w_f > 0).sum(1)),
            ("floor_full", floor_full),
            ("truth_rest", t_rest.astype(np.float32)),
            ("dn_truth", spectral.dn4000(t_wave, t_flux)),
            *(
                (f"ew_truth_{name}", spectral.line_flux(t_wave, t_flux, *bands)[1])
                for name, bands in spectral.LINE_BANDS.items()
            ),
        ):
            out[key].append(value)
    result: dict[str, np.ndarray | AutoencoderConfig] = {k: np.concatenate(v) for k, v in out.items()}
    result["rest_wave"], result["wave_obs"] = rest_wave, ae.wave_obs.numpy().astype(np.float64)
    result["config"] = ae.config
    return result


def figures(r: dict, truth: pd.DataFrame) -> dict:
    """The numbers of one evaluated model."""
    ok = (r["flags"] & spectral.SpectrumFlag.skip()) == 0
    obs_rest = r["wave_obs"][None] / (1 + r["z"][:, None])
    dn = {
        "decoded": spectral.dn4000(r["rest_wave"], r["rest"]),
        "truth": r["dn_truth"],
        "observed": spectral.dn4000(obs_rest, r["data_flux"], r["data_ivar"]),
    }
    high = r["snr"] >= np.nanpercentile(r["snr"][ok], 75)
    lines = {}
    for name, bands in spectral.LINE_BANDS.items():
        ew = {
            "decoded": spectral.line_flux(r["rest_wave"], r["rest"], *bands)[1],
            "truth": r[f"ew_truth_{name}"],
            "observed": spectral.line_flux(obs_rest, r["data_flux"], *bands, ivar=r["data_ivar"])[1],
        }
        strong = ok & (ew["truth"] > 5) & np.isfinite(ew["observed"])
        lines[name] = {
            "n_strong": int(strong.sum()),
            "decoded_minus_truth_ew": robust((ew["decoded"] - ew["truth"])[strong]),
            "observed_minus_truth_ew": robust((ew["observed"] - ew["truth"])[strong]),
        }
    latent, z = r["latent"][ok], r["z"][ok]
    params = truth.loc[r["targetid"][ok], SHAPE_PARAMETERS].to_numpy()
    return {
        "n": len(r["z"]),
        "n_skipped": int((~ok).sum()),
        "chi2_per_pixel": float(r["chi2"][ok].sum() / r["n"][ok].sum()),
        "chi2_per_pixel_truth_floor": float(r["floor"][ok].sum() / r["n"][ok].sum()),
        "chi2_per_pixel_median_object": float(np.median(r["chi2"][ok] / r["n"][ok])),
        "chi2_per_pixel_full_resolution": float(r["chi2_full"][ok].sum() / r["n_full"][ok].sum()),
        "chi2_per_pixel_full_resolution_truth_floor": float(
            r["floor_full"][ok].sum() / r["n_full"][ok].sum()
        ),
        "rest_rms_fractional_residual": robust(r["resid"][ok]),
        "rest_rms_fractional_residual_high_snr": robust(r["resid"][ok & high]),
        "snr_per_pixel_3850_4100": robust(r["snr"][ok]),
        "dn4000_decoded_minus_truth": robust((dn["decoded"] - dn["truth"])[ok]),
        "dn4000_decoded_minus_truth_high_snr": robust((dn["decoded"] - dn["truth"])[ok & high]),
        "dn4000_observed_minus_truth": robust((dn["observed"] - dn["truth"])[ok]),
        "dn4000_observed_minus_truth_high_snr": robust((dn["observed"] - dn["truth"])[ok & high]),
        "lines": lines,
        "latent_z": {
            "pearson": [float(stats.pearsonr(latent[:, i], z)[0]) for i in range(latent.shape[1])],
            "spearman": [float(stats.spearmanr(latent[:, i], z)[0]) for i in range(latent.shape[1])],
            "r2_linear": r2_linear(latent, z),
            "r2_knn10": r2_knn(latent, z),
            "truth_parameters_r2_linear": r2_linear(params, z),
            "truth_parameters_r2_knn10": r2_knn(params, z),
        },
        "_dn4000": dn,
        "_high": high,
        "_ok": ok,
    }


def plot_examples(r: dict, f: dict, truth: pd.DataFrame, path: Path, label: str) -> None:
    """Six galaxies: star-forming/quiescent x low/mid/high z, the best-measured of each; data, decoded,
    truth."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pop = truth.loc[r["targetid"], "POPULATION"].to_numpy()
    picks = []
    for kind in ("star-forming", "quiescent"):
        for lo, hi in ((0.0, 0.3), (0.4, 0.9), (1.0, 1.6)):
            cand = np.flatnonzero(
                f["_ok"] & (pop == kind) & (r["z"] >= lo) & (r["z"] < hi) & np.isfinite(r["snr"])
            )
            if cand.size:
                picks.append(
                    cand[np.argsort(r["snr"][cand])[int(0.8 * (cand.size - 1))]]
                )  # 80th percentile S/N
    fig, axes = plt.subplots(len(picks), 1, figsize=(10, 2.3 * len(picks)), sharex=True)
    for ax, i in zip(np.atleast_1d(axes), picks, strict=True):
        obs_rest = r["wave_obs"] / (1 + r["z"][i])
        good = r["data_ivar"][i] > 0
        scale = np.median(r["rest"][i][(r["rest_wave"] >= 5300) & (r["rest_wave"] <= 5850)])
        true = r["truth_rest"][i]
        ax.plot(
            obs_rest[good],
            r["data_flux"][i][good],
            color="0.75",
            lw=0.5,
            label="data (rebinned, de-reddened)",
        )
        ax.plot(r["rest_wave"], r["rest"][i], color="C0", lw=0.9, label=f"decoded ({label})")
        ax.plot(r["rest_wave"], true * scale, color="k", lw=0.7, ls="--", label="noiseless truth")
        ax.set_xlim(r["rest_wave"][0], r["rest_wave"][-1])
        lo, hi = np.percentile(r["rest"][i], [0.5, 99.8])
        ax.set_ylim(min(0, lo) - 0.2 * (hi - lo), hi + 0.3 * (hi - lo))
        ax.text(
            0.01,
            0.95,
            f"{pop[i]}  z = {r['z'][i]:.3f}  S/N/pix = {r['snr'][i]:.1f}  "
            f"Dn4000 decoded {f['_dn4000']['decoded'][i]:.3f} / true {f['_dn4000']['truth'][i]:.3f}  "
            f"chi2/pix {r['chi2'][i] / r['n'][i]:.2f}",
            transform=ax.transAxes,
            va="top",
            fontsize=8,
        )
        ax.set_ylabel("F / median")
    np.atleast_1d(axes)[0].legend(loc="upper right", fontsize=7)
    np.atleast_1d(axes)[-1].set_xlabel("rest-frame wavelength [A]")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_dn4000(r: dict, f: dict, path: Path, label: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dn, ok, high = f["_dn4000"], f["_ok"], f["_high"]
    fig, axes = plt.subplots(1, 2, figsize=(9, 4.2), sharex=True, sharey=True)
    for ax, key in zip(axes, ("decoded", "observed"), strict=True):
        ax.scatter(dn["truth"][ok & ~high], dn[key][ok & ~high], s=3, alpha=0.4, color="0.5", label="all")
        ax.scatter(
            dn["truth"][ok & high], dn[key][ok & high], s=4, alpha=0.7, color="C3", label="top S/N quartile"
        )
        ax.plot([0.8, 2.4], [0.8, 2.4], "k-", lw=0.7)
        ax.set_xlabel("Dn4000 (noiseless truth)")
        ax.set_title(f"{key} ({label})" if key == "decoded" else "observed spectrum (rebinned)", fontsize=10)
    axes[0].set_ylabel("Dn4000")
    axes[0].set_xlim(0.8, 2.4)
    axes[0].set_ylim(0.6, 2.8)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", required=True, type=Path, help="training set (prepare output)")
    parser.add_argument("--mock", required=True, type=Path, help="mock survey directory (with truth/)")
    parser.add_argument("--model", action="append", required=True, help="LABEL=MODEL_DIR (repeatable)")
    parser.add_argument("--split", default="val")
    parser.add_argument("--img", type=Path, help="directory for the first model's PNGs")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    ts = TrainingSet.open(args.data)
    truth = pd.read_parquet(args.mock / "truth" / "spectroscopic.parquet").set_index("TARGETID")
    results: dict[str, float | dict] = {
        "rest_spectra_check_max_abs_diff": check_rest_spectra(args.mock, truth)
    }
    for k, spec in enumerate(args.model):
        label, path = spec.split("=", 1)
        start = time.perf_counter()
        r = evaluate(Path(path), ts, truth, args.split)
        f = figures(r, truth)
        if k == 0 and args.img:
            args.img.mkdir(parents=True, exist_ok=True)
            plot_examples(r, f, truth, args.img / f"autoencoder_{label}_examples.png", label)
            plot_dn4000(r, f, args.img / f"autoencoder_{label}_dn4000.png", label)
        row = {key: value for key, value in f.items() if not key.startswith("_")}
        row["eval_seconds"] = time.perf_counter() - start
        results[label] = row
    text = json.dumps(results, indent=1)
    print(text)
    if args.json:
        args.json.write_text(text)


if __name__ == "__main__":
    main()
