"""The galaxy population: redshifts, luminosities, SEDs and sizes drawn with SkyPy.

Blue and red galaxies follow Schechter luminosity functions in the Bessell B band with
the redshift-dependent parameters of SkyPy's ``examples/galaxies/sdss_photometry.yml``
(López-Sanjuan et al. 2017, A&A 599, A62, as parameterised in SkyPy); their rest-frame
SEDs are Dirichlet-distributed mixtures of the five kcorrect templates (Blanton &
Roweis 2007) with the Herbel et al. (2017, JCAP 08, 035) parameters; half-light radii
follow Shen et al. (2003, MNRAS 343, 978). The sample is cut at one observed-frame
magnitude limit and a redshift range, identically for every draw.

SkyPy draws from NumPy's global random state: ``_global_numpy_seed`` seeds it from the
survey seed for the duration of a draw and restores it afterwards.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
from astropy import units as u
from astropy.cosmology import FLRW, Planck18

from specdiff_catalog.bands import BandSet
from specdiff_catalog.mock.spectra import model_fluxes

BLUE, RED = 0, 1
POPULATION_NAMES = ("blue", "red")


@dataclass(frozen=True)
class SchechterPopulation:
    """One galaxy population (SkyPy parameterisation).

    M*(z) = m_star_slope z + m_star_intercept (Bessell B, AB); phi*(z) = phi_star_amplitude
    exp(z / phi_star_tau) in Mpc^-3; alpha: faint-end slope. dirichlet_*: the five
    kcorrect template weights' Dirichlet parameters at z = 0 and z = 1 and their weights.
    size_*: Shen et al. (2003) size-luminosity relation, ``late`` (4 parameters
    alpha, beta, gamma, M0) or ``early`` (a, b, M0), with sigma1, sigma2.
    """

    m_star_slope: float
    m_star_intercept: float
    phi_star_amplitude: float
    phi_star_tau: float
    alpha: float
    dirichlet_alpha0: tuple[float, ...]
    dirichlet_alpha1: tuple[float, ...]
    dirichlet_weight: tuple[float, ...]
    size_kind: str
    size_params: tuple[float, ...]
    size_sigma: tuple[float, float] = (0.48, 0.25)


BLUE_GALAXIES = SchechterPopulation(
    m_star_slope=-0.9408582,
    m_star_intercept=-20.40492365,
    phi_star_amplitude=0.00370253,
    phi_star_tau=-9.73858,
    alpha=-1.3,
    dirichlet_alpha0=(2.079, 3.524, 1.917, 1.992, 2.536),
    dirichlet_alpha1=(2.265, 3.862, 1.921, 1.685, 2.480),
    dirichlet_weight=(3.47e09, 3.31e06, 2.13e09, 1.64e10, 1.01e09),
    size_kind="late",
    size_params=(0.21, 0.53, -1.31, -20.52),
)
RED_GALAXIES = SchechterPopulation(
    m_star_slope=-0.70798041,
    m_star_intercept=-20.37196157,
    phi_star_amplitude=0.0035097,
    phi_star_tau=-1.41649,
    alpha=-0.5,
    dirichlet_alpha0=(2.461, 2.358, 2.568, 2.268, 2.402),
    dirichlet_alpha1=(2.410, 2.340, 2.200, 2.540, 2.464),
    dirichlet_weight=(3.84e09, 1.57e06, 3.91e08, 4.66e10, 3.03e07),
    size_kind="early",
    size_params=(0.6, -4.63, -20.52),
)


@dataclass(frozen=True)
class PopulationModel:
    """What is drawn and which galaxies are kept.

    z_max: redshifts in (0, z_max]. mag_max: AB magnitude limit in ``select_band``.
    sampling_margin: the luminosity functions are sampled to B-band distance-modulus
    magnitude mag_max + margin, deep enough that no galaxy brighter than the limit in
    ``select_band`` is missed (the largest (M_B + DM) - m_r of kept galaxies is ~1.1).
    """

    z_max: float = 0.8
    mag_max: float = 22.5
    select_band: str = "r"
    sampling_margin: float = 2.0
    populations: tuple[SchechterPopulation, ...] = field(default=(BLUE_GALAXIES, RED_GALAXIES))
    z_grid_step: float = 0.01


@dataclass
class Galaxies:
    """N galaxies' intrinsic properties.

    redshift: (N,). population: (N,) int8, BLUE or RED. abs_mag_b: (N,) Bessell-B AB
    absolute magnitude. coefficients: (N, 5) kcorrect template coefficients (sum to 1).
    stellar_mass: (N,) in kcorrect template units (multiplies the templates, which are
    per unit mass at 10 pc). flux: (N, B) noiseless observed-frame fluxes before Milky
    Way extinction, in the band set's unit (nanomaggies). half_light_radius: (N,) arcsec.
    """

    redshift: np.ndarray
    population: np.ndarray
    abs_mag_b: np.ndarray
    coefficients: np.ndarray
    stellar_mass: np.ndarray
    flux: np.ndarray
    half_light_radius: np.ndarray

    def __len__(self) -> int:
        return len(self.redshift)

    def take(self, index: np.ndarray) -> Galaxies:
        """The galaxies at ``index`` (an integer or boolean array)."""
        return Galaxies(**{k: v[index] for k, v in vars(self).items()})

    @classmethod
    def concatenate(cls, parts: list[Galaxies]) -> Galaxies:
        return cls(**{k: np.concatenate([vars(p)[k] for p in parts]) for k in vars(parts[0])})


@contextlib.contextmanager
def _global_numpy_seed(seed: int) -> Iterator[None]:
    """Seed NumPy's global generator (which SkyPy uses) and restore it afterwards."""
    saved = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(saved)


