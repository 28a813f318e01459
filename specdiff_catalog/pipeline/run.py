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
import warnings
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from distributed import Client, get_worker
from tqdm.auto import tqdm

from specdiff_catalog import __version__, defaults
from specdiff_catalog.io.catalog import Catalog, Partition, read_objects, spatial_index
from specdiff_catalog.io.fingerprint import input_fingerprint, partition_sources
from specdiff_catalog.io.paths import PathLike, to_upath
from specdiff_catalog.io.store import (
    OutputStore,
    PartitionDataError,
    StoreLayout,
    StoreRef,
    choose_shard_rows,
    create_store,
)
from specdiff_catalog.io.store_lock import store_lock
from specdiff_catalog.pipeline.cluster import ClusterConfig, connect, dashboard_link, worker_memory_limit
from specdiff_catalog.pipeline.memory import fit_batch, worker_footprint
from specdiff_catalog.pipeline.preflight import preflight
from specdiff_catalog.pipeline.schedule import Outcome, Stop, StopRules, run_tasks
from specdiff_catalog.summaries import SampleCountWarning, sample_count_note

if TYPE_CHECKING:
    import pandas as pd

    from specdiff_catalog.models import SpecdiffModel
    from specdiff_catalog.models.store import ModelConfig

_MODELS: dict[str, SpecdiffModel] = {}  # per worker process: model sha256 -> loaded model


@dataclass(frozen=True)
class RunOptions:
    """What a run computes; stored in the output's attributes and checked on resume.

    sampler, steps, n_samples: as given (``defaults.SAMPLER`` "auto": the model's
    production student when it has students, else the teacher's sampler; steps None: the
    sampler's default; n_samples None: the production count with a student, else
    ``defaults.N_SAMPLES``); ``resolved`` makes them concrete for the model before the run
    starts (``preflight`` does), and the store records the concrete values. quantiles: PDF
    quantile levels inside (0, 1). save_samples: raw z samples kept per object (0: none).
    batch_size: objects per sampler call on a worker. precision: the network's autocast on
    CUDA workers (``defaults.PRECISIONS``; the CPU always runs float32).
    """

    n_samples: int | None = None
    seed: int = defaults.SEED
    sampler: str = defaults.SAMPLER
    steps: int | None = None
    quantiles: tuple[float, ...] = defaults.QUANTILES
    save_samples: int = 0
    batch_size: int = defaults.BATCH_SIZE
    id_column: str | None = None
    precision: str = defaults.PRECISION

    def provenance(self) -> dict[str, Any]:
        """The options that change results (batch_size does not)."""
        return {k: v for k, v in asdict(self).items() if k != "batch_size"}

    def resolved(self, config: ModelConfig) -> RunOptions:
        """These options with sampler, steps and n_samples made concrete for a model
        (``models.choose_sampling``; ValueError for a student the model does not have)."""
        from specdiff_catalog.models import choose_sampling

        chosen = choose_sampling(config, self.sampler, self.steps, self.n_samples)
        return replace(self, sampler=chosen.sampler, steps=chosen.steps, n_samples=chosen.n_samples)

    @property
    def samples(self) -> int:
        """n_samples of options ``resolved`` for a model (ValueError before)."""
        if self.n_samples is None:
            raise ValueError("the run options are not resolved for a model (n_samples None)")
        return self.n_samples


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

    store: PathLike
    n_partitions: int
    done: int = 0
    skipped: int = 0
    failed: dict[int, str] = field(default_factory=dict)
    n_objects: int = 0
    seconds: float = 0.0
    checks: dict[str, int] = field(default_factory=dict)  # objects written, and per CHECKED flag
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
        total = self.checks.get("written", 0)
        for name, (expected, meaning, absent) in CHECKED.items():
            if name not in self.checks:
                lines.append(f"{name}: not checked, {absent}")
            elif total:
                share = self.checks[name] / total
                loud = "WARNING: " if share > expected else ""
                lines.append(
                    f"{loud}{self.checks[name]} of {total} objects ({100 * share:.1f}%) {meaning} ({name})"
                )
        return "\n".join(lines)


