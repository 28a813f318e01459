"""Counter-based hashes and normals: numpy and torch agree bit for bit; the deviates are N(0, 1)."""

import numpy as np
import pytest
import scipy.stats
import torch

from specdiff_catalog import hashing
from specdiff_catalog.hashing import (
    counter_hash,
    counter_hash_torch,
    counter_normals,
    counter_normals_torch,
    hash_uniform,
    splitmix64,
    splitmix64_torch,
    unit_float,
)

IDS = np.array([0, 1, -1, 7, -(2**63), 2**63 - 1, 39627812345678901, 2**40 + 3], dtype=np.int64)


def test_splitmix64_reference_values():
    # the first two outputs of Vigna's splitmix64.c generator seeded with 0
    assert int(splitmix64(np.uint64(0))) == 0xE220A8397B1DCDAF
    assert int(splitmix64(np.uint64(0x9E3779B97F4A7C15))) == 0x6E789E6AA1B965F4


def test_torch_and_numpy_hashes_are_the_same_bits():
    x = np.concatenate([IDS, np.random.default_rng(1).integers(-(2**63), 2**63 - 1, 10000, dtype=np.int64)])
    assert np.array_equal(splitmix64(x).view(np.int64), splitmix64_torch(torch.as_tensor(x)).numpy())
    ks, steps = np.arange(5), 3
    a = counter_hash(2**40 + 17, x[:, None], ks[None, :], steps)
    b = counter_hash_torch(2**40 + 17, torch.as_tensor(x)[:, None], torch.as_tensor(ks)[None, :], steps)
    assert a.shape == tuple(b.shape) == (len(x), 5)
    assert np.array_equal(a.view(np.int64), b.numpy())
    assert np.array_equal(unit_float(a), unit_float(b).numpy())


def test_hash_uniform_is_counter_hash_of_salt_and_id():
    ids = np.arange(1000) * 7919
    expected = (counter_hash(5, ids) >> np.uint64(11)).astype(np.float64) * 2.0**-53
    assert np.array_equal(hash_uniform(ids, salt=5), expected)
    u = unit_float(counter_hash(0, np.arange(200_000)))
    assert u.min() >= 0 and u.max() < 1
    assert scipy.stats.kstest(u, "uniform").pvalue > 1e-3


def test_normals_are_the_same_bits_in_numpy_and_torch_whatever_the_batch():
    ids, ks = IDS[:, None], np.arange(6)[None, :]
    a = counter_normals(123, ids, ks, 4, 11)
    b = counter_normals_torch(123, torch.as_tensor(ids), torch.as_tensor(ks), 4, 11)
    assert a.shape == (len(IDS), 6, 11)
    assert np.array_equal(a, b.numpy())
    # one object alone, or the objects in another order, gives the same deviates
    order = np.random.default_rng(0).permutation(len(IDS))
    c = counter_normals_torch(123, torch.as_tensor(IDS[order])[:, None], torch.arange(6)[None, :], 4, 11)
    assert torch.equal(c, b[order])
    one = counter_normals_torch(123, torch.as_tensor(IDS[3:4])[:, None], torch.arange(6)[None, :], 4, 11)
    assert torch.equal(one[0], b[3])
    # an even dimension count is a prefix of the odd one: d's deviate does not depend on D
    assert np.array_equal(counter_normals(123, ids, ks, 4, 4), a[..., :4])
    # every key changes the deviates
    for other in (
        counter_normals(124, ids, ks, 4, 11),
        counter_normals(123, ids + 1, ks, 4, 11),
        counter_normals(123, ids, ks + 1, 4, 11),
        counter_normals(123, ids, ks, 5, 11),
    ):
        assert not np.any(other == a)


def test_exact_op_log_sqrt_sin_cos_are_accurate():
    rng = np.random.default_rng(2)
    u = np.concatenate([rng.random(100_000), [2.0**-53, 0.5, 1.0]])
    u = u[u > 0]
    assert np.max(np.abs(hashing._log(u, np) - np.log(u)) / np.maximum(1.0, np.abs(np.log(u)))) < 1e-15
    v = np.concatenate([rng.random(100_000) * 80, 2.0 ** rng.uniform(-60, 7, 1000), [0.0, 1.0, 4.0]])
    rel = np.abs(hashing._sqrt(v, np) - np.sqrt(v)) / np.maximum(np.sqrt(v), 1e-300)
    assert rel.max() < 3e-16
    quadrant = rng.integers(0, 4, 100_000)
    u2 = rng.random(100_000)
    c, s = hashing.box_muller(np.full_like(u2, np.exp(-0.5)), u2, quadrant)  # radius 1
    angle = (quadrant + u2) * np.pi / 2
    assert np.max(np.abs(c - np.cos(angle))) < 1e-14 and np.max(np.abs(s - np.sin(angle))) < 1e-14


def test_normal_statistics_over_a_million_draws():
    # 25,000 objects x 4 samples x 10 dims at one step: 1e6 deviates
    z = counter_normals(7, np.arange(25_000)[:, None], np.arange(4)[None, :], 3, 10)
    flat = z.ravel()
    n = flat.size
    assert n == 1_000_000
    tol = 5 / np.sqrt(n)  # 5 standard errors
    assert abs(flat.mean()) < tol
    assert abs(flat.std() - 1) < 5 / np.sqrt(2 * n)
    assert abs(scipy.stats.skew(flat)) < 5 * np.sqrt(6 / n)
    assert abs(scipy.stats.kurtosis(flat)) < 5 * np.sqrt(24 / n)
    assert scipy.stats.kstest(flat, "norm").pvalue > 1e-3
    assert abs(np.mean(np.abs(flat) > 3) - 0.0026998) < 5 * np.sqrt(0.0027 / n)

    def assert_uncorrelated(a, b):  # Pearson r within 5 standard errors (1/sqrt(pairs)) of 0
        assert abs(np.corrcoef(a.ravel(), b.ravel())[0, 1]) < 5 / np.sqrt(a.size)

    # neighbours in every counter: dimension (incl. the cos/sin partners), sample, object, step
    assert_uncorrelated(z[..., 0::2], z[..., 1::2])
    assert_uncorrelated(z[..., :-1], z[..., 1:])
    assert_uncorrelated(z[:, :-1], z[:, 1:])
    assert_uncorrelated(z[:-1], z[1:])
    assert_uncorrelated(z, counter_normals(7, np.arange(25_000)[:, None], np.arange(4)[None, :], 4, 10))
    # squares too: a Box-Muller pair shares its radius, which must not leak to neighbours
    sq = z**2 - 1
    assert_uncorrelated(sq[..., 0::2], sq[..., 1::2])
    assert_uncorrelated(sq[:-1], sq[1:])


@pytest.mark.parametrize("seed", [0, 2**63 + 5, -3])
def test_seeds_beyond_int64_and_negative(seed):
    a = counter_hash(seed, IDS)
    b = counter_hash_torch(seed, torch.as_tensor(IDS))
    assert np.array_equal(a.view(np.int64), b.numpy())
