import numpy as np
import pytest

from specdiff_catalog.spectral import SpectrumFlag, band_mean, dn4000, median_norm, normalise, rebin


def test_rebin_is_inverse_variance_weighted_and_drops_the_remainder():
    wave = np.arange(10.0)
    flux = np.array([[1, 3, 2, 2, np.nan, 5, 0, 0, 7, 9]], dtype=np.float32)
    ivar = np.array([[1, 3, 1, 1, 1, 1, 0, 0, 1, 1]], dtype=np.float32)
    wave_b, flux_b, ivar_b = rebin(wave, flux, ivar, 3)
    assert np.allclose(wave_b, [1, 4, 7])
    assert np.allclose(flux_b, [[(1 + 9 + 2) / 5, (2 + 5) / 2, 7.0]])  # the NaN pixel counts as masked
    assert np.allclose(ivar_b, [[5, 2, 1]])
    _, f1, i1 = rebin(wave, flux, ivar, 1)
    assert f1[0, 4] == 0 and i1[0, 4] == 0 and f1.shape == (1, 10)
    with pytest.raises(ValueError):
        rebin(wave, flux, ivar, 0)


def test_median_norm_window_fallback_and_unusable():
    wave = np.linspace(3600, 9824, 2000)
    flux = np.tile(np.where(wave < 7000, 3.0, 8.0), (4, 1)).astype(np.float32)
    flux[3] = -1.0
    ivar = np.ones_like(flux)
    z = np.array([0.0, 0.2, 0.9, 0.1])  # at z = 0.9 the window starts at 10070 A: outside the grid
    result = median_norm(wave, flux, ivar, z)
    assert result.norm[0] == pytest.approx(3.0) and result.norm[1] == pytest.approx(3.0)
    assert result.flags[0] == 0 and result.flags[1] == 0
    assert result.flags[2] == SpectrumFlag.NORM_FALLBACK  # median of all valid pixels instead
    assert result.norm[2] == pytest.approx(np.median(flux[2]))
    assert result.flags[3] == SpectrumFlag.UNUSABLE and result.norm[3] == 1.0
    assert list(result.usable) == [True, True, False, False]
    ivar[1, (wave / 1.2 > 5300) & (wave / 1.2 < 5850)] = 0  # window masked
    assert median_norm(wave, flux, ivar, z).flags[1] == SpectrumFlag.NORM_FALLBACK
    f, i = normalise(flux[:1], ivar[:1], np.array([2.0]))
    assert f[0, 0] == 1.5 and i[0, 0] == 4.0


@pytest.mark.parametrize("alpha", [-2.0, 0.0, 1.5])
def test_dn4000_of_a_power_law_matches_the_closed_form(alpha):
    # F_lambda = lambda^alpha -> F_nu ~ lambda^(alpha + 2); <F_nu> over [a, b] in closed form
    wave = np.arange(3000.0, 5000.0, 0.5)
    beta = alpha + 2

    def mean(a, b):
        return (
            np.log(b / a) / (b - a)
            if beta == -1
            else (b ** (beta + 1) - a ** (beta + 1)) / ((beta + 1) * (b - a))
        )

    expected = mean(4000, 4100) / mean(3850, 3950)
    assert dn4000(wave, wave[None, :] ** alpha)[0] == pytest.approx(expected, rel=1e-6)


def test_dn4000_step_masking_coverage_and_per_object_grids():
    wave = np.arange(3500.0, 4500.0, 1.0)
    f_nu = np.where(wave < 3975, 1.0, 2.0)
    flux = np.stack([f_nu / wave**2] * 3)
    ivar = np.ones_like(flux)
    ivar[1, (wave > 4010) & (wave < 4050)] = 0  # 40% of the red band masked: still 60% covered
    ivar[2, wave > 4030] = 0  # only 30% of the red band left: below the 80% default coverage
    assert dn4000(wave, flux[:1])[0] == pytest.approx(2.0)
    assert dn4000(wave, flux, ivar, min_coverage=0.5)[:2] == pytest.approx([2.0, 2.0])
    assert np.isnan(dn4000(wave, flux, ivar)[2])
    # (N, P) grids, e.g. observed pixels divided by (1 + z) per object
    grids = np.stack([wave, wave * 1.0001, wave * 0.9999])
    assert dn4000(grids, flux) == pytest.approx([2.0, 2.0, 2.0], rel=1e-3)


