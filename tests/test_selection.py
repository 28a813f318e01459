"""The spectroscopic selection policy: which coadd targets are kept, and why the others are not."""

from __future__ import annotations

import numpy as np

from specdiff_catalog.io.desi import read_coadd, read_redrock, redrock_path_for
from specdiff_catalog.selection import SpectroSelection, select
from tests._desi_files import write_pair


def test_selection_counts_each_reason(tmp_path):
    #           keep  status zwarn  star   z<0    missing  status+zwarn  keep
    targetid = [1, 2, 3, 4, 5, 6, 7, 8]
    coadd = write_pair(
        tmp_path,
        "s",
        np.array(targetid),
        [0.1, 0.2, 0.3, 0.4, -0.003, 0.5, 0.2, 1.65],
        spectype=["GALAXY", "GALAXY", "GALAXY", "STAR", "GALAXY", "GALAXY", "GALAXY", "GALAXY"],
        zwarn=np.array([0, 0, 4, 0, 0, 0, 4, 0]),
        COADD_FIBERSTATUS=np.array([0, 2, 0, 0, 0, 0, 2, 0], np.int32),
        redrock_rows=np.array([0, 1, 2, 3, 4, 6, 7]),
    )
    result = select(read_coadd(coadd), read_redrock(redrock_path_for(coadd)), SpectroSelection())
    assert result.keep.tolist() == [True, False, False, False, False, False, False, True]
    assert result.reason.tolist() == [
        "",
        "fiberstatus",
        "zwarn",
        "spectype",
        "z_range",
        "missing_redshift",
        "fiberstatus",
        "",
    ]
    assert result.rejected == {
        "missing_redshift": 1,
        "fiberstatus": 2,
        "zwarn": 1,
        "spectype": 1,
        "z_range": 1,
    }
    assert result.table["TARGETID"].tolist() == targetid and np.isnan(result.table["Z"].iloc[5])
    assert result.table["Z"].iloc[7] == 1.65  # no upper cut by default

    loose = select(
        read_coadd(coadd),
        read_redrock(redrock_path_for(coadd)),
        SpectroSelection(z_min=-0.01, z_max=1.0, require_zwarn_zero=False, require_fiberstatus_ok=False),
    )
    assert loose.keep.tolist() == [True, True, True, False, True, False, True, False]
