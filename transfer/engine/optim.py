"""Optimizer and schedules. Every schedule is a pure function of the optimizer step, set by the trainer
through one mechanism (`Schedules.apply(step)`), so a resumed run lands on exactly the same values."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from ..models.layers import set_keep_prob
from ..recipe import OptimSection, RegularizationSection, ScheduleSection

_NORM_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.SyncBatchNorm, nn.GroupNorm, nn.LayerNorm)


def param_groups(model: nn.Module, weight_decay: float, *, decay_norm: bool = False, decay_bias: bool = True,
                 lr_scale: dict[str, float] | None = None) -> list[dict]:
    """Split parameters into decayed and undecayed groups (the paper: no decay on BN, FC bias decayed).

    `lr_scale` maps a parameter-name prefix to a learning-rate multiplier (e.g. a slower backbone).
    """
    norm_params = {id(p) for m in model.modules() if isinstance(m, _NORM_TYPES) for p in m.parameters(False)}
    groups: dict[tuple[bool, float], list] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        is_norm = id(p) in norm_params
        is_bias = name.endswith(".bias") and not is_norm
        decay = not ((is_norm and not decay_norm) or (is_bias and not decay_bias) or p.ndim == 0)
        scale = 1.0
        for prefix, s in (lr_scale or {}).items():
            if name.startswith(prefix):
                scale = s
        groups.setdefault((decay, scale), []).append(p)
    return [{"params": ps, "weight_decay": weight_decay if decay else 0.0, "lr_scale": scale}
            for (decay, scale), ps in groups.items()]


def scaled_lr(optim: OptimSection) -> float:
    """Linear scaling rule (Goyal 2017): lr is given per `reference_batch` images."""
    return optim.lr * optim.batch_size / optim.reference_batch


def make_optimizer(model: nn.Module, optim: OptimSection, lr_scale: dict[str, float] | None = None
                   ) -> torch.optim.Optimizer:
    groups = param_groups(model, optim.weight_decay, decay_norm=optim.decay_norm, decay_bias=optim.decay_bias,
                          lr_scale=lr_scale)
    return torch.optim.SGD(groups, lr=scaled_lr(optim), momentum=optim.momentum, nesterov=optim.nesterov)


def warmup_cosine(step: int, total: int, warmup: int, base: float, final: float = 0.0,
                  schedule: str = "cosine") -> float:
    """Linear from 0 over `warmup` steps, then cosine from `base` to `final` at `total` (or constant)."""
    if warmup > 0 and step < warmup:
        return base * (step + 1) / warmup
    if schedule == "constant" or total <= warmup:
        return base
    progress = min((step - warmup) / max(total - warmup, 1), 1.0)
    return final + 0.5 * (base - final) * (1 + math.cos(math.pi * progress))


def linear(step: int, total: int, start: float, end: float) -> float:
    """Linear interpolation over all steps (the DropBlock keep_prob schedule: 1.0 -> 0.9)."""
    if total <= 1:
        return end
    return start + (end - start) * min(step / (total - 1), 1.0)


def bn_momentum_for(steps_per_epoch: int) -> float:
    """The paper's fine-tuning rule, as PyTorch momentum: TF decay max(1 - 10/s, 0.9) -> 1 - decay."""
    return 1.0 - max(1.0 - 10.0 / max(steps_per_epoch, 1), 0.9)


@dataclass
class Schedules:
    """Learning rate and DropBlock keep_prob as functions of the optimizer step."""

    total_steps: int
    warmup_steps: int
    base_lr: float
    min_lr: float
    lr_schedule: str
    keep_prob_start: float
    keep_prob_end: float

    @classmethod
    def from_recipe(cls, optim: OptimSection, sched: ScheduleSection, reg: RegularizationSection,
                    steps_per_epoch: int) -> Schedules:
        return cls(sched.epochs * steps_per_epoch, round(sched.warmup_epochs * steps_per_epoch), scaled_lr(optim),
                   sched.min_lr, sched.lr_schedule, reg.drop_block.keep_prob_start, reg.drop_block.keep_prob_end)

    def lr(self, step: int) -> float:
        return warmup_cosine(step, self.total_steps, self.warmup_steps, self.base_lr, self.min_lr, self.lr_schedule)

    def keep_prob(self, step: int) -> float:
        return linear(step, self.total_steps, self.keep_prob_start, self.keep_prob_end)

    def apply(self, step: int, optimizer: torch.optim.Optimizer, model: nn.Module) -> dict:
        lr = self.lr(step)
        for group in optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        kp = self.keep_prob(step)
        set_keep_prob(model, kp)
        return {"lr": lr, "keep_prob": kp}
