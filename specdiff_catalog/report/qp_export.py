"""``specdiff-catalog export qp``: the store's PDFs as a qp ``quant`` ensemble for RAIL users.

Each object's PDF is given by its stored quantiles (levels strictly inside (0, 1)).
qp's quant parameterisation needs a CDF that spans 0..1, so the ensemble carries the
levels 0 and 1 as well, with locations extrapolated linearly from the two outermost
quantiles, as qp's own ``ensure_extent`` padding does, except that the lower end is
clipped at z = 0 (a redshift PDF has no support below 0) unless the stored quantiles
themselves are below 0. Ancillary columns: ``id``
(object id), ``zmedian``, ``zmode``, ``zmean`` (RAIL's point-estimate names) and
``flags``. Only rows with a PDF are written: padding rows and objects with NaN
quantiles (flag NO_PHOTOMETRY or SAMPLER_FAILURE) are left out and counted. A store
with failed or pending partitions is refused (``io.store.NotDoneError`` naming them)
unless ``partial``: then only the done partitions' objects are exported, and counted.

HDF5 (``.hdf5``, RAIL's format) is written in row blocks through qp's chunked writer,
so memory does not grow with the catalog; FITS and Parquet are written in one piece.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from specdiff_catalog.io.store import OutputStore, open_store

CHUNKED = (".hdf5",)
IN_MEMORY = (".fits", ".pq", ".parquet")
TIE_STEP = 1e-6  # redshift; separates tied quantile locations (qp needs a strictly increasing CDF)
STORE_COLUMNS = ("valid", "object_id", "flags", "z_quantiles", "z_median", "z_mode", "z_mean")


def _import_qp() -> Any:
    try:
        import qp
    except ImportError as err:
        raise ImportError(
            "export qp needs the qp package (qp-prob): pip install 'specdiff-catalog[rail]'"
        ) from err
    return qp


@dataclass
class QpExportSummary:
    """path: the file written; n_written: PDFs in it; n_skipped: objects without a PDF
    (not written); levels: the ensemble's quantile levels (0 and 1 included);
    n_not_done: objects of failed or pending partitions left out (``partial`` only)."""

    path: Path
    n_written: int
    n_skipped: int
    levels: np.ndarray
    n_not_done: int = 0

    def summary(self) -> str:
        partial = (
            f"; partial: {self.n_not_done} objects of failed or pending partitions left out"
            if self.n_not_done
            else ""
        )
        return (
            f"{self.path}: {self.n_written} PDFs as a qp quant ensemble "
            f"({len(self.levels)} levels incl. 0 and 1);"
            f" {self.n_skipped} objects without a PDF left out{partial}"
        )


def padded_quantiles(levels: np.ndarray, locs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Levels (Q,) strictly inside (0, 1) and locations (N, Q) -> (Q + 2,) and (N, Q + 2) with 0 and 1 added.

    The added locations continue the line through the two outermost quantiles to level 0
    and 1 (qp's ``pad_quantiles``); the one at level 0 is clipped at z = 0 unless the
    stored quantiles themselves reach below 0. qp interpolates the CDF through the
    locations, which must then be strictly increasing: tied locations (identical
    samples) are moved apart by TIE_STEP.
    """
    levels = np.asarray(levels, dtype=np.float64)
    locs = np.asarray(locs, dtype=np.float64)
    if levels.size < 2 or not (0 < levels[0] and levels[-1] < 1) or np.any(np.diff(levels) <= 0):
        raise ValueError(f"quantile levels must be >= 2, increasing, strictly inside (0, 1): {levels}")
    lo = locs[:, 0] - levels[0] * (locs[:, 1] - locs[:, 0]) / (levels[1] - levels[0])
    hi = locs[:, -1] + (1.0 - levels[-1]) * (locs[:, -1] - locs[:, -2]) / (levels[-1] - levels[-2])
    lo = np.where(locs[:, 0] > 0, np.maximum(lo, 0.0), lo)
    padded = np.column_stack([lo, locs, hi])
    for j in range(1, padded.shape[1]):
        padded[:, j] = np.maximum(padded[:, j], padded[:, j - 1] + TIE_STEP)
    return np.concatenate([[0.0], levels, [1.0]]), padded


def _ensemble(qp: Any, levels: np.ndarray, block: dict[str, np.ndarray]) -> Any:
    """A quant ensemble of one block's rows that have a PDF (``block`` already filtered)."""
    quants, locs = padded_quantiles(levels, block["z_quantiles"])
    ens = qp.Ensemble(qp.quant, data={"quants": quants, "locs": locs})
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
    block_rows: int | None = None,
    overwrite: bool = False,
    partial: bool = False,
) -> QpExportSummary:
    """Write the PDFs of an output store as a qp quant ensemble to ``out`` (.hdf5, .fits or .pq).

    Rows keep the store's order. ``qp.read(out)`` gives the ensemble back, with
    ``ancil['id']`` to join it to the catalog. Raises ValueError for an unknown suffix
    (``.h5`` is refused: tables_io writes it through pandas, which pickles),
    FileExistsError when ``out`` exists and not ``overwrite``.
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
    levels = store.read("quantile")
    n_rows = n_written = 0
    for rows, block in store.blocks(["valid", "z_quantiles"], block_rows):
        n_rows += int(store.result_mask(rows, block["valid"]).sum())
        n_written += int(_with_pdf(store, rows, block).sum())
    if n_written == 0:
        raise ValueError(f"{store_path}: no object has a PDF (no finite quantiles); nothing to export")
    if out.exists():
        out.unlink()
    out.parent.mkdir(parents=True, exist_ok=True)
    if suffix in CHUNKED:
        _write_hdf5_chunks(qp, store, levels, out, n_written, block_rows)
    else:
        parts = [
            {k: v[_with_pdf(store, rows, b)] for k, v in b.items()}
            for rows, b in store.blocks(STORE_COLUMNS, block_rows)
        ]
        whole = {k: np.concatenate([p[k] for p in parts]) for k in STORE_COLUMNS}
        _ensemble(qp, levels, whole).write_to(str(out))
    return QpExportSummary(
        path=out,
        n_written=n_written,
        n_skipped=n_rows - n_written,
        levels=padded_quantiles(levels, np.zeros((0, levels.size)))[0],
        n_not_done=n_not_done,
    )


def _write_hdf5_chunks(
    qp: Any, store: OutputStore, levels: np.ndarray, out: Path, n_total: int, block_rows: int | None
) -> None:
    """qp's chunked HDF5 writer (as RAIL's estimators use it): allocate, write blocks, finalise."""
    groups = handle = ens = None
    start = 0
    try:
        for rows, block in store.blocks(STORE_COLUMNS, block_rows):
            keep = _with_pdf(store, rows, block)
            if not keep.any():
                continue
            ens = _ensemble(qp, levels, {k: v[keep] for k, v in block.items()})
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
        raise ValueError(f"{store.path}: no object has a PDF")
    ens.finalizeHdf5Write(handle)  # writes the metadata (levels, parameterisation) and closes
