"""``specdiff-catalog export qp``: the store's PDFs as a qp ``hist`` ensemble for RAIL users.

Each object's PDF is the distribution its stored quantiles describe: the quantile
function piecewise linear through (level, location), continued to levels 0 and 1 along
the line through the two outermost quantiles (as qp's ``pad_quantiles``), clipped at
z = 0 (``summaries.extend_quantiles``). Its CDF (``summaries.quantile_cdf``) is taken at
the edges of one redshift grid (bin width ``dz``, spanning every exported PDF) and
differenced into a ``qp.hist`` ensemble: every exported CDF lies in [0, 1], rises
monotonically and every PDF integrates to 1, whatever the ties between quantiles. (qp's
``quant`` parameterisation interpolates the CDF through the quantiles with a quadratic
spline, which leaves [0, 1] and gives PDF integrals far from 1 when quantiles of few
samples are close or tied.) Levels that the run's samples per object do not resolve
(``summaries.resolved_levels``: e.g. 0.025 with fewer than 39 samples, which is then
the smallest sample) are left out of the quantile function and named in the summary.

Ancillary columns: ``id`` (object id), ``zmedian``, ``zmode``, ``zmean`` (RAIL's
point-estimate names) and ``flags``. Only rows with a PDF are written: padding rows and
objects with NaN quantiles (flag NO_PHOTOMETRY or SAMPLER_FAILURE) are left out and
counted. A store with failed or pending partitions is refused (``io.store.NotDoneError``
naming them) unless ``partial``: then only the done partitions' objects are exported, and
counted.

HDF5 (``.hdf5``, RAIL's format) is written in row blocks through qp's chunked writer,
so memory does not grow with the catalog; FITS and Parquet are written in one piece.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from specdiff_catalog import defaults
from specdiff_catalog.extras import MissingExtraError, require
from specdiff_catalog.io.store import OutputStore, open_store
from specdiff_catalog.summaries import extend_quantiles, min_samples, quantile_cdf, resolved_levels

CHUNKED = (".hdf5",)
IN_MEMORY = (".fits", ".pq", ".parquet")
HIST_ROWS = 4096  # objects per CDF evaluation (memory ~ rows x bins x 16 bytes)
STORE_COLUMNS = ("valid", "object_id", "flags", "z_quantiles", "z_median", "z_mode", "z_mean")


def _import_qp() -> Any:
    """qp, or MissingExtraError naming the [rail] extra."""
    require("rail", "specdiff-catalog export qp")
    try:
        import qp
    except ImportError as err:  # installed from a source tree without metadata
        raise MissingExtraError(
            "specdiff-catalog export qp needs the [rail] extra (qp-prob not installed): "
            "pip install 'specdiff-catalog[rail]'"
        ) from err
    return qp


@dataclass
class QpExportSummary:
    """path: the file written; n_written: PDFs in it; n_skipped: objects without a PDF
    (not written); levels: the quantile levels the PDFs are built from (the store's that
    ``n_samples`` resolves); dropped: the store's levels left out; edges: the histogram's
    bin edges (redshift); n_not_done: objects of failed or pending partitions left out
    (``partial`` only)."""

    path: Path
    n_written: int
    n_skipped: int
    levels: np.ndarray
    dropped: np.ndarray
    edges: np.ndarray
    n_not_done: int = 0

    def summary(self) -> str:
        lines = [
            f"{self.path}: {self.n_written} PDFs as a qp hist ensemble ({self.edges.size - 1} bins of "
            f"dz = {self.edges[1] - self.edges[0]:g} over z = {self.edges[0]:g}..{self.edges[-1]:g}, "
            f"from the quantile levels {_levels(self.levels)}); "
            f"{self.n_skipped} objects without a PDF left out"
            + (
                f"; partial: {self.n_not_done} objects of failed or pending partitions left out"
                if self.n_not_done
                else ""
            )
        ]
        if self.dropped.size:
            lines.append(
                f"warning: the levels {_levels(self.dropped)} were left out: the run's samples per object "
                "do not resolve them (see `summaries.min_samples`)"
            )
        return "\n".join(lines)


def _levels(levels: np.ndarray) -> str:
    return ", ".join(f"{q:g}" for q in levels)


def histogram_edges(z_lo: float, z_hi: float, dz: float = defaults.QP_DZ) -> np.ndarray:
    """Bin edges of width ``dz`` from the multiple of dz at or below z_lo to the one at or above z_hi."""
    if not dz > 0:
        raise ValueError(f"the bin width dz must be > 0, got {dz}")
    first, last = np.floor(z_lo / dz + 1e-9), np.ceil(z_hi / dz - 1e-9)
    return np.arange(first, max(last, first + 1) + 1) * dz


def quantile_histograms(levels: np.ndarray, locs: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """(N, B) densities on the bins ``edges`` (B + 1,) of the distributions with quantiles
    ``locs`` (N, Q) at ``levels`` (Q,) strictly inside (0, 1): the CDF of the extended
    quantile function (``summaries.quantile_cdf``) differenced over each bin, per unit z.
    Each row integrates to 1 when the edges span its extended quantiles."""
    full, extended = extend_quantiles(levels, locs)
    parts = [
        np.diff(quantile_cdf(full, extended[rows], edges), axis=1)
        for rows in (slice(i, i + HIST_ROWS) for i in range(0, max(len(extended), 1), HIST_ROWS))
    ]
    return np.concatenate(parts) / np.diff(edges)


def _ensemble(qp: Any, levels: np.ndarray, edges: np.ndarray, block: dict[str, np.ndarray]) -> Any:
    """A hist ensemble of one block's rows that have a PDF (``block`` already filtered)."""
    pdfs = quantile_histograms(levels, block["z_quantiles"], edges)
    ens = qp.Ensemble(qp.hist, data={"bins": edges, "pdfs": pdfs})
    ens.set_ancil(
        {
            "id": block["object_id"].astype(np.int64),
            "zmedian": block["z_median"].astype(np.float64),
            "zmode": block["z_mode"].astype(np.float64),
            "zmean": block["z_mean"].astype(np.float64),
            "flags": block["flags"].astype(np.int32),
        }
    )
    return ens


