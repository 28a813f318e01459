"""The package's defaults, in one place: the CLI, the pipeline and the library functions read them here.

Change a default here and every entry point follows. Nothing here imports anything, so
any module (and ``--help``) can read it for free.
"""

from __future__ import annotations

from types import MappingProxyType

N_SAMPLES = 100
"""Diffusion samples per object when neither the caller nor the model says otherwise: a model
with distilled students records its own production count (``models.store.ProductionSetting``),
which ``run`` and ``inference.predict`` use when they sample its default student."""

BATCH_SIZE = 2048
"""Objects per sampler call on a worker (``run --batch-size``, ``inference.predict_columns``)."""

SAMPLER_BATCH_ROWS = 32768
"""Rows (galaxies x samples) per network call inside ``models.sampling.sample`` on the CPU (on a
GPU the chunk is sized from the free memory)."""

SAMPLER = "auto"
"""The sampler ``run`` and ``inference.predict`` use: the model's production sampler, i.e. its
default distilled student (``train distill``) when it has one, else ``TEACHER_SAMPLER``."""

TEACHER_SAMPLER = "dpmpp2m"
"""The diffusion network's own sampler: "auto" without a student, the validation of a trained
diffusion model, and the reference the distilled students are measured against."""

SAMPLER_STEPS: MappingProxyType[str, int | None] = MappingProxyType({"dpmpp2m": 20, "ddim": 50, "ddpm": None})
"""Teacher sampler name -> default network evaluations (None: all T steps) (docs/diffusion.md)."""

STUDENT_SAMPLER = "student"
"""A distilled few-step student (docs/distillation.md); ``--steps`` picks one by its network
evaluations (default: the model's production student)."""

SAMPLERS: tuple[str, ...] = ("auto", *SAMPLER_STEPS, STUDENT_SAMPLER)
"""Every name ``--sampler`` accepts; ``models.sampling.SAMPLERS`` implements all but "auto"."""

PRECISION = "fp32"
"""Autocast dtype of the network on CUDA (the CPU always runs float32): fp32 until bf16 is
measured to keep the quality (docs/performance.md, benchmarks/gpu_check.sh)."""

PRECISIONS: tuple[str, ...] = ("fp32", "bf16", "fp16")
"""Every name ``--precision`` accepts (``models.sampling.PRECISIONS`` maps them to dtypes)."""

SEED = 0
"""Noise seed of sampling, training and baseline draws."""

BANDSET = "ls-grzw1w2"
"""Band set of ``prepare`` and of a photometry-only training file that names none."""

QUANTILES: tuple[float, ...] = (0.025, 0.05, 0.16, 0.25, 0.5, 0.75, 0.84, 0.95, 0.975)
"""PDF quantile levels stored by ``run``."""

PRESET = "small"
"""Model preset of every ``train`` job."""

TRAINING_Z_RANGE: tuple[float, float | None] = (0.0, None)
"""Redshifts ``prepare`` keeps by default: z_min <= Z < z_max, None: no upper cut. Every GALAXY
with a good redshift is kept (DESI's reach 0 < z < ~1.7); z < 0 is not a galaxy redshift."""

CUT_WARNING_FRACTION = 0.03
"""``prepare`` warns (stderr and trainset.json) when one cut removes more than this fraction."""

COVERAGE_K = 10
"""The neighbour whose distance the training-set coverage score ranks (docs/coverage.md)."""

COVERAGE_REFERENCE = 20000
"""Training (train split) objects a model keeps for its coverage score."""

COVERAGE_CALIBRATION = 5000
"""Validation-split objects whose neighbour distances calibrate the coverage score."""

COVERAGE_THRESHOLD = 0.01
"""LOW_COVERAGE below this coverage score: ~1% of objects drawn like the training set."""

PPC_DRAWS = 8
"""Posterior draws per object decoded by the posterior-predictive check of the photometry."""

PPC_FLUX_FLOOR = 0.03
"""Fractional error of a predicted band flux added in quadrature in the check's chi^2: what
the decoder, the fibre-to-total colour difference and flux calibration leave (docs/coverage.md),
for a model without floors calibrated on its validation split (``PPC_CALIBRATION``)."""

PPC_CALIBRATION = 2000
"""Validation objects whose posterior draws calibrate the check's per-band floors (``train coverage``)."""

PPC_PVALUE = 0.001
"""PHOTOMETRY_NOT_REPRODUCED below this posterior-predictive p-value."""

QP_DZ = 0.005
"""Bin width in redshift of the histograms ``export qp`` writes (docs/output.md)."""
