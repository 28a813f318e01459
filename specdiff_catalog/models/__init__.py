"""The trained model: a model directory loaded into one ``SpecdiffModel``.

``load_model(MODEL)`` reads config.json once (``models.store.read_config``: typed,
version 1 migrated), checks the sha256 of every file before it is parsed and rebuilds
each trained component from its state and typed config; nothing is unpickled.
``choose_sampling`` turns a caller's sampler options into concrete ones for a model (its
production student by default).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch

from specdiff_catalog import defaults
from specdiff_catalog.bands import BandSet
from specdiff_catalog.models import store
from specdiff_catalog.models.autoencoder import SpectrumAutoencoder
from specdiff_catalog.models.baseline import BaselineModel
from specdiff_catalog.models.coverage import CoverageModel
from specdiff_catalog.models.diffusion import DiffusionModel
from specdiff_catalog.models.distill import StudentModel
from specdiff_catalog.models.sampling import SamplerModel
from specdiff_catalog.models.store import ModelConfig

log = logging.getLogger(__name__)


@dataclass
class SpecdiffModel:
    """A loaded model directory.

    path: the directory; config: its config.json (typed); bands: the band set the
    photometric components were trained with (None before any was); autoencoder,
    diffusion (eval mode), baseline, coverage (the training-set coverage score): each None
    until trained. students: the distilled few-step students of the diffusion network by
    network evaluations (eval mode; empty until ``train distill``).
    """

    path: Path
    config: ModelConfig
    autoencoder: SpectrumAutoencoder | None = None
    diffusion: DiffusionModel | None = None
    baseline: BaselineModel | None = None
    coverage: CoverageModel | None = None
    students: dict[int, StudentModel] = field(default_factory=dict)

    @property
    def bands(self) -> BandSet | None:
        return self.config.bands

    @property
    def id(self) -> str:
        """sha256 of config.json (which records the sha256 of every weight file)."""
        return store.model_id(self.path)

    @property
    def simulated(self) -> bool:
        """True when the model was trained on simulated (mock) data."""
        return bool(self.config.provenance.simulated)

    def network(self, sampler: str, steps: int | None) -> SamplerModel:
        """What a concrete sampler (``choose_sampling``) samples: the ``steps``-evaluation
        student for "student", else the diffusion network."""
        if self.diffusion is None:
            raise ValueError(f"{self.path}: the model has no diffusion component (train diffusion first)")
        if sampler != defaults.STUDENT_SAMPLER:
            return self.diffusion
        if steps not in self.students:
            raise ValueError(f"{self.path}: no {steps}-evaluation student; it has {sorted(self.students)}")
        return self.students[steps]


@dataclass(frozen=True)
class Sampling:
    """Concrete sampler options: a ``sampling.SAMPLERS`` name, its steps (a student's: its
    network evaluations; None: the sampler's default) and the samples per object."""

    sampler: str
    steps: int | None
    n_samples: int


def choose_sampling(
    config: ModelConfig,
    sampler: str = defaults.SAMPLER,
    steps: int | None = None,
    n_samples: int | None = None,
) -> Sampling:
    """The sampler options a caller gave, made concrete for a model.

    sampler "auto": the model's production setting (``config.student.default``: a student, or
    the teacher at the fewest steps that pass the quality rule) when it has students, else
    ``defaults.TEACHER_SAMPLER``; with ``steps`` that no student has, the teacher at
    ``steps``. "student": steps picks it by its network evaluations (default: the
    production student, else the one with the most evaluations). n_samples
    None: the production count for "auto" and "student" with students, else
    ``defaults.N_SAMPLES``. ValueError, one line, for a student the model does not have.
    """
    student = config.student
    if sampler == "auto":
        if student is None or (
            steps is not None
            and student.default.sampler == defaults.STUDENT_SAMPLER
            and steps not in student.samplers
        ):  # no students, or a step count none of them has: the teacher at that many steps
            sampler = defaults.TEACHER_SAMPLER
        else:
            production = student.default
            sampler, steps = production.sampler, production.evaluations if steps is None else steps
            n_samples = production.n_samples if n_samples is None else n_samples
    if sampler == defaults.STUDENT_SAMPLER:
        if student is None:
            raise ValueError(
                "the model has no distilled student (make them with `train distill --model MODEL`)"
            )
        if steps is None:
            steps = (
                student.default.evaluations if student.default.sampler == sampler else max(student.samplers)
            )
        if steps not in student.samplers:
            raise ValueError(
                f"the model has no {steps}-evaluation student; it has {sorted(student.samplers)} "
                "(--steps picks one by its network evaluations)"
            )
        n_samples = student.default.n_samples if n_samples is None else n_samples
    return Sampling(sampler, steps, defaults.N_SAMPLES if n_samples is None else n_samples)


def simulation_notice(config: ModelConfig, path: str | Path) -> str | None:
    """The one-line statement every user of a model trained on simulations must see, or None."""
    if not config.provenance.simulated:
        return None
    bundled = Path(path).resolve() == store.default_model_dir().resolve()
    what = "the bundled default model" if bundled else f"model {path}"
    return (
        f"NOTE: {what} was trained on SIMULATED galaxies (a specdiff-catalog mock survey), "
        "not on real spectra; its photo-z and spectra are a demonstration, not science-grade for real data."
    )


def load_autoencoder(
    model_dir: str | Path, device: str | torch.device = "cpu", *, config: ModelConfig | None = None
) -> SpectrumAutoencoder:
    """The verified spectrum autoencoder of a model directory, in eval mode on ``device``.

    config: the directory's config when the caller has read it already.
    """
    config = config or store.read_config(model_dir)
    section = config.autoencoder
    if section is None:
        raise store.ModelDirectoryError(
            f"{model_dir}: the model has no autoencoder (train autoencoder first)"
        )
    tensors = store.read_tensors(model_dir, section.weights)
    return SpectrumAutoencoder.from_state(section.config, tensors).to(device).eval()


def load_diffusion(
    model_dir: str | Path, device: str | torch.device = "cpu", *, config: ModelConfig | None = None
) -> DiffusionModel:
    """The verified diffusion model of a model directory, in eval mode on ``device``."""
    config = config or store.read_config(model_dir)
    section = config.diffusion
    if section is None:
        raise store.ModelDirectoryError(
            f"{model_dir}: the model has no diffusion component (train diffusion first)"
        )
    tensors = store.read_tensors(model_dir, section.weights)
    return DiffusionModel.from_state(section.config, section.standardisation, tensors).to(device).eval()


def load_student(
    model_dir: str | Path,
    evaluations: int,
    device: str | torch.device = "cpu",
    *,
    config: ModelConfig | None = None,
) -> StudentModel:
    """The verified ``evaluations``-evaluation distilled student of a model directory, in eval
    mode on ``device``: the diffusion network's architecture and standardisation with the
    student's weights and time grid."""
    config = config or store.read_config(model_dir)
    section, diffusion = config.student, config.diffusion
    if section is None or diffusion is None or evaluations not in section.samplers:
        raise store.ModelDirectoryError(
            f"{model_dir}: the model has no {evaluations}-evaluation student (train distill first)"
        )
    entry = section.samplers[evaluations]
    tensors = store.read_tensors(model_dir, entry.weights)
    network = DiffusionModel.from_state(diffusion.config, diffusion.standardisation, tensors)
    return StudentModel(network.to(device).eval(), entry.nodes)


def load_students(
    model_dir: str | Path, device: str | torch.device = "cpu", *, config: ModelConfig | None = None
) -> dict[int, StudentModel]:
    """Every distilled student of a model directory by network evaluations ({} without any)."""
    config = config or store.read_config(model_dir)
    samplers = config.student.samplers if config.student is not None else {}
    return {n: load_student(model_dir, n, device, config=config) for n in samplers}


def load_baseline(model_dir: str | Path, *, config: ModelConfig | None = None) -> BaselineModel:
    """The verified tree baseline of a model directory."""
    config = config or store.read_config(model_dir)
    section = config.baseline
    if section is None:
        raise store.ModelDirectoryError(
            f"{model_dir}: the model has no baseline (train one with `train baseline`)"
        )
    calibration = None if section.calibration is None else (section.calibration.u, section.calibration.level)
    return BaselineModel.from_state(
        section.config,
        list(section.feature_names),
        store.read_catboost(model_dir, section.weights),
        section.t_range,
        calibration,
    )


def load_coverage(model_dir: str | Path, *, config: ModelConfig | None = None) -> CoverageModel:
    """The verified training-set coverage score of a model directory (numpy, CPU)."""
    config = config or store.read_config(model_dir)
    section = config.coverage
    if section is None:
        raise store.ModelDirectoryError(
            f"{model_dir}: the model has no coverage section (add one with `train coverage`)"
        )
    return CoverageModel.from_state(section.config, store.read_tensors(model_dir, section.weights))


def load_model(
    model_dir: str | Path | None = None, device: str | torch.device = "cpu", *, notice: bool = True
) -> SpecdiffModel:
    """Load a model directory (default: the bundled model) with every component it has.

    Each file's sha256 must match config.json, or ``store.ModelDirectoryError`` says
    which file was altered. A model trained on simulations logs ``simulation_notice`` as a
    warning (``notice=False``: not, for callers that have said it already, e.g. ``run``'s
    workers).
    """
    path = Path(model_dir) if model_dir is not None else store.default_model_dir()
    config = store.read_config(path)
    message = simulation_notice(config, path) if notice else None
    if message:
        log.warning(message)
    return SpecdiffModel(
        path=path,
        config=config,
        autoencoder=load_autoencoder(path, device, config=config) if config.autoencoder else None,
        diffusion=load_diffusion(path, device, config=config) if config.diffusion else None,
        baseline=load_baseline(path, config=config) if config.baseline else None,
        coverage=load_coverage(path, config=config) if config.coverage else None,
        students=load_students(path, device, config=config),
    )
