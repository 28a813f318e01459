"""The measured figures behind docs/scaling.md, and the projection to survey-size catalogs.

    python benchmarks/scaling_figures.py --tasks 10000 --tiny-partitions 2000 --store-partitions 10000 \\
        --objects 20000 --project 3e9:10000 2e10:70000

Four measurements on a LocalCluster of ``--workers`` single-threaded worker processes:

1. **Scheduling overhead per task**: ``--tasks`` no-op tasks through ``pipeline.schedule.run_tasks``
   (the code path of ``run``: submission window, scheduler-side queuing, outcome gathering),
   and the same tasks through a bare ``client.map`` + ``wait`` for comparison.
2. **A real run over tiny partitions**: ``run_catalog`` over ``--tiny-partitions`` Parquet files
   of ``--tiny-rows`` rows each (2 samples, 1 step): the fixed cost of a partition task (read,
   model call, store writes, status) when the sampler costs next to nothing.
3. **Store metadata at survey partition counts**: ``create_store`` with ``--store-partitions``
   partitions (no objects run): creation time, files and bytes; marking every partition
   (status + error chunks, what a finished partition writes besides its arrays) and reading
   the pending list back (what a resumed run does first).
4. **Disk per object**: a production-shaped run (``--objects`` objects in partitions of
   ``--partition-rows``, ``--samples`` samples x ``--steps`` steps, the bundled model): bytes
   and files per object and per partition.

``--project N:P`` prints, for a catalog of N objects in P partitions, what these figures
imply (tasks, files, metadata, disk, scheduling time) and the sampler hours from
``--cpu-objects-per-s`` (measured in docs/performance.md) and ``--gpu-objects-per-s``
(a placeholder until measured: GPU-hours = N / rate / 3600). No asserts.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from distributed import Client, LocalCluster, wait
from upath import UPath

from benchmarks.pipeline_scaling import write_catalog
from specdiff_catalog import defaults
from specdiff_catalog.io.catalog import demo_catalog_dir, open_catalog, read_partition
from specdiff_catalog.io.store import StoreLayout, choose_shard_rows, create_store, open_store, shard_files
from specdiff_catalog.pipeline.cluster import ClusterConfig
from specdiff_catalog.pipeline.run import RunOptions, run_catalog
from specdiff_catalog.pipeline.schedule import Outcome, run_tasks

MIB = 2**20


def noop(item: int) -> int:
    return item


def tree_size(path: Path | UPath) -> tuple[int, int]:
    """(files, bytes) under ``path``."""
    files = [f for f in path.rglob("*") if f.is_file()]
    return len(files), sum(f.stat().st_size for f in files)


def demo_rows() -> pd.DataFrame:
    """Every row of the bundled demo catalog (what the catalogs here are resampled from)."""
    demo = open_catalog(demo_catalog_dir())
    return pd.concat([read_partition(p, list(demo.columns)) for p in demo.partitions], ignore_index=True)


@dataclass
class Figures:
    task_ms: float = 0.0  # wall ms per no-op task through run_tasks (all workers together)
    partition_ms: float = 0.0  # wall ms per tiny real partition (all workers together)
    store_files_per_partition: float = 0.0  # metadata files a finished partition adds (status, error)
    store_bytes_per_partition: float = 0.0  # metadata bytes per partition after marking all
    store_fixed_bytes: int = 0
    bytes_per_object: float = 0.0
    array_files_per_shard: int = 0


def scheduling(client: Client, n: int, threads: int, figures: Figures) -> None:
    start = time.perf_counter()
    outcomes: list[Outcome] = []
    run_tasks(client, noop, list(range(n)), key=lambda i: f"noop-{i}", on_outcome=outcomes.append)
    ours = time.perf_counter() - start
    assert len(outcomes) == n and not any(o.error for o in outcomes)
    start = time.perf_counter()
    futures = client.map(noop, range(n), key=[f"bare-{i}" for i in range(n)], pure=False)
    wait(futures)
    del futures
    bare = time.perf_counter() - start
    figures.task_ms = 1e3 * ours / n
    print(
        f"1. {n} no-op tasks on {threads} worker threads: run_tasks {ours:.1f} s = "
        f"{figures.task_ms:.2f} ms/task ({n / ours:.0f} tasks/s); "
        f"bare client.map + wait {bare:.1f} s = {1e3 * bare / n:.2f} ms/task",
        flush=True,
    )


def tiny_run(cluster: LocalCluster, tmp: Path, n_parts: int, rows: int, figures: Figures) -> None:
    start = time.perf_counter()
    catalog = write_catalog(demo_rows(), n_parts * rows, rows, tmp / "tiny", seed=1)
    written = time.perf_counter() - start
    start = time.perf_counter()
    opened = open_catalog(catalog)
    opening = time.perf_counter() - start
    start = time.perf_counter()
    report = run_catalog(
        catalog,
        tmp / "tiny.zarr",
        None,
        RunOptions(n_samples=2, sampler="dpmpp2m", steps=1, batch_size=rows),
        ClusterConfig(scheduler_address=cluster.scheduler_address),
        progress=False,
    )
    wall = time.perf_counter() - start
    figures.partition_ms = 1e3 * wall / n_parts
    print(
        f"2. run over {len(opened.partitions)} partitions x {rows} rows (2 samples, 1 step): {wall:.1f} s = "
        f"{figures.partition_ms:.1f} ms/partition, {report.done} done, {len(report.failed)} failed "
        f"(catalog written in {written:.0f} s, opened in {opening:.1f} s)",
        flush=True,
    )


def store_metadata(tmp: Path, n_parts: int, figures: Figures) -> None:
    layout = StoreLayout(quantiles=defaults.QUANTILES, latent_size=10, shard_rows=1024)
    parts = [(8, i, 1000) for i in range(n_parts)]
    start = time.perf_counter()
    store = create_store(tmp / "meta.zarr", parts, layout, {"model": "x", "config": {}})
    created = time.perf_counter() - start
    files0, bytes0 = tree_size(store.path)
    start = time.perf_counter()
    for i in range(n_parts):
        store.mark_failed(i, "")  # writes the partition's status and error chunks, as a finished one does
    marked = time.perf_counter() - start
    files1, bytes1 = tree_size(store.path)
    start = time.perf_counter()
    pending = open_store(store.path).pending()
    reread = time.perf_counter() - start
    figures.store_files_per_partition = (files1 - files0) / n_parts
    figures.store_bytes_per_partition = bytes1 / n_parts
    figures.store_fixed_bytes = bytes0
    print(
        f"3. store with {n_parts} partitions: created in {created:.1f} s ({files0} files, "
        f"{bytes0 / MIB:.2f} MiB); "
        f"marking each partition {1e3 * marked / n_parts:.2f} ms -> {files1} files, {bytes1 / MIB:.2f} MiB "
        f"({figures.store_files_per_partition:.1f} files, {figures.store_bytes_per_partition:.0f} bytes per "
        f"partition); reading the pending list {reread:.2f} s ({len(pending)} pending)",
        flush=True,
    )


def disk_per_object(
    cluster: LocalCluster,
    tmp: Path,
    n: int,
    rows: int,
    samples: int | None,
    steps: int | None,
    figures: Figures,
) -> None:
    catalog = write_catalog(demo_rows(), n, rows, tmp / "real", seed=2)
    out = tmp / "real.zarr"
    start = time.perf_counter()
    report = run_catalog(
        catalog,
        out,
        None,
        RunOptions(n_samples=samples, steps=steps),  # steps None: the model's production setting
        ClusterConfig(scheduler_address=cluster.scheduler_address),
        progress=False,
    )
    wall = time.perf_counter() - start
    files, nbytes = tree_size(out)
    store = open_store(out, mode="r")
    arrays = [name for name, a in store.group.arrays() if a.shape[0] == store.n_rows()]  # per-object ones
    shards = -(-store.n_rows() // store.layout.shard_rows)
    figures.bytes_per_object = nbytes / n
    figures.array_files_per_shard = len(arrays)
    per_array = {name: tree_size(out / name)[1] / n for name in arrays}
    print(
        f"4. {n} objects in {report.n_partitions} partitions of {rows} ({samples or 'production'} samples x "
        f"{steps or 'production'} steps, "
        f"{wall:.0f} s): {nbytes / MIB:.2f} MiB, {files} files, {figures.bytes_per_object:.1f} bytes/object; "
        f"shard {store.layout.shard_rows} rows, {shards} shards x {len(arrays)} arrays",
        flush=True,
    )
    print("   bytes/object by array: " + ", ".join(f"{k} {v:.1f}" for k, v in sorted(per_array.items())))


def project(spec: str, figures: Figures, args: argparse.Namespace) -> None:
    n_text, p_text = spec.split(":")
    n, parts = float(n_text), int(float(p_text))
    rows = n / parts
    n_rows = [int(rows)] * parts
    shard = choose_shard_rows(n_rows)  # what run picks (pipeline.run.shard_rows_for)
    shards = shard_files(n_rows, shard)
    array_files = shards * figures.array_files_per_shard
    meta_files = parts * figures.store_files_per_partition
    disk = n * figures.bytes_per_object
    scheduling_s = parts * figures.task_ms / 1e3
    cpu_hours = n / args.cpu_objects_per_s / 3600
    gpu = args.gpu_objects_per_s
    gpu_text = (
        f"{n / gpu / 3600:,.0f} GPU-hours at {gpu:,.0f} objects/s per GPU"
        if gpu
        else "GPU-hours = N / G / 3600"
    )
    print(
        f"   {n:.0e} objects in {parts:,} partitions (~{rows:,.0f} rows): {parts:,} tasks, scheduling "
        f"{scheduling_s:,.0f} s in all; shard {shard} rows, {shards / parts:g} per partition, "
        f"{array_files:,.0f} array files + {meta_files:,.0f} status files; partition table "
        f"{parts * figures.store_bytes_per_partition / MIB:,.1f} MiB; disk {disk / 2**40:,.2f} TiB; "
        f"sampler {cpu_hours:,.0f} hours of this 2-core machine; {gpu_text}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--tiny-partitions", type=int, default=2000)
    parser.add_argument("--tiny-rows", type=int, default=10)
    parser.add_argument("--store-partitions", type=int, default=10_000)
    parser.add_argument("--objects", type=int, default=20_000)
    parser.add_argument("--partition-rows", type=int, default=10_000)
    parser.add_argument("--samples", type=int, default=None, help="default: the production setting's")
    parser.add_argument("--steps", type=int, default=None, help="default: the production setting's")
    parser.add_argument("--cpu-objects-per-s", type=float, default=21.6, help="docs/performance.md, 2 cores")
    parser.add_argument("--gpu-objects-per-s", type=float, default=0.0, help="0: not measured yet")
    parser.add_argument("--project", nargs="*", default=[], metavar="N:P")
    parser.add_argument("--skip", nargs="*", default=[], choices=["1", "2", "3", "4"])
    args = parser.parse_args()

    figures = Figures()
    print(f"{os.cpu_count()} cores; LocalCluster of {args.workers} worker processes x 1 thread", flush=True)
    with (
        tempfile.TemporaryDirectory() as tmp_text,
        LocalCluster(n_workers=args.workers, threads_per_worker=1, dashboard_address=":0") as cluster,
        Client(cluster) as client,
    ):
        tmp = Path(tmp_text)
        if "1" not in args.skip:
            scheduling(client, args.tasks, args.workers, figures)
        if "2" not in args.skip:
            tiny_run(cluster, tmp, args.tiny_partitions, args.tiny_rows, figures)
        if "3" not in args.skip:
            store_metadata(tmp, args.store_partitions, figures)
        if "4" not in args.skip:
            disk_per_object(
                cluster, tmp, args.objects, args.partition_rows, args.samples, args.steps, figures
            )
    if args.project:
        print("projection:")
        for spec in args.project:
            project(spec, figures, args)


if __name__ == "__main__":
    main()
