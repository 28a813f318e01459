"""What the instruments add: imaging flux errors at Legacy Surveys depths, DESI spectral noise.

Imaging: Gaussian flux noise of fixed variance per object, the sky-limited regime the
Tractor's FLUX_IVAR describes (its ivar carries no source photon noise), at 5-sigma
point-source depths with object-to-object scatter.

Spectra: photon counts of object + sky through the fibre plus read noise, per 0.8 A
pixel, for an effective exposure time. IVAR is that variance, as DESI's pipeline
propagates it. The noise actually drawn adds a sky-subtraction residual, a fraction of
the sky-line flux that IVAR does not know about (line-spread-function and wavelength
mismatches of the sky model), so chi^2 rises at the sky lines as in real DESI coadds.
Calibration against a real DESI coadd: docs/mock.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from specdiff_catalog.mock.skymodel import SkyModel, continuum, line_emission, sky_spectrum

_HC = 1.98644586e-8  # erg A

LS_DR10_SOUTH_DEPTHS = {"g": 24.7, "r": 24.2, "i": 23.8, "z": 23.3, "W1": 21.0, "W2": 20.3}


@dataclass(frozen=True)
class ImagingNoise:
    """depth5: 5-sigma AB depth per band name. depth_scatter: sigma (mag) of the depth between objects."""

    depth5: dict[str, float] = field(default_factory=lambda: dict(LS_DR10_SOUTH_DEPTHS))
    depth_scatter: float = 0.15

    def sigma(
        self, band_names: list[str], n: int, rng: np.random.Generator, zeropoint: float = 22.5
    ) -> np.ndarray:
        """(n, B) flux errors (flux units of ``zeropoint``) at each object's depth."""
        missing = [b for b in band_names if b not in self.depth5]
        if missing:
            raise ValueError(f"no imaging depth for band(s) {missing}; known: {sorted(self.depth5)}")
        depth = np.array([self.depth5[b] for b in band_names]) + rng.normal(
            0.0, self.depth_scatter, (n, len(band_names))
        )
        return 10.0 ** (-0.4 * (depth - zeropoint)) / 5.0


def observe_imaging(
    flux: np.ndarray,
    transmission: np.ndarray,
    band_names: list[str],
    noise: ImagingNoise,
    rng: np.random.Generator,
    zeropoint: float = 22.5,
) -> tuple[np.ndarray, np.ndarray]:
    """(flux (N, B), ivar (N, B)): noisy observed fluxes of intrinsic ``flux`` dimmed by MW
    ``transmission``."""
    sigma = noise.sigma(band_names, len(flux), rng, zeropoint)
    observed = flux * transmission + sigma * rng.standard_normal(flux.shape)
    return observed.astype(np.float32), (1.0 / sigma**2).astype(np.float32)


@dataclass(frozen=True)
class ArmThroughput:
    """Total throughput (atmosphere to CCD, excluding fibre-aperture losses) at anchor wavelengths."""

    wave: tuple[float, ...]
    value: tuple[float, ...]
    read_noise: float  # electrons per CCD pixel (desimodel)


DESI_ARM_THROUGHPUT = {  # effective values fitted to a real DESI coadd's noise (docs/mock.md)
    "b": ArmThroughput(
        (3600, 3700, 3900, 4300, 4800, 5300, 5800), (0.015, 0.023, 0.040, 0.059, 0.078, 0.085, 0.077), 3.29
    ),
    "r": ArmThroughput(
        (5760, 5850, 6000, 6600, 7200, 7500, 7620), (0.006, 0.037, 0.073, 0.101, 0.119, 0.100, 0.030), 2.69
    ),
    "z": ArmThroughput(
        (7520, 7700, 8000, 8600, 9200, 9600, 9824), (0.073, 0.125, 0.155, 0.173, 0.212, 0.084, 0.118), 2.69
    ),
}


@dataclass(frozen=True)
class SpectroNoise:
    """DESI-like noise. exptime: effective exposure (s), split into n_exposures (read noise each).

    area: Mayall collecting area (cm^2). fibre_area: 1.52 arcsec fibre (arcsec^2).
    read_pixels: CCD pixels read per 0.8 A extracted pixel. sky_residual: fraction of the
    sky-line flux left as unmodelled sky-subtraction noise.
    """

    exptime: float = 1000.0
    n_exposures: int = 2
    area: float = 8.678e4
    fibre_area: float = 1.815
    read_pixels: float = 5.0
    sky_residual: float = 0.03
    pixel: float = 0.8
    sky: SkyModel = field(default_factory=SkyModel)
    throughput: dict[str, ArmThroughput] = field(default_factory=lambda: dict(DESI_ARM_THROUGHPUT))

    def electrons_per_unit(self, arm: str, wave: np.ndarray) -> np.ndarray:
        """(P,) electrons per pixel from a flux density of 1e-17 erg/s/cm^2/A over the exposure."""
        arm_thr = self.throughput[arm]
        thr = np.interp(wave, arm_thr.wave, arm_thr.value)
        return 1e-17 * self.area * self.exptime * self.pixel * wave / _HC * thr

    def read_variance(self, arm: str) -> float:
        """Read-noise variance (electrons^2) per extracted pixel of the coadd."""
        return self.n_exposures * self.read_pixels * self.throughput[arm].read_noise ** 2

    def sky_electrons(self, arm: str, wave: np.ndarray) -> np.ndarray:
        """(P,) sky electrons per pixel in the fibre."""
        return self.electrons_per_unit(arm, wave) * self.fibre_area * sky_spectrum(wave, self.sky)

    def variance(self, arm: str, wave: np.ndarray, flux: np.ndarray) -> np.ndarray:
        """(N, P) variance (DESI units^2) of spectra ``flux`` (N, P): object + sky photons + read noise."""
        k = self.electrons_per_unit(arm, wave)
        electrons = np.clip(flux, 0, None) * k + self.sky_electrons(arm, wave) + self.read_variance(arm)
        return electrons / k**2

    def sky_line_pixels(self, wave: np.ndarray, contrast: float = 1.0) -> np.ndarray:
        """(P,) bool: pixels where line emission exceeds ``contrast`` x the sky continuum."""
        return sky_spectrum(wave, self.sky) > (1 + contrast) * continuum(wave, self.sky)

    def observe(
        self, arm: str, wave: np.ndarray, flux: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """(noisy flux (N, P) float32, ivar (N, P) float32) for noiseless ``flux`` (N, P)."""
        var = self.variance(arm, wave, flux)
        residual = self.sky_residual * self.fibre_area * line_emission(wave, self.sky)
        noise = np.sqrt(var) * rng.standard_normal(flux.shape) + residual * rng.standard_normal(flux.shape)
        return (flux + noise).astype(np.float32), (1.0 / var).astype(np.float32)
