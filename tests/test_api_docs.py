"""Every Python block of docs/api.md, run in order in one namespace (the bundled model and demo
catalog), with checks of what each produced. ``python tests/test_api_docs.py`` prints each block's
output, which is what docs/api.md shows below it."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import numpy as np
import pytest

DOC = Path(__file__).resolve().parents[1] / "docs" / "api.md"


def blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)


def run_blocks(workdir: Path) -> tuple[dict, list[str]]:
    """Run the blocks in ``workdir``; return the namespace and each block's printed output."""
    import os

    namespace: dict = {}
    printed = []
    here = Path.cwd()
    os.chdir(workdir)
    try:
        for block in blocks():
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                exec(compile(block, str(DOC), "exec"), namespace)
            printed.append(out.getvalue())
    finally:
        os.chdir(here)
    return namespace, printed


@pytest.mark.slow
def test_every_python_block_of_api_md_runs(tmp_path):
    import torch

    torch.set_num_threads(1)
    assert len(blocks()) == 6
    ns, printed = run_blocks(tmp_path)
    table, frame, pz = ns["table"], ns["frame"], ns["pz"]
    assert len(frame) == 100 and list(frame.index) == list(table["OBJECT_ID"])  # ids from OBJECT_ID
    assert frame["z_median"].notna().all() and (frame["z_q0.16"] <= frame["z_q0.84"]).all()
    assert pz.z_samples.shape == (100, 40) and ns["same"]  # order and Arrow do not change a PDF
    assert ns["spectra"].flux_obs.shape == (100, 7781) and (tmp_path / "predicted_spectra.fits").is_file()
    assert ns["report"].done == 6 and ns["report"].n_objects == 2000 and not ns["report"].failed
    ds = ns["ds"]
    assert ds.sizes["object"] == 2000 and (ds["valid"].values == 1).all()
    assert np.unique(ds["object_id"].values).size == 2000 and (ds["object_id"].values >= 0).all()
    assert ns["joined"]["z_median"].notna().sum() == 100  # every table row finds its stored row
    assert np.isfinite(ns["stored"].flux_rest).all()
    # the printed output in the page is what the blocks print
    shown = re.findall(r"```python\n.*?```\n```\n(.*?)```", DOC.read_text(), flags=re.S)
    assert [text.strip() for text in shown] == [text.strip() for text in printed]


if __name__ == "__main__":
    import tempfile

    import torch

    torch.set_num_threads(1)
    for text in run_blocks(Path(tempfile.mkdtemp()))[1]:
        print("```\n" + text + "```\n")
