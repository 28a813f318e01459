"""Spectral measurements shared by training, evaluation and reports.

Vectorised numpy functions over a batch of N spectra on a grid of P pixels:
cleaning non-finite pixels, inverse-variance-weighted rebinning, normalisation (by the
median flux in a rest-frame window, or by the median |flux| of the valid pixels), band
averages of piecewise-linear spectra and the Dn4000 break index. Flux is F_lambda in any
unit (the DESI unit is 1e-17 erg/s/cm^2/A); wavelengths are in Angstrom.
"""

from __future__ import annotations

import enum
import warnings
from dataclasses import dataclass

import numpy as np

NORM_WINDOW = (5300.0, 5850.0)  # rest-frame Angstrom (SPENDER's DESI/SDSS window)
DN4000_BLUE = (3850.0, 3950.0)  # rest-frame Angstrom (Balogh et al. 1999)
DN4000_RED = (4000.0, 4100.0)
# emission-line bands and their continuum side bands, rest-frame Angstrom (vacuum)
LINE_BANDS = {
    "OII_3727": ((3716.0, 3740.0), (3680.0, 3710.0), (3750.0, 3780.0)),
    "Hbeta": ((4852.0, 4872.0), (4800.0, 4840.0), (4880.0, 4920.0)),
    "OIII_5007": ((4997.0, 5017.0), (4970.0, 4990.0), (5025.0, 5055.0)),
    "Halpha_NII": ((6540.0, 6595.0), (6480.0, 6530.0), (6610.0, 6660.0)),
}


class SpectrumFlag(enum.IntFlag):
    """Per-spectrum bits of the preprocessing (uint8). SKIP: the bits training skips."""

    NORM_FALLBACK = 1 << 0  # window normalisation only: fewer than min_pixels valid pixels in the
    #                         window, or median <= 0: normalised by the median of all valid pixels
    UNUSABLE = 1 << 1  # no valid pixel or no positive median at all: norm = 1, not usable
    NO_EXTINCTION = 1 << 2  # E(B-V) missing or not finite: not de-reddened (E(B-V) = 0 used)

    @classmethod
    def skip(cls) -> int:
        return cls.NORM_FALLBACK | cls.UNUSABLE


