"""In-memory inference: a table of photometry -> diffusion samples -> per-object summaries.

``predict`` is the building block for notebooks (samples + summaries of a table);
``predict_columns`` is the per-partition unit of ``run``: it walks a partition in
batches of objects so that memory depends on the batch size, not the partition size,
and returns the output store's columns. Rows are never dropped: objects without usable
photometry get NaN outputs and flags.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from specdiff_catalog.features import photometric_features
from specdiff_catalog.flags import Flag
from specdiff_catalog.models.sampling import DEFAULT_PRECISION, sample
from specdiff_catalog.models.student_io import resolve_sampling
from specdiff_catalog.summaries import summarize

DEFAULT_N_SAMPLES = 100
DEFAULT_QUANTILES = (0.025, 0.05, 0.16, 0.25, 0.5, 0.75, 0.84, 0.95, 0.975)
DOMAIN_SIGMA = 6.0
"""A feature more than this many training standard deviations from the training mean
flags the object OUTSIDE_TRAINING_DOMAIN (it still gets a PDF)."""


@dataclass
class Prediction:
    """Samples and summaries for N objects.

    z_samples: (N, K) redshift samples (NaN rows where no PDF could be given);
    latent_samples: (N, K, S) spectral latents (S = 0 for a photo-z-only model);
    summaries: ``summaries.summarize`` output (z_quantiles (N, Q), z_median, ...);
    flags: (N,) uint16 ``Flag`` bits.
    """

    object_id: np.ndarray
    z_samples: np.ndarray
    latent_samples: np.ndarray
    summaries: dict[str, np.ndarray]
    flags: np.ndarray


def domain_flags(model: Any, values: np.ndarray, missing: np.ndarray) -> np.ndarray:
    """(N,) OUTSIDE_TRAINING_DOMAIN where a present feature lies > DOMAIN_SIGMA training std out."""
    std = model.standardisation
    with np.errstate(invalid="ignore"):
        pulls = np.abs((values - std.feature_mean) / std.feature_std)
    uses_missing = (missing.astype(np.float32) @ std.feature_bands.T.astype(np.float32)) > 0
    outside = np.where(uses_missing | ~np.isfinite(pulls), False, pulls > DOMAIN_SIGMA).any(axis=1)
    return np.where(outside, np.uint16(Flag.OUTSIDE_TRAINING_DOMAIN), np.uint16(0)).astype(np.uint16)


def predict(
    model: Any,
    table: Any,
    object_ids: np.ndarray | None = None,
    *,
    n_samples: int | None = None,
    seed: int = 0,
    sampler: str = "auto",
    steps: int | None = None,
    quantiles: tuple[float, ...] = DEFAULT_QUANTILES,
    precision: str = DEFAULT_PRECISION,
) -> Prediction:
    """Photo-z PDF samples, spectral latents and summaries for every row of ``table``.

    model: a loaded ``SpecdiffModel`` with a diffusion component. table: pandas,
    pyarrow or a dict of (N,) arrays with the model's band-set columns (fluxes in the
    band set's unit, e.g. nanomaggies; FLUX_IVAR_*; EBV or MW_TRANSMISSION_*).
    object_ids: (N,) int64 noise keys (default 0..N-1): an object's samples depend only
    on (seed, object id), not on the other rows. n_samples: samples per object (None:
    the default recorded with the model's students, else 100). sampler: "auto" (the model's default
    distilled student when it has one, else dpmpp2m), "student" (steps: which student,
    by its network evaluations) or any of ``sampling.SAMPLERS``. precision: the
    network's autocast on CUDA (``sampling.autocast_dtype``).
    """
    if model.diffusion is None:
        raise ValueError(f"{model.path}: the model has no diffusion component (train diffusion first)")
    network, sampler, steps, n_samples = sampler_model(model, sampler, steps, n_samples)
    feats = photometric_features(table, model.bands)
    n = len(feats.flags)
    ids = np.arange(n, dtype=np.int64) if object_ids is None else np.asarray(object_ids, dtype=np.int64)
    flags = feats.flags | domain_flags(model.diffusion, feats.values, feats.missing)
    usable = (flags & np.uint16(Flag.NO_PHOTOMETRY)) == 0
    dim = model.diffusion.standardisation.latent_mean.size
    z = np.full((n, n_samples), np.nan, dtype=np.float32)
    latent = np.full((n, n_samples, dim), np.nan, dtype=np.float32)
    if usable.any():
        with torch.inference_mode():
            x = sample(
                network,
                feats.values[usable],
                feats.missing[usable],
                ids[usable],
                n_samples=n_samples,
                seed=seed,
                sampler=sampler,
                steps=steps,
                precision=precision,
            )
            z_use, latent_use = (t.numpy() for t in model.diffusion.to_physical(x))
        z[usable], latent[usable] = z_use, latent_use
    failed = usable & ~(np.isfinite(z).all(axis=1) & np.isfinite(latent).all(axis=(1, 2)))
    flags = flags | np.where(failed, np.uint16(Flag.SAMPLER_FAILURE), np.uint16(0)).astype(np.uint16)
    z[failed], latent[failed] = np.nan, np.nan
    summaries = summarize(z, latent if dim else None, quantiles)
    return Prediction(object_id=ids, z_samples=z, latent_samples=latent, summaries=summaries, flags=flags)


def sampler_model(
    model: Any, sampler: str, steps: int | None, n_samples: int | None
) -> tuple[Any, str, int | None, int]:
    """(the network to sample, sampler, steps, n_samples) for ``predict``'s options
    (``student_io.resolve_sampling``: "auto" is the default student when there is one)."""
    sampler, steps, n_samples = resolve_sampling(model.config, sampler, steps, n_samples, DEFAULT_N_SAMPLES)
    if sampler != "student":
        return model.diffusion, sampler, steps, n_samples
    return model.students[steps], sampler, steps, n_samples


def predict_columns(
    model: Any,
    table: Any,
    object_ids: np.ndarray,
    *,
    batch_size: int = 2048,
    save_samples: int = 0,
    **options: Any,
) -> dict[str, np.ndarray]:
    """The output-store columns of every row (flags, z_quantiles, z_median, ..., latent,
    latent_std, and z_samples (N, save_samples) float16 when asked), computed
    ``batch_size`` objects at a time. options: those of ``predict``."""
    parts: list[dict[str, np.ndarray]] = []
    n = len(object_ids)
    for lo in range(0, n, batch_size):
        rows = slice(lo, min(lo + batch_size, n))
        chunk = {k: np.asarray(v)[rows] for k, v in _columns(table).items()}
        pred = predict(model, chunk, object_ids[rows], **options)
        columns = {"flags": pred.flags, **pred.summaries}
        if save_samples:
            columns["z_samples"] = pred.z_samples[:, :save_samples].astype(np.float16)
        parts.append(columns)
    if not parts:
        parts.append(_empty_columns(model, save_samples, options.get("quantiles", DEFAULT_QUANTILES)))
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _columns(table: Any) -> dict[str, Any]:
    """A table as a dict of column arrays (pandas, pyarrow or a mapping)."""
    if hasattr(table, "column_names"):
        return {name: table[name].to_numpy() for name in table.column_names}
    if hasattr(table, "columns"):
        return {name: table[name].to_numpy() for name in table.columns}
    return dict(table)


def _empty_columns(model: Any, save_samples: int, quantiles: tuple[float, ...]) -> dict[str, np.ndarray]:
    dim = model.diffusion.standardisation.latent_mean.size
    columns = {
        "flags": np.zeros(0, np.uint16),
        **summarize(
            np.zeros((0, 1), np.float32), np.zeros((0, 1, dim), np.float32) if dim else None, quantiles
        ),
    }
    if save_samples:
        columns["z_samples"] = np.zeros((0, save_samples), np.float16)
    return columns
