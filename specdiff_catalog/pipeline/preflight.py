"""What ``run`` checks in the client before any worker or store exists: options, model, catalog schema.

Every problem found here is a one-line error (exit 2 from the CLI) and nothing has been
started or written yet: no Dask worker, no Zarr store. A catalog that does not fit the
model is ONE error naming every missing, mistyped or ambiguous column, read from the
catalog's schema (``dataset/_common_metadata``, else the first file's footer) without
opening a data page. What only the data can show (null or duplicate ids, an unreadable
file) is found per partition on the workers, and fails that partition by name.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from specdiff_catalog import defaults
from specdiff_catalog.bands import AmbiguousColumnError, BandSet, MissingColumnError, resolve_columns
from specdiff_catalog.io.catalog import (
    ID_CANDIDATES,
    SPATIAL_INDEX,
    Catalog,
    demo_catalog_dir,
    id_columns,
    id_type_problem,
    open_catalog,
)
from specdiff_catalog.io.paths import PathLike

if TYPE_CHECKING:
    from specdiff_catalog.models.store import ModelConfig
    from specdiff_catalog.pipeline.cluster import ClusterConfig
    from specdiff_catalog.pipeline.run import RunOptions


class OptionError(ValueError):
    """Run options that cannot work; the message names each one and its allowed values."""


class SchemaMismatchError(ValueError):
    """A catalog whose columns do not fit the model; names every missing, mistyped or ambiguous column."""


@dataclass(frozen=True)
class Preflight:
    """What the checks opened, for the run to use: the catalog, the model directory and its config."""

    catalog: Catalog
    model_dir: Path
    config: ModelConfig


def preflight(
    input_path: PathLike | None,
    model_dir: str | Path | None,
    options: RunOptions,
    cluster: ClusterConfig,
    *,
    storage_options: Mapping[str, Any] | None = None,
) -> Preflight:
    """Check the options, the model and the catalog's schema, in that order; start nothing.

    input_path None: the bundled demo catalog; model_dir None: the bundled model.
    storage_options: for the catalog's fsspec filesystem. Raises OptionError,
    ModelDirectoryError, PathError, CatalogError / FileNotFoundError or
    SchemaMismatchError, each with a one-line message.
    """
    from specdiff_catalog.models.store import default_model_dir

    check_options(options, cluster)
    model = Path(model_dir) if model_dir is not None else default_model_dir()
    config = check_model(model)
    catalog = open_catalog(input_path if input_path is not None else demo_catalog_dir(), storage_options)
    assert config.bands is not None  # check_model refuses a model without a band set
    check_schema(catalog.schema, config.bands, options.id_column, where=f"{catalog.url} (model {model})")
    return Preflight(catalog, model, config)


# --- options ---------------------------------------------------------------------------------


def check_options(options: RunOptions, cluster: ClusterConfig) -> None:
    """OptionError naming every option out of range (CLI spelling), in one line."""
    from specdiff_catalog.summaries import check_levels

    problems = [
        f"{flag} must be >= {low} (got {value})"
        for flag, value, low in (
            ("--n-samples", options.n_samples, 1),
            ("--batch-size", options.batch_size, 1),
            ("--steps", options.steps, 1),
            ("--save-samples", options.save_samples, 0),
            ("--n-workers", cluster.n_workers, 1),
            ("--threads-per-worker", cluster.threads_per_worker, 1),
        )
        if value is not None and value < low
    ]
    if options.save_samples > options.n_samples >= 1:
        problems.append(
            f"--save-samples {options.save_samples} is more than --n-samples {options.n_samples} "
            "(it keeps that many of the samples drawn)"
        )
    if options.sampler not in defaults.SAMPLERS:
        problems.append(f"--sampler {options.sampler!r} is not one of {', '.join(defaults.SAMPLERS)}")
    try:
        check_levels(options.quantiles)
    except ValueError as err:
        problems.append(f"--quantiles: {err}")
    problems += _memory_problems(cluster.memory_limit)
    if problems:
        raise OptionError("; ".join(problems))


def _memory_problems(limit: str | None) -> list[str]:
    """Why ``limit`` is not a Dask worker memory limit ("auto", "4GiB", "500MB", a fraction
    of the machine's memory such as "0.5", "0" for none), or []."""
    from distributed.worker_memory import parse_memory_limit

    try:
        parsed = parse_memory_limit(limit, 1, total_cores=1, logger=logging.getLogger(__name__))
    except (ValueError, TypeError) as err:
        return [f"--memory-limit {limit!r} is not a memory size ({err}; e.g. 4GiB, 500MB, 0.5 or auto)"]
    if parsed is not None and parsed < 0:
        return [f"--memory-limit {limit!r} is negative"]
    return []


# --- model -----------------------------------------------------------------------------------


def check_model(model_dir: Path) -> ModelConfig:
    """The model's config after checking, in the client, everything a worker would trip on:
    config.json (a JSON object of a known format), a diffusion component and a band set,
    latent sizes and band counts that agree between components, and every recorded file
    present, unaltered (sha256) and loadable with its config. ModelDirectoryError, one line."""
    from specdiff_catalog.models.store import ModelDirectoryError, read_config

    config = read_config(model_dir)
    if config.diffusion is None:
        raise ModelDirectoryError(
            f"{model_dir}: the model has no diffusion component (train diffusion first)"
        )
    if config.bands is None:
        raise ModelDirectoryError(f"{model_dir}: config.json records no band set (train diffusion first)")
    diffusion, autoencoder = config.diffusion, config.autoencoder
    problems = []
    if autoencoder is not None and diffusion.latent_size not in (0, autoencoder.latent_size):
        problems.append(
            f"the diffusion component samples {diffusion.latent_size} latent dimensions but the "
            f"autoencoder has {autoencoder.latent_size}"
        )
    if diffusion.standardisation.n_bands != len(config.bands.bands):
        problems.append(
            f"the diffusion component was trained on {diffusion.standardisation.n_bands} bands but the "
            f"band set {config.bands.name} has {len(config.bands.bands)}"
        )
    if problems:
        raise ModelDirectoryError(f"{model_dir}/config.json: {'; '.join(problems)}")
    _load_components(model_dir, config)
    return config


def _load_components(model_dir: Path, config: ModelConfig) -> None:
    """Load every component on the CPU once, as the workers will; ModelDirectoryError naming
    the file whose weights do not fit its config (wrong shapes, wrong format)."""
    from specdiff_catalog.models import load_autoencoder, load_baseline, load_diffusion
    from specdiff_catalog.models.store import ModelDirectoryError

    loaders = [
        (config.autoencoder, lambda: load_autoencoder(model_dir, config=config)),
        (config.diffusion, lambda: load_diffusion(model_dir, config=config)),
        (config.baseline, lambda: load_baseline(model_dir, config=config)),
    ]
    for section, load in loaders:
        if section is None:
            continue
        try:
            load()
        except ModelDirectoryError:
            raise
        except Exception as err:  # any failure to build a component: the model cannot run
            lines = [line.strip() for line in str(err).splitlines() if line.strip()]
            reason = " ".join(lines)[:300] or type(err).__name__
            raise ModelDirectoryError(
                f"{model_dir / section.weights.file}: does not load with its config.json section "
                f"({type(err).__name__}: {reason})"
            ) from err


# --- the catalog's schema --------------------------------------------------------------------


def check_schema(schema: pa.Schema, bands: BandSet, id_column: str | None, *, where: str) -> None:
    """SchemaMismatchError naming, in one line, every column the band set or the ids need that
    is missing, not numeric (fluxes, ivars, transmissions, EBV, RA/DEC) or not an integer
    (ids, _healpix_29), and every pair of columns that differ only in case."""
    problems = schema_problems(schema, bands, id_column)
    if problems:
        raise SchemaMismatchError(
            f"{where}: the catalog does not fit band set {bands.name}: {'; '.join(problems)}"
        )


def schema_problems(schema: pa.Schema, bands: BandSet, id_column: str | None) -> list[str]:
    """The problems ``check_schema`` reports, grouped: missing, ambiguous, mistyped."""
    names = [n for n in schema.names if not n.startswith("__index_level_")]
    types = {name: _value_type(schema.field(name).type) for name in names}
    required = [c for b in bands.bands for c in (b.flux, b.ivar)]
    transmissions = [b.mw_transmission for b in bands.bands]
    optional_numbers = [*transmissions, bands.ebv_column, "RA", "DEC"]
    used = [*required, *optional_numbers, SPATIAL_INDEX, *ID_CANDIDATES, *([id_column] if id_column else [])]

    ambiguous = _ambiguous(names, used)
    if ambiguous:
        return [f"columns that differ only in case: {', '.join(ambiguous)} (rename or drop one of each)"]
    found = resolve_columns(names, used)
    missing = [c for c in required if c not in found]
    if not all(t in found for t in transmissions) and bands.ebv_column not in found:
        missing.append(f"{bands.ebv_column} (or every one of {', '.join(transmissions)})")
    try:
        ids = id_columns(names, id_column, "catalog")
    except MissingColumnError:
        ids = []
        missing.append(
            f"{id_column} (--id-column)"
            if id_column
            else f"{ID_CANDIDATES[0]} (or {', '.join(ID_CANDIDATES[1:])} to pack the ids, or --id-column)"
        )
    mistyped = [
        f"{found[c]} is {types[found[c]]}, not a number"
        for c in [*required, *optional_numbers]
        if c in found and not _is_number(types[found[c]])
    ]
    if SPATIAL_INDEX in found and not pa.types.is_integer(types[found[SPATIAL_INDEX]]):
        mistyped.append(f"{found[SPATIAL_INDEX]} is {types[found[SPATIAL_INDEX]]}, not an integer")
    mistyped += [p for c in ids if (p := id_type_problem(found[c], types[found[c]]))]
    problems = []
    if missing:
        problems.append(f"missing column(s) {', '.join(missing)}")
    if mistyped:
        problems.append(f"wrong type: {', '.join(mistyped)}")
    return problems


def _ambiguous(names: list[str], used: list[str]) -> list[str]:
    """'A and a' for every used name that matches two or more columns case-insensitively."""
    out = []
    for name in dict.fromkeys(n.upper() for n in used):
        try:
            resolve_columns(names, [name])
        except AmbiguousColumnError:
            out.append(" and ".join(n for n in names if n.upper() == name))
    return out


def _value_type(dtype: pa.DataType) -> pa.DataType:
    """The type of the values (a dictionary-encoded column's value type)."""
    return dtype.value_type if pa.types.is_dictionary(dtype) else dtype


def _is_number(dtype: pa.DataType) -> bool:
    return pa.types.is_integer(dtype) or pa.types.is_floating(dtype)
