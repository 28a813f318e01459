"""What crosses the boundary between RAIL and this package, as plain functions (no rail import).

- RAIL magnitude tables -> this package's flux columns. RAIL's example and DC2 tables
  carry AB magnitudes ``mag_{band}_lsst`` with errors ``mag_err_{band}_lsst``; a
  non-detection is a magnitude equal to ``nondetect_val`` (99) or not finite. This
  package's models read fluxes and inverse variances in a band set's unit (``BandSet``:
  nJy for the lsst preset, nanomaggies for the Legacy Surveys ones).
- redshift samples -> a qp ``hist`` ensemble (qp is imported when called).
- a model directory <-> the single ZIP file RAIL's model handle reads and writes.

The stages that use them are in ``rail.estimation.algos.specdiff``.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from specdiff_catalog.bands import BandSet
from specdiff_catalog.models.store import CONFIG, read_config

_MAG_TO_LN = np.log(10.0) / 2.5  # d ln(flux) / d mag


@dataclass(frozen=True)
class MagnitudeColumns:
    """Which RAIL columns hold each band, in the band set's band order.

    mags, errs: column names of the AB magnitudes and their 1-sigma errors (one per band).
    limits: 1-sigma limiting AB magnitude per magnitude column (RAIL's ``mag_limits``),
    the flux error given to a non-detection. nondetect_val: the magnitude that marks a
    non-detection (RAIL's ``nondetect_val``, 99); non-finite magnitudes are non-detections too.
    """

    mags: tuple[str, ...]
    errs: tuple[str, ...]
    limits: Mapping[str, float]
    nondetect_val: float = 99.0

    def check(self, bandset: BandSet) -> None:
        """Raise ValueError unless there is one magnitude, error and limit per band of ``bandset``."""
        n = len(bandset.bands)
        if len(self.mags) != n or len(self.errs) != n:
            raise ValueError(
                f"band set {bandset.name!r} has {n} bands ({', '.join(bandset.names)}) but "
                f"{len(self.mags)} magnitude and {len(self.errs)} error columns were given"
            )
        absent = [m for m in self.mags if m not in self.limits]
        if absent:
            raise ValueError(f"no 1-sigma limiting magnitude (mag_limits) for {', '.join(absent)}")


def _array(table: Any, name: str) -> np.ndarray:
    try:
        values = table[name]
    except KeyError as err:
        raise KeyError(f"the RAIL table has no column {name!r}") from err
    return np.asarray(values, dtype=np.float64)


def magnitudes_to_fluxes(table: Any, bandset: BandSet, columns: MagnitudeColumns) -> dict[str, np.ndarray]:
    """The band set's flux, ivar and MW-transmission columns of a RAIL magnitude table.

    table: mapping of column name -> (N,) array (a RAIL numpy dict or pandas DataFrame).
    Returns {band.flux: (N,) flux, band.ivar: (N,) 1/flux_unit^2, band.mw_transmission: (N,)
    ones} in the band set's unit (``bandset.maggies_to_flux``): a detection m +- e becomes
    f = 10^(-0.4 m) maggies with sigma_f = f ln(10)/2.5 e; a non-detection becomes f = 0 with
    sigma_f the flux of its 1-sigma limit, i.e. a measurement consistent with zero, not a
    missing band. A non-finite or non-positive error also marks the band missing (ivar 0).
    RAIL magnitudes are used as given (no Milky Way correction: transmission 1).
    """
    columns.check(bandset)
    out: dict[str, np.ndarray] = {}
    for band, mag_col, err_col in zip(bandset.bands, columns.mags, columns.errs, strict=True):
        mag, err = _array(table, mag_col), _array(table, err_col)
        detected = np.isfinite(mag) & (mag != columns.nondetect_val)
        flux = bandset.maggies_to_flux(10.0 ** (-0.4 * np.where(detected, mag, 0.0)))
        sigma = np.where(detected, flux * _MAG_TO_LN * err, 0.0)
        limit = bandset.maggies_to_flux(10.0 ** (-0.4 * columns.limits[mag_col]))
        sigma = np.where(detected, sigma, limit)
        with np.errstate(divide="ignore", invalid="ignore"):
            ivar = np.where(np.isfinite(sigma) & (sigma > 0), 1.0 / sigma**2, 0.0)
        out[band.flux] = np.where(detected, flux, 0.0)
        out[band.ivar] = ivar
        out[band.mw_transmission] = np.ones_like(flux)
    return out


def training_table(
    data: Any, bandset: BandSet, columns: MagnitudeColumns, redshift_col: str, id_col: str
) -> pd.DataFrame:
    """A RAIL training table as the photometry + Z table ``train diffusion --no-spectra`` reads:
    TARGETID (``id_col``, else the row number), Z, and the band set's flux/ivar/transmission
    columns (``magnitudes_to_fluxes``)."""
    z = np.asarray(data[redshift_col], dtype=np.float64)
    ids = np.asarray(data[id_col], dtype=np.int64) if id_col in data else np.arange(z.size, dtype=np.int64)
    return pd.DataFrame({"TARGETID": ids, "Z": z, **magnitudes_to_fluxes(data, bandset, columns)})


def samples_to_ensemble(z_samples: np.ndarray, zgrid: np.ndarray) -> Any:
    """A qp ``hist`` ensemble of redshift samples (N, K) on the bin edges ``zgrid`` (G,).

    Samples outside the grid are counted in its first or last bin, so no probability is
    lost; each row is normalised to unit integral. A row without finite samples (an object
    without usable photometry, flagged) gets a flat PDF over the grid.
    """
    edges = np.asarray(zgrid, dtype=np.float64)
    n, n_bins = z_samples.shape[0], edges.size - 1
    finite = np.isfinite(z_samples)
    bins = np.clip(
        np.searchsorted(edges, np.where(finite, z_samples, edges[0]), side="right") - 1, 0, n_bins - 1
    )
    rows = np.broadcast_to(np.arange(n)[:, None], bins.shape)
    counts = np.bincount((rows * n_bins + bins)[finite], minlength=n * n_bins).reshape(n, n_bins)
    counts = counts.astype(np.float64)
    counts[finite.sum(axis=1) == 0] = 1.0
    pdfs = counts / (counts.sum(axis=1, keepdims=True) * np.diff(edges))
    import qp

    return qp.Ensemble(qp.hist, data={"bins": edges, "pdfs": pdfs})


def scratch_dir(prefix: str) -> Path:
    """A new temporary directory, removed when the process exits."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def write_model_archive(model_dir: str | Path, path: str | Path) -> None:
    """ZIP of a model directory's config.json and the weight files it records (flat, no
    training/ work files); ``read_model_archive`` unpacks it."""
    model_dir = Path(model_dir)
    names = [CONFIG, *sorted(w.file for w in read_config(model_dir).weight_files())]
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name in names:
            archive.write(model_dir / name, arcname=name)


def read_model_archive(path: str | Path) -> Path:
    """The model directory of ``path``: the directory itself, or a ZIP written by
    ``write_model_archive`` unpacked into a temporary directory (removed at exit).

    Raises ValueError for an archive with nested or hidden member names. The weight files'
    sha256 are checked against config.json when the model is loaded.
    """
    path = Path(path)
    if path.is_dir():
        return path
    target = scratch_dir("specdiff-rail-model-")
    with zipfile.ZipFile(path) as archive:
        for member in archive.infolist():
            name = member.filename
            if not name or "/" in name or "\\" in name or name.startswith("."):
                raise ValueError(f"{path}: unexpected member {name!r} in a specdiff model archive")
            archive.extract(member, target)
    return target
