"""The Python blocks of docs/output.md, run against the tiny mock survey and its `run` store."""

import re

import numpy as np
import pandas as pd
import pytest

from specdiff_catalog.cli import main
from specdiff_catalog.defaults import QP_DZ
from specdiff_catalog.io.store import open_store

DOC = __import__("pathlib").Path(__file__).resolve().parents[1] / "docs" / "output.md"


def _blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)


def _run(block: str, **paths) -> dict:
    for name, path in paths.items():
        block = block.replace(f'"{name}', f'"{path}')
    namespace: dict = {}
    exec(compile(block, str(DOC), "exec"), namespace)
    return namespace


@pytest.fixture(scope="module")
def store_frame(tiny_run):
    group = open_store(tiny_run, mode="r").group
    valid = group["valid"][:] == 1
    return pd.DataFrame({"object_id": group["object_id"][:][valid], "z_median": group["z_median"][:][valid]})


def _check_join(joined: pd.DataFrame, catalog_rows: int, store_frame: pd.DataFrame) -> None:
    assert len(joined) == catalog_rows and joined["OBJECT_ID"].is_unique
    expected = store_frame.set_index("object_id")["z_median"]
    got = joined.set_index("OBJECT_ID")["z_median"]
    assert np.allclose(got.loc[expected.index], expected, equal_nan=True)  # every object finds its own row
    assert got.notna().sum() == expected.notna().sum() > 0.9 * catalog_rows


def test_docs_have_the_six_examples():
    assert len(_blocks()) == 6


def test_flags_example(tiny_run):
    from specdiff_catalog.flags import Flag
    from specdiff_catalog.io.store import open_dataset

    ds = open_dataset(tiny_run)
    namespace = {"ds": ds}
    exec(compile(_blocks()[0], str(DOC), "exec"), namespace)
    trusted = namespace["trusted"]
    assert trusted.shape == (ds.sizes["object"],) and 0 < trusted.sum() <= trusted.size
    assert not ((ds["flags"].values[trusted] & int(Flag.untrusted())) != 0).any()


def test_pandas_join(trained_tiny, tiny_run, store_frame):
    ns = _run(_blocks()[1], **{"OUT.zarr": tiny_run, "CATALOG": trained_tiny.catalog})
    _check_join(ns["joined"], len(ns["catalog"]), store_frame)
    assert ns["joined"]["z_q0.5"].notna().sum() == store_frame["z_median"].notna().sum()


def test_lsdb_join(trained_tiny, tiny_run, store_frame):
    pytest.importorskip("lsdb")
    ns = _run(_blocks()[2], **{"OUT.zarr": tiny_run, "CATALOG": trained_tiny.catalog})
    _check_join(ns["joined"], 400, store_frame)


def test_specutils_example(tiny_run, tmp_path):
    pytest.importorskip("specutils")
    out = tmp_path / "s.fits"
    assert (
        main(["spectra", "--pz", str(tiny_run), "--select", "random=4", "--observed", "--out", str(out)]) == 0
    )
    ns = _run(_blocks()[3], **{"s.fits": out})
    assert ns["rest"].flux.shape == (4, ns["wave"].size) and ns["observed"].flux.shape == (4, 7781)
    assert 1000 < ns["wave"].value.min() < ns["wave"].value.max() < 12000


def test_spectra_example(tiny_run):
    ns = _run(_blocks()[4], **{"OUT.zarr": tiny_run})
    assert len(ns["table"]) == 20 and ns["rest_flux"].shape == (20, ns["rest_wave"].size)
    assert ns["table"]["has_latent"].sum() >= 19 and ns["spectra"].flux_obs.shape[1] == 7781


def test_qp_example(tiny_run, store_frame, tmp_path):
    pytest.importorskip("qp")
    out = tmp_path / "pz.hdf5"
    assert main(["export", "qp", "--pz", str(tiny_run), "--out", str(out)]) == 0
    ns = _run(_blocks()[5], **{"pz.hdf5": out})
    with_pdf = store_frame[store_frame["z_median"].notna()]
    assert np.array_equal(ns["ids"], with_pdf["object_id"])
    assert np.abs(ns["medians"] - with_pdf["z_median"]).max() < QP_DZ  # within one histogram bin
