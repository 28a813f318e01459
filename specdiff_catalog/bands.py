"""Band sets: which catalog columns hold each band, its filter curve and its extinction.

A band set is data (``presets/bands/*.toml`` or a user TOML/JSON file), never code.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from specdiff_catalog.config import ConfigError, from_dict, load_preset

DEFAULT_BANDSET = "ls-grzw1w2"


@dataclass(frozen=True)
class Band:
    """One photometric band.

    flux, ivar, mw_transmission: catalog column names (matched case-insensitively).
    filter: speclite filter name. extinction_r: A_band / E(B-V).
    softening: asinh-magnitude softening b, in the band set's flux unit (~1-sigma depth).
    """

    name: str
    flux: str
    ivar: str
    mw_transmission: str
    filter: str
    extinction_r: float
    softening: float


@dataclass(frozen=True)
class BandSet:
    """An ordered set of bands plus the catalog-wide photometric conventions.

    zeropoint: AB magnitude of a flux of 1 flux_unit (22.5 for nanomaggies, 31.4 for nJy).
    """

    name: str
    description: str
    zeropoint: float
    flux_unit: str
    ebv_column: str
    bands: tuple[Band, ...]

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "band set") -> BandSet:
        """Build from a preset dict (``bands`` is a list of band tables)."""
        data = dict(data)
        raw_bands = data.pop("bands", None)
        if not raw_bands:
            raise ConfigError(f"{source}: a band set needs at least one [[bands]] entry")
        bands = tuple(from_dict(Band, dict(b), source=f"{source} band {i}") for i, b in enumerate(raw_bands))
        return from_dict(cls, {**data, "bands": bands}, source=source)

    @classmethod
    def load(cls, name_or_path: str | Path = DEFAULT_BANDSET) -> BandSet:
        """A bundled preset by name (``ls-dr10-south``) or a user TOML/JSON file by path."""
        return cls.from_dict(load_preset("bands", name_or_path), source=str(name_or_path))

    def to_dict(self) -> dict[str, Any]:
        """Plain dict, the inverse of from_dict (stored in model config.json)."""
        return dataclasses.asdict(self) | {"bands": [dataclasses.asdict(b) for b in self.bands]}

    @property
    def names(self) -> list[str]:
        return [b.name for b in self.bands]

    @property
    def extinction_r(self) -> np.ndarray:
        """(B,) A_band / E(B-V)."""
        return np.array([b.extinction_r for b in self.bands])

    @property
    def softening(self) -> np.ndarray:
        """(B,) asinh softening in flux units."""
        return np.array([b.softening for b in self.bands])

    def columns(self) -> list[str]:
        """Every column the band set can use: fluxes, ivars, MW transmissions and EBV
        (what ``photometric_features`` may read)."""
        cols = [c for b in self.bands for c in (b.flux, b.ivar, b.mw_transmission)]
        return [*cols, self.ebv_column]

    def mw_transmission(self, ebv: np.ndarray) -> np.ndarray:
        """(N, B) Milky Way transmission 10^(-0.4 R E(B-V)) for ``ebv`` (N,) in magnitudes."""
        return 10.0 ** (-0.4 * np.outer(np.asarray(ebv, dtype=float), self.extinction_r))

    @cached_property
    def filters(self):
        """The speclite ``FilterSequence`` of the bands, in band order (the mock's synthetic
        photometry and ``run``'s photometry check, ``synphot``)."""
        import speclite.filters

        return speclite.filters.load_filters(*[b.filter for b in self.bands])

    def maggies_to_flux(self, maggies: np.ndarray) -> np.ndarray:
        """Maggies (AB: m = -2.5 log10 maggies) -> fluxes in this set's unit."""
        return np.asarray(maggies) * 10.0 ** (0.4 * self.zeropoint)


def resolve_columns(available: Iterable[str], wanted: Iterable[str], where: str = "table") -> dict[str, str]:
    """Map each wanted column name to its spelling in ``available``, ignoring case.

    Names with no match are left out; callers decide which absences are errors. A wanted
    name that matches two columns differing only in case (FLUX_G and flux_g) raises
    AmbiguousColumnError naming both and ``where``.
    """
    by_upper: dict[str, list[str]] = {}
    for name in available:
        by_upper.setdefault(name.upper(), []).append(name)
    found = {}
    for w in wanted:
        matches = by_upper.get(w.upper(), [])
        if len(matches) > 1:
            raise AmbiguousColumnError(
                f"{where}: columns {' and '.join(matches)} differ only in case; column names are matched "
                f"case-insensitively, so which one is {w} is ambiguous (rename or drop one)"
            )
        if matches:
            found[w] = matches[0]
    return found


class AmbiguousColumnError(ValueError):
    """Two columns differ only in case, so a case-insensitive name matches both; names them."""


class MissingColumnError(ValueError):
    """Columns a band set needs are absent; the message names them and where."""


def require_columns(available: Iterable[str], wanted: Iterable[str], where: str) -> dict[str, str]:
    """resolve_columns, raising MissingColumnError naming ``where`` and each absent column."""
    available = list(available)
    wanted = list(wanted)
    found = resolve_columns(available, wanted, where)
    absent = [w for w in wanted if w not in found]
    if absent:
        raise MissingColumnError(f"{where}: missing column(s) {', '.join(absent)}")
    return found
