"""DESI spectroscopic files: coadd and redrock FITS, read and written in the DESI data model.

A coadd file holds n targets: HDUs FIBERMAP (one row per target, with the Legacy
Surveys photometry), EXP_FIBERMAP, then per spectrograph arm b, r, z the HDUs
``{ARM}_WAVELENGTH`` (P_arm,) Angstrom, ``{ARM}_FLUX`` (n, P_arm) in
1e-17 erg/s/cm^2/A, ``{ARM}_IVAR`` (n, P_arm), ``{ARM}_MASK`` (n, P_arm) int32
(non-zero = bad) and ``{ARM}_RESOLUTION`` (n, 11, P_arm) diagonals of the resolution
matrix; last SCORES. Its redrock file holds REDSHIFTS, FIBERMAP, EXP_FIBERMAP, TSNR2.
The layout, header keywords and column types follow desidatamodel and the real
files in ../shared/data/desi, so files written here and DESI's own are read by the
same code.

Reading merges the three arms onto one 0.8 A grid, ``WAVE`` (3600-9824 A, 7781 px):
the arm grids sit on the same lattice, so the overlaps 5760-5800 and 7520-7620 A
are an inverse-variance weighted mean of the arms.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from astropy.io import fits
from astropy.utils.exceptions import AstropyUserWarning
from scipy.special import erf

from specdiff_catalog import __version__

ARMS = ("b", "r", "z")
WAVE_STEP = 0.8  # Angstrom, the DESI coadd wavelength lattice


def _lattice(lo: float, hi: float) -> np.ndarray:
    return lo + WAVE_STEP * np.arange(int(round((hi - lo) / WAVE_STEP)) + 1)


ARM_WAVE: dict[str, np.ndarray] = {
    "b": _lattice(3600.0, 5800.0),  # 2751 px
    "r": _lattice(5760.0, 7620.0),  # 2326 px
    "z": _lattice(7520.0, 9824.0),  # 2881 px
}
WAVE: np.ndarray = _lattice(3600.0, 9824.0)  # 7781 px, merged grid

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

# --------------------------------------------------------------------------- writing


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
    defaults = {k: np.full(n, v) for k, v in _REDSHIFT_DEFAULTS.items() if k not in redshifts}
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


# --------------------------------------------------------------------------- reading


@contextmanager
def _open_fits(path: Path) -> Iterator[fits.HDUList]:
    """Open a FITS file, memory-mapped; truncation or bad headers raise OSError naming it.

    Only the HDUs a reader touches are read (and their DATASUM checked, ``_hdu_data``),
    so a coadd's RESOLUTION HDUs cost nothing.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", AstropyUserWarning)
            with fits.open(path, memmap=True, lazy_load_hdus=False) as hdul:
                yield hdul
    except AstropyUserWarning as warning:
        raise OSError(f"{path}: corrupt or truncated FITS file ({str(warning).splitlines()[0]})") from None
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file") from None
    except OSError as err:
        if str(path) in str(err):
            raise
        raise OSError(f"{path}: not a readable FITS file ({str(err).splitlines()[0]})") from None


def _hdu_data(hdul: fits.HDUList, name: str, path: Path) -> Any:
    if name not in hdul:
        raise ValueError(f"{path}: missing HDU {name}")
    hdu = hdul[name]
    try:
        data = hdu.data
        intact = hdu.verify_datasum() != 0  # 2 = no DATASUM keyword to check
    except (OSError, ValueError, TypeError, IndexError) as err:
        raise OSError(f"{path}: HDU {name} cannot be read ({err})") from None
    if not intact:
        raise OSError(f"{path}: HDU {name} fails its DATASUM checksum (corrupt file)")
    if data is None:
        raise ValueError(f"{path}: HDU {name} holds no data")
    return data


def _native(array: np.ndarray) -> np.ndarray:
    """A copy in native byte order (FITS data is big-endian), detached from the file."""
    array = np.asarray(array)
    return array.astype(array.dtype.newbyteorder("="), copy=True)


def _read_image(hdul: fits.HDUList, name: str, path: Path, ndim: int) -> np.ndarray:
    """An image HDU as the file's (memory-mapped, big-endian) array: use it before the file closes."""
    data = np.asarray(_hdu_data(hdul, name, path))
    if data.ndim != ndim:
        raise ValueError(f"{path}: HDU {name} has {data.ndim} dimensions, expected {ndim}")
    return data


def _read_table(
    hdul: fits.HDUList, name: str, path: Path, required: tuple[str, ...] = ("TARGETID",)
) -> pd.DataFrame:
    """A binary table as a native-endian DataFrame; strings decoded and stripped,
    vector columns kept as one array per row."""
    data = _hdu_data(hdul, name, path)
    names = list(getattr(data, "names", None) or [])
    missing = [c for c in required if c not in names]
    if missing:
        raise ValueError(f"{path}: HDU {name} lacks column(s) {', '.join(missing)}")
    columns: dict[str, Any] = {}
    for column in names:
        values = _native(data[column])
        if values.dtype.kind in "SU":
            if values.dtype.kind == "S":
                values = np.char.decode(values, "ascii", errors="replace")
            values = np.char.strip(values).astype(object)
        elif values.ndim > 1:
            values = list(values)
        columns[column] = values
    return pd.DataFrame(columns)


