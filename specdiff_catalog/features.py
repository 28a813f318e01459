"""Broadband photometry -> model inputs: de-reddening, asinh magnitudes, colours, S/N, masks, flags.

One function, ``photometric_features``, turns a table of catalog fluxes into the
condition of the diffusion model and the inputs of the baseline. It never drops a
row: what cannot be used is masked and flagged (``specdiff_catalog.flags.Flag``).
What counts as an unusable ("absurd") measurement is defined once, in ``INPUT_LIMITS``.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from specdiff_catalog.bands import BandSet, require_columns, resolve_columns
from specdiff_catalog.flags import Flag

_LN10_25 = 2.5 / np.log(10.0)


@dataclass(frozen=True)
class InputLimits:
    """The physical limits of a usable band measurement (docs/output.md, "Flags").

    A band whose flux and ivar are finite with ivar > 0 is still not used (treated as
    missing, flag UNPHYSICAL_INPUT) when

    - |flux| is brighter than ``brightest_mag`` AB in the band set's zero point: no galaxy
      row of an imaging catalog is brighter than 5th magnitude (1e7 nanomaggies);
    - flux * sqrt(ivar) < -``max_negative_snr``: a measured flux 10 sigma below zero is a
      failed measurement, not noise around a faint galaxy;
    - flux * sqrt(ivar) > ``max_snr``: a flux known to better than 1e-5 of itself is a
      broken ivar (photometric calibration alone limits galaxy fluxes to ~1e-3).

    A Milky Way transmission outside [``min_transmission``, 1] (an extinction above 5 mag,
    or a negative one) is not used: the fluxes are taken without de-reddening
    (NO_EXTINCTION), as for a non-finite one.
    """

    brightest_mag: float = 5.0
    max_negative_snr: float = 10.0
    max_snr: float = 1e5
    min_transmission: float = 0.01

    def max_flux(self, zeropoint: float) -> float:
        """The flux of ``brightest_mag`` in a band set's unit (zero point ``zeropoint``)."""
        return float(10.0 ** (0.4 * (zeropoint - self.brightest_mag)))

    def unphysical(self, flux: np.ndarray, ivar: np.ndarray, zeropoint: float) -> np.ndarray:
        """(N, B) bool: the finite measurements with ivar > 0 that break a limit."""
        with np.errstate(invalid="ignore", over="ignore"):
            measured = np.isfinite(flux) & np.isfinite(ivar) & (ivar > 0)
            snr = np.where(measured, flux, 0.0) * np.sqrt(np.where(measured, ivar, 0.0))
            return measured & (
                (np.abs(flux) > self.max_flux(zeropoint))
                | (snr < -self.max_negative_snr)
                | (snr > self.max_snr)
            )


INPUT_LIMITS = InputLimits()


@dataclass
class Photometry:
    """De-reddened photometry of N objects in B bands, in the band set's flux unit.

    flux: (N, B) de-reddened flux, NaN where the band is missing.
    ivar: (N, B) inverse variance of ``flux``, 0 where missing.
    missing: (N, B) bool, True where the band carries no measurement.
    flags: (N,) uint16 ``Flag`` bits.
    """

    flux: np.ndarray
    ivar: np.ndarray
    missing: np.ndarray
    flags: np.ndarray


@dataclass
class Features:
    """Model inputs for N objects.

    values: (N, F) float32 features named in ``names``: B asinh magnitudes, B-1
        adjacent colours, B values of asinh(S/N); NaN where a band they use is missing.
    missing: (N, B) bool missing-band mask. flags: (N,) uint16 ``Flag`` bits.
    """

    values: np.ndarray
    names: list[str]
    missing: np.ndarray
    flags: np.ndarray


def _column(table: Any, name: str) -> np.ndarray:
    values = table[name]
    if hasattr(values, "to_numpy"):
        values = values.to_numpy()
    return np.asarray(values, dtype=np.float64)


def _table_columns(table: Any) -> list[str]:
    if hasattr(table, "column_names"):  # pyarrow.Table
        return list(table.column_names)
    if isinstance(table, Mapping):
        return list(table.keys())
    return list(table.columns)  # pandas.DataFrame


def _transmission(table: Any, bandset: BandSet, columns: list[str]) -> np.ndarray:
    """(N, B) MW transmission: the catalog's MW_TRANSMISSION_* or 10^(-0.4 R EBV)."""
    found = resolve_columns(columns, [b.mw_transmission for b in bandset.bands])
    if len(found) == len(bandset.bands):
        return np.column_stack([_column(table, found[b.mw_transmission]) for b in bandset.bands])
    ebv_col = require_columns(columns, [bandset.ebv_column], "photometry table (needed for de-reddening)")
    ebv = _column(table, ebv_col[bandset.ebv_column])
    with np.errstate(over="ignore", invalid="ignore"):  # absurd EBV: caught by the caller's checks
        trans = bandset.mw_transmission(ebv)
    for j, band in enumerate(bandset.bands):  # a catalog may carry some of the columns
        if band.mw_transmission in found:
            trans[:, j] = _column(table, found[band.mw_transmission])
    return trans


