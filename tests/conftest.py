"""Shared fixtures: paths to the real DESI test files (skipped when ../shared is absent)."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# ../shared of the checkout, or of a folder above it (a git worktree under work/wt/NAME)
SHARED_DESI = next((p / "shared" / "data" / "desi" for p in ROOT.parents if (p / "shared" / "data" / "desi").is_dir()),
                   ROOT.parent / "shared" / "data" / "desi")


@pytest.fixture
def real_desi_dir() -> Path:
    """../shared/data/desi with the two real DESI coadd/redrock pairs."""
    if not (SHARED_DESI / "coadd-4-80613-thru20210324.fits").exists():
        pytest.skip("../shared/data/desi is not present (a user's fresh clone)")
    return SHARED_DESI
