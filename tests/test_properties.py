"""Property-based tests (hypothesis) of the feature builder, the summaries and ``predict``.

Whatever floats a catalog row holds (NaN, inf, huge, negative, zero or negative ivar,
absurd E(B-V)): the features are finite wherever their bands are usable, the flags say
why the others are not, quantiles are monotone, redshift samples are >= 0, and an object
whose output cannot be trusted carries a flag saying so (issue 13 case 8, issue 14 item 5).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from specdiff_catalog.bands import BandSet
from specdiff_catalog.features import INPUT_LIMITS, feature_bands, photometric_features
from specdiff_catalog.flags import Flag
from specdiff_catalog.inference import predict
from specdiff_catalog.models import SpecdiffModel
from specdiff_catalog.models.diffusion import DiffusionConfig, DiffusionModel, Standardisation
from specdiff_catalog.models.store import ModelConfig
from specdiff_catalog.summaries import SAMPLE_LIMIT, summarize

BANDS = BandSet.load("ls-grzw1w2")
B = len(BANDS.bands)
F = 3 * B - 1
S = 3
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# every float a catalog can hold, weighted towards the awkward ones
awkward = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True, width=64),
    st.sampled_from([0.0, -0.0, 1e-300, -1e-300, 1e30, -1e30, -50.0, 1e308, math.nan, math.inf, -math.inf]),
    st.floats(-100.0, 1000.0),
)


def rows(n_min: int = 1, n_max: int = 6):
    """A table of n objects: every flux, ivar and EBV drawn from ``awkward``."""
    columns = [c for b in BANDS.bands for c in (b.flux, b.ivar)] + ["EBV"]
    return st.integers(n_min, n_max).flatmap(
        lambda n: st.fixed_dictionaries(
            {c: hnp.arrays(np.float64, n, elements=awkward) for c in columns}
        ).map(pd.DataFrame)
    )


def _uses_missing(missing: np.ndarray) -> np.ndarray:
    """(N, F) bool: the features that use a missing band."""
    return (missing.astype(int) @ feature_bands(B).T.astype(int)) > 0


@SETTINGS
@given(rows())
def test_features_are_finite_wherever_their_bands_are_usable(table):
    feats = photometric_features(table, BANDS)
    uses_missing = _uses_missing(feats.missing)
    assert np.isfinite(feats.values[~uses_missing]).all()
    assert np.isnan(feats.values[uses_missing]).all()
    flux = table[[b.flux for b in BANDS.bands]].to_numpy()
    ivar = table[[b.ivar for b in BANDS.bands]].to_numpy()
    # a band is used only when finite, ivar > 0 and inside the physical limits ...
    bad = ~np.isfinite(flux) | ~np.isfinite(ivar) | ~(ivar > 0)
    bad |= INPUT_LIMITS.unphysical(flux, ivar, BANDS.zeropoint)
    assert (feats.missing | ~bad).all() and (feats.missing[bad]).all()
    # ... and the flags say why
    has = lambda flag: (feats.flags & flag) != 0  # noqa: E731
    assert (has(Flag.MISSING_BAND) == feats.missing.any(axis=1)).all()
    assert (has(Flag.NO_PHOTOMETRY) == feats.missing.all(axis=1)).all()
    assert (has(Flag.NONFINITE_INPUT) >= (~np.isfinite(flux) | ~np.isfinite(ivar)).any(axis=1)).all()
    unphysical = INPUT_LIMITS.unphysical(flux, ivar, BANDS.zeropoint).any(axis=1)
    assert (has(Flag.UNPHYSICAL_INPUT) == unphysical).all()


@SETTINGS
@given(rows())
def test_the_network_condition_is_always_finite(table):
    feats = photometric_features(table, BANDS)
    model = _model("softplus_log1p")
    cond = model.condition_input(feats.values, feats.missing)
    assert torch.isfinite(cond).all()


@SETTINGS
@given(
    hnp.arrays(
        np.float64,
        hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=12),
        elements=st.one_of(awkward, st.floats(0, 3)),
    )
)
def test_summaries_of_any_samples_are_monotone_and_inside_the_samples(samples):
    out = summarize(samples, None, (0.025, 0.16, 0.5, 0.84, 0.975))
    q = out["z_quantiles"]
    finite = np.where(np.abs(samples) <= SAMPLE_LIMIT, samples, np.nan)  # what counts as a sample
    has = np.isfinite(finite).any(axis=1)
    assert np.isnan(q[~has]).all() and np.isnan(out["z_median"][~has]).all()
    for name in ("z_quantiles", "z_median", "z_mode", "z_mean"):
        assert np.isfinite(out[name][has]).all(), name
    two = np.isfinite(finite).sum(axis=1) >= 2
    assert np.isfinite(out["z_std"][two]).all() and np.isnan(out["z_std"][~two]).all()
    # float32 rounding of float64 quantiles keeps the order (rounding is monotone)
    assert (np.diff(q[has], axis=1) >= 0).all()
    lo = np.nanmin(np.where(has[:, None], finite, 0.0), axis=1).astype(np.float32)
    hi = np.nanmax(np.where(has[:, None], finite, 0.0), axis=1).astype(np.float32)
    assert (q[has] >= lo[has, None]).all() and (q[has] <= hi[has, None]).all()


def _model(z_transform: str, z_mean: float = 0.3, seed: int = 0) -> DiffusionModel:
    rng = np.random.default_rng(seed)
    standardisation = Standardisation(
        feature_mean=np.r_[rng.normal(21, 1, B), rng.normal(0.5, 0.3, B - 1), rng.normal(2, 1, B)],
        feature_std=np.full(F, 1.5),
        feature_bands=feature_bands(B),
        latent_mean=np.zeros(S),
        latent_std=np.ones(S),
        z_mean=z_mean,
        z_std=1.0,
        z_transform=z_transform,
    )
    config = DiffusionConfig(
        hidden=64, n_blocks=1, cond_layers=1, time_frequencies=8, z_transform=z_transform
    )
    model = DiffusionModel(config, standardisation)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # an untrained but non-trivial network
        for p in model.parameters():
            p.copy_(
                torch.randn(p.shape, generator=gen) * (0.5 / math.sqrt(p.shape[-1]) if p.dim() > 1 else 0.3)
            )
    return model.eval()


def _specdiff(z_transform: str, z_mean: float) -> SpecdiffModel:
    return SpecdiffModel(
        path=Path("memory"), config=ModelConfig(bands=BANDS), diffusion=_model(z_transform, z_mean)
    )


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize(
    "z_transform, z_mean",
    # log1p with the standardised mean at z = 0.02: many samples below 0 to clip
    [("softplus_log1p", 0.3), ("log1p", math.log1p(0.02))],
)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(table=rows(1, 4))
def test_predict_gives_non_negative_monotone_outputs_and_flags_the_untrustworthy(table, z_transform, z_mean):
    model = _specdiff(z_transform, z_mean)
    pred = predict(model, table, n_samples=16, steps=4)
    z = pred.z_samples
    assert (z[np.isfinite(z)] >= 0).all()
    q = pred.summaries["z_quantiles"]
    ok = np.isfinite(q).all(axis=1)
    assert (np.diff(q[ok], axis=1) >= 0).all() and (q[ok] >= 0).all()
    for name in ("z_median", "z_mode", "z_mean"):
        v = pred.summaries[name]
        assert (v[np.isfinite(v)] >= 0).all()
    # no numbers without a reason: a NaN output comes with NO_PHOTOMETRY or SAMPLER_FAILURE
    nan_out = ~np.isfinite(pred.summaries["z_median"])
    assert ((pred.flags[nan_out] & (Flag.NO_PHOTOMETRY | Flag.SAMPLER_FAILURE)) != 0).all()
    # a row with any unusable input is flagged, and one with no usable band is untrusted with NaN outputs
    feats = photometric_features(table, BANDS)
    assert ((pred.flags[feats.missing.any(axis=1)] & Flag.MISSING_BAND) != 0).all()
    none = feats.missing.all(axis=1)
    assert nan_out[none].all() and ((pred.flags[none] & Flag.untrusted()) != 0).all()
    # clipped samples are flagged (only a transform without positive support can need it)
    if z_transform == "softplus_log1p":
        assert not (pred.flags & Flag.Z_CLIPPED).any()


def test_log1p_model_clips_negative_samples_at_zero_with_a_flag():
    """The old transform: a model whose PDFs sit at z ~ 0.02 draws negative z; they become 0."""
    table = pd.DataFrame(
        {
            **{b.flux: np.full(8, 5.0) for b in BANDS.bands},
            **{b.ivar: np.full(8, 100.0) for b in BANDS.bands},
            "EBV": np.full(8, 0.02),
        }
    )
    pred = predict(_specdiff("log1p", math.log1p(0.02)), table, n_samples=64, steps=4)
    assert (pred.z_samples >= 0).all()
    clipped = (pred.z_samples == 0).any(axis=1)
    assert clipped.sum() >= 4  # z_std = 1 in log(1+z) around 0.02: about half the samples are < 0
    np.testing.assert_array_equal((pred.flags & Flag.Z_CLIPPED) != 0, clipped)
    positive = predict(_specdiff("softplus_log1p", -2.0), table, n_samples=64, steps=4)
    assert (positive.z_samples > 0).all() and not (positive.flags & Flag.Z_CLIPPED).any()


@pytest.mark.parametrize(
    "column, value, expected",
    [
        ("FLUX_G", -50.0, Flag.UNPHYSICAL_INPUT | Flag.MISSING_BAND),  # -500 sigma
        ("FLUX_R", 1e30, Flag.UNPHYSICAL_INPUT | Flag.MISSING_BAND),
        ("FLUX_IVAR_Z", 1e30, Flag.UNPHYSICAL_INPUT | Flag.MISSING_BAND),  # S/N 1e15
    ],
)
def test_the_issue_examples_lose_the_absurd_band_not_the_object(column, value, expected):
    """Issue 13 case 8: FLUX_G = -50 gave z_median -0.55, FLUX_R = 1e30 every quantile -1.0."""
    table = pd.DataFrame(
        {
            **{b.flux: [5.0] for b in BANDS.bands},
            **{b.ivar: [100.0] for b in BANDS.bands},
            "EBV": [0.02],
        }
    ).assign(**{column: [value]})
    pred = predict(_specdiff("softplus_log1p", 0.3), table, n_samples=32, steps=4)
    assert pred.flags[0] & expected == expected and not pred.flags[0] & Flag.NO_PHOTOMETRY
    assert np.isfinite(pred.summaries["z_median"][0]) and pred.summaries["z_median"][0] >= 0


def test_all_fluxes_absurd_gives_nan_outputs_flagged_no_photometry():
    """Issue 13 case 8: all fluxes -1e30 gave z_median 302,574."""
    table = pd.DataFrame(
        {
            **{b.flux: [-1e30] for b in BANDS.bands},
            **{b.ivar: [100.0] for b in BANDS.bands},
            "EBV": [0.02],
        }
    )
    pred = predict(_specdiff("log1p", 0.3), table, n_samples=16, steps=4)
    assert np.isnan(pred.summaries["z_median"][0]) and np.isnan(pred.summaries["z_quantiles"][0]).all()
    expected = Flag.NO_PHOTOMETRY | Flag.UNPHYSICAL_INPUT
    assert pred.flags[0] & expected == expected
