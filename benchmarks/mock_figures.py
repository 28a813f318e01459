#!/usr/bin/env python
"""The mock survey next to DESI: densities, class shares, n(z), colour diagrams, and the rank-5 test.

    python benchmarks/mock_figures.py --mock MOCK [--img docs/img] [--json out.json] [--rank-train 1000]

From a ``specdiff-catalog mock`` directory:
- densities of the catalog and of each DESI target class (mock.json's target density x the
  class fractions, by the desitarget bits, so an object in two classes counts in both),
  class shares, and redshift quantiles, next to the published DESI numbers (PUBLISHED);
- figures (``--img``): r-z and g-r against z per class over the catalog; g-r vs r-z with
  the ELG cuts and r-W1 vs W1 with the LRG cuts; n(z) per class with the published ranges;
- the rank-5 test on the NOISY observed spectra: a 5-vector linear basis (the top right
  singular vectors of noiseless rest-frame spectra of other targets, re-synthesised from
  their truth) is fitted to each observed spectrum (free coefficients, its IVAR as weights,
  the mock's aperture, Milky Way, redshift and resolution applied to the basis), and its
  chi^2 is compared with that of the noiseless truth, by S/N bin. A rank-5 family (the
  earlier kcorrect mock) gives dchi^2 = chi^2(rank 5) - chi^2(truth) ~ -5 for every spectrum.
Colours use the noiseless true fluxes (FLUX_*_TRUE, before Milky Way dust); the cuts were
applied to noisy, de-reddened fluxes, so points near a boundary may sit on either side.
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path
from typing import TypedDict

import numpy as np
import pandas as pd

from specdiff_catalog.mock.targets import DESI_TARGET_BITS


class Published(TypedDict):
    density: int  # deg^-2
    z_median: float
    z_range: tuple[float, float]
    source: str


# Published DESI main-survey numbers (south / full footprint), with their sources.
PUBLISHED: dict[str, Published] = {
    "BGS": {
        "density": 864,
        "z_median": 0.2,
        "z_range": (0.0, 0.6),
        "source": "Hahn et al. 2023, AJ 165, 253 (BGS Bright: ~864 deg^-2, median z ~0.2)",
    },
    "LRG": {
        "density": 605,
        "z_median": 0.75,
        "z_range": (0.4, 1.1),
        "source": "Zhou et al. 2023, AJ 165, 58 (~605 deg^-2, 0.4 < z < 1.1)",
    },
    "ELG": {
        "density": 2400,
        "z_median": 1.1,
        "z_range": (0.6, 1.6),
        "source": "Raichoor et al. 2023, AJ 165, 126 (LOP ~1,940 + VLO ~460 deg^-2, 0.6 < z < 1.6)",
    },
}
CLASS_BITS = {
    "BGS": DESI_TARGET_BITS["BGS_ANY"],
    "LRG": DESI_TARGET_BITS["LRG"],
    "ELG": DESI_TARGET_BITS["ELG"],
}
COLOURS = {"BGS": "C2", "LRG": "C3", "ELG": "C0"}


def magnitudes(table: pd.DataFrame) -> pd.DataFrame:
    """AB magnitudes g, r, z, W1 of the noiseless total fluxes (FLUX_*_TRUE, nanomaggies)."""
    flux = {b: table[f"FLUX_{b.upper()}_TRUE"].to_numpy() for b in ("g", "r", "z", "W1")}
    return pd.DataFrame({b: 22.5 - 2.5 * np.log10(np.clip(f, 1e-3, None)) for b, f in flux.items()})


def in_class(truth: pd.DataFrame, name: str) -> np.ndarray:
    return (truth["DESI_TARGET"].to_numpy() >> CLASS_BITS[name]) & 1 == 1


def summary_table(mock: Path, truth: pd.DataFrame) -> dict:
    """Densities, class shares (by bits and by TARGET_CLASS) and z quantiles of the spectroscopic set."""
    meta = json.loads((mock / "mock.json").read_text())
    density = meta["surface_density_deg2"]
    out: dict = {"catalog_density": density["catalog"], "target_density": density["targets"], "classes": {}}
    for name, ref in PUBLISHED.items():
        member = in_class(truth, name)
        z = truth.loc[member, "Z"].to_numpy()
        out["classes"][name] = {
            "density": round(density["targets"] * member.mean(), 0),
            "share_by_label": round(float((truth["TARGET_CLASS"] == name).mean()), 3),
            "z_q05_q25_q50_q75_q95": [
                round(float(q), 3) for q in np.quantile(z, [0.05, 0.25, 0.5, 0.75, 0.95])
            ],
            "fraction_outside_published_range": round(
                float(((z < ref["z_range"][0]) | (z > ref["z_range"][1])).mean()), 3
            ),
            "published": ref,
        }
    lop = (truth["DESI_TARGET"].to_numpy() >> DESI_TARGET_BITS["ELG_LOP"]) & 1 == 1
    out["classes"]["ELG"]["density_lop_vlo"] = [
        round(density["targets"] * lop.mean(), 0),
        round(density["targets"] * (in_class(truth, "ELG") & ~lop).mean(), 0),
    ]
    total = sum(v["published"]["density"] for v in out["classes"].values())
    for v in out["classes"].values():
        v["published_share"] = round(v["published"]["density"] / total, 3)
    return out


def plot_colour_redshift(phot: pd.DataFrame, spec: pd.DataFrame, path: Path) -> None:
    import matplotlib.pyplot as plt

    mp, ms = magnitudes(phot), magnitudes(spec)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharex=True)
    for ax, (a, b) in zip(axes, (("r", "z"), ("g", "r")), strict=True):
        ax.scatter(phot["Z"], mp[a] - mp[b], s=1, color="0.8", rasterized=True, label="catalog")
        for name, colour in COLOURS.items():
            rows = in_class(spec, name)
            ax.scatter(
                spec.loc[rows, "Z"], (ms[a] - ms[b])[rows], s=2, color=colour, label=name, rasterized=True
            )
        ax.set_xlabel("true redshift")
        ax.set_ylabel(f"{a} - {b} (noiseless, AB)")
        ax.set_ylim(-0.5, 2.7 if a == "r" else 2.3)
    axes[0].legend(markerscale=5, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_colour_colour(phot: pd.DataFrame, spec: pd.DataFrame, path: Path) -> None:
    import matplotlib.pyplot as plt

    mp, ms = magnitudes(phot), magnitudes(spec)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
    ax = axes[0]
    ax.scatter(mp["r"] - mp["z"], mp["g"] - mp["r"], s=1, color="0.8", rasterized=True, label="catalog")
    for name in ("ELG", "LRG", "BGS"):
        rows = in_class(spec, name)
        ax.scatter((ms["r"] - ms["z"])[rows], (ms["g"] - ms["r"])[rows], s=2, color=COLOURS[name], label=name)
    rz = np.linspace(0.15, 1.6, 50)
    ax.plot(rz, 0.5 * rz + 0.1, "k-", lw=1, label="ELG: g-r < 0.5(r-z)+0.1")
    ax.plot(rz, -1.2 * rz + 1.3, "k--", lw=1, label="LOP: g-r < -1.2(r-z)+1.3")
    ax.plot(rz, -1.2 * rz + 1.6, "k:", lw=1, label="VLO: g-r < -1.2(r-z)+1.6")
    ax.axvline(0.15, color="k", lw=0.7)
    ax.set_xlim(-0.5, 2.5)
    ax.set_ylim(-0.5, 2.3)
    ax.set_xlabel("r - z")
    ax.set_ylabel("g - r")
    ax.legend(markerscale=5, fontsize=7, loc="upper left")
    ax = axes[1]
    ax.scatter(mp["W1"], mp["r"] - mp["W1"], s=1, color="0.8", rasterized=True)
    for name in ("BGS", "ELG", "LRG"):
        rows = in_class(spec, name)
        ax.scatter(ms["W1"][rows], (ms["r"] - ms["W1"])[rows], s=2, color=COLOURS[name], label=name)
    w1 = np.linspace(14, 21.5, 100)
    sliding = np.maximum(1.8 * (w1 - 17.14), w1 - 16.33)
    ax.plot(w1, np.minimum(sliding, 3.3), "k-", lw=1, label="LRG sliding cut (or r-W1 > 3.3)")
    ax.axhline(1.8, color="k", ls="--", lw=1, label="LRG: r-W1 > 1.8 (or g-W1 > 2.9)")
    ax.set_xlim(14, 21.5)
    ax.set_ylim(-1, 5.5)
    ax.set_xlabel("W1 (AB)")
    ax.set_ylabel("r - W1")
    ax.legend(markerscale=5, fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_nz(spec: pd.DataFrame, table: dict, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(12, 3.3))
    bins = np.arange(0, 1.65, 0.05)
    for ax, name in zip(axes, ("BGS", "LRG", "ELG"), strict=True):
        rows = in_class(spec, name)
        density = table["classes"][name]["density"]
        weights = np.full(rows.sum(), density / rows.sum() / 0.05)
        ax.hist(spec.loc[rows, "Z"], bins=bins, weights=weights, color=COLOURS[name], alpha=0.7, label="mock")
        ref = PUBLISHED[name]
        ax.axvspan(*ref["z_range"], color="0.9", zorder=-1, label="DESI range")
        ax.axvline(ref["z_median"], color="k", ls="--", lw=1, label=f"DESI median ~{ref['z_median']}")
        ax.axvline(np.median(spec.loc[rows, "Z"]), color=COLOURS[name], lw=1.5, label="mock median")
        ax.set_title(f"{name}: mock {density:.0f} / DESI {ref['density']} deg$^{{-2}}$", fontsize=10)
        ax.set_xlabel("true redshift")
        ax.legend(fontsize=7)
    axes[0].set_ylabel("dN/dz per deg$^2$")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def rank5_test(mock: Path, truth: pd.DataFrame, n_train: int, rank: int = 5, seed: int = 0) -> pd.DataFrame:
    """Per spectrum: S/N, chi^2 of the noiseless truth and of the best rank-``rank`` fit (see the module
    docstring). Half the targets (``n_train`` at most) give the basis, the other half are fitted."""
    from astropy.io import fits

    from specdiff_catalog.io.desi import ARM_WAVE
    from specdiff_catalog.mock.config import MockConfig
    from specdiff_catalog.mock.spectra import (
        instrument_resolution,
        mw_transmission_spectrum,
        redshift_onto,
        rest_frame_flux,
        rest_wavelength,
    )
    from specdiff_catalog.mock.survey import galaxies_from_truth

    rng = np.random.default_rng(seed)
    good = truth[(truth["COADD_FIBERSTATUS"] == 0)].reset_index(drop=True)
    order = rng.permutation(len(good))
    train, test = good.iloc[order[: min(n_train, len(good) // 2)]], good.iloc[order[len(good) // 2 :]]
    rest_wave = rest_wavelength()
    window = (rest_wave > 3000) & (rest_wave < 6000)
    basis_flux = rest_frame_flux(galaxies_from_truth(train))
    basis_flux /= np.median(basis_flux[:, window], axis=1, keepdims=True)
    basis = np.linalg.svd(basis_flux, full_matrices=False)[2][:rank]  # (rank, R): uncentred, a linear span
    sigma = MockConfig().resolution_sigma_pix
    rows = []
    for file, part in test.groupby("FILE"):
        rest = rest_frame_flux(galaxies_from_truth(part))
        with fits.open(mock / "spectra" / file) as hdul:
            fm = hdul["FIBERMAP"].data
            index = part["ROW"].to_numpy()
            ebv = np.nan_to_num(fm["EBV"][index].astype(float))
            design, data, weight, truth_model = [], [], [], []
            for arm, wave in ARM_WAVE.items():
                up = arm.upper()
                flux = hdul[f"{up}_FLUX"].data[index].astype(float)
                ivar = hdul[f"{up}_IVAR"].data[index].astype(float)
                scale = part["APERTURE"].to_numpy()[:, None] * mw_transmission_spectrum(wave, ebv)
                z = part["Z"].to_numpy()
                model = instrument_resolution(redshift_onto(rest, rest_wave, z, wave) * scale, sigma[arm])
                vectors = [
                    instrument_resolution(
                        redshift_onto(np.tile(b, (len(part), 1)), rest_wave, z, wave) * scale, sigma[arm]
                    )
                    for b in basis
                ]
                design.append(np.stack(vectors, axis=-1))
                data.append(flux)
                weight.append(ivar)
                truth_model.append(model)
            design_all = np.concatenate(design, axis=1)  # (N, P, rank)
            flux_all, ivar_all, model_all = (np.concatenate(x, axis=1) for x in (data, weight, truth_model))
        for i in range(len(part)):
            w = ivar_all[i]
            a = design_all[i] * np.sqrt(w)[:, None]
            coef = np.linalg.lstsq(a, flux_all[i] * np.sqrt(w), rcond=None)[0]
            chi_fit = float(np.sum(w * (flux_all[i] - design_all[i] @ coef) ** 2))
            chi_true = float(np.sum(w * (flux_all[i] - model_all[i]) ** 2))
            npix = int((w > 0).sum())
            snr = float(np.median((model_all[i] * np.sqrt(w))[w > 0]))
            rows.append(
                {
                    "TARGETID": int(part["TARGETID"].iloc[i]),
                    "TARGET_CLASS": part["TARGET_CLASS"].iloc[i],
                    "Z": float(part["Z"].iloc[i]),
                    "snr_per_pixel": snr,
                    "npix": npix,
                    "chi2_truth": chi_true,
                    "chi2_rank": chi_fit,
                }
            )
    return pd.DataFrame(rows)


def rank5_summary(fits_table: pd.DataFrame) -> list[dict]:
    """By S/N bin: n, median chi^2/pixel of the truth and of the rank-5 fit, median dchi^2, and the
    fraction with dchi^2 > 25."""
    edges = [0, 0.5, 1, 2, 5, np.inf]
    out = []
    d = fits_table["chi2_rank"] - fits_table["chi2_truth"]
    for lo, hi in itertools.pairwise(edges):
        rows = (fits_table["snr_per_pixel"] >= lo) & (fits_table["snr_per_pixel"] < hi)
        if not rows.any():
            continue
        t = fits_table[rows]
        out.append(
            {
                "snr_bin": f"{lo}-{hi}",
                "n": int(rows.sum()),
                "chi2_per_pixel_truth": round(float(np.median(t["chi2_truth"] / t["npix"])), 4),
                "chi2_per_pixel_rank5": round(float(np.median(t["chi2_rank"] / t["npix"])), 4),
                "median_dchi2": round(float(np.median(d[rows])), 1),
                "fraction_dchi2_above_25": round(float((d[rows] > 25).mean()), 3),
            }
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mock", required=True, type=Path)
    parser.add_argument("--img", type=Path, help="directory for the PNGs")
    parser.add_argument("--json", type=Path, help="write the numbers here")
    parser.add_argument("--rank-train", type=int, default=1000, help="spectra that give the rank-5 basis")
    args = parser.parse_args()
    spec = pd.read_parquet(args.mock / "truth" / "spectroscopic.parquet")
    phot = pd.read_parquet(args.mock / "truth" / "photometric.parquet")
    result = summary_table(args.mock, spec)
    fits_table = rank5_test(args.mock, spec, args.rank_train)
    result["rank5_by_snr"] = rank5_summary(fits_table)
    result["rank5_all"] = rank5_summary(fits_table.assign(snr_per_pixel=1.0))[0] | {"snr_bin": "all"}
    if args.img:
        import matplotlib

        matplotlib.use("Agg")
        args.img.mkdir(parents=True, exist_ok=True)
        plot_colour_redshift(phot, spec, args.img / "mock_colour_redshift.png")
        plot_colour_colour(phot, spec, args.img / "mock_colour_colour.png")
        plot_nz(spec, result, args.img / "mock_nz.png")
    text = json.dumps(result, indent=1, default=str)
    print(text)
    if args.json:
        args.json.write_text(text)


if __name__ == "__main__":
    main()
