"""The package's defaults, in one place: the CLI, the pipeline and the library functions read them here.

Change a default here and every entry point follows. Nothing here imports anything, so
any module (and ``--help``) can read it for free.
"""

from __future__ import annotations

from types import MappingProxyType

N_SAMPLES = 100
"""Diffusion samples per object (``run --n-samples``, ``inference.predict``)."""

BATCH_SIZE = 2048
"""Objects per sampler call on a worker (``run --batch-size``, ``inference.predict_columns``)."""

SAMPLER_BATCH_ROWS = 32768
"""Rows (galaxies x samples) per network call inside ``models.sampling.sample``."""

SAMPLER = "dpmpp2m"
"""The sampler ``run`` and the validation of a trained model use."""

SAMPLER_STEPS: MappingProxyType[str, int | None] = MappingProxyType({"dpmpp2m": 20, "ddim": 50, "ddpm": None})
"""Sampler name -> default network evaluations (None: all T steps). Its keys are the sampler
names the CLI offers; ``models.sampling.SAMPLERS`` implements exactly these (docs/diffusion.md)."""

SAMPLERS: tuple[str, ...] = tuple(SAMPLER_STEPS)

SEED = 0
"""Noise seed of sampling, training and baseline draws."""

BANDSET = "ls-grzw1w2"
"""Band set of ``prepare`` and of a photometry-only training file that names none."""

QUANTILES: tuple[float, ...] = (0.025, 0.05, 0.16, 0.25, 0.5, 0.75, 0.84, 0.95, 0.975)
"""PDF quantile levels stored by ``run``."""

PRESET = "small"
"""Model preset of every ``train`` job."""

TRAINING_Z_RANGE: tuple[float, float] = (0.0, 0.8)
"""Redshifts ``prepare`` keeps by default: z_min <= Z < z_max."""

QP_DZ = 0.005
"""Bin width in redshift of the histograms ``export qp`` writes (docs/output.md)."""
