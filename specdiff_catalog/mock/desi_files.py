"""DESI coadd and redrock files written in the DESI data model, for the mock survey and tests.

The layout, header keywords and column types follow desidatamodel and the real files in
../shared/data/desi, so files written here and DESI's own are read by the same code
(``io.desi``): per arm b, r, z on ``io.desi.ARM_WAVE``; FIBERMAP, EXP_FIBERMAP,
``{ARM}_WAVELENGTH/FLUX/IVAR/MASK/RESOLUTION`` and SCORES in a coadd file; REDSHIFTS,
FIBERMAP, EXP_FIBERMAP and TSNR2 in a redrock file.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from astropy.io import fits
from scipy.special import erf

from specdiff_catalog import __version__
from specdiff_catalog.io.desi import ARM_WAVE, ARMS

FLUX_BUNIT = "10**-17 erg/(s cm2 Angstrom)"
IVAR_BUNIT = "10**+34 (s2 cm4 Angstrom2) / erg2"
WAVE_BUNIT = "Angstrom"
RESOLUTION_NDIAG = 11
# Gaussian sigma (pixels) of the resolution kernel per arm, fitted to the central
# diagonals of the two real DESI coadds (0.80-0.85, 0.76, 0.90-0.91).
DEFAULT_RESOLUTION_SIGMA_PIX = {"b": 0.82, "r": 0.76, "z": 0.90}
# desispec.specscore top-hat ranges of the SCORES columns, Angstrom.
_SCORE_RANGE = {"b": (4000.0, 5800.0), "r": (5800.0, 7600.0), "z": (7600.0, 9800.0)}

# Column name, FITS TFORM, unit. FIBERMAP in the order of a healpix coadd (DR1/loa),
# then the columns only tile-based coadds carry.
_FIBERMAP_SCHEMA = """
TARGETID K; COADD_FIBERSTATUS J; TARGET_RA D deg; TARGET_DEC D deg; DESINAME 22A;
PMRA E mas yr-1; PMDEC E mas yr-1; REF_EPOCH E yr; FA_TARGET K; FA_TYPE B; OBJTYPE 3A;
SUBPRIORITY D; OBSCONDITIONS J; RELEASE I; BRICKNAME 8A; BRICKID J; BRICK_OBJID J;
MORPHTYPE 4A; EBV E mag; FLUX_G E nanomaggy; FLUX_R E nanomaggy; FLUX_Z E nanomaggy;
FLUX_W1 E nanomaggy; FLUX_W2 E nanomaggy; FLUX_IVAR_G E nanomaggy^-2;
FLUX_IVAR_R E nanomaggy^-2; FLUX_IVAR_Z E nanomaggy^-2; FLUX_IVAR_W1 E nanomaggy^-2;
FLUX_IVAR_W2 E nanomaggy^-2; FIBERFLUX_G E nanomaggy; FIBERFLUX_R E nanomaggy;
FIBERFLUX_Z E nanomaggy; FIBERTOTFLUX_G E nanomaggy; FIBERTOTFLUX_R E nanomaggy;
FIBERTOTFLUX_Z E nanomaggy; MASKBITS I; SERSIC E; SHAPE_R E arcsec; SHAPE_E1 E;
SHAPE_E2 E; REF_ID K; REF_CAT 2A; GAIA_PHOT_G_MEAN_MAG E mag; GAIA_PHOT_BP_MEAN_MAG E mag;
GAIA_PHOT_RP_MEAN_MAG E mag; PARALLAX E mas; PHOTSYS 1A; PRIORITY_INIT K; NUMOBS_INIT K;
DESI_TARGET K; BGS_TARGET K; MWS_TARGET K; SCND_TARGET K; PLATE_RA D deg; PLATE_DEC D deg;
COADD_NUMEXP I; COADD_EXPTIME E s; COADD_NUMNIGHT I; COADD_NUMTILE I; MEAN_DELTA_X E mm;
RMS_DELTA_X E mm; MEAN_DELTA_Y E mm; RMS_DELTA_Y E mm; MEAN_PSF_TO_FIBER_SPECFLUX E;
MEAN_FIBER_RA D deg; STD_FIBER_RA E deg; MEAN_FIBER_DEC D deg; STD_FIBER_DEC E deg;
MIN_MJD D d; MAX_MJD D d; MEAN_MJD D d;
PETAL_LOC I; DEVICE_LOC J; LOCATION K; FIBER J; LAMBDA_REF E Angstrom; FIBERASSIGN_X E mm;
FIBERASSIGN_Y E mm; PRIORITY J; TILEID J; MEAN_FIBER_X E mm; MEAN_FIBER_Y E mm
"""
_EXP_FIBERMAP_SCHEMA = """
TARGETID K; PRIORITY J; SUBPRIORITY D; NIGHT J; EXPID J; MJD D d; TILEID J; EXPTIME D s;
PETAL_LOC I; DEVICE_LOC J; LOCATION K; FIBER J; FIBERSTATUS J; FIBERASSIGN_X E mm;
FIBERASSIGN_Y E mm; LAMBDA_REF E Angstrom; PLATE_RA D deg; PLATE_DEC D deg; NUM_ITER K;
FIBER_X D mm; FIBER_Y D mm; DELTA_X D mm; DELTA_Y D mm; FIBER_RA D deg; FIBER_DEC D deg;
PSF_TO_FIBER_SPECFLUX D; IN_COADD_B L; IN_COADD_R L; IN_COADD_Z L
"""
_REDSHIFTS_SCHEMA = """
TARGETID K; Z D; ZERR D; ZWARN K; CHI2 D; COEFF 10D; FITMETHOD 4A; NPIXELS K; SPECTYPE 6A;
SUBTYPE 20A; NCOEFF K; DELTACHI2 D
"""


def _parse_schema(text: str) -> dict[str, tuple[str, str | None]]:
    entries = (item.split(maxsplit=2) for item in text.replace("\n", " ").split(";") if item.strip())
    return {e[0]: (e[1], e[2] if len(e) > 2 else None) for e in entries}


FIBERMAP_SCHEMA = _parse_schema(_FIBERMAP_SCHEMA)
EXP_FIBERMAP_SCHEMA = _parse_schema(_EXP_FIBERMAP_SCHEMA)
REDSHIFTS_SCHEMA = _parse_schema(_REDSHIFTS_SCHEMA)
# EXP_FIBERMAP columns a one-exposure-per-target EXP_FIBERMAP copies from the FIBERMAP.
_EXP_FROM_FIBERMAP = {name: name for name in EXP_FIBERMAP_SCHEMA if name in FIBERMAP_SCHEMA} | {
    "FIBERSTATUS": "COADD_FIBERSTATUS",
    "EXPTIME": "COADD_EXPTIME",
    "MJD": "MEAN_MJD",
    "FIBER_RA": "MEAN_FIBER_RA",
    "FIBER_DEC": "MEAN_FIBER_DEC",
}
_REDSHIFT_DEFAULTS = {
    "ZERR": 0.0,
    "ZWARN": 0,
    "CHI2": 0.0,
    "FITMETHOD": "PCA",
    "NPIXELS": 0,
    "SPECTYPE": "GALAXY",
    "SUBTYPE": "",
    "DELTACHI2": 0.0,
}

_NUMPY_OF_TFORM = {
    "K": np.int64,
    "J": np.int32,
    "I": np.int16,
    "B": np.uint8,
    "E": np.float32,
    "D": np.float64,
    "L": np.bool_,
}

# (numpy kinds, largest item size, TFORM) for columns outside the schemas, first match wins.
_TFORM_OF_NUMPY = [
    ("b", 1, "L"),
    ("u", 1, "B"),
    ("i", 2, "I"),
    ("iu", 2, "J"),
    ("i", 4, "J"),
    ("iu", 4, "K"),
    ("i", 8, "K"),
    ("f", 4, "E"),
    ("f", 8, "D"),
]


def _column_array(values: Any, tform: str, name: str, where: str) -> tuple[np.ndarray, str]:
    """Cast one table column to the dtype of its TFORM; returns (array, tform)."""
    code = tform.lstrip("0123456789")
    repeat = int(tform[: len(tform) - len(code)] or 1)
    if code == "A":
        text = [
            ""
            if v is None or (isinstance(v, float) and np.isnan(v))
            else (v.decode() if isinstance(v, bytes) else str(v))
            for v in values
        ]
        width = max([repeat, *map(len, text)])
        return np.array(text, dtype=f"S{width}"), f"{width}A"
    dtype = _NUMPY_OF_TFORM[code]
    array = np.stack([np.asarray(v) for v in values]) if repeat > 1 and len(values) else np.asarray(values)
    if repeat > 1 and array.shape[1:] != (repeat,):
        raise ValueError(f"{where}: column {name} must hold {repeat} values per row, got shape {array.shape}")
    if np.issubdtype(dtype, np.integer) and array.dtype.kind == "f" and not np.isfinite(array).all():
        raise ValueError(f"{where}: integer column {name} holds NaN/inf")
    return array.astype(dtype), tform


def _infer_tform(values: np.ndarray) -> str:
    """TFORM of a column outside the DESI schemas: strings, numbers, or (n, k) arrays per row."""
    if values.dtype.kind in "US" or (
        values.dtype.kind == "O" and all(isinstance(v, str | bytes) for v in values)
    ):
        return "1A"
    repeat = ""
    if values.dtype.kind == "O":  # one array per row
        values = np.stack([np.asarray(v) for v in values])
        repeat = str(int(np.prod(values.shape[1:])))
    for kinds, size, code in _TFORM_OF_NUMPY:
        if values.dtype.kind in kinds and values.dtype.itemsize <= size:
            return repeat + code
    raise ValueError(f"column of dtype {values.dtype} has no FITS binary-table type")


def _table_hdu(
    table: pd.DataFrame, schema: Mapping[str, tuple[str, str | None]], extname: str
) -> fits.BinTableHDU:
    """A BinTableHDU with the schema's columns first (its TFORM and unit), then the rest as they are."""
    names = [c for c in schema if c in table.columns] + [c for c in table.columns if c not in schema]
    columns = []
    for name in names:
        values = table[name].to_numpy()
        if name in schema:
            tform, unit = schema[name]
            array, tform = _column_array(values, tform, name, extname)
            columns.append(fits.Column(name=name, format=tform, unit=unit, array=array))
        else:
            array, tform = _column_array(values, _infer_tform(values), name, extname)
            columns.append(fits.Column(name=name, format=tform, array=array))
    hdu = fits.BinTableHDU.from_columns(columns, name=extname)
    hdu.header["ENCODING"] = "ascii"
    return hdu


