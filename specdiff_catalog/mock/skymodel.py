"""The dark night-sky spectrum seen by a DESI fibre: a smooth continuum plus emission lines.

Line positions come from a reference list (``data/night_sky_lines.ecsv``): the OH forest
of Rousselot et al. (2000) and the atomic lines [O I] 5577, 6300, 6364, Na D and the Hg I
street-light lines (Osterbrock et al. 1996), all vacuum wavelengths. Lines are Gaussians
of DESI's instrumental width. Surface brightness is in 1e-17 erg/s/cm^2/A/arcsec^2.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

LINE_LIST = Path(__file__).parent / "data" / "night_sky_lines.ecsv"
_HC = 1.98644586e-8  # erg A
_RAYLEIGH = 1e6 / (4 * np.pi) / 4.25451703e10  # photons/s/cm^2/arcsec^2 per Rayleigh


@dataclass(frozen=True)
class SkyModel:
    """continuum_*: AB mag/arcsec^2 of the sky between the lines at these wavelengths (A).
    oh_rayleigh: Rayleigh per unit of Rousselot's relative OH intensity.
    line_sigma: Gaussian sigma of the lines (A), DESI's line-spread function (FWHM ~1.8 A).
    Calibrated against a real DESI coadd's noise (docs/mock.md, tests/test_mock.py).
    """

    continuum_wave: tuple[float, ...] = (
        3600,
        4000,
        4500,
        5000,
        5500,
        6000,
        6500,
        7000,
        7500,
        8000,
        8500,
        9000,
        9824,
    )
    continuum_ab: tuple[float, ...] = (
        22.5,
        22.4,
        22.2,
        21.9,
        21.7,
        21.4,
        21.2,
        21.0,
        20.8,
        20.6,
        20.4,
        20.2,
        20.0,
    )
    oh_rayleigh: float = 8.5
    line_sigma: float = 0.75


@cache
def _lines() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(wavelength, intensity, is_oh) of the reference line list."""
    from astropy.table import Table

    table = Table.read(LINE_LIST, format="ascii.ecsv")
    return (
        np.asarray(table["wavelength"], dtype=float),
        np.asarray(table["intensity"], dtype=float),
        np.asarray(table["scale"]) == "oh_relative",
    )


def continuum(wave: np.ndarray, model: SkyModel = SkyModel()) -> np.ndarray:
    """(P,) sky continuum surface brightness at ``wave`` (A) in 1e-17 erg/s/cm^2/A/arcsec^2."""
    ab = np.interp(wave, model.continuum_wave, model.continuum_ab)
    f_nu = 10.0 ** (-0.4 * (ab + 48.6))  # erg/s/cm^2/Hz/arcsec^2
    return f_nu * 2.99792458e18 / wave**2 / 1e-17


def line_emission(wave: np.ndarray, model: SkyModel = SkyModel()) -> np.ndarray:
    """(P,) sky emission-line surface brightness at ``wave`` (A), same unit as ``continuum``."""
    center, intensity, is_oh = _lines()
    rayleigh = np.where(is_oh, intensity * model.oh_rayleigh, intensity)
    energy = rayleigh * _RAYLEIGH * _HC / center / 1e-17  # 1e-17 erg/s/cm^2/arcsec^2 per line
    near = np.abs(wave[:, None] - center[None, :]) < 6 * model.line_sigma
    rows, cols = np.nonzero(near)
    profile = np.exp(-0.5 * ((wave[rows] - center[cols]) / model.line_sigma) ** 2) / (
        np.sqrt(2 * np.pi) * model.line_sigma
    )
    return np.bincount(rows, weights=energy[cols] * profile, minlength=len(wave))


def sky_spectrum(wave: np.ndarray, model: SkyModel = SkyModel()) -> np.ndarray:
    """(P,) total sky surface brightness at ``wave`` (A) in 1e-17 erg/s/cm^2/A/arcsec^2."""
    return continuum(wave, model) + line_emission(wave, model)
