"""Small output stores written through io.store and summaries.summarize, as ``run`` writes them."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from specdiff_catalog.defaults import QUANTILES as DEFAULT_QUANTILES
from specdiff_catalog.flags import Flag
from specdiff_catalog.io.store import StoreLayout, create_store
from specdiff_catalog.summaries import summarize


def partition_columns(
    ids: np.ndarray, latent_size: int, seed: int, bad: int = 0, n_samples: int = 200
) -> dict[str, np.ndarray]:
    """Store columns of objects with Gaussian z posteriors (mean 0.1-0.7, sigma 0.02-0.08) summarised
    from ``n_samples`` draws each, and Gaussian latents; the first ``bad`` objects have no
    photometry (NaN outputs, NO_PHOTOMETRY)."""
    rng = np.random.default_rng(seed)
    n = len(ids)
    centre, width = rng.uniform(0.1, 0.7, n), rng.uniform(0.02, 0.08, n)
    z = (centre[:, None] + width[:, None] * rng.standard_normal((n, n_samples))).astype(np.float32)
    latent = rng.standard_normal((n, n_samples, latent_size)).astype(np.float32) if latent_size else None
    flags = np.zeros(n, np.uint16)
    z[:bad] = np.nan
    if latent is not None:
        latent[:bad] = np.nan
    flags[:bad] = Flag.NO_PHOTOMETRY | Flag.MISSING_BAND
    columns = summarize(z, latent, DEFAULT_QUANTILES)
    checks = {"coverage": rng.uniform(0, 1, n)}
    if latent_size:
        checks |= {
            "ppc_chi2": rng.chisquare(2, n),
            "ppc_dof": np.full(n, 2),
            "ppc_pvalue": rng.uniform(0, 1, n),
        }
    return {
        "object_id": np.asarray(ids, np.int64),
        "_healpix_29": np.arange(n, dtype=np.int64),
        "ra": rng.uniform(0, 10, n),
        "dec": rng.uniform(0, 10, n),
        "flags": flags,
        **columns,
        **checks,
    }


def write_store(
    path: Path,
    sizes=(300, 150, 200, 50),
    *,
    latent_size: int = 0,
    shard_rows: int = 128,
    failed: int | None = 3,
    attrs: dict | None = None,
    n_samples: int = 200,
) -> Path:
    """A store with partitions of ``sizes`` objects (ids 1000 + running index), ``n_samples`` per
    object: all written (2 objects of each without photometry) except partition ``failed``,
    marked failed."""
    layout = StoreLayout(quantiles=DEFAULT_QUANTILES, latent_size=latent_size, shard_rows=shard_rows)
    parts = [(4, 100 + i, n) for i, n in enumerate(sizes)]
    store = create_store(
        path, parts, layout, {"model": "0" * 64, "config": {"n_samples": n_samples}, **(attrs or {})}
    )
    first = 1000
    for i, n in enumerate(sizes):
        if i == failed:
            store.mark_failed(i, f"partition {i}: unreadable file")
        else:
            store.write_partition(
                i,
                partition_columns(
                    np.arange(first, first + n), latent_size, seed=i, bad=2, n_samples=n_samples
                ),
            )
        first += n
    return path
