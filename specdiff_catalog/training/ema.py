"""Exponential moving average of a module's parameters (what the diffusion job saves)."""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA(nn.Module):
    """Exponential moving average of a module's parameters, for sampling with smoother weights.

    After update n: average <- d average + (1 - d) param, d = min(decay, (1 + n) / (10 + n))
    (the warm-up keeps early averages from remembering the random initialisation).
    The averages live in ``average``, a frozen copy of the module, and the count in the
    ``updates`` buffer: an EMA inside the trained module is checkpointed and resumed with
    it, and ``average`` is used (and saved) like the module itself.
    """

    updates: torch.Tensor  # a buffer: () int64

    def __init__(self, module: nn.Module, decay: float) -> None:
        super().__init__()
        self.decay = decay
        self.average = copy.deepcopy(module).requires_grad_(False).eval()
        self.register_buffer("updates", torch.zeros((), dtype=torch.int64))

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        self.updates += 1
        n = int(self.updates)
        decay = min(self.decay, (1 + n) / (10 + n))
        for (_, avg), p in zip(self.average.named_parameters(), module.parameters(), strict=True):
            avg.lerp_(p.detach(), 1 - decay)
