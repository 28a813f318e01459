"""Files of reconstructed spectra (``specdiff-catalog spectra --out``): FITS or Zarr.

FITS (astropy), laid out like a DESI spectra file::

    PRIMARY          header: provenance, ZTYPE (which redshift), FLUXNORM (the flux unit)
    WAVELENGTH       (L,) float64 rest-frame vacuum wavelength, BUNIT = Angstrom
    FLUX             (n, L) float32 rest-frame F_lambda / median over NORMLO-NORMHI A
    OBS_WAVELENGTH   (P,) observed-frame grid, BUNIT = Angstrom   (only with --observed)
    OBS_FLUX         (n, P) float32, the same normalisation       (only with --observed)
    OBJECTS          table: OBJECT_ID, ROW, Z, Z_MEDIAN, Z_MODE, FLAGS, DN4000, HAS_LATENT

The spectra HDUs also carry their wavelength grid as a linear 1-D FITS WCS (WCSAXES = 1,
CTYPE1 = 'WAVE' (vacuum), CUNIT1 = 'Angstrom', CRVAL1, CDELT1, CRPIX1) and the primary
header DISPAXIS = 1, so specutils' ``wcs1d-fits`` reader identifies the file:
``specutils.Spectrum.read(path)`` gives the rest-frame FLUX as one Spectrum of n
spectra, ``Spectrum.read(path, hdu="OBS_FLUX")`` the observed-frame ones.

Zarr v3: the same arrays (``wavelength``, ``flux``, ``obs_wavelength``, ``obs_flux``
and the table's columns in lower case) with ``dimension_names`` and units in the
attributes, so ``xarray.open_zarr`` reads it. ``overwrite`` replaces only a spectra
group this package wrote that holds nothing but its own arrays.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import zarr
from astropy.io import fits
from upath import UPath

WAVE_UNIT = "Angstrom"
FLUX_UNIT = ""  # dimensionless: F_lambda divided by its median in the normalisation window
TABLE_UNITS = {"Z": "", "Z_MEDIAN": "", "Z_MODE": "", "DN4000": ""}
FITS_SUFFIXES = (".fits", ".fit", ".fits.gz")
TABLE_COLUMNS = ("object_id", "row", "z", "z_median", "z_mode", "flags", "dn4000", "has_latent")
ZARR_ARRAYS = ("wavelength", "flux", "obs_wavelength", "obs_flux", *TABLE_COLUMNS)


@dataclass
class ReconstructedSpectra:
    """Decoded spectra of n objects.

    object_id, row (store row), flags (n,); z_median, z_mode (n,) from the store;
    redshift: "median" | "mode", which of them ``z`` (n,) is (the redshift of the
    observed-frame spectra); wave_rest (L,) rest-frame vacuum Angstrom; flux_rest (n, L)
    float32 F_lambda / its median over norm_window (rest frame); wave_obs (P,) and
    flux_obs (n, P) on an observed grid (None when not asked), the same normalisation,
    NaN outside the redshifted rest grid; dn4000 (n,); provenance: store path, model id
    and path, trained-on-simulations flag, software version.
    """

    object_id: np.ndarray
    row: np.ndarray
    flags: np.ndarray
    z_median: np.ndarray
    z_mode: np.ndarray
    redshift: str
    z: np.ndarray
    wave_rest: np.ndarray
    flux_rest: np.ndarray
    dn4000: np.ndarray
    norm_window: tuple[float, float]
    wave_obs: np.ndarray | None = None
    flux_obs: np.ndarray | None = None
    provenance: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return self.object_id.size

    @property
    def has_latent(self) -> np.ndarray:
        """(n,) bool: the object had a latent (its spectra are finite)."""
        return np.isfinite(self.flux_rest).all(axis=1)

    def table(self) -> pd.DataFrame:
        """One row per object: object_id, row, z, z_median, z_mode, flags, dn4000, has_latent."""
        return pd.DataFrame({name: getattr(self, name) for name in TABLE_COLUMNS})


def _flux_note(spectra: ReconstructedSpectra) -> str:
    lo, hi = spectra.norm_window
    return f"F_lambda / median F_lambda over {lo:g}-{hi:g} A (rest frame)"


def _bunit_note(spectra: ReconstructedSpectra) -> str:
    """The BUNIT comment (<= 47 characters): dimensionless, and divided by what."""
    lo, hi = spectra.norm_window
    return f"F_lambda / its median, rest {lo:g}-{hi:g} A"


def _header_cards(spectra: ReconstructedSpectra) -> list[tuple[str, Any, str]]:
    p = spectra.provenance
    simulated = p.get("simulated")
    return [
        ("ORIGIN", "specdiff-catalog", "software that wrote this file"),
        ("SWVERS", str(p.get("software_version", "")), "specdiff-catalog version"),
        ("PZSTORE", str(p.get("store", "")), "output store the latents come from"),
        ("MODELID", str(p.get("model", ""))[:64], "sha256 of the model's config.json"),
        ("MODELSIM", "unknown" if simulated is None else bool(simulated), "model trained on simulations"),
        ("DEREDDEN", bool(p.get("deredden", False)), "T: intrinsic spectra, no Milky Way dust"),
        ("ZTYPE", f"z_{spectra.redshift}", "redshift of the observed-frame spectra"),
        ("FLUXNORM", _flux_note(spectra), "flux unit of FLUX and OBS_FLUX"),
        ("NORMLO", float(spectra.norm_window[0]), "[Angstrom] normalisation window, rest frame"),
        ("NORMHI", float(spectra.norm_window[1]), "[Angstrom] normalisation window, rest frame"),
        ("AIRORVAC", "vac", "vacuum wavelengths"),
        ("NOBJ", len(spectra), "number of objects"),
    ]


def _image(
    data: np.ndarray, name: str, unit: str, comment: str, wave: np.ndarray | None = None
) -> fits.ImageHDU:
    """An image HDU with BUNIT; with ``wave`` (the last axis' grid, Angstrom) also its WCS."""
    hdu = fits.ImageHDU(data, name=name)
    hdu.header["BUNIT"] = (unit, comment)
    if wave is not None:
        for key, value, note in _wavelength_wcs(wave):
            hdu.header[key] = (value, note)
    return hdu


def _wavelength_wcs(wave: np.ndarray) -> list[tuple[str, Any, str]]:
    """Header cards of the linear 1-D WCS of the grid ``wave`` (P,) Angstrom.

    Raises ValueError for a grid that is not linear to 1e-3 pixel + 1e-6 of the wavelength
    (a float32 grid's rounding): every grid this package writes (the model's rest grid,
    the DESI and model observed grids) is.
    """
    wave = np.asarray(wave, dtype=np.float64)
    step = (wave[-1] - wave[0]) / (wave.size - 1) if wave.size > 1 else 1.0
    linear = wave[0] + step * np.arange(wave.size)
    if not np.allclose(wave, linear, rtol=1e-6, atol=1e-3 * abs(step)):
        raise ValueError("spectra FITS files need a linear wavelength grid (for their FITS WCS)")
    return [
        ("WCSAXES", 1, "the wavelength axis (FITS axis 1) has a WCS"),
        ("CTYPE1", "WAVE", "vacuum wavelength"),
        ("CUNIT1", WAVE_UNIT, ""),
        ("CRPIX1", 1.0, "reference pixel (1-based)"),
        ("CRVAL1", float(wave[0]), "[Angstrom] wavelength of the reference pixel"),
        ("CDELT1", float(step), "[Angstrom] pixel step"),
    ]


def write_fits(spectra: ReconstructedSpectra, path: str | Path, *, overwrite: bool = False) -> None:
    """Write ``spectra`` as a FITS file (layout in the module docstring)."""
    primary = fits.PrimaryHDU()
    for key, value, comment in _header_cards(spectra):
        # a long string continues on CONTINUE cards; its comment would be cut, so it gets none
        primary.header[key] = (value, comment if len(str(value)) + len(comment) < 62 else "")
    primary.header["DISPAXIS"] = (1, "spectra HDUs: wavelength along FITS axis 1")
    hdus = [
        primary,
        _image(spectra.wave_rest.astype(np.float64), "WAVELENGTH", WAVE_UNIT, "rest-frame vacuum wavelength"),
        _image(
            spectra.flux_rest.astype(np.float32),
            "FLUX",
            FLUX_UNIT,
            _bunit_note(spectra),
            spectra.wave_rest,
        ),
    ]
    if spectra.wave_obs is not None and spectra.flux_obs is not None:
        hdus += [
            _image(
                spectra.wave_obs.astype(np.float64), "OBS_WAVELENGTH", WAVE_UNIT, "observed vacuum wavelength"
            ),
            _image(
                spectra.flux_obs.astype(np.float32),
                "OBS_FLUX",
                FLUX_UNIT,
                _bunit_note(spectra),
                spectra.wave_obs,
            ),
        ]
        hdus[-1].header["ZTYPE"] = (f"z_{spectra.redshift}", "redshift each spectrum is placed at")
    table = spectra.table()
    columns = [
        fits.Column(
            name=name.upper(), array=table[name].to_numpy(), format=fmt, unit=TABLE_UNITS.get(name.upper())
        )
        for name, fmt in (
            ("object_id", "K"),
            ("row", "K"),
            ("z", "D"),
            ("z_median", "E"),
            ("z_mode", "E"),
            ("flags", "J"),
            ("dn4000", "D"),
            ("has_latent", "L"),
        )
    ]
    objects = fits.BinTableHDU.from_columns(columns, name="OBJECTS")
    objects.header["ZTYPE"] = (f"z_{spectra.redshift}", "which redshift the Z column is")
    fits.HDUList([*hdus, objects]).writeto(path, overwrite=overwrite, checksum=True)


def write_zarr(spectra: ReconstructedSpectra, path: str | Path, *, overwrite: bool = False) -> None:
    """Write ``spectra`` as a Zarr v3 group (arrays with dimension_names, units in attributes).

    An existing ``path`` is replaced only with ``overwrite`` and only when it is a spectra
    group written here holding nothing else (FileExistsError otherwise)."""
    path = Path(path)
    if path.exists():
        if not overwrite:
            raise FileExistsError(f"{path} exists; use --overwrite to replace it")
        _remove_spectra_group(path)
    group = zarr.open_group(
        path,
        mode="w-",
        attributes={
            **{k.lower(): v for k, v, _ in _header_cards(spectra)},
            "flux_unit": _flux_note(spectra),
            "wavelength_unit": WAVE_UNIT,
        },
    )
    arrays: dict[str, tuple[np.ndarray, tuple[str, ...], dict[str, Any]]] = {
        "wavelength": (spectra.wave_rest, ("wavelength",), {"units": WAVE_UNIT, "frame": "rest"}),
        "flux": (spectra.flux_rest, ("object", "wavelength"), {"units": _flux_note(spectra)}),
    }
    if spectra.wave_obs is not None and spectra.flux_obs is not None:
        arrays["obs_wavelength"] = (
            spectra.wave_obs,
            ("obs_wavelength",),
            {"units": WAVE_UNIT, "frame": "observed"},
        )
        arrays["obs_flux"] = (
            spectra.flux_obs,
            ("object", "obs_wavelength"),
            {"units": _flux_note(spectra), "redshift": f"z_{spectra.redshift}"},
        )
    for name, values in spectra.table().items():
        arrays[name] = (values.to_numpy(), ("object",), {})
    for name, (values, dims, attrs) in arrays.items():
        group.create_array(name, data=np.asarray(values), dimension_names=dims, attributes=attrs)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Consolidated metadata is currently not part")
        zarr.consolidate_metadata(path)


def _remove_spectra_group(path: Path) -> None:
    """Delete a spectra group this package wrote (ORIGIN and PZSTORE attributes, only its arrays)."""
    from specdiff_catalog.io.store import remove_owned_group

    try:
        attrs = json.loads((path / "zarr.json").read_text()).get("attributes") or {}
    except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError):
        attrs = {}
    if attrs.get("origin") != "specdiff-catalog" or "pzstore" not in attrs:
        raise FileExistsError(
            f"{path} is not a spectra file written by specdiff-catalog; refusing to overwrite it"
        )
    remove_owned_group(UPath(path), ZARR_ARRAYS, "a spectra file")


def write_spectra(spectra: ReconstructedSpectra, path: str | Path, *, overwrite: bool = False) -> None:
    """FITS for .fits/.fit/.fits.gz, Zarr for .zarr; anything else is a ValueError."""
    name = str(path).lower()
    if name.endswith(FITS_SUFFIXES):
        write_fits(spectra, path, overwrite=overwrite)
    elif name.endswith(".zarr"):
        write_zarr(spectra, path, overwrite=overwrite)
    else:
        raise ValueError(f"{path}: spectra are written as FITS ({', '.join(FITS_SUFFIXES)}) or Zarr (.zarr)")
