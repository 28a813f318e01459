import numpy as np
import pytest
from _stores import write_store

from specdiff_catalog.cli import main
from specdiff_catalog.io.store import open_store
from specdiff_catalog.report.qp_export import export_qp, padded_quantiles

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


@pytest.mark.parametrize("suffix", [".hdf5", ".fits"])
def test_qp_read_gives_back_the_store_medians(store, tmp_path, suffix):
    out = tmp_path / f"pz{suffix}"
    # blocks of one shard: the HDF5 file is written in 8 chunks
    summary = export_qp(store, out, block_rows=128)
    rows = _store_rows(store)
    assert summary.n_written == len(rows["object_id"]) == 692 and summary.n_skipped == 8
    ens = qp.read(str(out))
    assert ens.npdf == 692 and ens.gen_class.name == "quant"
    assert np.array_equal(ens.ancil["id"], rows["object_id"])
    # the median of the qp PDF (its quantile function at 0.5, a stored level) is the store's z_median
    assert np.allclose(ens.median().ravel(), rows["z_median"], rtol=0, atol=1e-6)
    assert np.allclose(ens.ancil["zmode"], rows["z_mode"], atol=1e-7)
    assert np.allclose(ens.ppf(0.16).ravel(), rows["z_quantiles"][:, 2], atol=1e-6)
    # the CDF spans 0..1; no support below z = 0 unless the stored quantiles go there
    positive = rows["z_quantiles"][:, 0] > 0
    assert 0 < positive.sum() < len(positive)  # the mock store has both kinds
    assert np.allclose(ens.cdf(np.array([0.0])).ravel()[positive], 0.0, atol=1e-9)
    assert np.all(ens.cdf(np.array([0.0])).ravel()[~positive] > 0)
    assert np.allclose(ens.cdf(np.array([5.0])).ravel(), 1.0)
    levels = ens.dist.quants
    assert levels[0] == 0 and levels[-1] == 1 and np.all((levels[1:-1] > 0) & (levels[1:-1] < 1))


def test_padding_continues_the_outer_quantiles_and_clips_at_zero():
    levels = np.array([0.1, 0.5, 0.9])
    quants, locs = padded_quantiles(levels, np.array([[0.5, 0.7, 0.9], [0.02, 0.1, 0.2]]))
    assert np.allclose(quants, [0, 0.1, 0.5, 0.9, 1])
    assert np.allclose(locs[0], [0.45, 0.5, 0.7, 0.9, 0.95])  # slope 0.5 per unit level
    assert np.allclose(locs[1], [0.0, 0.02, 0.1, 0.2, 0.225])  # 0.02 - 0.1 * 0.2 = 0: clipped, not < 0
    # a first quantile below 0 keeps its extrapolation; tied quantiles are moved apart by 1e-6
    _, locs = padded_quantiles(levels, np.array([[-0.02, 0.1, 0.1]]))
    assert np.allclose(locs, [[-0.05, -0.02, 0.1, 0.1 + 1e-6, 0.1 + 2e-6]])
    with pytest.raises(ValueError, match="strictly inside"):
        padded_quantiles(np.array([0.0, 0.5]), np.zeros((1, 2)))


def test_cli_export_qp_and_refusals(store, tmp_path, capsys):
    out = tmp_path / "pz.hdf5"
    assert main(["export", "qp", "--pz", str(store), "--out", str(out)]) == 0
    assert "692 PDFs" in capsys.readouterr().out
    assert main(["export", "qp", "--pz", str(store), "--out", str(out)]) == 2
    assert "exists" in capsys.readouterr().err
    assert main(["export", "qp", "--pz", str(store), "--out", str(tmp_path / "pz.h5")]) == 2
    assert "not '.h5'" in capsys.readouterr().err
