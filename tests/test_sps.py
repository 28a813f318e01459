"""The vectorised synthesis (mock.sps) against bagpipes' own model_galaxy on the same grids."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest

from specdiff_catalog.mock import sps

pytest.importorskip("bagpipes")

CASES = [  # (age Gyr, tau Gyr, Z/Z_sun, log U, A_V, delta, bump, z)
    (3.0, 2.0, 0.7, -2.7, 0.6, -0.3, 1.0, 0.5),  # star-forming, dusty
    (8.0, 0.6, 1.8, -3.5, 0.1, 0.0, 0.0, 0.3),  # quiescent, old and metal-rich
    (0.8, 5.0, 0.15, -2.0, 0.2, -0.6, 2.0, 1.4),  # young, metal-poor, high ionisation
]


def _bagpipes(case):
    with contextlib.redirect_stdout(io.StringIO()):
        import bagpipes
    from bagpipes import utils

    age, tau, metal, log_u, av, delta, bump, z = case
    model = bagpipes.model_galaxy(
        {
            "redshift": z,
            "delayed": {"age": age, "tau": tau, "massformed": 10.0, "metallicity": metal},
            "nebular": {"logU": log_u},
            "dust": {"type": "Salim", "Av": av, "eta": 2.0, "delta": delta, "B": bump},
            "t_bc": 0.01,
        },
        spec_wavs=np.arange(3600.0, 9800.0, 2.0),
    )
    four_pi_d2 = 4 * np.pi * (3.086e24 * np.interp(z, utils.z_array, utils.ldist_at_z)) ** 2
    to_lum = four_pi_d2 / sps.L_SUN  # bagpipes' observed erg/s/cm^2 -> L_sun
    return model, to_lum, z


@pytest.mark.parametrize("case", CASES)
def test_synthesis_agrees_with_bagpipes_model_galaxy(case):
    model, to_lum, z = _bagpipes(case)
    age, tau, metal, log_u, av, delta, bump, _ = case
    grids = sps.load_grids(sps.SPECTRUM_GRID)
    p = sps.SPSParameters(
        sps.delayed_tau_weights(np.array([age]), np.array([tau]), grids.age_bins, np.array([1e10])),
        *(np.array([v]) for v in (metal, log_u, av, 2.0, delta, bump, 100.0)),
    )
    # emission lines: every line brighter than 1% of the brightest, within 1%
    ours = sps.line_luminosities(p, grids)[0]
    theirs = np.array([model.line_fluxes[name] for name in model.line_fluxes]) * to_lum
    bright = theirs > 0.01 * theirs.max()
    np.testing.assert_allclose(ours[bright], theirs[bright], rtol=0.01)
    # continuum + lines in 100 A windows over the truth range (bagpipes' internal spectrum, rest frame)
    mine = sps.synthesize(p, sps.SPECTRUM_GRID, broadened=False)[0]
    full = model.spectrum_full * to_lum * (1 + z)
    for lo in np.arange(1400.0, 9800.0, 400.0):
        a = (model.wavelengths > lo) & (model.wavelengths < lo + 100)
        b = (grids.wave > lo) & (grids.wave < lo + 100)
        ratio = np.trapezoid(mine[b], grids.wave[b]) / (grids.wave[b][-1] - grids.wave[b][0])
        ratio /= np.trapezoid(full[a], model.wavelengths[a]) / (
            model.wavelengths[a][-1] - model.wavelengths[a][0]
        )
        assert abs(ratio - 1) < 0.02, (lo, ratio)  # measured: within 0.4%, 1.4% in the UV of the old galaxy
    # surviving stellar mass
    assert abs(np.log10(1e10 * sps.surviving_mass_fraction(p, grids))[0] - model.sfh.stellar_mass) < 0.005


def test_broadening_keeps_flux_and_widens_lines():
    wave = sps.SPECTRUM_GRID.wavelength()
    flux = np.zeros((2, len(wave)))
    flux[:, 8000] = 1.0
    out = sps.broaden(flux, sps.SPECTRUM_GRID.dlnlam, np.array([50.0, 200.0]))
    np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=1e-9)
    x = np.arange(len(wave)) - 8000
    sigma_pix = np.sqrt((out * x**2).sum(axis=1))
    np.testing.assert_allclose(sigma_pix * sps.SPECTRUM_GRID.dlnlam * sps.C_KMS, [50.0, 200.0], rtol=0.01)


def test_calzetti_curve_is_bagpipes_curve():
    with contextlib.redirect_stdout(io.StringIO()):
        from bagpipes.models.dust_attenuation_model import dust_attenuation
    wave = np.geomspace(900.0, 40000.0, 2000)
    np.testing.assert_allclose(sps.calzetti(wave), dust_attenuation(wave, {"type": "Calzetti"}).A_cont)


def test_grid_cache_is_written_atomically_and_reread_bit_for_bit(tmp_path, monkeypatch):
    """Cold (resampled from bagpipes) and warm (read from the .npz) grids are identical; a truncated
    cache file is recomputed and replaced; no temporary file is left behind."""
    from specdiff_catalog.mock import cache

    monkeypatch.setenv("SPECDIFF_CACHE_DIR", str(tmp_path))
    spec = sps.GridSpec(3700.0, 4300.0, 5e-4)
    calls = []

    def compute():
        calls.append(1)
        return sps._resampled_grids(spec)

    cold = cache.cached_arrays("grid", {"spec": "test"}, compute)
    warm = cache.cached_arrays("grid", {"spec": "test"}, compute)
    assert len(calls) == 1 and sorted(cold) == sorted(warm)
    for name in cold:
        np.testing.assert_array_equal(cold[name], warm[name])
    (path,) = tmp_path.iterdir()
    assert path.suffix == ".npz" and not path.name.startswith(".")
    path.write_bytes(path.read_bytes()[:1000])  # a file cut short (a full disk, a killed writer)
    again = cache.cached_arrays("grid", {"spec": "test"}, compute)
    assert len(calls) == 2 and [p.name for p in tmp_path.iterdir()] == [path.name]
    np.testing.assert_array_equal(again["stellar"], cold["stellar"])
    # another key is another file
    cache.cached_arrays("grid", {"spec": "other"}, lambda: {"x": np.arange(3)})
    assert len(list(tmp_path.iterdir())) == 2
