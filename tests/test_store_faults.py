"""The store under faults, with real processes and real files: resume fingerprint, lock,
interrupted creation, replaced store, failed partitions in readers, URLs, safe overwrite.

Runs use the bundled default model on a 60-object HATS catalog cut from the bundled demo
catalog (3 partitions), so most refusals happen before any worker starts.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import zarr

from specdiff_catalog.cli import main
from specdiff_catalog.flags import Flag
from specdiff_catalog.io.catalog import demo_catalog_dir, open_catalog, write_hats
from specdiff_catalog.io.spectra_file import ReconstructedSpectra, write_zarr
from specdiff_catalog.io.store import open_store
from specdiff_catalog.io.store_lock import read_lock, store_lock
from tests._stores import write_store

REPO = Path(__file__).resolve().parents[1]
RUN = ["--n-samples", "8", "--n-workers", "1", "--threads-per-worker", "1", "--no-progress"]
RUN += ["--dashboard-address", ":0", "--memory-limit", "2GiB"]


def _run(catalog: Path, out: Path | str, *extra: str) -> int:
    return main(["run", "--input", str(catalog), "--out", str(out), *RUN, *extra])


def _python(code: str, **kwargs) -> subprocess.Popen:
    """A real process running ``code`` (this checkout on its path)."""
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


def _wait_for_line(proc: subprocess.Popen, text: str) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        if text in line:
            return
    raise AssertionError(f"the process ended without printing {text!r}: {proc.stderr and proc.stderr.read()}")


@pytest.fixture(scope="module")
def small_catalogs(tmp_path_factory) -> tuple[Path, Path]:
    """Catalogs A and B: the same 60 objects in the same 3 HEALPix partitions, B with other fluxes."""
    root = tmp_path_factory.mktemp("catalogs")
    parts = open_catalog(demo_catalog_dir()).partitions[:3]
    table = pd.concat([pq.read_table(p.path).to_pandas().head(20) for p in parts], ignore_index=True)
    write_hats(table, root / "a", order=3, catalog_name="small_a")
    write_hats(table.assign(FLUX_G=table["FLUX_G"] * 1.1), root / "b", order=3, catalog_name="small_b")
    assert [p.n_rows for p in open_catalog(root / "a").partitions] == [20, 20, 20]
    return root / "a", root / "b"


@pytest.fixture(scope="module")
def finished(small_catalogs, tmp_path_factory) -> Path:
    """A finished store of catalog A (the bundled default model, 8 samples)."""
    out = tmp_path_factory.mktemp("finished") / "pz.zarr"
    assert _run(small_catalogs[0], out) == 0
    return out


def _error(err: str) -> str:
    """The one error line of a command's stderr (notes such as the simulated-model one aside)."""
    lines = [line for line in err.splitlines() if ": error: " in line]
    assert len(lines) == 1, err
    return lines[0]


def _store_state(out: Path) -> tuple[list[str], np.ndarray]:
    store = open_store(out, mode="r")
    return list(store.partitions()["status"]), store.read("object_id")


# --- issue 13 case 1: a resume with another input or model ----------------------------------


def test_resume_with_another_catalog_is_refused(small_catalogs, finished, capsys):
    """--input B on a finished store of A: one line naming both catalogs, exit 2, store untouched
    (it used to say "3 already done" and keep A's rows under B's name)."""
    before = _store_state(finished)
    capsys.readouterr()
    assert _run(small_catalogs[1], finished) == 2
    err = _error(capsys.readouterr().err)
    assert "input catalog" in err and str(small_catalogs[1]) in err and str(small_catalogs[0]) in err
    assert "already done" not in err
    after = _store_state(finished)
    assert before[0] == after[0] == ["done"] * 3
    np.testing.assert_array_equal(before[1], after[1])


def test_resume_after_a_partition_file_changed_is_refused(small_catalogs, tmp_path, capsys):
    """A partition file rewritten in place (same pixels, same row counts): the resume names it."""
    catalog = tmp_path / "a"
    shutil.copytree(small_catalogs[0], catalog)
    out = tmp_path / "pz.zarr"
    assert _run(catalog, out, "--max-in-flight", "1") == 0
    part = open_catalog(catalog).partitions[1]
    pq.write_table(pq.read_table(part.path), part.path)  # rewritten: same pixel, same rows
    os.utime(part.path, ns=(time.time_ns(), time.time_ns() + 10**9))
    capsys.readouterr()
    assert _run(catalog, out) == 2
    err = capsys.readouterr().err
    assert f"partition Norder={part.order}/Npix={part.pixel}: file" in err and "recorded" in err


