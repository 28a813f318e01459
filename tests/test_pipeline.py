"""The main job on a real distributed LocalCluster: completeness, determinism, resume, bad partitions."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
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


# --- a real scheduler started from a scheduler file, workers that come and go -----------------


@contextmanager
def scheduler_file(tmp_path: Path) -> Iterator[Path]:
    """`dask scheduler --scheduler-file` as a subprocess; yields the file once it is written."""
    file = tmp_path / "scheduler.json"
    proc = _spawn(
        "distributed.cli.dask_scheduler",
        ["--scheduler-file", str(file), "--host", "127.0.0.1", "--port", "0", "--dashboard-address", ":0"],
    )
    try:
        assert _wait(file.exists, proc, timeout=60), "the scheduler never wrote its scheduler file"
        yield file
    finally:
        _stop(proc)


def start_worker(file: Path, name: str, memory_limit: str = "2GiB") -> subprocess.Popen:
    """`dask worker --scheduler-file FILE --nthreads 1` (with its nanny) as a subprocess group."""
    return _spawn(
        "distributed.cli.dask_worker",
        [
            "--scheduler-file",
            str(file),
            "--nthreads",
            "1",
            "--name",
            name,
            "--host",
            "127.0.0.1",
            "--memory-limit",
            memory_limit,
            "--no-dashboard",
        ],
    )


def start_run(catalog: Path, out: Path, model: Path, file: Path) -> subprocess.Popen:
    """`specdiff-catalog run --scheduler-file FILE` as a subprocess (a client only: it starts no worker)."""
    return _spawn(
        "specdiff_catalog",
        [
            "run",
            "--input",
            str(catalog),
            "--out",
            str(out),
            "--model",
            str(model),
            "--scheduler-file",
            str(file),
            *OPTIONS,
        ],
    )


def _spawn(module: str, args: list[str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", module, *args],
        cwd=REPO,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM the process group, SIGKILL after 10 s."""
    for sig, grace in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
            proc.wait(timeout=grace)
            return
        except ProcessLookupError:  # already gone: reap it
            proc.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            continue


def _partition_stream(observer) -> list[dict]:
    return [t for t in observer.get_task_stream() if str(t["key"]).startswith("partition-")]


def _most_at_once(stream: list[dict], margin: float = 0.05) -> int:
    """The most workers computing partitions at the same moment, from the task stream.

    The scheduler shifts each worker's times by its estimate of that worker's clock
    offset, which moves; intervals are shrunk by ``margin`` seconds at both ends so that
    back-to-back tasks never look simultaneous.
    """
    spans = [
        (task["worker"], span["start"] + margin, span["stop"] - margin)
        for task in stream
        for span in task["startstops"]
        if span["action"] == "compute" and span["stop"] - span["start"] > 2 * margin
    ]
    return max(len({w for w, lo, hi in spans if lo <= t < hi}) for _, t, _ in spans)


def test_workers_started_after_the_run_all_get_partitions(
    reference, tmp_path, pipeline_catalog, tiny_model_dir
):
    """The HPC pattern: scheduler first, then `run` (no worker yet), then 3 workers joining late."""
    from distributed import Client

    def partition_tasks(dask_scheduler) -> int:
        """Runs on the scheduler (a closure, so cloudpickle sends it by value): its partition tasks."""
        return sum(str(key).startswith("partition-") for key in dask_scheduler.tasks)

    out = tmp_path / "late.zarr"
    with scheduler_file(tmp_path) as file, Client(scheduler_file=str(file)) as observer:
        observer.get_task_stream()  # installs the scheduler's task-stream plugin before any task runs
        run = start_run(pipeline_catalog, out, tiny_model_dir, file)
        workers: list[subprocess.Popen] = []
        try:
            assert _wait(lambda: observer.run_on_scheduler(partition_tasks) > 0, run), "run submitted nothing"
            assert not observer.scheduler_info()["workers"]
            workers = [start_worker(file, f"late-{i}") for i in range(3)]
            assert run.wait(timeout=300) == 0
            stream = _partition_stream(observer)
        finally:
            _stop(run)
            for worker in workers:
                _stop(worker)
    partitions = len(open_catalog(pipeline_catalog).partitions)
    assert len({t["key"] for t in stream}) == partitions
    assert len({t["worker"] for t in stream}) == 3, "every late worker runs partitions"
    assert _most_at_once(stream) == 3, "one partition per worker thread in flight, all three at once"
    assert_same_outputs(reference, load(out))


