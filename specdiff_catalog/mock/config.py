"""The configuration of a mock survey: sizes, seed, and every model's parameters, as dataclasses."""

from __future__ import annotations

from dataclasses import dataclass, field

from specdiff_catalog.mock.desi_files import DEFAULT_RESOLUTION_SIGMA_PIX
from specdiff_catalog.mock.footprint import MAX_SEED, SkyPatch
from specdiff_catalog.mock.imaging import CatalogDefects
from specdiff_catalog.mock.noise import ImagingNoise, SpectroNoise
from specdiff_catalog.mock.population import PopulationModel
from specdiff_catalog.mock.reddening import ReddeningModel
from specdiff_catalog.mock.redrock import RedrockModel
from specdiff_catalog.mock.spectra import REST_RANGE, FibreModel
from specdiff_catalog.mock.targets import CLASS_PRIORITY, DEEP_CLASS, PhotometricLimit

# effective exposure (s) per target class: BGS in bright time, LRG and ELG in dark time (DESI's
# survey design: 180 s and 1000 s effective; Schlafly et al. 2023, AJ 166, 259); the deep
# calibration field four times the dark-time depth
DEFAULT_EXPTIME = {"BGS": 180.0, "LRG": 1000.0, "ELG": 1000.0, DEEP_CLASS: 4000.0}
SPECTRO_CLASSES = (*CLASS_PRIORITY, DEEP_CLASS)


@dataclass(frozen=True)
class MockConfig:
    """A mock survey. n_spec: DESI targets with spectra; n_phot: rows of the HATS catalog.

    n_deep: galaxies of a deep calibration field with spectra (TARGET_CLASS "DEEP"): catalog
    galaxies (the photometric limit) other than the DESI targets given spectra; drawn after
    them, so nearly all are galaxies the DESI selections leave out; as photo-z training sets
    add magnitude-limited deep surveys to the bright targets (docs/mock.md); 0: none.

    seed: 0..1023; each seed gives a fresh survey whose ids no other seed uses.
    population: the galaxy population (redshift range 0 < z <= population.z_max, 1.6 by default).
    photometric_limit: which galaxies enter the catalog (both sets); the spectroscopic set
    keeps, among those, the DESI BGS Bright / LRG / ELG targets (``mock.targets``).
    order: HEALPix order of the catalog partitions (4: ~15 partitions over the default patch).
    n_rest_spectra: spectroscopic targets whose noiseless rest-frame spectra go to truth.
    exptime: effective exposure (s) of the spectra per target class.
    resolution_sigma_pix: Gaussian sigma (0.8 A pixels) of the line-spread function per arm: the
    spectra are convolved with it and the coadds' RESOLUTION HDUs carry it.
    """

    n_spec: int = 2000
    n_phot: int = 20000
    n_deep: int = 0
    seed: int = 0
    order: int = 4
    n_rest_spectra: int = 500
    targets_per_file: int = 500
    bands: str = "ls-dr10-south"
    bad_fiber_fraction: float = 0.01
    cosmics_per_arm: float = 1.0
    population: PopulationModel = field(default_factory=PopulationModel)
    photometric_limit: PhotometricLimit = field(default_factory=PhotometricLimit)
    exptime: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_EXPTIME))
    resolution_sigma_pix: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_RESOLUTION_SIGMA_PIX))
    patch: SkyPatch = field(default_factory=SkyPatch)
    reddening: ReddeningModel = field(default_factory=ReddeningModel)
    imaging_noise: ImagingNoise = field(default_factory=ImagingNoise)
    defects: CatalogDefects = field(default_factory=CatalogDefects)
    fibre: FibreModel = field(default_factory=FibreModel)
    spectro_noise: SpectroNoise = field(default_factory=SpectroNoise)
    redrock: RedrockModel = field(default_factory=RedrockModel)

    def validate(self) -> None:
        """Raise ValueError naming the first impossible setting."""
        if self.n_spec <= 0 or self.n_phot <= 0 or self.n_deep < 0:
            raise ValueError(
                f"--n-spec and --n-phot must be positive and --n-deep >= 0, "
                f"got {self.n_spec}, {self.n_phot}, {self.n_deep}"
            )
        if not 0 <= self.seed <= MAX_SEED:
            raise ValueError(
                f"--seed must be in 0..{MAX_SEED} (ids stay disjoint across seeds), got {self.seed}"
            )
        z_top = 3600.0 / REST_RANGE[0] - 1  # the truth grid must cover DESI's blue end
        if not self.population.z_min < self.population.z_max <= min(z_top, self.redrock.z_fit_max):
            raise ValueError(
                f"z_max must be in ({self.population.z_min}, {min(z_top, 1.7):.2f}], "
                f"got {self.population.z_max}"
            )
        if not 0 <= self.order <= 12:
            raise ValueError(f"--order must be in 0..12, got {self.order}")
        if not 1 <= self.targets_per_file <= 500:
            raise ValueError(f"targets_per_file must be in 1..500, got {self.targets_per_file}")
        if set(self.resolution_sigma_pix) != {"b", "r", "z"} or min(self.resolution_sigma_pix.values()) <= 0:
            raise ValueError(
                "resolution_sigma_pix must give a positive sigma for arms b, r, z, "
                f"got {self.resolution_sigma_pix}"
            )
        if set(self.exptime) != set(SPECTRO_CLASSES):
            raise ValueError(
                f"exptime must give every spectroscopic class {SPECTRO_CLASSES}, got {sorted(self.exptime)}"
            )
