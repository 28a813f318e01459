"""Per-object quality flags (the ``flags`` uint16 bit mask of the output store).

Every bit is explained for users in docs/output.md ("Flags"); ``Flag.untrusted()`` is the
set of bits after which an object's outputs should not be used without a closer look.
"""

from __future__ import annotations

import enum

import numpy as np


class Flag(enum.IntFlag):
    """Bits of the per-object ``flags`` column. Rows are never dropped; they are flagged."""

    MISSING_BAND = 1 << 0  # at least one band unusable (ivar <= 0, NaN/inf, or UNPHYSICAL_INPUT)
    NONFINITE_INPUT = 1 << 1  # a NaN/inf in a flux, ivar, EBV or MW-transmission column
    ALL_ZERO_PHOTOMETRY = 1 << 2  # every flux exactly 0 (e.g. no Legacy Surveys match)
    NO_PHOTOMETRY = 1 << 3  # no usable band at all: no PDF can be given (outputs NaN)
    NO_EXTINCTION = 1 << 4  # EBV/MW transmission unusable: fluxes used without de-reddening
    OUTSIDE_TRAINING_DOMAIN = 1 << 5  # features outside the range seen in training
    SAMPLER_FAILURE = 1 << 6  # non-finite samples from the sampler
    UNPHYSICAL_INPUT = 1 << 7  # a band beyond features.INPUT_LIMITS (absurd flux or S/N): not used
    Z_CLIPPED = 1 << 8  # some redshift samples came out < 0 and were set to 0 (log1p models)
    LOW_COVERAGE = 1 << 9  # coverage score below the model's threshold: the training set
    #                        barely populates the object's region of feature space
    PHOTOMETRY_NOT_REPRODUCED = 1 << 10  # posterior-predictive check failed: spectra decoded from
    #                                      the object's draws do not reproduce its fluxes
    PADDING = 1 << 15  # a padding row of the output store (valid = 0)

    @classmethod
    def untrusted(cls) -> Flag:
        """The bits that say an object's PDF and spectrum cannot be taken at face value: no
        usable photometry, unphysical input, outside the training domain or its coverage,
        a sampler failure, or photometry the model does not reproduce."""
        return (
            cls.NO_PHOTOMETRY
            | cls.UNPHYSICAL_INPUT
            | cls.OUTSIDE_TRAINING_DOMAIN
            | cls.LOW_COVERAGE
            | cls.SAMPLER_FAILURE
            | cls.PHOTOMETRY_NOT_REPRODUCED
        )


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


def flag_where(mask: np.ndarray | np.bool_, flag: Flag) -> np.ndarray:
    """(N,) uint16: ``flag`` where the (N,) bool ``mask`` is True, else 0."""
    return np.where(np.asarray(mask, dtype=bool), np.uint16(flag), np.uint16(0)).astype(np.uint16)
