"""Mixup (Zhang 2018) paired as the official code pairs images: across two batches, or within one.

- `two_batches` (the official --mixup_type=1, the paper's: 79.10 top-1 at row E3): an optimizer step of B
  samples reads 2B images, and each group's first half is mixed with its second half
  (functions/input_fns.py:98-100 doubles the batch; utils/data_util.py:113-129 with keep_batch_size=False,
  called from nets/run_loop_classification.py:101-105). Steps per epoch stay N/B, so an epoch reads the
  training images twice. The loader (data/loader.py, `reads`) draws the 2B images as the official stream does:
  the next 2B of a shuffled pass, passes one after the other; the official shuffles only approximately (file
  order, 20 interleaved files, a record buffer of 10,000 for ImageNet and 1,000 for Food-101:
  functions/input_fns.py:52-75, functions/data_config.py:32, :43), the loader with a whole permutation a pass.
- `in_batch` (the official --mixup_type=2, 78.85): B images give B samples, the first half mixed with the
  second half and then with the second half reversed (data_util.py:131-156, keep_batch_size=True). Its
  teacher targets are the one exception kept out: data_util.py:154 mixes the second set with the one-hot
  labels y1 instead of the teacher's y1_t, a slip this module does not copy.

Partners never leave their group: a group is what one official GPU holds (128 images of batch 1024 on 8
GPUs), and in the official code each GPU mixes its own batch. Each sample has its own lambda ~ Beta(a, a)
(data_util.py:105 and :132 draw one per mixed sample), or, in mode "batch", one lambda per group. Every
target given (one-hot labels, teacher probabilities) is mixed with the sample's lambda and partner.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

PAIRINGS = ("two_batches", "in_batch")


@dataclass(frozen=True)
class BatchLayout:
    """How a training micro-batch is laid out: `reads` images per sample (2: the two batches of `two_batches`),
    and groups of `group` samples (None: one group) that mixup partners, BatchNorm statistics and DropBlock
    masks do not cross."""

    reads: int = 1
    group: int | None = None


def reads_per_sample(pairing: str) -> int:
    """Images read per training sample: 2 for `two_batches`, 1 for `in_batch`."""
    if pairing not in PAIRINGS:
        raise ValueError(f"unknown mixup pairing {pairing!r}; one of {PAIRINGS}")
    return 2 if pairing == "two_batches" else 1


@dataclass(frozen=True)
class Pairs:
    """Sample s mixes image `first[s]` (weight lam[s]) with image `second[s]`; `group[s]` is its group."""

    first: torch.Tensor
    second: torch.Tensor
    group: torch.Tensor

    def __len__(self) -> int:
        return len(self.first)


@functools.lru_cache(maxsize=16)
def pair_up(images: int, layout: BatchLayout = BatchLayout()) -> Pairs:
    """The partners of a micro-batch of `images` images: each chunk of group x reads images is one group (a
    shorter last chunk when the loader skipped unreadable images), mixed as the pairing says.

    >>> p = pair_up(8, BatchLayout(reads=2, group=2))   # two groups of 2 samples, 4 images each
    >>> p.first.tolist(), p.second.tolist(), p.group.tolist()
    ([0, 1, 4, 5], [2, 3, 6, 7], [0, 0, 1, 1])
    >>> p = pair_up(4)                                  # in_batch: halves, then the second half reversed
    >>> p.first.tolist(), p.second.tolist()
    ([0, 1, 0, 1], [2, 3, 3, 2])
    """
    chunk = images if layout.group is None else layout.group * layout.reads
    first: list[int] = []
    second: list[int] = []
    group: list[int] = []
    for g, start in enumerate(range(0, images, chunk)):
        size = min(chunk, images - start)
        half = size // 2
        a = list(range(start, start + half))
        b = list(range(start + half, start + 2 * half))
        if layout.reads == 2:
            # first half with second half: `size` images give `half` samples (an odd last image has no partner)
            pairs_a, pairs_b = a, b
        else:
            # mixed_sx1 then mixed_sx2 (data_util.py:119, :143, concatenated at :149): the first half with the
            # second half, then with the second half reversed; an odd image left over is kept as it is
            odd = [start + size - 1] if size % 2 else []
            pairs_a, pairs_b = a + a + odd, b + b[::-1] + odd
        first += pairs_a
        second += pairs_b
        group += [g] * len(pairs_a)
    as_tensor = functools.partial(torch.tensor, dtype=torch.long)
    return Pairs(as_tensor(first), as_tensor(second), as_tensor(group))


def sample_lambda(pairs: Pairs | int, alpha: float, mode: str = "per_sample") -> torch.Tensor:
    """A mixing weight per sample from Beta(alpha, alpha): one each (`per_sample`), or one per group (`batch`).

    `pairs` may be a sample count (one group)."""
    group = pairs.group if isinstance(pairs, Pairs) else torch.zeros(pairs, dtype=torch.long)
    n = len(group) if mode == "per_sample" else int(group.max()) + 1 if len(group) else 0
    # Beta(a, a) as Ga / (Ga + Gb): torch's Beta sampler takes no generator, gamma via _standard_gamma neither,
    # so draw from the global RNG (seeded and checkpointed by the trainer).
    dist = torch.distributions.Beta(torch.tensor([alpha]), torch.tensor([alpha]))
    lam = dist.sample((n,)).view(n)
    return lam if mode == "per_sample" else lam[group]


def mixup(images: torch.Tensor, targets: list[torch.Tensor], lam: torch.Tensor, pairs: Pairs | None = None
          ) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """lam * first + (1 - lam) * second, for the images and each (images, K) target (data_util.py:119-126);
    `pairs` defaults to `pair_up(len(images))` (in_batch, one group)."""
    pairs = pair_up(images.shape[0]) if pairs is None else pairs
    lam = lam.to(images.device)
    first, second = pairs.first.to(images.device), pairs.second.to(images.device)

    def mix(t: torch.Tensor) -> torch.Tensor:
        w = lam.view(-1, *([1] * (t.dim() - 1))).to(t.dtype)
        return w * t[first] + (1 - w) * t[second]

    return mix(images), [mix(t) for t in targets]
