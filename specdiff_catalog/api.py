"""The Python API for notebooks: photometry tables in, pandas and xarray out.

``import specdiff_catalog`` gives these names lazily (the package ``__init__`` imports
each from its module on first use: ``load_model`` from ``models``, ``run_catalog``,
``RunOptions`` and ``RunReport`` from ``pipeline.run``, ``ClusterConfig`` from
``pipeline.cluster``, ``predict``, ``Photoz`` and ``open_store`` from here), so
``import specdiff_catalog`` and the CLI's ``--help`` stay fast::

    from specdiff_catalog import load_model, predict, run_catalog, open_store

    model = load_model()                 # the bundled model (trained on simulations)
    pz = predict(model, table)           # a Legacy Surveys table: pandas, pyarrow or dict
    pz.to_pandas()                       # one row per object: z_median, z_q0.025, ..., flags
    pz.z_samples                         # (N, K) redshift samples
    spectra = pz.spectra(observed="desi")  # decoded rest- and observed-frame spectra
    report = run_catalog("CATALOG", "pz.zarr", model.path)   # a whole HATS catalog on Dask
    ds = open_store("pz.zarr")           # its results as an xarray Dataset

docs/api.md has runnable examples. Defaults come from ``defaults.py``, as for the CLI.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from specdiff_catalog import __version__, defaults
from specdiff_catalog.summaries import SampleCountWarning, sample_count_note

if TYPE_CHECKING:  # torch, dask and xarray are imported when a function needs them
    import xarray as xr

    from specdiff_catalog.io.spectra_file import ReconstructedSpectra
    from specdiff_catalog.models import SpecdiffModel

ID_COLUMNS = ("OBJECT_ID", "RELEASE", "BRICKID", "OBJID")


@dataclass
class Photoz:
    """Photo-z PDFs and spectral latents of N objects (``predict``'s result).

    object_id: (N,) int64, the noise keys and the index of ``to_pandas()``.
    quantile_levels: (Q,) levels of ``z_quantiles``.
    z_samples: (N, K) float32 redshift samples (NaN rows: no PDF, see ``flags``).
    z_quantiles: (N, Q); z_median, z_mode, z_mean, z_std: (N,) float32 redshift
        summaries (docs/metrics.md), NaN where no PDF.
    latent, latent_std: (N, S) float32 spectral latent near the redshift mode and its
        spread (S = 0 for a photo-z-only model).
    flags: (N,) uint16 ``flags.Flag`` bits.
    latent_samples: (N, K, S) float32 when ``predict(..., latent_samples=True)``, else None.
    model: the ``SpecdiffModel`` that made them (``spectra()`` decodes with it).
    """

    object_id: np.ndarray
    quantile_levels: np.ndarray
    z_samples: np.ndarray
    z_quantiles: np.ndarray
    z_median: np.ndarray
    z_mode: np.ndarray
    z_mean: np.ndarray
    z_std: np.ndarray
    latent: np.ndarray
    latent_std: np.ndarray
    flags: np.ndarray
    model: SpecdiffModel = field(repr=False)
    latent_samples: np.ndarray | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return self.object_id.size

    @property
    def has_pdf(self) -> np.ndarray:
        """(N,) bool: the object got a PDF (finite samples)."""
        return np.isfinite(self.z_median)

    def to_pandas(self) -> pd.DataFrame:
        """One row per object, indexed by ``object_id``: z_median, z_mode, z_mean, z_std,
        one column per quantile level (``z_q0.025``, ..., as docs/output.md's joins name
        them) and flags. Redshifts are dimensionless; NaN where no PDF."""
        frame = pd.DataFrame(
            {
                "z_median": self.z_median,
                "z_mode": self.z_mode,
                "z_mean": self.z_mean,
                "z_std": self.z_std,
                **{f"z_q{q:g}": self.z_quantiles[:, j] for j, q in enumerate(self.quantile_levels)},
                "flags": self.flags,
            },
            index=pd.Index(self.object_id, name="object_id"),
        )
        return frame

    def to_xarray(self) -> xr.Dataset:
        """The same as an xarray Dataset with the store's names and dimensions: (object,)
        summaries and flags, z_quantiles (object, quantile), z_samples (object, sample),
        latent / latent_std (object, latent_dim); ``object_id`` and ``quantile`` are
        coordinates."""
        import xarray as xr

        data = {
            "z_quantiles": (("object", "quantile"), self.z_quantiles),
            **{name: ("object", getattr(self, name)) for name in ("z_median", "z_mode", "z_mean", "z_std")},
            "flags": ("object", self.flags),
            "z_samples": (("object", "sample"), self.z_samples),
        }
        if self.latent.shape[1]:
            data |= {
                name: (("object", "latent_dim"), getattr(self, name)) for name in ("latent", "latent_std")
            }
        return xr.Dataset(
            data,
            coords={"object_id": ("object", self.object_id), "quantile": self.quantile_levels},
            attrs={"model": self.model.id, "software_version": __version__},
        )

    def spectra(
        self, *, redshift: str = "median", observed: str | np.ndarray | None = None
    ) -> ReconstructedSpectra:
        """Rest-frame spectra decoded from ``latent`` with the model's autoencoder, Dn4000, and
        with ``observed`` ("desi": the 7781-pixel DESI grid, "model", or a (P,) grid in
        Angstrom) the same spectra redshifted to z_median or z_mode (``redshift``).

        Flux is F_lambda over its median in the rest window 5300-5850 A (dimensionless:
        a latent holds a spectrum's shape, not its brightness); objects without a PDF get
        NaN. The result writes itself as FITS or Zarr with ``io.spectra_file.write_spectra``
        (docs/output.md; specutils reads the FITS).
        """
        from specdiff_catalog.reconstruct import decode_spectra

        autoencoder = self.model.autoencoder
        if autoencoder is None or not self.latent.shape[1]:
            raise ValueError(f"{self.model.path}: the model has no autoencoder (a photo-z-only model)")
        return decode_spectra(
            autoencoder,
            self.latent,
            object_id=self.object_id,
            row=np.arange(len(self), dtype=np.int64),
            flags=self.flags,
            z_median=self.z_median,
            z_mode=self.z_mode,
            redshift=redshift,
            observed=observed,
            provenance={
                "store": "",
                "model": self.model.id,
                "model_path": str(self.model.path),
                "simulated": self.model.config.provenance.simulated,
                "software_version": __version__,
                "deredden": autoencoder.config.deredden,
            },
        )


def predict(
    model: SpecdiffModel | str | Path | None,
    table: Any,
    *,
    id_column: str | None = None,
    n_samples: int = defaults.N_SAMPLES,
    quantiles: tuple[float, ...] = defaults.QUANTILES,
    seed: int = defaults.SEED,
    sampler: str = defaults.SAMPLER,
    steps: int | None = None,
    batch_size: int = defaults.BATCH_SIZE,
    latent_samples: bool = False,
) -> Photoz:
    """Photo-z PDFs (samples and summaries) and spectral latents for every row of ``table``.

    model: a loaded ``SpecdiffModel`` (``load_model``; load it once), a model directory,
        or None for the bundled model (trained on simulations).
    table: a pandas DataFrame, pyarrow Table or dict of (N,) arrays with the model's
        band-set columns in any letter case: FLUX_{band} in the band set's unit
        (nanomaggies for Legacy Surveys, AB: m = 22.5 - 2.5 log10 f), FLUX_IVAR_{band}
        (1 / nanomaggies^2), and EBV (mag) or MW_TRANSMISSION_{band}.
    id_column: the object-id column; default OBJECT_ID, else the Legacy Surveys packing
        RELEASE << 40 | BRICKID << 16 | OBJID, else the row numbers 0..N-1. The ids key
        each object's noise: its PDF depends on (seed, id) only, not on the other rows.
    n_samples: K samples per object; below ``summaries.min_samples(quantiles)`` (39 for
        the default levels) a ``SampleCountWarning`` says the outer quantiles are clamped.
    quantiles, seed, sampler, steps: as ``run`` (``defaults.py``); batch_size: objects per
        sampler call (memory); latent_samples: also keep the (N, K, S) latent samples.
    Rows are never dropped: an object without usable photometry gets NaN and flags.
    """
    from specdiff_catalog.inference import columns_of
    from specdiff_catalog.inference import predict as predict_table
    from specdiff_catalog.models import SpecdiffModel, load_model

    loaded = model if isinstance(model, SpecdiffModel) else load_model(model)
    note = sample_count_note(quantiles, n_samples)
    if note:
        warnings.warn(note, SampleCountWarning, stacklevel=2)
    columns = {name: np.asarray(values) for name, values in columns_of(table).items()}
    n = len(next(iter(columns.values()))) if columns else 0
    ids = _object_ids(columns, n, id_column)
    parts = []
    for lo in range(0, n, batch_size):
        rows = slice(lo, min(lo + batch_size, n))
        part = predict_table(
            loaded,
            {name: values[rows] for name, values in columns.items()},
            ids[rows],
            n_samples=n_samples,
            seed=seed,
            sampler=sampler,
            steps=steps,
            quantiles=quantiles,
        )
        parts.append(
            {
                "z_samples": part.z_samples,
                "flags": part.flags,
                **part.summaries,
                **({"latent_samples": part.latent_samples} if latent_samples else {}),
            }
        )
    if not parts:
        raise ValueError("predict needs a table with at least one row")
    joined = {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}
    width = joined["z_samples"].shape[0], 0
    return Photoz(
        object_id=ids,
        quantile_levels=np.asarray(quantiles, dtype=np.float64),
        z_samples=joined["z_samples"],
        z_quantiles=joined["z_quantiles"],
        z_median=joined["z_median"],
        z_mode=joined["z_mode"],
        z_mean=joined["z_mean"],
        z_std=joined["z_std"],
        latent=joined.get("latent", np.zeros(width, np.float32)),
        latent_std=joined.get("latent_std", np.zeros(width, np.float32)),
        flags=joined["flags"],
        model=loaded,
        latent_samples=joined.get("latent_samples"),
    )


def _object_ids(columns: dict[str, np.ndarray], n: int, id_column: str | None) -> np.ndarray:
    """(N,) int64 ids: ``id_column``, OBJECT_ID or the RELEASE/BRICKID/OBJID packing (as ``run``),
    else the row numbers."""
    from specdiff_catalog.bands import resolve_columns
    from specdiff_catalog.io.catalog import object_ids

    wanted = [id_column] if id_column else list(ID_COLUMNS)
    found = resolve_columns(list(columns), wanted)
    if id_column is None and "OBJECT_ID" not in found and len(found) < 3:
        return np.arange(n, dtype=np.int64)
    frame = pd.DataFrame({name: columns[name] for name in found.values()})
    return object_ids(frame, id_column, where="the table")


def open_store(path: str | Path, storage_options: dict[str, Any] | None = None) -> xr.Dataset:
    """The results of a ``run`` output store as an xarray Dataset: one entry per object of the
    done partitions, no padding rows (a warning counts objects of failed or pending
    partitions, which are left out).

    Variables as docs/output.md lists them, with CF ``units`` / ``long_name``: z_quantiles
    (object, quantile), z_median, z_mode, z_mean, z_std (object,) dimensionless redshift,
    latent / latent_std (object, latent_dim), flags (object,) uint16, ra / dec (object,)
    deg, z_samples (object, sample) when the run kept them; ``object_id`` and ``quantile``
    are coordinates. Lazily loaded (dask): ``ds["z_median"].values`` reads that array only.
    storage_options: for fsspec URLs (s3://, gs://, ...).
    """
    from specdiff_catalog.io.store import open_dataset

    return open_dataset(path, storage_options)
