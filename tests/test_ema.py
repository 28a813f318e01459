"""The exponential moving average of the weights the diffusion job saves."""

import pytest
import torch

from specdiff_catalog.training.ema import EMA


def test_ema_follows_the_exponential_average_with_warmup():
    module = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        module.weight.fill_(1.0)
    ema = EMA(module, decay=0.9)
    expected = 1.0
    for n, value in enumerate([3.0, -1.0, 5.0, 0.0, 2.0] + [4.0] * 30, start=1):
        with torch.no_grad():
            module.weight.fill_(value)
        ema.update(module)
        d = min(0.9, (1 + n) / (10 + n))
        expected = d * expected + (1 - d) * value
        assert ema.average.weight.item() == pytest.approx(expected, rel=1e-6)
    assert abs(expected - 4.0) < 0.1  # forgets the start after ~30 updates at decay 0.9
    restored = EMA(torch.nn.Linear(1, 1, bias=False), decay=0.9)
    restored.load_state_dict(ema.state_dict())  # checkpointed and resumed with the trained module
    assert restored.updates == 35 and restored.average.weight.item() == pytest.approx(expected, rel=1e-6)
