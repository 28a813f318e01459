"""RAIL integration: the boundary conversions, stage discovery, and a real ceci pipeline on DC2 rows."""

from __future__ import annotations

import os
import shutil
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from specdiff_catalog.bands import BandSet
from specdiff_catalog.metrics import point_metrics
from specdiff_catalog.models.store import default_model_dir, read_config
from specdiff_catalog.rail.boundary import (
    MagnitudeColumns,
    magnitudes_to_fluxes,
    read_model_archive,
    samples_to_ensemble,
    training_table,
    write_model_archive,
)

LSST = BandSet.load("lsst")
MAGS = tuple(f"mag_{b}_lsst" for b in "ugrizy")
ERRS = tuple(f"mag_err_{b}_lsst" for b in "ugrizy")
LIMITS = dict(zip(MAGS, [27.79, 29.04, 29.06, 28.62, 27.98, 27.05], strict=True))  # RAIL's defaults
COLUMNS = MagnitudeColumns(MAGS, ERRS, LIMITS)


def _table(mag: list[float], err: list[float]) -> dict[str, np.ndarray]:
    """Rows with the same magnitude and error in every band."""
    return {c: np.array(mag) for c in MAGS} | {c: np.array(err) for c in ERRS}


def test_magnitudes_become_njy_fluxes_and_non_detections_measure_zero():
    table = _table([26.4, 99.0, np.nan, 26.4], [0.1, 26.6, 0.2, np.nan])
    out = magnitudes_to_fluxes(table, LSST, COLUMNS)
    flux, ivar = out["U_CMODELFLUX"], out["U_CMODELFLUX_IVAR"]
    assert flux[0] == pytest.approx(100.0)  # 31.4 - 2.5 log10(100) = 26.4
    assert ivar[0] ** -0.5 == pytest.approx(100.0 * np.log(10) / 2.5 * 0.1)  # 9.21 nJy
    limit_u = 10 ** (-0.4 * (27.79 - 31.4))  # 27.7 nJy: RAIL's 1-sigma limit
    assert flux[1] == flux[2] == 0.0
    assert ivar[1] ** -0.5 == pytest.approx(limit_u) and ivar[2] ** -0.5 == pytest.approx(limit_u)
    assert ivar[3] == 0.0  # a detection without a usable error is a missing band
    assert ivar[0] ** -0.5 != out["Y_CMODELFLUX_IVAR"][1] ** -0.5  # each band its own limit
    assert (out["MW_TRANSMISSION_Y"] == 1.0).all()


def test_magnitude_columns_must_match_the_band_set():
    with pytest.raises(ValueError, match=r"has 6 bands .* 5 magnitude"):
        magnitudes_to_fluxes(_table([25.0], [0.1]), LSST, MagnitudeColumns(MAGS[:5], ERRS[:5], LIMITS))
    with pytest.raises(KeyError, match="mag_y_lsst"):
        magnitudes_to_fluxes({c: np.ones(1) for c in MAGS[:5] + ERRS}, LSST, COLUMNS)


def test_training_table_uses_the_id_column_or_row_numbers():
    table = _table([25.0, 24.0], [0.1, 0.1]) | {"redshift": np.array([0.3, 1.2]), "id": np.array([7, 9])}
    with_ids = training_table(table, LSST, COLUMNS, "redshift", "id")
    assert with_ids["TARGETID"].tolist() == [7, 9] and with_ids["Z"].tolist() == [0.3, 1.2]
    assert training_table(table, LSST, COLUMNS, "redshift", "object_id")["TARGETID"].tolist() == [0, 1]


def test_samples_become_normalised_histograms_without_losing_mass():
    pytest.importorskip("qp")
    edges = np.linspace(0.0, 3.0, 301)
    rng = np.random.default_rng(1)
    samples = np.stack([rng.normal(0.8, 0.05, 200), np.r_[np.full(150, 0.5), np.full(50, 3.7)]])
    samples = np.vstack([samples, np.full((1, 200), np.nan)])
    ens = samples_to_ensemble(samples, edges)
    centres, width = 0.5 * (edges[1:] + edges[:-1]), edges[1] - edges[0]
    np.testing.assert_allclose((ens.pdf(centres) * width).sum(axis=1), 1.0, atol=1e-9)
    assert ens.cdf(np.array([0.505, 0.51]))[1] == pytest.approx([0.375, 0.75])  # 150 of 200 in [0.50, 0.51)
    assert ens.cdf(np.array([2.99]))[1, 0] == pytest.approx(0.75)  # 3.7 counted in the last bin
    assert ens.pdf(centres)[2] == pytest.approx(np.full(300, 1 / 3.0))  # no samples: flat
    assert abs(ens.median()[0, 0] - 0.8) < 0.01


def test_model_archive_round_trip_and_refuses_nested_names(tmp_path):
    model = tmp_path / "model"
    shutil.copytree(default_model_dir(), model)
    (model / "training").mkdir()  # work files stay out of the archive
    (model / "training" / "log.jsonl").write_text("{}")
    write_model_archive(model, tmp_path / "m.zip")
    weights = sorted(w.file for w in read_config(model).weight_files())
    assert sorted(zipfile.ZipFile(tmp_path / "m.zip").namelist()) == sorted(["config.json", *weights])
    unpacked = read_model_archive(tmp_path / "m.zip")
    assert all((unpacked / w).read_bytes() == (model / w).read_bytes() for w in weights)
    assert read_model_archive(model) == model
    with zipfile.ZipFile(tmp_path / "bad.zip", "w") as archive:
        archive.writestr("../config.json", "{}")
    with pytest.raises(ValueError, match="unexpected member"):
        read_model_archive(tmp_path / "bad.zip")


