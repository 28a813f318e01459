#!/usr/bin/env python
"""SIGKILL `specdiff-catalog run` itself at random moments; every re-run must finish to the same store.

    python benchmarks/run_kill_loop.py --seeds 50 [--first-seed 0] [--target run|worker]
                                       [--workdir DIR] [--json out.json]

Where ``benchmarks/store_kill_loop.py`` kills a process that only writes a store, this
kills the real command: ``python -m specdiff_catalog run`` on a small HATS catalog (8
partitions of 1-60 objects cut from the bundled demo catalog), the bundled default model,
16 samples, 5 sampler steps, one local worker of one thread. Once, uninterrupted, it
makes the reference store (and a second uninterrupted run checks that the command is
deterministic). Then, for each seed:

- ``--target run`` (default): the command starts in a process group of its own (client,
  scheduler, nanny, worker, their helpers) and the whole group is SIGKILLed at a time
  drawn uniformly over the reference run's wall time, counted from the start. Every
  third seed aims at the store's creation instead: the kill comes a uniform time over the
  reference's creation (its lock file's appearance to its store's rename, +20%) after the
  lock file appears. The same command then runs again (no ``--overwrite``) to its end.
- ``--target worker``: only the Dask worker process is SIGKILLed (the first one seen at or
  after a time drawn uniformly between the reference's store-ready moment and its end);
  the run itself must retry the partition and finish, with no re-run.

What is compared: after the kill, every row a reader takes (``valid`` and its partition
done) against the reference's row; after the (re-)run, every array of the store, padding
and the partition table included, against the reference's (attributes, which hold times
and the command line, are not compared). Rows lost: the reference's result rows that are
not results of the finished store; rows mixed: result rows whose values differ from the
reference's in any array. Where a kill landed is read off what it left on disk: no lock
yet (starting), the lock only, the creation sibling ``.NAME.creating-*``, or a ready
store with k partitions done (and whether a partition's arrays were written without its
status: killed in or right after a partition's writes).

It prints one JSON line per seed and a summary table; ``tests/test_run_faults.py`` runs
two seeds of each target. Run it single-threaded and niced on a shared machine:
``OMP_NUM_THREADS=1 nice -n 10 python benchmarks/run_kill_loop.py --seeds 50``.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SIZES = (60, 1, 45, 7, 33, 52, 20, 12)  # objects per partition of the test catalog
OPTIONS: tuple[str, ...] = ("--n-samples", "16", "--sampler", "dpmpp2m", "--steps", "5", "--n-workers", "1")
OPTIONS += ("--threads-per-worker", "1")
OPTIONS += ("--memory-limit", "2GiB", "--no-progress", "--dashboard-address", ":0")
AIMS = ("creation", "writes", "anywhere", "anywhere")  # seed % 4: what a seed's kill aims at
TIMEOUT = 900.0  # s: a (re-)run that takes longer counts as hung


def make_catalog(path: Path) -> Path:
    """A HATS catalog of 8 order-4 partitions of SIZES objects, cut from the bundled demo catalog."""
    import pandas as pd
    import pyarrow.parquet as pq
    from hats.pixel_math.spatial_index import compute_spatial_index, spatial_index_to_healpix

    from specdiff_catalog.io.catalog import demo_catalog_dir, open_catalog, write_hats

    parts = open_catalog(demo_catalog_dir()).partitions
    table = pd.concat([pq.read_table(p.path).to_pandas() for p in parts], ignore_index=True)
    pixel = spatial_index_to_healpix(compute_spatial_index(table["RA"], table["DEC"]), target_order=4)
    busiest = pd.Series(pixel).value_counts().index[: len(SIZES)]
    cut = pd.concat([table[pixel == p].head(n) for p, n in zip(sorted(busiest), SIZES, strict=True)])
    catalog = write_hats(cut, path, order=4, catalog_name="run_kill_loop")
    assert [p.n_rows for p in catalog.partitions] == list(SIZES)
    return path


def command(catalog: Path, out: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "specdiff_catalog",
        "run",
        "--input",
        str(catalog),
        "--out",
        str(out),
        *OPTIONS,
    ]


def start_run(catalog: Path, out: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    """The run, in a process group of its own (``env`` added to its environment); its output
    goes to files beside the store."""
    with open(f"{out}.stdout", "a") as stdout, open(f"{out}.stderr", "a") as stderr:
        return subprocess.Popen(
            command(catalog, out),
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,
        )


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the run's whole process group and wait until no process of it is left."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    raise RuntimeError(f"processes of group {proc.pid} survived SIGKILL")


def wait_run(proc: subprocess.Popen) -> int:
    try:
        return proc.wait(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        return -1


def _lock(out: Path) -> Path:
    return out.parent / f"{out.name}.lock"


def _creating(out: Path) -> bool:
    return any(out.parent.glob(f".{out.name}.creating-*"))


def _ready(out: Path) -> bool:
    return (out / "zarr.json").exists()


def _wait_for(proc: subprocess.Popen, condition: Callable[[], bool], every: float = 0.002) -> None:
    """Poll ``every`` s until ``condition`` holds or the process ends."""
    while proc.poll() is None and not condition():
        time.sleep(every)


def _workers(proc: subprocess.Popen) -> list[int]:
    """Pids of the run's Dask worker processes (the nanny's multiprocessing children)."""
    import psutil

    try:
        children = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    found = []
    for child in children:
        try:
            if "spawn_main" in " ".join(child.cmdline()):
                found.append(child.pid)
        except psutil.NoSuchProcess:
            continue
    return found


@dataclass(frozen=True)
class Timeline:
    """An uninterrupted run's moments, s after its start: lock file seen, creation sibling seen
    (None when the poll missed it), store ready, end; per partition, when its writes began
    (its first shard of FIRST_ARRAY appeared) and when its status was written."""

    lock: float
    creating: float | None
    ready: float
    end: float
    writes_began: tuple[float, ...]
    status_written: tuple[float, ...]


FIRST_ARRAY = "_healpix_29"  # write_partition writes the arrays in name order: this one first


def _first_shards(out: Path) -> list[int]:
    """Per partition, the index of its first shard (its file is ``ARRAY/c/INDEX``)."""
    import zarr

    group = zarr.open_group(out, mode="r")
    first, status, starts = (group[n] for n in (FIRST_ARRAY, "partitions/status", "partitions/start"))
    assert isinstance(first, zarr.Array) and first.shards is not None, f"{FIRST_ARRAY} is not sharded"
    assert isinstance(status, zarr.Array) and isinstance(starts, zarr.Array)
    assert status.chunks == (1,), "the loop reads one status chunk per partition"
    return [int(start) // first.shards[0] for start in np.asarray(starts[...])]


def _writes_began(out: Path, shard: int) -> bool:
    return (out / FIRST_ARRAY / "c" / str(shard)).exists()


def _status_written(out: Path, index: int) -> bool:
    return (out / "partitions" / "status" / "c" / str(index)).exists()


def reference_run(catalog: Path, out: Path) -> Timeline:
    """Run to the end, polling the disk (every 5 ms until the store is ready, then every 2 ms) for
    the lock, the creation sibling, the store, and each partition's first array and status."""
    began = time.monotonic()
    proc = start_run(catalog, out)
    seen: dict[str, float] = {}
    shards: list[int] = []
    while proc.poll() is None:
        now = time.monotonic() - began
        marks = {"lock": _lock(out).exists, "creating": lambda: _creating(out), "ready": lambda: _ready(out)}
        for i, shard in enumerate(shards):
            marks[f"began {i}"] = functools.partial(_writes_began, out, shard)
            marks[f"status {i}"] = functools.partial(_status_written, out, i)
        for name, present in marks.items():
            if name not in seen and present():
                seen[name] = now
        if "ready" in seen and not shards:
            shards = _first_shards(out)
        time.sleep(0.005 if not shards else 0.002)
    end = time.monotonic() - began
    n = len(SIZES)
    if proc.wait() != 0 or not {"lock", "ready", *(f"status {i}" for i in range(n))} <= seen.keys():
        raise RuntimeError(
            f"the reference run failed (exit {proc.returncode}, saw {sorted(seen)}): {out}.stderr"
        )
    return Timeline(
        seen["lock"],
        seen.get("creating"),
        seen["ready"],
        end,
        tuple(seen.get(f"began {i}", seen[f"status {i}"]) for i in range(n)),
        tuple(seen[f"status {i}"] for i in range(n)),
    )


