"""Training-set coverage of each object: how densely the training set populates its region
of the model's feature space (docs/coverage.md).

The space is the one the diffusion model is conditioned on: ``features.photometric_features``
(asinh magnitudes, colours, asinh S/N) standardised with the training mean and standard
deviation. The score of an object is a conformal p-value (Vovk et al. 2005) of its
k-nearest-neighbour distance to a reference sample of the training set:

    d_k(x)   = distance from x to its k-th nearest reference object
    score(x) = (1 + #{calibration objects c: d_k(c) >= d_k(x)}) / (1 + n_calibration)

with the calibration objects drawn from the training set's validation split (not in the
reference). For an object drawn like the training set the score is uniform on (0, 1], so
LOW_COVERAGE (score < ``threshold`` = 0.01) flags ~1% of such objects and far more of a
photometric sample that reaches where the spectroscopic selection did not. A band an
object lacks is left out of the distance: objects are compared in the subspace of the
features their usable bands give, with the reference and calibration objects that have
them (a cache holds the calibration distances of each missing-band pattern).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from specdiff_catalog import defaults
from specdiff_catalog.config import from_dict

if TYPE_CHECKING:  # torch only for the file round trip: the CLI builds its parser without it
    import torch

QUERY_CHUNK = 256  # query rows per distance block: 256 x 20,000 float64 = 41 MB


@dataclass(frozen=True)
class CoverageConfig:
    """k: the neighbour whose distance is the score's statistic; n_reference: training
    (train split) objects kept with the model; n_calibration: validation-split objects whose
    distances calibrate the score; threshold: LOW_COVERAGE below this score; seed: of the
    subsamples."""

    k: int = defaults.COVERAGE_K
    n_reference: int = defaults.COVERAGE_REFERENCE
    n_calibration: int = defaults.COVERAGE_CALIBRATION
    threshold: float = defaults.COVERAGE_THRESHOLD
    seed: int = defaults.SEED

    def __post_init__(self) -> None:
        if self.k < 1 or self.n_reference < self.k or self.n_calibration < 1 or not 0 < self.threshold < 1:
            raise ValueError(
                f"coverage config: need k >= 1, n_reference >= k, n_calibration >= 1, "
                f"0 < threshold < 1; got {self}"
            )

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "coverage config") -> CoverageConfig:
        return from_dict(cls, data, source=source)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def kth_distance(query: np.ndarray, reference: np.ndarray, k: int) -> np.ndarray:
    """(Q,) Euclidean distance from each query row (Q, D) to its k-th nearest reference row (R, D).

    float64, in blocks of QUERY_CHUNK queries (memory QUERY_CHUNK x R); NaN when R < k.
    """
    query = np.asarray(query, dtype=np.float64)
    reference = np.asarray(reference, dtype=np.float64)
    if len(reference) < k:
        return np.full(len(query), np.nan)
    ref_sq = (reference**2).sum(axis=1)
    out = np.empty(len(query))
    for lo in range(0, len(query), QUERY_CHUNK):
        q = query[lo : lo + QUERY_CHUNK]
        d2 = (q**2).sum(axis=1)[:, None] + ref_sq[None, :] - 2.0 * q @ reference.T
        out[lo : lo + len(q)] = np.partition(np.maximum(d2, 0.0), k - 1, axis=1)[:, k - 1]
    return np.sqrt(out)


class CoverageModel:
    """The reference and calibration samples, in standardised feature space, and the score.

    reference: (R, F), calibration: (C, F) standardised features (NaN where a band is missing;
    float32 in memory, float16 on disk); feature_mean, feature_std: (F,); feature_bands: (F, B) bool.
    """

    def __init__(
        self,
        config: CoverageConfig,
        reference: np.ndarray,
        calibration: np.ndarray,
        feature_mean: np.ndarray,
        feature_std: np.ndarray,
        feature_bands: np.ndarray,
    ) -> None:
        self.config = config
        self.reference = np.asarray(reference, dtype=np.float32)
        self.calibration = np.asarray(calibration, dtype=np.float32)
        self.feature_mean = np.asarray(feature_mean, dtype=np.float64)
        self.feature_std = np.asarray(feature_std, dtype=np.float64)
        self.feature_bands = np.asarray(feature_bands, dtype=bool)
        self._calibrated: dict[bytes, np.ndarray] = {}  # feature pattern -> sorted calibration d_k

    # --- building and storing ------------------------------------------------------------
    @classmethod
    def fit(
        cls,
        config: CoverageConfig,
        reference: np.ndarray,
        calibration: np.ndarray,
        feature_mean: np.ndarray,
        feature_std: np.ndarray,
        feature_bands: np.ndarray,
    ) -> CoverageModel:
        """From raw ``photometric_features`` values (NaN allowed) of the reference (R, F) and
        calibration (C, F) objects: standardised with feature_mean, feature_std (F,)."""
        empty = np.empty((0, len(feature_mean)))
        model = cls(config, empty, empty, feature_mean, feature_std, feature_bands)
        model.reference = model.standardise(reference).astype(np.float32)
        model.calibration = model.standardise(calibration).astype(np.float32)
        return model

    def state(self) -> dict[str, torch.Tensor]:
        """The tensors of coverage.safetensors. The samples are stored as float16: 3 significant
        digits of a standardised feature (1e-3 of a training standard deviation) are far below
        the photometric noise, and half the size keeps a 20,000-object reference at 0.6 MB."""
        import torch

        return {
            "reference": torch.as_tensor(self.reference.astype(np.float16)),
            "calibration": torch.as_tensor(self.calibration.astype(np.float16)),
            "feature_mean": torch.as_tensor(self.feature_mean),
            "feature_std": torch.as_tensor(self.feature_std),
            "feature_bands": torch.as_tensor(self.feature_bands.astype(np.uint8)),
        }

    @classmethod
    def from_state(cls, config: CoverageConfig, tensors: dict[str, torch.Tensor]) -> CoverageModel:
        expected = {"reference", "calibration", "feature_mean", "feature_std", "feature_bands"}
        if set(tensors) != expected:
            raise ValueError(f"coverage tensors {sorted(tensors)} are not {sorted(expected)}")
        return cls(
            config,
            *(
                tensors[name].numpy()
                for name in ("reference", "calibration", "feature_mean", "feature_std", "feature_bands")
            ),
        )

    # --- scoring -------------------------------------------------------------------------
    def standardise(self, values: np.ndarray) -> np.ndarray:
        """(N, F) float64 standardised features; non-finite -> NaN."""
        with np.errstate(invalid="ignore", over="ignore"):
            x = (np.asarray(values, dtype=np.float64) - self.feature_mean) / self.feature_std
        return np.where(np.isfinite(x), x, np.nan)

    def _calibration_distances(self, pattern: np.ndarray) -> np.ndarray:
        """Sorted d_k of the calibration objects that have every feature of ``pattern`` (F,) bool."""
        key = np.packbits(pattern).tobytes()
        if key not in self._calibrated:
            reference = self.reference[np.isfinite(self.reference[:, pattern]).all(axis=1)][:, pattern]
            calibration = self.calibration[np.isfinite(self.calibration[:, pattern]).all(axis=1)][:, pattern]
            d = kth_distance(calibration, reference, self.config.k)
            self._calibrated[key] = np.sort(d[np.isfinite(d)])
        return self._calibrated[key]

    def score(self, values: np.ndarray, missing: np.ndarray) -> np.ndarray:
        """(N,) float32 coverage scores in (0, 1] of raw features values (N, F) with the
        missing-band mask missing (N, B); NaN for an object without a usable feature, 0 where
        no training object has its usable features (nothing to compare with)."""
        x = self.standardise(values)
        uses_missing = (np.asarray(missing, dtype=np.float32) @ self.feature_bands.T.astype(np.float32)) > 0
        usable = np.isfinite(x) & ~uses_missing
        scores = np.full(len(x), np.nan)
        patterns, which = np.unique(usable, axis=0, return_inverse=True)
        for p, pattern in enumerate(patterns):
            rows = np.flatnonzero(which.reshape(-1) == p)
            if not pattern.any():
                continue
            calibration = self._calibration_distances(pattern)
            reference = self.reference[np.isfinite(self.reference[:, pattern]).all(axis=1)][:, pattern]
            d = kth_distance(x[np.ix_(rows, np.flatnonzero(pattern))], reference, self.config.k)
            beyond = len(calibration) - np.searchsorted(calibration, d, side="left")  # #{d_cal >= d}
            scores[rows] = np.where(
                np.isfinite(d) & (len(calibration) > 0), (1.0 + beyond) / (1.0 + len(calibration)), 0.0
            )
        return scores.astype(np.float32)

    def low(self, scores: np.ndarray) -> np.ndarray:
        """(N,) bool: scores below the threshold (NaN scores are not low: no photometry at all
        is flagged NO_PHOTOMETRY instead)."""
        with np.errstate(invalid="ignore"):
            return np.asarray(scores) < self.config.threshold