@dataclass
class Coadd:
    """The n targets of one coadd file, arms merged onto ``WAVE``.

    targetid: (n,) int64. fibermap: n rows, native-endian, in file order.
    wave: (7781,) observed-frame Angstrom. flux: (n, 7781) float32 in 1e-17 erg/s/cm^2/A;
    ivar: (n, 7781) float32, 0 where every arm is masked, non-finite or absent.
    """

    path: Path
    targetid: np.ndarray
    fibermap: pd.DataFrame
    wave: np.ndarray
    flux: np.ndarray
    ivar: np.ndarray

    def __len__(self) -> int:
        return self.targetid.size


def _arm_offset(wave: np.ndarray, hdu: str, path: Path) -> int:
    """First pixel of an arm grid inside ``WAVE``; the arm must lie on the 0.8 A lattice."""
    start = int(round((wave[0] - WAVE[0]) / WAVE_STEP))
    stop = start + wave.size
    if start < 0 or stop > WAVE.size or not np.allclose(wave, WAVE[start:stop], rtol=0, atol=1e-3):
        raise ValueError(f"{path}: HDU {hdu} is not on the DESI 0.8 A grid {WAVE[0]:.0f}-{WAVE[-1]:.0f} A")
    return start


def merge_arms(
    arms: list[tuple[np.ndarray, np.ndarray, np.ndarray | None, int]], n: int, *, block: int = 256
) -> tuple[np.ndarray, np.ndarray]:
    """Merge arm spectra onto ``WAVE`` by inverse-variance weighting.

    arms: per arm (flux (n, P), ivar (n, P), mask (n, P) or None, offset into WAVE).
    Pixels with mask != 0, ivar <= 0 or non-finite flux/ivar get weight 0. Returns
    flux, ivar (n, 7781) float32: sum(f ivar)/sum(ivar) and sum(ivar); flux 0 where
    sum(ivar) = 0. Accumulates in float64, ``block`` targets at a time.
    """
    flux_out = np.zeros((n, WAVE.size), np.float32)
    ivar_out = np.zeros((n, WAVE.size), np.float32)
    for lo in range(0, n, block):
        rows = slice(lo, min(lo + block, n))
        num = np.zeros((rows.stop - lo, WAVE.size))
        den = np.zeros_like(num)
        for flux, ivar, mask, offset in arms:
            f, iv = flux[rows].astype(np.float64), ivar[rows].astype(np.float64)
            good = np.isfinite(f) & np.isfinite(iv) & (iv > 0)
            if mask is not None:
                good &= np.asarray(mask[rows]) == 0
            iv = np.where(good, iv, 0.0)
            pixels = slice(offset, offset + f.shape[1])
            num[:, pixels] += np.where(good, f, 0.0) * iv
            den[:, pixels] += iv
        flux_out[rows] = np.divide(num, den, out=np.zeros_like(num), where=den > 0)
        ivar_out[rows] = den
    return flux_out, ivar_out


def _arm_names(hdul: fits.HDUList) -> list[str]:
    """B, R, Z, or BRZ for a coadd across cameras."""
    if "BRZ_FLUX" in hdul and "B_FLUX" not in hdul:
        return ["BRZ"]
    return [arm.upper() for arm in ARMS]


def read_coadd(path: str | Path) -> Coadd:
    """Read a DESI coadd file: its FIBERMAP and the b, r, z arms merged onto ``WAVE``.

    Raises OSError for an unreadable, truncated or checksum-failing file and
    ValueError for a missing HDU or column or inconsistent shapes; both name the file.
    """
    path = Path(path)
    with _open_fits(path) as hdul:
        fibermap = _read_table(hdul, "FIBERMAP", path)
        n = len(fibermap)
        arms = []
        for arm in _arm_names(hdul):
            wave = _native(_read_image(hdul, f"{arm}_WAVELENGTH", path, 1))
            flux = _read_image(hdul, f"{arm}_FLUX", path, 2)
            ivar = _read_image(hdul, f"{arm}_IVAR", path, 2)
            mask = _read_image(hdul, f"{arm}_MASK", path, 2) if f"{arm}_MASK" in hdul else None
            for hdu, array in ((f"{arm}_FLUX", flux), (f"{arm}_IVAR", ivar), (f"{arm}_MASK", mask)):
                if array is not None and array.shape != (n, wave.size):
                    raise ValueError(
                        f"{path}: HDU {hdu} has shape {array.shape}, expected {(n, wave.size)} "
                        f"({n} FIBERMAP rows, {wave.size} pixels in {arm}_WAVELENGTH)"
                    )
            arms.append((flux, ivar, mask, _arm_offset(wave, f"{arm}_WAVELENGTH", path)))
        flux, ivar = merge_arms(arms, n)  # reads the mapped arrays block by block
    targetid = fibermap["TARGETID"].to_numpy().astype(np.int64)
    return Coadd(path=path, targetid=targetid, fibermap=fibermap, wave=WAVE.copy(), flux=flux, ivar=ivar)


