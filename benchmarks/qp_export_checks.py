#!/usr/bin/env python
"""qp's ``quant`` ensemble of stored quantiles against the ``hist`` ensemble ``export qp`` writes.

    OMP_NUM_THREADS=1 python benchmarks/qp_export_checks.py [--objects 500] [--seed 0]

For K = 8, 16, 32, 100 samples per object (Gaussian redshift posteriors, mean 0.05-1.2,
sigma 0.01-0.1, summarised with ``summaries.summarize`` at the default quantile levels):
- quant: the ``qp.quant`` ensemble the export wrote before (levels 0 and 1 added along the
  outermost quantiles, clipped at z = 0; tied locations moved apart by 1e-6, without which
  qp's quadratic CDF interpolation refuses the row: "Expect x to not have duplicates");
- hist: the file ``report.qp_export.export_qp`` writes, read back with ``qp.read``.
Printed per K and representation: the fraction of objects whose CDF leaves [0, 1] on a
5001-point grid over -1 < z < 4, the range of the CDF, the range of the PDF integrals
(trapezoids on that grid), and for hist the largest |median - z_median| and the integral
as the sum over its bins (exact for a piecewise-constant PDF; trapezoids on a 0.001 grid
miss up to a few percent of the narrowest histograms).
"""

from __future__ import annotations

import argparse
import tempfile
import warnings
from pathlib import Path

import numpy as np

from specdiff_catalog.defaults import QUANTILES
from specdiff_catalog.io.store import StoreLayout, create_store
from specdiff_catalog.report.qp_export import export_qp
from specdiff_catalog.summaries import extend_quantiles, summarize


def store_of(path: Path, n: int, k: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    centre, width = rng.uniform(0.05, 1.2, n), rng.uniform(0.01, 0.1, n)
    z = (centre[:, None] + width[:, None] * rng.standard_normal((n, k))).astype(np.float32)
    columns = summarize(z, None, QUANTILES)
    layout = StoreLayout(quantiles=QUANTILES, latent_size=0, shard_rows=1024)
    store = create_store(path, [(4, 1, n)], layout, {"model": "0" * 64, "config": {"n_samples": k}})
    ids = np.arange(n, dtype=np.int64)
    store.write_partition(
        0,
        {
            "object_id": ids,
            "_healpix_29": ids,
            "ra": np.zeros(n),
            "dec": np.zeros(n),
            "flags": np.zeros(n, np.uint16),
            **columns,
        },
    )
    return columns


def quant_locations(levels: np.ndarray, locs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The former export's quant input: padded to 0 and 1, ties moved apart by 1e-6."""
    full, padded = extend_quantiles(levels, locs)
    for j in range(1, padded.shape[1]):
        padded[:, j] = np.maximum(padded[:, j], padded[:, j - 1] + 1e-6)
    return full, padded


def report(name: str, ens, grid: np.ndarray) -> str:
    cdf, pdf = ens.cdf(grid), ens.pdf(grid)
    integral = np.trapezoid(pdf, grid, axis=1)
    out = ((cdf < -1e-9) | (cdf > 1 + 1e-9)).any(axis=1).mean()
    return (
        f"{name:5s} CDF outside [0, 1]: {out:6.1%}  CDF {cdf.min():9.3g} .. {cdf.max():9.3g}"
        f"  PDF integral {integral.min():8.3f} .. {integral.max():8.3f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    import qp

    warnings.simplefilter("ignore")
    grid = np.linspace(-1, 4, 5001)
    tmp = Path(tempfile.mkdtemp())
    for k in (8, 16, 32, 100):
        columns = store_of(tmp / f"k{k}.zarr", args.objects, k, args.seed + k)
        quants, locs = quant_locations(np.asarray(QUANTILES), columns["z_quantiles"])
        quant = qp.Ensemble(qp.quant, data={"quants": quants, "locs": locs})
        export_qp(tmp / f"k{k}.zarr", tmp / f"k{k}.hdf5")
        hist = qp.read(str(tmp / f"k{k}.hdf5"))
        error = np.abs(hist.median().ravel() - columns["z_median"]).max()
        edges = np.asarray(hist.metadata["bins"]).ravel()
        sums = (hist.pdf(0.5 * (edges[1:] + edges[:-1])) * np.diff(edges)).sum(axis=1)
        print(f"K = {k}")
        print("  " + report("quant", quant, grid))
        print("  " + report("hist", hist, grid) + f"  max |median - z_median| {error:.4f}")
        print(f"        hist PDF integral by its bin sums: {sums.min():.12f} .. {sums.max():.12f}")


if __name__ == "__main__":
    main()
