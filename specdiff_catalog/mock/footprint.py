"""Where mock galaxies sit: positions in a sky patch, Legacy Surveys bricks and object ids.

Ids follow the real conventions: BRICKID is the Legacy Surveys brick of the position
(``desiutil.brick.Bricks``, 0.25 deg bricks), OBJID a per-brick index, and the 64-bit
id is the DESI TARGETID packing of desitarget: ``RELEASE << 42 | BRICKID << 22 | OBJID``.
The 22-bit OBJID carries the survey seed and the set (photometric or spectroscopic), so
two surveys with different seeds (0..1023), or the two sets of one survey, never share
an id: bits 0-10 the running index in the brick, bit 11 the set, bits 12-21 the seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np

RELEASE_DR10_SOUTH = 10000  # Legacy Surveys DR10 DECam (south) release number
PHOTOMETRIC, SPECTROSCOPIC = 0, 1
INDEX_BITS, SET_BITS, SEED_BITS = 11, 1, 10
MAX_SEED = (1 << SEED_BITS) - 1


@dataclass(frozen=True)
class SkyPatch:
    """A circular patch of sky (degrees), inside the DESI and LS DR10 south footprints.

    The default, 6 deg around (150, 2), is the COSMOS field's neighbourhood: Galactic
    latitude 36-48 deg, so E(B-V) varies across it.
    """

    ra_center: float = 150.0
    dec_center: float = 2.0
    radius: float = 6.0

    @property
    def area_deg2(self) -> float:
        return float(2 * np.pi * (1 - np.cos(np.radians(self.radius))) * (180 / np.pi) ** 2)


def draw_positions(n: int, patch: SkyPatch, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(ra, dec) in degrees of ``n`` points uniform on the sphere inside ``patch``."""
    cos_theta = rng.uniform(np.cos(np.radians(patch.radius)), 1.0, n)
    theta = np.arccos(cos_theta)
    phi = rng.uniform(0.0, 2 * np.pi, n)
    # point at angular distance theta, position angle phi from the patch centre
    ra0, dec0 = np.radians(patch.ra_center), np.radians(patch.dec_center)
    sin_dec = np.sin(dec0) * np.cos(theta) + np.cos(dec0) * np.sin(theta) * np.cos(phi)
    dec = np.arcsin(np.clip(sin_dec, -1, 1))
    dra = np.arctan2(np.sin(phi) * np.sin(theta) * np.cos(dec0), np.cos(theta) - np.sin(dec0) * sin_dec)
    return np.degrees(ra0 + dra) % 360.0, np.degrees(dec)


@cache
def _bricks():
    from desiutil.brick import Bricks

    return Bricks(0.25)


def brick_ids(ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
    """(N,) int32 Legacy Surveys BRICKID of each position."""
    return np.asarray(_bricks().brickid(ra, dec), dtype=np.int32)


def _index_in_brick(brickid: np.ndarray) -> np.ndarray:
    """(N,) running index of each object among the objects of its brick, in input order."""
    order = np.argsort(brickid, kind="stable")
    sorted_ids = brickid[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_ids)) + 1]
    group_start = np.repeat(starts, np.diff(np.r_[starts, len(sorted_ids)]))
    index = np.empty(len(brickid), dtype=np.int64)
    index[order] = np.arange(len(brickid)) - group_start
    return index


def object_ids(
    brickid: np.ndarray, seed: int, kind: int, release: int = RELEASE_DR10_SOUTH
) -> tuple[np.ndarray, np.ndarray]:
    """(OBJID (N,) int32, packed id (N,) int64) for objects in bricks ``brickid``.

    kind: PHOTOMETRIC or SPECTROSCOPIC. Raises ValueError when the seed is outside
    0..1023 or a brick holds more than 2048 objects of one set (enlarge the patch).
    """
    if not 0 <= seed <= MAX_SEED:
        raise ValueError(
            f"seed must be in 0..{MAX_SEED} so that object ids stay disjoint across seeds, got {seed}"
        )
    index = _index_in_brick(np.asarray(brickid))
    if len(index) and index.max() >= 1 << INDEX_BITS:
        raise ValueError(
            f"more than {1 << INDEX_BITS} objects in one brick: enlarge the sky patch (--patch-radius)"
        )
    objid = index | (kind << INDEX_BITS) | (seed << (INDEX_BITS + SET_BITS))
    packed = (np.int64(release) << 42) | (np.asarray(brickid, dtype=np.int64) << 22) | objid
    return objid.astype(np.int32), packed.astype(np.int64)
