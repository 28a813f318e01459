"""The main job: every partition of a catalog -> ``inference.predict`` -> its region of the store.

One Dask task per partition, handed to whichever workers are connected now
(``pipeline.schedule``), retries; each worker loads the model once (cached by its
sha256) and writes its own shard-aligned region of the Zarr store, so no data flows
back through the scheduler. A partition that cannot be read is marked failed with a
message naming the file; the others finish. The worker memory limit is checked against
the batch's footprint before anything starts (``pipeline.memory``), and a run whose
workers keep dying stops with the cause.
"""

from __future__ import annotations

import shlex
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from distributed import Client, get_worker
from tqdm.auto import tqdm

from specdiff_catalog import __version__
from specdiff_catalog.inference import DEFAULT_QUANTILES
from specdiff_catalog.io.catalog import (
    Catalog,
    Partition,
    demo_catalog_dir,
    object_ids,
    open_catalog,
    read_partition,
    spatial_index,
)
from specdiff_catalog.io.store import OutputStore, StoreLayout, create_store
from specdiff_catalog.pipeline.cluster import ClusterConfig, connect, dashboard_link, worker_memory_limit
from specdiff_catalog.pipeline.memory import fit_batch, worker_footprint
from specdiff_catalog.pipeline.schedule import Outcome, Stop, StopRules, run_tasks

_MODELS: dict[str, Any] = {}  # per worker process: model sha256 -> loaded SpecdiffModel


@dataclass(frozen=True)
class RunOptions:
    """What a run computes; stored in the output's attributes and checked on resume.

    quantiles: PDF quantile levels inside (0, 1). save_samples: raw z samples kept per
    object (0: none). steps: sampler steps (None: the sampler's default, 20 for
    dpmpp2m). batch_size: objects per sampler call on a worker.
    """

    n_samples: int = 100
    seed: int = 0
    sampler: str = "dpmpp2m"
    steps: int | None = None
    quantiles: tuple[float, ...] = DEFAULT_QUANTILES
    save_samples: int = 0
    batch_size: int = 2048
    id_column: str | None = None

    def provenance(self) -> dict[str, Any]:
        """The options that change results (batch_size does not)."""
        return {k: v for k, v in asdict(self).items() if k != "batch_size"}


@dataclass
class PartitionOutcome:
    index: int
    n_rows: int
    seconds: float
    error: str = ""


@dataclass
class RunReport:
    """What a run did: partitions done now, skipped (done before), failed (with messages),
    and why it stopped early (``stopped``, empty when it ran every partition)."""

    store: Path
    n_partitions: int
    done: int = 0
    skipped: int = 0
    failed: dict[int, str] = field(default_factory=dict)
    n_objects: int = 0
    seconds: float = 0.0
    stopped: str = ""

    def summary(self) -> str:
        rate = self.n_objects / self.seconds if self.seconds else 0.0
        lines = [
            f"{self.store}: {self.done} partitions written, {self.skipped} already done, "
            f"{len(self.failed)} failed of {self.n_partitions}; {self.n_objects} objects in "
            f"{self.seconds:.1f} s ({rate:.0f} objects/s)"
        ]
        lines += [f"  failed partition {i}: {msg}" for i, msg in sorted(self.failed.items())]
        if self.stopped:
            left = self.n_partitions - self.skipped - self.done - len(self.failed)
            lines.append(f"stopped early, {left} partitions not run (re-run to resume): {self.stopped}")
        return "\n".join(lines)


def shard_rows_for(catalog: Catalog) -> int:
    """Rows per store shard: a power of two near the median partition size (1024-65536)."""
    sizes = [p.n_rows for p in catalog.partitions if p.n_rows] or [1]
    return int(np.clip(2 ** int(np.ceil(np.log2(max(1.0, float(np.median(sizes)))))), 1024, 65536))


def _worker_model(model_dir: str, sha: str):
    """The model, loaded once per worker process (onto its GPU when it has one)."""
    if sha not in _MODELS:
        import torch

        from specdiff_catalog.models import load_model

        device = "cuda" if torch.cuda.is_available() else "cpu"
        if device == "cpu":
            torch.set_num_threads(max(1, get_worker().state.nthreads))
        _MODELS.clear()
        _MODELS[sha] = load_model(model_dir, device=device, notice=False)  # run_catalog printed it
    return _MODELS[sha]


