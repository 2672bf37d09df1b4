"""The one inference loop: a model over a loader, in eval mode, without gradients, at a chosen precision.

Classification accuracy (eval/classify.py), embeddings (below), corruption predictions and `transfer predict`
all consume `outputs(...)`, so the device transfer, memory format, autocast and float32 cast of the outputs are
decided once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..runtime import Dist, all_reduce_sum, autocast_for


@torch.no_grad()  # on a generator, torch applies it to each step, never to the caller between steps
def outputs(model: nn.Module, loader, device: torch.device, *, forward: Callable | None = None,
            precision: str = "fp32", channels_last: bool = False) -> Iterator[tuple[object, torch.Tensor | None]]:
    """Yield (batch, float32 outputs of `forward` (default: the model) on its images) for every batch, with
    None for a batch whose images were all unreadable (its `bad` list still says which).

    A batch of sequences (B, F, 3, H, W) goes through as B*F images. The model is in eval mode while this
    runs and gets its mode back when the loop ends or is abandoned.
    """
    forward = forward or model
    was_training = model.training
    model.eval()
    try:
        for batch in loader:
            if not len(batch):
                yield batch, None
                continue
            x = batch.images.to(device, non_blocking=True)
            if x.dim() == 5:
                x = x.flatten(0, 1)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with autocast_for(device, precision):
                out = forward(x)
            yield batch, out.float()
    finally:
        model.train(was_training)


def embed(model: nn.Module, loader, n: int, device: torch.device, *, precision: str = "fp32",
          channels_last: bool = False, dist: Dist | None = None) -> tuple[np.ndarray, np.ndarray]:
    """L2-normalised pooled features (after the embedding layer) of all n items, and which items could be
    read. Each process embeds its shard; the rows are summed across processes (the others are zero)."""
    emb = torch.zeros(n, model.num_features, device=device)
    ok = torch.zeros(n, device=device)
    for batch, f in outputs(model, loader, device, forward=model.pool_features, precision=precision,
                            channels_last=channels_last):
        if f is None:
            continue
        idx = batch.indices.to(device)
        emb[idx] = F.normalize(f, dim=1)
        ok[idx] = 1.0
    emb, ok = all_reduce_sum(emb, dist), all_reduce_sum(ok, dist)
    return emb.cpu().numpy(), ok.cpu().numpy() > 0
