"""Assemble a mock survey and write it in the real formats through the project's writers.

DIR/spectra/coadd-mock-NNNN.fits + redrock-mock-NNNN.fits (mock.desi_files, <= targets_per_file each),
DIR/catalog/ (io.catalog.write_hats), DIR/truth/{spectroscopic,photometric}.parquet,
DIR/truth/rest_spectra.zarr, DIR/mock.json. Spectra are made and written file by file.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from specdiff_catalog.bands import BandSet
from specdiff_catalog.mock.config import MockConfig
from specdiff_catalog.mock.footprint import PHOTOMETRIC, SPECTROSCOPIC
from specdiff_catalog.mock.imaging import imaging_catalog
from specdiff_catalog.mock.noise import SpectroNoise
from specdiff_catalog.mock.population import POPULATION_NAMES, Galaxies
from specdiff_catalog.mock.redrock import emulate_redrock, integrated_snr
from specdiff_catalog.mock.sample import SetRequest, draw_set
from specdiff_catalog.mock.spectra import (
    instrument_resolution,
    mw_transmission_spectrum,
    redshift_onto,
    rest_frame_flux,
    rest_wavelength,
)
from specdiff_catalog.mock.targets import DEEP_CLASS

# random streams: (seed, stream[, file]) -> independent generators
_POPULATION, _IMAGING, _SPECTRA, _REDROCK = 1, 2, 3, 4
COSMIC = 1 << 2  # desispec specmask bit of a cosmic-ray hit
BADPOSITION = 1 << 3  # desispec fibermask bit of a badly positioned fibre


def _rng(seed: int, *stream: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, *stream]))


def _prepare_dir(out: Path, overwrite: bool) -> None:
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{out} exists and is not empty (use --overwrite to replace a mock survey)")
        if not (out / "mock.json").exists():
            raise FileExistsError(f"{out} is not a mock survey (no mock.json): refusing to delete it")
        shutil.rmtree(out)
    for sub in ("spectra", "truth"):
        (out / sub).mkdir(parents=True, exist_ok=True)


def _draw_set(
    config: MockConfig, request: SetRequest, bandset: BandSet
) -> tuple[Galaxies, pd.DataFrame, float]:
    """Galaxies, their Legacy Surveys rows (+ TARGET_CLASS, DESI_TARGET, BGS_TARGET) and surface density."""
    kind = request.kind

    def observe(galaxies: Galaxies, rng: np.random.Generator) -> pd.DataFrame:
        return imaging_catalog(
            galaxies,
            seed=config.seed,
            kind=kind,
            bandset=bandset,
            patch=config.patch,
            noise=config.imaging_noise,
            reddening=config.reddening,
            defects=config.defects,
            fibre=config.fibre,
            rng=rng,
        )

    return draw_set(
        request,
        seed=config.seed,
        model=config.population,
        limit=config.photometric_limit,
        bandset=bandset,
        observe=observe,
        rng=_rng(config.seed, _POPULATION, kind),
    )


# truth column -> Galaxies attribute (the SPS parameters re-synthesise the spectrum: spectra.rest_frame_flux)
TRUTH_COLUMNS = {
    "LOG_MSTAR": "log_mass",
    "LOG_MFORMED": "log_mass_formed",
    "SFH_AGE": "sfh_age",
    "SFH_TAU": "sfh_tau",
    "BURST_FRACTION": "burst_fraction",
    "BURST_AGE": "burst_age",
    "LOG_SSFR": "log_ssfr",
    "METALLICITY": "metallicity",
    "LOG_U": "log_u",
    "AV": "av",
    "ETA": "eta",
    "DUST_DELTA": "dust_delta",
    "DUST_BUMP": "dust_bump",
    "VELDISP": "veldisp",
    "HALF_LIGHT_RADIUS": "half_light_radius",
    "DN4000": "dn4000",
}


def _truth(
    galaxies: Galaxies, table: pd.DataFrame, id_column: str, bandset: BandSet, aperture: np.ndarray
) -> pd.DataFrame:
    truth = {
        id_column: table["OBJECT_ID"].to_numpy(),
        "Z": galaxies.redshift,
        "TARGET_CLASS": table["TARGET_CLASS"].to_numpy(),
        "DESI_TARGET": table["DESI_TARGET"].to_numpy(),
        "BGS_TARGET": table["BGS_TARGET"].to_numpy(),
        "POPULATION": np.asarray(POPULATION_NAMES)[galaxies.population],
    }
    truth |= {column: getattr(galaxies, attr) for column, attr in TRUTH_COLUMNS.items()}
    truth["APERTURE"] = aperture
    truth |= {f"{b.flux}_TRUE": galaxies.flux[:, i] for i, b in enumerate(bandset.bands)}
    return pd.DataFrame(truth)


def galaxies_from_truth(truth: pd.DataFrame) -> Galaxies:
    """The Galaxies of truth-table rows (what ``spectra.rest_frame_flux`` needs to re-synthesise them)."""
    columns = {attr: truth[column].to_numpy(np.float64) for column, attr in TRUTH_COLUMNS.items()}
    n = len(truth)
    return Galaxies(
        redshift=truth["Z"].to_numpy(np.float64),
        population=(truth["POPULATION"].to_numpy() == POPULATION_NAMES[1]).astype(np.int8),
        flux=np.full((n, 0), np.nan),
        **columns,
    )


def _fibermap(table: pd.DataFrame, fiberstatus: np.ndarray, config: MockConfig) -> pd.DataFrame:
    """DESI FIBERMAP rows from Legacy Surveys rows: the fibermap's own names, PHOTSYS S."""
    from specdiff_catalog.mock.desi_files import FIBERMAP_SCHEMA

    renamed = table.rename(
        columns={
            "OBJECT_ID": "TARGETID",
            "RA": "TARGET_RA",
            "DEC": "TARGET_DEC",
            "OBJID": "BRICK_OBJID",
            "TYPE": "MORPHTYPE",
        }
    )
    fibermap = renamed[[c for c in renamed.columns if c in FIBERMAP_SCHEMA]].copy()
    for band in ("G", "R", "Z"):
        if f"FIBERFLUX_{band}" in fibermap:
            fibermap[f"FIBERTOTFLUX_{band}"] = fibermap[f"FIBERFLUX_{band}"]
    return fibermap.assign(
        COADD_FIBERSTATUS=fiberstatus,
        OBJTYPE="TGT",
        PHOTSYS="S",
        COADD_NUMEXP=config.spectro_noise.n_exposures,
        COADD_EXPTIME=table["TARGET_CLASS"].map(config.exptime).to_numpy(np.float32),
    )