REDSHIFT_COLUMNS = ("TARGETID", "Z", "ZWARN", "SPECTYPE")  # required; ZERR, DELTACHI2 optional


def read_redrock(path: str | Path) -> pd.DataFrame:
    """The REDSHIFTS table of a redrock file (ZBEST of an older zbest file), native-endian,
    SPECTYPE/SUBTYPE stripped. Needs TARGETID, Z, ZWARN, SPECTYPE."""
    path = Path(path)
    with _open_fits(path) as hdul:
        name = "ZBEST" if "ZBEST" in hdul and "REDSHIFTS" not in hdul else "REDSHIFTS"
        return _read_table(hdul, name, path, REDSHIFT_COLUMNS)


def redrock_path_for(coadd_path: str | Path) -> Path:
    """coadd-X.fits -> redrock-X.fits in the same directory (redrock-X.fits.gz if only that exists)."""
    coadd_path = Path(coadd_path)
    if not coadd_path.name.startswith("coadd-"):
        raise ValueError(f"{coadd_path}: a coadd file name starts with 'coadd-'")
    rest = coadd_path.name[len("coadd-") :]
    path = coadd_path.with_name("redrock-" + rest)
    other = coadd_path.with_name(
        "redrock-" + (rest.removesuffix(".gz") if rest.endswith(".gz") else rest + ".gz")
    )
    return other if other.exists() and not path.exists() else path


# --------------------------------------------------------------------------- selection

REJECTION_REASONS = ("missing_redshift", "fiberstatus", "zwarn", "spectype", "z_range")


@dataclass(frozen=True)
class Selection:
    """Which coadd spectra are kept for training (as SPENDER's DESI loader).

    Kept: a redrock row exists, COADD_FIBERSTATUS == 0, ZWARN == 0, SPECTYPE == spectype,
    z_min <= Z < z_max.
    """

    z_min: float = 0.0
    z_max: float = 0.8
    spectype: str = "GALAXY"
    require_fiberstatus_ok: bool = True
    require_zwarn_zero: bool = True


@dataclass
class SelectionResult:
    """table: the coadd's fibermap rows joined with Z, ZERR, ZWARN, SPECTYPE, DELTACHI2
    by TARGETID (file order, NaN / '' where redrock has no row); keep: (n,) bool;
    reason: (n,) the first rejection reason of each row ('' when kept);
    rejected: {reason: count} over REJECTION_REASONS, each row counted once."""

    table: pd.DataFrame
    keep: np.ndarray
    reason: np.ndarray
    rejected: dict[str, int] = field(default_factory=dict)


def _fiberstatus(fibermap: pd.DataFrame) -> np.ndarray | None:
    for column in ("COADD_FIBERSTATUS", "FIBERSTATUS"):
        if column in fibermap:
            return fibermap[column].to_numpy()
    return None


def select(coadd: Coadd, redshifts: pd.DataFrame, selection: Selection = Selection()) -> SelectionResult:
    """Join the coadd's targets with their redshifts and apply ``selection``.

    A target absent from ``redshifts`` is rejected as 'missing_redshift'; a file
    without a fibre-status column passes the fibre-status cut.
    """
    redshifts = redshifts.drop_duplicates("TARGETID")
    index = pd.Index(redshifts["TARGETID"].to_numpy()).get_indexer(coadd.targetid)
    found = index >= 0
    joined = {}
    for column, fill in (
        ("Z", np.nan),
        ("ZERR", np.nan),
        ("ZWARN", -1),
        ("SPECTYPE", ""),
        ("DELTACHI2", np.nan),
    ):
        values = redshifts[column].to_numpy() if column in redshifts else np.full(len(redshifts), fill)
        joined[column] = np.where(found, values[np.where(found, index, 0)] if len(values) else fill, fill)
    table = coadd.fibermap.reset_index(drop=True).assign(**joined)
    z = table["Z"].to_numpy(dtype=float)
    status = _fiberstatus(table)
    with np.errstate(invalid="ignore"):
        failed = {
            "missing_redshift": ~found,
            "fiberstatus": (status != 0)
            if selection.require_fiberstatus_ok and status is not None
            else np.zeros(len(table), bool),
            "zwarn": (table["ZWARN"].to_numpy() != 0)
            if selection.require_zwarn_zero
            else np.zeros(len(table), bool),
            "spectype": np.char.upper(table["SPECTYPE"].to_numpy().astype(str)) != selection.spectype.upper(),
            "z_range": ~((z >= selection.z_min) & (z < selection.z_max)),
        }
    reason = np.full(len(table), "", dtype=object)
    for name in reversed(REJECTION_REASONS):  # the first failing reason wins
        reason[failed[name]] = name
    rejected = {name: int(np.count_nonzero(reason == name)) for name in REJECTION_REASONS}
    return SelectionResult(table=table, keep=reason == "", reason=reason, rejected=rejected)
