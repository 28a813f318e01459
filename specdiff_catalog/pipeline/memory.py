"""How much memory a ``run`` worker needs, checked against its memory limit before anything starts.

A Dask worker stops taking tasks when its memory passes the ``pause`` fraction of its
limit (0.8 by default) and its nanny kills it at ``terminate`` (0.95): a worker that
cannot fit the model and one batch under the pause line either never runs a task or is
killed by every one. ``fit_batch`` finds that out up front from an estimate calibrated
on measured workers (``benchmarks/worker_memory.py``; docs/performance.md) and either
keeps the batch, shrinks it (the results do not depend on the batch size) or refuses.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

MIB = 2**20
RUNTIME_BYTES = 340 * MIB
"""A worker process after importing the pipeline (Python, Dask, numpy, pandas, pyarrow,
torch): measured 335-341 MiB (benchmarks/worker_memory.py, docs/performance.md)."""
MODEL_BYTES_PER_FILE_BYTE = 3.2
"""Loading the model (autoencoder, diffusion, CatBoost baseline) per byte of its weight
files: measured +89 to +97 MiB for the bundled model's 29.4 MiB of files."""
FIRST_CALL_BYTES = 200 * MIB
"""What the first prediction keeps allocated besides its arrays (torch and oneDNN working
memory, the allocator's arenas): measured 204 MiB at 64 objects x 16 samples."""
SAMPLER_CHUNK_ROWS = 32768
"""Rows (objects x samples) the sampler evaluates at once: ``models.sampling.sample``'s
``batch_size`` default (a test keeps the two equal)."""
BYTES_PER_SAMPLER_ROW = 7 * 1024
"""The denoiser's activations per sampler row: measured 6.5 KiB (hidden width 256)."""
BYTES_PER_OBJECT_SAMPLE = 100
"""The batch's sample arrays per object x sample ((K, latent + 1) float32 and their copies)."""
MIN_BATCH = 64
"""The smallest batch ``fit_batch`` shrinks to; below it a run is refused."""


class MemoryLimitError(ValueError):
    """A worker memory limit too small for the model and a batch; the message says how much is needed."""


@dataclass(frozen=True)
class Footprint:
    """Estimated peak resident bytes of one worker: runtime (Python, Dask, torch) + model + sampling."""

    runtime: int
    model: int
    sampling: int

    @property
    def total(self) -> int:
        return self.runtime + self.model + self.sampling

    def describe(self) -> str:
        return (
            f"~{self.total / MIB:.0f} MiB (Python, Dask and torch ~{self.runtime / MIB:.0f}, "
            f"model ~{self.model / MIB:.0f}, sampling ~{self.sampling / MIB:.0f})"
        )


def model_bytes(model_dir: Path) -> int:
    """Bytes of the model directory's weight files (everything but config.json)."""
    return sum(f.stat().st_size for f in Path(model_dir).iterdir() if f.is_file() and f.suffix != ".json")


def worker_footprint(model_dir: str | Path, batch_size: int, n_samples: int) -> Footprint:
    """The estimated peak of a worker running ``batch_size`` objects x ``n_samples`` samples at a time.

    A calibration on the bundled model (docs/performance.md), within 3% above every
    measured peak from 64 x 16 to 8192 x 16 and 2048 x 100.
    """
    rows = int(batch_size) * int(n_samples)
    return Footprint(
        runtime=RUNTIME_BYTES,
        model=int(model_bytes(Path(model_dir)) * MODEL_BYTES_PER_FILE_BYTE),
        sampling=FIRST_CALL_BYTES
        + min(rows, SAMPLER_CHUNK_ROWS) * BYTES_PER_SAMPLER_ROW
        + rows * BYTES_PER_OBJECT_SAMPLE,
    )


def usable_fraction() -> float:
    """The fraction of its limit a worker can fill and still run tasks: Dask's pause line,
    else its terminate line, else 1 (both disabled)."""
    import dask

    for key in ("distributed.worker.memory.pause", "distributed.worker.memory.terminate"):
        value = dask.config.get(key, False)
        if value:
            return float(value)
    return 1.0


def fit_batch(limit: int | None, model_dir: str | Path, batch_size: int, n_samples: int) -> int:
    """The batch size to run with under a worker memory ``limit`` (bytes; None: no limit).

    ``batch_size`` when it fits under the pause line; else the largest halving of it
    (>= MIN_BATCH) that fits; else ``MemoryLimitError`` naming the limit and the need.
    """
    if limit is None:
        return batch_size
    fraction = usable_fraction()
    budget = limit * fraction
    batch = batch_size
    while worker_footprint(model_dir, batch, n_samples).total > budget and batch > MIN_BATCH:
        batch = max(MIN_BATCH, batch // 2)
    need = worker_footprint(model_dir, batch, n_samples)
    if need.total > budget:
        even = "even " if batch < batch_size else ""
        raise MemoryLimitError(
            f"a worker memory limit of {limit / MIB:.0f} MiB is too small: a worker needs {need.describe()} "
            f"{even}at --batch-size {batch}, --n-samples {n_samples}, and Dask pauses it at {fraction:.0%} "
            f"of its limit; use a limit of at least {_round_up_gib(need.total / fraction)}"
        )
    return batch


def _round_up_gib(nbytes: float) -> str:
    """A memory size a user can type: the next quarter GiB."""
    quarters = -(-nbytes // (MIB * 256))
    return f"{quarters / 4:g}GiB"
