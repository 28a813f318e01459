"""Presets and user configuration files: a file may start from another (``base``)."""

from pathlib import Path

import pytest

from specdiff_catalog.config import ConfigError, load_preset
from specdiff_catalog.models.diffusion import DiffusionConfig


def test_base_merges_tables_key_by_key(tmp_path: Path) -> None:
    (tmp_path / "wide.toml").write_text('base = "small"\nhidden = 512\n[training]\nepochs = 7\n')
    (tmp_path / "sub").mkdir()
    # a relative base is read from the referring file's directory, not the working directory
    (tmp_path / "sub" / "wider.json").write_text('{"base": "../wide.toml", "n_blocks": 6}')
    small, wide = load_preset("diffusion", "small"), load_preset("diffusion", tmp_path / "sub" / "wider.json")
    assert (wide["hidden"], wide["n_blocks"], wide["training"]["epochs"]) == (512, 6, 7)
    assert wide["training"]["batch_size"] == small["training"]["batch_size"] == 512  # rest of table kept
    assert "base" not in wide
    assert {k for k in small if small[k] != wide[k]} == {"hidden", "n_blocks", "training"}
    assert DiffusionConfig.load(str(tmp_path / "sub" / "wider.json")).hidden == 512


def test_bad_base_is_named(tmp_path: Path) -> None:
    (tmp_path / "a.toml").write_text('base = "b.toml"\n')
    (tmp_path / "b.toml").write_text('base = "a.toml"\n')
    with pytest.raises(ConfigError, match=r"a.toml: its base chain comes back to itself"):
        load_preset("diffusion", tmp_path / "a.toml")
    (tmp_path / "c.toml").write_text('base = "huge"\n')
    with pytest.raises(ConfigError, match="unknown diffusion preset 'huge'; bundled presets: paper, photoz"):
        load_preset("diffusion", tmp_path / "c.toml")
    (tmp_path / "e.toml").write_text('base = "gone.toml"\n')
    with pytest.raises(ConfigError, match=r"e.toml: its base .*gone.toml is not a file"):
        load_preset("diffusion", tmp_path / "e.toml")
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(ConfigError, match=r"list.json: holds list, not a table"):
        load_preset("diffusion", tmp_path / "list.json")
    (tmp_path / "d.toml").write_text("base = 3\n")
    with pytest.raises(ConfigError, match=r"d.toml: base must be a diffusion preset name or file, not 3"):
        load_preset("diffusion", tmp_path / "d.toml")
