"""Samplers of p(x0 | c): ancestral DDPM, DDIM, DPM-Solver++(2M) and distilled students, with
counter-based noise.

All run on a (G, K, D) batch: G galaxies x K samples, the condition embedding computed
once per galaxy and broadcast over its samples and every step. Every random number is
``hashing.counter_normals_torch(seed, object_id, k, step, d)``, and on the CPU every
network product is grouped by galaxy (``diffusion.GroupedLinear``), so a galaxy's
samples are bitwise the same whatever else shares its batch (docs/diffusion.md).

- ``ddpm``: ancestral sampling over all T steps (Ho et al. 2020), the reference;
  implemented as DDIM with eta = 1, which is the same update (Song et al. 2021, eq. 16).
- ``ddim``: DDIM, deterministic given x_T at eta = 0, stochastic for eta > 0.
- ``dpmpp2m``: DPM-Solver++(2M) (Lu et al. 2022, algorithm 2), multistep second order
  in the data prediction, first order at the first and the final step.
- ``student``: a distilled student (``models.distill.StudentModel``), deterministic DDIM
  on its own grid of at most 4 network evaluations (docs/distillation.md).

The GPU path (autocast dtype, chunk size from free memory, ``torch.compile``) is below
``SAMPLERS``; every branch of it is testable on the CPU.

A sampler with ``steps`` = n evaluates the network n times: at T, at n - 1 times uniform
in log-SNR, and the last x0 prediction is the sample (``sample_times``); ``ddpm`` with
all T steps uses every integer t. The samplers only need x0 predictions, so they serve
v- and eps-models alike.
"""

from __future__ import annotations

import contextlib
import itertools
import math
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import numpy as np
import torch

from specdiff_catalog import defaults
from specdiff_catalog.hashing import counter_normals_torch
from specdiff_catalog.models.diffusion import CosineSchedule


class SamplerModel(Protocol):
    """What a sampler needs of a model (``DiffusionModel`` is one)."""

    @property
    def schedule(self) -> CosineSchedule:
        """The noise schedule (alpha_bar(t), log-SNR <-> t)."""

    @property
    def data_dim(self) -> int:
        """D of the sampled vectors."""

    @property
    def device(self) -> torch.device:
        """Where the network runs."""

    def embed_condition(self, features: Any, missing: Any) -> torch.Tensor:
        """(G, H) condition embedding, one row per galaxy."""

    def denoise(self, x_t: torch.Tensor, t: float, cond_emb: torch.Tensor) -> torch.Tensor:
        """x0 prediction for x_t (G, K, D) at time t given cond_emb (G, 1, H)."""


class CounterNoise:
    """N(0, 1) float32 noise (G, K, D) of one step: deviate (seed, object_id, k, step, d)."""

    def __init__(self, seed: int, object_ids: torch.Tensor, n_samples: int, data_dim: int) -> None:
        self.seed, self.data_dim = seed, data_dim
        self.ids = object_ids.to(torch.int64)[:, None]
        self.samples = torch.arange(n_samples, dtype=torch.int64, device=object_ids.device)[None, :]

    def __call__(self, step: int) -> torch.Tensor:
        return counter_normals_torch(self.seed, self.ids, self.samples, step, self.data_dim).float()


LOG_SNR_RANGE = (-2.0, 5.0)


def sample_times(
    schedule: CosineSchedule, steps: int, log_snr_range: tuple[float, float] = LOG_SNR_RANGE
) -> list[float]:
    """steps + 1 times from T down to 0: T, then steps - 1 times uniform in log-SNR
    lambda over ``log_snr_range``, then 0 (the last network call returns x0).

    lambda(T) = -9.9, but little is resolved below lambda ~ -2 in unit-variance data, and
    above lambda = 5 the noise (sigma/alpha < 0.007) is below the sharpest scale we
    resolve; docs/diffusion.md has the measurements behind the defaults.
    """
    if steps == schedule.timesteps:
        return np.linspace(schedule.timesteps, 0.0, steps + 1).tolist()
    lambdas: list[float] = np.linspace(*log_snr_range, steps - 1).tolist() if steps > 1 else []
    return [float(schedule.timesteps), *(schedule.time_of_log_snr(lam) for lam in lambdas), 0.0]


