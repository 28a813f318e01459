"""The configuration of a mock survey: sizes, seed, and every model's parameters, as dataclasses."""

from __future__ import annotations

from dataclasses import dataclass, field

from specdiff_catalog.mock.footprint import MAX_SEED, SkyPatch
from specdiff_catalog.mock.imaging import CatalogDefects
from specdiff_catalog.mock.noise import ImagingNoise, SpectroNoise
from specdiff_catalog.mock.population import PopulationModel
from specdiff_catalog.mock.reddening import ReddeningModel
from specdiff_catalog.mock.redrock import RedrockModel
from specdiff_catalog.mock.spectra import FibreModel


@dataclass(frozen=True)
class MockConfig:
    """A mock survey. n_spec: targets with DESI spectra; n_phot: rows of the HATS catalog.

    seed: 0..1023; each seed gives a fresh survey whose ids no other seed uses.
    r_max, z_max: one magnitude limit (AB, r band) and redshift range (0, z_max] for both sets.
    order: HEALPix order of the catalog partitions (4: ~15 partitions over the default patch).
    n_rest_spectra: spectroscopic targets whose noiseless rest-frame spectra go to truth.
    """

    n_spec: int = 2000
    n_phot: int = 20000
    seed: int = 0
    r_max: float = 22.5
    z_max: float = 0.8
    order: int = 4
    n_rest_spectra: int = 500
    targets_per_file: int = 500
    bands: str = "ls-dr10-south"
    bad_fiber_fraction: float = 0.01
    cosmics_per_arm: float = 1.0
    patch: SkyPatch = field(default_factory=SkyPatch)
    reddening: ReddeningModel = field(default_factory=ReddeningModel)
    imaging_noise: ImagingNoise = field(default_factory=ImagingNoise)
    defects: CatalogDefects = field(default_factory=CatalogDefects)
    fibre: FibreModel = field(default_factory=FibreModel)
    spectro_noise: SpectroNoise = field(default_factory=SpectroNoise)
    redrock: RedrockModel = field(default_factory=RedrockModel)

    def population_model(self) -> PopulationModel:
        return PopulationModel(z_max=self.z_max, mag_max=self.r_max, select_band="r")

    def validate(self) -> None:
        """Raise ValueError naming the first impossible setting."""
        if self.n_spec <= 0 or self.n_phot <= 0:
            raise ValueError(f"--n-spec and --n-phot must be positive, got {self.n_spec}, {self.n_phot}")
        if not 0 <= self.seed <= MAX_SEED:
            raise ValueError(
                f"--seed must be in 0..{MAX_SEED} (ids stay disjoint across seeds), got {self.seed}"
            )
        if not 0 < self.z_max <= 1.5:
            raise ValueError(f"z_max must be in (0, 1.5], got {self.z_max}")
        if not 0 <= self.order <= 12:
            raise ValueError(f"--order must be in 0..12, got {self.order}")
        if not 1 <= self.targets_per_file <= 500:
            raise ValueError(f"targets_per_file must be in 1..500, got {self.targets_per_file}")
