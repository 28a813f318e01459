"""What redrock would report for a mock spectrum: Z, ZERR, ZWARN, DELTACHI2, SPECTYPE.

Not a template fit: an emulation tied to each spectrum's signal-to-noise. Good fits
scatter around the true redshift by ZERR; a fraction of fits fails, more often at low
S/N, with ZWARN = SMALL_DELTA_CHI2 and DELTACHI2 < 9, and half of the failures land
at an unrelated redshift (catastrophic), as redrock's do.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

SMALL_DELTA_CHI2 = 1 << 2  # redrock ZWARN bit


@dataclass(frozen=True)
class RedrockModel:
    """zerr_floor: ZERR / (1+z) at high S/N; zerr_snr: S/N at which ZERR doubles.
    fail_floor / fail_faint / fail_snr: failure probability
    fail_floor + fail_faint exp(-(S/N / fail_snr)^2 / 2).
    deltachi2_per_snr2: DELTACHI2 / (integrated S/N)^2 of good fits. z_fit_max: redrock's galaxy range.
    """

    zerr_floor: float = 2e-5
    zerr_snr: float = 20.0
    fail_floor: float = 0.01
    fail_faint: float = 0.4
    fail_snr: float = 12.0
    catastrophic: float = 0.5
    deltachi2_per_snr2: float = 0.05
    z_fit_max: float = 1.7


def integrated_snr(flux: dict[str, np.ndarray], variance: dict[str, np.ndarray]) -> np.ndarray:
    """(N,) sqrt(sum over arms and pixels of flux^2 / variance) of noiseless spectra."""
    return np.sqrt(sum(np.sum(flux[a] ** 2 / variance[a], axis=1) for a in flux))


def emulate_redrock(
    targetid: np.ndarray,
    z_true: np.ndarray,
    snr: np.ndarray,
    rng: np.random.Generator,
    model: RedrockModel = RedrockModel(),
) -> pd.DataFrame:
    """REDSHIFTS rows (TARGETID, Z, ZERR, ZWARN, DELTACHI2, SPECTYPE, SUBTYPE) for N spectra."""
    n = len(z_true)
    zerr = model.zerr_floor * (1 + z_true) * (1 + model.zerr_snr / np.maximum(snr, 1e-3))
    fail = rng.uniform(size=n) < model.fail_floor + model.fail_faint * np.exp(
        -0.5 * (snr / model.fail_snr) ** 2
    )
    catastrophic = fail & (rng.uniform(size=n) < model.catastrophic)
    z = z_true + zerr * rng.standard_normal(n)
    z = np.where(catastrophic, rng.uniform(0.0, model.z_fit_max, n), z)
    deltachi2 = model.deltachi2_per_snr2 * snr**2 * rng.lognormal(0.0, 0.3, n) + 9.0
    deltachi2 = np.where(fail, rng.uniform(0.0, 9.0, n), deltachi2)
    return pd.DataFrame(
        {
            "TARGETID": targetid,
            "Z": z,
            "ZERR": np.where(fail, 10 * zerr, zerr),
            "ZWARN": np.where(fail, SMALL_DELTA_CHI2, 0).astype(np.int64),
            "DELTACHI2": deltachi2,
            "SPECTYPE": np.full(n, "GALAXY"),
            "SUBTYPE": np.full(n, ""),
        }
    )