def ddim(
    model: SamplerModel, cond: torch.Tensor, noise: CounterNoise, times: list[float], eta: float = 0.0
) -> torch.Tensor:
    """DDIM from x_T = noise(0) along ``times``; fresh noise(i + 1) at step i when eta > 0.

    x_s = sqrt(abar_s) x0 + sqrt(1 - abar_s - c^2) eps + c z with
    c = eta sqrt((1 - abar_s) / (1 - abar_t) (1 - abar_t / abar_s)).
    """
    x = noise(0)
    for i, (t, s) in enumerate(itertools.pairwise(times)):
        x0 = model.denoise(x, t, cond)
        abar_t, abar_s = float(model.schedule.alpha_bar(t)), float(model.schedule.alpha_bar(s))
        eps = (x - math.sqrt(abar_t) * x0) / math.sqrt(1.0 - abar_t)
        c = eta * math.sqrt((1.0 - abar_s) / (1.0 - abar_t) * (1.0 - abar_t / abar_s))
        x = math.sqrt(abar_s) * x0 + math.sqrt(max(1.0 - abar_s - c * c, 0.0)) * eps
        if c > 0:
            x = x + c * noise(i + 1)
    return x


def dpmpp_2m_path(
    model: SamplerModel, cond: torch.Tensor, x: torch.Tensor, times: list[float]
) -> Iterator[torch.Tensor]:
    """DPM-Solver++(2M) states from x at times[0]: yields x at times[1], times[2], ... (at a
    final time 0 the last x0 prediction). ``dpmpp_2m`` keeps the last; distillation keeps some.

    With lambda = log(alpha / sigma), h = lambda_s - lambda_t, r = h_prev / h:
    D = (1 + 1/(2r)) x0_t - 1/(2r) x0_prev and x_s = sigma_s/sigma_t x_t + alpha_s (1 - e^-h) D.
    """
    x0_prev: torch.Tensor | None = None
    h_prev = 1.0
    for t, s in itertools.pairwise(times):
        x0 = model.denoise(x, t, cond)
        if s <= 0:
            yield x0
            return
        (alpha_t, sigma_t), (alpha_s, sigma_s) = model.schedule.alpha_sigma(t), model.schedule.alpha_sigma(s)
        h = math.log(alpha_s / sigma_s) - math.log(alpha_t / sigma_t)
        d = x0
        if x0_prev is not None:
            half_inv_r = h / (2.0 * h_prev)
            d = (1.0 + half_inv_r) * x0 - half_inv_r * x0_prev
        x = (sigma_s / sigma_t) * x - (alpha_s * math.expm1(-h)) * d
        x0_prev, h_prev = x0, h
        yield x


def dpmpp_2m(
    model: SamplerModel, cond: torch.Tensor, noise: CounterNoise, times: list[float], eta: float = 0.0
) -> torch.Tensor:
    """DPM-Solver++(2M) from x_T = noise(0) along ``times`` (deterministic; eta unused).

    Multistep, second order in the x0 prediction, first order at the first step; the last
    step (to t = 0, sigma = 0) returns the last x0 prediction (``dpmpp_2m_path``).
    """
    return deque(dpmpp_2m_path(model, cond, noise(0), times), maxlen=1)[0]


def _ddpm(
    model: SamplerModel, cond: torch.Tensor, noise: CounterNoise, times: list[float], eta: float = 0.0
) -> torch.Tensor:
    """Ancestral DDPM: DDIM with eta = 1 (the posterior variance of q(x_s | x_t, x0))."""
    return ddim(model, cond, noise, times, eta=1.0)


def _student(
    model: SamplerModel, cond: torch.Tensor, noise: CounterNoise, times: list[float], eta: float = 0.0
) -> torch.Tensor:
    """A distilled student (``models.distill.StudentModel``): deterministic DDIM on its own grid."""
    return ddim(model, cond, noise, times, eta=0.0)


SAMPLERS: dict[str, Callable[..., torch.Tensor]] = {
    "ddpm": _ddpm,
    "ddim": ddim,
    "dpmpp2m": dpmpp_2m,
    defaults.STUDENT_SAMPLER: _student,
}
"""The samplers by name: those of ``defaults.SAMPLERS`` but "auto" (``concrete_sampler``)."""