def process_partition(
    partition: Partition, store_path: str, model_dir: str, sha: str, options: RunOptions
) -> PartitionOutcome:
    """Read one partition, predict every row, write its region; runs on a worker."""
    from specdiff_catalog.inference import predict_columns
    from specdiff_catalog.io.store import open_store

    start = time.perf_counter()
    store = open_store(store_path)
    model = _worker_model(model_dir, sha)
    bands = model.bands
    id_columns = [options.id_column] if options.id_column else []
    try:
        table = read_partition(
            partition,
            [c for b in bands.bands for c in (b.flux, b.ivar)] + id_columns,
            optional=[b.mw_transmission for b in bands.bands]
            + [bands.ebv_column, "RA", "DEC", "_healpix_29", "OBJECT_ID", "RELEASE", "BRICKID", "OBJID"],
        )
        ids = object_ids(table, options.id_column, where=str(partition.path))
    except (OSError, ValueError) as err:
        message = str(err).splitlines()[0]
        store.mark_failed(partition.index, message)
        return PartitionOutcome(partition.index, 0, time.perf_counter() - start, message)
    result = predict_columns(
        model,
        table,
        ids,
        batch_size=options.batch_size,
        save_samples=options.save_samples,
        n_samples=options.n_samples,
        seed=options.seed,
        sampler=options.sampler,
        steps=options.steps,
        quantiles=options.quantiles,
    )
    columns = {**_position_columns(table), "object_id": ids, **result}
    store.write_partition(partition.index, columns)
    return PartitionOutcome(partition.index, len(table), time.perf_counter() - start)


def _position_columns(table) -> dict[str, np.ndarray]:
    """ra, dec (NaN when absent) and _healpix_29 (from the catalog, else computed from ra/dec)."""
    n = len(table)
    ra = table["RA"].to_numpy(np.float64) if "RA" in table else np.full(n, np.nan)
    dec = table["DEC"].to_numpy(np.float64) if "DEC" in table else np.full(n, np.nan)
    healpix = table["_healpix_29"].to_numpy(np.int64) if "_healpix_29" in table else spatial_index(ra, dec)
    return {"ra": ra, "dec": dec, "_healpix_29": healpix}


def _store_attrs(
    catalog: Catalog, model_dir: Path, config: dict[str, Any], sha: str, options: RunOptions
) -> dict[str, Any]:
    return {
        "software_version": __version__,
        "model": sha,
        "model_path": str(model_dir),
        "model_trained_on": config.get("training_data")
        or config.get("diffusion", {}).get("training_data", "unknown"),
        "config": options.provenance(),
        "quantile_levels": list(options.quantiles),
        "input": str(catalog.root),
        "input_kind": catalog.kind,
        "input_properties": catalog.properties,
        "command_line": shlex.join(["specdiff-catalog", *sys.argv[1:]]),
    }


def run_catalog(
    input_path: str | Path | None,
    out: str | Path,
    model_dir: str | Path | None,
    options: RunOptions = RunOptions(),
    cluster: ClusterConfig = ClusterConfig(),
    *,
    overwrite: bool = False,
    max_in_flight: int | None = None,
    retries: int = 2,
    shard_rows: int | None = None,
    progress: bool = True,
    rules: StopRules | None = None,
) -> RunReport:
    """Photo-z PDF summaries and latents for every object of ``input_path`` into ``out``.

    input_path None: the bundled demo catalog; model_dir None: the bundled default model
    (trained on simulations, which is printed to stderr).

    Re-running on an existing store resumes: finished partitions are skipped; a store
    made with another model or options is refused (``overwrite`` starts over).
    max_in_flight: partition tasks submitted ahead (None: follow the connected workers).
    A worker memory limit too small for the model and one batch raises
    ``memory.MemoryLimitError`` before anything starts (a smaller batch is used when one fits);
    a run stopped by ``rules`` (default ``StopRules()``) returns with ``report.stopped`` set.
    """
    from specdiff_catalog.models import simulation_notice
    from specdiff_catalog.models.store import default_model_dir, model_id, read_config

    model_dir = Path(model_dir) if model_dir is not None else default_model_dir()
    config = read_config(model_dir)
    notice = simulation_notice(config, model_dir)
    if notice:
        print(notice, file=sys.stderr, flush=True)
    options = _fit_memory(options, model_dir, cluster)
    catalog = open_catalog(input_path if input_path is not None else demo_catalog_dir())
    sha = model_id(model_dir)
    latent_size = _latent_size(config, model_dir)
    layout = StoreLayout(
        quantiles=options.quantiles,
        latent_size=latent_size,
        n_samples_saved=options.save_samples,
        shard_rows=shard_rows or shard_rows_for(catalog),
    )
    attrs = _store_attrs(catalog, model_dir, config, sha, options)
    parts = [(p.order, p.pixel, p.n_rows) for p in catalog.partitions]
    store = create_store(out, parts, layout, attrs, overwrite=overwrite)
    store.check_compatible(attrs)
    todo = store.pending()
    report = RunReport(
        store=Path(out), n_partitions=len(catalog.partitions), skipped=len(catalog.partitions) - len(todo)
    )
    start = time.perf_counter()
    with connect(cluster) as client:
        link = dashboard_link(client)
        print(
            f"Dask dashboard: {link}" if link else "Dask dashboard: not available",
            file=sys.stderr,
            flush=True,
        )
        _submit_all(
            client,
            catalog,
            todo,
            store,
            str(model_dir),
            sha,
            options,
            report,
            max_in_flight=max_in_flight,
            retries=retries,
            progress=progress,
            rules=rules or StopRules(),
        )
    report.seconds = time.perf_counter() - start
    store.set_attrs(
        {
            "last_run": {
                "seconds": report.seconds,
                "objects": report.n_objects,
                "failed": {str(k): v for k, v in report.failed.items()},
            }
        }
    )
    return report