def _image_hdu(data: np.ndarray, extname: str, bunit: str | None = None) -> fits.ImageHDU:
    hdu = fits.ImageHDU(data, name=extname)
    if bunit:
        hdu.header["BUNIT"] = bunit
    return hdu


def _primary_hdu(header: Mapping[str, Any] | None) -> fits.PrimaryHDU:
    hdu = fits.PrimaryHDU()
    hdu.header["LONGSTRN"] = "OGIP 1.0"
    for key, value in (header or {}).items():
        hdu.header[key] = value
    hdu.header["DEPNAM00"] = "specdiff-catalog"  # desiutil.depend convention
    hdu.header["DEPVER00"] = __version__
    return hdu


def _fibermap_table(fibermap: pd.DataFrame, where: str) -> pd.DataFrame:
    if "TARGETID" not in fibermap.columns:
        raise ValueError(f"{where}: the fibermap needs a TARGETID column")
    if "COADD_FIBERSTATUS" not in fibermap.columns:
        fibermap = fibermap.assign(COADD_FIBERSTATUS=np.zeros(len(fibermap), np.int32))
    return fibermap.reset_index(drop=True)


def _exp_fibermap_table(fibermap: pd.DataFrame) -> pd.DataFrame:
    """One exposure row per target, built from the (coadded) FIBERMAP columns."""
    exp = {
        name: fibermap[source].to_numpy() for name, source in _EXP_FROM_FIBERMAP.items() if source in fibermap
    }
    exp.update({f"IN_COADD_{arm.upper()}": np.ones(len(fibermap), bool) for arm in ARMS})
    return pd.DataFrame(exp)


