"""Shared fixtures: paths to the real DESI test files (skipped when ../shared is absent)."""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED_DESI = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "desi"


@pytest.fixture
def real_desi_dir() -> Path:
    """../shared/data/desi with the two real DESI coadd/redrock pairs."""
    if not (SHARED_DESI / "coadd-4-80613-thru20210324.fits").exists():
        pytest.skip("../shared/data/desi is not present (a user's fresh clone)")
    return SHARED_DESI
