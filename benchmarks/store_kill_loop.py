#!/usr/bin/env python
"""Kill a store writer at random moments and check that every re-run completes to the same store.

    python benchmarks/store_kill_loop.py --seeds 50 [--first-seed 0] [--json out.json]

A writer process creates an output store (``io.store.create_store``) for 12 partitions of
1-700 objects and writes them one after another as ``run``'s workers do
(``OutputStore.write_partition``, its results a function of the partition alone). For
each seed the writer is SIGKILLed at a time drawn uniformly over the creation or over
the writes of an uninterrupted writer (timed from the moment its imports are done), so kills land during
store creation (every third seed), inside partition writes and between them. Then:

1. the killed store is read as a reader would (``open_store`` + ``read_results``): every
   result row must equal the reference store's row (no wrong row is ever visible), and a
   half-created store must be refused or absent, never read;
2. the writer runs again, uninterrupted: it must resume (or recreate an interrupted
   creation) without ``overwrite`` and finish;
3. the finished store must equal an uninterrupted writer's store array for array
   (padding included) with every partition done, and no leftover of the interrupted
   creation (``.NAME.creating-*``) may remain beside it.

It prints one line per seed (where the kill landed, rows visible after it) and a summary;
``tests/test_store_faults.py`` runs three seeds of it.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SIZES = (300, 1, 0, 700, 64, 65, 129, 512, 17, 3, 250, 640)
QUANTILES = (0.025, 0.16, 0.5, 0.84, 0.975)
MODEL_OUTPUTS: tuple[str, ...] = (
    "z_quantiles",
    "z_median",
    "z_mode",
    "z_mean",
    "z_std",
    "latent",
    "latent_std",
    "z_samples",
)
MODEL_OUTPUTS += ("coverage", "ppc_chi2", "ppc_pvalue")  # NaN without photometry, as run writes them


def partition_columns(index: int, n: int, latent_size: int = 4, n_samples: int = 8) -> dict[str, np.ndarray]:
    """The results of partition ``index`` (n objects): a function of the index alone."""
    from specdiff_catalog.flags import Flag

    rng = np.random.default_rng(index)
    q = np.sort(rng.uniform(0, 2, (n, len(QUANTILES))), axis=1)
    flags = rng.choice([0, int(Flag.MISSING_BAND), int(Flag.NO_PHOTOMETRY)], n, p=[0.8, 0.15, 0.05])
    columns = {
        "object_id": index * 10_000 + np.arange(n, dtype=np.int64),
        "_healpix_29": rng.integers(0, 2**40, n),
        "ra": rng.uniform(0, 360, n),
        "dec": rng.uniform(-90, 90, n),
        "flags": flags.astype(np.uint16),
        "z_quantiles": q,
        "z_median": q[:, 2],
        "z_mode": q[:, 2],
        "z_mean": q.mean(axis=1),
        "z_std": q.std(axis=1),
        "latent": rng.normal(size=(n, latent_size)),
        "latent_std": rng.uniform(size=(n, latent_size)),
        "z_samples": rng.uniform(0, 2, (n, n_samples)),
        "coverage": rng.uniform(0, 1, n),
        "ppc_chi2": rng.chisquare(3, n),
        "ppc_dof": np.full(n, 3),
        "ppc_pvalue": rng.uniform(0, 1, n),
    }
    no_result = (flags & int(Flag.NO_PHOTOMETRY)) != 0
    for name in MODEL_OUTPUTS:
        columns[name][no_result] = np.nan
    return columns


def write(path: str) -> None:
    """The writer: create (or resume) the store and write every pending partition, saying where it is."""
    from specdiff_catalog.io.store import StoreLayout, create_store

    print("start", flush=True)
    layout = StoreLayout(quantiles=QUANTILES, latent_size=4, n_samples_saved=8, shard_rows=64)
    parts = [(5, 1000 + i, n) for i, n in enumerate(SIZES)]
    store = create_store(path, parts, layout, {"model": "kill-loop", "config": {"seed": 0}})
    print("created", flush=True)
    for i in store.pending():
        print(f"partition {i}", flush=True)
        store.write_partition(i, partition_columns(i, SIZES[i]))
    print("finished", flush=True)


def _writer(path: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, __file__, "--write", str(path)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )


def _run_to_end(path: Path) -> tuple[float, float]:
    """Run the writer uninterrupted; seconds from its 'start' line to its 'created' and 'finished' lines."""
    proc = _writer(path)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "start"
    began = time.perf_counter()
    seen = {}
    for line in proc.stdout:
        seen[line.strip()] = time.perf_counter() - began
    if proc.wait() != 0 or "finished" not in seen:
        raise RuntimeError(f"the writer failed on {path}: {sorted(seen)}")
    return seen["created"], seen["finished"]


def _arrays(path: Path) -> dict[str, np.ndarray]:
    import zarr

    group = zarr.open_group(path, mode="r")
    partitions = group["partitions"]
    assert isinstance(partitions, zarr.Group), f"{path}: partitions is not a group"
    arrays = [*group.arrays(), *((f"partitions/{n}", a) for n, a in partitions.arrays())]
    return {n: np.asarray(a[...]) for n, a in arrays}


def _same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> list[str]:
    """Names of the arrays that differ (NaN equal to NaN)."""
    bad = list(a.keys() ^ b.keys())
    for n in a.keys() & b.keys():
        x, y = a[n], b[n]
        equal = x.shape == y.shape and (
            np.array_equal(x, y, equal_nan=True) if x.dtype.kind == "f" else np.array_equal(x, y)
        )
        if not equal:
            bad.append(n)
    return sorted(bad)


def _visible_rows(path: Path, reference: dict[str, np.ndarray]) -> tuple[str, int]:
    """What a reader sees of a killed store: ("absent" | "incomplete" | "ready", result rows),
    after checking that every result row equals the reference's."""
    from specdiff_catalog.io.store import IncompleteStoreError, open_store

    try:
        store = open_store(path, mode="r")
    except FileNotFoundError:
        return "absent", 0
    except IncompleteStoreError:
        return "incomplete", 0
    rows = np.zeros(store.n_rows(), dtype=bool)
    for block, values in store.blocks(["valid"]):
        rows[block] = store.result_mask(block, values["valid"])
    for name, want in reference.items():
        if name.startswith("partitions/") or want.shape[:1] != rows.shape:
            continue
        got = store.read(name)[rows]
        same = np.array_equal(got, want[rows], equal_nan=want.dtype.kind == "f")
        if not same:
            raise AssertionError(f"{path}: {name} differs from the reference at a result row")
    return "ready", int(rows.sum())


