"""Photo-z validation of a ``run`` store against true redshifts: diffusion vs the tree baseline.

``evaluate_store(STORE, TRUTH)`` joins the store's objects (``object_id``) to a truth
table (OBJECT_ID, Z), runs the model directory's baseline on the same objects (read
from the store's input catalog through ``io.catalog``) and scores both with
``metrics.photoz_table``: over all objects, per r-band magnitude bin and per bin of each
method's own z_phot. The diffusion PDFs are the store's ``z_samples`` when the run kept
them (``--save-samples K``), else draws from its quantiles (a coarser approximation,
named in ``pdf_source``). The result carries the per-object values too, for plots.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from specdiff_catalog import defaults
from specdiff_catalog.bands import resolve_columns
from specdiff_catalog.features import photometric_features
from specdiff_catalog.io.catalog import open_catalog, read_objects
from specdiff_catalog.io.store import open_store
from specdiff_catalog.metrics import crps, photoz_table, pit, stacked_nz
from specdiff_catalog.summaries import SampleCountWarning, sample_count_note

MAG_EDGES = (10.0, 19.0, 20.0, 21.0, 21.5, 22.0, 22.5, 30.0)
ZPHOT_EDGES = (-0.1, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 1.0, 1.2, 1.4, 1.6, 2.0)  # to z 1.6 (DESI ELGs)
COVERAGE_EDGES = (0.0, 0.01, 0.1, 1.0 + 1e-6)  # [0, 0.01) is LOW_COVERAGE (docs/coverage.md)
CHECK_COLUMNS = ("coverage", "ppc_chi2", "ppc_dof", "ppc_pvalue")  # carried into objects when stored
QUANTILE_DRAWS = 100  # pseudo-samples per object when only quantiles are stored
SUMMARY_METRICS = (
    "n",
    "bias",
    "sigma_nmad",
    "eta_015",
    "eta_lsst",
    "crps",
    "pit_ks",
    "pit_outlier_rate",
    "coverage_68",
    "coverage_95",
)


@dataclass
class EvaluationResult:
    """Metrics of the store's photo-z (``diffusion``) and the baseline on the same objects.

    table: one row per method and bin: ``binning`` ("all", "mag_r" (the mag_band), "z_phot",
        and "coverage" (the coverage score) when the store has it), ``bin`` label, ``bin_lo``,
        ``bin_hi``, then the ``metrics.photoz_table`` columns.
    objects: one row per scored object: object_id, z_true, mag_r (de-reddened asinh
        magnitude), the first colour of the band set (e.g. g-r), flags, the stored checks
        (coverage, ppc_chi2, ppc_dof, ppc_pvalue) when present, and per method z_phot_<m>,
        pit_<m>, crps_<m>.
    samples: method -> (N, K) redshift samples the PDF metrics used (rows as ``objects``).
    pdf_source: where the diffusion PDFs came from (stored samples or quantiles).
    info: paths, model, counts of matched / unmatched objects, the simulated-model note, the
        too-few-samples note (``sample_count_note``, None when K resolves every level).
    nz: per method and bin of its own z_phot, the true N(z) against the stack of the PDFs
        (``metrics.stacked_nz``: n, means, delta_mean, widths), column ``method`` first.
    """

    table: pd.DataFrame
    objects: pd.DataFrame
    samples: dict[str, np.ndarray]
    pdf_source: str
    info: dict[str, Any] = field(default_factory=dict)
    nz: pd.DataFrame = field(default_factory=pd.DataFrame)

    def summary(self, binning: str = "all") -> pd.DataFrame:
        """Metrics x methods (binning "all"), or bins x (metric, method) for a binning."""
        rows = self.table[self.table["binning"] == binning]
        if binning == "all":
            return rows.set_index("method")[list(SUMMARY_METRICS)].T
        metrics, methods = list(SUMMARY_METRICS[:7]), list(dict.fromkeys(rows["method"]))
        wide = rows.pivot(index="bin", columns="method", values=metrics)
        order = rows.drop_duplicates("bin").sort_values("bin_lo")["bin"]
        return wide.loc[order, pd.MultiIndex.from_product([metrics, methods])]

    def format(self) -> str:
        """The text report ``evaluate`` prints."""
        info = self.info
        lines = [
            f"{info['store']}: {info['n_matched']} objects with a true redshift "
            f"({info['n_store']} in the store, {info['n_truth']} in the truth table)",
            f"diffusion PDFs from {self.pdf_source}; baseline: {info['baseline_model']}",
        ]
        if info.get("n_left_out"):
            lines.append(
                f"partial: {info['n_left_out']} objects of failed or pending partitions are left out"
            )
        if info.get("simulated_note"):
            lines.append(info["simulated_note"])
        if info.get("sample_count_note"):
            lines.append(f"warning: {info['sample_count_note']}")
        with pd.option_context("display.width", 200, "display.max_columns", 30):
            lines += ["", "all objects:", display_frame(self.summary("all"), ".4f").to_string()]
            for binning in self.table["binning"].drop_duplicates():
                if binning != "all":
                    what = "each method's own z_phot (PDF median)" if binning == "z_phot" else binning
                    lines += [
                        "",
                        f"per bin of {what}:",
                        display_frame(self.summary(binning), ".4f").to_string(),
                    ]
            if len(self.nz):
                lines += [
                    "",
                    "N(z) per bin of each method's own z_phot: true redshifts vs the stack of the PDFs:",
                    display_frame(self.nz.drop(columns=["bin_lo", "bin_hi"]), ".4f").to_string(index=False),
                ]
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        """JSON-ready: info, pdf_source, the table's and the N(z) table's records (NaN -> null)."""

        def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
            return frame.astype(object).where(frame.notna(), None).to_dict(orient="records")

        return {
            "info": self.info,
            "pdf_source": self.pdf_source,
            "metrics": records(self.table),
            "nz": records(self.nz),
        }

    def write_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_json(), indent=1, default=_json_default))


def display_frame(frame: pd.DataFrame, number_format: str = ".4g") -> pd.DataFrame:
    """``frame`` as strings for printing: counts (a row or column named ``n`` or ``n_*``) as
    integers, other numbers with ``number_format``, NaN as "-", anything else as it is."""

    def is_count(label: Any) -> bool:
        return any(str(part) == "n" or str(part).startswith("n_") for part in np.atleast_1d(label))

    def cell(value: Any, count: bool) -> str:
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.number)):
            return str(value)
        if not np.isfinite(value):
            return "-"
        if count or isinstance(value, (int, np.integer)):
            return f"{round(float(value)):d}"
        return format(float(value), number_format)

    out = pd.DataFrame(index=frame.index, columns=frame.columns, dtype=object)
    for j, column in enumerate(frame.columns):
        for i, row in enumerate(frame.index):
            out.iat[i, j] = cell(frame.iat[i, j], is_count(row) or is_count(column))
    return out


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


# --- reading -------------------------------------------------------------------------------


def read_store_columns(
    path: str | Path, names: list[str], *, partial: bool = False
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The named per-object arrays of an output store (read-only) at its object rows of done
    partitions, and its attrs. Raises ``io.store.NotDoneError`` naming the failed or pending
    partitions unless ``partial`` (then their objects are left out)."""
    store = open_store(path, mode="r")
    store.require_done(partial=partial)
    return store.read_results(names), store.attrs


