"""The gradient-boosted tree baseline: quantiles of log(1 + z) given photometric features.

One CatBoost model with the ``MultiQuantile`` loss predicts a grid of quantiles of
t = log(1 + z) (quantiles commute with the monotone map back to z). Sorting the
predicted quantiles fixes crossings; linear interpolation between them (extrapolated
over the outermost level to the training range) is the quantile function, optionally
recalibrated on the validation split (Kuleshov et al. 2018). ``sample`` draws from it,
so the metric code scores the tree and the diffusion model the same way. ``models.store``
writes the booster in CatBoost's own binary format (FlatBuffers, no pickle).
docs/baseline.md explains the choices.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from specdiff_catalog import defaults
from specdiff_catalog.config import ConfigError, from_dict, load_preset
from specdiff_catalog.summaries import check_levels

if TYPE_CHECKING:  # catboost is imported where a booster is made (``fit``, ``models.store``)
    import catboost

CALIBRATION_GRID = np.linspace(0.0, 1.0, 101)  # levels u at which the recalibration map is stored


@dataclass(frozen=True)
class BaselineConfig:
    """Hyper-parameters of the tree baseline (presets/baseline/*.toml).

    quantile_levels: levels strictly inside (0, 1), increasing, at least 2, predicted by one
    MultiQuantile model; iterations: maximum number of trees; learning_rate, depth,
    l2_leaf_reg: CatBoost's; early_stopping_rounds: stop when the validation loss has not
    improved for this many trees (needs validation data); recalibrate: map the levels
    through the validation PIT distribution so the quantiles are calibrated.
    """

    quantile_levels: tuple[float, ...]
    iterations: int = 2000
    learning_rate: float = 0.1
    depth: int = 6
    l2_leaf_reg: float = 3.0
    early_stopping_rounds: int = 100
    recalibrate: bool = True

    def __post_init__(self) -> None:
        levels = check_levels(self.quantile_levels)
        if levels.size < 2:
            raise ConfigError("baseline quantile_levels needs at least 2 levels")
        object.__setattr__(self, "quantile_levels", tuple(float(v) for v in levels))

    @classmethod
    def load(cls, name_or_path: str | Path = defaults.PRESET) -> BaselineConfig:
        """A bundled preset by name (``tiny``, ``small``) or a user TOML/JSON file by path."""
        source = f"baseline preset {name_or_path}"
        try:
            return from_dict(cls, load_preset("baseline", name_or_path), source=source)
        except ConfigError:
            raise
        except ValueError as err:  # from __post_init__: bad quantile levels
            raise ConfigError(f"{source}: {err}") from err

    def catboost_params(self, *, seed: int, threads: int) -> dict[str, Any]:
        """Keyword arguments of ``catboost.CatBoostRegressor``."""
        alphas = ",".join(repr(a) for a in self.quantile_levels)
        return {
            "loss_function": f"MultiQuantile:alpha={alphas}",
            "iterations": self.iterations,
            "learning_rate": self.learning_rate,
            "depth": self.depth,
            "l2_leaf_reg": self.l2_leaf_reg,
            "random_seed": seed,
            "thread_count": threads,
            "allow_writing_files": False,  # no catboost_info/ in the working directory
            "verbose": False,
        }


def _interp_rows(knots: np.ndarray, values: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Per-row piecewise-linear function through (knots (L,), values (N, L)) at u (N, M) -> (N, M)."""
    j = np.clip(np.searchsorted(knots, u, side="right") - 1, 0, knots.size - 2)
    frac = (u - knots[j]) / (knots[j + 1] - knots[j])
    lo = np.take_along_axis(values, j, axis=1)
    return lo + frac * (np.take_along_axis(values, j + 1, axis=1) - lo)


def _cdf_rows(knots: np.ndarray, values: np.ndarray, t: np.ndarray) -> np.ndarray:
    """(N,) inverse of ``_interp_rows``: the level at which row i's quantile function reaches t_i."""
    j = np.clip((values <= t[:, None]).sum(axis=1) - 1, 0, knots.size - 2)
    lo = np.take_along_axis(values, j[:, None], axis=1)[:, 0]
    hi = np.take_along_axis(values, j[:, None] + 1, axis=1)[:, 0]
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = np.clip(np.where(hi > lo, (t - lo) / (hi - lo), 1.0), 0.0, 1.0)
    level = knots[j] + frac * (knots[j + 1] - knots[j])
    return np.where(t < values[:, 0], 0.0, np.where(t >= values[:, -1], 1.0, level))


class BaselineModel:
    """CatBoost MultiQuantile regression of t = log(1 + z) on photometric features.

    features everywhere: (N, F) float32 ``specdiff_catalog.features.photometric_features(...).values``
    (NaN for missing bands, handled by CatBoost: a missing value goes with the smallest
    ones at every split). Rows with no finite feature get NaN outputs.
    """

    def __init__(self, config: BaselineConfig, feature_names: list[str] | None = None):
        self.config = config
        self.feature_names = list(feature_names) if feature_names is not None else None
        self._booster: catboost.CatBoostRegressor | None = None
        self._t_range: tuple[float, float] | None = None
        self._calibration: np.ndarray | None = None  # levels p = G^-1(u) at CALIBRATION_GRID

    @classmethod
    def from_state(
        cls,
        config: BaselineConfig,
        feature_names: list[str],
        booster: catboost.CatBoostRegressor,
        t_range: tuple[float, float],
        calibration: tuple[Sequence[float], Sequence[float]] | None,
    ) -> BaselineModel:
        """Rebuild a fitted model from its parts (``models.store`` reads them): the booster,
        the training range of t and the recalibration map as (u, level) or None."""
        model = cls(config, feature_names)
        model._booster, model._t_range = booster, (float(t_range[0]), float(t_range[1]))
        if calibration is not None:
            u, level = calibration
            if not np.allclose(u, CALIBRATION_GRID):
                raise ValueError("baseline calibration grid does not match this version's")
            model._calibration = np.asarray(level, dtype=np.float64)
        return model

    @property
    def levels(self) -> np.ndarray:
        """(Q,) the quantile levels of ``predict``."""
        return np.asarray(self.config.quantile_levels)

    @property
    def booster(self) -> catboost.CatBoostRegressor:
        """The fitted CatBoost model."""
        if self._booster is None:
            raise RuntimeError("the baseline model has not been fitted or loaded")
        return self._booster

    @property
    def t_range(self) -> tuple[float, float]:
        """(min, max) of t = log(1 + z) over the training set."""
        if self._t_range is None:
            raise RuntimeError("the baseline model has not been fitted or loaded")
        return self._t_range

    @property
    def calibration(self) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
        """The recalibration map (u, level) at CALIBRATION_GRID, or None."""
        if self._calibration is None:
            return None
        return tuple(CALIBRATION_GRID.tolist()), tuple(self._calibration.tolist())

    def _matrix(self, features: np.ndarray) -> np.ndarray:
        x = np.asarray(features, dtype=np.float32)
        n_features = len(self.feature_names) if self.feature_names is not None else None
        if x.ndim != 2 or (n_features is not None and x.shape[1] != n_features):
            raise ValueError(f"features must be (N, {n_features or 'F'}), got shape {x.shape}")
        return x

    def fit(
        self,
        features: np.ndarray,
        z: np.ndarray,
        *,
        val: tuple[np.ndarray, np.ndarray] | None = None,
        seed: int = 0,
        threads: int = -1,
    ) -> BaselineModel:
        """Train on features (N, F) and redshifts z (N,); ``val`` = (features, z) of the
        validation split drives early stopping and the recalibration. ``threads``: CPU
        threads (-1: all). Returns self."""
        import catboost

        x, t = self._matrix(features), _log1p_checked(z, "z")
        booster = catboost.CatBoostRegressor(**self.config.catboost_params(seed=seed, threads=threads))
        if val is None:
            booster.fit(x, t)
        else:
            xv, tv = self._matrix(val[0]), _log1p_checked(val[1], "validation z")
            booster.fit(
                x,
                t,
                eval_set=(xv, tv),
                early_stopping_rounds=self.config.early_stopping_rounds,
                use_best_model=True,
            )
        self._booster = booster
        self._t_range = (float(t.min()), float(t.max()))
        self._calibration = None
        if val is not None and self.config.recalibrate:
            knots, values = self._quantile_function(xv)
            pit = _cdf_rows(knots, values, tv)
            self._calibration = _recalibration_map(pit[np.isfinite(pit)])
        return self

    def _quantile_function(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Knots (Q+2,) = [0, levels, 1] and per-row values (N, Q+2) of t = log(1+z): the
        predicted quantiles sorted, extended linearly to levels 0 and 1 and clamped there
        to the training range (never inside the outermost predicted quantile)."""
        levels = self.levels
        q = np.sort(np.asarray(self.booster.predict(x), dtype=np.float64).reshape(len(x), -1), axis=1)
        lo_slope = (q[:, 1] - q[:, 0]) / (levels[1] - levels[0])
        hi_slope = (q[:, -1] - q[:, -2]) / (levels[-1] - levels[-2])
        t_min, t_max = self.t_range
        q0 = np.clip(q[:, 0] - levels[0] * lo_slope, np.minimum(t_min, q[:, 0]), q[:, 0])
        q1 = np.clip(q[:, -1] + (1 - levels[-1]) * hi_slope, q[:, -1], np.maximum(t_max, q[:, -1]))
        values = np.column_stack([q0, q, q1])
        values[~np.isfinite(x).any(axis=1)] = np.nan  # no photometry at all: no prediction
        return np.concatenate([[0.0], levels, [1.0]]), values

    def _calibrated(self, u: np.ndarray) -> np.ndarray:
        """Levels of the raw quantile function that the recalibrated function puts at u."""
        return u if self._calibration is None else np.interp(u, CALIBRATION_GRID, self._calibration)

    def quantiles(self, features: np.ndarray, levels: np.ndarray) -> np.ndarray:
        """(N, L) redshift quantiles at any levels (L,) in [0, 1]."""
        knots, values = self._quantile_function(self._matrix(features))
        u = np.broadcast_to(
            self._calibrated(np.asarray(levels, dtype=np.float64)), (len(values), len(levels))
        )
        return np.expm1(_interp_rows(knots, values, u))

    def predict(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Point estimate z_point (N,) (the median) and z_quantiles (N, Q) at ``levels``."""
        q = self.quantiles(features, np.concatenate([[0.5], self.levels]))
        return q[:, 0], q[:, 1:]

    def sample(self, features: np.ndarray, n_samples: int, seed: int = 0) -> np.ndarray:
        """(N, n_samples) float32 redshift draws: u ~ U(0, 1) from ``seed``, through the
        (recalibrated) piecewise-linear quantile function. NaN rows stay NaN."""
        knots, values = self._quantile_function(self._matrix(features))
        u = self._calibrated(np.random.default_rng(seed).random((len(values), n_samples)))
        return np.expm1(_interp_rows(knots, values, u)).astype(np.float32)

    @property
    def best_iteration(self) -> int | None:
        return None if self._booster is None else self._booster.get_best_iteration()


def _log1p_checked(z: np.ndarray, what: str) -> np.ndarray:
    z = np.asarray(z, dtype=np.float64)
    bad = ~(np.isfinite(z) & (z > -1))
    if bad.any():
        raise ValueError(f"{what}: {int(bad.sum())} value(s) not finite or <= -1 (first: {z[bad][0]!r})")
    return np.log1p(z)


def _recalibration_map(pit: np.ndarray) -> np.ndarray:
    """G^-1 at CALIBRATION_GRID from validation PIT values: the raw levels p such that
    a fraction u of validation redshifts lies below the raw quantile at p; ends pinned
    to 0 and 1 so the recalibrated function keeps the full support."""
    p = np.quantile(pit, CALIBRATION_GRID)
    p[0], p[-1] = 0.0, 1.0
    return np.maximum.accumulate(p)
