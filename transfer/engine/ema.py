"""An exponential moving average of a model's weights (as timm's ModelEma): after every optimizer step,
ema = decay * ema + (1 - decay) * weights, for parameters and floating-point buffers (BN statistics);
integer buffers (BN's batch counter) are copied. It is a model of its own, so it validates and saves as one.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class WeightEma:
    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        mine = self.module.state_dict()
        for key, value in model.state_dict().items():
            ema = mine[key]
            if ema.is_floating_point():
                ema.mul_(self.decay).add_(value.detach(), alpha=1 - self.decay)
            else:
                ema.copy_(value)

    def state_dict(self) -> dict:
        return self.module.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state)