def test_band_mean_of_a_line_uses_exact_edges():
    wave = np.array([0.0, 10.0, 20.0])
    flux = np.array([[0.0, 10.0, 20.0]])  # f(x) = x
    assert band_mean(wave, flux, (2.5, 17.5))[0] == pytest.approx(10.0)
    assert np.isnan(band_mean(wave, flux, (15.0, 40.0))[0])  # 5 of 25 A covered


# desiutil.dust.dust_transmission(wave, 0.1) (desiutil 4.0.1) at these vacuum wavelengths [Angstrom]
DESI_WAVE = np.array([1500.0, 2175.0, 3600.0, 4000.0, 5500.0, 7000.0, 9824.0, 20000.0])
DESI_TRANSMISSION = np.array(
    [0.51971839, 0.46139047, 0.67804707, 0.69913313, 0.78200666, 0.84107884, 0.90687342, 0.96916196]
)


def test_deredden_divides_by_the_desi_milky_way_transmission():
    from specdiff_catalog.spectral import deredden, mw_transmission

    assert np.allclose(mw_transmission(DESI_WAVE, np.array([0.1]))[0], DESI_TRANSMISSION, rtol=0, atol=1e-8)
    wave = np.linspace(3600, 9824, 50)
    flux, ivar = np.ones((2, 50), np.float32), np.full((2, 50), 4.0, np.float32)
    out, out_ivar, flags = deredden(wave, flux, ivar, np.array([0.1, np.nan]))
    transmission = mw_transmission(wave, np.array([0.1]))[0]
    assert np.allclose(out[0], 1 / transmission, rtol=1e-6) and np.allclose(
        out_ivar[0], 4 * transmission**2, rtol=1e-6
    )
    assert out[0, 0] > out[0, -1] > 1  # more extinction in the blue
    assert np.array_equal(out[1], flux[1]) and list(flags) == [0, SpectrumFlag.NO_EXTINCTION]


@pytest.mark.parametrize("r_v", [2.5, 3.1, 4.0])
def test_fitzpatrick99_is_desiutils_curve(r_v):
    dust = pytest.importorskip("desiutil.dust")  # desiutil comes with the [mock] extra

    from specdiff_catalog.spectral import fitzpatrick99, mw_transmission

    wave = np.concatenate([np.geomspace(912, 30000, 5000), [2600.0, 2700.0, 1e4]])
    assert np.allclose(fitzpatrick99(wave, r_v), dust.ext_fitzpatrick(wave, R_V=r_v), rtol=0, atol=1e-10)
    ebv = np.array([0.0, 0.03, 0.5])
    expected = np.stack([dust.dust_transmission(wave, e) for e in ebv])
    assert np.allclose(mw_transmission(wave, ebv), expected, rtol=0, atol=1e-10)


def test_line_flux_of_a_gaussian_on_a_sloped_continuum():
    from specdiff_catalog.spectral import LINE_BANDS, line_flux

    wave = np.arange(6300.0, 6800.0, 0.5)
    continuum = 2.0 + 0.001 * (wave - 6563.0)
    gauss = 30.0 * np.exp(-0.5 * ((wave - 6563.0) / 4.0) ** 2) / (np.sqrt(2 * np.pi) * 4.0)  # flux 30
    flux, ew = line_flux(wave, (continuum + gauss)[None], *LINE_BANDS["Halpha_NII"])
    assert flux[0] == pytest.approx(30.0, rel=1e-3) and ew[0] == pytest.approx(
        30.0 / (2.0 + 0.001 * 4.5), rel=1e-3
    )  # continuum at the band centre
    assert np.isnan(line_flux(wave, (continuum + gauss)[None], *LINE_BANDS["OII_3727"])[0][0])