def clean(flux: np.ndarray, ivar: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """flux, ivar (N, P) float32 with ivar = 0 and flux = 0 wherever either is non-finite or ivar < 0."""
    flux = np.asarray(flux, dtype=np.float32)
    ivar = np.asarray(ivar, dtype=np.float32)
    good = np.isfinite(flux) & np.isfinite(ivar) & (ivar > 0)
    return np.where(good, flux, 0.0).astype(np.float32), np.where(good, ivar, 0.0).astype(np.float32)


def rebin(
    wave: np.ndarray, flux: np.ndarray, ivar: np.ndarray, factor: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Inverse-variance-weighted rebinning by an integer factor k.

    wave: (P,) Angstrom; flux, ivar: (N, P). Returns wave (P // k,) the mean wavelength
    of each bin, flux (N, P // k) = sum(ivar flux) / sum(ivar) (0 where sum(ivar) = 0)
    and ivar (N, P // k) = sum(ivar), the inverse variance of that weighted mean.
    The last P mod k pixels are dropped. Non-finite pixels count as masked.
    """
    if factor < 1:
        raise ValueError(f"rebin factor must be >= 1, got {factor}")
    flux, ivar = clean(flux, ivar)
    n, p = flux.shape
    m = p // factor
    wave_b = np.asarray(wave, dtype=np.float64)[: m * factor].reshape(m, factor).mean(axis=1)
    if factor == 1:
        return wave_b, flux, ivar
    f = flux[:, : m * factor].reshape(n, m, factor)
    w = ivar[:, : m * factor].reshape(n, m, factor)
    ivar_b = w.sum(axis=2)
    with np.errstate(invalid="ignore", divide="ignore"):
        flux_b = np.where(ivar_b > 0, (w * f).sum(axis=2) / ivar_b, 0.0)
    return wave_b, flux_b.astype(np.float32), ivar_b.astype(np.float32)


F99_R_V = 3.1
SFD_RECALIBRATION = 1.029
"""E(B-V)_SFD scaling of DESI's dust curve: A(lambda) is normalised at 1 micron and scaled by
1.029 (the Schlafly & Finkbeiner 2011 recalibration, as ``desiutil.dust.dust_transmission``)."""


def fitzpatrick99(wave: np.ndarray, r_v: float = F99_R_V) -> np.ndarray:
    """(P,) A(lambda) / A(V) of Fitzpatrick (1999, PASP 111, 63) at vacuum wave (P,) Angstrom.

    Below 2700 A the FM90 ultraviolet form (linear + Drude bump at 4.596 / micron +
    far-UV curvature); above it a natural cubic spline in 1/lambda through the optical/IR
    anchor points (26500, 12200, 6000, 5470, 4670, 4110 A) and two UV points (2700, 2600 A),
    as Landsman's FM_UNRED and ``desiutil.dust.ext_fitzpatrick`` (with which
    tests/test_spectral.py checks it to 1e-10).
    """
    from scipy.interpolate import CubicSpline

    def uv(x: np.ndarray) -> np.ndarray:
        c2 = -0.824 + 4.717 / r_v
        c1 = 2.030 - 3.007 * c2
        bump = 3.23 * x**2 / ((x**2 - 4.596**2) ** 2 + (x * 0.99) ** 2)
        far = np.where(x > 5.9, 0.41 * (0.5392 * (x - 5.9) ** 2 + 0.05644 * (x - 5.9) ** 3), 0.0)
        return c1 + c2 * x + bump + far + r_v

    x = 1e4 / np.asarray(wave, dtype=np.float64)  # inverse microns
    x_uv = 1e4 / np.array([2700.0, 2600.0])
    x_anchor = np.concatenate([[0.0], 1e4 / np.array([26500.0, 12200.0, 6000.0, 5470.0, 4670.0, 4110.0])])
    y_anchor = np.concatenate(
        [
            np.array([0.0, 0.26469, 0.82925]) * r_v / 3.1,
            [
                np.polyval([2.13572e-04, 1.00270, -4.22809e-01], r_v),
                np.polyval([-7.35778e-05, 1.00216, -5.13540e-02], r_v),
                np.polyval([-3.32598e-05, 1.00184, 7.00127e-01], r_v),
                np.polyval([-4.45636e-05, 7.97809e-04, -5.46959e-03, 1.01707, 1.19456], r_v),
            ],
        ]
    )
    spline = CubicSpline(
        np.concatenate([x_anchor, x_uv]), np.concatenate([y_anchor, uv(x_uv)]), bc_type="natural"
    )
    return np.where(x >= 1e4 / 2700.0, uv(x), spline(x)) / r_v


def mw_transmission(wave: np.ndarray, ebv: np.ndarray) -> np.ndarray:
    """(N, P) Milky Way transmission at observed wave (P,) Angstrom for SFD E(B-V) ebv (N,).

    DESI's curve (``desiutil.dust.dust_transmission``): Fitzpatrick (1999) with R_V = 3.1,
    A(lambda) = E(B-V)_SFD x 1.029 x A(lambda) / A(1 micron) (Schlafly & Finkbeiner 2011),
    the one the DESI pipeline uses; computed here (``fitzpatrick99``) so the core install
    needs no desiutil.
    """
    wave = np.asarray(wave, dtype=np.float64)
    curve = fitzpatrick99(wave) / fitzpatrick99(np.array([1e4]))[0]
    a_per_ebv = SFD_RECALIBRATION * curve
    return 10.0 ** (-0.4 * np.outer(np.asarray(ebv, dtype=np.float64), a_per_ebv))


def deredden(
    wave: np.ndarray, flux: np.ndarray, ivar: np.ndarray, ebv: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """flux / T and ivar * T^2 with T = mw_transmission(wave, ebv); flux, ivar (N, P), ebv (N,).

    A non-finite E(B-V) is taken as 0; returns also (N,) uint8 flags (NO_EXTINCTION there).
    """
    ebv = np.asarray(ebv, dtype=np.float64)
    bad = ~np.isfinite(ebv)
    transmission = mw_transmission(wave, np.where(bad, 0.0, ebv)).astype(np.float32)
    flags = np.where(bad, SpectrumFlag.NO_EXTINCTION, 0).astype(np.uint8)
    return flux / transmission, ivar * transmission**2, flags


@dataclass
class Normalisation:
    """norm: (N,) flux divided out (in the input flux unit); flags: (N,) uint8 ``SpectrumFlag``."""

    norm: np.ndarray
    flags: np.ndarray

    @property
    def usable(self) -> np.ndarray:
        """(N,) bool: normalised in the rest-frame window as intended."""
        return (self.flags & SpectrumFlag.skip()) == 0


def _row_median(values: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N,) median of values[mask] per row (NaN where empty) and (N,) the count of masked-in pixels."""
    with warnings.catch_warnings():  # all-NaN rows are expected; the caller handles them
        warnings.simplefilter("ignore", RuntimeWarning)
        median = np.nanmedian(np.where(mask, values, np.nan), axis=1)
    return median, mask.sum(axis=1)


def median_norm(
    wave: np.ndarray,
    flux: np.ndarray,
    ivar: np.ndarray,
    z: np.ndarray,
    window: tuple[float, float] = NORM_WINDOW,
    min_pixels: int = 10,
) -> Normalisation:
    """The factor each spectrum is divided by: its median flux in a rest-frame window.

    wave: (P,) observed-frame Angstrom; flux, ivar: (N, P); z: (N,) redshifts.
    The window [lo, hi] is rest frame: observed pixels with lo <= wave / (1 + z) <= hi
    and ivar > 0 count. Fallback (flag NORM_FALLBACK): when fewer than ``min_pixels``
    such pixels exist (the window is redshifted out of the observed range or masked) or
    their median is <= 0, the median of all valid pixels is used. When that is not
    positive either (or no pixel is valid), norm = 1 and the spectrum is UNUSABLE.
    Training skips flagged spectra; encoding returns their latents with the flags.
    """
    flux, ivar = clean(flux, ivar)
    z = np.asarray(z, dtype=np.float64).reshape(-1)
    valid = ivar > 0
    rest = np.asarray(wave, dtype=np.float64)[None, :] / (1.0 + z[:, None])
    in_window = valid & (rest >= window[0]) & (rest <= window[1])
    norm, count = _row_median(flux, in_window)
    flags = np.zeros(len(z), dtype=np.uint8)
    bad = ~((count >= min_pixels) & (norm > 0))
    if bad.any():
        fallback, _ = _row_median(flux[bad], valid[bad])
        ok = fallback > 0
        norm[bad] = np.where(ok, fallback, 1.0)
        flags[bad] = np.where(ok, SpectrumFlag.NORM_FALLBACK, SpectrumFlag.UNUSABLE)
    return Normalisation(norm=norm.astype(np.float32), flags=flags)


def scale_norm(flux: np.ndarray, ivar: np.ndarray) -> Normalisation:
    """The factor each spectrum is divided by before the encoder sees it: median |flux| of its
    valid pixels (the autoencoder's "amplitude" normalisation; its amplitude is fitted in the loss).

    flux, ivar: (N, P). Exists whatever range a spectrum covers, so no spectrum falls back;
    UNUSABLE (norm = 1) only without a valid pixel or when every valid flux is 0.
    """
    flux, ivar = clean(flux, ivar)
    norm, _ = _row_median(np.abs(flux), ivar > 0)
    bad = ~(norm > 0)
    flags = np.where(bad, SpectrumFlag.UNUSABLE, 0).astype(np.uint8)
    return Normalisation(norm=np.where(bad, 1.0, norm).astype(np.float32), flags=flags)


def window_median(
    wave: np.ndarray, flux: np.ndarray, window: tuple[float, float] = NORM_WINDOW
) -> np.ndarray:
    """(N,) median of spectra flux (N, L) over the pixels of wave (L,) inside [lo, hi] (NaN if none)."""
    inside = (np.asarray(wave) >= window[0]) & (np.asarray(wave) <= window[1])
    return _row_median(np.asarray(flux, dtype=np.float64), np.broadcast_to(inside, np.shape(flux)))[0]


def normalise(flux: np.ndarray, ivar: np.ndarray, norm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """flux / norm and ivar * norm^2 for flux, ivar (N, P) and norm (N,)."""
    norm = np.asarray(norm, dtype=np.float32)[:, None]
    return (flux / norm).astype(np.float32), (ivar * norm**2).astype(np.float32)


def band_mean(
    wave: np.ndarray,
    flux: np.ndarray,
    band: tuple[float, float],
    valid: np.ndarray | None = None,
    min_coverage: float = 0.8,
) -> np.ndarray:
    """(N,) average of the piecewise-linear spectrum over [lo, hi].

    wave: (P,) or (N, P) increasing Angstrom; flux: (N, P); valid: (N, P) bool, a segment
    between two pixels counts only when both are valid. The exact integral of the linear
    interpolant over the band (edges interpolated inside their segment) divided by the
    length covered; NaN where valid segments cover less than ``min_coverage`` of the band.
    """
    lo, hi = band
    flux = np.asarray(flux, dtype=np.float64)
    wave = np.broadcast_to(np.asarray(wave, dtype=np.float64), flux.shape)
    w0, w1, f0, f1 = wave[:, :-1], wave[:, 1:], flux[:, :-1], flux[:, 1:]
    a, b = np.clip(w0, lo, hi), np.clip(w1, lo, hi)
    with np.errstate(invalid="ignore", divide="ignore"):
        slope = np.where(w1 > w0, (f1 - f0) / (w1 - w0), 0.0)
    length = b - a
    if valid is not None:
        valid = np.asarray(valid, dtype=bool)
        length = np.where(valid[:, :-1] & valid[:, 1:], length, 0.0)
    area = length * (f0 + slope * (0.5 * (a + b) - w0))  # integral of a line = length x midpoint value
    covered = length.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(length > 0, area, 0.0).sum(axis=1) / covered
    return np.where(covered >= min_coverage * (hi - lo), mean, np.nan)


def dn4000(
    wave_rest: np.ndarray, flux_lambda: np.ndarray, ivar: np.ndarray | None = None, min_coverage: float = 0.8
) -> np.ndarray:
    """(N,) Dn4000 = <F_nu>(4000-4100 A) / <F_nu>(3850-3950 A), rest frame (Balogh et al. 1999).

    wave_rest: (P,) or (N, P) rest-frame Angstrom; flux_lambda: (N, P) F_lambda (any unit);
    ivar: optional (N, P), pixels with ivar <= 0 are excluded. F_nu is taken as
    lambda^2 F_lambda (the constant c cancels in the ratio); the averages are over
    wavelength (``band_mean``). NaN where a band is covered less than ``min_coverage``.
    """
    flux_lambda = np.atleast_2d(np.asarray(flux_lambda, dtype=np.float64))
    wave_rest = np.asarray(wave_rest, dtype=np.float64)
    f_nu = flux_lambda * np.broadcast_to(wave_rest, flux_lambda.shape) ** 2
    valid = None if ivar is None else np.atleast_2d(np.asarray(ivar)) > 0
    red = band_mean(wave_rest, f_nu, DN4000_RED, valid, min_coverage)
    blue = band_mean(wave_rest, f_nu, DN4000_BLUE, valid, min_coverage)
    with np.errstate(invalid="ignore", divide="ignore"):
        return red / blue


def line_flux(
    wave_rest: np.ndarray,
    flux: np.ndarray,
    band: tuple[float, float],
    blue: tuple[float, float],
    red: tuple[float, float],
    ivar: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(N,) line flux above a linear continuum and (N,) rest-frame equivalent width (Angstrom).

    wave_rest: (P,) or (N, P) Angstrom; flux: (N, P) F_lambda. The continuum is the line
    through the side-band means at the side-band centres; its mean over ``band`` is its
    value at the band centre. Line flux = (mean(band) - continuum) x band width, in flux x A;
    EW = line flux / continuum (positive for emission). NaN where a band is not covered.
    """
    flux = np.atleast_2d(np.asarray(flux, dtype=np.float64))
    valid = None if ivar is None else np.atleast_2d(np.asarray(ivar)) > 0
    means = [band_mean(wave_rest, flux, b, valid) for b in (band, blue, red)]
    centres = [0.5 * (b[0] + b[1]) for b in (band, blue, red)]
    slope = (means[2] - means[1]) / (centres[2] - centres[1]) if centres[2] != centres[1] else 0.0
    continuum = means[1] + slope * (centres[0] - centres[1])
    flux_line = (means[0] - continuum) * (band[1] - band[0])
    with np.errstate(invalid="ignore", divide="ignore"):
        return flux_line, flux_line / continuum
