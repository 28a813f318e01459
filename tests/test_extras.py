"""Commands whose optional extra is missing stop with one line naming the extra, before any work."""

from importlib import metadata

import pytest

from specdiff_catalog import extras
from specdiff_catalog.cli import main


def _without(monkeypatch, *names: str) -> None:
    """Make the installed distributions ``names`` look absent to importlib.metadata."""
    version = metadata.version

    def fake(name: str) -> str:
        if name in names:
            raise metadata.PackageNotFoundError(name)
        return version(name)

    monkeypatch.setattr(metadata, "version", fake)


def test_the_extras_are_read_from_the_package_metadata():
    assert set(extras.extra_requirements("mock")) == {"bagpipes", "threadpoolctl", "desiutil"}
    assert extras.extra_requirements("rail") == ["pz-rail-base", "qp-prob"]
    assert extras.extra_requirements("no-such-extra") == []
    assert extras.missing("mock") == []  # the [dev] install includes [mock]


def test_mock_without_its_extra_is_one_line_and_writes_nothing(monkeypatch, tmp_path, capsys):
    _without(monkeypatch, "bagpipes", "desiutil")
    out = tmp_path / "mock"
    assert main(["mock", "--out", str(out), "--n-spec", "5", "--n-phot", "5"]) == 2
    err = capsys.readouterr().err
    assert err == (
        "specdiff-catalog mock: error: specdiff-catalog mock needs the [mock] extra "
        "(bagpipes, desiutil not installed): pip install 'specdiff-catalog[mock]'\n"
    )
    assert not out.exists()


def test_export_qp_without_qp_names_the_rail_extra(monkeypatch, tmp_path, capsys):
    _without(monkeypatch, "qp-prob")
    out = tmp_path / "pz.hdf5"
    assert main(["export", "qp", "--pz", str(tmp_path / "none.zarr"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "needs the [rail] extra (qp-prob not installed): pip install 'specdiff-catalog[rail]'" in err
    assert err.count("\n") == 1 and not out.exists()


def test_require_passes_when_installed():
    extras.require("rail", "x")  # qp-prob is in [dev]
    with pytest.raises(extras.MissingExtraError, match=r"\[gpu\] extra \(dask-cuda not installed\)"):
        if extras.missing("gpu"):
            extras.require("gpu", "--cluster cuda")
        else:
            pytest.skip("dask-cuda is installed here")


def test_the_mock_truth_of_the_spectral_validation_needs_the_mock_extra(monkeypatch, tmp_path):
    from specdiff_catalog.report.spectral_validation import _Truth

    _without(monkeypatch, "bagpipes")
    with pytest.raises(extras.MissingExtraError, match=r"--spectra-truth\) needs the \[mock\] extra"):
        _Truth.open(tmp_path)
