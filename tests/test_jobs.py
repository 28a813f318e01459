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
        timeout=30,
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
    assert "--resources GPU=1" in workers and "--scheduler-file /shared/s.json" in workers
    assert client == "specdiff-catalog run --input ls_dr10 --out pz.zarr --scheduler-file /shared/s.json"
    assert lines.index(next(line for line in lines if "dask scheduler" in line)) < lines.index(client)


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
        "run_catalog_jobqueue.sh", INPUT="cat", OUT="o.zarr", ACCOUNT="proj", JOBS="4", GPUS="2"
    )
    assert line.startswith("specdiff-catalog run --input cat --out o.zarr --cluster slurm")
    for option in ("--slurm-account proj", "--slurm-jobs 4", "--slurm-gpus 2", "--slurm-queue gpu"):
        assert option in line


def test_train_script_runs_the_three_jobs_in_order_on_the_gpu(tmp_path):
    lines = dry_run(
        "train_gpu.slurm", DESI="desi", TRAIN=str(tmp_path / "train"), MODEL=str(tmp_path / "model")
    )
    assert [line.split()[1:3] for line in lines] == [
        ["prepare", "--desi"],
        ["train", "autoencoder"],
        ["train", "diffusion"],
        ["train", "baseline"],
    ]
    assert all("--device cuda" in line and "--preset paper" in line for line in lines[1:3])
    assert not any("--resume" in line for line in lines)


def test_train_script_after_requeue_skips_finished_parts_and_resumes_the_interrupted_one(tmp_path):
    train, model = tmp_path / "train", tmp_path / "model"
    train.mkdir()
    (train / "trainset.json").write_text("{}")
    (model / "training" / "diffusion").mkdir(parents=True)
    (model / "training" / "diffusion" / "last.json").write_text("{}")
    finished = dataclasses.replace(read_config(default_model_dir()), diffusion=None, baseline=None)
    (model / "config.json").write_text(json.dumps(config_to_json(finished)))  # the autoencoder is trained
    lines = dry_run("train_gpu.slurm", DESI="desi", TRAIN=str(train), MODEL=str(model), PYTHON=sys.executable)
    assert len(lines) == 2 and lines[0].split()[1:3] == ["train", "diffusion"] and "--resume" in lines[0]
    assert lines[1].split()[1:3] == ["train", "baseline"]
