"""The shared loop with a task that is not about spectra: least-squares regression."""

import json
import math

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from specdiff_catalog.training.loop import (
    StepResult,
    TrainConfig,
    fit,
    model_state,
    prefetch,
    resolve_device,
)


class Regression:
    """y = x @ w + noise; 200 training and 50 validation rows in batches."""

    val_metric = "mse"

    def __init__(self, extra_steps: int = 0):
        rng = np.random.default_rng(0)
        self.w = rng.normal(size=(3, 1))
        self.x = rng.normal(size=(250, 3)).astype(np.float32)
        self.y = (self.x @ self.w + 0.1 * rng.normal(size=(250, 1))).astype(np.float32)
        self.extra_steps = extra_steps

    def steps_per_epoch(self, batch_size):
        return math.ceil(200 / batch_size)

    def train_batches(self, batch_size, epoch, seed):
        order = np.random.default_rng([seed, epoch]).permutation(200)
        for i in range(0, 200 + self.extra_steps * batch_size, batch_size):
            rows = order[i % 200 : i % 200 + batch_size]
            yield self.x[rows], self.y[rows]

    def val_batches(self, batch_size):
        for i in range(200, 250, batch_size):
            yield self.x[i : i + batch_size], self.y[i : i + batch_size]

    def loss(self, model, batch, device, train):
        x, y = (torch.as_tensor(a, device=device) for a in batch)
        err = ((model(x) - y) ** 2).sum()
        return StepResult(loss=err / len(y), metrics={"mse": (err, len(y))})


def test_fit_minimises_and_records_everything_without_pickle(tmp_path):
    torch.manual_seed(0)
    task = Regression()
    config = TrainConfig(epochs=15, batch_size=32, lr=0.1, weight_decay=0.0, device="cpu", threads=1)
    result = fit(nn.Linear(3, 1), task, config, tmp_path, verbose=False, progress=False)
    assert result.finished and len(result.history) == 15
    assert result.best_metric < 0.02  # noise variance 0.01
    assert result.best_metric == min(r["val"]["mse"] for r in result.history)
    # the last learning rate is the one-cycle floor lr / (div_factor * final_div_factor)
    assert result.history[-1]["lr"] == pytest.approx(0.1 / 25 / 1e4, rel=1e-6)
    meta = json.loads((tmp_path / "last.json").read_text())
    assert meta["epoch"] == 15 and meta["scheduler"]["last_epoch"] == 15 * 7
    tensors = load_file(str(tmp_path / "last.safetensors"))
    assert {"model.weight", "model.bias", "rng.cpu"} <= set(tensors)
    assert any(k.startswith("optimizer.0.exp_avg") for k in tensors)
    best = model_state(tmp_path / "best.safetensors")
    assert set(best) == {"weight", "bias"}
    assert np.allclose(best["weight"].numpy().ravel(), task.w.ravel(), atol=0.05)
    assert len((tmp_path / "log.jsonl").read_text().splitlines()) == 15 + 2


def test_a_task_yielding_more_steps_than_declared_is_an_error(tmp_path):
    with pytest.raises(RuntimeError, match="more than its 7 steps"):
        fit(
            nn.Linear(3, 1),
            Regression(extra_steps=1),
            TrainConfig(epochs=1, batch_size=32, device="cpu"),
            tmp_path,
            verbose=False,
            progress=False,
        )


def test_prefetch_keeps_order_and_reraises():
    assert list(prefetch(iter(range(50)), depth=3)) == list(range(50))

    def broken():
        yield 1
        raise OSError("disk gone")

    with pytest.raises(OSError, match="disk gone"):
        list(prefetch(broken()))


def test_devices_and_config_validation():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type in ("cpu", "cuda")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device"):
            resolve_device("cuda")
    with pytest.raises(ValueError, match="unknown device"):
        resolve_device("tpu")
    with pytest.raises(ValueError, match="amp must be"):
        TrainConfig.from_dict({"amp": "fp8"})
