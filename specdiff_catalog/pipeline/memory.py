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

from specdiff_catalog import defaults

MIB = 2**20
RUNTIME_BYTES = 415 * MIB
"""A worker process after importing the pipeline (Python, Dask, numpy, pandas, pyarrow,
torch): measured 406-415 MiB (benchmarks/worker_memory.py, docs/performance.md)."""
MODEL_BYTES_PER_FILE_BYTE = 2.8
"""Loading the model (autoencoder, diffusion, CatBoost baseline, coverage sample) per byte
of its weight files: measured +82 to +83 MiB for the bundled model's 30.4 MiB of files."""
FIRST_CALL_BYTES = 322 * MIB
"""What the first prediction keeps allocated besides the sampler's rows (the coverage
score's distance blocks, the photometry check's flux tables, torch and oneDNN working
memory, the allocator's arenas): measured 316-325 MiB from 64 x 16 to 512 x 16."""
LATER_TASKS_BYTES = 40 * MIB
"""What the allocator keeps on top of the first prediction's peak over the next ones: measured
+38 MiB after 6 batches of 512 x 16 (818 -> 856 MiB)."""
BYTES_PER_SAMPLER_ROW = 3482
"""The denoiser's activations per sampler row, ``defaults.SAMPLER_BATCH_ROWS`` rows at a
time: measured 3.4 KiB (+105 MiB from 1,024 to 32,768 rows, hidden width 256)."""
BYTES_PER_OBJECT_SAMPLE = 100
"""The batch's sample arrays per object x sample ((K, latent + 1) float32 and their copies)."""
MIN_BATCH = 64
"""The smallest batch ``fit_batch`` shrinks to; below it a run is refused."""


class MemoryLimitError(ValueError):
    """A worker memory limit too small for the model and a batch; the message says how much is needed."""


@dataclass(frozen=True)
class Footprint:
    """Estimated peak resident bytes of one worker: runtime (Python, Dask, torch) + model + prediction."""

    runtime: int
    model: int
    prediction: int

    @property
    def total(self) -> int:
        return self.runtime + self.model + self.prediction

    def describe(self) -> str:
        return (
            f"~{self.total / MIB:.0f} MiB (Python, Dask and torch ~{self.runtime / MIB:.0f}, "
            f"model ~{self.model / MIB:.0f}, prediction ~{self.prediction / MIB:.0f})"
        )


def model_bytes(model_dir: Path) -> int:
    """Bytes of the model directory's weight files (everything but config.json)."""
    return sum(f.stat().st_size for f in Path(model_dir).iterdir() if f.is_file() and f.suffix != ".json")


def worker_footprint(model_dir: str | Path, batch_size: int, n_samples: int) -> Footprint:
    """The estimated peak of a worker running ``batch_size`` objects x ``n_samples`` samples at a time.

    A calibration on the bundled model (docs/performance.md): 2-9% above the first
    prediction's measured peak from 64 x 16 to 8192 x 16 and 512 x 100, 4% above the peak
    after 6 batches of 512 x 16.
    """
    rows = int(batch_size) * int(n_samples)
    return Footprint(
        runtime=RUNTIME_BYTES,
        model=int(model_bytes(Path(model_dir)) * MODEL_BYTES_PER_FILE_BYTE),
        prediction=FIRST_CALL_BYTES
        + LATER_TASKS_BYTES
        + min(rows, defaults.SAMPLER_BATCH_ROWS) * BYTES_PER_SAMPLER_ROW
        + rows * BYTES_PER_OBJECT_SAMPLE,
    )


def usable_fraction() -> float:
    """The fraction of its limit a worker can fill and still run tasks: Dask's pause line,
    else its terminate line, else 1 (both disabled)."""
    import dask
    import distributed.config  # noqa: F401  (registers the distributed.* defaults with dask.config)

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
            f"of its limit; use a limit of at least {_round_up_gib(need.total / fraction)} "
            "(--memory-limit; with the default auto, fewer --n-workers each get more)"
        )
    return batch


def _round_up_gib(nbytes: float) -> str:
    """A memory size a user can type: the next quarter GiB."""
    quarters = -(-nbytes // (MIB * 256))
    return f"{quarters / 4:g}GiB"
