"""Small synthetic galaxy spectra for the autoencoder tests (the mock survey is the real data).

A two-parameter family: an old stellar continuum with a 4000 A break and a young blue
continuum, mixed by ``young`` in [0, 1], plus Gaussian emission lines whose strength
grows with ``young``. Rest-frame spectra are normalised to a median of ~1 in 5300-5850 A,
redshifted, scaled and given Gaussian noise on an observed grid.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from specdiff_catalog.bands import BandSet
from specdiff_catalog.io.trainset import TrainingSet, TrainingSetWriter

LINES = {
    3727.0: 3.0,
    4861.3: 1.0,
    4958.9: 0.7,
    5006.8: 2.0,
    6562.8: 3.0,
    6583.5: 1.0,
    6716.4: 0.5,
    6730.8: 0.4,
}


def rest_spectra(wave: np.ndarray, young: np.ndarray, line_strength: np.ndarray) -> np.ndarray:
    """(N, L) rest-frame F_lambda on wave (L,) Angstrom for young, line_strength (N,)."""
    x = wave[None, :] / 5500.0
    old = x**0.5 * (1.0 - 0.55 / (1.0 + np.exp((wave[None, :] - 3950.0) / 40.0)))
    blue = x**-1.5
    flux = (1 - young[:, None]) * old + young[:, None] * blue
    for center, amp in LINES.items():
        flux += (line_strength * young)[:, None] * amp * np.exp(-0.5 * ((wave[None, :] - center) / 2.5) ** 2)
    window = (wave >= 5300) & (wave <= 5850)
    return flux / np.median(flux[:, window], axis=1, keepdims=True)


def observed_spectra(wave_obs: np.ndarray, young, line_strength, z, scale, noise, rng):
    """flux, ivar (N, P) on wave_obs: rest spectra at wave_obs / (1 + z) times scale, plus noise."""
    fine = np.arange(1500.0, 10000.0, 0.25)
    rest = rest_spectra(fine, young, line_strength)
    flux = (
        np.stack([np.interp(wave_obs / (1 + zi), fine, r) for zi, r in zip(z, rest, strict=True)])
        * scale[:, None]
    )
    sigma = noise[:, None] * scale[:, None] * np.ones_like(flux)
    flux = flux + rng.normal(size=flux.shape) * sigma
    return flux.astype(np.float32), (1.0 / sigma**2).astype(np.float32)


def write_trainset(
    path,
    n: int = 400,
    n_pix: int = 779,
    seed: int = 0,
    z_max: float = 0.8,
    noise: float = 0.1,
    chunk_rows: int = 64,
) -> TrainingSet:
    """A training set of n synthetic spectra on an n_pix-pixel 3600-9824 A grid."""
    rng = np.random.default_rng(seed)
    wave = np.linspace(3600.0, 9824.0, n_pix)
    young, line_strength = rng.random(n), rng.random(n)
    z = rng.uniform(0.0, z_max, n)
    scale = rng.uniform(1.0, 10.0, n)
    flux, ivar = observed_spectra(wave, young, line_strength, z, scale, np.full(n, noise), rng)
    ivar[:, rng.integers(0, n_pix, 5)] = 0.0  # a few masked pixels
    objects = pd.DataFrame(
        {"TARGETID": np.arange(n) + 10**15, "Z": z, "YOUNG": young, "LINES": line_strength}
    )
    writer = TrainingSetWriter(path, wave, chunk_rows=chunk_rows)
    for i in range(0, n, 100):
        writer.append(flux[i : i + 100], ivar[i : i + 100], objects.iloc[i : i + 100])
    return writer.close({"source": "tests/synthetic_spectra.py"}, bands=BandSet.load("ls-grzw1w2"))