# --- with RAIL -----------------------------------------------------------------------------


def test_rail_discovers_the_stages_like_any_pz_rail_package():
    pytest.importorskip("rail.core")
    import rail.stages
    from rail.core.introspection import RailEnv
    from rail.core.stage import RailStage

    rail.stages.import_and_attach_all(silent=True)
    assert "rail.specdiff" in RailEnv.list_rail_packages()
    assert rail.stages.SpecdiffInformer.__module__ == "rail.estimation.algos.specdiff"
    assert {"SpecdiffInformer", "SpecdiffEstimator"} <= set(RailStage.pipeline_stages)
    from specdiff_catalog.rail import SpecdiffEstimator

    assert SpecdiffEstimator is rail.stages.SpecdiffEstimator


def _dc2_rows(name: str, n: int, path: Path) -> np.ndarray:
    """n evenly spaced rows of one of pz-rail-base's DC2 test files (sorted by redshift), written
    to path; their z."""
    import tables_io
    from rail.utils.path_utils import find_rail_file

    data = tables_io.read(find_rail_file(f"examples_data/testdata/{name}"))["photometry"]
    take = np.linspace(0, len(data["redshift"]) - 1, n).astype(int)
    rows = {k: v[take] for k, v in data.items()}
    tables_io.write({"photometry": rows}, str(path))
    return np.asarray(rows["redshift"])


def test_inform_and_estimate_run_as_a_ceci_pipeline(tmp_path, monkeypatch):
    pytest.importorskip("rail.core")
    import ceci
    import qp
    import tables_io
    from rail.core.stage import RailPipeline

    from rail.estimation.algos.specdiff import SpecdiffEstimator, SpecdiffInformer

    z_train = _dc2_rows("test_dc2_training_9816.hdf5", 2000, tmp_path / "train.hdf5")
    z_true = _dc2_rows("test_dc2_validation_9816.hdf5", 300, tmp_path / "test.hdf5")
    ids = tables_io.read(str(tmp_path / "test.hdf5"))["photometry"]["id"]

    class SpecdiffPipeline(RailPipeline):
        default_input_dict = {"input_train": "dummy.in", "input_test": "dummy.in"}  # noqa: RUF012

        def __init__(self) -> None:
            RailPipeline.__init__(self)
            self.inform_specdiff = SpecdiffInformer.build(
                aliases={"input": "input_train"}, preset="tiny", epochs=15, device="cpu", id_col="id"
            )
            self.estimate_specdiff = SpecdiffEstimator.build(
                aliases={"input": "input_test"},
                connections={"model": self.inform_specdiff.io.model},
                n_samples=100,
                id_col="id",
            )

    pipe = SpecdiffPipeline()
    inputs = {"input_train": str(tmp_path / "train.hdf5"), "input_test": str(tmp_path / "test.hdf5")}
    run_config = {"output_dir": str(tmp_path / "out"), "log_dir": str(tmp_path / "logs"), "resume": False}
    pipe.initialize(inputs, run_config, None)
    pipe.save(str(tmp_path / "pipe.yml"))
    # ceci starts each stage as `python3 -m ceci rail.estimation.algos.specdiff.<Stage>`
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.chdir(tmp_path)
    assert ceci.Pipeline.read(str(tmp_path / "pipe.yml")).run() == 0

    ens = qp.read(str(tmp_path / "out" / "output_estimate_specdiff.hdf5"))
    assert ens.npdf == 300 and ens.gen_obj.__class__.__name__ == "hist_gen"
    edges = ens.gen_obj.bins
    np.testing.assert_allclose((ens.pdf(0.5 * (edges[1:] + edges[:-1])) * np.diff(edges)).sum(axis=1), 1.0)
    np.testing.assert_array_equal(ens.ancil["id"], ids)
    point = point_metrics(ens.ancil["zmedian"], z_true)
    trivial = point_metrics(np.full(300, np.median(z_train)), z_true)  # one z for every object: 0.225
    assert trivial.sigma_nmad > 0.2 and point.sigma_nmad < trivial.sigma_nmad / 3, (point, trivial)
    assert point.n == 300 and abs(point.bias) < 0.05 and point.eta_015 < 0.15, point  # 0.0586, 0.002, 0.097


def test_the_docs_example_runs(tmp_path, monkeypatch):
    pytest.importorskip("rail.core")
    import qp

    text = (Path(__file__).parents[1] / "docs" / "rail.md").read_text()
    section = text[text.index("## Using them") :]
    code = section[section.index("```python\n") + 10 : section.index("```\n", section.index("```python\n"))]
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code, "docs/rail.md", "exec"), namespace)
    pdfs = namespace["pdfs"]
    assert pdfs.npdf == 512 and qp.read("specdiff_pz.hdf5").npdf == 512
    assert (tmp_path / "specdiff_model.zip").exists()
    assert np.isfinite(pdfs.ancil["zmedian"]).all()
