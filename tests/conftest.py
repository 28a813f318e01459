"""Shared fixtures: paths to the real DESI test files (skipped when ../shared is absent) and a
tiny model trained end to end on a small mock survey (``trained_tiny``)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# ../shared of the checkout, or of a folder above it (a git worktree under work/wt/NAME)
SHARED_DESI = next(
    (p / "shared" / "data" / "desi" for p in ROOT.parents if (p / "shared" / "data" / "desi").is_dir()),
    ROOT.parent / "shared" / "data" / "desi",
)


@pytest.fixture
def real_desi_dir() -> Path:
    """../shared/data/desi with the two real DESI coadd/redrock pairs."""
    if not (SHARED_DESI / "coadd-4-80613-thru20210324.fits").exists():
        pytest.skip("../shared/data/desi is not present (a user's fresh clone)")
    return SHARED_DESI


@dataclass(frozen=True)
class TrainedTiny:
    """A tiny model trained end to end through the CLI on a small mock survey.

    mock: the survey (catalog/, spectra/, truth/photometric.parquet); trainset: its
    prepared training set; model: a model directory with autoencoder, diffusion and
    baseline; seconds: wall time of mock -> prepare -> the three training jobs.
    """

    mock: Path
    trainset: Path
    model: Path
    seconds: float

    @property
    def catalog(self) -> Path:
        return self.mock / "catalog"

    @property
    def truth(self) -> Path:
        return self.mock / "truth" / "photometric.parquet"


@pytest.fixture(scope="session")
def trained_tiny(tmp_path_factory) -> TrainedTiny:
    """mock (500 spectra, 400 catalog objects) -> prepare -> train autoencoder (tiny, DESI grid)
    -> train diffusion (tiny, 10 epochs) -> train baseline (tiny), every step through the CLI.
    Session-scoped: the pipeline, evaluation and report tests reuse the model (~1 min on one core)."""
    import torch

    from specdiff_catalog.cli import main

    root = tmp_path_factory.mktemp("trained_tiny")
    mock, trainset, model = root / "mock", root / "train", root / "model"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    start = time.perf_counter()
    steps = [
        [
            "mock",
            "--out",
            mock,
            "--n-spec",
            "500",
            "--n-phot",
            "400",
            "--seed",
            "11",
            "--n-rest",
            "10",
            "--order",
            "3",
        ],
        ["prepare", "--desi", mock / "spectra", "--out", trainset],
        [
            "train",
            "autoencoder",
            "--data",
            trainset,
            "--model",
            model,
            "--preset",
            ROOT / "tests" / "data" / "autoencoder_tiny_desi.toml",
            "--device",
            "cpu",
            "--no-progress",
        ],
        [
            "train",
            "diffusion",
            "--data",
            trainset,
            "--model",
            model,
            "--preset",
            "tiny",
            "--epochs",
            "10",
            "--device",
            "cpu",
            "--no-progress",
        ],
        ["train", "baseline", "--data", trainset, "--model", model, "--preset", "tiny", "--threads", "1"],
    ]
    try:
        for argv in steps:
            assert main([str(a) for a in argv]) == 0, argv
    finally:
        torch.set_num_threads(threads)
    return TrainedTiny(mock, trainset, model, time.perf_counter() - start)


@pytest.fixture(scope="session")
def tiny_run(trained_tiny, tmp_path_factory) -> Path:
    """`run` of the tiny model over the tiny mock's catalog (400 objects), 64 samples kept per object."""
    from specdiff_catalog.cli import main

    out = tmp_path_factory.mktemp("tiny_run") / "pz.zarr"
    assert (
        main(
            [
                "run",
                "--input",
                str(trained_tiny.catalog),
                "--out",
                str(out),
                "--model",
                str(trained_tiny.model),
                "--n-samples",
                "64",
                "--save-samples",
                "64",
                "--n-workers",
                "1",
                "--threads-per-worker",
                "1",
                "--dashboard-address",
                ":0",
                "--no-progress",
            ]
        )
        == 0
    )
    return out