def _with_pdf(store: OutputStore, rows: slice, block: dict[str, np.ndarray]) -> np.ndarray:
    """(n,) bool: object rows of done partitions whose quantiles are all finite."""
    return store.result_mask(rows, block["valid"]) & np.isfinite(block["z_quantiles"]).all(axis=1)


def export_qp(
    store_path: str | Path,
    out: str | Path,
    *,
    dz: float = defaults.QP_DZ,
    block_rows: int | None = None,
    overwrite: bool = False,
    partial: bool = False,
) -> QpExportSummary:
    """Write the PDFs of an output store as a qp hist ensemble to ``out`` (.hdf5, .fits or .pq).

    dz: bin width in redshift; the bins span every exported PDF. Rows keep the store's
    order. ``qp.read(out)`` gives the ensemble back, with ``ancil['id']`` to join it to the
    catalog. Raises ValueError for an unknown suffix (``.h5`` is refused: tables_io writes
    it through pandas, which pickles) or a store whose samples per object resolve fewer
    than two quantile levels, FileExistsError when ``out`` exists and not ``overwrite``.
    """
    out = Path(out)
    suffix = out.suffix.lower()
    if suffix not in CHUNKED + IN_MEMORY:
        raise ValueError(
            f"{out}: qp export writes {', '.join(CHUNKED + IN_MEMORY)} files, not {suffix or 'no suffix'!r}"
        )
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; pass overwrite=True (--overwrite) to replace it")
    qp = _import_qp()
    store = open_store(store_path, mode="r")
    n_not_done = store.require_done(partial=partial)
    stored = store.read("quantile")
    n_samples = (store.attrs.get("config") or {}).get("n_samples")
    keep = resolved_levels(stored, n_samples) if n_samples else np.ones(stored.size, dtype=bool)
    if keep.sum() < 2:
        raise ValueError(
            f"{store_path}: {n_samples} samples per object resolve fewer than two of the quantile levels "
            f"{_levels(stored)}; run with --n-samples >= {min_samples(stored[[0, -1]])}"
        )
    levels = stored[keep]
    n_rows = n_written = 0
    z_lo, z_hi = np.inf, -np.inf
    for rows, block in store.blocks(["valid", "z_quantiles"], block_rows):
        n_rows += int(store.result_mask(rows, block["valid"]).sum())
        with_pdf = _with_pdf(store, rows, block)
        n_written += int(with_pdf.sum())
        if with_pdf.any():
            extended = extend_quantiles(levels, block["z_quantiles"][with_pdf][:, keep])[1]
            z_lo, z_hi = min(z_lo, float(extended[:, 0].min())), max(z_hi, float(extended[:, -1].max()))
    if n_written == 0:
        raise ValueError(f"{store_path}: no object has a PDF (no finite quantiles); nothing to export")
    edges = histogram_edges(z_lo, z_hi, dz)
    if out.exists():
        out.unlink()
    out.parent.mkdir(parents=True, exist_ok=True)

    def blocks() -> Iterator[dict[str, np.ndarray]]:
        """The rows with a PDF, block by block, with the resolved levels' quantiles."""
        for rows, block in store.blocks(STORE_COLUMNS, block_rows):
            keep_rows = _with_pdf(store, rows, block)
            if keep_rows.any():
                picked = {k: v[keep_rows] for k, v in block.items()}
                yield picked | {"z_quantiles": picked["z_quantiles"][:, keep]}

    if suffix in CHUNKED:
        _write_hdf5_chunks((_ensemble(qp, levels, edges, b) for b in blocks()), out, n_written)
    else:
        parts = list(blocks())
        whole = {k: np.concatenate([p[k] for p in parts]) for k in STORE_COLUMNS}
        _ensemble(qp, levels, edges, whole).write_to(str(out))
    return QpExportSummary(
        path=out,
        n_written=n_written,
        n_skipped=n_rows - n_written,
        levels=levels,
        dropped=stored[~keep],
        edges=edges,
        n_not_done=n_not_done,
    )


def _write_hdf5_chunks(ensembles: Iterator[Any], out: Path, n_total: int) -> None:
    """qp's chunked HDF5 writer (as RAIL's estimators use it): allocate, write blocks, finalise."""
    groups = handle = ens = None
    start = 0
    try:
        for ens in ensembles:
            if handle is None:
                groups, handle = ens.initializeHdf5Write(str(out), n_total)
            ens.writeHdf5Chunk(groups, start, start + ens.npdf)
            start += ens.npdf
    except BaseException:
        if handle is not None:
            handle.close()
            out.unlink(missing_ok=True)
        raise
    if ens is None:  # n_total > 0 rows with a PDF were counted first
        raise ValueError(f"{out}: no object has a PDF")
    ens.finalizeHdf5Write(handle)  # writes the metadata (bins, parameterisation) and closes
