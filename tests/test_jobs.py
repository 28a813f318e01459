"""The HPC batch scripts parse, and their dry runs print the commands they would run."""

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from specdiff_catalog.models.store import config_to_json, default_model_dir, read_config

JOBS = Path(__file__).resolve().parents[1] / "jobs"
SCRIPTS = sorted(p for p in JOBS.iterdir() if p.suffix in {".sh", ".slurm"})


@pytest.mark.parametrize("script", SCRIPTS, ids=[p.name for p in SCRIPTS])
def test_bash_syntax(script):
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0


def dry_run(script: str, **env: str) -> list[str]:
    result = subprocess.run(
        ["bash", str(JOBS / script)],
        capture_output=True,
        text=True,
        env={**os.environ, "DRY_RUN": "1", **env},
        timeout=300,  # a hang guard: each `has` check imports the package (slow on a loaded machine)
    )
    assert result.returncode == 0, result.stderr
    return [line[2:] for line in result.stdout.splitlines() if line.startswith("+ ")]


def test_gpu_script_uses_the_scheduler_file_pattern():
    lines = dry_run("run_catalog_gpu.slurm", INPUT="ls_dr10", OUT="pz.zarr", SCHEDULER_FILE="/shared/s.json")
    scheduler, workers, client = (
        next(line for line in lines if key in line)
        for key in ("dask scheduler", "dask cuda worker", "specdiff-catalog run")
    )
    assert "--scheduler-file /shared/s.json" in scheduler and scheduler.endswith("&")
    assert "--nthreads 1" in workers and "--scheduler-file /shared/s.json" in workers
    assert client == "specdiff-catalog run --input ls_dr10 --out pz.zarr --scheduler-file /shared/s.json"
    assert lines.index(scheduler) < lines.index(client)
    assert lines[-1].startswith("stop workers and scheduler") and not any("scancel" in line for line in lines)


STUB = """#!/bin/bash
echo "$$ $*" >> "$STUBS/calls"
case "$(basename "$0") $1" in
    "dask scheduler") while [[ $1 != --scheduler-file ]]; do shift; done; echo '{}' > "$2"; exec sleep 300 ;;
    "dask cuda") exec sleep 300 ;;
    srun*) while [[ $1 == --* ]]; do shift; done; exec "$@" ;;
    specdiff-catalog*) exit "$RUN_STATUS" ;;
    *) exit 99 ;;
esac
"""


@pytest.mark.parametrize("run_status", [0, 1, 2])
def test_gpu_script_stops_its_services_and_ends_with_the_run_status(tmp_path, run_status):
    """Real processes: stub dask/srun/specdiff-catalog/scancel on PATH; the script must exit with the
    run's status (not be cancelled by scancel) and leave no scheduler or worker behind."""
    stubs = tmp_path / "bin"
    stubs.mkdir()
    for name in ("dask", "srun", "specdiff-catalog", "scancel"):
        (stubs / name).write_text(STUB)
        (stubs / name).chmod(0o755)
    result = subprocess.run(
        ["bash", str(JOBS / "run_catalog_gpu.slurm")],
        capture_output=True,
        text=True,
        timeout=60,
        env={
            **os.environ,
            "PATH": f"{stubs}:{os.environ['PATH']}",
            "STUBS": str(stubs),
            "RUN_STATUS": str(run_status),
            "INPUT": "cat",
            "OUT": str(tmp_path / "pz.zarr"),
            "SCHEDULER_FILE": str(tmp_path / "s.json"),
            "STOP_SECONDS": "5",
        },
    )
    assert result.returncode == run_status, result.stderr
    calls = [line.split(" ", 1) for line in (stubs / "calls").read_text().splitlines()]
    commands = [args.split()[0:2] for _, args in calls]
    assert ["scheduler", "--scheduler-file"] in commands and ["run", "--input"] in commands
    assert not any("scancel" in args for _, args in calls)
    for pid, args in calls:
        if args.startswith(("scheduler", "cuda")):
            assert not _alive(int(pid)), f"left running: {args}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_gpu_script_refuses_without_input():
    result = subprocess.run(
        ["bash", str(JOBS / "run_catalog_gpu.slurm")],
        capture_output=True,
        text=True,
        env={**os.environ, "DRY_RUN": "1", "OUT": "x"},
    )
    assert result.returncode != 0 and "INPUT" in result.stderr


def test_jobqueue_script_passes_slurm_options():
    (line,) = dry_run(
        "run_catalog_jobqueue.sh",
        INPUT="cat",
        OUT="o.zarr",
        ACCOUNT="proj",
        QOS="regular",
        CONSTRAINT="gpu",
        QUEUE="gpu",
        JOBS="4",
    )
    assert line.startswith("specdiff-catalog run --input cat --out o.zarr --cluster slurm")
    for option in (
        "--slurm-account proj",
        "--slurm-qos regular",
        "--slurm-constraint gpu",
        "--slurm-jobs 4",
        "--slurm-gpus 1",
        "--slurm-queue gpu",
    ):
        assert option in line


def test_jobqueue_script_leaves_unset_options_to_jobqueue_yaml():
    (line,) = dry_run("run_catalog_jobqueue.sh", INPUT="cat", OUT="o.zarr")
    for option in (
        "--slurm-account",
        "--slurm-qos",
        "--slurm-constraint",
        "--slurm-queue",
        "--slurm-walltime",
    ):
        assert option not in line


def test_train_script_runs_the_jobs_in_order_on_the_gpu(tmp_path):
    lines = dry_run(
        "train_gpu.slurm", DESI="desi", TRAIN=str(tmp_path / "train"), MODEL=str(tmp_path / "model")
    )
    assert [line.split()[1:3] for line in lines] == [
        ["prepare", "--desi"],
        ["train", "autoencoder"],
        ["train", "diffusion"],
        ["train", "baseline"],
        ["train", "distill"],
    ]
    assert all("--device cuda" in line and "--preset paper" in line for line in lines[1:3])
    assert not any("--resume" in line for line in lines)


def test_train_script_after_requeue_skips_finished_parts_and_resumes_the_interrupted_one(tmp_path):
    train, model = tmp_path / "train", tmp_path / "model"
    train.mkdir()
    (train / "trainset.json").write_text("{}")
    (model / "training" / "diffusion").mkdir(parents=True)
    (model / "training" / "diffusion" / "last.json").write_text("{}")
    finished = dataclasses.replace(
        read_config(default_model_dir()), diffusion=None, baseline=None, student=None
    )
    (model / "config.json").write_text(json.dumps(config_to_json(finished)))  # the autoencoder is trained
    lines = dry_run("train_gpu.slurm", DESI="desi", TRAIN=str(train), MODEL=str(model), PYTHON=sys.executable)
    assert len(lines) == 3 and lines[0].split()[1:3] == ["train", "diffusion"] and "--resume" in lines[0]
    assert lines[1].split()[1:3] == ["train", "baseline"]
    assert lines[2].split()[1:3] == ["train", "distill"] and "--resume" not in lines[2]
    (model / "training" / "distill" / "student-2").mkdir(parents=True)
    (model / "training" / "distill" / "student-2" / "last.json").write_text("{}")
    lines = dry_run("train_gpu.slurm", DESI="desi", TRAIN=str(train), MODEL=str(model), PYTHON=sys.executable)
    assert lines[2].split()[1:3] == ["train", "distill"] and "--resume" in lines[2]
