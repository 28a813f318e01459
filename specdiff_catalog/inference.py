"""In-memory inference: a table of photometry -> diffusion samples -> per-object summaries.

``predict`` is the building block for notebooks (samples + summaries of a table);
``predict_columns`` is the per-partition unit of ``run``: it walks a partition in
batches of objects so that memory depends on the batch size, not the partition size,
and returns the model's columns of the output row (``io.columns.output_columns``).
Rows are never dropped: objects without usable photometry get NaN outputs and flags.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from specdiff_catalog import defaults
from specdiff_catalog.features import deredden, photometric_features
from specdiff_catalog.flags import Flag, flag_where
from specdiff_catalog.io.columns import POSITION_COLUMNS, output_columns
from specdiff_catalog.models import choose_sampling
from specdiff_catalog.models.sampling import sample
from specdiff_catalog.ppc import PhotometryCheck
from specdiff_catalog.summaries import summarize

if TYPE_CHECKING:
    from specdiff_catalog.models import SpecdiffModel
    from specdiff_catalog.models.diffusion import DiffusionModel

DOMAIN_SIGMA = 6.0
"""A feature more than this many training standard deviations from the training mean
flags the object OUTSIDE_TRAINING_DOMAIN (it still gets a PDF)."""


@dataclass
class Prediction:
    """Samples and summaries for N objects.

    z_samples: (N, K) redshift samples (NaN rows where no PDF could be given);
    latent_samples: (N, K, S) spectral latents (S = 0 for a photo-z-only model);
    summaries: ``summaries.summarize`` output (z_quantiles (N, Q), z_median, ...);
    flags: (N,) uint16 ``Flag`` bits; checks: the per-object checks of the model, (N,)
    each: ``coverage`` (the training-set coverage score, NaN without a coverage section) and,
    for a model with spectra, ``ppc_chi2``, ``ppc_dof``, ``ppc_pvalue`` (``ppc``).
    """

    object_id: np.ndarray
    z_samples: np.ndarray
    latent_samples: np.ndarray
    summaries: dict[str, np.ndarray]
    flags: np.ndarray
    checks: dict[str, np.ndarray]


def domain_flags(model: DiffusionModel, values: np.ndarray, missing: np.ndarray) -> np.ndarray:
    """(N,) OUTSIDE_TRAINING_DOMAIN where a present feature lies > DOMAIN_SIGMA training std out."""
    std = model.standardisation
    with np.errstate(invalid="ignore"):
        pulls = np.abs((values - std.feature_mean) / std.feature_std)
    uses_missing = (missing.astype(np.float32) @ std.feature_bands.T.astype(np.float32)) > 0
    outside = np.where(uses_missing | ~np.isfinite(pulls), False, pulls > DOMAIN_SIGMA).any(axis=1)
    return flag_where(outside, Flag.OUTSIDE_TRAINING_DOMAIN)


def predict(
    model: SpecdiffModel,
    table: Any,
    object_ids: np.ndarray | None = None,
    *,
    n_samples: int | None = None,
    seed: int = defaults.SEED,
    sampler: str = defaults.SAMPLER,
    steps: int | None = None,
    quantiles: tuple[float, ...] = defaults.QUANTILES,
    precision: str = defaults.PRECISION,
) -> Prediction:
    """Photo-z PDF samples, spectral latents and summaries for every row of ``table``.

    model: a loaded ``SpecdiffModel`` with a diffusion component. table: pandas,
    pyarrow or a dict of (N,) arrays with the model's band-set columns (fluxes in the
    band set's unit, e.g. nanomaggies; FLUX_IVAR_*; EBV or MW_TRANSMISSION_*).
    object_ids: (N,) int64 noise keys (default 0..N-1): an object's samples depend only
    on (seed, object id), not on the other rows. sampler, steps, n_samples: as for
    ``models.choose_sampling`` (default: the model's production student and its sample
    count when it has students, else ``defaults.TEACHER_SAMPLER`` with
    ``defaults.N_SAMPLES``). precision: the network's autocast on CUDA
    (``sampling.autocast_dtype``).
    """
    diffusion, bands = model.diffusion, model.bands
    if diffusion is None or bands is None:
        raise ValueError(f"{model.path}: the model has no diffusion component (train diffusion first)")
    chosen = choose_sampling(model.config, sampler, steps, n_samples)
    n_samples = chosen.n_samples
    feats = photometric_features(table, bands)
    n = len(feats.flags)
    ids = np.arange(n, dtype=np.int64) if object_ids is None else np.asarray(object_ids, dtype=np.int64)
    flags = feats.flags | domain_flags(diffusion, feats.values, feats.missing)
    coverage = np.full(n, np.nan, dtype=np.float32)
    if model.coverage is not None:
        coverage = model.coverage.score(feats.values, feats.missing)
        flags |= flag_where(model.coverage.low(coverage), Flag.LOW_COVERAGE)
    usable = (flags & np.uint16(Flag.NO_PHOTOMETRY)) == 0
    dim = diffusion.standardisation.latent_dim
    z = np.full((n, n_samples), np.nan, dtype=np.float32)
    latent = np.full((n, n_samples, dim), np.nan, dtype=np.float32)
    if usable.any():
        with torch.inference_mode():
            x = sample(
                model.network(chosen.sampler, chosen.steps),
                feats.values[usable],
                feats.missing[usable],
                ids[usable],
                n_samples=n_samples,
                seed=seed,
                sampler=chosen.sampler,
                steps=chosen.steps,
                precision=precision,
            )
            z_use, latent_use = (t.numpy() for t in diffusion.to_physical(x))
        z[usable], latent[usable] = z_use, latent_use
    failed = usable & ~(np.isfinite(z).all(axis=1) & np.isfinite(latent).all(axis=(1, 2)))
    z[failed], latent[failed] = np.nan, np.nan
    negative = (z < 0).any(axis=1)  # only transforms without positive support (log1p) give z < 0
    z[z < 0] = 0.0
    flags = flags | flag_where(failed, Flag.SAMPLER_FAILURE) | flag_where(negative, Flag.Z_CLIPPED)
    summaries = summarize(z, latent if dim else None, quantiles)
    checks = {"coverage": coverage}
    if dim and model.autoencoder is not None:
        # built per call: 1 ms once the band set's filter curves are loaded (cached on the BandSet)
        result = PhotometryCheck.of(model)(deredden(table, bands), z, latent)
        checks |= {"ppc_chi2": result.chi2, "ppc_dof": result.dof, "ppc_pvalue": result.pvalue}
        with np.errstate(invalid="ignore"):
            flags = flags | flag_where(result.pvalue < defaults.PPC_PVALUE, Flag.PHOTOMETRY_NOT_REPRODUCED)
    return Prediction(
        object_id=ids,
        z_samples=z,
        latent_samples=latent,
        summaries=summaries,
        flags=flags,
        checks=checks,
    )


def predict_columns(
    model: SpecdiffModel,
    table: Any,
    object_ids: np.ndarray,
    *,
    batch_size: int = defaults.BATCH_SIZE,
    save_samples: int = 0,
    n_samples: int | None = None,
    seed: int = defaults.SEED,
    sampler: str = defaults.SAMPLER,
    steps: int | None = None,
    quantiles: tuple[float, ...] = defaults.QUANTILES,
    precision: str = defaults.PRECISION,
) -> dict[str, np.ndarray]:
    """The model's columns of the output row for every row of ``table``: every column of
    ``io.columns.output_columns`` but the catalog's own (POSITION_COLUMNS) and ``valid``,
    in its dtype (z_samples: the first ``save_samples`` samples, when asked), computed
    ``batch_size`` objects at a time. The other options are ``predict``'s."""
    if model.diffusion is None:
        raise ValueError(f"{model.path}: the model has no diffusion component (train diffusion first)")
    spec = {
        name: column
        for name, column in output_columns(
            len(quantiles), model.diffusion.standardisation.latent_dim, save_samples
        ).items()
        if name not in POSITION_COLUMNS and name != "valid"
    }
    parts: list[dict[str, np.ndarray]] = [{name: column.empty() for name, column in spec.items()}]
    n = len(object_ids)
    columns = columns_of(table)
    for lo in range(0, n, batch_size):
        rows = slice(lo, min(lo + batch_size, n))
        chunk = {k: np.asarray(v)[rows] for k, v in columns.items()}
        pred = predict(
            model,
            chunk,
            object_ids[rows],
            n_samples=n_samples,
            seed=seed,
            sampler=sampler,
            steps=steps,
            quantiles=quantiles,
            precision=precision,
        )
        values = {
            "flags": pred.flags,
            "z_samples": pred.z_samples[:, :save_samples],
            **pred.summaries,
            **pred.checks,
        }
        parts.append({name: values[name].astype(column.dtype) for name, column in spec.items()})
    return {name: np.concatenate([p[name] for p in parts]) for name in spec}


def columns_of(table: Any) -> Mapping[str, Any]:
    """A table as a dict of column arrays (pandas, pyarrow or a mapping)."""
    if hasattr(table, "column_names"):
        return {name: table[name].to_numpy() for name in table.column_names}
    if hasattr(table, "columns"):
        return {name: table[name].to_numpy() for name in table.columns}
    return dict(table)
