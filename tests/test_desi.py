"""DESI coadd/redrock I/O: the real files, write (mock.desi_files) -> read round trips, bad input."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
from astropy.io import fits

from specdiff_catalog.io.desi import ARM_WAVE, ARMS, WAVE, read_coadd, read_redrock, redrock_path_for
from specdiff_catalog.mock.desi_files import (
    DEFAULT_RESOLUTION_SIGMA_PIX,
    FLUX_BUNIT,
    resolution_diagonals,
    write_coadd,
    write_redrock,
)
from tests._desi_files import arm_spectra, fibermap, write_pair

REAL = {  # README of ../shared/data/desi
    "coadd-4-80613-thru20210324.fits": (39633345008634465, 0.3687),
    "coadd-special-dark-27247.fits": (39089837499744649, 0.0073),
}


def _merged_index(wave: float) -> int:
    return round((wave - WAVE[0]) / 0.8)


def _arm_index(arm: str, wave: float) -> int:
    return round((wave - ARM_WAVE[arm][0]) / 0.8)


# ------------------------------------------------------------------ real DESI files


def test_grids_match_the_desi_arms():
    assert [ARM_WAVE[a].size for a in ARMS] == [2751, 2326, 2881]
    assert WAVE.size == 7781 and WAVE[0] == 3600.0 and WAVE[-1] == pytest.approx(9824.0, abs=1e-9)


@pytest.mark.realdata
@pytest.mark.parametrize("name", sorted(REAL))
def test_real_coadd_and_redrock(real_desi_dir, name):
    coadd = read_coadd(real_desi_dir / name)
    targetid, z = REAL[name]
    assert coadd.targetid.tolist() == [targetid] and coadd.targetid.dtype == np.int64
    assert coadd.wave.shape == (7781,) and coadd.wave[0] == 3600.0 and coadd.wave[-1] == pytest.approx(9824.0)
    assert coadd.flux.shape == coadd.ivar.shape == (1, 7781) and coadd.flux.dtype == np.float32
    assert coadd.flux.dtype.isnative and coadd.fibermap["TARGETID"].dtype.isnative
    assert (coadd.ivar > 0).all()  # no masked pixels in these two files
    with fits.open(real_desi_dir / name) as hdul:  # the real arm grids equal ours
        for arm in ARMS:
            np.testing.assert_allclose(hdul[f"{arm.upper()}_WAVELENGTH"].data, ARM_WAVE[arm], atol=1e-6)
    redshifts = read_redrock(redrock_path_for(real_desi_dir / name))
    assert redshifts["TARGETID"].tolist() == [targetid]
    assert redshifts["Z"].iloc[0] == pytest.approx(z, abs=5e-5)
    assert redshifts["SPECTYPE"].tolist() == ["GALAXY"] and redshifts["ZWARN"].tolist() == [0]
    assert redshifts["COEFF"].iloc[0].shape == (10,)


@pytest.mark.realdata
@pytest.mark.parametrize("name", sorted(REAL))
def test_real_overlaps_are_ivar_weighted_means(real_desi_dir, name):
    coadd = read_coadd(real_desi_dir / name)
    with fits.open(real_desi_dir / name) as hdul:
        arm = {
            a: (
                hdul[f"{a.upper()}_FLUX"].data[0].astype(float),
                hdul[f"{a.upper()}_IVAR"].data[0].astype(float),
            )
            for a in ARMS
        }
    for wave, (a1, a2) in ((5780.0, ("b", "r")), (7560.0, ("r", "z"))):
        f1, i1 = (v[_arm_index(a1, wave)] for v in arm[a1])
        f2, i2 = (v[_arm_index(a2, wave)] for v in arm[a2])
        j = _merged_index(wave)
        assert coadd.ivar[0, j] == pytest.approx(i1 + i2, rel=1e-6)
        assert coadd.flux[0, j] == pytest.approx((f1 * i1 + f2 * i2) / (i1 + i2), rel=1e-6)
        assert min(f1, f2) <= coadd.flux[0, j] <= max(f1, f2)
    for wave, a in ((4500.0, "b"), (6800.0, "r"), (9000.0, "z")):  # one arm only: its own value
        assert coadd.flux[0, _merged_index(wave)] == arm[a][0][_arm_index(a, wave)]
        assert coadd.ivar[0, _merged_index(wave)] == arm[a][1][_arm_index(a, wave)]


@pytest.mark.realdata
def test_real_mask_sets_ivar_to_zero(real_desi_dir, tmp_path):
    name = "coadd-4-80613-thru20210324.fits"
    path = tmp_path / name
    shutil.copy(real_desi_dir / name, path)
    only_b, overlap = 4500.0, 5780.0
    with fits.open(path, mode="update") as hdul:
        hdul["B_MASK"].data[0, [_arm_index("b", only_b), _arm_index("b", overlap)]] = 1
        r_flux = hdul["R_FLUX"].data[0, _arm_index("r", overlap)]
        r_ivar = hdul["R_IVAR"].data[0, _arm_index("r", overlap)]
        hdul.flush(output_verify="fix")
    coadd = read_coadd(path)
    assert coadd.ivar[0, _merged_index(only_b)] == 0 and coadd.flux[0, _merged_index(only_b)] == 0
    assert coadd.flux[0, _merged_index(overlap)] == r_flux and coadd.ivar[0, _merged_index(overlap)] == r_ivar
    assert (coadd.ivar[0] == 0).sum() == 1


@pytest.mark.realdata
def test_written_files_have_the_real_layout(real_desi_dir, tmp_path):
    """Re-write a real coadd with write_coadd: same HDUs in the same order, same SCORES."""
    real = real_desi_dir / "coadd-special-dark-27247.fits"
    with fits.open(real) as hdul:
        flux = {a: hdul[f"{a.upper()}_FLUX"].data.astype(np.float32) for a in ARMS}
        ivar = {a: hdul[f"{a.upper()}_IVAR"].data.astype(np.float32) for a in ARMS}
        real_hdus = [h.name for h in hdul]
        real_scores = hdul["SCORES"].data
        real_formats = {c.name: c.format for c in hdul["FIBERMAP"].columns}
        real_units = {c.name: c.unit for c in hdul["FIBERMAP"].columns}
    fm = read_coadd(real).fibermap
    write_coadd(tmp_path / "coadd-x.fits", fm, flux, ivar)
    write_redrock(tmp_path / "redrock-x.fits", read_redrock(redrock_path_for(real)), fm)
    with fits.open(tmp_path / "coadd-x.fits") as hdul:
        assert [h.name for h in hdul] == real_hdus
        assert {c.name: c.format for c in hdul["FIBERMAP"].columns} == real_formats
        assert {c.name: c.unit for c in hdul["FIBERMAP"].columns} == real_units
        for col in ("INTEG_COADD_FLUX_B", "MEDIAN_COADD_FLUX_R", "MEDIAN_COADD_SNR_Z"):  # desispec.specscore
            assert hdul["SCORES"].data[col][0] == pytest.approx(real_scores[col][0], rel=1e-6)
    with fits.open(tmp_path / "redrock-x.fits") as mine, fits.open(redrock_path_for(real)) as theirs:
        assert [h.name for h in mine] == [h.name for h in theirs]
        assert [(c.name, c.format) for c in mine["REDSHIFTS"].columns] == [
            (c.name, c.format) for c in theirs["REDSHIFTS"].columns
        ]


@pytest.mark.realdata
def test_default_resolution_matches_the_real_kernels(real_desi_dir):
    with fits.open(real_desi_dir / "coadd-special-dark-27247.fits") as hdul:
        for arm in ARMS:
            real = np.median(hdul[f"{arm.upper()}_RESOLUTION"].data[0], axis=1)
            ours = resolution_diagonals(DEFAULT_RESOLUTION_SIGMA_PIX[arm], 1)[:, 0]
            np.testing.assert_allclose(ours, real, atol=0.02)


def test_resolution_diagonals_are_normalised_gaussians():
    sigma = np.linspace(0.7, 1.2, 50)
    diags = resolution_diagonals(sigma, 50)
    assert diags.shape == (11, 50) and diags.dtype == np.float32
    np.testing.assert_allclose(diags.sum(axis=0), 1.0, rtol=1e-6)
    np.testing.assert_allclose(diags, diags[::-1], rtol=1e-6)  # symmetric about offset 0 (row 5)
    assert (diags.argmax(axis=0) == 5).all() and diags[5, 0] > diags[5, -1]  # wider kernel, lower peak


# ------------------------------------------------------------------ write -> read


def test_round_trip(tmp_path):
    n = 4
    fm = fibermap(np.array([11, 12, 13, 14]), COADD_FIBERSTATUS=np.array([0, 0, 8, 0]))
    flux, ivar = arm_spectra(n)
    # known merge: b = 1 (ivar 4), r = 3 (ivar 4) in the b/r overlap -> 2 (ivar 8)
    flux["b"][:, _arm_index("b", 5780.0)], ivar["b"][:, _arm_index("b", 5780.0)] = 1.0, 4.0
    flux["r"][:, _arm_index("r", 5780.0)], ivar["r"][:, _arm_index("r", 5780.0)] = 3.0, 4.0
    mask = {a: np.zeros(flux[a].shape, np.int32) for a in ARMS}
    mask["z"][1, _arm_index("z", 9000.0)] = 1024
    mask["r"][2, _arm_index("r", 5780.0)] = 1
    write_coadd(tmp_path / "coadd-t.fits", fm, flux, ivar, mask)
    coadd = read_coadd(tmp_path / "coadd-t.fits")

    assert coadd.targetid.tolist() == [11, 12, 13, 14]
    for arm, wave in (("b", 4000.0), ("r", 7000.0), ("z", 9500.0)):  # single-arm pixels come back exactly
        j, i = _merged_index(wave), _arm_index(arm, wave)
        np.testing.assert_array_equal(coadd.flux[:, j], flux[arm][:, i])
        np.testing.assert_array_equal(coadd.ivar[:, j], ivar[arm][:, i])
    j = _merged_index(5780.0)
    np.testing.assert_allclose(coadd.flux[:, j], [2.0, 2.0, 1.0, 2.0])  # row 2: r masked, b alone
    np.testing.assert_allclose(coadd.ivar[:, j], [8.0, 8.0, 4.0, 8.0])
    assert coadd.ivar[1, _merged_index(9000.0)] == 0 and coadd.flux[1, _merged_index(9000.0)] == 0
    assert (coadd.ivar == 0).sum() == 1

    back = coadd.fibermap
    for column in fm.columns:
        np.testing.assert_array_equal(back[column].to_numpy(), fm[column].to_numpy())
    assert back["TARGETID"].dtype == np.int64 and back["COADD_FIBERSTATUS"].dtype == np.int32
    assert back["FLUX_G"].dtype == np.float32 and back["TARGET_RA"].dtype == np.float64
    with fits.open(tmp_path / "coadd-t.fits") as hdul:
        assert (
            hdul["B_FLUX"].header["BUNIT"] == FLUX_BUNIT
            and hdul["R_WAVELENGTH"].header["BUNIT"] == "Angstrom"
        )
        assert hdul["Z_MASK"].data.dtype.kind == "i" and hdul["Z_MASK"].data.dtype.itemsize == 4
        assert hdul["B_RESOLUTION"].data.shape == (n, 11, 2751)
        formats = {c.name: c.format for c in hdul["FIBERMAP"].columns}
        assert (
            formats["TARGETID"] == "K" and formats["COADD_FIBERSTATUS"] == "J" and formats["PHOTSYS"] == "1A"
        )
        assert hdul["SCORES"].data["TARGETID"].tolist() == [11, 12, 13, 14]
        assert len(hdul["EXP_FIBERMAP"].data) == n


def test_redrock_round_trip(tmp_path):
    fm = fibermap(np.array([5, 6]))
    redshifts = pd.DataFrame(
        {
            "TARGETID": [5, 6],
            "Z": [0.25, 0.5],
            "SPECTYPE": ["GALAXY", "QSO"],
            "COEFF": [np.arange(10.0), -np.arange(10.0)],
        }
    )
    write_redrock(tmp_path / "redrock-t.fits", redshifts, fm)
    back = read_redrock(tmp_path / "redrock-t.fits")
    assert back["TARGETID"].tolist() == [5, 6] and back["Z"].tolist() == [0.25, 0.5]
    assert back["SPECTYPE"].tolist() == ["GALAXY", "QSO"] and back["ZWARN"].tolist() == [0, 0]
    np.testing.assert_array_equal(back["COEFF"].iloc[1], -np.arange(10.0))
    with fits.open(tmp_path / "redrock-t.fits") as hdul:
        assert [h.name for h in hdul] == ["PRIMARY", "REDSHIFTS", "FIBERMAP", "EXP_FIBERMAP", "TSNR2"]
        assert hdul["REDSHIFTS"].columns["SPECTYPE"].format == "6A"


def test_writer_refuses_bad_shapes_and_existing_files(tmp_path):
    fm = fibermap(np.array([1, 2]))
    flux, ivar = arm_spectra(2)
    with pytest.raises(ValueError, match=r"flux\['r'\] has shape \(2, 100\)"):
        write_coadd(tmp_path / "coadd-a.fits", fm, {**flux, "r": np.zeros((2, 100))}, ivar)
    write_coadd(tmp_path / "coadd-a.fits", fm, flux, ivar)
    with pytest.raises(OSError):
        write_coadd(tmp_path / "coadd-a.fits", fm, flux, ivar)
    write_coadd(tmp_path / "coadd-a.fits", fm, flux, ivar, overwrite=True)


# ------------------------------------------------------------------ bad input


def test_truncated_file_names_the_file(tmp_path):
    good = write_pair(tmp_path, "g", np.array([1, 2]), [0.1, 0.2])
    data = good.read_bytes()
    truncated = tmp_path / "coadd-cut.fits"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(OSError, match=r"coadd-cut.fits.*truncated"):
        read_coadd(truncated)
    garbage = tmp_path / "coadd-garbage.fits"
    garbage.write_bytes(b"not a FITS file" * 300)
    with pytest.raises(OSError, match=r"coadd-garbage.fits"):
        read_coadd(garbage)


def test_corrupted_data_fails_its_checksum(tmp_path):
    good = write_pair(tmp_path, "g", np.array([1, 2]), [0.1, 0.2])
    with fits.open(good) as hdul:
        start = hdul.fileinfo(hdul.index_of("R_FLUX"))["datLoc"]
    data = bytearray(good.read_bytes())
    data[start + 100] ^= 0xFF
    bad = tmp_path / "coadd-flip.fits"
    bad.write_bytes(bytes(data))
    with pytest.raises(OSError, match=r"coadd-flip.fits: HDU R_FLUX fails its DATASUM checksum"):
        read_coadd(bad)


def test_missing_hdu_and_column_are_named(tmp_path):
    good = write_pair(tmp_path, "g", np.array([1, 2]), [0.1, 0.2])
    with fits.open(good) as hdul:
        del hdul["R_IVAR"]
        hdul.writeto(tmp_path / "coadd-nohdu.fits")
    with pytest.raises(ValueError, match=r"coadd-nohdu.fits: missing HDU R_IVAR"):
        read_coadd(tmp_path / "coadd-nohdu.fits")
    with fits.open(redrock_path_for(good)) as hdul:
        table = hdul["REDSHIFTS"].data
        cols = [c for c in hdul["REDSHIFTS"].columns if c.name != "Z"]
        hdul["REDSHIFTS"] = fits.BinTableHDU.from_columns(
            [fits.Column(name=c.name, format=c.format, array=table[c.name]) for c in cols], name="REDSHIFTS"
        )
        hdul.writeto(tmp_path / "redrock-noz.fits")
    with pytest.raises(ValueError, match=r"redrock-noz.fits: HDU REDSHIFTS lacks column.*Z"):
        read_redrock(tmp_path / "redrock-noz.fits")
    with pytest.raises(FileNotFoundError, match=r"redrock-none.fits"):
        read_redrock(tmp_path / "redrock-none.fits")


def test_off_grid_wavelengths_are_refused(tmp_path):
    good = write_pair(tmp_path, "g", np.array([1]), [0.1])
    with fits.open(good) as hdul:
        hdul["B_WAVELENGTH"].data = hdul["B_WAVELENGTH"].data + 0.3
        hdul.writeto(tmp_path / "coadd-shift.fits", checksum=True)
    with pytest.raises(ValueError, match=r"B_WAVELENGTH is not on the DESI 0.8 A grid"):
        read_coadd(tmp_path / "coadd-shift.fits")


def test_redrock_path_for(tmp_path):
    assert redrock_path_for("/a/b/coadd-main-dark-123.fits").as_posix() == "/a/b/redrock-main-dark-123.fits"
    assert redrock_path_for(tmp_path / "coadd-x.fits.gz") == tmp_path / "redrock-x.fits.gz"
    (tmp_path / "redrock-x.fits").touch()
    assert redrock_path_for(tmp_path / "coadd-x.fits.gz") == tmp_path / "redrock-x.fits"
    with pytest.raises(ValueError, match="starts with 'coadd-'"):
        redrock_path_for("/a/spectra-1.fits")
