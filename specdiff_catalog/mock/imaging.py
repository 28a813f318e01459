"""Legacy Surveys catalog rows of mock galaxies: ids, shapes, reddening, noisy fluxes, bad rows.

Column names and extinction coefficients come from the band set (``ls-dr10-south``).
Real catalogs carry defects the pipeline must survive, so a few rows get them:
one band missing (flux 0, ivar 0), a NaN in one flux/ivar/EBV value, or all-zero
photometry (as DESI fibermaps have for targets without a Legacy Surveys match).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from specdiff_catalog.bands import BandSet
from specdiff_catalog.mock.footprint import (
    RELEASE_DR10_SOUTH,
    SkyPatch,
    brick_ids,
    draw_positions,
    object_ids,
)
from specdiff_catalog.mock.noise import ImagingNoise, observe_imaging
from specdiff_catalog.mock.population import QUIESCENT, Galaxies
from specdiff_catalog.mock.reddening import ReddeningModel, ebv
from specdiff_catalog.mock.spectra import FibreModel


@dataclass(frozen=True)
class CatalogDefects:
    """Fractions of rows with one missing band, one NaN value, or all-zero photometry."""

    missing_band: float = 0.01
    nan_value: float = 0.002
    all_zero: float = 0.002


def morphology_type(half_light_radius: np.ndarray, population: np.ndarray) -> np.ndarray:
    """(N,) Tractor TYPE: PSF below 0.15", REX below 0.5", else EXP (star-forming) or DEV (quiescent)."""
    extended = np.where(population == QUIESCENT, "DEV", "EXP")
    return np.where(half_light_radius < 0.15, "PSF", np.where(half_light_radius < 0.5, "REX", extended))


def _inject_defects(
    table: pd.DataFrame, bandset: BandSet, defects: CatalogDefects, rng: np.random.Generator
) -> None:
    """Give a random few rows of ``table`` (in place) a missing band, a NaN or all-zero photometry."""
    n = len(table)
    fluxes = [b.flux for b in bandset.bands]
    ivars = [b.ivar for b in bandset.bands]
    kind = rng.choice(
        4,
        size=n,
        p=[
            1 - defects.missing_band - defects.nan_value - defects.all_zero,
            defects.missing_band,
            defects.nan_value,
            defects.all_zero,
        ],
    )
    band = rng.integers(0, len(bandset.bands), n)
    for b in range(len(bandset.bands)):
        rows = (kind == 1) & (band == b)
        table.loc[rows, [fluxes[b], ivars[b]]] = 0.0
    nan_columns = fluxes + ivars + [bandset.ebv_column]
    which = rng.integers(0, len(nan_columns), n)
    for c, name in enumerate(nan_columns):
        table.loc[(kind == 2) & (which == c), name] = np.nan
    table.loc[kind == 3, fluxes + ivars] = 0.0


def imaging_catalog(
    galaxies: Galaxies,
    *,
    seed: int,
    kind: int,
    bandset: BandSet,
    patch: SkyPatch,
    noise: ImagingNoise,
    reddening: ReddeningModel,
    defects: CatalogDefects,
    fibre: FibreModel,
    rng: np.random.Generator,
) -> pd.DataFrame:
    """One Legacy Surveys DR10-like row per galaxy (same order), with OBJECT_ID and fibre fluxes.

    Columns: OBJECT_ID, RELEASE, BRICKID, OBJID, RA, DEC, TYPE, SHAPE_R, EBV, then per band
    FLUX_*, FLUX_IVAR_*, MW_TRANSMISSION_* (nanomaggies), then FIBERFLUX_* (fibre-aperture
    flux, not a catalog column of LS DR10 sweeps but of the DESI fibermap).
    """
    n = len(galaxies)
    ra, dec = draw_positions(n, patch, rng)
    brick = brick_ids(ra, dec)
    objid, packed = object_ids(brick, seed, kind)
    e = ebv(ra, dec, reddening)
    transmission = bandset.mw_transmission(e)
    flux, ivar = observe_imaging(galaxies.flux, transmission, bandset.names, noise, rng, bandset.zeropoint)
    columns: dict[str, np.ndarray] = {
        "OBJECT_ID": packed,
        "RELEASE": np.full(n, RELEASE_DR10_SOUTH, np.int16),
        "BRICKID": brick,
        "OBJID": objid,
        "RA": ra,
        "DEC": dec,
        "TYPE": morphology_type(galaxies.half_light_radius, galaxies.population),
        "SHAPE_R": galaxies.half_light_radius.astype(np.float32),
        bandset.ebv_column: e,
    }
    for i, b in enumerate(bandset.bands):
        columns |= {
            b.flux: flux[:, i],
            b.ivar: ivar[:, i],
            b.mw_transmission: transmission[:, i].astype(np.float32),
        }
    fraction = fibre.catalog_fraction(galaxies.half_light_radius, galaxies.population)
    for i, b in enumerate(bandset.bands):  # the Tractor model's flux in the fibre: noisy as FLUX is
        columns["FIBER" + b.flux] = (flux[:, i] * fraction).astype(np.float32)
    table = pd.DataFrame(columns)
    _inject_defects(table, bandset, defects, rng)
    return table