def read_truth(path: str | Path) -> pd.DataFrame:
    """OBJECT_ID (int64) and Z of a truth Parquet file (names matched case-insensitively)."""
    frame = pd.read_parquet(path)
    found = resolve_columns(list(frame.columns), ["OBJECT_ID", "Z"])
    missing = {"OBJECT_ID", "Z"} - set(found)
    if missing:
        raise KeyError(f"{path}: no {' or '.join(sorted(missing))} column (has {list(frame.columns)})")
    return pd.DataFrame(
        {
            "object_id": frame[found["OBJECT_ID"]].to_numpy(np.int64),
            "z_true": frame[found["Z"]].to_numpy(np.float64),
        }
    )


def read_catalog_photometry(catalog_path: str | Path, bands, id_column: str | None = None) -> pd.DataFrame:
    """Every row of a catalog: the band set's columns plus ``object_id`` (as ``run`` computes it)."""
    catalog = open_catalog(catalog_path)
    required = [c for b in bands.bands for c in (b.flux, b.ivar)]
    optional = [b.mw_transmission for b in bands.bands] + [bands.ebv_column]
    frames = []
    for partition in catalog.partitions:
        table, ids = read_objects(partition, required, optional=optional, id_column=id_column)
        frames.append(table.assign(object_id=ids))
    return pd.concat(frames, ignore_index=True)


def _check_unique_ids(ids: pd.Series, where: str) -> None:
    """ValueError naming the ids that occur more than once in ``where``."""
    repeated = ids[ids.duplicated()].unique()
    if repeated.size:
        shown = ", ".join(map(str, repeated[:5])) + (" ..." if repeated.size > 5 else "")
        raise ValueError(f"{where}: {repeated.size} object id(s) occur more than once: {shown}")


