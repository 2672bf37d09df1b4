"""From records to batches: reproducible sampling and augmentation, bad images counted and skipped.

Reproducibility does not depend on the number of workers or on where a run was resumed: the batch sampler
hands out (index, epoch) pairs from a permutation seeded by (seed, "order", epoch), and each sample's
augmentation runs under an RNG seeded by (seed, "augment", epoch, index) (runtime.derive_seed).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate

from ..runtime import derive_seed
from .sources import BadImage, DataError, Records
from .transforms import InputSpec, takes_tensors


@dataclass(frozen=True)
class BadSample:
    index: int
    ident: str
    reason: str


class TransformedDataset(Dataset):
    """Records + a transform; items are (tensor, label, index) or a BadSample marker."""

    def __init__(self, records: Records, transform, seed: int = 0):
        self.records = records
        self.transform = transform
        self.seed = seed
        self.load = records.load_tensor if takes_tensors(transform) else records.load

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, key):
        index, epoch = key if isinstance(key, tuple) else (key, 0)
        try:
            image = self.load(index)
        except BadImage as e:
            return BadSample(index, self.records.ids[index], str(e))
        s = derive_seed(self.seed, "augment", epoch, index)
        with torch.random.fork_rng(devices=[]):
            # The CPU generator only: torch.manual_seed would also queue a CUDA seeding, which records a
            # stack trace per call on CUDA builds and cost a quarter of the pipeline's throughput.
            torch.default_generator.manual_seed(s)
            x = self.transform(image)  # torchvision's v2 transforms draw from torch's generator only
        return x, int(self.records.labels[index]), index


def eval_dataset(records: Records, spec: InputSpec) -> TransformedDataset:
    """`records` as a model with this input spec is evaluated on them (resize, centre crop, normalise)."""
    return TransformedDataset(records, spec.eval_transform())


@dataclass
class Batch:
    images: torch.Tensor
    labels: torch.Tensor
    indices: torch.Tensor
    bad: list[BadSample] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.labels)


def collate(items: list) -> Batch:
    good = [it for it in items if not isinstance(it, BadSample)]
    bad = [it for it in items if isinstance(it, BadSample)]
    if not good:
        return Batch(torch.empty(0), torch.empty(0, dtype=torch.long), torch.empty(0, dtype=torch.long), bad)
    # default_collate stacks straight into shared memory inside a worker, saving a copy per batch on its way
    # to the main process.
    return Batch(default_collate([g[0] for g in good]), torch.tensor([g[1] for g in good], dtype=torch.long),
                 torch.tensor([g[2] for g in good], dtype=torch.long), bad)


class EpochBatchSampler(Sampler):
    """One process's micro-batches of (index, epoch) for one epoch, resumable at any optimizer step.

    Each optimizer step takes the next `micro * world * accumulation` images of a permutation seeded by
    (seed, epoch) and deals them in contiguous micro-batches: process r, accumulation step a gets chunk
    r * accumulation + a. So a run on W processes sees exactly the micro-batches that one process with
    W times the accumulation sees, in the same groups. The tail that does not fill a step is dropped, unless
    `drop_last` is False: then it is one more, smaller step (the official input keeps its remainder), dealt in
    as even contiguous micro-batches (sizes differing by one sample at most), and kept only if each of them
    gets two samples or more: training BatchNorm needs two values per channel on the pooled 1x1 maps of SK's
    fuse and the embedding.

    With `repeats` an epoch is that many passes over the n images, shuffled together; each pass gets a key
    of its own (epoch * repeats * reads + pass), so an image's augmentation differs between its passes.

    With `reads` = 2 (mixup's two_batches pairing) every micro-batch holds `micro` x 2 images and an epoch, still
    the same number of optimizer steps, reads the images twice: two rounds, each its own shuffle, one after the
    other, as the official input repeats its shuffled dataset for twice the epochs and batches it by 2B
    (functions/input_fns.py:98-100, utils/data_util.py:410-460). So a sample's two images are two draws without
    replacement from one round (a round's last step may straddle two), and a micro-batch is the next stretch
    of that stream, as one official GPU's batch is.
    """

    def __init__(self, n: int, micro: int, *, seed: int = 0, rank: int = 0, world: int = 1, accumulation: int = 1,
                 repeats: int = 1, reads: int = 1, drop_last: bool = True):
        self.n, self.micro, self.seed, self.repeats, self.reads = n, micro, seed, repeats, reads
        self.drop_last = drop_last
        self.rank, self.world, self.accumulation = rank, world, accumulation
        self.epoch = 0
        self.start = 0

    @property
    def steps_per_epoch(self) -> int:
        full, tail = divmod(self.n * self.repeats, self.micro * self.world * self.accumulation)
        return full + int(not self.drop_last and tail >= 2 * self.world * self.accumulation)

    def set_epoch(self, epoch: int, start_micro_batch: int = 0) -> None:
        self.epoch, self.start = epoch, start_micro_batch

    def __len__(self) -> int:
        return self.steps_per_epoch * self.accumulation - self.start

    def __iter__(self):
        g = torch.Generator().manual_seed(derive_seed(self.seed, "order", self.epoch))
        per_round = self.n * self.repeats
        order = torch.cat([torch.randperm(per_round, generator=g) + r * per_round for r in range(self.reads)]).tolist()
        size = self.micro * self.reads
        per_step = size * self.world * self.accumulation
        passes = self.repeats * self.reads
        parts = self.world * self.accumulation
        full, tail = divmod(per_round, self.micro * parts)  # in samples
        for mb in range(self.start, self.steps_per_epoch * self.accumulation):
            step, a = divmod(mb, self.accumulation)
            k = self.rank * self.accumulation + a
            begin = step * per_step + k * size
            end = begin + size
            if step == full:  # the kept tail: micro-batch k gets samples [k * tail // parts, (k + 1) * tail // parts)
                begin, end = (step * per_step + (k + i) * tail // parts * self.reads for i in (0, 1))
            yield [(j % self.n, self.epoch * passes + j // self.n) for j in order[begin:end]]


class ShardSampler(Sampler):
    """Evaluation: every index once, in order, split into contiguous shards for `world` processes."""

    def __init__(self, n: int, batch_size: int, *, rank: int = 0, world: int = 1):
        per = math.ceil(n / world)
        self.indices = list(range(rank * per, min((rank + 1) * per, n)))
        self.batch_size = batch_size

    def __len__(self) -> int:
        return math.ceil(len(self.indices) / self.batch_size)

    def __iter__(self):
        for b in range(len(self)):
            yield self.indices[b * self.batch_size:(b + 1) * self.batch_size]


class FailOnBadImage:
    """A loader that stops at the first unreadable image (data.on_bad_image: fail) with one line naming it.

    The check runs in the main process: an error raised inside a worker would reach the user wrapped in the
    worker's traceback."""

    def __init__(self, loader: DataLoader):
        self.loader = loader

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        for batch in self.loader:
            if batch.bad:
                b = batch.bad[0]
                raise DataError(f"unreadable image {b.ident}: {b.reason} (data.on_bad_image=fail; set it to skip "
                                f"to leave such images out)")
            yield batch


def make_loader(dataset: Dataset, sampler: Sampler, workers: int, *, pin_memory: bool = False,
                persistent: bool = False, on_bad_image: str = "skip") -> DataLoader | FailOnBadImage:
    """`persistent` keeps the worker processes between epochs (a loader iterated once per epoch): forking
    them anew cost a second or two per epoch. Safe here because the samplers' keys carry the epoch.
    `on_bad_image`: "skip" leaves unreadable images out of their batch (each batch lists them in `bad`),
    "fail" stops there."""
    loader = DataLoader(dataset, batch_sampler=sampler, num_workers=workers, collate_fn=collate,
                        pin_memory=pin_memory, persistent_workers=persistent and workers > 0,
                        prefetch_factor=4 if workers else None)
    return FailOnBadImage(loader) if on_bad_image == "fail" else loader


def eval_loader(dataset: Dataset, batch_size: int, workers: int, *, rank: int = 0, world: int = 1,
                persistent: bool = False) -> DataLoader:
    """Every sample once (shared out to `world` processes, the last batch may be short)."""
    return make_loader(dataset, ShardSampler(len(dataset), batch_size, rank=rank, world=world), workers,
                       persistent=persistent)