def _draw_one(
    pop: SchechterPopulation, model: PopulationModel, area: u.Quantity, bandset: BandSet, cosmology: FLRW
) -> tuple[np.ndarray, ...]:
    """Sample one population over ``area`` (global NumPy state): z, M_B, coeffs, mass, flux, r_half."""
    from skypy.galaxies import morphology, schechter_lf
    from skypy.galaxies.spectrum import dirichlet_coefficients, kcorrect

    z_grid = np.arange(0.0, model.z_max + model.z_grid_step / 2, model.z_grid_step)
    z, abs_mag = schechter_lf(
        z_grid,
        lambda zz: pop.m_star_slope * zz + pop.m_star_intercept,
        lambda zz: pop.phi_star_amplitude * np.exp(zz / pop.phi_star_tau),
        pop.alpha,
        model.mag_max + model.sampling_margin,
        area,
        cosmology,
    )
    if len(z) == 0:
        return tuple(np.empty((0, *s)) for s in [(), (), (5,), (), (len(bandset.bands),), ()])
    coeff = dirichlet_coefficients(
        z,
        np.array(pop.dirichlet_alpha0),
        np.array(pop.dirichlet_alpha1),
        weight=np.array(pop.dirichlet_weight),
    )
    mass = kcorrect.stellar_mass(coeff, abs_mag, "bessell-B")
    maggies = model_fluxes(coeff, mass, z, tuple(b.filter for b in bandset.bands), cosmology)
    abs_mag_r = np.ravel(kcorrect.absolute_magnitudes(coeff, "sdss2010-r", stellar_mass=mass))
    sigma1, sigma2 = pop.size_sigma
    size_fn = (
        morphology.late_type_lognormal_size
        if pop.size_kind == "late"
        else morphology.early_type_lognormal_size
    )
    physical = size_fn(abs_mag_r, *pop.size_params, sigma1, sigma2)
    r_half = morphology.angular_size(physical, z, cosmology).to_value(u.arcsec)
    return z, abs_mag, coeff, mass, bandset.maggies_to_flux(maggies), r_half


def draw_galaxies(
    n: int,
    seed: int,
    model: PopulationModel,
    bandset: BandSet,
    cosmology: FLRW = Planck18,
    *,
    first_area_deg2: float | None = None,
) -> Galaxies:
    """Draw exactly ``n`` galaxies with 0 < z <= z_max and m_select < mag_max, in random order.

    Sky areas are drawn until enough galaxies pass the cuts (each further area sized
    from the density seen so far), then a random ``n`` of them are kept. The result
    depends on (seed, model, bandset, cosmology) only.
    """
    if n <= 0:
        raise ValueError(f"number of galaxies must be positive, got {n}")
    band = bandset.names.index(model.select_band)
    parts: list[Galaxies] = []
    kept, drawn_area = 0, 0.0
    area = first_area_deg2 or n / 10000.0  # ~13000 deg^-2 pass at r < 22.5: start just below
    with _global_numpy_seed(seed):
        while kept < n:
            for kind, pop in enumerate(model.populations):
                z, mag_b, coeff, mass, flux, r_half = _draw_one(
                    pop, model, area * u.deg**2, bandset, cosmology
                )
                with np.errstate(divide="ignore"):
                    m_sel = bandset.zeropoint - 2.5 * np.log10(flux[:, band])
                ok = (z > 0) & (z <= model.z_max) & (m_sel < model.mag_max)
                parts.append(
                    Galaxies(
                        z[ok],
                        np.full(ok.sum(), kind, np.int8),
                        mag_b[ok],
                        coeff[ok],
                        mass[ok],
                        flux[ok],
                        r_half[ok],
                    )
                )
                kept += int(ok.sum())
            drawn_area += area
            density = max(kept, 1) / drawn_area
            area = 1.1 * (n - kept) / density + 1e-3
        galaxies = Galaxies.concatenate(parts)
        order = np.random.permutation(len(galaxies))[:n]
    return galaxies.take(order)
