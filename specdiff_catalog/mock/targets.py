"""Which mock objects enter the photometric catalog, and which become DESI spectroscopic targets.

The DESI main-survey galaxy classes, with the published cuts as desitarget's
``cuts.py`` implements them for the south (DECaLS) imaging, on Milky-Way-corrected
fluxes (flux / MW_TRANSMISSION) of the Legacy Surveys photometry:

- BGS Bright (Hahn et al. 2023, AJ 165, 253): 12 < r < 19.5, -1 < g-r < 4, -1 < r-z < 4 and
  the fibre-magnitude cut rfib < r + 5.1 (r < 17.8) or rfib < 22.9 (17.8 < r < 20).
- LRG (Zhou et al. 2023, AJ 165, 58), south: z - W1 > 0.8 (r - z) - 0.6; zfib < 21.6;
  (g - W1 > 2.9) or (r - W1 > 1.8); ((r - W1 > 1.8 (W1 - 17.14)) and (r - W1 > W1 - 16.33)) or (r - W1 > 3.3).
- ELG (Raichoor et al. 2023, AJ 165, 126): g > 20, gfib < 24.1, r - z > 0.15,
  g - r < 0.5 (r - z) + 0.1, and g - r < -1.2 (r - z) + 1.3 (LOP) or
  -1.2 (r - z) + 1.3 <= g - r < -1.2 (r - z) + 1.6 (VLO).

Quality cuts that need columns the mock does not have (NOBS, MASKBITS, Gaia) are not
applied; the flux signal-to-noise cuts are (LRG: W1 S/N > 4, r and z S/N > 0; ELG: g, r, z S/N > 0).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

# desitarget's targetmask bits (main survey)
DESI_TARGET_BITS = {"LRG": 0, "ELG": 1, "ELG_LOP": 5, "ELG_VLO": 7, "BGS_ANY": 60}
BGS_TARGET_BITS = {"BGS_BRIGHT": 1}
# one class per target; an object selected by several is labelled by the first of these
CLASS_PRIORITY = ("LRG", "ELG", "BGS")
# the class of a deep calibration field's spectra: catalog galaxies observed whatever their targeting
DEEP_CLASS = "DEEP"


@dataclass(frozen=True)
class PhotometricLimit:
    """A catalog row exists when any band is brighter than its limit (AB, MW-corrected): a multi-band
    detection at the 5-sigma depths of a 0.45" exponential galaxy that DECaLS was designed to reach
    (Dey et al. 2019, AJ 157, 168: g 24.0, r 23.4, z 22.5)."""

    limits: dict[str, float] = field(default_factory=lambda: {"G": 24.0, "R": 23.4, "Z": 22.5})

    def __call__(self, table: pd.DataFrame) -> np.ndarray:
        """(N,) bool: rows of ``table`` (Legacy Surveys columns) inside the catalog."""
        mags = _magnitudes(table, tuple(self.limits))
        return np.any([mags[b] < lim for b, lim in self.limits.items()], axis=0)


def _magnitudes(table: pd.DataFrame, bands: tuple[str, ...], prefix: str = "FLUX_") -> dict[str, np.ndarray]:
    """AB magnitudes of MW-corrected fluxes (nanomaggies), fluxes clipped at 1e-7 (desitarget's guard)."""
    out = {}
    for b in bands:
        flux = table[f"{prefix}{b}"].to_numpy(np.float64) / table[f"MW_TRANSMISSION_{b}"].to_numpy(np.float64)
        out[b] = 22.5 - 2.5 * np.log10(np.clip(np.nan_to_num(flux, nan=0.0), 1e-7, None))
    return out


def _snr(table: pd.DataFrame, band: str) -> np.ndarray:
    return np.nan_to_num(
        table[f"FLUX_{band}"].to_numpy(np.float64) * np.sqrt(table[f"FLUX_IVAR_{band}"].to_numpy(np.float64))
    )


def bgs_bright(table: pd.DataFrame) -> np.ndarray:
    """(N,) BGS Bright (Hahn et al. 2023; desitarget isBGS_colors, targtype 'bright', south)."""
    m = _magnitudes(table, ("G", "R", "Z"))
    rfib = _magnitudes(table, ("R",), prefix="FIBERFLUX_")["R"]
    g, r, z = m["G"], m["R"], m["Z"]
    fibre = ((rfib < r + 5.1) & (r < 17.8)) | ((rfib < 22.9) & (r < 20.0) & (r > 17.8))
    return (g - r > -1) & (g - r < 4) & (r - z > -1) & (r - z < 4) & fibre & (r < 19.5) & (r >= 12.0)


def lrg(table: pd.DataFrame) -> np.ndarray:
    """(N,) LRG, south (Zhou et al. 2023; desitarget isLRG_colors + notinLRG_mask flux cuts)."""
    m = _magnitudes(table, ("G", "R", "Z", "W1"))
    zfib = _magnitudes(table, ("Z",), prefix="FIBERFLUX_")["Z"]
    g, r, z, w1 = m["G"], m["R"], m["Z"], m["W1"]
    quality = (_snr(table, "R") > 0) & (_snr(table, "Z") > 0) & (_snr(table, "W1") > 4)
    sliding = ((r - w1 > (w1 - 17.14) * 1.8) & (r - w1 > (w1 - 16.33) * 1.0)) | (r - w1 > 3.3)
    return (
        quality & (z - w1 > 0.8 * (r - z) - 0.6) & (zfib < 21.6) & ((g - w1 > 2.9) | (r - w1 > 1.8)) & sliding
    )


def elg(table: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """((N,) ELG_LOP, (N,) ELG_VLO), south (Raichoor et al. 2023; desitarget isELG_colors)."""
    m = _magnitudes(table, ("G", "R", "Z"))
    gfib = _magnitudes(table, ("G",), prefix="FIBERFLUX_")["G"]
    g, r, z = m["G"], m["R"], m["Z"]
    quality = (_snr(table, "G") > 0) & (_snr(table, "R") > 0) & (_snr(table, "Z") > 0)
    base = quality & (g > 20) & (gfib < 24.1) & (r - z > 0.15) & (g - r < 0.5 * (r - z) + 0.1)
    lop = base & (g - r < -1.2 * (r - z) + 1.3)
    vlo = base & (g - r < -1.2 * (r - z) + 1.6) & (g - r >= -1.2 * (r - z) + 1.3)
    return lop, vlo


def select_targets(table: pd.DataFrame) -> pd.DataFrame:
    """TARGET_CLASS ('' when none), DESI_TARGET and BGS_TARGET bit masks for Legacy Surveys rows."""
    is_lrg, is_bgs = lrg(table), bgs_bright(table)
    is_lop, is_vlo = elg(table)
    is_elg = is_lop | is_vlo
    desi = (
        (is_lrg.astype(np.int64) << DESI_TARGET_BITS["LRG"])
        | (is_elg.astype(np.int64) << DESI_TARGET_BITS["ELG"])
        | (is_lop.astype(np.int64) << DESI_TARGET_BITS["ELG_LOP"])
        | (is_vlo.astype(np.int64) << DESI_TARGET_BITS["ELG_VLO"])
        | (is_bgs.astype(np.int64) << DESI_TARGET_BITS["BGS_ANY"])
    )
    chosen = {"LRG": is_lrg, "ELG": is_elg, "BGS": is_bgs}
    label = np.full(len(table), "", dtype=object)
    for name in reversed(CLASS_PRIORITY):
        label[chosen[name]] = name
    return pd.DataFrame(
        {
            "TARGET_CLASS": label.astype(str),
            "DESI_TARGET": desi,
            "BGS_TARGET": is_bgs.astype(np.int64) << BGS_TARGET_BITS["BGS_BRIGHT"],
        },
        index=table.index,
    )