def _latent_size(config: dict[str, Any], model_dir: Path) -> int:
    """Width of the latents the diffusion model samples (0 for a photo-z-only model)."""
    from specdiff_catalog.models.store import ModelDirectoryError

    section = config.get("diffusion")
    if section is None:
        raise ModelDirectoryError(
            f"{model_dir}: the model has no diffusion component (train diffusion first)"
        )
    return len(section["standardisation"]["latent_mean"])


def _fit_memory(options: RunOptions, model_dir: Path, cluster: ClusterConfig) -> RunOptions:
    """``options`` with a batch that fits the memory limit of the workers this run starts."""
    batch = fit_batch(worker_memory_limit(cluster), model_dir, options.batch_size, options.n_samples)
    if batch == options.batch_size:
        return options
    print(
        f"note: --batch-size {options.batch_size} does not fit the worker memory limit; using {batch} "
        "(results do not depend on the batch size)",
        file=sys.stderr,
        flush=True,
    )
    return replace(options, batch_size=batch)


def _submit_all(
    client: Client,
    catalog: Catalog,
    todo: list[int],
    store: OutputStore,
    model_dir: str,
    sha: str,
    options: RunOptions,
    report: RunReport,
    *,
    max_in_flight: int | None,
    retries: int,
    progress: bool,
    rules: StopRules,
) -> None:
    """One task per partition in ``todo`` on the connected workers; record each outcome as it lands."""
    queue = [catalog.partitions[i] for i in todo]
    bar = tqdm(
        total=sum(p.n_rows for p in queue),
        unit="obj",
        unit_scale=True,
        disable=not progress,
        desc="objects",
        smoothing=0.1,
    )

    def record(outcome: Outcome) -> None:
        partition: Partition = outcome.item
        result = outcome.value or PartitionOutcome(partition.index, 0, 0.0, outcome.error)
        if outcome.error:  # the task failed every retry (process_partition marks unreadable files itself)
            store.mark_failed(partition.index, outcome.error)
        if result.error:
            report.failed[result.index] = (
                result.error if str(partition.path) in result.error else f"{partition.path}: {result.error}"
            )
        else:
            report.done += 1
            report.n_objects += result.n_rows
        bar.update(partition.n_rows)
        bar.set_postfix(
            partitions=f"{report.done + len(report.failed)}/{len(queue)}", failed=len(report.failed)
        )

    stop = run_tasks(
        client,
        process_partition,
        queue,
        key=lambda p: f"partition-{p.index}-{sha[:8]}",
        on_outcome=record,
        kwargs={"store_path": str(store.path), "model_dir": model_dir, "sha": sha, "options": options},
        window=max_in_flight,
        retries=retries,
        rules=rules,
    )
    bar.close()
    if stop is not None:
        report.stopped = _stop_message(stop, model_dir, options)


def _stop_message(stop: Stop, model_dir: str, options: RunOptions) -> str:
    """The stop's message, with what a worker needs when workers were killed over memory."""
    if stop.cause != "memory":
        return stop.message
    need = worker_footprint(model_dir, options.batch_size, options.n_samples)
    return (
        f"{stop.message}; a worker needs {need.describe()} at --batch-size {options.batch_size}: "
        "give the workers more memory or lower --batch-size"
    )
