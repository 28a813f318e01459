"""DESI spectroscopic files: coadd and redrock FITS, read in the DESI data model.

A coadd file holds n targets: HDUs FIBERMAP (one row per target, with the Legacy
Surveys photometry), EXP_FIBERMAP, then per spectrograph arm b, r, z the HDUs
``{ARM}_WAVELENGTH`` (P_arm,) Angstrom, ``{ARM}_FLUX`` (n, P_arm) in
1e-17 erg/s/cm^2/A, ``{ARM}_IVAR`` (n, P_arm), ``{ARM}_MASK`` (n, P_arm) int32
(non-zero = bad) and ``{ARM}_RESOLUTION`` (n, 11, P_arm) diagonals of the resolution
matrix; last SCORES. Its redrock file holds REDSHIFTS, FIBERMAP, EXP_FIBERMAP, TSNR2.
The mock writes such files with ``mock.desi_files``; which spectra train a model is
``selection.SpectroSelection``'s business.

Reading merges the three arms onto one 0.8 A grid, ``WAVE`` (3600-9824 A, 7781 px):
the arm grids sit on the same lattice, so the overlaps 5760-5800 and 7520-7620 A
are an inverse-variance weighted mean of the arms.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from astropy.io import fits
from astropy.utils.exceptions import AstropyUserWarning

ARMS = ("b", "r", "z")
WAVE_STEP = 0.8  # Angstrom, the DESI coadd wavelength lattice


def _lattice(lo: float, hi: float) -> np.ndarray:
    return lo + WAVE_STEP * np.arange(round((hi - lo) / WAVE_STEP) + 1)


ARM_WAVE: dict[str, np.ndarray] = {
    "b": _lattice(3600.0, 5800.0),  # 2751 px
    "r": _lattice(5760.0, 7620.0),  # 2326 px
    "z": _lattice(7520.0, 9824.0),  # 2881 px
}
WAVE: np.ndarray = _lattice(3600.0, 9824.0)  # 7781 px, merged grid


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
            columns[column] = np.char.strip(values).astype(object)
        else:  # vector columns: one array per row
            columns[column] = list(values) if values.ndim > 1 else values
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
    start = round((wave[0] - WAVE[0]) / WAVE_STEP)
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
