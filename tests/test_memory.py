"""The worker memory limit is checked against the model and the batch before anything starts."""

from __future__ import annotations

import pytest

from specdiff_catalog.cli import main
from specdiff_catalog.models.store import default_model_dir
from specdiff_catalog.pipeline.memory import (
    BYTES_PER_OBJECT_SAMPLE,
    BYTES_PER_SAMPLER_ROW,
    MIB,
    MIN_BATCH,
    MemoryLimitError,
    fit_batch,
    usable_fraction,
    worker_footprint,
)

MODEL = default_model_dir()


def test_the_footprint_is_runtime_model_and_sampling_rows_up_to_the_sampler_chunk():
    small, chunk, large = (worker_footprint(MODEL, b, k) for b, k in ((64, 16), (2048, 16), (2048, 100)))
    assert small.runtime == large.runtime and small.model == large.model > 100 * MIB  # 40.1 MiB of weights
    assert chunk.prediction - small.prediction == (32768 - 1024) * (
        BYTES_PER_SAMPLER_ROW + BYTES_PER_OBJECT_SAMPLE
    )
    assert large.prediction - chunk.prediction == (204800 - 32768) * BYTES_PER_OBJECT_SAMPLE  # past the chunk
    # the calibration's model (30.4 MiB of weights) measured 819 MiB (64 x 16) and 917 (512 x 100);
    # the bundled model now has 40.1 MiB (its student): 28 MiB more per estimate
    assert 830 * MIB < small.total < large.total < 1030 * MIB


def test_a_batch_that_fits_is_kept_and_none_means_no_limit():
    assert fit_batch(None, MODEL, 2048, 100) == 2048
    roomy = int(worker_footprint(MODEL, 2048, 100).total / usable_fraction()) + 1
    assert fit_batch(roomy, MODEL, 2048, 100) == 2048


def test_a_batch_too_large_for_the_limit_is_halved_until_it_fits():
    limit = int(worker_footprint(MODEL, 256, 100).total / usable_fraction()) + 1
    assert fit_batch(limit, MODEL, 2048, 100) == 256
    assert fit_batch(limit, MODEL, 300, 100) == 150  # halvings of the user's batch, not powers of two


def test_a_limit_below_the_fixed_part_is_refused_with_what_is_needed():
    with pytest.raises(MemoryLimitError) as err:
        fit_batch(200 * 10**6, MODEL, 2048, 100)
    message = str(err.value)
    assert message.startswith("a worker memory limit of 191 MiB is too small")
    assert f"even at --batch-size {MIN_BATCH}" in message and "use a limit of at least" in message
    assert "\n" not in message


def test_the_pause_line_is_dasks_even_before_distributed_is_imported():
    """The fraction comes from distributed's config defaults, which exist only once it is imported."""
    import subprocess
    import sys

    code = "from specdiff_catalog.pipeline.memory import usable_fraction; print(usable_fraction())"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "0.8"


@pytest.mark.parametrize("limit", ["50MB", "200MB"])
def test_run_with_a_tiny_memory_limit_stops_up_front_with_exit_2(tmp_path, capsys, limit):
    """Issue 13 case 5: 50 MB hung forever (workers restarted ~45 times), 200 MB ended in KilledWorker."""
    out = tmp_path / "pz.zarr"
    argv = ["run", "--out", str(out), "--memory-limit", limit, "--n-workers", "1", "--no-progress"]
    status = main([*argv, "--dashboard-address", ":0"])
    err = capsys.readouterr().err
    assert status == 2
    (line,) = [line for line in err.splitlines() if line.startswith("specdiff-catalog run: error:")]
    assert "is too small" in line and "use a limit of at least" in line
    assert "Traceback" not in err and not out.exists()
