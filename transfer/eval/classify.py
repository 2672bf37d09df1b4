"""Classification accuracy: top-k and loss over a loader, reduced across processes."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..runtime import Dist, all_reduce_sum
from .inference import outputs


def topk_correct(logits: torch.Tensor, labels: torch.Tensor, ks: list[int]) -> dict[int, int]:
    """Number of samples whose label is among the k highest logits, for each k.

    >>> logits = torch.tensor([[0.1, 0.7, 0.2], [0.5, 0.2, 0.3]])
    >>> topk_correct(logits, torch.tensor([2, 0]), [1, 2])   # sample 0's label is second, sample 1's first
    {1: 1, 2: 2}
    """
    kmax = min(max(ks), logits.shape[1])
    top = logits.topk(kmax, dim=1).indices
    hit = top == labels.view(-1, 1)
    return {k: int(hit[:, :min(k, kmax)].any(1).sum()) for k in ks}


def evaluate(model: nn.Module, loader, device: torch.device, *, precision: str = "fp32",
             channels_last: bool = False, topk: list[int] = (1, 5), dist: Dist | None = None,
             keep_logits: bool = False) -> dict:
    """{'top1': ..., 'top5': ..., 'loss': ..., 'count': n, 'bad_images': m}; with keep_logits also
    'logits' (n, K) float32 and 'indices' (n,) in dataset order."""
    topk = list(topk)
    sums = torch.zeros(len(topk) + 3, dtype=torch.float64)  # correct@k..., loss sum, count, bad
    logits_all, idx_all = [], []
    for batch, logits in outputs(model, loader, device, precision=precision, channels_last=channels_last):
        sums[-1] += len(batch.bad)
        if logits is None:
            continue
        y = batch.labels.to(device)
        sums[-3] += float(F.cross_entropy(logits, y, reduction="sum"))
        sums[-2] += len(y)
        for i, c in enumerate(topk_correct(logits, y, topk).values()):
            sums[i] += c
        if keep_logits:
            logits_all.append(logits.cpu())
            idx_all.append(batch.indices)
    if dist is not None:
        sums = all_reduce_sum(sums.to(dist.device), dist).cpu()
    count = int(sums[-2])
    out = {f"top{k}": float(sums[i] / max(count, 1)) for i, k in enumerate(topk)}
    out.update(loss=float(sums[-3] / max(count, 1)), count=count, bad_images=int(sums[-1]))
    if keep_logits:
        idx = torch.cat(idx_all).numpy() if idx_all else np.zeros(0, np.int64)
        order = np.argsort(idx)
        out["indices"] = idx[order]
        out["logits"] = (torch.cat(logits_all).numpy() if logits_all else np.zeros((0, 0), np.float32))[order]
    return out


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
    """(K, K) counts: row = true class, column = predicted class.

    >>> confusion_matrix([0, 0, 1, 2], [0, 1, 1, 1], 3)
    array([[1, 1, 0],
           [0, 1, 0],
           [0, 1, 0]])
    """
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(labels), np.asarray(predictions)), 1)
    return cm


def per_class_accuracy(cm: np.ndarray) -> np.ndarray:
    """Recall of each class (NaN for a class with no samples).

    >>> per_class_accuracy(np.array([[1, 1, 0], [0, 2, 0], [0, 0, 0]]))
    array([0.5, 1. , nan])
    """
    totals = cm.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals > 0, np.diag(cm) / np.maximum(totals, 1), np.nan)


def most_confused(cm: np.ndarray, classes: list[str], n: int = 5) -> list[dict]:
    """The n largest off-diagonal cells: (true, predicted, count, share of the true class)."""
    off = cm.copy()
    np.fill_diagonal(off, 0)
    order = np.argsort(off, axis=None)[::-1][:n]
    out = []
    for flat in order:
        t, p = np.unravel_index(flat, cm.shape)
        if off[t, p] == 0:
            break
        out.append({"true": classes[t], "predicted": classes[p], "count": int(off[t, p]),
                    "fraction": float(off[t, p] / max(cm[t].sum(), 1))})
    return out
