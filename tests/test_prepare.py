"""prepare: DESI files -> training set, on the real files and on files written by mock.desi_files."""

from __future__ import annotations

import json

import numpy as np
import pytest
from astropy.io import fits

from specdiff_catalog.bands import BandSet
from specdiff_catalog.cli import main
from specdiff_catalog.flags import Flag
from specdiff_catalog.hashing import validation_mask
from specdiff_catalog.io.desi import WAVE, read_coadd
from specdiff_catalog.io.trainset import TrainingSet, TrainingSetWriter
from specdiff_catalog.training.prepare import prepare_training_set
from tests._desi_files import write_pair

NO_PHOT = Flag.ALL_ZERO_PHOTOMETRY | Flag.NO_PHOTOMETRY | Flag.MISSING_BAND


@pytest.mark.realdata
def test_prepare_real_files(real_desi_dir, tmp_path):
    report = prepare_training_set(real_desi_dir, tmp_path / "train")
    assert report.n_kept == 2 and not report.failed_files
    ts = TrainingSet.open(tmp_path / "train")
    objects = ts.objects.set_index("TARGETID")
    assert sorted(objects.index) == [39089837499744649, 39633345008634465]
    assert objects.loc[39633345008634465, "Z"] == pytest.approx(0.3687, abs=5e-5)
    assert objects.loc[39089837499744649, "Z"] == pytest.approx(0.0073, abs=5e-5)
    # the first has all five bands measured (ivar > 0): no flag at all
    assert objects.loc[39633345008634465, "FLAGS"] == 0
    assert objects.loc[39633345008634465, "FLUX_G"] == pytest.approx(3.24, abs=0.005)
    assert objects.loc[39633345008634465, "PHOTSYS"] == "N"
    # the second has no Legacy Surveys match: every FLUX_* and FLUX_IVAR_* is 0
    assert objects.loc[39089837499744649, "FLAGS"] == NO_PHOT
    assert report.flagged["NO_PHOTOMETRY"] == 1 and report.flagged["ALL_ZERO_PHOTOMETRY"] == 1
    np.testing.assert_array_equal(ts.wave, WAVE)
    row = int(objects.loc[39633345008634465, "ROW"])
    flux, ivar = ts.read(np.array([row]))
    coadd = read_coadd(real_desi_dir / "coadd-4-80613-thru20210324.fits")
    np.testing.assert_array_equal(flux[0], coadd.flux[0])
    np.testing.assert_array_equal(ivar[0], coadd.ivar[0])
    summary = json.loads((tmp_path / "train" / "trainset.json").read_text())
    assert summary["source_files"] == ["coadd-4-80613-thru20210324.fits", "coadd-special-dark-27247.fits"]
    assert summary["selection"]["z_max"] is None and summary["bands"] == BandSet.load("ls-grzw1w2").to_dict()


def _survey(directory, n_files=5, per_file=6):
    """n_files coadd/redrock pairs in nested folders; in each file row 1 has ZWARN 4 and
    row 2 z = -0.002 (below the default z_min 0); the last file also has one target
    missing from redrock."""
    expected = []
    for k in range(n_files):
        targetid = np.arange(per_file) + 1000 * (k + 1)
        z = np.linspace(0.05, 1.6, per_file)
        z[2] = -0.002
        zwarn = np.zeros(per_file, np.int64)
        zwarn[1] = 4
        rows = np.arange(per_file - 1) if k == n_files - 1 else None
        folder = directory / f"{k % 2}" / f"{k:02d}"
        write_pair(folder, f"main-dark-{k}", targetid, z, seed=k, zwarn=zwarn, redrock_rows=rows)
        kept = [i for i in range(per_file) if i not in (1, 2) and (rows is None or i in rows)]
        expected.append((f"{k % 2}/{k:02d}/coadd-main-dark-{k}.fits", targetid[kept], z[kept]))
    return sorted(expected)


