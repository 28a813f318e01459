"""Synthetic broadband photometry of spectra with a band set's filter curves (speclite).

Each band's response R(lambda) is taken where it is at least ``SUPPORT_FRACTION`` of its
peak (its support; outside it lies less than 1% of the photon-weighted response of every
bundled filter, e.g. the 0.8% red leak of DECam g) and sampled on its own grid. The AB flux
density of a spectrum F_lambda in band b is

    f_nu,b = integral(F_lambda R lambda dlambda) / integral(R c / lambda dlambda)

(photon-counting detector), computed as a weighted sum over the grid (trapezoid rule):
``SyntheticPhotometry.weights`` (P,) per band, zero outside the band's support. Fluxes here
are proportional to f_nu with the same factor in every band (c and the unit of F_lambda
are left out), which is all a colour or a fit with a free amplitude needs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from specdiff_catalog.bands import BandSet

SUPPORT_FRACTION = 0.01
"""A band's support: where its response is at least this fraction of its peak."""


@dataclass(frozen=True)
class SyntheticPhotometry:
    """Band filter curves on one observed grid.

    names: (B,) band names; wave: (P,) observed-frame Angstrom, the bands' grids one after
    the other; weights: (P, B) so that fluxes (N, B) = F_lambda(wave) (N, P) @ weights;
    support: (B, 2) [first, last] Angstrom of each band's support; band_of: (P,) which band
    each grid point belongs to.
    """

    names: tuple[str, ...]
    wave: np.ndarray
    weights: np.ndarray
    support: np.ndarray
    band_of: np.ndarray

    @classmethod
    def from_bandset(
        cls, bandset: BandSet, step: float, bands: list[int] | None = None
    ) -> SyntheticPhotometry:
        """The filters of ``bandset`` (or the band indices ``bands`` of it) on grids of ``step`` Angstrom."""
        chosen = list(range(len(bandset.bands))) if bands is None else list(bands)
        filters = bandset.filters
        waves, weights, support, band_of = [], [], [], []
        for column, index in enumerate(chosen):
            curve = filters[index]
            w, r = (
                np.asarray(curve.wavelength, dtype=np.float64),
                np.asarray(curve.response, dtype=np.float64),
            )
            above = np.flatnonzero(r >= SUPPORT_FRACTION * r.max())
            lo, hi = w[above[0]], w[above[-1]]
            grid = np.linspace(lo, hi, int(np.ceil((hi - lo) / step)) + 1)
            response = np.interp(grid, w, r)
            trapezoid = np.full(len(grid), (hi - lo) / max(len(grid) - 1, 1))  # the rule's weights:
            trapezoid[[0, -1]] *= 0.5  # full steps inside, half steps at the two ends
            numerator = response * grid * trapezoid
            denominator = float((response / grid * trapezoid).sum())
            column_weights = np.zeros((len(grid), len(chosen)))
            column_weights[:, column] = numerator / denominator
            waves.append(grid)
            weights.append(column_weights)
            support.append((lo, hi))
            band_of.append(np.full(len(grid), column))
        return cls(
            names=tuple(bandset.bands[i].name for i in chosen),
            wave=np.concatenate(waves),
            weights=np.concatenate(weights),
            support=np.asarray(support, dtype=np.float64),
            band_of=np.concatenate(band_of),
        )

    def fluxes(self, flux_lambda: np.ndarray) -> np.ndarray:
        """(N, B) band fluxes (proportional to f_nu) of spectra F_lambda (N, P) sampled on ``wave``."""
        return np.asarray(flux_lambda, dtype=np.float64) @ self.weights


def best_amplitude_chi2(
    observed: np.ndarray, ivar: np.ndarray, predicted: np.ndarray, floor: float | np.ndarray = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """chi^2 (...,) of observed fluxes against predicted ones with a free amplitude, and the amplitude.

    observed, ivar: (..., B) with ivar 0 for bands that do not count; predicted: (..., B).
    The amplitude A minimises sum w (observed - A predicted)^2, w = 1 / (1/ivar + (floor A
    predicted)^2): a fractional error ``floor`` (one number, or (B,) per band) of the
    prediction added in quadrature (found in two passes: A from ivar alone, then the weights
    with that A, then A again).
    """
    observed, ivar, predicted = (np.asarray(a, dtype=np.float64) for a in (observed, ivar, predicted))
    observed = np.where(ivar > 0, observed, 0.0)

    def fit(weight: np.ndarray) -> np.ndarray:
        den = (weight * predicted**2).sum(axis=-1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(den > 0, (weight * observed * predicted).sum(axis=-1) / den, np.nan)

    amplitude = fit(ivar)
    weight = ivar
    floor = np.asarray(floor, dtype=np.float64)
    if np.any(floor > 0):
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            variance = (
                np.where(ivar > 0, 1.0 / ivar, np.inf) + (floor * amplitude[..., None] * predicted) ** 2
            )
            weight = np.where(ivar > 0, 1.0 / variance, 0.0)
        amplitude = fit(weight)
    chi2 = (weight * (observed - amplitude[..., None] * predicted) ** 2).sum(axis=-1)
    return np.where(np.isfinite(amplitude), chi2, np.nan), amplitude
