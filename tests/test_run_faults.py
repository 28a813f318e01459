"""`run` under SIGKILL, with real processes (issue 13): the command's whole process group killed
and re-run, and its Dask worker killed mid-run. Two seeds each of ``benchmarks/run_kill_loop.py``
(its 50-seed output is quoted in docs/reliability.md), on 8 partitions of 1-60 objects cut from
the bundled demo catalog and the bundled default model: every finished store must equal an
uninterrupted run's array for array (padding and partition table included), with no row lost
or mixed and nothing left beside it.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pytest

from benchmarks.run_kill_loop import (
    Timeline,
    compare_finished,
    kill_and_rerun,
    kill_worker,
    make_catalog,
    reference_run,
    start_run,
    store_arrays,
    wait_run,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> tuple[Path, Path, dict[str, np.ndarray], Timeline]:
    """(work directory, catalog, the reference store's arrays, its timeline)."""
    root = tmp_path_factory.mktemp("run_kill")
    catalog = make_catalog(root / "catalog")
    times = reference_run(catalog, root / "reference.zarr")
    return root, catalog, store_arrays(root / "reference.zarr"), times


def _assert_same_store(result: dict) -> None:
    assert result["rerun_exit"] == 0, result
    assert result["arrays_differing"] == [] and result["identical"], result
    assert result["rows_lost"] == result["rows_mixed"] == result["rows_mixed_after_kill"] == 0, result
    assert result["leftovers"] == [], result  # no lock, no .NAME.creating-* sibling


def test_run_killed_at_random_moments_resumes_to_the_same_store(uninterrupted):
    """Seed 0 aims at the store's creation, seed 1 at partition 2's writes: the re-run, without
    --overwrite, takes over the dead run's lock and finishes the store."""
    root, catalog, reference, times = uninterrupted
    for seed in (0, 1):
        result = kill_and_rerun(seed, catalog, root, reference, times)
        _assert_same_store(result)
        if result["landed"] not in ("starting (no lock yet)", "after the run ended"):
            assert result["stale_lock_taken_over"], result


def test_worker_killed_mid_run_finishes_to_the_same_store(uninterrupted):
    """The Dask worker SIGKILLed while it computes partition 6 (seed 0) or 2 (seed 1): the nanny
    restarts it, the partition is computed again, and the same run exits 0 with the same store."""
    root, catalog, reference, times = uninterrupted
    for seed, partition in ((0, 6), (1, 2)):
        result = kill_worker(seed, catalog, root, reference, times)
        assert result["aim"] == f"partition {partition}" and result["workers_killed"] == 1, result
        _assert_same_store(result)


KILL_AT_START = """
import os, pathlib, signal

def dask_setup(worker):  # a Dask preload: runs in the worker process while it starts
    mark = pathlib.Path(os.environ["KILL_AT_START_MARK"])
    if os.environ.get("KILL_AT_START_ALWAYS") or not mark.exists():
        mark.write_text("killed")
        os.kill(os.getpid(), signal.SIGKILL)
"""


def _preload_env(tmp_path: Path, always: bool) -> dict[str, str]:
    preload = tmp_path / "kill_at_start.py"
    preload.write_text(textwrap.dedent(KILL_AT_START))
    env = {
        "DASK_DISTRIBUTED__WORKER__PRELOAD": json.dumps([str(preload)]),
        "KILL_AT_START_MARK": str(tmp_path / "killed"),
    }
    return env | ({"KILL_AT_START_ALWAYS": "1"} if always else {})


def test_worker_killed_while_the_cluster_starts(uninterrupted, tmp_path):
    """The worker process SIGKILLed while it starts (seed 2 of ``run_kill_loop.py --target worker``
    did that): LocalCluster raised "Nanny failed to start." and `run` died with a traceback, exit 1.
    Now the cluster is started again and the run finishes to the same store; a worker that dies
    at every start ends the run with one line and exit 2, the store left to resume."""
    _, catalog, reference, _ = uninterrupted
    out = tmp_path / "once.zarr"
    assert wait_run(start_run(catalog, out, _preload_env(tmp_path, always=False))) == 0
    assert (tmp_path / "killed").exists()  # the worker did die once
    result = compare_finished(out, reference)
    assert result["identical"] and result["rows_lost"] == result["rows_mixed"] == 0, result
    stderr = Path(f"{out}.stderr").read_text()
    assert "Nanny failed to start" in stderr and "a worker process died while starting" in stderr
    assert "Traceback" not in stderr

    out = tmp_path / "always.zarr"
    assert wait_run(start_run(catalog, out, _preload_env(tmp_path, always=True))) == 2
    stderr = Path(f"{out}.stderr").read_text().strip().splitlines()
    assert "error: the local Dask cluster did not start in 2 tries" in stderr[-1], stderr
    assert not any(line.startswith("Traceback") for line in stderr), stderr