def test_prepare_streams_files_in_order(tmp_path, monkeypatch):
    expected = _survey(tmp_path / "desi")
    appends = []
    original = TrainingSetWriter.append

    def spy(self, flux, ivar, objects):
        appends.append(len(objects))
        return original(self, flux, ivar, objects)

    monkeypatch.setattr(TrainingSetWriter, "append", spy)
    report = prepare_training_set(tmp_path / "desi", tmp_path / "train")

    assert appends == [len(ids) for _, ids, _ in expected]  # one append per file: streamed
    assert report.files_read == [source for source, _, _ in expected]
    assert report.n_spectra == 30 and report.n_kept == 19
    assert report.rejected == {
        "missing_redshift": 1,
        "fiberstatus": 0,
        "zwarn": 5,
        "spectype": 0,
        "z_range": 5,
    }
    ts = TrainingSet.open(tmp_path / "train")
    objects = ts.objects
    np.testing.assert_array_equal(objects["TARGETID"], np.concatenate([ids for _, ids, _ in expected]))
    np.testing.assert_allclose(objects["Z"], np.concatenate([z for _, _, z in expected]))
    assert objects["SOURCE_FILE"].tolist() == [s for s, ids, _ in expected for _ in ids]
    assert objects["ROW"].tolist() == list(range(19))
    np.testing.assert_array_equal(objects["SPLIT"] == "val", validation_mask(objects["TARGETID"].to_numpy()))
    assert (objects["FLAGS"] == 0).all() and objects["FLAGS"].dtype == np.uint16
    # spectra row by row equal the coadds' merged spectra
    first = read_coadd(tmp_path / "desi" / expected[0][0])
    flux, ivar = ts.read(np.arange(len(expected[0][1])))
    keep = np.isin(first.targetid, expected[0][1])
    np.testing.assert_array_equal(flux, first.flux[keep])
    np.testing.assert_array_equal(ivar, first.ivar[keep])
    summary = json.loads((tmp_path / "train" / "trainset.json").read_text())
    assert summary["n_objects"] == 19 and summary["rejected"]["zwarn"] == 5
    assert summary["flagged"]["NO_PHOTOMETRY"] == 0 and summary["failed_files"] == {}
    # every cut above 3% of the 30 spectra is a warning, also in trainset.json: 1 missing
    # redshift is 3.3%, 5 ZWARN and 5 z_range are 16.7% each
    assert [w.split(" cut removed ")[0] for w in summary["warnings"]] == [
        "prepare: the missing_redshift",
        "prepare: the zwarn",
        "prepare: the z_range",
    ]
    assert "removed 5 of 30 spectra (16.7%)" in summary["warnings"][2]


def test_every_good_galaxy_to_z_1_6_is_kept_by_default_and_the_rest_grid_follows(tmp_path, capsys):
    """Issue 14 item 1: DESI's galaxies reach z ~ 1.7; `prepare` with its defaults keeps every
    GALAXY with ZWARN 0 (before: z < 0.8 only), and the autoencoder's rest grid covers them."""
    from specdiff_catalog.models.autoencoder import AutoencoderConfig
    from specdiff_catalog.training.autoencoder import build_autoencoder

    rng = np.random.default_rng(3)
    z = np.sort(rng.uniform(0.001, 1.6, 40))
    z[-1] = 1.6
    spectype = ["QSO", "STAR"] + ["GALAXY"] * 38
    order = rng.permutation(40)
    write_pair(tmp_path / "desi", "wide", np.arange(40) + 7, z[order], spectype=[spectype[i] for i in order])
    assert main(["prepare", "--desi", str(tmp_path / "desi"), "--out", str(tmp_path / "train")]) == 0
    out, err = capsys.readouterr()
    assert "training set" in out and "z_range                  0 (0.0%)" in out
    assert "WARNING: prepare: the spectype cut removed 2 of 40 spectra (5.0%)" in err
    ts = TrainingSet.open(tmp_path / "train")
    kept = np.sort(ts.objects["Z"].to_numpy())
    np.testing.assert_allclose(kept, z[2:], rtol=1e-6)  # every galaxy, z up to 1.6
    model = build_autoencoder(ts, AutoencoderConfig(rebin=4, rest_step=4.0))
    wave_obs, wave_rest = model.wave_obs.numpy(), model.wave_rest.numpy()
    assert wave_rest[0] == pytest.approx(wave_obs[0] / (1 + kept.max()), abs=1e-3)  # 1385 A for z = 1.6
    assert wave_rest[-1] == pytest.approx(wave_obs[-1] / (1 + kept.min()), abs=1e-3)
    assert 1380 < wave_rest[0] < 1390


