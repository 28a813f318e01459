"""RAIL integration (optional extra ``[rail]``: pz-rail-base + qp): an Informer and an Estimator.

``from specdiff_catalog.rail import SpecdiffInformer, SpecdiffEstimator`` imports RAIL and
the stages, which live where RAIL looks for every pz-rail-* package's stages:
``rail.estimation.algos.specdiff`` (shipped by this distribution in the ``rail`` namespace
package, found by ``rail.stages.import_and_attach_all()``). Nothing in the core package
imports this subpackage, so ``specdiff-catalog`` runs without RAIL; the conversions at the
boundary (``specdiff_catalog.rail.boundary``) need no RAIL. docs/rail.md has a runnable example.
"""

from __future__ import annotations

from typing import Any

_STAGES = ("SpecdiffInformer", "SpecdiffEstimator", "SpecdiffModelHandle")


def __getattr__(name: str) -> Any:
    if name in _STAGES:
        try:
            from rail.estimation.algos import specdiff as stages
        except ImportError as err:
            raise ImportError(
                f"specdiff_catalog.rail.{name} needs RAIL: pip install 'specdiff-catalog[rail]' ({err})"
            ) from err
        return getattr(stages, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = list(_STAGES)
