"""The training objective: label smoothing, mixup and knowledge distillation composed into one loss.

    loss = CE(student, mix(smooth(y))) + w * T^2 * CE(student / T, mix(softmax(teacher / T)))

The teacher is either a model run in eval mode on the (already mixed) batch, or logits precomputed per
training sample (the paper's offline way): their softmax(teacher / T) is mixed with the same lambda and the same
partner as the images, as the official mixes its teacher labels (nets/run_loop_classification.py:95, 101-105).
Smoothing before mixing equals the official's smoothing of the mixed one-hot labels (its softmax_cross_entropy
with label_smoothing, losses/cls_losses.py:31-33): both are linear, mix(y) (1 - eps) + eps / K.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..data.mixing import BatchLayout, mixup, pair_up, sample_lambda
from .losses import angular_margin, distillation_loss, one_hot_smoothed, soft_cross_entropy, teacher_probabilities


@dataclass
class Objective:
    num_classes: int
    label_smoothing: float = 0.0
    mixup_alpha: float = 0.0
    mixup_mode: str = "per_sample"
    teacher: nn.Module | None = None
    teacher_logits: torch.Tensor | None = None  # (num_train_samples, num_classes)
    temperature: float = 1.0
    distill_weight: float = 1.0
    margin: float = 0.0  # ArcFace: angular margin on the target class of a cosine head's logits ...
    logit_scale: float = 1.0  # ... whose logits are logit_scale * cos

    def to(self, device: torch.device) -> Objective:
        if self.teacher is not None:
            self.teacher = self.teacher.to(device).eval()
        if self.teacher_logits is not None:
            self.teacher_logits = self.teacher_logits.to(device)
        return self

    @property
    def distills(self) -> bool:
        return self.teacher is not None or self.teacher_logits is not None

    def prepare(self, images: torch.Tensor, labels: torch.Tensor, indices: torch.Tensor,
                layout: BatchLayout | None = None) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(possibly mixed) images and soft targets: [labels] or [labels, teacher probabilities].

        `layout` says how the loader laid the micro-batch out (data/mixing.py): with reads=2 it holds two images
        per sample, and the samples returned are half as many (default: one image per sample, one group)."""
        layout = layout or BatchLayout()
        if layout.reads != 1 and self.mixup_alpha <= 0:
            raise ValueError(f"a batch of {layout.reads} images per sample needs mixup (mixup_alpha > 0)")
        targets = [one_hot_smoothed(labels, self.num_classes, self.label_smoothing)]
        if self.teacher_logits is not None:
            targets.append(teacher_probabilities(self.teacher_logits[indices.to(self.teacher_logits.device)],
                                                 self.temperature))
        if self.mixup_alpha > 0:
            pairs = pair_up(images.shape[0], layout)
            lam = sample_lambda(pairs, self.mixup_alpha, self.mixup_mode)
            images, targets = mixup(images, targets, lam, pairs)
        if self.teacher is not None:
            with torch.no_grad():
                targets.append(teacher_probabilities(self.teacher(images), self.temperature))
        return images, targets

    def loss(self, logits: torch.Tensor, targets: list[torch.Tensor]) -> tuple[torch.Tensor, dict]:
        if self.margin:
            # the target class is the largest entry of the (smoothed, never mixed) label distribution
            logits = angular_margin(logits, targets[0].argmax(1), self.logit_scale, self.margin)
        ce = soft_cross_entropy(logits, targets[0])
        if not self.distills:
            return ce, {"ce": ce.detach()}
        kd = distillation_loss(logits, targets[1], self.temperature)
        return ce + self.distill_weight * kd, {"ce": ce.detach(), "kd": kd.detach()}
