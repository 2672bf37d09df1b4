"""Losses on soft targets: label smoothing, mixup's mixed targets and knowledge distillation all become one
cross entropy against a probability vector (plus the distillation term)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def one_hot_smoothed(labels: torch.Tensor, num_classes: int, smoothing: float = 0.0) -> torch.Tensor:
    """y (1 - eps) + eps / K: the paper's label smoothing (eps = 0.1)."""
    target = F.one_hot(labels, num_classes).float()
    return target * (1.0 - smoothing) + smoothing / num_classes


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of -sum_k targets_k log softmax(logits)_k."""
    return -(targets * F.log_softmax(logits.float(), dim=-1)).sum(-1).mean()


def distillation_loss(student_logits: torch.Tensor, teacher_probs: torch.Tensor, temperature: float) -> torch.Tensor:
    """T^2 CE(softmax(teacher / T), student / T) (Hinton 2015); `teacher_probs` is softmax(teacher / T)."""
    return temperature**2 * soft_cross_entropy(student_logits.float() / temperature, teacher_probs)


def teacher_probabilities(teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    return F.softmax(teacher_logits.float() / temperature, dim=-1)


def angular_margin(logits: torch.Tensor, target: torch.Tensor, scale: float, margin: float) -> torch.Tensor:
    """ArcFace (Deng 2019): the target's s * cos(theta) becomes s * cos(theta + m); `logits` are s * cos.

    Past theta = pi - m, cos(theta + m) would rise again with theta; there the target logit continues
    linearly, cos(theta) - m sin(m), which keeps it monotone (ArcFace's own fallback).
    """
    cos = (logits.float() / scale).clamp(-1.0, 1.0)
    t = target.view(-1, 1)
    c = cos.gather(1, t)
    sin = (1.0 - c * c).clamp(min=0.0).sqrt()
    shifted = c * math.cos(margin) - sin * math.sin(margin)
    shifted = torch.where(c > math.cos(math.pi - margin), shifted, c - margin * math.sin(margin))
    return scale * cos.scatter(1, t, shifted)
