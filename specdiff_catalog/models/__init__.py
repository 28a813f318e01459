"""The trained model: a model directory loaded into one ``SpecdiffModel``.

``load_model(MODEL)`` reads config.json, checks the sha256 of every weight file it
loads (``models.store``) and rebuilds each trained component; nothing is unpickled.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from specdiff_catalog.bands import BandSet
from specdiff_catalog.models import store

log = logging.getLogger(__name__)


@dataclass
class SpecdiffModel:
    """A loaded model directory.

    path: the directory; config: its config.json; bands: the band set the photometric
    components were trained with (None if the directory has no ``bands`` section);
    autoencoder: the spectrum autoencoder (``models.autoencoder.SpectrumAutoencoder``);
    diffusion: the conditional diffusion model (``models.diffusion.DiffusionModel``, eval mode);
    baseline: the tree baseline (``models.baseline.BaselineModel``); each None until trained.
    students: distilled few-step students of the diffusion model by network evaluations
    (``models.distill.StudentModel``; empty until ``train distill``).
    """

    path: Path
    config: dict[str, Any]
    bands: BandSet | None
    autoencoder: Any = None
    diffusion: Any = None
    baseline: Any = None
    students: dict[int, Any] = field(default_factory=dict)

    @property
    def id(self) -> str:
        """sha256 of config.json (which records the sha256 of every weight file)."""
        return store.model_id(self.path)

    @property
    def simulated(self) -> bool:
        """True when the model was trained on simulated (mock) data."""
        return bool(self.config.get("simulated", False))


def simulation_notice(config: dict[str, Any], path: str | Path) -> str | None:
    """The one-line statement every user of a model trained on simulations must see, or None."""
    if not config.get("simulated", False):
        return None
    bundled = Path(path).resolve() == store.default_model_dir().resolve()
    what = "the bundled default model" if bundled else f"model {path}"
    return (
        f"NOTE: {what} was trained on SIMULATED galaxies (a specdiff-catalog mock survey), "
        "not on real spectra; its photo-z and spectra are a demonstration, not science-grade for real data."
    )


def load_autoencoder(model_dir: str | Path, device: str | torch.device = "cpu"):
    """The verified spectrum autoencoder of a model directory, in eval mode on ``device``."""
    from specdiff_catalog.models.autoencoder import AutoencoderConfig, SpectrumAutoencoder

    section = store.read_config(model_dir).get("autoencoder")
    if section is None:
        raise store.ModelDirectoryError(f"{model_dir}: config.json has no autoencoder section")
    config = AutoencoderConfig.from_dict(
        section["architecture"], source=f"{model_dir}/config.json autoencoder"
    )
    tensors = store.load_tensors(model_dir, section.get("file", "autoencoder.safetensors"))
    return SpectrumAutoencoder.from_state(config, tensors).to(device).eval()


def load_model(
    model_dir: str | Path | None = None, device: str | torch.device = "cpu", *, notice: bool = True
) -> SpecdiffModel:
    """Load a model directory (default: the bundled model) with every component it has.

    Each weight file's sha256 must match config.json, or ``store.ModelDirectoryError``
    says which file was altered. Components without a section stay None. A model trained
    on simulations logs ``simulation_notice`` as a warning (``notice=False``: not, for
    callers that have said it already, e.g. ``run``'s workers).
    """
    path = Path(model_dir) if model_dir is not None else store.default_model_dir()
    config = store.read_config(path)
    message = simulation_notice(config, path) if notice else None
    if message:
        log.warning(message)
    bands = (
        BandSet.from_dict(config["bands"], source=f"{path}/config.json bands") if "bands" in config else None
    )
    autoencoder = load_autoencoder(path, device) if "autoencoder" in config else None
    diffusion = baseline = None
    students = {}
    if "diffusion" in config:
        from specdiff_catalog.models.diffusion import DiffusionModel
        from specdiff_catalog.models.student_io import load_students

        diffusion = DiffusionModel.from_model_dir(path, device)
        students = load_students(path, config, diffusion, device)
    if "baseline" in config:
        from specdiff_catalog.models.baseline import BaselineModel

        baseline = BaselineModel.from_model_dir(path)
    return SpecdiffModel(
        path=path,
        config=config,
        bands=bands,
        autoencoder=autoencoder,
        diffusion=diffusion,
        baseline=baseline,
        students=students,
    )