def deredden(table: Any, bandset: BandSet) -> Photometry:
    """Read fluxes and ivars of ``bandset`` from ``table`` and correct for Milky Way extinction.

    table: pandas DataFrame, pyarrow Table or mapping of column name -> (N,) array;
    names matched case-insensitively. Raises MissingColumnError for absent flux/ivar
    columns (or EBV when no MW_TRANSMISSION columns exist).
    """
    columns = _table_columns(table)
    cols = require_columns(columns, [c for b in bandset.bands for c in (b.flux, b.ivar)], "photometry table")
    flux = np.column_stack([_column(table, cols[b.flux]) for b in bandset.bands])
    ivar = np.column_stack([_column(table, cols[b.ivar]) for b in bandset.bands])
    n = flux.shape[0]
    trans = _transmission(table, bandset, columns)

    flags = np.zeros(n, dtype=np.uint16)
    nonfinite = ~np.isfinite(flux) | ~np.isfinite(ivar)
    with np.errstate(invalid="ignore"):
        bad_trans = ~(np.isfinite(trans) & (trans >= INPUT_LIMITS.min_transmission) & (trans <= 1))
    flags[(nonfinite | ~np.isfinite(trans)).any(axis=1)] |= np.uint16(Flag.NONFINITE_INPUT)
    flags[bad_trans.any(axis=1)] |= np.uint16(Flag.NO_EXTINCTION)
    trans = np.where(bad_trans, 1.0, trans)
    unphysical = INPUT_LIMITS.unphysical(flux, ivar, bandset.zeropoint)
    flags[unphysical.any(axis=1)] |= np.uint16(Flag.UNPHYSICAL_INPUT)

    all_zero = (flux == 0).all(axis=1)
    flags[all_zero] |= np.uint16(Flag.ALL_ZERO_PHOTOMETRY)
    missing = nonfinite | ~(ivar > 0) | unphysical | all_zero[:, None]
    flags[missing.any(axis=1)] |= np.uint16(Flag.MISSING_BAND)
    flags[missing.all(axis=1)] |= np.uint16(Flag.NO_PHOTOMETRY)

    with np.errstate(invalid="ignore", over="ignore"):
        flux = np.where(missing, np.nan, flux / trans)
        ivar = np.where(missing, 0.0, ivar * trans**2)
    return Photometry(flux=flux, ivar=ivar, missing=missing, flags=flags)


def asinh_magnitude(flux: np.ndarray, softening: np.ndarray, zeropoint: float) -> np.ndarray:
    """Lupton et al. (1999) asinh magnitude; finite for zero and negative flux.

    flux: (N, B) in the band set's unit; softening: (B,) b in the same unit.
    m = zeropoint - 2.5/ln10 * (asinh(f / 2b) + ln b).
    """
    return zeropoint - _LN10_25 * (np.arcsinh(flux / (2.0 * softening)) + np.log(softening))


def photometric_features(table: Any, bandset: BandSet) -> Features:
    """Features of every row of ``table``: (N, 3B-1) asinh mags, colours, asinh(S/N).

    Missing bands give NaN in every feature that uses them; ``missing`` and ``flags``
    say which and why. The row count always equals the input's.
    """
    phot = deredden(table, bandset)
    mags = asinh_magnitude(phot.flux, bandset.softening, bandset.zeropoint)
    colours = mags[:, :-1] - mags[:, 1:]
    snr = np.arcsinh(phot.flux * np.sqrt(phot.ivar))
    names = (
        [f"mag_{b}" for b in bandset.names]
        + [f"{a}-{b}" for a, b in itertools.pairwise(bandset.names)]
        + [f"asinh_snr_{b}" for b in bandset.names]
    )
    values = np.concatenate([mags, colours, snr], axis=1).astype(np.float32)
    return Features(values=values, names=names, missing=phot.missing, flags=phot.flags)


def feature_bands(n_bands: int) -> np.ndarray:
    """(3B-1, B) bool: which bands each ``photometric_features`` column uses.

    Row order is the feature order: B magnitudes, B-1 adjacent colours, B asinh(S/N).
    A feature is NaN exactly when one of its bands is missing; models use this map to
    drop a band (band dropout) the same way a catalog loses one.
    """
    eye = np.eye(n_bands, dtype=bool)
    colours = eye[:-1] | eye[1:]
    return np.concatenate([eye, colours, eye], axis=0)
