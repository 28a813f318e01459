"""Small DESI coadd/redrock pairs written with mock.desi_files, for the reader and prepare tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from specdiff_catalog.io.desi import ARM_WAVE, ARMS
from specdiff_catalog.mock.desi_files import write_coadd, write_redrock

BANDS = ("G", "R", "Z", "W1", "W2")


def fibermap(targetid: np.ndarray, seed: int = 0, **columns: np.ndarray) -> pd.DataFrame:
    """A FIBERMAP with positions, Legacy Surveys photometry (nanomaggies) and status 0."""
    rng = np.random.default_rng(seed)
    n = len(targetid)
    table = {
        "TARGETID": np.asarray(targetid, dtype=np.int64),
        "COADD_FIBERSTATUS": np.zeros(n, np.int32),
        "TARGET_RA": rng.uniform(0, 360, n),
        "TARGET_DEC": rng.uniform(-10, 60, n),
        "EBV": rng.uniform(0.01, 0.1, n).astype(np.float32),
        "PHOTSYS": np.array(["S", "N"])[rng.integers(0, 2, n)],
    }
    for band in BANDS:
        table[f"FLUX_{band}"] = rng.uniform(1, 20, n).astype(np.float32)
        table[f"FLUX_IVAR_{band}"] = rng.uniform(5, 50, n).astype(np.float32)
    table.update(columns)
    return pd.DataFrame(table)


def arm_spectra(n: int, seed: int = 0) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """flux (a sloped continuum plus noise, 1e-17 erg/s/cm^2/A) and ivar per arm, (n, P_arm)."""
    rng = np.random.default_rng(seed)
    flux, ivar = {}, {}
    for arm in ARMS:
        wave = ARM_WAVE[arm]
        level = rng.uniform(0.5, 5, (n, 1))
        ivar[arm] = rng.uniform(1, 100, (n, wave.size)).astype(np.float32)
        flux[arm] = (level * (wave / 6000.0) + rng.normal(size=(n, wave.size)) / np.sqrt(ivar[arm])).astype(
            np.float32
        )
    return flux, ivar


def write_pair(
    directory: Path,
    name: str,
    targetid: np.ndarray,
    z: np.ndarray,
    *,
    seed: int = 0,
    spectype: list[str] | None = None,
    zwarn: np.ndarray | None = None,
    redrock_rows: np.ndarray | None = None,
    **fibermap_columns: np.ndarray,
) -> Path:
    """Write coadd-NAME.fits and redrock-NAME.fits; redrock_rows picks the targets redrock has."""
    directory.mkdir(parents=True, exist_ok=True)
    n = len(targetid)
    fm = fibermap(targetid, seed, **fibermap_columns)
    flux, ivar = arm_spectra(n, seed)
    coadd = directory / f"coadd-{name}.fits"
    write_coadd(coadd, fm, flux, ivar)
    redshifts = pd.DataFrame(
        {
            "TARGETID": fm["TARGETID"],
            "Z": np.asarray(z, dtype=float),
            "ZERR": np.full(n, 1e-4),
            "ZWARN": np.zeros(n, np.int64) if zwarn is None else zwarn,
            "SPECTYPE": ["GALAXY"] * n if spectype is None else spectype,
            "DELTACHI2": np.full(n, 100.0),
        }
    )
    rows = np.arange(n) if redrock_rows is None else redrock_rows
    write_redrock(directory / f"redrock-{name}.fits", redshifts.iloc[rows], fm.iloc[rows])
    return coadd