def quantile_draws(levels: np.ndarray, quantiles: np.ndarray, n: int = QUANTILE_DRAWS) -> np.ndarray:
    """(N, n) pseudo-samples from stored quantiles: the piecewise-linear quantile function
    through (levels, quantiles) at u = (k + 1/2)/n, constant beyond the outermost levels
    (so the tails are cut at them). Rows with NaN quantiles give NaN."""
    u = (np.arange(n) + 0.5) / n
    q = np.sort(np.asarray(quantiles, dtype=np.float64), axis=1)
    out = np.stack([np.interp(u, levels, row) for row in np.nan_to_num(q)]) if len(q) else np.zeros((0, n))
    out[~np.isfinite(q).all(axis=1)] = np.nan
    return out


def _sample_count_note(attrs: dict[str, Any]) -> str | None:
    """``summaries.sample_count_note`` for the run that wrote a store (None when not recorded)."""
    n_samples, levels = (attrs.get("config") or {}).get("n_samples"), attrs.get("quantile_levels")
    return sample_count_note(levels, int(n_samples)) if n_samples and levels else None


# --- evaluation ----------------------------------------------------------------------------


def evaluate_store(
    store: str | Path,
    truth: str | Path,
    model: str | Path | None = None,
    *,
    seed: int = defaults.SEED,
    mag_band: str = "r",
    mag_edges: tuple[float, ...] = MAG_EDGES,
    zphot_edges: tuple[float, ...] = ZPHOT_EDGES,
    partial: bool = False,
) -> EvaluationResult:
    """Score the store's photo-z against ``truth`` side by side with the model's baseline.

    store: a ``run`` output; truth: Parquet with OBJECT_ID and Z; model: the model
    directory whose baseline to run (default: the one that wrote the store, from its
    ``model_path`` attribute). The baseline sees the same objects, read from the store's
    ``input`` catalog, and draws as many samples as the store kept (100 without
    ``z_samples``). seed: of the baseline's draws and of PIT ties. mag_band: the band
    of the magnitude bins. A store with failed or pending partitions raises
    ``io.store.NotDoneError`` naming them, unless ``partial``: then the done partitions are
    scored and ``info["n_left_out"]`` counts the objects left out. Warns
    (``summaries.SampleCountWarning``, also in ``info["sample_count_note"]``) when the run's
    samples per object are too few for its quantile levels.
    """
    from specdiff_catalog.models import load_model, simulation_notice

    opened = open_store(store, mode="r")
    left_out = opened.require_done(partial=partial)
    columns = opened.read_results(
        ["object_id", "flags", "z_median", "z_quantiles", "z_samples", *CHECK_COLUMNS]
    )
    attrs = opened.attrs
    sample_note = _sample_count_note(attrs)
    if sample_note:
        warnings.warn(sample_note, SampleCountWarning, stacklevel=2)
    truth_table = read_truth(truth)
    model_dir = Path(model) if model is not None else Path(attrs["model_path"])
    loaded = load_model(model_dir, notice=False)  # the note is part of the printed report
    if loaded.baseline is None:
        raise ValueError(
            f"{model_dir}: the model has no baseline to compare with (train one with `train baseline`, "
            "or pass --model with a model directory that has one)"
        )
    bands = loaded.bands
    if bands is None:
        raise ValueError(f"{model_dir}: the model records no band set")
    store_frame = pd.DataFrame(
        {"object_id": columns["object_id"], "row": np.arange(len(columns["object_id"]))}
    )
    _check_unique_ids(store_frame["object_id"], f"{store} (object_id)")
    _check_unique_ids(truth_table["object_id"], f"{truth} (OBJECT_ID)")
    joined = store_frame.merge(truth_table, on="object_id", how="inner", validate="one_to_one")
    if joined.empty:
        raise ValueError(
            f"no object of {store} ({len(store_frame)} objects) has a true redshift in {truth} "
            f"({len(truth_table)} rows): their object ids do not match (is it the truth of that catalog?)"
        )
    rows = joined["row"].to_numpy()
    photometry = read_catalog_photometry(attrs["input"], bands, (attrs.get("config") or {}).get("id_column"))
    _check_unique_ids(photometry["object_id"], f"{attrs['input']} (the store's input catalog)")
    photometry = joined[["object_id"]].merge(photometry, on="object_id", how="left", validate="one_to_one")
    features = photometric_features(photometry, bands)
    z_true = joined["z_true"].to_numpy()

    if "z_samples" in columns:
        diffusion_samples = columns["z_samples"][rows].astype(np.float64)
        pdf_source = f"the store's z_samples (K = {diffusion_samples.shape[1]} per object)"
    else:
        levels = np.asarray(attrs["quantile_levels"], dtype=np.float64)
        diffusion_samples = quantile_draws(levels, columns["z_quantiles"][rows])
        pdf_source = (
            f"the store's {levels.size} quantiles ({levels[0]:g}..{levels[-1]:g}; no z_samples: run with "
            f"--save-samples K for exact PDF metrics), as {QUANTILE_DRAWS} draws of their quantile function"
        )
    baseline_point, _ = loaded.baseline.predict(features.values)
    results = {
        "diffusion": (columns["z_median"][rows].astype(np.float64), diffusion_samples),
        "baseline": (
            baseline_point,
            loaded.baseline.sample(features.values, diffusion_samples.shape[1], seed=seed),
        ),
    }
    mag = features.values[:, features.names.index(f"mag_{mag_band}")].astype(np.float64)
    coverage = columns["coverage"][rows] if "coverage" in columns else None
    table = _tables(results, z_true, mag, mag_band, mag_edges, zphot_edges, seed, coverage)
    colour = features.names[len(bands.bands)]  # the first adjacent colour, e.g. g-r
    nz = pd.concat(
        [
            stacked_nz(samples, z_true, point, zphot_edges).assign(method=method)
            for method, (point, samples) in results.items()
        ],
        ignore_index=True,
    )
    nz = nz[["method", *nz.columns.drop("method")]]
    objects = pd.DataFrame(
        {
            "object_id": joined["object_id"].to_numpy(),
            "z_true": z_true,
            f"mag_{mag_band}": mag,
            colour: features.values[:, len(bands.bands)].astype(np.float64),
            "flags": columns["flags"][rows],
            **{name: columns[name][rows] for name in CHECK_COLUMNS if name in columns},
        }
    )
    for method, (point, samples) in results.items():
        objects[f"z_phot_{method}"] = point
        objects[f"pit_{method}"] = pit(samples, z_true, seed=seed)
        objects[f"crps_{method}"] = crps(samples, z_true)
    info = {
        "store": str(store),
        "truth": str(truth),
        "input": attrs.get("input"),
        "store_model": attrs.get("model"),
        "baseline_model": str(model_dir),
        "n_store": len(store_frame),
        "n_truth": len(truth_table),
        "n_matched": len(joined),
        "n_left_out": left_out,
        "seed": seed,
        "simulated_note": simulation_notice(loaded.config, model_dir),
        "sample_count_note": sample_note,
    }
    return EvaluationResult(
        table=table,
        objects=objects,
        samples={m: r[1] for m, r in results.items()},
        pdf_source=pdf_source,
        info=info,
        nz=nz,
    )