def test_resume_with_another_model_is_refused(small_catalogs, finished, tmp_path, capsys):
    model = tmp_path / "model"
    shutil.copytree(REPO / "specdiff_catalog" / "data" / "default_model", model)
    config = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps(config, indent=4))  # the same model, another id
    capsys.readouterr()
    assert _run(small_catalogs[0], finished, "--model", str(model)) == 2
    assert "different model" in capsys.readouterr().err


# --- issue 13 case 4: lock, interrupted creation, replaced store -----------------------------


def test_a_second_writer_is_refused_and_a_stale_lock_taken_over(small_catalogs, tmp_path, capsys):
    out = tmp_path / "pz.zarr"
    holder = _python(
        f"""
        import time
        from specdiff_catalog.io.store_lock import store_lock
        with store_lock({str(out)!r}) as me:
            print("holding", me.pid, flush=True)
            time.sleep(120)
        """
    )
    try:
        _wait_for_line(holder, "holding")
        capsys.readouterr()
        assert _run(small_catalogs[0], out) == 2
        err = _error(capsys.readouterr().err)
        assert f"pid {holder.pid}" in err and "being written by another run" in err
        assert not out.exists()  # refused before the store was made
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    stale = read_lock(out)
    assert stale is not None and stale.pid == holder.pid and stale.alive() is False
    notes: list[str] = []
    with store_lock(out, notify=notes.append) as me:
        assert read_lock(out) == me
    assert len(notes) == 1 and f"pid {holder.pid}" in notes[0] and "gone" in notes[0]
    assert read_lock(out) is None  # released


def test_info_names_the_run_holding_the_store(finished, tmp_path, capsys):
    out = tmp_path / "pz.zarr"
    shutil.copytree(finished, out)
    holder = _python(
        f"""
        import time
        from specdiff_catalog.io.store_lock import store_lock
        with store_lock({str(out)!r}):
            print("holding", flush=True)
            time.sleep(120)
        """
    )
    try:
        _wait_for_line(holder, "holding")
        capsys.readouterr()
        assert main(["info", str(out)]) == 0
        line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("being written"))
        assert f"pid {holder.pid}" in line and "gone" not in line
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert main(["info", str(out)]) == 0
    assert "that process is gone: a stale lock" in capsys.readouterr().out


def test_run_killed_during_store_creation(small_catalogs, tmp_path, capsys):
    """SIGKILL while the store is being created: no store (a leftover that `info` names in one
    line), and the next `run`, without --overwrite, creates it and finishes."""
    out = tmp_path / "pz.zarr"
    writer = _python(
        f"""
        import time
        import specdiff_catalog.io.store as store
        from specdiff_catalog.io.fingerprint import partition_sources
        from specdiff_catalog.io.catalog import open_catalog

        def stuck(*args):
            print("creating", flush=True)
            time.sleep(120)

        store._create_partition_table = stuck
        sources = partition_sources(open_catalog({str(small_catalogs[0])!r}))
        store.create_store({str(out)!r}, sources, store.StoreLayout((0.5,), 4), {{}})
        """
    )
    _wait_for_line(writer, "creating")
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    assert not out.exists() and len(list(tmp_path.glob(".pz.zarr.creating-*"))) == 1
    capsys.readouterr()
    assert main(["info", str(out)]) == 2
    assert "creation was interrupted" in _error(capsys.readouterr().err)
    assert _run(small_catalogs[0], out) == 0
    assert _store_state(out)[0] == ["done"] * 3 and not list(tmp_path.glob(".pz.zarr.*"))