CHECKED = {
    "LOW_COVERAGE": (
        0.02,
        "lie outside the training set's coverage: their PDFs and spectra extrapolate (docs/coverage.md)",
        "the model has no coverage section (add one: specdiff-catalog train coverage --model MODEL)",
    ),
    "PHOTOMETRY_NOT_REPRODUCED": (
        0.01,
        "have fluxes that spectra decoded from their own posterior do not reproduce (docs/coverage.md)",
        "the model has no spectra (photo-z only)",
    ),
}
"""Flags ``run`` counts over the whole store at its end: name -> (the share above which the
line starts with WARNING, what it means, why a model may not check it). ~1% of objects
drawn like the training set are LOW_COVERAGE by construction; far fewer should fail the
photometry check (its p-value threshold is 0.001)."""


def _checked(config: ModelConfig) -> list[str]:
    """The CHECKED flags this model can set."""
    spectra = (
        config.diffusion is not None and config.diffusion.latent_size > 0 and config.autoencoder is not None
    )
    return [
        name
        for name, checked in (
            ("LOW_COVERAGE", config.coverage is not None),
            ("PHOTOMETRY_NOT_REPRODUCED", spectra),
        )
        if checked
    ]


def _count_checks(store: OutputStore, names: list[str]) -> dict[str, int]:
    """Objects written and, for each flag of ``names``, how many carry it (read block by block)."""
    from specdiff_catalog.flags import Flag

    counts = dict.fromkeys(["written", *names], 0)
    for rows, block in store.blocks(["valid", "flags"]):
        written = store.result_mask(rows, block["valid"])
        counts["written"] += int(written.sum())
        for name in names:
            counts[name] += int((written & ((block["flags"] & Flag[name]) != 0)).sum())
    return counts


def shard_rows_for(catalog: Catalog) -> int:
    """Rows per store shard: ``io.store.choose_shard_rows`` of the partition sizes."""
    return choose_shard_rows([p.n_rows for p in catalog.partitions])


def _worker_model(model_dir: str, sha: str) -> SpecdiffModel:
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
    partition: Partition, store_ref: StoreRef, model_dir: str, sha: str, options: RunOptions
) -> PartitionOutcome:
    """Read one partition, predict every row, write its region; runs on a worker.

    The store is opened and checked to be this run's (``StoreRef.open``) before anything is
    read, and again before each write: a replaced store raises StoreReplacedError. Outputs
    the writer refuses (``PartitionDataError``) mark the partition failed with its message
    instead of raising: a retry would compute the same outputs (and print a worker traceback)."""
    from specdiff_catalog.inference import predict_columns

    start = time.perf_counter()
    store = store_ref.open()
    model = _worker_model(model_dir, sha)
    bands = model.bands
    if bands is None:
        raise ValueError(f"{model_dir}: the model has no band set (train diffusion first)")
    try:
        table, ids = read_objects(
            partition,
            [c for b in bands.bands for c in (b.flux, b.ivar)],
            optional=[b.mw_transmission for b in bands.bands]
            + [bands.ebv_column, "RA", "DEC", "_healpix_29"],
            id_column=options.id_column,
        )
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
        precision=options.precision,
    )
    columns = {**_position_columns(table), "object_id": ids, **result}
    try:
        store.write_partition(partition.index, columns)
    except PartitionDataError as err:  # the same outputs on every retry: fail it once, in one line
        message = str(err).splitlines()[0]
        store.mark_failed(partition.index, message)
        return PartitionOutcome(partition.index, 0, time.perf_counter() - start, message)
    return PartitionOutcome(partition.index, len(table), time.perf_counter() - start)


def _position_columns(table: pd.DataFrame) -> dict[str, np.ndarray]:
    """ra, dec (NaN when absent) and _healpix_29 (from the catalog, else computed from ra/dec)."""
    n = len(table)
    ra = table["RA"].to_numpy(np.float64) if "RA" in table else np.full(n, np.nan)
    dec = table["DEC"].to_numpy(np.float64) if "DEC" in table else np.full(n, np.nan)
    healpix = table["_healpix_29"].to_numpy(np.int64) if "_healpix_29" in table else spatial_index(ra, dec)
    return {"ra": ra, "dec": dec, "_healpix_29": healpix}


def _store_attrs(
    catalog: Catalog, model_dir: Path, config: ModelConfig, sha: str, options: RunOptions
) -> dict[str, Any]:
    return {
        "software_version": __version__,
        "model": sha,
        "model_path": str(model_dir),
        "model_trained_on": config.trained_on(),
        "config": options.provenance(),
        "quantile_levels": list(options.quantiles),
        "input": str(catalog.root),
        "input_kind": catalog.kind,
        "input_properties": catalog.properties,
        "command_line": shlex.join(["specdiff-catalog", *sys.argv[1:]]),
    }