def _cosmic_mask(n: int, npix: int, rate: float, rng: np.random.Generator) -> np.ndarray:
    """(n, npix) int32 mask with Poisson(rate) cosmic-ray tracks of 2-4 pixels per spectrum."""
    mask = np.zeros((n, npix), np.int32)
    hits = rng.poisson(rate, n)
    rows = np.repeat(np.arange(n), hits)
    start = rng.integers(0, npix - 4, len(rows))
    width = rng.integers(2, 5, len(rows))
    for offset in range(4):
        keep = offset < width
        mask[rows[keep], start[keep] + offset] = COSMIC
    return mask


def _observe_by_class(
    arm: str,
    wave: np.ndarray,
    clean: np.ndarray,
    classes: np.ndarray,
    noise: dict[str, SpectroNoise],
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(noisy flux, ivar, variance), each (N, P), with each target class's exposure time."""
    flux = np.empty(clean.shape, np.float32)
    ivar = np.empty(clean.shape, np.float32)
    variance = np.empty(clean.shape)
    for name, model in noise.items():
        rows = classes == name
        if rows.any():
            flux[rows], ivar[rows] = model.observe(arm, wave, clean[rows], rng)
            variance[rows] = model.variance(arm, wave, clean[rows])
    return flux, ivar, variance


def _write_spectra_file(
    index: int,
    rows: np.ndarray,
    galaxies: Galaxies,
    table: pd.DataFrame,
    aperture: np.ndarray,
    ebv_column: str,
    config: MockConfig,
    out: Path,
) -> pd.DataFrame:
    """Make, write and return the redrock rows of one coadd/redrock file pair."""
    from specdiff_catalog.io.desi import ARM_WAVE
    from specdiff_catalog.mock.desi_files import write_coadd, write_redrock

    rng = _rng(config.seed, _SPECTRA, index)
    g = galaxies.take(rows)
    fiberstatus = np.where(rng.uniform(size=len(rows)) < config.bad_fiber_fraction, BADPOSITION, 0).astype(
        np.int32
    )
    light = aperture[rows] * np.where(fiberstatus != 0, rng.uniform(0.1, 0.7, len(rows)), 1.0)
    ebv = np.nan_to_num(table[ebv_column].to_numpy()[rows], nan=0.0)
    rest, rest_wave = rest_frame_flux(g), rest_wavelength()
    classes = table["TARGET_CLASS"].to_numpy()[rows]
    noise = {c: dataclasses.replace(config.spectro_noise, exptime=t) for c, t in config.exptime.items()}
    flux, ivar, mask, noiseless, variance = {}, {}, {}, {}, {}
    for arm, wave in ARM_WAVE.items():
        clean = redshift_onto(rest, rest_wave, g.redshift, wave)
        clean *= light[:, None] * mw_transmission_spectrum(wave, ebv)
        clean = instrument_resolution(clean, config.resolution_sigma_pix[arm])
        flux[arm], ivar[arm], variance[arm] = _observe_by_class(arm, wave, clean, classes, noise, rng)
        mask[arm] = _cosmic_mask(len(rows), len(wave), config.cosmics_per_arm, rng)
        ivar[arm][mask[arm] != 0] = 0.0
        noiseless[arm] = clean
    fibermap = _fibermap(table.iloc[rows], fiberstatus, config)
    redshifts = emulate_redrock(
        fibermap["TARGETID"].to_numpy(),
        g.redshift,
        integrated_snr(noiseless, variance),
        _rng(config.seed, _REDROCK, index),
        config.redrock,
    )
    header = {"SURVEY": "mock", "PROGRAM": "dark", "SPGRP": "mock", "SEED": config.seed}
    write_coadd(
        out / "spectra" / f"coadd-mock-{index:04d}.fits",
        fibermap,
        flux,
        ivar,
        mask,
        header=header,
        resolution_sigma_pix=config.resolution_sigma_pix,
    )
    write_redrock(out / "spectra" / f"redrock-mock-{index:04d}.fits", redshifts, fibermap, header=header)
    return redshifts.assign(
        COADD_FIBERSTATUS=fiberstatus, FILE=f"coadd-mock-{index:04d}.fits", ROW=np.arange(len(rows))
    )


def _write_rest_spectra(path: Path, galaxies: Galaxies, targetid: np.ndarray, aperture: np.ndarray) -> None:
    """The noiseless rest-frame spectra of the first galaxies as a Zarr v3 group."""
    import zarr

    wave = rest_wavelength()
    group = zarr.open_group(path, mode="w")
    group.attrs.update(
        {
            "description": "noiseless rest-frame spectra r(lambda) of the first spectroscopic targets; "
            "the noiseless observed spectrum of arm A is "
            "R_A @ [APERTURE * MW(lambda) * r(lambda / (1 + Z))], "
            "R_A the arm's resolution matrix (the coadd's A_RESOLUTION)",
            "flux_unit": "1e-17 erg/s/cm^2/Angstrom",
            "wavelength_unit": "Angstrom (vacuum, rest frame)",
        }
    )
    group.create_array("wavelength", data=wave, dimension_names=("wavelength",))
    group.create_array("targetid", data=targetid, dimension_names=("object",))
    group.create_array("z", data=galaxies.redshift, dimension_names=("object",))
    group.create_array("aperture", data=aperture, dimension_names=("object",))
    flux = group.create_array(
        "flux",
        shape=(len(galaxies), len(wave)),
        dtype="float32",
        chunks=(min(len(galaxies), 100) or 1, len(wave)),
        dimension_names=("object", "wavelength"),
    )
    for start in range(0, len(galaxies), 100):
        part = galaxies.take(np.arange(start, min(start + 100, len(galaxies))))
        flux[start : start + len(part)] = rest_frame_flux(part)


def _versions() -> dict[str, str]:
    from specdiff_catalog import __version__

    packages = ("bagpipes", "astropy", "numpy", "speclite", "hats", "desiutil", "zarr")
    return {"specdiff_catalog": __version__} | {p: version(p) for p in packages}


def make_mock_survey(
    out: str | Path, config: MockConfig | None = None, *, overwrite: bool = False
) -> dict[str, Any]:
    """Write a mock survey into ``out`` (layout in docs/mock.md; config default ``MockConfig()``);
    returns the mock.json summary.

    BLAS runs single-threaded meanwhile: the synthesis's matrix products are small (galaxies x
    ~100 ages x ~500 bins), and threaded BLAS spent 4x the CPU time for the same wall time.
    """
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        return _make_mock_survey(Path(out), config or MockConfig(), overwrite)


def _make_mock_survey(out: Path, config: MockConfig, overwrite: bool) -> dict[str, Any]:
    from specdiff_catalog.io.catalog import write_hats

    started = time.perf_counter()
    config.validate()
    _prepare_dir(out, overwrite)
    bandset = BandSet.load(config.bands)

    phot, phot_table, phot_density = _draw_set(config, SetRequest(PHOTOMETRIC, n_any=config.n_phot), bandset)
    catalog_only = [c for c in phot_table if c.startswith("FIBERFLUX_")] + [
        "TARGET_CLASS",
        "DESI_TARGET",
        "BGS_TARGET",
    ]
    catalog = write_hats(
        phot_table.drop(columns=catalog_only),
        out / "catalog",
        order=config.order,
        catalog_name="mock_ls_dr10_south",
        extra_properties={"obs_title": f"specdiff-catalog mock survey, seed {config.seed}"},
    )
    phot_aperture = config.fibre.aperture(phot.half_light_radius, phot.population)
    _truth(phot, phot_table, "OBJECT_ID", bandset, phot_aperture).to_parquet(
        out / "truth" / "photometric.parquet"
    )

    spec, spec_table, target_density = _draw_set(
        config, SetRequest(SPECTROSCOPIC, n_targets=config.n_spec, n_any=config.n_deep), bandset
    )
    spec_table.loc[config.n_spec :, "TARGET_CLASS"] = DEEP_CLASS  # the deep field's rows come last
    aperture = config.fibre.aperture(spec.half_light_radius, spec.population)
    redrock = [
        _write_spectra_file(
            i,
            np.arange(start, min(start + config.targets_per_file, len(spec))),
            spec,
            spec_table,
            aperture,
            bandset.ebv_column,
            config,
            out,
        )
        for i, start in enumerate(range(0, len(spec), config.targets_per_file))
    ]
    fits = pd.concat(redrock, ignore_index=True)
    truth = _truth(spec, spec_table, "TARGETID", bandset, aperture)
    truth = truth.join(
        fits[["Z", "ZWARN", "COADD_FIBERSTATUS", "FILE", "ROW"]].rename(columns={"Z": "Z_REDROCK"})
    )
    truth.to_parquet(out / "truth" / "spectroscopic.parquet")
    n_rest = min(config.n_rest_spectra, len(spec))
    _write_rest_spectra(
        out / "truth" / "rest_spectra.zarr",
        spec.take(np.arange(n_rest)),
        truth["TARGETID"].to_numpy()[:n_rest],
        aperture[:n_rest],
    )

    summary = {
        "config": dataclasses.asdict(config),
        "versions": _versions(),
        "counts": {
            "n_spec": config.n_spec,
            "n_deep": config.n_deep,
            "n_phot": len(phot),
            "spectra_files": len(redrock),
            "catalog_partitions": len(catalog.partitions),
            "rest_spectra": n_rest,
            "zwarn_nonzero": int((fits["ZWARN"] != 0).sum()),
            "fiberstatus_nonzero": int((fits["COADD_FIBERSTATUS"] != 0).sum()),
            "target_class": truth["TARGET_CLASS"].value_counts().to_dict(),
        },
        "surface_density_deg2": {"catalog": round(phot_density, 1), "targets": round(target_density, 1)},
        "seconds": round(time.perf_counter() - started, 1),
    }
    (out / "mock.json").write_text(json.dumps(summary, indent=2, default=str))
    return summary
