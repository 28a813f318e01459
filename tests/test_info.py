import json

import numpy as np
from _stores import write_store

from specdiff_catalog.cli import main
from specdiff_catalog.models.store import ModelConfig, Provenance, write_config
from specdiff_catalog.report.info import format_info, store_info


def test_info_counts_flags_and_provenance(tmp_path, capsys):
    path = write_store(
        tmp_path / "out.zarr",
        attrs={
            "input": "/data/catalog",
            "input_kind": "hats",
            "model_path": str(tmp_path / "nomodel"),
            "command_line": "specdiff-catalog run --input /data/catalog",
        },
    )
    info = store_info(path)
    counts = info["counts"]
    # 4 partitions of 300/150/200/50 objects in shards of 128 rows: 384 + 256 + 256 + 128 rows
    assert counts["rows"] == 1024 and counts["objects"] == 700 and counts["valid"] == 650
    assert (counts["done"], counts["pending"], counts["failed"]) == (3, 0, 1)
    assert counts["failed_partitions"] == {3: "partition 3: unreadable file"}
    assert info["flags"]["NO_PHOTOMETRY"] == 6 and info["flags"]["MISSING_BAND"] == 6
    assert info["flags"]["SAMPLER_FAILURE"] == 0 and "PADDING" not in info["flags"]
    assert np.allclose(info["quantile_levels"], [0.025, 0.05, 0.16, 0.25, 0.5, 0.75, 0.84, 0.95, 0.975])
    assert info["provenance"]["trained_on_simulations"] is None  # the model directory does not exist
    assert info["provenance"]["command_line"].startswith("specdiff-catalog run")
    text = format_info(info)
    assert "3 done, 0 pending, 1 failed" in text and "NO_PHOTOMETRY 6" in text and "unknown" in text
    assert main(["info", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["counts"]["valid"] == 650


def test_info_reads_the_model_simulated_flag(tmp_path):
    model = tmp_path / "model"
    write_config(model, ModelConfig(provenance=Provenance(simulated=True)))
    path = write_store(tmp_path / "out.zarr", sizes=(10,), failed=None, attrs={"model_path": str(model)})
    info = store_info(path)
    assert info["provenance"]["trained_on_simulations"] is True
    assert (info["counts"]["done"], info["counts"]["pending"]) == (1, 0)


def test_info_on_a_missing_store_is_a_one_line_error(tmp_path, capsys):
    assert main(["info", str(tmp_path / "nothing.zarr")]) == 2
    assert "no output store here" in capsys.readouterr().err
