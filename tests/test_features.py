import numpy as np
import pandas as pd
import pytest

from specdiff_catalog.bands import BandSet, MissingColumnError
from specdiff_catalog.features import asinh_magnitude, deredden, feature_bands, photometric_features
from specdiff_catalog.flags import Flag

BANDS = BandSet.load("ls-grzw1w2")


def table(**overrides):
    """Three well-measured galaxies; overrides replace whole columns."""
    data = {"EBV": [0.0, 0.1, 0.05]}
    for band, flux in zip(BANDS.bands, [1.0, 2.0, 3.0, 4.0, 5.0], strict=True):
        data[band.flux] = [flux, 2 * flux, 10 * flux]
        data[band.ivar] = [100.0, 100.0, 100.0]
    data.update(overrides)
    return pd.DataFrame(data)


def test_good_rows_have_no_flags_and_finite_features():
    feats = photometric_features(table(), BANDS)
    assert feats.values.shape == (3, 14) and feats.values.dtype == np.float32
    assert np.isfinite(feats.values).all()
    assert (feats.flags == 0).all() and not feats.missing.any()
    assert feats.names[:2] == ["mag_g", "mag_r"] and "g-r" in feats.names


def test_asinh_magnitude_matches_pogson_when_bright_and_is_finite_for_zero_and_negative():
    b = np.array([0.026])
    bright = asinh_magnitude(np.array([[100.0]]), b, 22.5)
    assert bright[0, 0] == pytest.approx(22.5 - 2.5 * np.log10(100.0), abs=1e-6)
    faint = asinh_magnitude(np.array([[0.0], [-0.5]]), b, 22.5)
    assert np.isfinite(faint).all()
    # zero flux gives the limiting magnitude zp - 2.5 log10(b) - 2.5 log10(1) (asinh(0) = 0)
    assert faint[0, 0] == pytest.approx(22.5 - 2.5 / np.log(10) * np.log(0.026))
    assert faint[1, 0] > faint[0, 0]


def test_dereddening_from_ebv_and_from_transmission_columns_agree():
    t = table()
    phot_ebv = deredden(t, BANDS)
    trans = BANDS.mw_transmission(t["EBV"].to_numpy())
    with_cols = t.drop(columns="EBV").assign(
        **{b.mw_transmission.lower(): trans[:, j] for j, b in enumerate(BANDS.bands)}
    )
    phot_cols = deredden(with_cols, BANDS)
    np.testing.assert_allclose(phot_ebv.flux, phot_cols.flux, rtol=1e-12)
    # E(B-V) = 0.1 brightens g by 0.3214 mag
    assert phot_ebv.flux[1, 0] / t["FLUX_G"][1] == pytest.approx(10 ** (0.4 * 0.3214), rel=1e-9)
    assert phot_ebv.ivar[1, 0] == pytest.approx(100.0 * 10 ** (-0.8 * 0.3214), rel=1e-9)


@pytest.mark.parametrize(
    "column, values, bad_row, expected",
    [
        ("FLUX_IVAR_W2", [100.0, 0.0, 100.0], 1, Flag.MISSING_BAND),
        ("FLUX_IVAR_W2", [100.0, -3.0, 100.0], 1, Flag.MISSING_BAND),
        ("FLUX_R", [1.0, np.nan, 1.0], 1, Flag.MISSING_BAND | Flag.NONFINITE_INPUT),
        ("FLUX_Z", [np.inf, 1.0, 1.0], 0, Flag.MISSING_BAND | Flag.NONFINITE_INPUT),
        ("FLUX_IVAR_G", [1.0, 1.0, np.nan], 2, Flag.MISSING_BAND | Flag.NONFINITE_INPUT),
        ("EBV", [0.0, np.nan, 0.0], 1, Flag.NO_EXTINCTION | Flag.NONFINITE_INPUT),
        ("EBV", [0.0, -5.0, 0.0], 1, Flag.NO_EXTINCTION),
    ],
)
def test_each_bad_value_is_flagged_on_its_row_only(column, values, bad_row, expected):
    feats = photometric_features(table(**{column: values}), BANDS)
    assert feats.values.shape[0] == 3
    assert feats.flags[bad_row] == expected
    assert (np.delete(feats.flags, bad_row) == 0).all()
    if expected & Flag.MISSING_BAND:
        band = next(b.name for b in BANDS.bands if column in (b.flux, b.ivar))
        assert np.isnan(feats.values[bad_row, feats.names.index(f"mag_{band}")])
        assert feats.missing[bad_row].sum() == 1
    else:
        assert np.isfinite(feats.values[bad_row]).all()


def test_all_zero_photometry_is_flagged_and_fully_masked():
    zeros = {c: [0.0, 0.0, 1.0] for b in BANDS.bands for c in (b.flux, b.ivar)}
    feats = photometric_features(table(**zeros), BANDS)
    expected = Flag.ALL_ZERO_PHOTOMETRY | Flag.MISSING_BAND | Flag.NO_PHOTOMETRY
    assert list(feats.flags) == [expected, expected, 0]
    assert feats.missing[:2].all() and np.isnan(feats.values[:2]).all()


def test_absent_flux_column_is_named():
    with pytest.raises(MissingColumnError, match="FLUX_W1"):
        photometric_features(table().drop(columns="FLUX_W1"), BANDS)
    with pytest.raises(MissingColumnError, match="EBV"):
        photometric_features(table().drop(columns="EBV"), BANDS)


def test_pyarrow_tables_and_dicts_are_accepted():
    import pyarrow as pa

    t = table()
    ref = photometric_features(t, BANDS).values
    np.testing.assert_array_equal(photometric_features(pa.Table.from_pandas(t), BANDS).values, ref)
    np.testing.assert_array_equal(photometric_features({k: t[k].to_numpy() for k in t}, BANDS).values, ref)


def test_feature_bands_says_which_features_a_missing_band_makes_nan():
    uses = feature_bands(len(BANDS.bands))
    for j, band in enumerate(BANDS.bands):
        flux = [1.0, 2.0, 3.0]
        flux[1] = np.nan  # row 1 loses band j
        feats = photometric_features(table(**{band.flux: flux}), BANDS)
        assert np.array_equal(np.isnan(feats.values[1]), uses[:, j])
        assert np.isfinite(feats.values[[0, 2]]).all()
