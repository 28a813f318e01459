"""`run` checks options, the model and the catalog's schema in the client: one line, exit 2, no
worker started, no store written (issue 11 item 4, issue 13 case 7)."""

from __future__ import annotations

import hashlib
import json
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from specdiff_catalog.cli import main
from specdiff_catalog.io.catalog import demo_catalog_dir, open_catalog
from specdiff_catalog.models.store import default_model_dir

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def no_cluster(monkeypatch):
    """Fail the test if `run` gets as far as the Dask cluster or the store."""
    from specdiff_catalog.pipeline import run

    def refuse(*args, **kwargs):
        raise AssertionError("run reached the cluster or the store")

    monkeypatch.setattr(run, "connect", refuse)
    monkeypatch.setattr(run, "create_store", refuse)


def run_main(capsys, out: Path, *args: str) -> tuple[int, list[str]]:
    code = main(["run", "--out", str(out), "--no-progress", "--dashboard-address", ":0", *args])
    return code, capsys.readouterr().err.strip().splitlines()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--n-samples", "0"], "--n-samples must be >= 1 (got 0)"),
        (["--n-samples", "-3"], "--n-samples must be >= 1 (got -3)"),
        (["--batch-size", "0"], "--batch-size must be >= 1 (got 0)"),
        (["--batch-size", "-5"], "--batch-size must be >= 1 (got -5)"),
        (["--steps", "0"], "--steps must be >= 1 (got 0)"),
        (["--steps", "-2"], "--steps must be >= 1 (got -2)"),
        (["--save-samples", "50", "--n-samples", "8"], "--save-samples 50 is more than --n-samples 8"),
        (["--save-samples", "-1"], "--save-samples must be >= 0 (got -1)"),
        (["--quantiles", "0.5,0.2"], "--quantiles: quantile levels must be strictly increasing"),
        (["--quantiles", "0,0.5"], "--quantiles: quantile level 0.0 is not strictly inside (0, 1)"),
        (["--quantiles", "0.5,1.2"], "--quantiles: quantile level 1.2 is not strictly inside (0, 1)"),
        (["--memory-limit", "lots"], "--memory-limit 'lots' is not a memory size"),
        (["--memory-limit=-3GB"], "--memory-limit '-3GB' is negative"),
    ],
)
def test_bad_options_are_one_line_before_anything_starts(tmp_path, capsys, no_cluster, args, message):
    out = tmp_path / "pz.zarr"
    code, err = run_main(capsys, out, *args)
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith("specdiff-catalog run: error: ") and message in err[0], err
    assert not out.exists()


def test_every_bad_option_is_named_at_once(tmp_path, capsys, no_cluster):
    code, err = run_main(
        capsys, tmp_path / "pz.zarr", "--n-samples", "0", "--batch-size", "0", "--steps", "0"
    )
    assert code == 2 and len(err) == 1
    for flag in ("--n-samples", "--batch-size", "--steps"):
        assert f"{flag} must be >= 1" in err[0]


# --- the catalog's schema --------------------------------------------------------------------


def _demo_partition() -> pa.Table:
    return pq.read_table(open_catalog(demo_catalog_dir()).partitions[0].files[0].path)


def _write_plain(table: pa.Table, where: Path) -> Path:
    where.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, where / "part-0.parquet")
    return where


def test_schema_mismatch_is_one_error_naming_every_column(tmp_path, capsys, no_cluster):
    """Missing bands, a missing de-reddening input and a string flux: one message names them all
    (it used to start the cluster and fail every partition one by one)."""
    table = _demo_partition()
    drop = ["FLUX_W1", "FLUX_IVAR_W2", "EBV", *[n for n in table.column_names if n.startswith("MW_TRANS")]]
    table = table.drop_columns(drop)
    table = table.set_column(
        table.column_names.index("FLUX_G"), "FLUX_G", pa.array([str(v) for v in table["FLUX_G"].to_pylist()])
    )
    catalog = _write_plain(table, tmp_path / "cat")
    out = tmp_path / "pz.zarr"
    code, err = run_main(capsys, out, "--input", str(catalog))
    assert code == 2 and len(err) == 1, err
    message = err[0]
    assert str(catalog) in message and "band set ls-grzw1w2" in message
    assert "missing column(s) FLUX_W1, FLUX_IVAR_W2, EBV (or every one of MW_TRANSMISSION_G" in message
    assert "wrong type: FLUX_G is string, not a number" in message
    assert not out.exists()


def test_band_columns_are_matched_case_insensitively(tmp_path):
    from specdiff_catalog.models.store import read_config
    from specdiff_catalog.pipeline.preflight import schema_problems

    table = _demo_partition()
    lower = table.rename_columns([n.lower() for n in table.column_names])
    bands = read_config(default_model_dir()).bands
    assert schema_problems(lower.schema, bands, None) == []


def test_columns_differing_only_in_case_are_refused_up_front(tmp_path, capsys, no_cluster):
    table = _demo_partition()
    table = table.append_column("flux_r", table["FLUX_R"])
    code, err = run_main(capsys, tmp_path / "pz.zarr", "--input", str(_write_plain(table, tmp_path / "cat")))
    assert code == 2 and len(err) == 1
    assert "columns that differ only in case: FLUX_R and flux_r" in err[0]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--id-column", "RA"], "id column RA is double, not an integer column"),
        (["--id-column", "NOPE"], "missing column(s) NOPE (--id-column)"),
    ],
)
def test_id_column_that_cannot_hold_ids_is_refused(tmp_path, capsys, no_cluster, args, message):
    """--id-column RA gave 12 distinct ids for 2,000 objects; now it is refused before anything runs."""
    code, err = run_main(capsys, tmp_path / "pz.zarr", *args)
    assert code == 2 and len(err) == 1 and message in err[0], err