def resolution_diagonals(
    sigma_pix: float | np.ndarray, n_pix: int, ndiag: int = RESOLUTION_NDIAG
) -> np.ndarray:
    """(ndiag, n_pix) float32 resolution-matrix diagonals of a Gaussian line-spread function.

    sigma_pix: Gaussian sigma in pixels, scalar or (n_pix,). Diagonal d holds offset
    ndiag//2 - d (desispec.resolution ordering); each column is the pixel-integrated
    Gaussian (as desispec's ``Resolution(sigmas)``), normalised to sum to 1.
    """
    offsets = np.arange(ndiag // 2, -(ndiag // 2) - 1, -1, dtype=float)
    sigma = np.broadcast_to(np.asarray(sigma_pix, dtype=float), (n_pix,))
    scale = 1.0 / (np.sqrt(2.0) * sigma)
    kernel = 0.5 * (erf((offsets[:, None] + 0.5) * scale) - erf((offsets[:, None] - 0.5) * scale))
    return (kernel / kernel.sum(axis=0)).astype(np.float32)


def _scores_table(
    targetid: np.ndarray, flux: Mapping[str, np.ndarray], ivar: Mapping[str, np.ndarray]
) -> pd.DataFrame:
    """SCORES columns as desispec.specscore computes them for a coadd (top-hat per arm)."""
    scores: dict[str, np.ndarray] = {"TARGETID": targetid}
    for arm in ARMS:
        wave = ARM_WAVE[arm]
        dwave = np.gradient(wave)
        inside = (wave >= _SCORE_RANGE[arm][0]) & (wave < _SCORE_RANGE[arm][1])
        f, iv = flux[arm][:, inside].astype(np.float64), np.clip(ivar[arm][:, inside], 0, None)
        scores[f"INTEG_COADD_FLUX_{arm.upper()}"] = np.sum(f * dwave[inside], axis=1)
        scores[f"MEDIAN_COADD_FLUX_{arm.upper()}"] = np.median(f, axis=1)
        scores[f"MEDIAN_COADD_SNR_{arm.upper()}"] = np.median(
            np.sqrt(iv) * f / np.sqrt(dwave[inside]), axis=1
        )
    return pd.DataFrame({k: (v.astype(np.float32) if k != "TARGETID" else v) for k, v in scores.items()})


def _arm_array(arrays: Mapping[str, np.ndarray], arm: str, n: int, what: str, where: str) -> np.ndarray:
    if arm not in arrays:
        raise ValueError(f"{where}: no {what} for arm {arm!r} (need arms {', '.join(ARMS)})")
    array = np.asarray(arrays[arm])
    if array.shape != (n, ARM_WAVE[arm].size):
        raise ValueError(
            f"{where}: {what}[{arm!r}] has shape {array.shape}, expected {(n, ARM_WAVE[arm].size)}"
        )
    return array


def write_coadd(
    path: str | Path,
    fibermap: pd.DataFrame,
    flux: Mapping[str, np.ndarray],
    ivar: Mapping[str, np.ndarray],
    mask: Mapping[str, np.ndarray] | None = None,
    *,
    resolution_sigma_pix: float | Mapping[str, float | np.ndarray] = DEFAULT_RESOLUTION_SIGMA_PIX,
    exp_fibermap: pd.DataFrame | None = None,
    header: Mapping[str, Any] | None = None,
    overwrite: bool = False,
) -> None:
    """Write a DESI coadd file of n targets.

    fibermap: n rows, TARGETID required; DESI columns get their DESI dtype and unit
        (TARGETID int64, COADD_FIBERSTATUS int32 (0 when absent), FLUX_* float32, ...).
    flux, ivar, mask: per arm ``"b", "r", "z"`` arrays (n, P_arm) on ``ARM_WAVE[arm]``;
        flux in 1e-17 erg/s/cm^2/A, ivar its inverse variance, mask int (0 = good;
        all 0 when None).
    resolution_sigma_pix: Gaussian sigma of the line-spread function in pixels, one
        value, or per arm a value or a (P_arm,) array.
    exp_fibermap: the EXP_FIBERMAP table (default: one row per target from ``fibermap``).
    header: extra primary-header keywords (e.g. SPGRP, HPXPIXEL, SURVEY, PROGRAM).
    """
    where = str(path)
    fibermap = _fibermap_table(fibermap, where)
    n = len(fibermap)
    hdus: list[fits.hdu.base.ExtensionHDU | fits.PrimaryHDU] = [
        _primary_hdu(header),
        _table_hdu(fibermap, FIBERMAP_SCHEMA, "FIBERMAP"),
        _table_hdu(
            _exp_fibermap_table(fibermap) if exp_fibermap is None else exp_fibermap,
            EXP_FIBERMAP_SCHEMA,
            "EXP_FIBERMAP",
        ),
    ]
    arm_flux, arm_ivar = {}, {}
    for arm in ARMS:
        up, npix = arm.upper(), ARM_WAVE[arm].size
        arm_flux[arm] = _arm_array(flux, arm, n, "flux", where).astype(np.float32)
        arm_ivar[arm] = _arm_array(ivar, arm, n, "ivar", where).astype(np.float32)
        arm_mask = np.zeros((n, npix), np.int32) if mask is None else _arm_array(mask, arm, n, "mask", where)
        sigma = (
            resolution_sigma_pix[arm] if isinstance(resolution_sigma_pix, Mapping) else resolution_sigma_pix
        )
        res = np.broadcast_to(resolution_diagonals(sigma, npix), (n, RESOLUTION_NDIAG, npix))
        hdus += [
            _image_hdu(ARM_WAVE[arm], f"{up}_WAVELENGTH", WAVE_BUNIT),
            _image_hdu(arm_flux[arm], f"{up}_FLUX", FLUX_BUNIT),
            _image_hdu(arm_ivar[arm], f"{up}_IVAR", IVAR_BUNIT),
            _image_hdu(np.asarray(arm_mask, dtype=np.int32), f"{up}_MASK"),
            _image_hdu(np.ascontiguousarray(res), f"{up}_RESOLUTION"),
        ]
    targetid = fibermap["TARGETID"].to_numpy().astype(np.int64)
    hdus.append(_table_hdu(_scores_table(targetid, arm_flux, arm_ivar), {"TARGETID": ("K", None)}, "SCORES"))
    fits.HDUList(hdus).writeto(path, overwrite=overwrite, checksum=True)


def write_redrock(
    path: str | Path,
    redshifts: pd.DataFrame,
    fibermap: pd.DataFrame,
    *,
    exp_fibermap: pd.DataFrame | None = None,
    tsnr2: pd.DataFrame | None = None,
    header: Mapping[str, Any] | None = None,
    overwrite: bool = False,
) -> None:
    """Write a redrock file: REDSHIFTS, FIBERMAP, EXP_FIBERMAP, TSNR2.

    redshifts: one row per target, TARGETID and Z required; absent DESI columns get
        redrock-like defaults (ZERR 0, ZWARN 0, SPECTYPE GALAXY, SUBTYPE '', COEFF
        zeros (10,), NCOEFF 10, FITMETHOD PCA, CHI2/DELTACHI2 0, NPIXELS 0).
    fibermap, exp_fibermap, header: as in ``write_coadd``.
    tsnr2: the TSNR2 table (default: TARGETID only).
    """
    where = str(path)
    missing = [c for c in ("TARGETID", "Z") if c not in redshifts.columns]
    if missing:
        raise ValueError(f"{where}: redshifts need column(s) {', '.join(missing)}")
    n = len(redshifts)
    defaults: dict[str, Any] = {k: np.full(n, v) for k, v in _REDSHIFT_DEFAULTS.items() if k not in redshifts}
    if "COEFF" not in redshifts:
        defaults["COEFF"] = list(np.zeros((n, 10)))
    if "NCOEFF" not in redshifts:
        defaults["NCOEFF"] = np.full(n, 10)
    redshifts = redshifts.reset_index(drop=True).assign(**defaults)
    fibermap = _fibermap_table(fibermap, where)
    tsnr2 = pd.DataFrame({"TARGETID": redshifts["TARGETID"].to_numpy()}) if tsnr2 is None else tsnr2
    hdus = [
        _primary_hdu(header),
        _table_hdu(redshifts, REDSHIFTS_SCHEMA, "REDSHIFTS"),
        _table_hdu(fibermap, FIBERMAP_SCHEMA, "FIBERMAP"),
        _table_hdu(
            _exp_fibermap_table(fibermap) if exp_fibermap is None else exp_fibermap,
            EXP_FIBERMAP_SCHEMA,
            "EXP_FIBERMAP",
        ),
        _table_hdu(tsnr2, {"TARGETID": ("K", None)}, "TSNR2"),
    ]
    fits.HDUList(hdus).writeto(path, overwrite=overwrite, checksum=True)