def store_arrays(out: Path) -> dict[str, np.ndarray]:
    """Every array of a store, the partition table's included (``partitions/NAME``)."""
    import zarr

    group = zarr.open_group(out, mode="r")
    partitions = group["partitions"]
    assert isinstance(partitions, zarr.Group), f"{out}: partitions is not a group"
    arrays = [*group.arrays(), *((f"partitions/{n}", a) for n, a in partitions.arrays())]
    return {n: np.asarray(a[...]) for n, a in arrays}


def _equal(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and np.array_equal(a, b, equal_nan=a.dtype.kind == "f")


def _row_differs(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(rows,) bool: rows of two per-object arrays that differ (NaN equal to NaN)."""
    same = a == b
    if a.dtype.kind == "f":
        same |= np.isnan(a) & np.isnan(b)
    return ~same.reshape(len(a), -1).all(axis=1)


def compare(reference: dict[str, np.ndarray], got: dict[str, np.ndarray]) -> dict:
    """Arrays that differ, rows lost (reference results that are not results) and rows mixed
    (results whose values differ from the reference's in any per-object array)."""
    differing = sorted(reference.keys() ^ got.keys())
    differing += sorted(n for n in reference.keys() & got.keys() if not _equal(reference[n], got[n]))
    want, have = _results(reference), _results(got)
    if want.shape != have.shape:
        return {"arrays_differing": differing, "rows_lost": int(want.sum()), "rows_mixed": int(have.sum())}
    mixed = have & ~want
    for name, values in reference.items():
        if not name.startswith("partitions/") and values.shape[:1] == want.shape and name in got:
            mixed |= have & _row_differs(values, got[name])
    return {
        "arrays_differing": differing,
        "rows_lost": int((want & ~have).sum()),
        "rows_mixed": int(mixed.sum()),
    }


def _results(arrays: dict[str, np.ndarray]) -> np.ndarray:
    """(objects,) bool: rows a reader takes, valid = 1 in a partition whose status is done."""
    from specdiff_catalog.io.store import PartitionStatus

    rows = arrays["valid"] == 1
    done = np.zeros(rows.shape, dtype=bool)
    table = zip(
        arrays["partitions/start"], arrays["partitions/stop"], arrays["partitions/status"], strict=True
    )
    for start, stop, status in table:
        done[start:stop] = status == int(PartitionStatus.DONE)
    return rows & done


def landed(out: Path, exit_code: int | None) -> str:
    """Where a kill landed, from what it left on disk."""
    if exit_code == 0:
        return "after the run ended"
    if _ready(out):
        from specdiff_catalog.io.store import PartitionStatus

        done = store_arrays(out)["partitions/status"] == int(PartitionStatus.DONE)
        begun = [i for i, shard in enumerate(_first_shards(out)) if not done[i] and _writes_began(out, shard)]
        where = f"{int(done.sum())} partitions done"
        return where + (f", partition {begun[0]}'s arrays begun, no status" if begun else "")
    if _creating(out):
        return "creating the store"
    return "lock taken, no store" if _lock(out).exists() else "starting (no lock yet)"


def kill_and_rerun(
    seed: int, catalog: Path, workdir: Path, reference: dict[str, np.ndarray], times: Timeline
) -> dict:
    """One seed of ``--target run``: kill the run's process group, check the remains, run again, compare."""
    out = workdir / f"seed{seed}.zarr"
    rng = random.Random(seed)
    aim = AIMS[seed % len(AIMS)]
    began = time.monotonic()
    proc = start_run(catalog, out)
    if aim == "creation":  # from the lock's appearance, over the reference's creation (+20%)
        _wait_for(proc, lambda: _lock(out).exists())
        delay = rng.uniform(0.0, 1.2 * (times.ready - times.lock))
    elif aim.startswith("writes"):  # from partition p's first array, over the reference's writes of p (+50%)
        p = rng.randrange(len(SIZES))
        aim = f"writes of partition {p}"
        _wait_for(proc, lambda: _ready(out))
        shard = _first_shards(out)[p] if _ready(out) else -1
        _wait_for(proc, lambda: _writes_began(out, shard))
        delay = rng.uniform(0.0, 1.5 * max(times.status_written[p] - times.writes_began[p], 0.01))
    else:
        delay = rng.uniform(0.0, times.end)
    time.sleep(delay)
    killed_at = time.monotonic() - began
    exit_code = proc.poll()
    _kill_group(proc)
    where = landed(out, exit_code)
    after_kill = compare(reference, store_arrays(out)) if _ready(out) else None
    rerun = wait_run(start_run(catalog, out))
    result = {
        "seed": seed,
        "target": "run",
        "aim": aim,
        "killed_at_s": round(killed_at, 3),
        "landed": where,
        "rows_mixed_after_kill": after_kill["rows_mixed"] if after_kill else 0,
        "rerun_exit": rerun,
        "stale_lock_taken_over": "taking over the stale lock" in Path(f"{out}.stderr").read_text(),
        **compare_finished(out, reference),
    }
    return result


def kill_worker(
    seed: int, catalog: Path, workdir: Path, reference: dict[str, np.ndarray], times: Timeline
) -> dict:
    """One seed of ``--target worker``: SIGKILL the Dask worker mid-run; the run must finish by itself."""
    out = workdir / f"worker{seed}.zarr"
    rng = random.Random(seed)
    p = rng.randrange(len(SIZES))
    began = time.monotonic()
    proc = start_run(catalog, out)
    if p == 0:  # from the worker's start, over the reference's cluster start, model load and partition 0
        _wait_for(proc, lambda: bool(_workers(proc)), every=0.05)
        delay = rng.uniform(0.0, times.status_written[0] - times.ready)
    else:  # from partition p - 1's status, over the reference's time to partition p's status
        _wait_for(proc, lambda: _status_written(out, p - 1))
        delay = rng.uniform(0.0, times.status_written[p] - times.status_written[p - 1])
    time.sleep(delay)
    killed_at = time.monotonic() - began
    pids = _workers(proc)
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    where = landed(out, None) if pids else "after the run ended"
    exit_code = wait_run(proc)
    return {
        "seed": seed,
        "target": "worker",
        "aim": f"partition {p}",
        "killed_at_s": round(killed_at, 3),
        "landed": where,
        "workers_killed": len(pids),
        "cluster_started_again": "a worker process died while starting" in Path(f"{out}.stderr").read_text(),
        "rows_mixed_after_kill": 0,
        "rerun_exit": exit_code,
        "stale_lock_taken_over": False,
        **compare_finished(out, reference),
    }


def compare_finished(out: Path, reference: dict[str, np.ndarray]) -> dict:
    """The finished store against the reference, and what is left beside it."""
    compared = compare(reference, store_arrays(out)) if _ready(out) else {"arrays_differing": ["<no store>"]}
    leftovers = [*out.parent.glob(f".{out.name}.*"), *out.parent.glob(f"{out.name}.lock*")]
    return {
        **compared,
        "identical": compared["arrays_differing"] == [],
        "leftovers": sorted(p.name for p in leftovers),
    }


def _phase(result: dict) -> str:
    where = result["landed"]
    if "no status" in where:
        return "in a partition's writes (its arrays begun, no status)"
    if "partitions done" in where:
        return f"ready, {int(where.split()[0])} of {len(SIZES)} partitions done"
    return where


def summary(results: list[dict], times: Timeline) -> str:
    """The table of outcomes by where the kill landed."""
    by: dict[str, list[dict]] = {}
    for r in results:
        by.setdefault(_phase(r), []).append(r)
    lines = [
        f"reference run: lock after {times.lock:.2f} s, store ready after {times.ready:.2f} s, "
        f"ended after {times.end:.2f} s",
        "| kill landed | kills | exit codes of the run that finished | identical stores "
        "| rows lost | rows mixed |",
        "|---|---:|---|---:|---:|---:|",
    ]
    for phase in sorted(by, key=_order):
        group = by[phase]
        codes = Counter(r["rerun_exit"] for r in group)
        lines.append(
            f"| {phase} | {len(group)} | {', '.join(f'{c}: {n}' for c, n in sorted(codes.items()))} | "
            f"{sum(r['identical'] for r in group)} | {sum(r['rows_lost'] for r in group)} | "
            f"{sum(r['rows_mixed'] + r['rows_mixed_after_kill'] for r in group)} |"
        )
    identical = sum(r["identical"] and not r["leftovers"] and r["rerun_exit"] == 0 for r in results)
    if results[0]["target"] == "run":
        stale = sum(r["stale_lock_taken_over"] for r in results)
        then = f"{stale} re-runs took over the killed run's stale lock"
    else:
        then = f"{sum(r['cluster_started_again'] for r in results)} runs started their cluster again"
    lines.append(
        f"{len(results)} kills: {identical} (re-)runs exited 0 with a store identical to the reference and "
        f"nothing left beside it; {then}"
    )
    return "\n".join(lines)


def _order(phase: str) -> tuple[int, int, str]:
    steps = ["starting", "lock taken", "creating"]
    for i, step in enumerate(steps):
        if phase.startswith(step):
            return (i, 0, phase)
    if phase.startswith("ready"):
        return (len(steps), int(phase.split()[1]), phase)
    return (len(steps) + 1 if "writes" in phase else len(steps) + 2, 0, phase)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=50)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--target", choices=("run", "worker"), default="run")
    parser.add_argument(
        "--workdir", type=Path, help="where the catalog and stores go (default: a temporary one)"
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        workdir = Path(tmp)
        catalog = make_catalog(workdir / "catalog")
        times = reference_run(catalog, workdir / "reference.zarr")
        reference = store_arrays(workdir / "reference.zarr")
        wait_run(start_run(catalog, workdir / "control.zarr"))
        control = compare(reference, store_arrays(workdir / "control.zarr"))["arrays_differing"]
        print(f"control: a second uninterrupted run differs from the reference in {control or 'no array'}")
        one = kill_and_rerun if args.target == "run" else kill_worker
        results = []
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            results.append(one(seed, catalog, workdir, reference, times))
            print(json.dumps(results[-1]), flush=True)
    print(summary(results, times))
    if args.json:
        args.json.write_text(json.dumps({"timeline_s": asdict(times), "results": results}, indent=1))
    bad = [r for r in results if not r["identical"] or r["leftovers"] or r["rerun_exit"] != 0]
    return 1 if bad or control else 0


if __name__ == "__main__":
    sys.exit(main())