def test_no_id_column_at_all_is_refused(tmp_path, capsys, no_cluster):
    table = _demo_partition().drop_columns(["OBJECT_ID", "OBJID"])
    code, err = run_main(capsys, tmp_path / "pz.zarr", "--input", str(_write_plain(table, tmp_path / "cat")))
    assert code == 2 and len(err) == 1
    assert (
        "missing column(s) OBJECT_ID (or RELEASE, BRICKID, OBJID to pack the ids, or --id-column)" in err[0]
    )


def test_a_real_process_exits_2_with_one_line_and_starts_nothing(tmp_path):
    """The CLI as a user runs it: exit 2, one line on stderr, no dashboard (no cluster), no store."""
    table = _demo_partition().drop_columns(["FLUX_Z"])
    out = tmp_path / "pz.zarr"
    catalog = _write_plain(table, tmp_path / "c")
    argv = ["run", "--input", str(catalog), "--out", str(out), "--no-progress", "--dashboard-address", ":0"]
    proc = subprocess.run(
        [sys.executable, "-m", "specdiff_catalog", *argv],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "missing column(s) FLUX_Z" in lines[0], lines
    assert "Dask dashboard" not in proc.stderr and not out.exists()


# --- the model -------------------------------------------------------------------------------


@pytest.fixture
def model(tmp_path) -> Path:
    """A private copy of the bundled model that a test may damage."""
    return Path(shutil.copytree(default_model_dir(), tmp_path / "model"))


def _edit_config(model: Path, edit) -> None:
    path = model / "config.json"
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def _record(model: Path, section: str, file: str) -> None:
    """Record the current sha256 of ``file`` in config.json (as if the model were written so)."""
    sha = hashlib.sha256((model / file).read_bytes()).hexdigest()
    _edit_config(model, lambda data: data[section]["weights"].update(sha256=sha))


def _model_error(capsys, tmp_path, model: Path) -> str:
    out = tmp_path / "pz.zarr"
    code, err = run_main(capsys, out, "--model", str(model))
    assert code == 2 and len(err) == 1, err
    assert not out.exists()
    return err[0]


def test_config_that_is_a_list_or_not_json(tmp_path, capsys, no_cluster, model):
    (model / "config.json").write_text("[1, 2, 3]")
    assert "config.json: not a JSON object" in _model_error(capsys, tmp_path, model)
    (model / "config.json").write_text('{"format_version": 2,')
    assert "config.json: not valid JSON" in _model_error(capsys, tmp_path, model)


def test_pickle_in_place_of_the_catboost_file(tmp_path, capsys, no_cluster, model):
    """Its error printed raw bytes (on the workers, after the store existed); now one line in the
    client, and the pickle is never loaded."""
    (model / "baseline.cbm").write_bytes(pickle.dumps({"not": "a model"}))
    assert "baseline.cbm: sha256" in _model_error(capsys, tmp_path, model)  # altered: refused by hash
    _record(model, "baseline", "baseline.cbm")  # even with its hash recorded, it is not loaded
    message = _model_error(capsys, tmp_path, model)
    assert "baseline.cbm: not a CatBoost model file (a Python pickle, which is never loaded)" in message


def test_missing_or_altered_weight_files(tmp_path, capsys, no_cluster, model):
    data = bytearray((model / "diffusion.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (model / "diffusion.safetensors").write_bytes(bytes(data))
    assert "diffusion.safetensors: sha256" in _model_error(capsys, tmp_path, model)
    (model / "diffusion.safetensors").unlink()
    assert "diffusion.safetensors is missing" in _model_error(capsys, tmp_path, model)


def test_latent_size_mismatch_between_components(tmp_path, capsys, no_cluster, model):
    latent = json.loads((model / "config.json").read_text())["autoencoder"]["config"]["latent_size"]

    def shrink(data):
        data["autoencoder"]["config"]["latent_size"] = 6

    _edit_config(model, shrink)
    message = _model_error(capsys, tmp_path, model)
    assert latent != 6 and f"samples {latent} latent dimensions but the autoencoder has 6" in message


def test_weights_that_do_not_fit_their_config(tmp_path, capsys, no_cluster, model):
    """A config whose architecture disagrees with the tensors: found by loading in the client."""

    def widen(data):
        data["diffusion"]["config"]["hidden"] = 2 * data["diffusion"]["config"]["hidden"]

    _edit_config(model, widen)
    message = _model_error(capsys, tmp_path, model)
    assert "diffusion.safetensors: does not load with its config.json section" in message


def test_good_inputs_pass(tmp_path):
    from specdiff_catalog.pipeline.cluster import ClusterConfig
    from specdiff_catalog.pipeline.preflight import preflight
    from specdiff_catalog.pipeline.run import RunOptions

    checked = preflight(None, None, RunOptions(n_samples=8, save_samples=8, steps=1), ClusterConfig())
    assert checked.catalog.n_rows == 2000 and checked.config.bands is not None
    assert np.isclose(len(checked.catalog.partitions), 6)
