"""The model directory: typed config.json (format 2), version-1 migration, files with sha256 checks."""

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from specdiff_catalog.models import load_model
from specdiff_catalog.models.store import (
    CONFIG,
    FORMAT_VERSION,
    ModelConfig,
    ModelDirectoryError,
    Provenance,
    StudentSampler,
    StudentSection,
    WeightFile,
    config_from_json,
    config_to_json,
    default_model_dir,
    model_id,
    read_config,
    read_tensors,
    verified_path,
    write_config,
    write_tensors,
)

V1_CONFIG = Path(__file__).parent / "data" / "model_config_v1.json"  # the bundled model's, software 0.1.0


def test_tensors_round_trip_with_their_sha256(tmp_path):
    tensors = {"w": torch.arange(6.0).reshape(2, 3)}
    weights = write_tensors(tmp_path, "student-2.safetensors", tensors)
    assert weights.file == "student-2.safetensors" and len(weights.sha256) == 64
    assert torch.equal(read_tensors(tmp_path, weights)["w"], tensors["w"])
    assert not list(tmp_path.glob("*.tmp"))  # written through a temporary file, renamed


def test_tampered_and_missing_files_are_refused(tmp_path):
    weights = write_tensors(tmp_path, "autoencoder.safetensors", {"w": torch.zeros(100)})
    path = tmp_path / "autoencoder.safetensors"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ModelDirectoryError, match=r"does not match.*refusing"):
        read_tensors(tmp_path, weights)
    path.unlink()
    with pytest.raises(ModelDirectoryError, match="missing"):
        verified_path(tmp_path, weights)


def test_config_round_trips_and_a_student_section_is_one_field(tmp_path):
    weights = write_tensors(tmp_path, "student-4.safetensors", {"w": torch.ones(3)})
    student = StudentSection(method="progressive", samplers={4: StudentSampler(weights=weights)})
    written = write_config(tmp_path, ModelConfig(provenance=Provenance(simulated=True), student=student))
    config = read_config(tmp_path)
    assert config.student == student and config.student.samplers[4].weights.sha256 == weights.sha256
    assert config.provenance.simulated and config == written
    assert json.loads((tmp_path / CONFIG).read_text())["format_version"] == FORMAT_VERSION == 2
    assert config.weight_files() == [weights] and len(model_id(tmp_path)) == 64


def test_write_config_refuses_a_file_that_does_not_match(tmp_path):
    with pytest.raises(ModelDirectoryError, match="missing"):
        write_config(
            tmp_path, ModelConfig(student=StudentSection("x", {1: StudentSampler(WeightFile("a", "0"))}))
        )


def test_invalid_configs_are_named(tmp_path):
    with pytest.raises(ModelDirectoryError, match="not a model directory"):
        read_config(tmp_path)
    assert read_config(tmp_path, missing_ok=True) == ModelConfig()
    (tmp_path / CONFIG).write_text("[1, 2]")
    with pytest.raises(ModelDirectoryError, match="not a JSON object"):
        read_config(tmp_path)
    (tmp_path / CONFIG).write_text('{"format_version": 3}')
    with pytest.raises(ModelDirectoryError, match="format_version 3"):
        read_config(tmp_path)
    bad = config_to_json(ModelConfig()) | {"diffusion": {"weights": {"file": "d", "sha256": "0"}}}
    with pytest.raises(ModelDirectoryError, match=r"config\.diffusion: missing key"):
        config_from_json(bad, "bad")
    with pytest.raises(ModelDirectoryError, match=r"config\.provenance\.simulated: expected bool"):
        config_from_json(config_to_json(ModelConfig()) | {"provenance": {"simulated": "yes"}}, "bad")


def test_version_1_is_migrated_to_the_bundled_version_2(tmp_path):
    """The bundled config.json is the v1 file migrated (paths made repository-relative) plus a
    coverage section (``train coverage``, which v1 did not have): a v1 directory with the
    same weights loads the same model."""
    for name in ("autoencoder.safetensors", "diffusion.safetensors", "baseline.cbm"):
        (tmp_path / name).symlink_to(default_model_dir() / name)
    shutil.copy(V1_CONFIG, tmp_path / CONFIG)
    old, new = read_config(tmp_path), read_config(default_model_dir())
    assert new.coverage is not None and old.coverage is None
    assert old.weight_files() == new.weight_files()[:3] and len(new.weight_files()) == 4
    assert old.bands == new.bands and old.provenance == new.provenance and old.provenance.simulated
    assert old.autoencoder is not None and new.autoencoder is not None
    assert dataclasses.replace(old.autoencoder, training=None) == dataclasses.replace(
        new.autoencoder, training=None
    )
    assert (
        config_to_json(old)["diffusion"]["standardisation"]
        == config_to_json(new)["diffusion"]["standardisation"]
    )
    assert old.baseline == dataclasses.replace(
        new.baseline, training=dataclasses.replace(new.baseline.training, data=old.baseline.training.data)
    )
    a, b = load_model(tmp_path, notice=False), load_model(notice=False)
    assert a.baseline is not None and b.baseline is not None
    features = np.random.default_rng(0).normal(20, 1, (5, len(b.baseline.feature_names))).astype(np.float32)
    assert np.array_equal(a.baseline.predict(features)[1], b.baseline.predict(features)[1])
    assert a.diffusion is not None and b.diffusion is not None
    for (name, x), (_, y) in zip(
        a.diffusion.state_dict().items(), b.diffusion.state_dict().items(), strict=True
    ):
        assert torch.equal(x, y), name


def test_the_bundled_config_records_no_machine_paths():
    text = (default_model_dir() / CONFIG).read_text()
    assert "/work/" not in text and "/home/" not in text and "/tmp/" not in text
    assert json.loads(text)["format_version"] == 2
