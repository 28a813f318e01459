"""The distillation job: a model's diffusion teacher -> few-step students (``models/distill.py``).

``distill(MODEL)`` reads the teacher (MODEL's diffusion component) and the photometry of
its training set (the path recorded in config.json, or ``data``), then:

1. builds a bank of teacher trajectories: for every training object ``draws`` start
   states x_T ~ N(0, I), each with the teacher's band dropout applied to its condition,
   solved with the teacher's DPM-Solver++(2M) on a fine log-SNR grid; the states at
   every student node are kept (cached in MODEL/training/distill/bank.safetensors);
2. trains one student per evaluation count (4, 2, 1 by default), each initialised from
   the teacher's weights, on the bank with the shared loop (``training.loop.fit``:
   AdamW, one-cycle, EMA, checkpoints in MODEL/training/distill/student-N/, resume);
3. samples the validation split with each student and with the teacher (20-step
   DPM-Solver++) and records both sets of photo-z metrics in the student's training
   record; the students go into the model directory's ``student`` section
   (``models.store.StudentSection``: MODEL/student-N.safetensors, their sha256, grids
   and the production setting ``run`` uses).

Only photometry is read: the targets come from the teacher, so no spectrum is encoded.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from specdiff_catalog import defaults
from specdiff_catalog.config import from_dict, load_preset
from specdiff_catalog.io.trainset import TrainingSet
from specdiff_catalog.models import load_diffusion, store
from specdiff_catalog.models.diffusion import DiffusionModel
from specdiff_catalog.models.distill import (
    DEFAULT_NODES,
    TEACHER_SPACING,
    StudentModel,
    distill_loss,
    student_times,
    teacher_paths,
    teacher_times,
    x0_target,
)
from specdiff_catalog.models.store import ProductionSetting, StudentSampler, StudentSection
from specdiff_catalog.training.augment import drop_bands
from specdiff_catalog.training.diffusion import (
    DiffusionData,
    DiffusionTrainee,
    prepare_data,
    validate_pdfs,
)
from specdiff_catalog.training.loop import FitResult, StepResult, TrainConfig, fit, resolve_device

log = logging.getLogger(__name__)

WORKDIR = Path("training") / "distill"  # inside MODEL: bank.safetensors (+ .json), student-N/
BANK = "bank.safetensors"
BANK_CHUNK = 8192  # trajectories per teacher solve
METHOD = "progressive"  # Salimans & Ho 2022's target, one round per student (models/distill.py)


@dataclass(frozen=True)
class DistillConfig:
    """What to distil (``presets/distill/*.toml``; its [training] table is the loop's).

    evaluations: the students to train (network calls per sample, <= 4).
    nodes: interior log-SNR nodes of each student's grid, by evaluation count (default
        ``models.distill.DEFAULT_NODES``). draws: teacher trajectories per training
        object; val_draws: per validation object (the validation loss).
    teacher_spacing: log-SNR spacing of the teacher's solve.
    """

    evaluations: tuple[int, ...] = (4, 2, 1)
    nodes: dict[str, list[float]] = field(default_factory=dict)
    draws: int = 8
    val_draws: int = 2
    teacher_spacing: float = TEACHER_SPACING

    def known_evaluations(self) -> list[int]:
        """Every student with a grid: those asked for, those with preset nodes, the defaults."""
        return sorted(set(self.evaluations) | {int(k) for k in self.nodes} | set(DEFAULT_NODES))

    def nodes_of(self, evaluations: int) -> tuple[float, ...]:
        if str(evaluations) in self.nodes:
            return tuple(self.nodes[str(evaluations)])
        if evaluations not in DEFAULT_NODES:
            raise ValueError(
                f"no default nodes for a {evaluations}-evaluation student; give them in the preset"
            )
        return DEFAULT_NODES[evaluations]


def load_distill_preset(name_or_path: str | Path) -> tuple[DistillConfig, TrainConfig]:
    """A bundled preset (``default``) or TOML/JSON file: DistillConfig keys + a [training] table."""
    data = load_preset("distill", name_or_path)
    training = data.pop("training", {})
    if "evaluations" in data:
        data["evaluations"] = tuple(data["evaluations"])
    return (
        from_dict(DistillConfig, data, source=f"distill preset {name_or_path}"),
        TrainConfig.from_dict(training, source=f"distill preset {name_or_path} [training]"),
    )


# --- the trajectory bank -------------------------------------------------------------------


@dataclass
class Bank:
    """Teacher trajectories.

    rows: (M,) index of each trajectory's object in its split's DiffusionData;
    missing: (M, B) bool, the condition's missing bands after band dropout;
    times: (P,) the kept times, decreasing from T to 0; states: (M, P, D) float32, the
    teacher's states at those times (the last: its x0).
    """

    rows: torch.Tensor
    missing: torch.Tensor
    times: list[float]
    states: torch.Tensor

    def tensors(self) -> dict[str, torch.Tensor]:
        return {
            "rows": self.rows,
            "missing": self.missing,
            "states": self.states,
            "times": torch.tensor(self.times, dtype=torch.float64),
        }

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor]) -> Bank:
        return cls(tensors["rows"], tensors["missing"], tensors["times"].tolist(), tensors["states"])


def build_bank(
    teacher: DiffusionModel,
    data: DiffusionData,
    draws: int,
    solve_times: list[float],
    keep: list[float],
    *,
    seed: int,
    progress: bool = False,
) -> Bank:
    """``draws`` teacher trajectories per object of ``data`` (see the module docstring)."""
    generator = torch.Generator().manual_seed(seed)
    rows = torch.arange(len(data)).repeat_interleave(draws)
    missing = torch.as_tensor(data.features.missing)[rows]
    missing = drop_bands(missing, teacher.config.band_dropout, generator)
    x_T = torch.randn((len(rows), teacher.data_dim), generator=generator)
    states = torch.empty((len(rows), len(keep), teacher.data_dim), dtype=torch.float32)
    values = data.features.values
    start = time.perf_counter()
    with torch.inference_mode():
        for lo in range(0, len(rows), BANK_CHUNK):
            hi = min(len(rows), lo + BANK_CHUNK)
            r = rows[lo:hi].numpy()
            cond = teacher.net.embed(teacher.condition_input(values[r], missing[lo:hi]))
            states[lo:hi] = teacher_paths(
                teacher, cond, x_T[lo:hi].to(teacher.device), solve_times, keep
            ).cpu()
            if progress:
                log.info("teacher trajectories: %d / %d", hi, len(rows))
    log.info(
        "%d teacher trajectories (%d solver steps) in %.0f s",
        len(rows),
        len(solve_times) - 1,
        time.perf_counter() - start,
    )
    return Bank(rows, missing, keep, states)


def cached_bank(path: Path, key: dict[str, Any], build: Any) -> Bank:
    """The bank at ``path`` if its key (teacher, data, settings) matches, else ``build()`` saved there."""
    meta = path.with_suffix(".json")
    if path.exists() and meta.exists() and json.loads(meta.read_text()) == key:
        return Bank.from_tensors(load_file(str(path)))
    bank = build()
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(bank.tensors(), str(path))
    meta.write_text(json.dumps(key))
    return bank


# --- the loop's task -----------------------------------------------------------------------


@dataclass
class DistillBatch:
    """x (n, D) teacher states at times t (n,), x0 targets (n, D), condition rows and masks."""

    x: torch.Tensor
    t: torch.Tensor
    target: torch.Tensor
    values: np.ndarray
    missing: torch.Tensor


class DistillTask:
    """The loop's view of one student's distillation (``training.loop.TrainingTask``).

    Each training row is one bank trajectory at one random segment of the student's
    grid; validation uses every segment of every validation trajectory.
    """

    val_metric = "loss"

    def __init__(
        self,
        teacher: DiffusionModel,
        grid: list[float],
        train: tuple[DiffusionData, Bank],
        val: tuple[DiffusionData, Bank],
    ):
        self.schedule = teacher.schedule
        self.grid = grid
        self.train, self.val = train, val
        for _, bank in (train, val):
            missing_times = [t for t in grid if t not in bank.times]
            if missing_times:
                raise ValueError(f"the bank has no states at the student's times {missing_times}")

    def steps_per_epoch(self, batch_size: int) -> int:
        return math.ceil(len(self.train[1].rows) / batch_size)

    def _batch(
        self, split: tuple[DiffusionData, Bank], rows: np.ndarray, segment: np.ndarray
    ) -> DistillBatch:
        data, bank = split
        position = torch.as_tensor([bank.times.index(t) for t in self.grid])
        seg = torch.as_tensor(segment)
        r = torch.as_tensor(rows)
        x = bank.states[r, position[seg]]
        y = bank.states[r, position[seg + 1]]
        t = torch.as_tensor(self.grid, dtype=torch.float64)[seg]
        s = torch.as_tensor(self.grid, dtype=torch.float64)[seg + 1]
        target = x0_target(self.schedule, x, y, t, s)
        return DistillBatch(x, t.float(), target, data.features.values[bank.rows[r].numpy()], bank.missing[r])

    def train_batches(self, batch_size: int, epoch: int, seed: int):
        rng = np.random.default_rng([seed, epoch])
        n = len(self.train[1].rows)
        order = rng.permutation(n)
        segments = rng.integers(0, len(self.grid) - 1, n)
        for lo in range(0, n, batch_size):
            rows = order[lo : lo + batch_size]
            yield self._batch(self.train, rows, segments[lo : lo + batch_size])

    def val_batches(self, batch_size: int):
        n = len(self.val[1].rows)
        rows = np.tile(np.arange(n), len(self.grid) - 1)
        segments = np.repeat(np.arange(len(self.grid) - 1), n)
        for lo in range(0, len(rows), batch_size):
            yield self._batch(self.val, rows[lo : lo + batch_size], segments[lo : lo + batch_size])

    def loss(self, model: Any, batch: DistillBatch, device: torch.device, train: bool) -> StepResult:
        """v-prediction MSE of the student (its EMA average when validating); model: a DiffusionTrainee."""
        student = model.model if train else model.averaged
        cond = student.net.embed(student.condition_input(batch.values, batch.missing))
        loss = distill_loss(student, batch.x.to(device), batch.t.to(device), batch.target.to(device), cond)
        return StepResult(loss=loss)

    def after_step(self, model: Any) -> None:
        model.ema.update(model.model)


# --- the job -------------------------------------------------------------------------------


@dataclass
class DistillResult:
    """One FitResult per student (by evaluations) and the validation metrics written."""

    fits: dict[int, FitResult]
    validation: dict[str, Any]

    @property
    def finished(self) -> bool:
        return all(f.finished for f in self.fits.values())


def training_set_path(config: store.ModelConfig, model_dir: Path, data: str | Path | None) -> Path:
    """``data``, else the training set recorded with the model's diffusion component."""
    if data is not None:
        return Path(data)
    record = config.diffusion.training if config.diffusion is not None else None
    if record is None or not record.data:
        raise ValueError(f"{model_dir}: config.json records no diffusion training set; give --data")
    if not Path(record.data).exists():
        raise FileNotFoundError(
            f"{model_dir}: its training set {record.data} (recorded in config.json) is not here; give --data"
        )
    return Path(record.data)


def distill(
    model_dir: str | Path,
    *,
    data: str | Path | None = None,
    preset: str | Path = "default",
    evaluations: tuple[int, ...] | None = None,
    epochs: int | None = None,
    batch_size: int | None = None,
    device: str | None = None,
    seed: int | None = None,
    resume: bool = False,
    progress: bool = True,
) -> DistillResult:
    """Distil ``model_dir``'s diffusion teacher into few-step students saved next to it.

    data: a training set (directory or photometry Parquet) instead of the recorded one;
    preset: distill preset name or file; evaluations, epochs, batch_size, device, seed
    override the preset. Students are written (MODEL/student-N.safetensors + the
    ``student`` section of config.json) only when every one of them finished; students
    of other evaluation counts already there are kept, and so is the production setting
    while its student exists (else: the new student with the most evaluations, with
    ``defaults.N_SAMPLES`` samples).
    """
    model_dir = Path(model_dir)
    config, train_config = load_distill_preset(preset)
    if evaluations is not None:
        config = dataclasses.replace(config, evaluations=tuple(evaluations))
    train_config = train_config.overridden(epochs=epochs, batch_size=batch_size, device=device, seed=seed)
    run_device = resolve_device(train_config.device)
    model_config = store.read_config(model_dir)
    if model_config.diffusion is None:
        raise store.ModelDirectoryError(f"{model_dir}: the model has no diffusion component to distil")
    teacher = load_diffusion(model_dir, run_device, config=model_config)
    teacher_sha = model_config.diffusion.weights.sha256
    data_path = training_set_path(model_config, model_dir, data)
    trainset = TrainingSet.open(data_path)
    model_config.check_bands(trainset.bandset, model_dir)
    prepared = prepare_data(trainset, None)  # photometry only: the teacher supplies the targets
    # the bank keeps the states of every student the preset knows, so that students trained in
    # separate calls (--evaluations 4, then 2, ...) share one bank
    grids = {n: student_times(teacher.schedule, config.nodes_of(n)) for n in config.known_evaluations()}
    all_nodes = sorted({v for n in grids for v in config.nodes_of(n)})
    solve = teacher_times(teacher.schedule, all_nodes, config.teacher_spacing)
    keep = sorted({t for grid in grids.values() for t in grid}, reverse=True)
    workdir = model_dir / WORKDIR
    key = {
        "teacher_sha256": teacher_sha,
        "data": str(data_path.resolve()),
        "n_train": len(prepared.train),
        "n_val": len(prepared.val),
        "draws": [config.draws, config.val_draws],
        "solve_times": solve,
        "keep": keep,
        "seed": train_config.seed,
    }
    train_bank = cached_bank(
        workdir / BANK,
        key,
        lambda: build_bank(teacher, prepared.train, config.draws, solve, keep, seed=train_config.seed),
    )
    val_bank = cached_bank(
        workdir / ("val_" + BANK),
        key,
        lambda: build_bank(teacher, prepared.val, config.val_draws, solve, keep, seed=train_config.seed + 1),
    )
    fits: dict[int, FitResult] = {}
    students: dict[int, StudentModel] = {}
    for n in config.evaluations:
        student = DiffusionModel(teacher.config, teacher.standardisation)
        student.net.load_state_dict(teacher.net.state_dict())
        task = DistillTask(teacher, grids[n], (prepared.train, train_bank), (prepared.val, val_bank))
        trainee = DiffusionTrainee(student, teacher.config.ema_decay)
        job = {"evaluations": n, "nodes": list(config.nodes_of(n)), "bank": key}
        fits[n] = fit(
            trainee,
            task,
            train_config,
            workdir / f"student-{n}",
            resume=resume and (workdir / f"student-{n}" / "last.json").exists(),
            extra=job,
            progress=progress,
        )
        if not fits[n].finished:
            return DistillResult(fits, {})
        students[n] = StudentModel(trainee.averaged.eval(), config.nodes_of(n))  # on the run's device
    validation = {"teacher": validate_pdfs(teacher.eval(), prepared.val, seed=train_config.seed)}
    samplers = {}
    for n, student_model in students.items():
        validation[str(n)] = validate_pdfs(student_model, prepared.val, seed=train_config.seed)
        best = fits[n].history[fits[n].best_epoch]
        record = store.TrainingRecord(
            preset=str(preset),
            data=str(data_path),
            seed=train_config.seed,
            seconds=float(sum(r["seconds"] for r in fits[n].history)),
            settings={
                **dataclasses.asdict(train_config),
                "draws": config.draws,
                "val_draws": config.val_draws,
                "teacher_solver": {"sampler": defaults.TEACHER_SAMPLER, "times": solve},
                "validation_loss": best["val"]["loss"],
            },
            counts={"n_train": len(prepared.train), "n_val": len(prepared.val)},
            best_step=fits[n].best_epoch,
            steps_run=len(fits[n].history),
            validation=validation[str(n)] | {"teacher": validation["teacher"]},
        )
        weights = store.write_tensors(model_dir, store.student_file(n), student_model.net.state_dict())
        samplers[n] = StudentSampler(weights=weights, nodes=student_model.nodes, training=record)
    section = student_section(model_config.student, teacher_sha, samplers)
    store.write_config(model_dir, dataclasses.replace(model_config, student=section))
    return DistillResult(fits, validation)


def student_section(
    old: StudentSection | None, teacher_sha256: str, new: dict[int, StudentSampler]
) -> StudentSection:
    """The ``student`` section with the ``new`` samplers added to (or replacing) the ones of
    ``old``; the production setting stays while its student exists, else it becomes the
    new student with the most evaluations at ``defaults.N_SAMPLES`` samples."""
    samplers = {**(old.samplers if old is not None else {}), **new}
    default = (
        old.default
        if old is not None
        and (old.default.sampler != defaults.STUDENT_SAMPLER or old.default.evaluations in samplers)
        else ProductionSetting(evaluations=max(new), n_samples=defaults.N_SAMPLES)
    )
    return StudentSection(method=METHOD, teacher_sha256=teacher_sha256, default=default, samplers=samplers)


def set_production_default(
    model_dir: str | Path, evaluations: int, n_samples: int, sampler: str = defaults.STUDENT_SAMPLER
) -> None:
    """Record ``sampler`` (the ``evaluations``-evaluation student, or a teacher sampler at
    ``evaluations`` steps) at ``n_samples`` samples per object as the production setting of
    ``model_dir`` (what ``run`` samples with by default; the model must have students)."""
    config = store.read_config(model_dir)
    have = sorted(config.student.samplers) if config.student is not None else []
    if config.student is None or (sampler == defaults.STUDENT_SAMPLER and evaluations not in have):
        raise store.ModelDirectoryError(
            f"{model_dir}: no {evaluations}-evaluation student to make the default (it has {have})"
        )
    if sampler not in (defaults.STUDENT_SAMPLER, *defaults.SAMPLER_STEPS):
        raise ValueError(f"unknown sampler {sampler!r}: one of {defaults.SAMPLERS[1:]}")
    setting = ProductionSetting(evaluations=evaluations, n_samples=n_samples, sampler=sampler)
    store.write_config(
        model_dir, dataclasses.replace(config, student=dataclasses.replace(config.student, default=setting))
    )