@pytest.mark.slow
def test_a_run_whose_store_is_replaced_fails(tmp_path):
    """Another run's --overwrite replaces the store under a running `run` (its lock removed by
    hand): the run stops with a message and exit != 0, and nothing of it lands in the new store."""
    out = tmp_path / "pz.zarr"
    command = ["run", "--out", str(out), *RUN, "--n-samples", "32", "--max-in-flight", "1", "--retries", "0"]
    run = subprocess.Popen(
        [sys.executable, "-m", "specdiff_catalog", *command],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and run.poll() is None:
            try:
                if "done" in set(open_store(out, mode="r").partitions()["status"]):
                    break
            except (FileNotFoundError, ValueError):
                pass
            time.sleep(0.2)
        old = open_store(out)
        assert old.pending(), "the run finished before the store could be replaced"
        (out.parent / "pz.zarr.lock").unlink()
        from specdiff_catalog.io.store import create_store

        new = create_store(
            out, old.sources(), old.layout, old.attrs | {"note": "the other run"}, overwrite=True
        )
        stdout, stderr = run.communicate(timeout=600)
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
            run.wait()
    assert run.returncode == 2, stdout
    assert "replaced by another store" in _error(stderr)
    assert new.uuid != old.uuid and open_store(out).pending() == list(range(len(new)))
    assert not zarr.open_group(out, mode="r")["valid"][:].any()


# --- issue 13 case 3: failed partitions are never results -------------------------------------


def test_readers_refuse_a_store_with_failed_partitions(tmp_path, capsys):
    """`export qp` used to export 1,995 PDFs from a failed store with exit 0."""
    pytest.importorskip("qp")
    store = write_store(tmp_path / "pz.zarr", failed=3)
    out = tmp_path / "pz.hdf5"
    capsys.readouterr()
    assert main(["export", "qp", "--pz", str(store), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "1 of 4 partitions are not done (failed: Norder=4/Npix=103)" in err and "--partial" in err
    assert not out.exists()
    assert main(["evaluate", "--pz", str(store), "--truth", str(tmp_path / "truth.parquet")]) == 2
    assert "partitions are not done" in capsys.readouterr().err
    assert main(["export", "qp", "--pz", str(store), "--out", str(out), "--partial"]) == 0
    printed = capsys.readouterr().out
    assert "644 PDFs" in printed and "partial: 50 objects of failed or pending partitions left out" in printed


def test_evaluate_partial_scores_the_done_partitions(finished, tmp_path, capsys):
    out = tmp_path / "pz.zarr"
    shutil.copytree(finished, out)
    open_store(out).mark_failed(1, "unreadable file")
    truth = demo_catalog_dir().parent / "truth.parquet"
    capsys.readouterr()
    assert main(["evaluate", "--pz", str(out), "--truth", str(truth)]) == 2
    assert "(failed: Norder=3/Npix=" in _error(capsys.readouterr().err)
    assert main(["evaluate", "--pz", str(out), "--truth", str(truth), "--partial"]) == 0
    printed = capsys.readouterr().out
    assert "40 objects with a true redshift (40 in the store" in printed
    assert "partial: 20 objects of failed or pending partitions are left out" in printed


def test_a_failing_partition_leaves_no_valid_row(small_catalogs, tmp_path, capsys):
    """--batch-size -5 (case 3: the worker hands the writer arrays of 0 rows): the run fails (or
    is refused up front), and no row of the store is valid, counted as written or exported."""
    out = tmp_path / "pz.zarr"
    assert _run(small_catalogs[0], out, "--batch-size", "-5", "--retries", "0") != 0
    if out.exists():
        store = open_store(out, mode="r")
        assert not store.read("valid").any() and "done" not in set(store.partitions()["status"])
        capsys.readouterr()
        assert main(["info", "--json", str(out)]) == 0
        assert '"valid": 0' in capsys.readouterr().out
        assert main(["export", "qp", "--pz", str(out), "--out", str(tmp_path / "x.hdf5")]) == 2


# --- issue 13 case 8: absurd fluxes give flagged rows, not a failed partition ---------------


def test_an_absurd_flux_everywhere_gives_flagged_rows_in_a_finished_store(small_catalogs, tmp_path):
    """FLUX_G = -50 for every object (issue 13 case 8): every object loses its g band with a flag and
    keeps a PDF. One object has no z, W1 or W2 either, so too few bands are left for the photometry
    check (ppc_dof 0, NaN ppc_chi2): the writer refused its partition for that, on every retry,
    with a worker traceback, and `run` exited 1 (benchmarks/hostile_inputs.py, case flux_g_-50)."""
    table = pd.concat([pq.read_table(p.path).to_pandas() for p in open_catalog(small_catalogs[0]).partitions])
    table = table.assign(FLUX_G=-50.0)
    lonely = table["OBJECT_ID"].iloc[7]
    table.loc[table["OBJECT_ID"] == lonely, ["FLUX_IVAR_Z", "FLUX_IVAR_W1", "FLUX_IVAR_W2"]] = 0.0
    write_hats(table, tmp_path / "g", order=3, catalog_name="g_minus_50")
    out = tmp_path / "pz.zarr"
    assert _run(tmp_path / "g", out) == 0
    store = open_store(out, mode="r")
    assert store.partitions()["status"].tolist() == ["done"] * 3
    rows = store.read_results(["object_id", "flags", "z_median", "ppc_dof", "ppc_chi2"])
    assert len(rows["object_id"]) == 60
    lost_g = int(Flag.UNPHYSICAL_INPUT | Flag.MISSING_BAND)
    assert ((rows["flags"] & lost_g) == lost_g).all()  # every object of the SPS demo catalog had g
    assert np.isfinite(rows["z_median"]).all() and (rows["z_median"] >= 0).all()
    unchecked = rows["object_id"] == lonely
    assert rows["ppc_dof"][unchecked].tolist() == [0] and np.isnan(rows["ppc_chi2"][unchecked]).all()


def test_outputs_the_writer_refuses_fail_the_partition_once_without_retries(
    small_catalogs, tmp_path, monkeypatch
):
    """A partition whose outputs break the writer's rules (here a NaN z_median without a flag) is
    marked failed with the writer's message by the task itself: it used to raise, so Dask retried
    it twice (the same outputs each time) and every worker printed a "Compute Failed" traceback."""
    from distributed import LocalCluster

    import specdiff_catalog.inference as inference
    from specdiff_catalog.pipeline.cluster import ClusterConfig
    from specdiff_catalog.pipeline.run import RunOptions, run_catalog

    calls = []
    real = inference.predict_columns

    def unexplained_nan(*args, **kwargs):
        calls.append(1)
        columns = real(*args, **kwargs)
        columns["z_median"][0] = np.nan  # no NO_PHOTOMETRY / SAMPLER_FAILURE flag says why
        return columns

    monkeypatch.setattr(inference, "predict_columns", unexplained_nan)
    out = tmp_path / "pz.zarr"
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=":0") as cluster:
        report = run_catalog(
            small_catalogs[0],
            out,
            None,
            RunOptions(n_samples=8, sampler="dpmpp2m", steps=2, quantiles=(0.16, 0.5, 0.84)),
            ClusterConfig(scheduler_address=cluster.scheduler_address),
            progress=False,
            retries=2,
        )
    assert len(calls) == 3 and report.done == 0 and sorted(report.failed) == [0, 1, 2]
    assert all("z_median is not finite for 1 objects" in message for message in report.failed.values())
    store = open_store(out, mode="r")
    assert store.partitions()["status"].tolist() == ["failed"] * 3 and not store.read("valid").any()


# --- issue 11 item 3: output URLs ----------------------------------------------------------


def test_out_url_without_its_filesystem_package_writes_nothing(tmp_path):
    scheme = next(s for s, m in (("s3", "s3fs"), ("gs", "gcsfs"), ("az", "adlfs")) if not _importable(m))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "specdiff_catalog",
            "run",
            "--out",
            f"{scheme}://bucket/pz.zarr",
            "--no-progress",
        ],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2
    err = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(err) == 1 and f"{scheme}://bucket/pz.zarr" in err[0] and "not installed" in err[0]
    assert list(tmp_path.iterdir()) == []  # no local folder named "s3:"


def _importable(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


@pytest.mark.slow
def test_memory_and_file_url_runs(small_catalogs, tmp_path, finished):
    """`run --out file://...` on local worker processes and `run --out memory://...` on a
    threads-only cluster (memory:// lives in one process) give the store a path run gives."""
    from distributed import LocalCluster

    from specdiff_catalog.io.store import open_dataset
    from specdiff_catalog.pipeline.cluster import ClusterConfig
    from specdiff_catalog.pipeline.run import RunOptions, run_catalog

    file_url = f"file://{tmp_path}/pz.zarr"
    assert _run(small_catalogs[0], file_url) == 0
    memory_url = "memory://test_memory_and_file_url_runs/pz.zarr"
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=":0") as cluster:
        report = run_catalog(
            small_catalogs[0],
            memory_url,
            None,
            RunOptions(n_samples=8),
            ClusterConfig(scheduler_address=cluster.scheduler_address),
            progress=False,
        )
    assert report.done == 3 and not report.failed
    reference = open_dataset(finished).load()
    for url in (file_url, memory_url):
        ds = open_dataset(url).load()
        assert open_store(url).partitions()["status"].tolist() == ["done"] * 3
        np.testing.assert_array_equal(ds["object_id"].values, reference["object_id"].values)
        np.testing.assert_array_equal(ds["flags"].values, reference["flags"].values)
        for name in ("z_quantiles", "z_median", "z_mode", "latent"):
            np.testing.assert_allclose(
                ds[name].values, reference[name].values, atol=1e-6, equal_nan=True, err_msg=f"{url} {name}"
            )


# --- issue 13 case 6: --overwrite deletes only what this package made -----------------------


def test_run_overwrite_refuses_a_store_with_unrelated_files(small_catalogs, finished, tmp_path, capsys):
    out = tmp_path / "pz.zarr"
    shutil.copytree(finished, out)
    (out / "my_notes.txt").write_text("precious")
    capsys.readouterr()
    assert _run(small_catalogs[0], out, "--overwrite") == 2
    assert "my_notes.txt" in capsys.readouterr().err
    assert (out / "my_notes.txt").read_text() == "precious" and _store_state(out)[0] == ["done"] * 3
    other = tmp_path / "other.zarr"
    zarr.open_group(other, mode="w", attributes={"project": "someone else's"}).create_array(
        "x", data=np.arange(4)
    )
    assert _run(small_catalogs[0], other, "--overwrite") == 2
    assert "did not make" in capsys.readouterr().err and (other / "x" / "zarr.json").exists()


def _spectra(n: int = 3) -> ReconstructedSpectra:
    wave = np.linspace(3000.0, 9000.0, 20)
    return ReconstructedSpectra(
        object_id=np.arange(n),
        row=np.arange(n),
        flags=np.zeros(n, np.uint16),
        z_median=np.full(n, 0.3, np.float32),
        z_mode=np.full(n, 0.3, np.float32),
        redshift="median",
        z=np.full(n, 0.3),
        wave_rest=wave,
        flux_rest=np.ones((n, wave.size), np.float32),
        dn4000=np.ones(n),
        norm_window=(5300.0, 5850.0),
        provenance={"store": "pz.zarr", "model": "m"},
    )


def test_spectra_overwrite_replaces_only_its_own_zarr(tmp_path):
    out = tmp_path / "s.zarr"
    write_zarr(_spectra(3), out)
    write_zarr(_spectra(5), out, overwrite=True)  # its own: replaced
    assert zarr.open_group(out, mode="r")["flux"].shape == (5, 20)
    (out / "flux" / "readme.txt").write_text("keep")
    with pytest.raises(FileExistsError, match=r"not part of a spectra file \(flux/readme.txt\)"):
        write_zarr(_spectra(2), out, overwrite=True)
    assert (out / "flux" / "readme.txt").exists()
    foreign = tmp_path / "foreign.zarr"
    zarr.open_group(foreign, mode="w").create_array("flux", data=np.ones(3))
    with pytest.raises(FileExistsError, match="not a spectra file written by specdiff-catalog"):
        write_zarr(_spectra(2), foreign, overwrite=True)
    assert (foreign / "flux" / "zarr.json").exists()


# --- the kill loop (benchmarks/store_kill_loop.py): a few seeds ------------------------------


def test_writer_killed_at_random_moments_resumes_to_the_same_store(tmp_path):
    from benchmarks.store_kill_loop import _arrays, _run_to_end, kill_and_resume

    times = _run_to_end(tmp_path / "reference.zarr")
    reference = _arrays(tmp_path / "reference.zarr")
    for seed in (0, 1):  # seed 0 kills during creation, seed 1 during the partition writes
        result = kill_and_resume(seed, tmp_path, reference, times)
        assert result["arrays_differing_after_resume"] == [] and result["leftovers_after_resume"] == [], (
            result
        )