def kill_and_resume(
    seed: int, workdir: Path, reference: dict[str, np.ndarray], times: tuple[float, float]
) -> dict:
    """One seed: kill a writer at a random moment, read the remains, resume, compare.

    times: an uninterrupted writer's seconds to 'created' and to 'finished'. Every third
    seed kills during creation (uniform over it), the others during the partition writes."""
    path = workdir / f"seed{seed}.zarr"
    created, finished = times
    delay = random.Random(seed).uniform(*((0.0, created) if seed % 3 == 0 else (created, finished)))
    proc = _writer(path)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "start"
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    lines = proc.stdout.read().split()
    proc.wait()
    phase = " ".join(lines[-2:]) if lines and lines[-1].isdigit() else (lines[-1] if lines else "start")
    state, visible = _visible_rows(path, reference)
    _run_to_end(path)
    differ = _same(reference, _arrays(path))
    leftovers = sorted(p.name for p in workdir.glob(f".{path.name}.*"))
    return {
        "seed": seed,
        "delay_s": round(delay, 3),
        "killed_after": phase,
        "store_after_kill": state,
        "result_rows_after_kill": visible,
        "arrays_differing_after_resume": differ,
        "leftovers_after_resume": leftovers,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=50)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--write", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.write:
        write(args.write)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        times = _run_to_end(workdir / "reference.zarr")
        reference = _arrays(workdir / "reference.zarr")
        results = []
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            result = kill_and_resume(seed, workdir, reference, times)
            results.append(result)
            print(json.dumps(result), flush=True)
    bad = [r for r in results if r["arrays_differing_after_resume"] or r["leftovers_after_resume"]]
    phases: dict[str, int] = {}
    for r in results:
        key = "creation" if r["store_after_kill"] != "ready" else "partition writes"
        phases[key] = phases.get(key, 0) + 1
    print(
        f"{len(results)} kills (writer: created after {times[0]:.2f} s, finished after {times[1]:.2f} s): "
        f"{phases}; "
        f"{len(results) - len(bad)} resumed to a store identical to the uninterrupted one, {len(bad)} not"
    )
    if args.json:
        args.json.write_text(json.dumps({"writer_times_s": times, "results": results}, indent=1))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