def _tables(results, z_true, mag, mag_band, mag_edges, zphot_edges, seed, coverage=None) -> pd.DataFrame:
    """photoz_table over all objects, per magnitude bin, per bin of each method's own z_phot and,
    when the store has it (finite anywhere), per bin of the coverage score."""

    def relabel(frame: pd.DataFrame, binning: str, name: str | None) -> pd.DataFrame:
        frame = (
            frame.rename(columns={name: "bin", f"{name}_lo": "bin_lo", f"{name}_hi": "bin_hi"})
            if name
            else frame.assign(bin="all", bin_lo=np.nan, bin_hi=np.nan)
        )
        frame = frame[frame["bin"] != "all"] if name else frame
        return frame.assign(binning=binning)

    mag_name = f"mag_{mag_band}"
    parts = [
        relabel(photoz_table(results, z_true, seed=seed), "all", None),
        relabel(
            photoz_table(results, z_true, bins=(mag_name, mag, mag_edges), seed=seed), mag_name, mag_name
        ),
    ]
    for method, result in results.items():
        binned = photoz_table({method: result}, z_true, bins=("z_phot", result[0], zphot_edges), seed=seed)
        parts.append(relabel(binned, "z_phot", "z_phot"))
    if coverage is not None and np.isfinite(coverage).any():
        binned = photoz_table(results, z_true, bins=("coverage", coverage, COVERAGE_EDGES), seed=seed)
        parts.append(relabel(binned, "coverage", "coverage"))
    table = pd.concat(parts, ignore_index=True)
    first = ["binning", "bin", "bin_lo", "bin_hi", "method"]
    return table[first + [c for c in table.columns if c not in first]]
