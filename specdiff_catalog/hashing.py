"""Counter-based hashing of object ids: stable splits and per-object random streams."""

from __future__ import annotations

import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def splitmix64(x: np.ndarray) -> np.ndarray:
    """The SplitMix64 finaliser (Steele et al. 2014): a bijective, well-mixed uint64 hash."""
    z = np.asarray(x).astype(np.uint64) + _GOLDEN
    with np.errstate(over="ignore"):
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def hash_uniform(ids: np.ndarray, salt: int = 0) -> np.ndarray:
    """(N,) float64 in [0, 1) determined by (salt, id) alone, whatever else is in ``ids``."""
    with np.errstate(over="ignore"):
        key = splitmix64(np.asarray(ids).astype(np.int64).view(np.uint64) ^ splitmix64(np.uint64(salt)))
    return (key >> np.uint64(11)).astype(np.float64) * 2.0**-53


def validation_mask(target_ids: np.ndarray, fraction: float = 0.1, salt: int = 0) -> np.ndarray:
    """(N,) bool, True for the validation split: stable per TARGETID across files and runs."""
    return hash_uniform(target_ids, salt) < fraction
