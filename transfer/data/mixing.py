"""Mixup (Zhang 2018) as the paper uses it: a lambda per image (its "type 1") or one per batch.

Each image i is mixed with its partner B-1-i (the paper mixes the first half of a batch with the second);
every target given (one-hot labels, teacher probabilities) is mixed with the same lambda.
"""

from __future__ import annotations

import torch


def sample_lambda(batch: int, alpha: float, mode: str, generator: torch.Generator | None = None) -> torch.Tensor:
    """(batch,) mixing weights from Beta(alpha, alpha): one per image, or one shared by the batch."""
    n = batch if mode == "per_sample" else 1
    # Beta(a, a) as Ga / (Ga + Gb): torch's Beta sampler takes no generator, gamma via _standard_gamma neither,
    # so draw from the global RNG (seeded and checkpointed by the trainer).
    dist = torch.distributions.Beta(torch.tensor([alpha]), torch.tensor([alpha]))
    lam = dist.sample((n,)).view(n)
    return lam.expand(batch).clone() if n == 1 else lam


def mixup(images: torch.Tensor, targets: list[torch.Tensor], lam: torch.Tensor
          ) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Mix each image and each (batch, K) target with its partner (B-1-i) using lam (batch,)."""
    lam = lam.to(images.device)
    partner = torch.arange(images.shape[0] - 1, -1, -1, device=images.device)
    li = lam.view(-1, *([1] * (images.dim() - 1))).to(images.dtype)
    mixed = images * li + images[partner] * (1 - li)
    mixed_targets = [t * lam.view(-1, 1).to(t.dtype) + t[partner] * (1 - lam.view(-1, 1).to(t.dtype))
                     for t in targets]
    return mixed, mixed_targets
