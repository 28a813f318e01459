"""Per-object quality flags (the ``flags`` uint16 bit mask of the output store)."""

from __future__ import annotations

import enum

import numpy as np


class Flag(enum.IntFlag):
    """Bits of the per-object ``flags`` column. Rows are never dropped; they are flagged."""

    MISSING_BAND = 1 << 0  # at least one band unusable (ivar <= 0, NaN/inf flux or ivar)
    NONFINITE_INPUT = 1 << 1  # a NaN/inf in a flux, ivar, EBV or MW-transmission column
    ALL_ZERO_PHOTOMETRY = 1 << 2  # every flux exactly 0 (e.g. no Legacy Surveys match)
    NO_PHOTOMETRY = 1 << 3  # no usable band at all: no PDF can be given (outputs NaN)
    NO_EXTINCTION = 1 << 4  # EBV/MW transmission unusable: fluxes used without de-reddening
    OUTSIDE_TRAINING_DOMAIN = 1 << 5  # features outside the range seen in training
    SAMPLER_FAILURE = 1 << 6  # non-finite samples from the sampler
    PADDING = 1 << 15  # a padding row of the output store (valid = 0)


NO_RESULT = Flag.NO_PHOTOMETRY | Flag.SAMPLER_FAILURE
"""Flags that explain NaN model outputs: a valid row without one of them has finite outputs
(``io.store.OutputStore.write_partition`` refuses a partition that breaks this)."""


def cf_attributes() -> dict[str, list[int] | str]:
    """CF ``flag_masks`` / ``flag_meanings`` of the ``flags`` column (one entry per Flag bit)."""
    members = Flag.__members__.items()
    return {"flag_masks": [int(f) for _, f in members], "flag_meanings": " ".join(n for n, _ in members)}


def describe(flags: np.ndarray) -> dict[str, int]:
    """Count the objects carrying each flag: ``{flag name: count}``."""
    flags = np.asarray(flags, dtype=np.uint16)
    return {name: int(np.count_nonzero(flags & flag)) for name, flag in Flag.__members__.items()}
