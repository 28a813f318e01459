import numpy as np
import pytest
from _stores import write_store

from specdiff_catalog.cli import main
from specdiff_catalog.defaults import QP_DZ as DZ
from specdiff_catalog.io.store import open_store
from specdiff_catalog.report.qp_export import export_qp, histogram_edges, quantile_histograms

qp = pytest.importorskip("qp")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    # every partition done (a store with a failed one is refused: tests/test_store_faults.py)
    return write_store(tmp_path_factory.mktemp("qp") / "out.zarr", failed=None)


def _store_rows(path):
    group = open_store(path, mode="r").group
    valid = group["valid"][:] == 1
    has_pdf = valid & np.isfinite(group["z_quantiles"][:]).all(axis=1)
    return {name: group[name][:][has_pdf] for name in ("object_id", "z_median", "z_mode", "z_quantiles")}


def _check_pdfs(ens, dz=DZ):
    """Every CDF inside [0, 1], non-decreasing, 0 below and 1 above the PDF; every PDF integrates to 1."""
    edges = np.asarray(ens.dist.bins if hasattr(ens.dist, "bins") else ens.metadata["bins"]).ravel()
    grid = np.linspace(edges[0] - 0.5, edges[-1] + 0.5, 4001)
    cdf = ens.cdf(grid)
    assert np.all((cdf >= 0) & (cdf <= 1 + 1e-12)) and np.all(np.diff(cdf, axis=1) >= -1e-12)
    assert np.allclose(cdf[:, 0], 0) and np.allclose(cdf[:, -1], 1)
    centres = 0.5 * (edges[1:] + edges[:-1])
    # exact for a piecewise-constant PDF
    assert np.allclose((ens.pdf(centres) * np.diff(edges)).sum(axis=1), 1, atol=1e-9)
    fine = np.linspace(edges[0], edges[-1], 40 * (edges.size - 1) + 1)
    assert np.allclose(np.trapezoid(ens.pdf(fine), fine, axis=1), 1, atol=0.03)  # any quadrature agrees
    assert np.all(ens.pdf(grid) >= 0)


@pytest.mark.parametrize(("n_samples", "dropped"), [(8, 4), (16, 4), (32, 2), (100, 0)])
def test_pdfs_are_proper_at_any_number_of_samples(tmp_path, n_samples, dropped):
    store = write_store(tmp_path / "out.zarr", sizes=(300,), failed=None, n_samples=n_samples)
    out = tmp_path / "pz.hdf5"
    summary = export_qp(store, out)
    assert summary.dropped.size == dropped and summary.levels.size == 9 - dropped
    ens = qp.read(str(out))
    assert ens.npdf == 298 and ens.gen_class.name == "hist"
    _check_pdfs(ens)
    rows = _store_rows(store)
    # the CDF is exact at the bin edges, so its quantiles are within one bin of the stored ones
    assert np.abs(ens.median().ravel() - rows["z_median"]).max() < DZ
    inner = np.abs(ens.ppf(0.16).ravel() - rows["z_quantiles"][:, 2])
    assert inner.max() < DZ


def test_tied_quantiles_give_a_step_not_a_spike():
    levels = np.array([0.1, 0.25, 0.5, 0.75, 0.9])
    locs = np.array([[0.305, 0.305, 0.405, 0.405, 0.505], [0.2, 0.25, 0.3, 0.35, 0.4]])  # row 0: two ties
    edges = histogram_edges(0.0, 1.0, 0.01)
    assert edges.size == 101 and edges[-1] == pytest.approx(1.0)
    pdfs = quantile_histograms(levels, locs, edges)
    assert np.allclose(pdfs.sum(axis=1) * 0.01, 1) and np.all(pdfs >= 0)
    # extended to level 0 along a flat line, the first tie holds 0.25 at z = 0.305: the bin
    # [0.30, 0.31) gets it and a quarter of the rise of 0.25 over (0.305, 0.405); the tie at
    # 0.405 the same in [0.40, 0.41); finite densities, no 1e-6-wide spike
    assert pdfs[0, 30] * 0.01 == pytest.approx(0.25 + 0.25 * 0.05, abs=1e-9)
    assert pdfs[0, 40] * 0.01 == pytest.approx(0.25 * 0.05 + 0.25 + 0.15 * 0.05, abs=1e-9)
    assert pdfs[0].max() < 30


def test_qp_read_gives_back_the_store_and_the_ids(store, tmp_path):
    for suffix in (".hdf5", ".fits"):
        out = tmp_path / f"pz{suffix}"
        # blocks of one shard: the HDF5 file is written in 8 chunks
        summary = export_qp(store, out, block_rows=128)
        rows = _store_rows(store)
        assert summary.n_written == len(rows["object_id"]) == 692 and summary.n_skipped == 8
        ens = qp.read(str(out))
        assert ens.npdf == 692 and ens.gen_class.name == "hist"
        assert np.array_equal(ens.ancil["id"], rows["object_id"])
        assert np.allclose(ens.ancil["zmode"], rows["z_mode"], atol=1e-7)
        assert np.abs(ens.median().ravel() - rows["z_median"]).max() < DZ
        _check_pdfs(ens)
        # no support below z = 0 unless the stored quantiles go there
        positive = rows["z_quantiles"][:, 0] > 0
        assert 0 < positive.sum() < len(positive)  # the mock store has both kinds
        below = ens.cdf(np.array([0.0])).ravel()
        assert np.allclose(below[positive], 0.0, atol=1e-9) and np.all(below[~positive] > 0)


def test_cli_export_qp_and_refusals(store, tmp_path, capsys):
    out = tmp_path / "pz.hdf5"
    assert main(["export", "qp", "--pz", str(store), "--out", str(out), "--dz", "0.01"]) == 0
    printed = capsys.readouterr().out
    assert "692 PDFs as a qp hist ensemble" in printed and "dz = 0.01" in printed
    assert main(["export", "qp", "--pz", str(store), "--out", str(out)]) == 2
    assert "exists" in capsys.readouterr().err
    assert main(["export", "qp", "--pz", str(store), "--out", str(tmp_path / "pz.h5")]) == 2
    assert "not '.h5'" in capsys.readouterr().err


def test_too_few_samples_for_two_levels_is_refused(tmp_path, capsys):
    store = write_store(tmp_path / "out.zarr", sizes=(20,), failed=None, n_samples=2)
    assert main(["export", "qp", "--pz", str(store), "--out", str(tmp_path / "pz.hdf5")]) == 2
    assert "resolve fewer than two" in capsys.readouterr().err
