"""Counter-based hashing of object ids: stable splits and per-object random streams.

Everything random that must not depend on file order, batch size or partitioning is
a pure function of integer counters: ``counter_hash(seed, c1, c2, ...)`` folds the
counters into a SplitMix64 state one by one (h <- splitmix64(h ^ c)). There is one
implementation per array backend: numpy (uint64) and torch (int64, where additions
and multiplications wrap and logical right shifts are emulated with masks, so it runs
on any torch device). ``tests/test_hashing.py`` checks that the two agree bit for bit.

Normal deviates come from the Box-Muller transform of two hashes. Its log, sin and
cos are evaluated here with +, -, *, / and sqrt only, which IEEE 754 rounds exactly
on every backend and SIMD path: a deviate is bitwise the same whatever array it is
computed in, whereas library log/cos may differ in the last bit between the vector
body and the scalar tail of a loop.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MUL1 = 0xBF58476D1CE4E5B9
_MUL2 = 0x94D049BB133111EB
_TWO53 = 2.0**-53


def splitmix64(x: np.ndarray) -> np.ndarray:
    """The SplitMix64 finaliser (Steele et al. 2014): a bijective, well-mixed uint64 hash."""
    z = np.asarray(x).astype(np.uint64) + _GOLDEN
    with np.errstate(over="ignore"):
        z = (z ^ (z >> np.uint64(30))) * np.uint64(_MUL1)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(_MUL2)
    return z ^ (z >> np.uint64(31))


def _as_uint64(x: Any) -> np.ndarray:
    """Integers (signed or unsigned, scalar or array) as uint64 bit patterns."""
    x = np.asarray(x)
    return x.astype(np.int64).view(np.uint64) if x.dtype.kind == "i" else x.astype(np.uint64)


def counter_hash(seed: int, *counters: Any) -> np.ndarray:
    """uint64 hash of (seed, c1, c2, ...), broadcast over the counter arrays."""
    h = splitmix64(_as_uint64(seed))
    for counter in counters:
        h = splitmix64(h ^ _as_uint64(counter))
    return h


def hash_uniform(ids: npt.ArrayLike, salt: int = 0) -> np.ndarray:
    """(N,) float64 in [0, 1) determined by (salt, id) alone, whatever else is in ``ids``."""
    return (counter_hash(salt, np.asarray(ids).astype(np.int64)) >> np.uint64(11)).astype(np.float64) * _TWO53


def validation_mask(target_ids: np.ndarray, fraction: float = 0.1, salt: int = 0) -> np.ndarray:
    """(N,) bool, True for the validation split: stable per TARGETID across files and runs."""
    return hash_uniform(target_ids, salt) < fraction


# --- torch backend: int64 two's complement, same bits as the numpy functions -------------


def _signed(value: int) -> int:
    """A uint64 constant as the int64 with the same bits."""
    return value - (1 << 64) if value >= 1 << 63 else value


def _shr(z: torch.Tensor, bits: int) -> torch.Tensor:
    """Logical right shift of int64 bit patterns (torch's >> is arithmetic)."""
    return (z >> bits) & ((1 << (64 - bits)) - 1)


def splitmix64_torch(x: torch.Tensor) -> torch.Tensor:
    """``splitmix64`` on int64 tensors (any device): the same bits, read as int64."""
    z = x.to(torch.int64) + _signed(int(_GOLDEN))
    z = (z ^ _shr(z, 30)) * _signed(_MUL1)
    z = (z ^ _shr(z, 27)) * _signed(_MUL2)
    return z ^ _shr(z, 31)


def seed_key(seed: int) -> int:
    """The int64 state that starts every counter chain of ``seed`` (splitmix64(seed))."""
    return _signed(int(splitmix64(_as_uint64(seed))))


def mix_torch(key: torch.Tensor | int, counter: torch.Tensor | int) -> torch.Tensor:
    """One fold of ``counter_hash``: splitmix64(key ^ counter), broadcast, int64."""
    key = torch.as_tensor(key, dtype=torch.int64)
    return splitmix64_torch(key ^ torch.as_tensor(counter, dtype=torch.int64, device=key.device))


def counter_hash_torch(seed: int, *counters: torch.Tensor | int) -> torch.Tensor:
    """``counter_hash`` in torch: int64 bit patterns equal to the numpy uint64 result."""
    h = torch.as_tensor(seed_key(seed), dtype=torch.int64)
    for counter in counters:
        h = mix_torch(h, counter)
    return h


def unit_float(h: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """float64 in [0, 1) from the top 53 bits of 64-bit hashes (numpy uint64 or torch int64)."""
    if isinstance(h, torch.Tensor):
        return _shr(h, 11).to(torch.float64) * _TWO53
    return (np.asarray(h, dtype=np.uint64) >> np.uint64(11)).astype(np.float64) * _TWO53


# --- Box-Muller with exactly rounded operations only ----------------------------------------

_LOG_TERMS = [1.0 / (2 * k + 1) for k in range(13)]  # 2 atanh(s) = 2 s sum s^2k/(2k+1)
_SIN_TERMS = [(-1.0) ** k / math.factorial(2 * k + 1) for k in range(13)]
_COS_TERMS = [(-1.0) ** k / math.factorial(2 * k) for k in range(13)]


def _horner(x: Any, coefficients: list[float]) -> Any:
    acc = coefficients[-1] + 0.0 * x
    for c in reversed(coefficients[:-1]):
        acc = acc * x + c
    return acc


def _f64(a: Any, xp: Any) -> Any:
    """An integer or boolean array as float64 (exact), in its own backend."""
    return a.to(torch.float64) if xp is torch else np.asarray(a).astype(np.float64)


def _log(u: Any, xp: Any) -> Any:
    """Natural log of float64 u > 0 to ~1e-16: frexp, then 2 atanh((m-1)/(m+1)), |s| < 0.172."""
    m, e = xp.frexp(u)
    small = _f64(m < math.sqrt(0.5), xp)
    m = m + m * small
    s = (m - 1.0) / (m + 1.0)
    return (_f64(e, xp) - small) * math.log(2.0) + 2.0 * s * _horner(s * s, _LOG_TERMS)


def _power_of_two(exponent: Any, xp: Any) -> Any:
    """2.0**exponent (float64) for integer exponents in [-1022, 1023], built from its bits."""
    if xp is torch:
        return ((exponent.to(torch.int64) + 1023) << 52).view(torch.float64)
    return ((np.asarray(exponent).astype(np.int64) + 1023) << 52).view(np.float64)


def _sqrt(v: Any, xp: Any) -> Any:
    """sqrt of float64 v >= 0 to ~1 ulp: frexp to an even exponent, a linear first guess
    on [0.5, 2) and five Newton steps (the library sqrt differs between numpy and torch)."""
    m, e = xp.frexp(v)
    odd = e & 1
    m = m + m * _f64(odd, xp)
    y = 0.3 + 0.6 * m
    for _ in range(5):
        y = 0.5 * (y + m / y)
    return y * _power_of_two((e - odd) >> 1, xp) * _f64(v > 0, xp)


def box_muller(u1: Any, u2: Any, quadrant: Any) -> tuple[Any, Any]:
    """Two independent N(0, 1) float64 arrays from uniforms (numpy or torch, same bits).

    u1 in (0, 1] sets the radius sqrt(-2 ln u1); the angle is (quadrant + u2) pi/2 with
    u2 in [0, 1) and quadrant an integer array in {0, 1, 2, 3}.
    """
    xp = torch if isinstance(u1, torch.Tensor) else np
    radius = _sqrt(-2.0 * _log(u1, xp), xp)
    theta = u2 * (math.pi / 2)
    theta2 = theta * theta
    sin, cos = theta * _horner(theta2, _SIN_TERMS), _horner(theta2, _COS_TERMS)
    q0, q1, q2, q3 = (_f64(quadrant == q, xp) for q in range(4))
    # rotate (cos, sin) by quadrant * 90 degrees; exactly one indicator is 1
    return radius * (q0 * cos - q1 * sin - q2 * cos + q3 * sin), radius * (
        q0 * sin + q1 * cos - q2 * sin - q3 * cos
    )


def hashes_to_normals(h1: np.ndarray | torch.Tensor, h2: np.ndarray | torch.Tensor) -> tuple[Any, Any]:
    """Box-Muller pair (float64) from two 64-bit hash arrays: u1 from h1's top 53 bits
    (shifted into (0, 1]), the quadrant from h2's top 2 bits, u2 from its next 53."""
    quadrant: np.ndarray | torch.Tensor
    u2: np.ndarray | torch.Tensor
    if isinstance(h1, torch.Tensor):
        h2t = h2 if isinstance(h2, torch.Tensor) else torch.as_tensor(h2)
        quadrant = _shr(h2t, 62)
        u2 = (_shr(h2t, 9) & ((1 << 53) - 1)).to(torch.float64) * _TWO53
    else:
        h2n = np.asarray(h2, dtype=np.uint64)
        quadrant = (h2n >> np.uint64(62)).astype(np.int64)
        u2 = ((h2n >> np.uint64(9)) & np.uint64((1 << 53) - 1)).astype(np.float64) * _TWO53
    return box_muller(unit_float(h1) + _TWO53, u2, quadrant)


def counter_normals(seed: int, ids: Any, samples: Any, step: int, n_dims: int) -> np.ndarray:
    """(..., n_dims) float64 N(0, 1): deviate d of (seed, id, sample, step) for broadcast
    ``ids`` and ``samples``. Dimension d is the cos (even d) or sin (odd d) output of the
    Box-Muller pair d // 2, whose hashes are counter_hash(seed, id, sample, step, 2p + {0, 1})."""
    h = counter_hash(seed, ids, samples, step)[..., None]
    pair = 2 * np.arange((n_dims + 1) // 2, dtype=np.uint64)
    c, s = hashes_to_normals(splitmix64(h ^ pair), splitmix64(h ^ (pair + np.uint64(1))))
    return np.stack([c, s], axis=-1).reshape(*c.shape[:-1], -1)[..., :n_dims]


def counter_normals_torch(
    seed: int, ids: torch.Tensor, samples: torch.Tensor, step: int, n_dims: int
) -> torch.Tensor:
    """``counter_normals`` in torch on the device of ``ids``: the same float64 bits."""
    h = counter_hash_torch(seed, ids, samples.to(ids.device), step)[..., None]
    pair = 2 * torch.arange((n_dims + 1) // 2, dtype=torch.int64, device=ids.device)
    c, s = hashes_to_normals(mix_torch(h, pair), mix_torch(h, pair + 1))
    return torch.stack([c, s], dim=-1).reshape(*c.shape[:-1], -1)[..., :n_dims]
