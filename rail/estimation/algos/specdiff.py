"""specdiff-catalog's RAIL stages: train the photo-z-only model from a RAIL table, estimate qp PDFs.

``SpecdiffInformer`` (a ``CatInformer``) converts a RAIL training table (magnitudes, the
``photometry`` group of an HDF5 file) to the band set's fluxes, writes it as a photometry
+ Z Parquet file and runs ``train_diffusion`` in photo-z-only mode; its model is the
trained model directory, stored by ``SpecdiffModelHandle`` as a ZIP of config.json and
the safetensors weights (no pickle, unlike RAIL's default model files).
``SpecdiffEstimator`` (a ``CatEstimator``) loads that model (sha256-checked), draws
``n_samples`` redshifts per object and returns them as a qp ``hist`` ensemble on RAIL's
z grid, with ancil ``zmode``, ``zmedian``, ``zmean`` and ``flags``.

This module sits in RAIL's namespace package, as every pz-rail-* package's stages do:
``rail.stages.import_and_attach_all()`` imports ``rail.specdiff``, which imports this
module, whose classes register themselves with ceci when defined; a ceci pipeline runs
them as ``python -m ceci rail.estimation.algos.specdiff.SpecdiffInformer``. The
conversions are in ``specdiff_catalog.rail.boundary``; docs/rail.md shows the stages in use.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from ceci.config import StageParameter as Param
from rail.core.common_params import SHARED_PARAMS
from rail.core.data import ModelHandle, TableHandle
from rail.estimation.estimator import CatEstimator
from rail.estimation.informer import CatInformer

from specdiff_catalog.bands import BandSet
from specdiff_catalog.inference import predict
from specdiff_catalog.models import load_model
from specdiff_catalog.rail.boundary import (
    MagnitudeColumns,
    magnitudes_to_fluxes,
    read_model_archive,
    samples_to_ensemble,
    scratch_dir,
    training_table,
    write_model_archive,
)

__all__ = ["SpecdiffEstimator", "SpecdiffInformer", "SpecdiffModelHandle"]


class SpecdiffModelHandle(ModelHandle):
    """A specdiff model: in memory the model directory's Path, on disk a ZIP (see
    ``write_model_archive``); reading also accepts a model directory (e.g. one made by
    ``specdiff-catalog train``)."""

    suffix = "zip"

    @classmethod
    def _open(cls, path: str, **kwargs: Any) -> Path:
        if kwargs.get("mode", "r") == "w":
            raise NotImplementedError("use SpecdiffModelHandle.write(), not open(mode='w')")
        return read_model_archive(path)

    @classmethod
    def _read(cls, path: str, **kwargs: Any) -> Path:
        return read_model_archive(path)

    @classmethod
    def _write(cls, data: Path, path: str, **kwargs: Any) -> None:
        write_model_archive(data, path)


def _table(data: Any, groupname: str) -> Any:
    """The table inside an HDF5 group when ``groupname`` is set (RAIL's hdf5_groupname)."""
    return data[groupname] if groupname else data


def _columns(config: Any) -> MagnitudeColumns:
    return MagnitudeColumns(
        mags=tuple(config.bands),
        errs=tuple(config.err_bands),
        limits=dict(config.mag_limits),
        nondetect_val=float(config.nondetect_val),
    )


_PHOTOMETRY_OPTIONS = {
    "bands": SHARED_PARAMS,
    "err_bands": SHARED_PARAMS,
    "mag_limits": SHARED_PARAMS,
    "nondetect_val": SHARED_PARAMS,
    "id_col": SHARED_PARAMS,
}


class SpecdiffInformer(CatInformer):
    """Train the conditional diffusion model, photo-z-only, on a RAIL training table.

    ``bands``/``err_bands`` name the magnitude columns in the order of ``band_set``'s bands
    (default: RAIL's LSST ugrizy columns and this package's ``lsst`` preset); the model
    output is a ``SpecdiffModelHandle``.
    """

    name = "SpecdiffInformer"
    config_options = CatInformer.config_options.copy()
    config_options.update(
        redshift_col=SHARED_PARAMS,
        **_PHOTOMETRY_OPTIONS,
        band_set=Param(str, "lsst", msg="band preset name or TOML/JSON file that bands/err_bands map onto"),
        preset=Param(str, "photoz", msg="diffusion preset (tiny, small, photoz, paper) or TOML/JSON file"),
        epochs=Param(int, 0, msg="training epochs; 0: the preset's"),
        seed=Param(int, 0, msg="random seed of the training"),
        device=Param(str, "auto", msg="auto, cpu or cuda[:N]"),
        flux_noise=Param(float, 0.0, msg="extra training flux noise, in units of the quoted errors"),
    )
    outputs: ClassVar = [("model", SpecdiffModelHandle)]

    def run(self) -> None:
        from specdiff_catalog.training.diffusion import train_diffusion

        config = self.config
        bandset = BandSet.load(config.band_set)
        data = _table(self.get_data("input"), config.hdf5_groupname)
        table = training_table(data, bandset, _columns(config), config.redshift_col, config.id_col)
        work = scratch_dir("specdiff-rail-train-")
        table.to_parquet(work / "train.parquet", index=False)
        result = train_diffusion(
            work / "train.parquet",
            work / "model",
            preset=config.preset,
            epochs=config.epochs or None,
            device=config.device,
            seed=config.seed,
            no_spectra=True,
            flux_noise=config.flux_noise,
            bands=config.band_set,
            progress=False,
        )
        if not result.finished:
            raise RuntimeError(f"training stopped at epoch {len(result.history)}; nothing to write")
        self.add_data("model", work / "model")


class SpecdiffEstimator(CatEstimator):
    """Photo-z PDFs of a RAIL table from a specdiff model, as a qp ``hist`` ensemble.

    The model (``model``: a ``SpecdiffModelHandle``, its ZIP or a model directory) fixes the
    band set; ``bands``/``err_bands`` name the table's magnitude columns in its band order.
    Each object's ``n_samples`` redshift samples are keyed by its ``id_col`` (else its row
    number), so its PDF does not depend on chunking.
    """

    name = "SpecdiffEstimator"
    config_options = CatEstimator.config_options.copy()
    config_options.update(
        **_PHOTOMETRY_OPTIONS,
        n_samples=Param(int, 100, msg="diffusion samples per object (as run's --n-samples)"),
        seed=Param(int, 0, msg="seed of the per-object sampling noise"),
        sampler=Param(str, "dpmpp2m", msg="sampler: dpmpp2m, ddim or ddpm"),
        steps=Param(int, 0, msg="sampler steps; 0: the sampler's default"),
    )
    inputs: ClassVar = [("model", SpecdiffModelHandle), ("input", TableHandle)]

    def open_model(self, **kwargs: Any) -> Any:
        path = super().open_model(**kwargs)
        model = load_model(path)
        if model.diffusion is None or model.bands is None:
            raise ValueError(f"{path}: no trained diffusion model with a band set")
        self._specdiff, self._bands = model, model.bands
        return path

    def _process_chunk(self, start: int, end: int, data: Any, first: bool) -> None:
        model, config = self._specdiff, self.config
        fluxes = magnitudes_to_fluxes(data, self._bands, _columns(config))
        ids = (
            np.asarray(data[config.id_col], dtype=np.int64)
            if config.id_col in data
            else np.arange(start, end, dtype=np.int64)
        )
        prediction = predict(
            model,
            fluxes,
            ids,
            n_samples=config.n_samples,
            seed=config.seed,
            sampler=config.sampler,
            steps=config.steps or None,
        )
        ensemble = samples_to_ensemble(
            prediction.z_samples, np.linspace(config.zmin, config.zmax, config.nzbins)
        )
        summaries = prediction.summaries
        ensemble.set_ancil(
            {
                "zmode": summaries["z_mode"].astype(np.float64),
                "zmedian": summaries["z_median"].astype(np.float64),
                "zmean": summaries["z_mean"].astype(np.float64),
                "flags": prediction.flags.astype(np.int32),
            }
        )
        self._do_chunk_output(ensemble, start, end, first, data=data)
