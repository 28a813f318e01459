import numpy as np
import pytest

from specdiff_catalog.bands import BandSet, MissingColumnError, require_columns
from specdiff_catalog.config import ConfigError, available_presets


def test_every_preset_loads_with_its_filters():
    assert set(available_presets("bands")) >= {"ls-grzw1w2", "ls-dr10-south", "ls-north", "sdss", "lsst"}
    for name in available_presets("bands"):
        bandset = BandSet.load(name)
        assert len(bandset.filters.names) == len(bandset.bands)
        assert BandSet.from_dict(bandset.to_dict()) == bandset


def test_decam_extinction_coefficients_as_published():
    south = BandSet.load("ls-dr10-south")
    assert dict(zip(south.names, south.extinction_r, strict=True)) == {
        "g": 3.214,
        "r": 2.165,
        "i": 1.592,
        "z": 1.211,
        "W1": 0.184,
        "W2": 0.113,
    }
    # 10^(-0.4 * 3.214 * 0.1) for g at E(B-V) = 0.1
    assert south.mw_transmission(np.array([0.1]))[0, 0] == pytest.approx(0.7437723, rel=1e-6)


def test_user_toml_file_works_like_a_preset(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text(
        'name = "two"\ndescription = "x"\nzeropoint = 22.5\nflux_unit = "nanomaggy"\nebv_column = "EBV"\n'
        '[[bands]]\nname = "g"\nflux = "F_G"\nivar = "I_G"\nmw_transmission = "T_G"\n'
        'filter = "decam2014-g"\nextinction_r = 3.214\nsoftening = 0.03\n'
    )
    bandset = BandSet.load(str(path))
    assert bandset.names == ["g"] and bandset.bands[0].flux == "F_G"


def test_bad_configuration_is_named():
    with pytest.raises(ConfigError, match="unknown bands preset 'nope'"):
        BandSet.load("nope")
    data = BandSet.load("sdss").to_dict()
    data["bands"][0]["colour"] = "red"
    with pytest.raises(ConfigError, match="unknown key"):
        BandSet.from_dict(data)


def test_columns_match_case_insensitively_and_absences_are_named():
    found = require_columns(["flux_g", "FLUX_IVAR_G"], ["FLUX_G", "FLUX_IVAR_G"], "x.parquet")
    assert found == {"FLUX_G": "flux_g", "FLUX_IVAR_G": "FLUX_IVAR_G"}
    with pytest.raises(MissingColumnError, match=r"x.parquet: missing column.*FLUX_R"):
        require_columns(["FLUX_G"], ["FLUX_G", "FLUX_R"], "x.parquet")
