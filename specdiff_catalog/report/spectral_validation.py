"""Spectra from photometry against observed spectra: chi^2, stacked residuals, Dn4000 vs S/N.

For galaxies that have a DESI spectrum, ``validate_spectra`` does what a user of the
catalog would: it predicts from the FIBERMAP photometry alone (``inference.predict``),
decodes the predicted latent into a rest-frame spectrum and compares it with the
observed coadd (as the paper validates them; Dn4000 as in docs/metrics.md):

- chi^2 per pixel with the observed ivar after fitting a free amplitude A (closed form,
  A = sum(w f m) / sum(w m^2)), with the reconstruction placed at the spectroscopic
  redshift (the spectral shape alone) and at the photo-z median (what a photometric
  user gets); chi^2 per pixel = chi^2 / (n_pix - 1);
- residuals (f - A m) / A, in units of the normalised model, stacked over objects in
  rest-frame wavelength bins, next to the noise level (1 / (A sqrt(ivar))) and the mean
  ivar-weighted chi^2 of each bin;
- Dn4000 of the reconstruction against Dn4000 of the observed spectrum (rest frame at
  the spectroscopic z), as a function of the spectrum's S/N per pixel around 4000 A.

With the truth of a mock survey (``truth=DIR/truth``) the noiseless true spectrum of
each galaxy (``mock.spectra.rest_frame_flux`` of its SPS parameters) gives the floor: the chi^2 of the truth
itself against the data, its Dn4000, and the rms fractional difference between the
reconstruction and the truth over the observed rest range.

Files are processed one at a time; only per-object numbers, the stack accumulators and
a few example spectra are kept, so memory does not grow with the number of files.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from specdiff_catalog import defaults, spectral
from specdiff_catalog.io.desi import read_coadd, read_redrock, redrock_path_for
from specdiff_catalog.selection import SpectroSelection, select

if TYPE_CHECKING:
    from specdiff_catalog.models import SpecdiffModel

SNR_EDGES = (0.0, 0.5, 1.0, 2.0, 4.0, 8.0, np.inf)
"""Bins of the median per-pixel S/N (0.8 A pixels) of the observed spectrum."""
HIGH_SNR = 2.0
"""Median per-pixel S/N over rest 3850-4100 A above which an object counts as high S/N for Dn4000."""
DN4000_WINDOW = (spectral.DN4000_BLUE[0], spectral.DN4000_RED[1])
STACK_STEP = 20.0  # Angstrom, rest-frame bins of the residual stack
NMAD_SCALE = 1.4826


@dataclass
class Examples:
    """A few objects' spectra for plots, on the observed grid ``wave`` (P,) Angstrom.

    flux, ivar: (k, P) observed (de-reddened when the model is); model: (k, P) the
    reconstruction at z_spec times its fitted amplitude (NaN outside its rest range);
    truth: (k, P) the noiseless truth times its amplitude (NaN without truth);
    table: the objects' rows of the per-object table.
    """

    wave: np.ndarray
    flux: np.ndarray
    ivar: np.ndarray
    model: np.ndarray
    truth: np.ndarray
    table: pd.DataFrame


@dataclass
class SpectralValidation:
    """Per-object comparison (``objects``), the rest-frame residual stack (``stack``), examples, info.

    objects: one row per compared spectrum: targetid, file, z_spec, z_median, z_mode,
        flags (photometric ``Flag`` bits), snr (median per-pixel S/N), snr_4000 (the same
        over rest 3850-4100 A), n_pix, amplitude, chi2_pix (reconstruction at z_spec),
        chi2_pix_zphot (at z_median), chi2_pix_truth (the noiseless truth: the floor),
        dn4000_obs, dn4000_obs_err (its noise from the ivar, ``dn4000_error``), dn4000_rec,
        dn4000_true, rms_frac_true (rms of rec / truth - 1).
    stack: one row per rest-frame bin: wave_lo, wave_hi, n (pixels), mean_residual,
        rms_residual, rms_noise (all in units of the normalised spectrum), chi2_pix, and
        with truth chi2_pix_truth (the noiseless truth's chi^2 per pixel in the bin: the floor).
    """

    objects: pd.DataFrame
    stack: pd.DataFrame
    examples: Examples | None
    info: dict[str, Any] = field(default_factory=dict)

    def chi2_by_snr(self, edges: tuple[float, ...] = SNR_EDGES) -> pd.DataFrame:
        """Mean and median chi^2 per pixel (at z_spec, at z_photo, of the truth) per S/N bin."""
        frame = self.objects.assign(snr_bin=pd.cut(self.objects["snr"], list(edges), right=False))
        grouped = frame.groupby("snr_bin", observed=True)
        table = grouped.agg(
            n=("chi2_pix", "count"),
            chi2_pix_mean=("chi2_pix", "mean"),
            chi2_pix_median=("chi2_pix", "median"),
            chi2_pix_zphot_mean=("chi2_pix_zphot", "mean"),
            chi2_pix_truth_mean=("chi2_pix_truth", "mean"),
            snr_median=("snr", "median"),
        )
        return table.reset_index().assign(snr_bin=lambda t: t["snr_bin"].astype(str))

    def dn4000_by_snr(self, edges: tuple[float, ...] = SNR_EDGES) -> pd.DataFrame:
        """Per bin of snr_4000: n, median and NMAD scatter of dn4000_rec - dn4000_obs (and of rec - true)."""
        frame = self.objects.assign(snr_bin=pd.cut(self.objects["snr_4000"], list(edges), right=False))
        rows = [{"snr_bin": str(b), **_agreement(g)} for b, g in frame.groupby("snr_bin", observed=True)]
        return pd.DataFrame(rows)

    def summary(self, high_snr: float = HIGH_SNR) -> dict[str, Any]:
        """The headline numbers: chi^2 per pixel overall and per S/N bin, Dn4000 agreement of
        high-S/N objects (snr_4000 >= high_snr), the residual stack's rms against the noise."""
        obj = self.objects
        stack = self.stack[self.stack["n"] > 0]
        high = obj[obj["snr_4000"] >= high_snr]
        return {
            "n_objects": len(obj),
            "chi2_pix_mean": _float(obj["chi2_pix"].mean()),
            "chi2_pix_median": _float(obj["chi2_pix"].median()),
            "chi2_pix_zphot_mean": _float(obj["chi2_pix_zphot"].mean()),
            "chi2_pix_truth_mean": _float(obj["chi2_pix_truth"].mean()),
            "chi2_by_snr": _records(self.chi2_by_snr()),
            "dn4000_high_snr": {"snr_4000_min": high_snr, **_agreement(high)},
            "dn4000_by_snr": _records(self.dn4000_by_snr()),
            "stack_rms_residual_over_noise": _float(
                np.sqrt(
                    (stack["rms_residual"] ** 2 * stack["n"]).sum()
                    / (stack["rms_noise"] ** 2 * stack["n"]).sum()
                )
            ),
            "stack_chi2_pix": _float((stack["chi2_pix"] * stack["n"]).sum() / stack["n"].sum()),
            **self.info,
        }


def _float(value: Any) -> float | None:
    value = float(value)
    return value if np.isfinite(value) else None


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return [
        {k: (_float(v) if isinstance(v, (float, np.floating)) else v) for k, v in row.items()}
        for row in frame.to_dict(orient="records")
    ]


def _nmad(x: np.ndarray) -> float:
    x = x[np.isfinite(x)]
    return float(NMAD_SCALE * np.median(np.abs(x - np.median(x)))) if x.size else np.nan


def _agreement(rows: pd.DataFrame) -> dict[str, Any]:
    """n, median, NMAD and std of dn4000_rec - dn4000_obs; median and NMAD of rec - true and obs - true."""
    d = (rows["dn4000_rec"] - rows["dn4000_obs"]).to_numpy()
    d = d[np.isfinite(d)]
    out = {
        "n": int(d.size),
        "median_diff": _float(np.median(d)) if d.size else None,
        "nmad": _float(_nmad(d)),
        "std": _float(np.std(d)) if d.size else None,
        "median_obs_err": _float(rows["dn4000_obs_err"].median()) if len(rows) else None,
    }
    for name, other in (("rec_true", "dn4000_rec"), ("obs_true", "dn4000_obs")):
        t = (rows[other] - rows["dn4000_true"]).to_numpy()
        t = t[np.isfinite(t)]
        out[f"median_diff_{name}"] = _float(np.median(t)) if t.size else None
        out[f"nmad_{name}"] = _float(_nmad(t))
    return out


# --- the comparison of one batch of spectra -------------------------------------------------


def fit_amplitude(
    flux: np.ndarray, ivar: np.ndarray, model: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Free normalisation of model (N, P) to flux (N, P) with weights ivar (N, P).

    Pixels count where ivar > 0 and the model is finite. Returns the amplitude
    A = sum(ivar f m) / sum(ivar m^2) (N,), chi^2 = sum ivar (f - A m)^2 (N,) and the
    number of pixels (N,); NaN where no pixel counts.
    """
    w = np.where(np.isfinite(model) & (ivar > 0), ivar, 0.0).astype(np.float64)
    m = np.where(w > 0, model, 0.0).astype(np.float64)
    f = np.where(w > 0, flux, 0.0).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        amplitude = (w * f * m).sum(axis=1) / (w * m * m).sum(axis=1)
        chi2 = (w * (f - amplitude[:, None] * m) ** 2).sum(axis=1)
    n = (w > 0).sum(axis=1)
    bad = n == 0
    return np.where(bad, np.nan, amplitude), np.where(bad, np.nan, chi2), n


def _chi2_pix(chi2: np.ndarray, n: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 1, chi2 / (n - 1), np.nan)


def dn4000_error(wave_rest: np.ndarray, flux: np.ndarray, ivar: np.ndarray) -> np.ndarray:
    """(N,) 1-sigma noise of Dn4000 from the pixel ivar: the two band means of F_nu = lambda^2 F_lambda
    taken as plain averages of their valid pixels, errors propagated to the ratio (first order).

    wave_rest: (N, P) rest-frame Angstrom; flux, ivar: (N, P). NaN where a band has no valid pixel.
    """
    f_nu = flux * wave_rest**2
    with np.errstate(invalid="ignore", divide="ignore"):
        var_nu = np.where(ivar > 0, wave_rest**4 / ivar, 0.0)
        parts = []
        for lo, hi in (spectral.DN4000_RED, spectral.DN4000_BLUE):
            use = (ivar > 0) & (wave_rest >= lo) & (wave_rest <= hi)
            n = use.sum(axis=1)
            mean = np.where(use, f_nu, 0.0).sum(axis=1) / n
            parts.append((mean, np.sqrt(np.where(use, var_nu, 0.0).sum(axis=1)) / n))
        (red, s_red), (blue, s_blue) = parts
        return np.abs(red / blue) * np.sqrt((s_red / red) ** 2 + (s_blue / blue) ** 2)


def median_snr(flux: np.ndarray, ivar: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """(N,) median of flux sqrt(ivar) over pixels with ivar > 0 (and ``mask``); NaN when none."""
    use = ivar > 0 if mask is None else (ivar > 0) & mask
    values = np.where(use, flux * np.sqrt(np.clip(ivar, 0, None)), np.nan)
    out = np.full(len(flux), np.nan)
    rows = use.any(axis=1)
    out[rows] = np.nanmedian(values[rows], axis=1)
    return out


class _Stack:
    """Accumulates residuals in rest-frame bins: sums of r, r^2, sigma^2, chi^2 and counts."""

    def __init__(self, lo: float, hi: float, step: float):
        self.edges = np.arange(lo, hi + step, step)
        self.sums = np.zeros((5, self.edges.size - 1))

    def add(
        self, wave_rest: np.ndarray, flux: np.ndarray, ivar: np.ndarray, model: np.ndarray, amp: np.ndarray
    ):
        """wave_rest (N, P); flux, ivar, model (N, P); amp (N,): residual (f - A m) / A of usable pixels."""
        use = (ivar > 0) & np.isfinite(model) & np.isfinite(amp)[:, None] & (amp > 0)[:, None]
        a = np.broadcast_to(amp[:, None], flux.shape)[use]
        r = (flux[use] - a * model[use]) / a
        sigma2 = 1.0 / (ivar[use] * a * a)
        idx = np.searchsorted(self.edges, wave_rest[use], side="right") - 1
        ok = (idx >= 0) & (idx < self.edges.size - 1)
        for k, values in enumerate((np.ones_like(r), r, r * r, sigma2, r * r / sigma2)):
            self.sums[k] += np.bincount(idx[ok], weights=values[ok], minlength=self.edges.size - 1)

    def table(self) -> pd.DataFrame:
        n, s1, s2, noise, chi2 = self.sums
        with np.errstate(invalid="ignore", divide="ignore"):
            return pd.DataFrame(
                {
                    "wave_lo": self.edges[:-1],
                    "wave_hi": self.edges[1:],
                    "n": n.astype(np.int64),
                    "mean_residual": s1 / n,
                    "rms_residual": np.sqrt(s2 / n),
                    "rms_noise": np.sqrt(noise / n),
                    "chi2_pix": chi2 / n,
                }
            )


@dataclass
class _Truth:
    """The mock's spectroscopic truth table, indexed by TARGETID."""

    table: pd.DataFrame

    @classmethod
    def open(cls, truth_dir: str | Path) -> _Truth:
        from specdiff_catalog.extras import require

        require("mock", "the spectral validation against a mock's noiseless truth (--spectra-truth)")
        path = Path(truth_dir) / "spectroscopic.parquet"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no mock truth table (expected DIR/truth/spectroscopic.parquet)")
        return cls(pd.read_parquet(path).set_index("TARGETID"))

    def rest_spectra(self, targetid: np.ndarray, wave_rest: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Noiseless rest-frame spectra (N, L) on wave_rest (NaN rows for unknown ids) and true z (N,)."""
        from specdiff_catalog.mock.spectra import redshift_onto, rest_frame_flux, rest_wavelength
        from specdiff_catalog.mock.survey import galaxies_from_truth

        rows = self.table.reindex(targetid)
        known = rows["Z"].notna().to_numpy()
        flux = np.full((len(targetid), wave_rest.size), np.nan)
        if known.any():  # re-synthesised from the truth's SPS parameters, then sampled at wave_rest
            galaxies = galaxies_from_truth(rows.loc[known])
            flux[known] = redshift_onto(
                rest_frame_flux(galaxies), rest_wavelength(), np.zeros(len(galaxies)), wave_rest
            )
        return flux, rows["Z"].to_numpy(dtype=np.float64)


def _compare_file(
    path: Path, model: SpecdiffModel, truth: _Truth | None, stacks: dict[str, _Stack], options: dict[str, Any]
):
    """Per-object rows (DataFrame) and the arrays kept for examples, for one coadd file."""
    from specdiff_catalog.inference import predict
    from specdiff_catalog.models.autoencoder import redshift_spectra
    from specdiff_catalog.reconstruct import decode

    coadd = read_coadd(path)
    chosen = select(coadd, read_redrock(redrock_path_for(path)), options["selection"])
    keep = np.flatnonzero(chosen.keep)
    if options["max_per_file"] is not None:
        keep = keep[: options["max_per_file"]]
    if keep.size == 0:
        return None, None
    table = chosen.table.iloc[keep].reset_index(drop=True)
    targetid = table["TARGETID"].to_numpy(np.int64)
    flux, ivar = spectral.clean(coadd.flux[keep], coadd.ivar[keep])
    wave = coadd.wave
    autoencoder, bands = model.autoencoder, model.bands
    if autoencoder is None or bands is None:
        raise ValueError(f"{model.path}: spectral validation needs a trained autoencoder and band set")
    if autoencoder.config.deredden:  # compare intrinsic spectra with intrinsic spectra
        flux, ivar, _ = spectral.deredden(wave, flux, ivar, table[bands.ebv_column].to_numpy(np.float64))
    pred = predict(model, table, targetid, n_samples=options["n_samples"], seed=options["seed"])
    wave_rest = autoencoder.rest_wave()
    rest = decode(autoencoder, pred.summaries["latent"]).astype(np.float64)
    z_spec = table["Z"].to_numpy(np.float64)
    z_median = pred.summaries["z_median"].astype(np.float64)
    model_spec = redshift_spectra(wave_rest, rest, z_spec, wave)
    amp, chi2, n_pix = fit_amplitude(flux, ivar, model_spec)
    _, chi2_z, n_z = fit_amplitude(
        flux, ivar, redshift_spectra(wave_rest, rest, np.nan_to_num(z_median), wave)
    )
    rest_obs = wave[None, :] / (1.0 + z_spec[:, None])
    stacks["model"].add(rest_obs, flux, ivar, model_spec, amp)
    rows = pd.DataFrame(
        {
            "targetid": targetid,
            "file": path.name,
            "z_spec": z_spec,
            "z_median": z_median,
            "z_mode": pred.summaries["z_mode"],
            "flags": pred.flags,
            "snr": median_snr(flux, ivar),
            "snr_4000": median_snr(
                flux, ivar, (rest_obs >= DN4000_WINDOW[0]) & (rest_obs <= DN4000_WINDOW[1])
            ),
            "n_pix": n_pix,
            "amplitude": amp,
            "chi2_pix": _chi2_pix(chi2, n_pix),
            "chi2_pix_zphot": np.where(np.isfinite(z_median), _chi2_pix(chi2_z, n_z), np.nan),
            "dn4000_obs": spectral.dn4000(rest_obs, flux, ivar),
            "dn4000_obs_err": dn4000_error(rest_obs, flux, ivar),
            "dn4000_rec": spectral.dn4000(wave_rest, rest),
        }
    )
    truth_obs = np.full_like(model_spec, np.nan)
    rows["chi2_pix_truth"] = rows["dn4000_true"] = rows["rms_frac_true"] = np.nan
    if truth is not None:
        true_rest, z_true = truth.rest_spectra(targetid, wave_rest)
        truth_obs = redshift_spectra(wave_rest, true_rest, np.nan_to_num(z_true), wave)
        if not autoencoder.config.deredden:
            truth_obs = truth_obs * spectral.mw_transmission(
                wave, table[bands.ebv_column].to_numpy(np.float64)
            )
        t_amp, t_chi2, t_n = fit_amplitude(flux, ivar, truth_obs)
        stacks["truth"].add(rest_obs, flux, ivar, truth_obs, t_amp)
        truth_obs = truth_obs * t_amp[:, None]
        rows["chi2_pix_truth"] = _chi2_pix(t_chi2, t_n)
        rows["dn4000_true"] = spectral.dn4000(wave_rest, true_rest)
        rows["rms_frac_true"] = _rms_fraction(
            wave_rest, rest, true_rest, wave[0] / (1 + z_spec), wave[-1] / (1 + z_spec)
        )
    return rows, (wave, flux, ivar, model_spec * amp[:, None], truth_obs)


def _rms_fraction(
    wave_rest: np.ndarray, rec: np.ndarray, true: np.ndarray, lo: np.ndarray, hi: np.ndarray
) -> np.ndarray:
    """(N,) rms of rec / (B true) - 1 over lo..hi (N,) rest Angstrom, B the least-squares scale of
    true to rec."""
    inside = (
        (wave_rest[None, :] >= lo[:, None])
        & (wave_rest[None, :] <= hi[:, None])
        & np.isfinite(rec)
        & np.isfinite(true)
    )
    r, t = np.where(inside, rec, 0.0), np.where(inside, true, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        scale = (r * t).sum(axis=1) / (t * t).sum(axis=1)
        frac = np.where(inside, r / (scale[:, None] * t) - 1.0, 0.0)
        return np.sqrt((frac**2).sum(axis=1) / inside.sum(axis=1))


def coadd_files(desi: str | Path | list[str | Path]) -> list[Path]:
    """coadd-*.fits files: the given list, or every one under a directory (sorted)."""
    if isinstance(desi, (str, Path)):
        root = Path(desi)
        files = sorted(root.rglob("coadd-*.fits*")) if root.is_dir() else [root]
    else:
        files = [Path(p) for p in desi]
    if not files:
        raise FileNotFoundError(f"{desi}: no coadd-*.fits files")
    return files


def validate_spectra(
    desi: str | Path | list[str | Path],
    model: SpecdiffModel | str | Path,
    *,
    truth: str | Path | None = None,
    max_objects: int | None = None,
    n_samples: int = defaults.N_SAMPLES,
    seed: int = defaults.SEED,
    n_examples: int = 12,
) -> SpectralValidation:
    """Compare spectra predicted from photometry with the observed DESI spectra of the same galaxies.

    desi: a directory (searched for coadd-*.fits, each with its redrock file) or a list
    of coadd files; model: a loaded ``SpecdiffModel`` with autoencoder and diffusion (or
    a model directory); truth: the mock's truth directory (DIR/truth), for the noiseless
    comparison; max_objects: stop after this many spectra (files in order); n_samples,
    seed: of the diffusion prediction; n_examples: spectra kept for plots, spread over S/N.
    Spectra are selected as for training (``selection.select``: ZWARN = 0, GALAXY,
    fibre status 0) inside the model's redshift range.
    """
    from specdiff_catalog.models import load_model

    start = time.perf_counter()
    if isinstance(model, str | Path):
        model = load_model(model)
    if model.autoencoder is None or model.diffusion is None:
        raise ValueError(
            f"{model.path}: spectral validation needs a model with an autoencoder and a diffusion model"
        )
    z_lo, z_hi = (float(v) for v in model.autoencoder.z_range.tolist())
    wave_rest = model.autoencoder.rest_wave()
    lo = float(np.floor(wave_rest[0] / STACK_STEP) * STACK_STEP)
    stacks = {name: _Stack(lo, float(wave_rest[-1]), STACK_STEP) for name in ("model", "truth")}
    truth_table = _Truth.open(truth) if truth is not None else None
    options: dict[str, Any] = {
        "selection": SpectroSelection(z_min=z_lo, z_max=z_hi),
        "n_samples": n_samples,
        "seed": seed,
        "max_per_file": None,
    }
    parts: list[pd.DataFrame] = []
    kept = []
    files = coadd_files(desi)
    for path in files:
        if max_objects is not None:
            options["max_per_file"] = max_objects - sum(len(p) for p in parts)
            if options["max_per_file"] <= 0:
                break
        rows, arrays = _compare_file(path, model, truth_table, stacks, options)
        if rows is not None:
            parts.append(rows)
            kept.append(_pick_examples(rows, arrays, n_examples))
    if not parts:
        raise ValueError(
            f"{desi}: no spectrum passed the selection (ZWARN = 0, GALAXY, {z_lo:g} <= z < {z_hi:g})"
        )
    objects = pd.concat(parts, ignore_index=True)
    info = {
        "files": len(files),
        "model": str(model.path),
        "truth": str(truth) if truth else None,
        "n_samples": n_samples,
        "seed": seed,
        "seconds": round(time.perf_counter() - start, 1),
    }
    stack = stacks["model"].table()
    if truth_table is not None:
        stack["chi2_pix_truth"] = stacks["truth"].table()["chi2_pix"]
    return SpectralValidation(
        objects=objects, stack=stack, examples=_merge_examples(kept, n_examples), info=info
    )


def _pick_examples(rows: pd.DataFrame, arrays, n: int):
    """Up to n objects of a file spread evenly in S/N, with their spectra."""
    order = np.argsort(rows["snr"].to_numpy())
    order = order[np.isfinite(rows["chi2_pix"].to_numpy()[order])]
    pick = (
        order[np.unique(np.linspace(0, order.size - 1, min(n, order.size)).round().astype(int))]
        if order.size
        else order
    )
    wave, *spectra = arrays
    return rows.iloc[pick].reset_index(drop=True), wave, [s[pick] for s in spectra]


def _merge_examples(kept, n: int) -> Examples | None:
    """The n examples spread in S/N over all files' candidates."""
    kept = [k for k in kept if len(k[0])]
    if not kept:
        return None
    table = pd.concat([k[0] for k in kept], ignore_index=True)
    arrays = [np.concatenate([k[2][i] for k in kept]) for i in range(4)]
    order = np.argsort(table["snr"].to_numpy())
    pick = order[np.unique(np.linspace(0, order.size - 1, min(n, order.size)).round().astype(int))]
    return Examples(
        wave=kept[0][1],
        flux=arrays[0][pick],
        ivar=arrays[1][pick],
        model=arrays[2][pick],
        truth=arrays[3][pick],
        table=table.iloc[pick].reset_index(drop=True),
    )
