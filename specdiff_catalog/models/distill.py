"""Few-step students of the diffusion model, distilled from the teacher's probability-flow ODE.

A student is the teacher's network (same architecture and standardisation, its own
weights) that samples with deterministic DDIM on its own grid of N <= 4 times (the
``student`` sampler of ``models/sampling.py``): x_T = counter noise, then N network
evaluations at tau_0 = T > tau_1 > ... > tau_{N-1}, the last x0 prediction being the
sample. Between two nodes the student takes one DDIM step where the teacher would take
many.

Training target (Salimans & Ho 2022, "Progressive distillation", algorithm 2, with the
teacher's two DDIM steps replaced by an accurate DPM-Solver++(2M) solve of the teacher's
ODE across the whole student step, so each student needs one distillation round instead
of log2(steps) rounds; for N = 1 this is the direct distillation of Luhman & Luhman
2021): for a teacher state x at tau_i and the teacher's state y at tau_{i+1}, the
student's x0 prediction must make its DDIM step land on y:

    y = alpha_s x0 + sigma_s (x - alpha_t x0) / sigma_t
    =>  x0_target = (y - (sigma_s / sigma_t) x) / (alpha_s - sigma_s alpha_t / sigma_t)

(x0_target = y on the last step, to tau = 0). The loss is the mean squared error in
v = (alpha_t x - x0) / sigma_t, the teacher's own loss ("SNR + 1" weighting of the x0
error). Teacher states come from ``teacher_paths``: x_T ~ N(0, I) solved with the
teacher's DPM-Solver++(2M) on a grid uniform in log-SNR that contains every node of
every student (docs/distillation.md has the choices and the measurements).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from specdiff_catalog.models.diffusion import CosineSchedule, DiffusionModel
from specdiff_catalog.models.sampling import LOG_SNR_RANGE, SamplerModel, dpmpp_2m_path

MAX_EVALUATIONS = 4
DEFAULT_NODES: dict[int, tuple[float, ...]] = {1: (), 2: (1.0,), 4: (-1.0, 1.0, 3.0)}
"""Interior nodes (log-SNR lambda = log(alpha / sigma)) of each student's grid: the
student evaluates the network at T, at these, and returns the last x0 prediction."""
TEACHER_SPACING = 0.25
"""log-SNR spacing of the teacher's DPM-Solver++(2M) solve over ``LOG_SNR_RANGE`` (29
interior times: more accurate than its 20-step production grid)."""


def student_times(schedule: CosineSchedule, nodes: Sequence[float]) -> list[float]:
    """The student's N + 1 times: T, the interior nodes (increasing lambda), 0."""
    lambdas = [float(v) for v in nodes]
    if any(b <= a for a, b in itertools.pairwise(lambdas)):
        raise ValueError(f"student nodes {lambdas} must increase in log-SNR")
    if len(lambdas) + 1 > MAX_EVALUATIONS:
        raise ValueError(f"a student makes at most {MAX_EVALUATIONS} evaluations, not {len(lambdas) + 1}")
    return [float(schedule.timesteps)] + [schedule.time_of_log_snr(v) for v in lambdas] + [0.0]


def teacher_times(
    schedule: CosineSchedule,
    nodes: Sequence[float],
    spacing: float = TEACHER_SPACING,
    log_snr_range: tuple[float, float] = LOG_SNR_RANGE,
) -> list[float]:
    """The teacher's solve grid: T, lambda uniform over ``log_snr_range`` at ``spacing``
    (``sample_times``' rule with finer steps), 0. Every node must lie on it."""
    lo, hi = log_snr_range
    n = round((hi - lo) / spacing)
    lambdas = np.linspace(lo, hi, n + 1)
    for v in nodes:
        if np.min(np.abs(lambdas - v)) > 1e-9:
            raise ValueError(f"student node lambda = {v} is not on the teacher's grid {lo}:{hi}:{spacing}")
    return [float(schedule.timesteps)] + [schedule.time_of_log_snr(float(v)) for v in lambdas] + [0.0]


@torch.no_grad()
def teacher_paths(
    teacher: SamplerModel, cond_emb: torch.Tensor, x_T: torch.Tensor, times: list[float], keep: list[float]
) -> torch.Tensor:
    """The teacher's DPM-Solver++(2M) states at the ``keep`` times, stacked at dim 1:
    (M, len(keep), D) for x_T (M, D) and cond_emb (M, H) (or (G, len(keep), K, D) for
    x_T (G, K, D) and cond_emb (G, 1, H)). times: the solve grid from x_T's time; it
    contains every kept time (0: the final x0 prediction; times[0]: x_T itself).
    """
    index = {t: i for i, t in enumerate(times)}
    missing = [t for t in keep if t not in index]
    if missing:
        raise ValueError(f"times {missing} are not on the solve grid")
    states = [x_T, *dpmpp_2m_path(teacher, cond_emb, x_T, times)]
    return torch.stack([states[index[t]] for t in keep], dim=1)


