"""End-to-end throughput of ``run`` versus the sampler alone, and peak worker memory vs catalog size.

    python benchmarks/pipeline_scaling.py --mock data/mock_s1 --sizes 10000 100000 1000000

Catalogs are plain Parquet directories of fixed-size partitions (``--partition-rows``)
whose rows are drawn with replacement from the mock survey's HATS catalog (new object
ids), so the catalog grows while the partition size stays fixed. For each size, one
``run`` on a LocalCluster of ``--workers`` single-threaded processes; afterwards each
worker reports its peak resident memory (getrusage), the client its wall time.
The throughput comparison runs the sampler (``inference.predict``) on the first
``--compare-rows`` rows of the same catalog, same model, samples and steps: once in this
process alone, and once in every worker at the same time (after the run, so the peak
memory is the run's). The ratio is end-to-end objects/s over the all-workers sampler
rate: what reading, features, summaries, writing and scheduling cost. Prints the
figures; no asserts.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from distributed import Client, LocalCluster

from specdiff_catalog import defaults
from specdiff_catalog.inference import predict
from specdiff_catalog.io.catalog import open_catalog, read_partition
from specdiff_catalog.models import load_model
from specdiff_catalog.models.store import default_model_dir, read_config
from specdiff_catalog.pipeline.cluster import ClusterConfig
from specdiff_catalog.pipeline.run import RunOptions, run_catalog


def source_rows(mock: Path) -> pd.DataFrame:
    catalog = open_catalog(mock / "catalog")
    return pd.concat([pd.read_parquet(p.path) for p in catalog.partitions], ignore_index=True)


def write_catalog(rows: pd.DataFrame, n: int, partition_rows: int, out: Path, seed: int) -> Path:
    """n rows resampled from ``rows`` into files of ``partition_rows`` rows; ids 0..n-1."""
    out.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for k, lo in enumerate(range(0, n, partition_rows)):
        take = rows.iloc[rng.integers(0, len(rows), min(partition_rows, n - lo))].reset_index(drop=True)
        take["OBJECT_ID"] = np.arange(lo, lo + len(take), dtype=np.int64)
        take.to_parquet(out / f"part-{k:05d}.parquet", index=False)
    return out


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def sampler_alone(model_dir: Path, catalog: Path, options: RunOptions, n: int) -> float:
    """objects/s of inference.predict on the first n rows, in the calling process, one thread,
    after a 16-row warm-up call (the per-process setup a run pays once per worker)."""
    torch.set_num_threads(1)
    model = load_model(model_dir)
    if model.bands is None:
        raise SystemExit(f"{model_dir}: config.json records no band set")
    part = open_catalog(catalog).partitions[0]
    table = read_partition(
        part,
        [c for b in model.bands.bands for c in (b.flux, b.ivar)] + ["OBJECT_ID"],
        optional=[model.bands.ebv_column],
    ).iloc[:n]

    def timed(rows: pd.DataFrame) -> float:
        start = time.perf_counter()
        predict(
            model,
            rows,
            rows["OBJECT_ID"].to_numpy(),
            n_samples=options.n_samples,
            seed=options.seed,
            sampler=options.sampler,
            steps=options.steps,
            quantiles=options.quantiles,
        )
        return time.perf_counter() - start

    timed(table.iloc[:16])  # once-per-process setup (the photometry check's band tables) is not per object
    return len(table) / timed(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--mock", type=Path, required=True, help="a mock survey directory (its catalog/ is resampled)"
    )
    parser.add_argument("--model", type=Path, default=default_model_dir())
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--partition-rows", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--samples",
        type=int,
        default=None,
        help="samples per object (default: the model's production default)",
    )
    parser.add_argument(
        "--sampler", default=defaults.SAMPLER, help="default: the model's production student, else dpmpp2m"
    )
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=2048)
    parser.add_argument("--compare-rows", type=int, default=2048, help="rows for the sampler-alone timing")
    args = parser.parse_args()

    options = RunOptions(
        n_samples=args.samples, sampler=args.sampler, steps=args.steps, batch_size=args.batch_size
    ).resolved(read_config(args.model))
    rows = source_rows(args.mock)
    print(
        f"model {args.model}; {args.workers} workers x 1 thread; {options.n_samples} samples, "
        f"sampler {options.sampler}, steps {options.steps or 'default'}, "
        f"batch {args.batch_size}, partitions of {args.partition_rows} rows"
    )
    print(
        f"{'objects':>9} {'partitions':>10} {'wall s':>8} {'objects/s':>10} {'sampler obj/s, 1 process':>25} "
        f"{'sampler obj/s, all workers':>27} {'ratio':>6} {'peak worker MiB':>16}"
    )
    with (
        tempfile.TemporaryDirectory() as tmp,
        LocalCluster(
            n_workers=args.workers, threads_per_worker=1, processes=True, dashboard_address=":0"
        ) as cluster,
    ):
        for n in args.sizes:
            if -(-n // args.partition_rows) < args.workers:
                print(
                    f"note: {n} objects make fewer partitions than workers; "
                    "some workers idle (lower --partition-rows)"
                )
            catalog = write_catalog(rows, n, args.partition_rows, Path(tmp) / f"cat{n}", seed=n)
            with Client(cluster) as client:
                client.restart()  # fresh worker processes: peak memory per catalog size
                start = time.perf_counter()
                report = run_catalog(
                    catalog,
                    Path(tmp) / f"out{n}.zarr",
                    args.model,
                    options,
                    ClusterConfig(scheduler_address=cluster.scheduler_address),
                    progress=False,
                )
                wall = time.perf_counter() - start
                peaks = client.run(peak_rss_mib)
                together = sum(
                    client.gather(
                        [
                            client.submit(
                                sampler_alone,
                                args.model,
                                catalog,
                                options,
                                args.compare_rows,
                                workers=[w],
                                pure=False,
                            )
                            for w in client.scheduler_info()["workers"]
                        ]
                    )
                )
            alone = sampler_alone(args.model, catalog, options, args.compare_rows)
            rate = report.n_objects / wall
            print(
                f"{n:>9} {report.n_partitions:>10} {wall:>8.1f} {rate:>10.1f} "
                f"{alone:>25.1f} {together:>27.1f} "
                f"{rate / together:>6.2f} {max(peaks.values()):>16.0f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
