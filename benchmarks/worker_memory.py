"""Peak resident memory of one ``run`` worker process against batch size x samples per object.

    python benchmarks/worker_memory.py --configs 64x16 512x16 2048x16 8192x16 512x100 2048x100
    python benchmarks/worker_memory.py --configs 512x16 2048x16 --repeats 6

For each BATCHxSAMPLES, a fresh single-threaded Dask worker process (a LocalCluster of
its own, no memory limit) reports its resident memory after
start-up (Python, Dask, numpy: ``idle``), after importing the pipeline module (torch:
``imported``) and after loading the model as a partition task does (``run._worker_model``,
one torch thread: ``model``), then runs
``inference.predict_columns`` on BATCH rows drawn from the demo catalog with SAMPLES
samples per object and reports its peak (``getrusage``), then ``--repeats`` - 1 more
batches of other rows and the peak after them (what the allocator keeps grows over the
first few). These figures calibrate ``pipeline.memory`` (what ``run`` checks
``--memory-limit`` against); the script prints the calibration's estimate beside each
measurement. No asserts.
"""

from __future__ import annotations

import argparse
import resource
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from distributed import Client, LocalCluster

MIB = 2**20


def _rss() -> int:
    """Resident bytes of this process now (Linux /proc)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def measure(model_dir: str, batch: int, samples: int, repeats: int) -> dict[str, float]:
    """Runs on the worker: resident memory (MiB) at each stage of a first partition task, and
    the peak after ``repeats`` batches (other rows each time)."""
    idle = _rss()
    from specdiff_catalog.inference import predict_columns
    from specdiff_catalog.io.catalog import demo_catalog_dir, open_catalog, read_partition
    from specdiff_catalog.models.store import model_id
    from specdiff_catalog.pipeline.run import _worker_model  # what a partition task imports and calls

    imported = _rss()
    model = _worker_model(model_dir, model_id(Path(model_dir)))  # one torch thread per worker thread
    loaded = _rss()
    catalog = open_catalog(demo_catalog_dir())
    rows = pd.concat([read_partition(p, list(catalog.columns)) for p in catalog.partitions])
    rng = np.random.default_rng(0)
    peaks = []
    for k in range(repeats):
        table = rows.iloc[rng.integers(0, len(rows), batch)].reset_index(drop=True)
        ids = np.arange(k * batch, (k + 1) * batch, dtype=np.int64)
        predict_columns(model, table, ids, batch_size=batch, n_samples=samples)
        peaks.append(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    stages = {"idle": idle, "imported": imported, "model": loaded, "peak": peaks[0], "later": peaks[-1]}
    return {k: v / MIB for k, v in stages.items()}


def main() -> None:
    from specdiff_catalog.models.store import default_model_dir
    from specdiff_catalog.pipeline.memory import worker_footprint

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=default_model_dir())
    parser.add_argument("--configs", nargs="+", default=["64x16", "512x16", "2048x16", "512x100", "2048x100"])
    parser.add_argument(
        "--repeats", type=int, default=1, help="batches per worker; the last column is the peak after all"
    )
    args = parser.parse_args()
    print(f"model {args.model}")
    print(
        f"{'batch':>6} {'samples':>7} {'idle MiB':>9} {'imported MiB':>13} {'model MiB':>10} "
        f"{'peak MiB':>9} {f'after {args.repeats} MiB':>13} {'estimate MiB':>13}"
    )
    for config in args.configs:
        batch, samples = (int(v) for v in config.split("x"))
        with (
            LocalCluster(
                n_workers=1, threads_per_worker=1, memory_limit=0, dashboard_address=":0"
            ) as cluster,
            Client(cluster) as client,
        ):
            got = client.submit(measure, str(args.model), batch, samples, args.repeats, pure=False).result()
            estimate = worker_footprint(args.model, batch, samples).total / MIB
            print(
                f"{batch:>6} {samples:>7} {got['idle']:>9.0f} {got['imported']:>13.0f} {got['model']:>10.0f} "
                f"{got['peak']:>9.0f} {got['later']:>13.0f} {estimate:>13.0f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