def x0_target(
    schedule: CosineSchedule, x: torch.Tensor, y: torch.Tensor, t: torch.Tensor, s: torch.Tensor
) -> torch.Tensor:
    """x0 whose DDIM step from (x, t) lands on (y, s); x, y (M, D), t, s (M,) times (s = 0: y)."""
    abar_t, abar_s = schedule.alpha_bar(t.double()), schedule.alpha_bar(s.double())
    alpha_t, sigma_t = abar_t.sqrt(), (1 - abar_t).sqrt()
    alpha_s, sigma_s = abar_s.sqrt(), (1 - abar_s).sqrt()
    ratio = (sigma_s / sigma_t)[:, None].to(x)
    return (y - ratio * x) / (alpha_s[:, None].to(x) - ratio * alpha_t[:, None].to(x))


def distill_loss(
    student: DiffusionModel, x: torch.Tensor, t: torch.Tensor, target: torch.Tensor, cond_emb: torch.Tensor
) -> torch.Tensor:
    """Mean squared error of the student's v (or eps) against the one implied by x0 ``target``.

    x, target (M, D); t (M,) times; cond_emb (M, H) from the student's own condition MLP.
    """
    abar = student.schedule.alpha_bar(t.double())[:, None].to(x)
    alpha, sigma = abar.sqrt(), (1 - abar).sqrt()
    if student.config.prediction == "v":
        wanted = (alpha * x - target) / sigma
    else:
        wanted = (x - alpha * target) / sigma
    return torch.nn.functional.mse_loss(student(x, t, cond_emb), wanted)


class StudentModel(nn.Module):
    """A distilled student: a ``DiffusionModel`` (the teacher's architecture and
    standardisation, the student's weights) and its time grid. It is a ``SamplerModel``;
    sample it with ``sampling.sample(..., sampler="student")``.

    nodes: interior log-SNR nodes (``DEFAULT_NODES``); times: T, the nodes, 0;
    evaluations: network calls per sample = len(nodes) + 1.
    """

    def __init__(self, model: DiffusionModel, nodes: Sequence[float]) -> None:
        super().__init__()
        self.model = model
        self.nodes = tuple(float(v) for v in nodes)
        self.times = student_times(model.schedule, self.nodes)
        self.train(model.training)  # a wrapper of a model in eval mode is in eval mode

    @property
    def evaluations(self) -> int:
        return len(self.times) - 1

    @property
    def schedule(self) -> CosineSchedule:
        return self.model.schedule

    @property
    def standardisation(self) -> Any:
        return self.model.standardisation

    @property
    def config(self) -> Any:
        return self.model.config

    @property
    def data_dim(self) -> int:
        return self.model.data_dim

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def net(self) -> nn.Module:
        return self.model.net

    def embed_condition(self, features: Any, missing: Any) -> torch.Tensor:
        return self.model.embed_condition(features, missing)

    def denoise(self, x_t: torch.Tensor, t: float, cond_emb: torch.Tensor) -> torch.Tensor:
        return self.model.denoise(x_t, t, cond_emb)

    def to_physical(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model.to_physical(x)


def layer_shapes(model: DiffusionModel) -> list[tuple[str, int, int]]:
    """(where, in, out) of every matrix product of the network, by how often it runs:
    "row" on each sample row at each evaluation (input, block MLPs, output),
    "galaxy_evaluation" once per galaxy and evaluation (the adaLN modulations),
    "galaxy" once per galaxy (the condition MLP), "evaluation" once per evaluation
    (the timestep MLP)."""
    c = model.config
    h, d, r = c.hidden, model.data_dim, c.mlp_ratio
    cond_in = model.standardisation.n_features + model.standardisation.n_bands
    return (
        [("row", d, h)]
        + [("row", h, r * h), ("row", r * h, h)] * c.n_blocks
        + [("row", h, d)]
        + [("galaxy_evaluation", h, 3 * h)] * c.n_blocks
        + [("galaxy_evaluation", h, 2 * h)]
        + [("galaxy", cond_in, h)]
        + [("galaxy", h, h)] * (c.cond_layers - 1)
        + [("evaluation", c.time_frequencies, h), ("evaluation", h, h)]
    )


def flop_per_row(model: DiffusionModel) -> dict[str, float]:
    """FLOP (2 per multiply-accumulate) of the matrix products by ``layer_shapes``' "where".
    Element-wise work (LayerNorm, SiLU, the sampler's updates, the noise) is not counted."""
    flop = {"row": 0.0, "galaxy_evaluation": 0.0, "galaxy": 0.0, "evaluation": 0.0}
    for where, n_in, n_out in layer_shapes(model):
        flop[where] += 2.0 * n_in * n_out
    return flop


def flop_per_galaxy(model: DiffusionModel, evaluations: int, n_samples: int) -> float:
    """FLOP of one galaxy's K samples with ``evaluations`` network calls (``flop_per_row``)."""
    f = flop_per_row(model)
    return evaluations * (n_samples * f["row"] + f["galaxy_evaluation"]) + f["galaxy"]
