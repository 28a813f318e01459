"""specdiff-catalog: photo-z PDFs and rest-frame spectra for HEALPix catalogs.

A SPENDER-style spectrum autoencoder learns a latent space of rest-frame spectra;
a conditional latent diffusion model samples [latent, redshift] given broadband
fluxes. See docs/architecture.md for the modules and the data's path through them.

The notebook API (docs/api.md)::

    from specdiff_catalog import load_model, predict, run_catalog, open_store

Each name is imported from its module on first use (module ``__getattr__``), so
``import specdiff_catalog`` imports nothing heavy.
"""

from __future__ import annotations

import importlib

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (~10 ms)

__version__ = "0.1.0"

_LAZY = {
    "load_model": "specdiff_catalog.models",
    "predict": "specdiff_catalog.api",
    "Photoz": "specdiff_catalog.api",
    "open_store": "specdiff_catalog.api",
    "run_catalog": "specdiff_catalog.pipeline.run",
    "RunOptions": "specdiff_catalog.pipeline.run",
    "RunReport": "specdiff_catalog.pipeline.run",
    "ClusterConfig": "specdiff_catalog.pipeline.cluster",
}

__all__ = [
    "ClusterConfig",
    "Photoz",
    "RunOptions",
    "RunReport",
    "__version__",
    "load_model",
    "open_store",
    "predict",
    "run_catalog",
]

if TYPE_CHECKING:
    from typing import Any

    from specdiff_catalog.api import Photoz, open_store, predict
    from specdiff_catalog.models import load_model
    from specdiff_catalog.pipeline.cluster import ClusterConfig
    from specdiff_catalog.pipeline.run import RunOptions, RunReport, run_catalog


def __getattr__(name: str) -> Any:
    """The public API's names, imported from their modules when first asked for."""
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
