import pytest
import torch

from specdiff_catalog.models.store import (
    ModelDirectoryError,
    load_tensors,
    model_id,
    read_config,
    save_bytes,
    save_tensors,
    update_config,
    verified_path,
)


def test_round_trip_records_hashes(tmp_path):
    tensors = {"w": torch.arange(6.0).reshape(2, 3)}
    save_tensors(tmp_path, "autoencoder.safetensors", tensors)
    update_config(tmp_path, autoencoder={"latent_size": 10})
    save_bytes(tmp_path, "baseline.json", b"{}")
    config = read_config(tmp_path)
    assert set(config["files"]) == {"autoencoder.safetensors", "baseline.json"}
    assert config["autoencoder"] == {"latent_size": 10}
    assert torch.equal(load_tensors(tmp_path, "autoencoder.safetensors")["w"], tensors["w"])
    assert len(model_id(tmp_path)) == 64


def test_tampered_weights_are_refused(tmp_path):
    save_tensors(tmp_path, "autoencoder.safetensors", {"w": torch.zeros(100)})
    path = tmp_path / "autoencoder.safetensors"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ModelDirectoryError, match="does not match.*refusing"):
        load_tensors(tmp_path, "autoencoder.safetensors")


def test_unrecorded_and_missing_files(tmp_path):
    with pytest.raises(ModelDirectoryError, match="not a model directory"):
        read_config(tmp_path)
    save_bytes(tmp_path, "baseline.json", b"{}")
    with pytest.raises(ModelDirectoryError, match="not recorded"):
        verified_path(tmp_path, "diffusion.safetensors")
    (tmp_path / "baseline.json").unlink()
    with pytest.raises(ModelDirectoryError, match="missing"):
        verified_path(tmp_path, "baseline.json")
