"""The model directory: typed config.json (format 2), version-1 migration, files with sha256 checks."""

import dataclasses
import json
import shutil
import stat
from pathlib import Path

import pytest
import torch

from specdiff_catalog.models import load_model
from specdiff_catalog.models.store import (
    CONFIG,
    FORMAT_VERSION,
    ModelConfig,
    ModelDirectoryError,
    ProductionSetting,
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


def test_written_files_get_the_mode_a_plain_open_gives(tmp_path):
    """mkstemp's 0600 made a trained model unreadable by the rest of the user's group."""
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    mode = stat.S_IMODE(plain.stat().st_mode)  # 0644 under the usual umask 022
    if mode == 0o600:
        pytest.skip("umask 077: a plain open gives 0600 too, nothing to tell apart")
    weights = write_tensors(tmp_path, "diffusion.safetensors", {"w": torch.zeros(3)})
    write_config(tmp_path, ModelConfig(bands=None))
    assert stat.S_IMODE((tmp_path / weights.file).stat().st_mode) == mode
    assert stat.S_IMODE((tmp_path / CONFIG).stat().st_mode) == mode


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


def _student(teacher_sha256: str, weights: WeightFile, evaluations: int = 4) -> StudentSection:
    nodes = (-1.0, 1.0, 3.0)[: evaluations - 1]
    return StudentSection(
        method="progressive",
        teacher_sha256=teacher_sha256,
        default=ProductionSetting(evaluations=evaluations, n_samples=64),
        samplers={evaluations: StudentSampler(weights=weights, nodes=nodes)},
    )


def test_config_round_trips_and_a_student_section_is_one_field(tmp_path):
    shutil.copytree(default_model_dir(), tmp_path, dirs_exist_ok=True)
    base = read_config(tmp_path)
    weights = write_tensors(tmp_path, "student-4.safetensors", {"w": torch.ones(3)})
    student = _student(base.diffusion.weights.sha256, weights)
    written = write_config(tmp_path, dataclasses.replace(base, student=student))
    config = read_config(tmp_path)
    assert config.student == student and config.student.samplers[4].weights.sha256 == weights.sha256
    assert config.student.samplers[4].evaluations == 4 and config.student.default.n_samples == 64
    assert config.provenance.simulated and config_to_json(config) == config_to_json(written)
    assert json.loads((tmp_path / CONFIG).read_text())["format_version"] == FORMAT_VERSION == 2
    assert config.weight_files()[-1] == weights and len(model_id(tmp_path)) == 64


def test_a_student_section_that_does_not_fit_its_model_is_refused(tmp_path):
    """Students of other diffusion weights (or of none), stored under another evaluation count
    than their grid's, or a production setting without its student: one-line errors."""
    base = read_config(default_model_dir())
    teacher = base.diffusion.weights.sha256
    weights = WeightFile("student-4.safetensors", "0" * 64)
    content = config_to_json(dataclasses.replace(base, student=_student(teacher, weights)))
    assert config_from_json(content, "ok").student.teacher_sha256 == teacher
    wrong = [
        ({"teacher_sha256": "1" * 64}, "distilled from other diffusion weights"),
        ({"default": {"evaluations": 2, "n_samples": 64}}, "default student makes 2 evaluations"),
        ({"default": {"evaluations": 4, "n_samples": 0}}, "sample count must be >= 1"),
        (
            {
                "samplers": {"2": content["student"]["samplers"]["4"]},
                "default": {"evaluations": 2, "n_samples": 8},
            },
            r"samplers \[2\] are stored under another evaluation count",
        ),
    ]
    for change, message in wrong:
        bad = json.loads(json.dumps(content))
        bad["student"] |= change
        with pytest.raises(ModelDirectoryError, match=message):
            config_from_json(bad, "config.json")
    with pytest.raises(ModelDirectoryError, match="distilled from other diffusion weights"):
        config_from_json({**content, "diffusion": None}, "config.json")


def test_write_config_refuses_a_file_that_does_not_match(tmp_path):
    with pytest.raises(ModelDirectoryError, match=r"autoencoder\.safetensors is missing"):
        write_config(tmp_path, read_config(default_model_dir()))  # a config without its files


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


def test_version_1_is_migrated(tmp_path):
    """A version-1 config.json (the earlier bundled model's) reads as a typed version-2 config:
    the same sections, weight files and band set, no coverage section (v1 had none)."""
    shutil.copy(V1_CONFIG, tmp_path / CONFIG)
    old, new = read_config(tmp_path), read_config(default_model_dir())
    assert old.format_version == new.format_version == 2 and old.coverage is None
    assert [w.file for w in old.weight_files()] == [
        "autoencoder.safetensors",
        "diffusion.safetensors",
        "baseline.cbm",
    ]
    assert old.bands == new.bands and old.provenance.simulated
    assert old.autoencoder is not None and old.autoencoder.latent_size == 10
    assert old.diffusion is not None and old.diffusion.latent_size == 10
    assert old.baseline is not None and old.baseline.training is not None
    with pytest.raises(ModelDirectoryError, match=r"autoencoder\.safetensors is missing"):
        load_model(tmp_path, notice=False)  # the weights are checked when loaded, not when read


def test_the_bundled_config_records_no_machine_paths():
    text = (default_model_dir() / CONFIG).read_text()
    assert "/work/" not in text and "/home/" not in text and "/tmp/" not in text
    assert json.loads(text)["format_version"] == 2
