"""Draw one set of a mock survey: galaxies over growing sky areas, observed, selected, subsampled.

Each round draws the population over an area, synthesises its true photometry, observes
it as Legacy Surveys rows (noise, Milky Way dust, defects), keeps the rows that pass the
set's selection (the photometric limit, and for DESI targets a target class), and sizes the
next area from the density seen so far. A random ``n_targets`` DESI targets and then a random
``n_any`` of the other kept rows are used, and their ids are assigned last so that they are
unique within the set.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

import numpy as np
import pandas as pd

from specdiff_catalog.bands import BandSet
from specdiff_catalog.mock.distances import distances
from specdiff_catalog.mock.footprint import brick_ids, object_ids
from specdiff_catalog.mock.population import (
    Galaxies,
    PopulationModel,
    draw_parameters,
    expected_counts,
    galaxy_parameters,
    normalise_masses,
    z_grid_edges,
)
from specdiff_catalog.mock.spectra import model_maggies, true_dn4000
from specdiff_catalog.mock.targets import PhotometricLimit, select_targets

MAX_PER_ROUND = 150_000  # galaxies synthesised per round (memory stays ~1 GB)


@dataclass(frozen=True)
class SetRequest:
    """Rows of one set (kind: footprint.PHOTOMETRIC or SPECTROSCOPIC): n_targets DESI targets,
    then n_any catalog rows that are not among them (the photometric catalog; or a deep
    calibration field's spectra, which, with the targets drawn first, are of the galaxies the
    DESI selections leave out)."""

    kind: int
    n_targets: int = 0
    n_any: int = 0

    @property
    def n(self) -> int:
        return self.n_targets + self.n_any


def completeness_mass(
    model: PopulationModel, limit: PhotometricLimit, bandset: BandSet, margin: float = 0.3
) -> np.ndarray:
    """(Z,) log M per redshift cell below which no galaxy can pass ``limit`` (minus ``margin`` dex).

    A metal-poor, dust-free galaxy with the youngest history the population draws (constant SFR
    since its latest possible start, plus its largest and youngest burst) has about the lowest
    mass-to-light ratio of the population;
    a galaxy of lower stellar mass than it needs to reach the limit is not drawn.
    """
    edges = z_grid_edges(model)
    z = 0.5 * (edges[:-1] + edges[1:])
    return _completeness(tuple(z), model, tuple(limit.limits.items()), bandset.name, margin)


@cache
def _completeness(
    z: tuple[float, ...],
    model: PopulationModel,
    limits: tuple[tuple[str, float], ...],
    bands: str,
    margin: float,
) -> np.ndarray:
    from astropy.cosmology import Planck18

    bandset = BandSet.load(bands)
    zz = np.asarray(z)
    n = len(zz)
    ref = galaxy_parameters(zz, np.full(n, 9.0), model, np.random.default_rng(0), Planck18)
    phys = model.physics
    youngest = (1 - phys.start_fraction_sf[1]) * distances(Planck18).age(zz)  # Gyr
    ref.sfh_age, ref.sfh_tau = youngest, 1000 * youngest
    ref.burst_fraction = np.full(n, phys.burst_fraction[1])  # the largest, youngest burst drawn
    ref.burst_age = np.full(n, phys.burst_age_sf[0])
    ref.metallicity, ref.av = np.full(n, 0.2), np.zeros(n)
    normalise_masses(ref)
    maggies = model_maggies(ref, tuple(b.filter for b in bandset.bands))
    per_mass = maggies / 1e9
    need = []
    for band, mag in limits:
        b = bandset.names.index(band.lower() if band.lower() in bandset.names else band)
        need.append(np.log10(10.0 ** (-0.4 * mag) / per_mass[:, b]))
    return np.maximum(np.min(need, axis=0) - margin, model.log_mass_floor)


def draw_set(
    request: SetRequest,
    *,
    seed: int,
    model: PopulationModel,
    limit: PhotometricLimit,
    bandset: BandSet,
    observe: Callable[[Galaxies, np.random.Generator], pd.DataFrame],
    rng: np.random.Generator,
) -> tuple[Galaxies, pd.DataFrame, float]:
    """(galaxies, their catalog rows with TARGET_CLASS/DESI_TARGET/BGS_TARGET, surface density deg^-2).

    observe: galaxies -> Legacy Surveys rows (``imaging.imaging_catalog`` with the survey's models).
    """
    log_m_min = completeness_mass(model, limit, bandset)
    filters = tuple(b.filter for b in bandset.bands)
    galaxies, tables = [], []
    drawn_density = float(expected_counts(model, log_m_min).sum())  # galaxies synthesised per deg^2
    max_area = MAX_PER_ROUND / drawn_density
    kept, kept_targets, area, drawn_area = 0, 0, max_area / 20, 0.0
    while kept < request.n or kept_targets < request.n_targets:
        g = draw_parameters(area, model, log_m_min, rng)
        drawn_area += area
        if len(g):
            g.flux = bandset.maggies_to_flux(model_maggies(g, filters))
            table = observe(g, rng)
            table = pd.concat([table, select_targets(table)], axis=1)
            target = (table["TARGET_CLASS"] != "").to_numpy()
            keep = limit(table) & (target | (request.n_any > 0))
            galaxies.append(g.take(keep))
            tables.append(table[keep])
            kept += int(keep.sum())
            kept_targets += int((keep & target).sum())
        need = max(
            (request.n - kept) * drawn_area / max(kept, 1),
            (request.n_targets - kept_targets) * drawn_area / max(kept_targets, 1),
        )
        area = min(1.15 * need + 1e-3, max_area)
    every = Galaxies.concatenate(galaxies)
    rows = pd.concat(tables, ignore_index=True)
    pick = _pick(rows["TARGET_CLASS"].to_numpy() != "", request, rng)
    chosen, rows = every.take(pick), rows.iloc[pick].reset_index(drop=True)
    chosen.dn4000 = true_dn4000(chosen)
    brick = brick_ids(rows["RA"].to_numpy(), rows["DEC"].to_numpy())
    rows["OBJID"], rows["OBJECT_ID"] = object_ids(brick, seed, request.kind)
    return chosen, rows, (kept_targets if request.n_targets else kept) / drawn_area


def _pick(target: np.ndarray, request: SetRequest, rng: np.random.Generator) -> np.ndarray:
    """Row indices: a random ``n_targets`` of the targets, then a random ``n_any`` of the rest."""
    targets = np.flatnonzero(target)
    chosen = targets[rng.permutation(len(targets))[: request.n_targets]] if request.n_targets else targets[:0]
    if not request.n_any:
        return chosen
    rest = np.setdiff1d(np.arange(len(target)), chosen)
    return np.concatenate([chosen, rest[rng.permutation(len(rest))[: request.n_any]]])
