"""The model directory: config.json plus weight files whose sha256 the config records.

Layout (docs/formats.md)::

    MODEL/config.json              {"format_version", "software_version", "simulated",
                                    "bands", "files": {filename: sha256}, <component>: {...}}
    MODEL/autoencoder.safetensors  tensors of the spectrum autoencoder
    MODEL/diffusion.safetensors    tensors of the conditional diffusion model
    MODEL/baseline.cbm             the gradient-boosted baseline (CatBoost's FlatBuffers format)

Every component writes its own section of config.json. Reading verifies each file's
sha256 before anything is parsed, and nothing is ever unpickled.
"""

from __future__ import annotations

import hashlib
import json
import os
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from specdiff_catalog import __version__

CONFIG = "config.json"
FORMAT_VERSION = 1


class ModelDirectoryError(ValueError):
    """A model directory that is missing, incomplete or has been altered."""


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def default_model_dir() -> Path:
    """The model bundled with the package (trained on the simulated mock survey)."""
    return Path(str(resources.files("specdiff_catalog") / "data" / "default_model"))


def read_config(model_dir: str | Path) -> dict[str, Any]:
    """config.json of a model directory; a clear error if it is not one."""
    path = Path(model_dir) / CONFIG
    if not path.exists():
        raise ModelDirectoryError(f"{model_dir} is not a model directory (no {CONFIG})")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ModelDirectoryError(f"{path}: not valid JSON: {err}") from err


def update_config(model_dir: str | Path, **sections: Any) -> dict[str, Any]:
    """Create or update config.json with the given top-level sections; returns the result."""
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    path = model_dir / CONFIG
    config = read_config(model_dir) if path.exists() else {"format_version": FORMAT_VERSION, "files": {}}
    config.update(sections, software_version=__version__)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(config, indent=2, sort_keys=True, default=float))
    os.replace(tmp, path)
    return config


def _record(model_dir: Path, filename: str) -> None:
    config = read_config(model_dir) if (model_dir / CONFIG).exists() else {}
    files = config.get("files", {}) | {filename: sha256_file(model_dir / filename)}
    update_config(model_dir, files=files)


def save_tensors(model_dir: str | Path, filename: str, tensors: dict[str, torch.Tensor]) -> None:
    """Write ``tensors`` to MODEL/filename (safetensors) and record its sha256."""
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(model_dir / filename))
    _record(model_dir, filename)


def save_bytes(model_dir: str | Path, filename: str, data: bytes) -> None:
    """Write a non-tensor file (e.g. the baseline's JSON) and record its sha256."""
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / filename).write_bytes(data)
    _record(model_dir, filename)


def verified_path(model_dir: str | Path, filename: str) -> Path:
    """Path of a recorded file after checking its sha256 against config.json."""
    model_dir = Path(model_dir)
    expected = read_config(model_dir).get("files", {}).get(filename)
    path = model_dir / filename
    if expected is None:
        raise ModelDirectoryError(f"{model_dir}: {filename} is not recorded in {CONFIG}")
    if not path.exists():
        raise ModelDirectoryError(f"{model_dir}: {filename} is missing")
    actual = sha256_file(path)
    if actual != expected:
        raise ModelDirectoryError(
            f"{path}: sha256 {actual[:12]}... does not match {expected[:12]}... recorded in {CONFIG}; "
            "the file was altered or corrupted, refusing to load it"
        )
    return path


def load_tensors(
    model_dir: str | Path, filename: str, device: str | torch.device = "cpu"
) -> dict[str, torch.Tensor]:
    """Tensors of a verified safetensors file (no code is executed while loading)."""
    return load_file(str(verified_path(model_dir, filename)), device=str(device))


def model_id(model_dir: str | Path) -> str:
    """A sha256 identifying the model: of config.json, which records every file's sha256."""
    return sha256_file(Path(model_dir) / CONFIG)