def test_a_worker_killed_mid_run_loses_nothing(reference, tmp_path, pipeline_catalog, tiny_model_dir):
    """SIGKILL a whole `dask worker` (nanny and worker) while it runs a partition: its partition is
    recomputed on the other worker, the run succeeds and the store equals an uninterrupted run's."""
    from distributed import Client

    out = tmp_path / "killed-worker.zarr"
    with scheduler_file(tmp_path) as file, Client(scheduler_file=str(file)) as observer:
        observer.get_task_stream()
        victim, survivor = start_worker(file, "victim"), start_worker(file, "survivor")
        run = start_run(pipeline_catalog, out, tiny_model_dir, file)
        try:
            assert _wait(lambda: _done(out) >= 1 and bool(_processing(observer, "victim")), run)
            interrupted = _processing(observer, "victim")
            os.killpg(victim.pid, signal.SIGKILL)
            assert run.wait(timeout=300) == 0
            stream = _partition_stream(observer)
        finally:
            _stop(run)
            _stop(survivor)
            _stop(victim)
    finished = {t["key"] for t in stream if t["status"] == "OK"}
    assert set(interrupted) <= finished
    assert_same_outputs(reference, load(out))


def _processing(observer, name: str) -> list[str]:
    """Partition keys the worker called ``name`` is processing now."""
    addresses = [a for a, w in observer.scheduler_info()["workers"].items() if w["name"] == name]
    return [
        k
        for a in addresses
        for k in observer.processing(workers=[a]).get(a, ())
        if k.startswith("partition-")
    ]


def test_a_run_whose_workers_keep_dying_stops_and_says_why(tmp_path, pipeline_catalog, tiny_model_dir):
    """A worker process SIGKILLed whenever it runs a partition (its nanny restarts it each time):
    the run stops after StopRules.max_worker_deaths deaths with the cause, instead of retrying forever."""
    import threading

    from distributed import Client

    from specdiff_catalog.pipeline.cluster import ClusterConfig
    from specdiff_catalog.pipeline.run import RunOptions, run_catalog
    from specdiff_catalog.pipeline.schedule import StopRules

    out = tmp_path / "dying.zarr"
    stop = threading.Event()
    kills: list[int] = []

    def killer(file: Path) -> None:
        with Client(scheduler_file=str(file)) as observer:
            while not stop.is_set():
                for address in observer.scheduler_info()["workers"]:
                    if not observer.processing(workers=[address]).get(address):
                        continue
                    try:
                        pid = observer.run(os.getpid, workers=[address])[address]
                    except Exception:  # the worker left meanwhile
                        continue
                    if pid not in kills:
                        os.kill(pid, signal.SIGKILL)
                        kills.append(pid)
                time.sleep(0.05)

    with scheduler_file(tmp_path) as file:
        worker = start_worker(file, "doomed")
        thread = threading.Thread(target=killer, args=(file,), daemon=True)
        thread.start()
        try:
            report = run_catalog(
                pipeline_catalog,
                out,
                tiny_model_dir,
                RunOptions(n_samples=16),
                ClusterConfig(scheduler_file=file),
                progress=False,
                rules=StopRules(max_worker_deaths=3),
            )
        finally:
            stop.set()
            thread.join(timeout=30)
            _stop(worker)
    assert "3 worker processes died while running tasks" in report.stopped
    assert "stopped early" in report.summary() and report.done == 0 and len(kills) >= 3
    table = open_store(out).partitions()
    assert (table["status"] != "done").all()  # nothing half-written is marked done: a re-run resumes all


def test_workers_killed_over_their_memory_limit_stop_the_run_naming_memory(
    tmp_path, pipeline_catalog, tiny_model_dir, capsys, monkeypatch
):
    """Remote workers whose memory limit cannot hold torch and the model (the limit is theirs, so
    `run` cannot check it up front): the nannies kill them, and `run` stops with exit status 1 and a
    line naming memory, instead of hanging (issue 13 case 5). StopRules are lowered to keep it short."""
    import functools

    from specdiff_catalog.pipeline import run as run_module
    from specdiff_catalog.pipeline.schedule import StopRules

    rules = functools.partial(StopRules, max_worker_deaths=3, no_worker_seconds=60)
    monkeypatch.setattr(run_module, "StopRules", rules)
    out = tmp_path / "small.zarr"
    with scheduler_file(tmp_path) as file:
        worker = start_worker(file, "small", memory_limit="300MB")
        try:
            paths = ["--input", str(pipeline_catalog), "--out", str(out), "--model", str(tiny_model_dir)]
            status = main(["run", *paths, "--scheduler-file", str(file), *OPTIONS[:3]])
        finally:
            _stop(worker)
    printed = capsys.readouterr().out
    assert status == 1
    (line,) = [line for line in printed.splitlines() if line.startswith("stopped early")]
    partitions = len(open_catalog(pipeline_catalog).partitions)
    assert line.startswith(f"stopped early, {partitions} partitions not run (re-run to resume): ")
    assert "exceeding the worker memory limit" in line or "paused" in line
    assert "a worker needs ~" in line and "give the workers more memory or lower --batch-size" in line
    assert (open_store(out).partitions()["status"] != "done").all()