def concrete_sampler(model: SamplerModel, sampler: str) -> str:
    """``sampler`` with "auto" made concrete for ``model``: a distilled student (a model with
    its own time grid, ``models.distill.StudentModel``) samples as one, any other model with
    ``defaults.TEACHER_SAMPLER``. ValueError for an unknown name."""
    if sampler == "auto":
        sampler = defaults.STUDENT_SAMPLER if hasattr(model, "times") else defaults.TEACHER_SAMPLER
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; known: auto, {', '.join(SAMPLERS)}")
    return sampler


# --- precision, chunk size, compilation: the GPU path (testable on the CPU) --------------

PRECISIONS: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
"""``defaults.PRECISIONS`` -> the network's autocast dtype on CUDA (None: float32). bf16/fp16
are options; ``defaults.PRECISION`` says which is the default and why."""
GPU_MEMORY_FRACTION = 0.6  # of the free GPU memory a chunk may use
MAX_CHUNK_ROWS = 1 << 23
PROBE_GALAXIES = 64  # galaxies of the chunk that measures the per-row GPU memory footprint
_ROW_BYTES: dict[tuple, float] = {}  # measured footprints, per (model, sampler, grid, K, dtype, device)


def autocast_dtype(device: torch.device, precision: str) -> torch.dtype | None:
    """The autocast dtype of the network for ``precision`` on ``device``, None for float32.

    The CPU always runs float32 (the bitwise batch-independence contract, and CPU
    autocast is slower on CPUs without bf16 units); bf16 falls back to fp16 on GPUs
    without bf16.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; known: {', '.join(PRECISIONS)}")
    dtype = PRECISIONS[precision]
    if device.type != "cuda" or dtype is None:
        return None
    if dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        return torch.float16
    return dtype


def _autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    return contextlib.nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)


def rows_for_memory(free_bytes: int, row_bytes: float, *, fraction: float = GPU_MEMORY_FRACTION) -> int:
    """Rows (galaxies x samples) of a chunk that fit ``fraction`` of ``free_bytes`` at
    ``row_bytes`` each, within [1, MAX_CHUNK_ROWS]."""
    return int(min(MAX_CHUNK_ROWS, max(1.0, fraction * free_bytes / max(row_bytes, 1.0))))


def chunk_rows(device: torch.device, row_bytes: Callable[[], float]) -> int:
    """Rows per chunk: ``defaults.SAMPLER_BATCH_ROWS`` on the CPU; on CUDA what fits the free memory
    (``torch.cuda.mem_get_info``) at ``row_bytes()`` bytes per row (measured, called on CUDA only)."""
    if device.type != "cuda":
        return defaults.SAMPLER_BATCH_ROWS
    free, _ = torch.cuda.mem_get_info(device)
    return rows_for_memory(free, row_bytes())


def compile_network(model: Any, mode: str | None, backend: str = "inductor") -> None:
    """Compile the model's network in place (``nn.Module.compile``; state_dict unchanged).

    mode: None (leave it), "default", "reduce-overhead" (CUDA graphs) or "max-autotune".
    A second call with the network already compiled does nothing.
    """
    if mode is None or getattr(model.net, "_compiled_call_impl", None) is not None:
        return
    model.net.compile(mode=None if mode == "default" else mode, backend=backend, dynamic=False)


class ChunkSampler:
    """Samples of whole galaxies, chunk by chunk, for one model, sampler and set of inputs.

    features (N, F), missing (N, B), object_ids (N,) as for ``sample``; ``__call__(lo, hi)``
    returns galaxies lo..hi-1 as a (hi - lo, K, D) float32 tensor on the model's device.
    """

    def __init__(
        self,
        model: SamplerModel,
        features: Any,
        missing: Any,
        object_ids: Any,
        *,
        n_samples: int,
        seed: int,
        sampler: str = defaults.SAMPLER,
        steps: int | None = None,
        eta: float = 0.0,
        precision: str = defaults.PRECISION,
    ) -> None:
        sampler = concrete_sampler(model, sampler)
        if getattr(model, "training", False):
            raise ValueError("the model is in training mode (dropout); call model.eval() before sampling")
        self.model, self.features, self.missing = model, features, missing
        self.ids = torch.as_tensor(np.asarray(object_ids).astype(np.int64))
        self.n_samples, self.seed, self.sampler, self.eta = n_samples, seed, sampler, eta
        self.times = _times(model, sampler, steps)
        self.dtype = autocast_dtype(model.device, precision)

    def __len__(self) -> int:
        return len(self.ids)

    def __call__(self, lo: int, hi: int) -> torch.Tensor:
        model = self.model
        cond = model.embed_condition(self.features[lo:hi], self.missing[lo:hi])[:, None, :]
        noise = CounterNoise(self.seed, self.ids[lo:hi].to(model.device), self.n_samples, model.data_dim)
        with _autocast(model.device, self.dtype):
            return SAMPLERS[self.sampler](model, cond, noise, self.times, self.eta).float()

    def row_bytes(self) -> float:
        """Peak CUDA memory per row (galaxy x sample) of a chunk of PROBE_GALAXIES galaxies,
        measured once per model, sampler, grid, K, dtype and device."""
        device = self.model.device
        key = (id(self.model), self.sampler, tuple(self.times), self.n_samples, self.dtype, str(device))
        if key not in _ROW_BYTES:
            galaxies = min(len(self), PROBE_GALAXIES)
            torch.cuda.synchronize(device)
            before = torch.cuda.memory_allocated(device)
            torch.cuda.reset_peak_memory_stats(device)
            with torch.inference_mode():
                self(0, galaxies)
            _ROW_BYTES[key] = (torch.cuda.max_memory_allocated(device) - before) / (galaxies * self.n_samples)
        return _ROW_BYTES[key]

    def chunk_galaxies(self, batch_size: int | None = None) -> int:
        """Galaxies per chunk: ``batch_size`` rows, or ``chunk_rows`` (free GPU memory)."""
        rows = batch_size or chunk_rows(self.model.device, self.row_bytes)
        return max(1, rows // self.n_samples)


def sample(
    model: SamplerModel,
    features: Any,
    missing: Any,
    object_ids: Any,
    *,
    n_samples: int,
    seed: int,
    sampler: str = defaults.SAMPLER,
    steps: int | None = None,
    eta: float = 0.0,
    batch_size: int | None = None,
    precision: str = defaults.PRECISION,
) -> torch.Tensor:
    """(N, K) samples of x0 (standardised space) for each of N galaxies: (N, K, D) float32 on CPU.

    features: (N, F) raw ``photometric_features`` values (NaN for missing); missing:
    (N, B) bool; object_ids: (N,) int64, the noise keys. sampler: ddpm, ddim, dpmpp2m,
    student (``model`` a ``distill.StudentModel``: its own grid; steps, if given, must
    equal its evaluations) or auto (``concrete_sampler``: student for a student, else
    dpmpp2m); steps: network evaluations (default ``defaults.SAMPLER_STEPS``: all T for
    ddpm, 50 for ddim, 20 for dpmpp2m); eta: DDIM stochasticity. batch_size: rows
    (galaxies x samples) per chunk, None: ``chunk_rows`` (``defaults.SAMPLER_BATCH_ROWS``
    on the CPU, from the free memory on CUDA); chunks hold whole galaxies and never
    change the result on the CPU.
    precision: fp32, bf16 or fp16 autocast of the network on CUDA (``autocast_dtype``).
    ``model`` must be in eval mode. Inside the step loop nothing is copied between host
    and device: the noise is made on the model's device, times are Python floats.
    """
    chunks = ChunkSampler(
        model,
        features,
        missing,
        object_ids,
        n_samples=n_samples,
        seed=seed,
        sampler=sampler,
        steps=steps,
        eta=eta,
        precision=precision,
    )
    n = len(chunks)
    out = torch.empty((n, n_samples, model.data_dim), dtype=torch.float32)
    per_chunk = chunks.chunk_galaxies(batch_size)
    with torch.inference_mode():
        for lo in range(0, n, per_chunk):
            hi = min(n, lo + per_chunk)
            out[lo:hi] = chunks(lo, hi).cpu()
    return out


def _times(model: SamplerModel, sampler: str, steps: int | None) -> list[float]:
    """The sampler's time grid (``sample_times``, or a student's own)."""
    if sampler == defaults.STUDENT_SAMPLER:
        times = getattr(model, "times", None)
        if times is None:
            raise ValueError(
                "sampler 'student' needs a distilled student model (models.distill.StudentModel)"
            )
        if steps is not None and steps != len(times) - 1:
            raise ValueError(f"this student makes {len(times) - 1} evaluations, not {steps}")
        return list(times)
    return sample_times(model.schedule, steps or defaults.SAMPLER_STEPS[sampler] or model.schedule.timesteps)
