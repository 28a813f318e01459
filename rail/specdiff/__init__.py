"""specdiff-catalog's RAIL stages, found by ``rail.stages.import_and_attach_all()`` (RailEnv
imports every package of the ``rail`` namespace, as for each pz-rail-* package)."""

from rail.estimation.algos.specdiff import SpecdiffEstimator, SpecdiffInformer, SpecdiffModelHandle

__all__ = ["SpecdiffEstimator", "SpecdiffInformer", "SpecdiffModelHandle"]
