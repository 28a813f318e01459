"""`run` under SIGKILL, with real processes (issue 13): the command's whole process group killed
and re-run, and its Dask worker killed mid-run. Two seeds each of ``benchmarks/run_kill_loop.py``
(its 50-seed output is quoted in docs/reliability.md), on 8 partitions of 1-60 objects cut from
the bundled demo catalog and the bundled default model: every finished store must equal an
uninterrupted run's array for array (padding and partition table included), with no row lost
or mixed and nothing left beside it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from benchmarks.run_kill_loop import (
    Timeline,
    kill_and_rerun,
    kill_worker,
    make_catalog,
    reference_run,
    store_arrays,
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