def run_catalog(
    input_path: PathLike | None,
    out: PathLike,
    model_dir: str | Path | None = None,
    options: RunOptions | None = None,
    cluster: ClusterConfig | None = None,
    *,
    overwrite: bool = False,
    max_in_flight: int | None = None,
    retries: int = 2,
    shard_rows: int | None = None,
    progress: bool = True,
    storage_options: Mapping[str, Any] | None = None,
    out_storage_options: Mapping[str, Any] | None = None,
    rules: StopRules | None = None,
) -> RunReport:
    """Photo-z PDF summaries and latents for every object of ``input_path`` into ``out``.

    input_path None: the bundled demo catalog; model_dir None: the bundled default model
    (trained on simulations, which is printed to stderr); options, cluster None: their defaults.
    storage_options: for the input's fsspec filesystem (an s3://, gs://, https:// ... URL).
    Options, model and the catalog's schema are checked first (``preflight``), before any
    worker or store exists; the options are made concrete for the model there
    (``RunOptions.resolved``: "auto" is its production student when it has students).
    Warns (``summaries.SampleCountWarning``) when the samples per object are too few for the
    quantile levels (``summaries.min_samples``: 39 for 0.025 / 0.975).

    out: a local path or an fsspec URL (``out_storage_options`` for its filesystem).
    Re-running on an existing store resumes: finished partitions are skipped; a store
    made for another input, model or options is refused (``overwrite`` starts over). The
    store's lock (``io.store_lock``) is held for the whole run: a second run on the same
    ``out`` is refused. A store replaced under the run makes it fail (StoreReplacedError).

    max_in_flight: partition tasks submitted ahead (None: follow the connected workers).
    A worker memory limit too small for the model and one batch raises
    ``memory.MemoryLimitError`` before anything starts (a smaller batch is used when one fits);
    a run stopped by ``rules`` (default ``StopRules()``) returns with ``report.stopped`` set.
    """
    from specdiff_catalog.models import simulation_notice
    from specdiff_catalog.models.store import model_id

    out = to_upath(out, out_storage_options)  # PathError for an unusable URL, before anything happens
    options = options or RunOptions()
    cluster = cluster or ClusterConfig()
    checked = preflight(input_path, model_dir, options, cluster, storage_options=storage_options)
    catalog, model_dir, config, options = checked.catalog, checked.model_dir, checked.config, checked.options
    assert config.diffusion is not None  # preflight refuses a model without one
    note = sample_count_note(options.quantiles, options.samples)
    if note:
        warnings.warn(note, SampleCountWarning, stacklevel=2)
    notice = simulation_notice(config, model_dir)
    if notice:
        print(notice, file=sys.stderr, flush=True)
    options = _fit_memory(options, model_dir, cluster)
    sha = model_id(model_dir)
    layout = StoreLayout(
        quantiles=options.quantiles,
        latent_size=config.diffusion.latent_size,
        n_samples_saved=options.save_samples,
        shard_rows=shard_rows or shard_rows_for(catalog),
    )
    sources = partition_sources(catalog)
    attrs = _store_attrs(catalog, model_dir, config, sha, options)
    attrs["input_fingerprint"] = input_fingerprint(catalog, sources)
    with store_lock(out):
        store = create_store(out, sources, layout, attrs, overwrite=overwrite)
        todo = store.pending()
        report = RunReport(
            store=out, n_partitions=len(catalog.partitions), skipped=len(catalog.partitions) - len(todo)
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
        report.checks = _count_checks(store, _checked(config))
        store.set_attrs(  # checks first that the store is still this run's (StoreReplacedError)
            {
                "last_run": {
                    "seconds": report.seconds,
                    "objects": report.n_objects,
                    "failed": {str(k): v for k, v in report.failed.items()},
                }
            }
        )
    return report


def _fit_memory(options: RunOptions, model_dir: Path, cluster: ClusterConfig) -> RunOptions:
    """``options`` with a batch that fits the memory limit of the workers this run starts."""
    batch = fit_batch(worker_memory_limit(cluster), model_dir, options.batch_size, options.samples)
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
        kwargs={"store_ref": store.ref(), "model_dir": model_dir, "sha": sha, "options": options},
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
    need = worker_footprint(model_dir, options.batch_size, options.samples)
    return (
        f"{stop.message}; a worker needs {need.describe()} at --batch-size {options.batch_size}: "
        "give the workers more memory or lower --batch-size"
    )
