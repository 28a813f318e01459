"""A toy galaxy population in Legacy Surveys columns, for baseline tests and benchmarks.

Colours are smooth functions of redshift and a red/blue type parameter (so redshift is
learnable, with a type-redshift degeneracy), fluxes carry the noise their FLUX_IVAR
states, Milky Way extinction comes from EBV, and a few objects miss a band or have no
photometry at all, as real catalogs do. Not a physical model: the mock survey
(``specdiff_catalog.mock``) is that.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from specdiff_catalog.bands import BandSet

DEPTH_5SIGMA = {"g": 24.0, "r": 23.4, "z": 22.5, "W1": 20.8, "W2": 20.0}  # AB magnitudes


def toy_photometry(n: int, seed: int = 0, bandset: str = "ls-grzw1w2") -> pd.DataFrame:
    """n objects with TARGETID, Z, EBV and FLUX_*/FLUX_IVAR_* (nanomaggies) of ``bandset``
    (g, r, z, W1, W2). 1% miss W2, 0.5% have no photometry (all fluxes 0, ivar 0)."""
    rng = np.random.default_rng(seed)
    bands = BandSet.load(bandset)
    z = np.clip(0.02 + rng.gamma(2.0, 0.13, n), 0.02, 1.4)
    red = rng.random(n)  # 1 = red and dead, 0 = star forming
    r = rng.uniform(17.5, 21.5, n)
    g = r + 0.35 + 1.25 * red * np.tanh(z / 0.35) + 0.35 * (1 - red) * z
    zmag = r - (0.25 + 0.55 * z + 0.3 * red * np.tanh(z / 0.5))
    w1 = zmag - (0.1 + 1.2 * z - 0.25 * red)
    w2 = w1 - (-0.45 + 0.7 * z)
    mags = {"g": g, "r": r, "z": zmag, "W1": w1, "W2": w2}
    ebv = rng.uniform(0.0, 0.1, n)
    trans = bands.mw_transmission(ebv)
    table = {"TARGETID": np.arange(10**12, 10**12 + n), "Z": z, "EBV": ebv}
    no_phot = rng.random(n) < 0.005
    for j, band in enumerate(bands.bands):
        sigma = 10 ** (-0.4 * (DEPTH_5SIGMA[band.name] - 22.5)) / 5
        flux = 10 ** (-0.4 * (mags[band.name] - 22.5)) * trans[:, j] + sigma * rng.normal(size=n)
        ivar = np.full(n, sigma**-2)
        if band.name == "W2":
            ivar[rng.random(n) < 0.01] = 0.0
        flux[no_phot], ivar[no_phot] = 0.0, 0.0
        table[band.flux], table[band.ivar] = flux, ivar
    return pd.DataFrame(table)
