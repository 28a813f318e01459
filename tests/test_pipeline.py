"""The main job on a real distributed LocalCluster: completeness, determinism, resume, bad partitions."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from specdiff_catalog.cli import main
from specdiff_catalog.io.catalog import open_catalog, read_partition
from specdiff_catalog.io.store import open_store

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]
OPTIONS = ["--n-samples", "16", "--no-progress", "--memory-limit", "2GiB"]


def run_cli(catalog: Path, out: Path, model: Path, *extra: str) -> int:
    return main(
        [
            "run",
            "--input",
            str(catalog),
            "--out",
            str(out),
            "--model",
            str(model),
            *OPTIONS,
            "--dashboard-address",
            ":0",
            *extra,
        ]
    )


def load(out: Path) -> xr.Dataset:
    ds = xr.open_zarr(out).load()
    return ds.isel(object=ds["valid"].values.astype(bool))


def assert_same_outputs(a: xr.Dataset, b: xr.Dataset) -> None:
    np.testing.assert_array_equal(a["object_id"].values, b["object_id"].values)
    np.testing.assert_array_equal(a["flags"].values, b["flags"].values)
    for name in ("z_quantiles", "z_median", "z_mode", "z_mean", "z_std", "latent", "latent_std"):
        np.testing.assert_allclose(
            a[name].values, b[name].values, atol=1e-6, rtol=0, equal_nan=True, err_msg=name
        )


@pytest.fixture(scope="module")
def pipeline_catalog(tmp_path_factory) -> Path:
    """A mock HATS catalog of 3,000 objects in ~15 HEALPix partitions (order 4)."""
    from specdiff_catalog.mock import MockConfig, make_mock_survey

    out = tmp_path_factory.mktemp("pipeline") / "mock"
    make_mock_survey(out, MockConfig(n_spec=20, n_phot=3000, seed=3, n_rest_spectra=0))
    return out / "catalog"


@pytest.fixture(scope="module")
def tiny_model_dir(trained_tiny) -> Path:
    return trained_tiny.model


@pytest.fixture(scope="module")
def reference(tmp_path_factory, pipeline_catalog, tiny_model_dir) -> xr.Dataset:
    """An uninterrupted 2-worker run: every test compares against it."""
    out = tmp_path_factory.mktemp("ref") / "pz.zarr"
    assert run_cli(pipeline_catalog, out, tiny_model_dir, "--n-workers", "2") == 0
    return load(out)


def test_every_input_row_once_in_partition_order(reference, pipeline_catalog):
    catalog = open_catalog(pipeline_catalog)
    ids = np.concatenate(
        [read_partition(p, ["OBJECT_ID"])["OBJECT_ID"].to_numpy() for p in catalog.partitions]
    )
    assert reference.sizes["object"] == catalog.n_rows == ids.size
    np.testing.assert_array_equal(reference["object_id"].values, ids)
    usable = (reference["flags"].values & 8) == 0  # NO_PHOTOMETRY rows have NaN outputs
    assert np.isfinite(reference["z_median"].values[usable]).all()
    # the SPS mock writes no object without photometry (test_properties and test_inference cover them)
    assert np.isnan(reference["z_median"].values[~usable]).all()
    assert reference["z_quantiles"].dims == ("object", "quantile")


def test_one_worker_and_other_batch_size_give_the_same_results(
    reference, tmp_path, pipeline_catalog, tiny_model_dir
):
    out = tmp_path / "one.zarr"
    assert run_cli(pipeline_catalog, out, tiny_model_dir, "--n-workers", "1", "--batch-size", "97") == 0
    assert_same_outputs(reference, load(out))


def test_killed_run_resumes_to_the_same_store(reference, tmp_path, pipeline_catalog, tiny_model_dir):
    out = tmp_path / "killed.zarr"
    port = _free_port()
    command = [
        sys.executable,
        "-m",
        "specdiff_catalog",
        "run",
        "--input",
        str(pipeline_catalog),
        "--out",
        str(out),
        "--model",
        str(tiny_model_dir),
        "--n-workers",
        "1",
        "--max-in-flight",
        "1",
        *OPTIONS,
        "--dashboard-address",
        f"127.0.0.1:{port}",
    ]
    proc = subprocess.Popen(
        command,
        cwd=REPO,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        dashboard = _wait(lambda: _http_status(f"http://127.0.0.1:{port}/status") == 200, proc)
        assert dashboard, "the dashboard never answered 200 on /status during the run"
        assert _wait(lambda: _done(out) >= 2, proc), "no partition finished before the run ended"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    done_before = _done(out)
    assert 2 <= done_before < len(open_catalog(pipeline_catalog).partitions)
    assert run_cli(pipeline_catalog, out, tiny_model_dir, "--n-workers", "2") == 0
    assert_same_outputs(reference, load(out))


def test_another_configuration_is_refused_and_overwrite_starts_over(
    tmp_path, pipeline_catalog, tiny_model_dir, capsys
):
    out = tmp_path / "pz.zarr"
    assert run_cli(pipeline_catalog, out, tiny_model_dir, "--n-workers", "1") == 0
    assert run_cli(pipeline_catalog, out, tiny_model_dir, "--n-workers", "1", "--seed", "5") == 2
    assert "different config" in capsys.readouterr().err
    assert (
        run_cli(pipeline_catalog, out, tiny_model_dir, "--n-workers", "1", "--seed", "5", "--overwrite") == 0
    )
    assert open_store(out).attrs["config"]["seed"] == 5


def test_unreadable_partitions_are_named_and_the_others_finish(
    tmp_path, pipeline_catalog, tiny_model_dir, capsys
):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(pipeline_catalog, broken)
    parts = open_catalog(broken).partitions
    parts[0].path.write_bytes(b"PAR1 this is not parquet")  # corrupt file, same name
    out = tmp_path / "pz.zarr"
    assert run_cli(broken, out, tiny_model_dir, "--n-workers", "1") == 1
    printed = capsys.readouterr()
    assert parts[0].path.name in printed.out
    table = open_store(out).partitions()
    assert table["status"].tolist() == ["failed"] + ["done"] * (len(parts) - 1)
    assert parts[0].path.name in table["error"].iloc[0]


def _done(out: Path) -> int:
    try:
        return int((open_store(out).partitions()["status"] == "done").sum())
    except Exception:  # the store may not exist yet
        return 0


def _wait(condition, proc: subprocess.Popen, timeout: float = 120.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if condition():
            return True
        time.sleep(0.2)
    return condition()


def _http_status(url: str) -> int | None:
    try:
        return urllib.request.urlopen(url, timeout=2).status
    except OSError:
        return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