def test_bad_photometry_is_kept_and_flagged(tmp_path):
    zeros = np.zeros(3, np.float32)
    write_pair(
        tmp_path / "desi",
        "a",
        np.array([1, 2, 3]),
        [0.1, 0.2, 0.3],
        FLUX_G=np.array([0, 5, 5], np.float32),
        FLUX_R=np.array([0, 5, 5], np.float32),
        FLUX_Z=np.array([0, 5, 5], np.float32),
        FLUX_W1=zeros,
        FLUX_W2=zeros,
        FLUX_IVAR_W2=np.array([1, 0, 1], np.float32),
    )
    report = prepare_training_set(tmp_path / "desi", tmp_path / "train")
    objects = TrainingSet.open(tmp_path / "train").objects
    assert objects["TARGETID"].tolist() == [1, 2, 3]
    # row 0: all five fluxes 0; rows 1, 2: W1 = W2 = 0 but ivar > 0 is a measurement, except row 1's W2
    assert objects["FLAGS"].tolist() == [NO_PHOT, Flag.MISSING_BAND, 0]
    assert report.flagged["MISSING_BAND"] == 2 and report.flagged["NO_PHOTOMETRY"] == 1


def test_missing_band_columns_are_flagged_not_fatal(tmp_path):
    coadd = write_pair(tmp_path / "desi", "a", np.array([1, 2]), [0.1, 0.2])
    with fits.open(coadd) as hdul:
        keep = [c for c in hdul["FIBERMAP"].columns if c.name not in ("FLUX_W2", "FLUX_IVAR_W2")]
        hdul["FIBERMAP"] = fits.BinTableHDU.from_columns(keep, name="FIBERMAP")
        hdul.writeto(coadd, overwrite=True, checksum=True)
    report = prepare_training_set(tmp_path / "desi", tmp_path / "train")
    objects = TrainingSet.open(tmp_path / "train").objects
    assert objects["FLAGS"].tolist() == [Flag.MISSING_BAND, Flag.MISSING_BAND]
    assert report.notes == ["coadd-a.fits: FIBERMAP lacks FLUX_W2, FLUX_IVAR_W2 (treated as not measured)"]


def test_bad_files_are_reported_and_the_rest_goes_on(tmp_path, capsys):
    desi = tmp_path / "desi"
    write_pair(desi, "good-1", np.array([1, 2]), [0.1, 0.2])
    cut = write_pair(desi, "cut", np.array([3, 4]), [0.1, 0.2])
    cut.write_bytes(cut.read_bytes()[:100_000])
    orphan = write_pair(desi, "orphan", np.array([5]), [0.1])
    (desi / "redrock-orphan.fits").unlink()
    write_pair(desi / "sub", "good-2", np.array([6]), [0.3])

    status = main(["prepare", "--desi", str(desi), "--out", str(tmp_path / "train")])
    out = capsys.readouterr().out
    assert status == 1
    assert "2 file(s) failed" in out
    assert "coadd-cut.fits" in out and "truncated" in out
    assert "redrock-orphan.fits: no such file" in out
    objects = TrainingSet.open(tmp_path / "train").objects
    assert objects["TARGETID"].tolist() == [1, 2, 6]
    summary = json.loads((tmp_path / "train" / "trainset.json").read_text())
    assert sorted(summary["failed_files"]) == ["coadd-cut.fits", "coadd-orphan.fits"]
    assert orphan.exists()


def test_missing_hdu_is_reported_by_name(tmp_path):
    coadd = write_pair(tmp_path / "desi", "x", np.array([1]), [0.1])
    with fits.open(coadd) as hdul:
        del hdul["Z_FLUX"]
        hdul.writeto(coadd, overwrite=True, checksum=True)
    report = prepare_training_set(tmp_path / "desi", tmp_path / "train")
    assert report.failed_files == {"coadd-x.fits": f"{coadd}: missing HDU Z_FLUX"}


def test_empty_directory_is_a_one_line_error(tmp_path, capsys):
    (tmp_path / "desi").mkdir()
    status = main(["prepare", "--desi", str(tmp_path / "desi"), "--out", str(tmp_path / "train")])
    err = capsys.readouterr().err
    assert status == 2
    assert err.strip().count("\n") == 0 and "no coadd-*.fits files under" in err
    assert not (tmp_path / "train").exists()
    assert main(["prepare", "--desi", str(tmp_path / "nowhere"), "--out", str(tmp_path / "t")]) == 2


def test_existing_output_needs_overwrite(tmp_path, capsys):
    write_pair(tmp_path / "desi", "a", np.array([1]), [0.1])
    args = ["prepare", "--desi", str(tmp_path / "desi"), "--out", str(tmp_path / "train")]
    assert main(args) == 0
    assert main(args) == 2 and "exists" in capsys.readouterr().err
    assert main([*args, "--overwrite", "--z-max", "0.05"]) == 0
    assert len(TrainingSet.open(tmp_path / "train")) == 0
