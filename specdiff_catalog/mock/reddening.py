"""Milky Way reddening E(B-V) of a position: a cosecant law with small-scale lognormal structure.

The real map (Schlegel, Finkbeiner & Davis 1998) is a download we cannot make here, so
E(B-V) follows the plane-parallel dust-slab law E = ebv_pole / sin|b| (Galactic latitude
from astropy coordinates), times a lognormal factor that is constant in each HEALPix
cell of ``cell_order`` (order 9: 6.9 arcmin, near SFD's 6.1 arcmin resolution). The
factor hashes the cell index with a fixed salt, so the "sky" is the same for every
survey seed and every object in a cell shares it, as with a real map.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import ndtri

from specdiff_catalog.hashing import hash_uniform


@dataclass(frozen=True)
class ReddeningModel:
    """ebv_pole: E(B-V) toward the Galactic poles (mag; SFD is ~0.015-0.03 at |b| > 60 deg).
    scatter: sigma of ln E(B-V) between cells. min_latitude: |b| floor (deg) of the law.
    """

    ebv_pole: float = 0.025
    scatter: float = 0.3
    cell_order: int = 9
    min_latitude: float = 5.0
    salt: int = 1998


def ebv(ra: np.ndarray, dec: np.ndarray, model: ReddeningModel = ReddeningModel()) -> np.ndarray:
    """(N,) float32 E(B-V) in magnitudes at (ra, dec) in degrees (ICRS), SFD-scale."""
    from astropy import units as u
    from astropy.coordinates import SkyCoord
    from hats.pixel_math.healpix_shim import radec2pix

    ra, dec = np.asarray(ra, dtype=float), np.asarray(dec, dtype=float)
    if len(ra) == 0:
        return np.empty(0, np.float32)
    b = SkyCoord(ra=ra * u.deg, dec=dec * u.deg, frame="icrs").galactic.b.deg
    smooth = model.ebv_pole / np.sin(np.radians(np.maximum(np.abs(b), model.min_latitude)))
    cell = radec2pix(model.cell_order, ra, dec)
    gauss = ndtri(np.clip(hash_uniform(cell, model.salt), 1e-12, 1 - 1e-12))
    factor = np.exp(model.scatter * gauss - 0.5 * model.scatter**2)  # mean 1
    return (smooth * factor).astype(np.float32)
