"""Which DESI spectra train a model: the spectroscopic selection policy (as SPENDER's DESI loader).

``select(coadd, redshifts, SpectroSelection(...))`` joins a coadd's targets with their
redrock redshifts and keeps those with a redrock row, COADD_FIBERSTATUS == 0, ZWARN == 0,
SPECTYPE == GALAXY and a redshift in range; every rejected row is counted under its
first failing reason. ``prepare`` and the spectral validation use it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from specdiff_catalog import defaults
from specdiff_catalog.io.desi import Coadd

REJECTION_REASONS = ("missing_redshift", "fiberstatus", "zwarn", "spectype", "z_range")
WHAT_TO_CHECK = {
    "missing_redshift": "targets without a redrock row: is each coadd's redrock file complete?",
    "fiberstatus": "COADD_FIBERSTATUS != 0: bad fibres or positioning",
    "zwarn": "ZWARN != 0: redrock did not trust these redshifts",
    "spectype": "SPECTYPE is not the selected one (stars, QSOs)",
    "z_range": "Z outside the redshift range: widen --z-min / --z-max if these galaxies belong in the model",
}
"""Per rejection reason, what a user should look at when it removes many spectra."""


@dataclass(frozen=True)
class SpectroSelection:
    """Which coadd spectra are kept for training (as SPENDER's DESI loader).

    Kept: a redrock row exists, COADD_FIBERSTATUS == 0, ZWARN == 0, SPECTYPE == spectype,
    z_min <= Z < z_max (z_max None: no upper cut; a non-finite Z is always cut).
    """

    z_min: float = defaults.TRAINING_Z_RANGE[0]
    z_max: float | None = defaults.TRAINING_Z_RANGE[1]
    spectype: str = "GALAXY"
    require_fiberstatus_ok: bool = True
    require_zwarn_zero: bool = True


@dataclass
class SelectionResult:
    """table: the coadd's fibermap rows joined with Z, ZERR, ZWARN, SPECTYPE, DELTACHI2
    by TARGETID (file order, NaN / '' where redrock has no row); keep: (n,) bool;
    reason: (n,) the first rejection reason of each row ('' when kept);
    rejected: {reason: count} over REJECTION_REASONS, each row counted once."""

    table: pd.DataFrame
    keep: np.ndarray
    reason: np.ndarray
    rejected: dict[str, int] = field(default_factory=dict)


def _fiberstatus(fibermap: pd.DataFrame) -> np.ndarray | None:
    for column in ("COADD_FIBERSTATUS", "FIBERSTATUS"):
        if column in fibermap:
            return fibermap[column].to_numpy()
    return None


def select(
    coadd: Coadd, redshifts: pd.DataFrame, selection: SpectroSelection = SpectroSelection()
) -> SelectionResult:
    """Join the coadd's targets with their redshifts and apply ``selection``.

    A target absent from ``redshifts`` is rejected as 'missing_redshift'; a file
    without a fibre-status column passes the fibre-status cut.
    """
    redshifts = redshifts.drop_duplicates("TARGETID")
    index = pd.Index(redshifts["TARGETID"].to_numpy()).get_indexer(coadd.targetid)
    found = index >= 0
    joined = {}
    for column, fill in (
        ("Z", np.nan),
        ("ZERR", np.nan),
        ("ZWARN", -1),
        ("SPECTYPE", ""),
        ("DELTACHI2", np.nan),
    ):
        values = redshifts[column].to_numpy() if column in redshifts else np.full(len(redshifts), fill)
        joined[column] = np.where(found, values[np.where(found, index, 0)] if len(values) else fill, fill)
    table = coadd.fibermap.reset_index(drop=True).assign(**joined)
    z = table["Z"].to_numpy(dtype=float)
    status = _fiberstatus(table)
    with np.errstate(invalid="ignore"):
        failed = {
            "missing_redshift": ~found,
            "fiberstatus": (status != 0)
            if selection.require_fiberstatus_ok and status is not None
            else np.zeros(len(table), bool),
            "zwarn": (table["ZWARN"].to_numpy() != 0)
            if selection.require_zwarn_zero
            else np.zeros(len(table), bool),
            "spectype": np.char.upper(table["SPECTYPE"].to_numpy().astype(str)) != selection.spectype.upper(),
            "z_range": ~(
                np.isfinite(z)
                & (z >= selection.z_min)
                & (z < (np.inf if selection.z_max is None else selection.z_max))
            ),
        }
    reason = np.full(len(table), "", dtype=object)
    for name in reversed(REJECTION_REASONS):  # the first failing reason wins
        reason[failed[name]] = name
    rejected = {name: int(np.count_nonzero(reason == name)) for name in REJECTION_REASONS}
    return SelectionResult(table=table, keep=reason == "", reason=reason, rejected=rejected)
