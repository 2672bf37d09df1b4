"""Evaluation images under corruptions and perturbation sequences, made inside data-loader workers.

Images are resized and centre-cropped exactly as `InputSpec.eval_transform` does, corrupted at that resolution, and
normalised last. Corrupted images go through JPEG at quality 85, as ImageNet-C and the paper store them; with a
cache folder those JPEG files are written once and read back on later evaluations.
"""

from __future__ import annotations

import abc
import hashlib
import io
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from ..eval.corruptions import corrupt, corruption_rng, jpeg_bytes
from ..eval.perturbations import centre_crop, perturbation_rng, sequence
from .loader import BadSample
from .sources import BadImage, Records
from .transforms import InputSpec

PAPER_JPEG_QUALITY = 85  # the quality corrupted sets are stored at (ImageNet-C; the paper, section 4.3)


class _EvalImages(Dataset, abc.ABC):
    """Shared part: item k is image indices[k % n] under task k // n; resize like eval_transform, normalise.
    Subclasses say what one task makes of one image (`make`)."""

    def __init__(self, records: Records, indices: np.ndarray, prep: InputSpec, tasks: list, seed: int = 0):
        self.records, self.indices, self.prep, self.tasks, self.seed = records, np.asarray(indices), prep, tasks, seed
        self.resize, self.normalize = prep.eval_resize_op(), prep.normalize()

    def __len__(self) -> int:
        return len(self.tasks) * len(self.indices)

    def locate(self, k: int) -> tuple[object, int]:
        """(task, record index) of item k."""
        t, j = divmod(k, len(self.indices))
        return self.tasks[t], int(self.indices[j])

    def resized(self, index: int) -> np.ndarray:
        """(H, W, 3) uint8, resized as eval_transform resizes (on a tensor, not with PIL)."""
        return self.resize(self.records.load_tensor(index)).permute(1, 2, 0).numpy()

    def to_tensor(self, images: np.ndarray) -> torch.Tensor:
        """uint8 (..., H, W, 3) -> normalised float (..., 3, H, W)."""
        return self.normalize(torch.from_numpy(np.array(images)).movedim(-1, -3))  # a copy: arrays may be read-only

    def __getitem__(self, k: int):
        task, index = self.locate(k)
        try:
            images = self.make(task, index)
        except BadImage as e:
            return BadSample(k, self.records.ids[index], str(e))
        return self.to_tensor(images), int(self.records.labels[index]), k

    @abc.abstractmethod
    def make(self, task, index: int) -> np.ndarray:
        """The uint8 image (or frames) that `task` makes of record `index`."""


class CorruptedImages(_EvalImages):
    """Tasks are (corruption, severity) pairs; (None, 0) is the clean image (no JPEG round trip)."""

    def __init__(self, records: Records, indices: np.ndarray, prep: InputSpec,
                 tasks: list[tuple[str | None, int]], seed: int = 0, cache: str | Path | None = None):
        super().__init__(records, indices, prep, tasks, seed)
        self.cache = Path(cache) / self.cache_key() if cache else None

    def cache_key(self) -> str:
        """What the cached JPEGs depend on besides (corruption, severity, index): the data, sizes and seed."""
        h = hashlib.sha1()
        for part in (len(self.records), *self.records.ids[:1000], self.prep.eval_resize, self.prep.eval_resolution,
                     self.prep.interpolation, self.seed):
            h.update(str(part).encode() + b"\0")
        return f"{self.prep.eval_resolution}px-seed{self.seed}-{h.hexdigest()[:12]}"

    def make(self, task: tuple[str | None, int], index: int) -> np.ndarray:
        name, severity = task
        if name is None:
            return centre_crop(self.resized(index), self.prep.eval_resolution)
        path = self.cache / name / str(severity) / f"{index:07d}.jpg" if self.cache else None
        if path is not None and path.is_file():
            return np.asarray(Image.open(path).convert("RGB"))
        crop = centre_crop(self.resized(index), self.prep.eval_resolution)
        data = jpeg_bytes(corrupt(crop, name, severity, corruption_rng(self.seed, index, name, severity)),
                          PAPER_JPEG_QUALITY)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}")  # workers may race: each renames its own file
            tmp.write_bytes(data)
            os.replace(tmp, path)
        return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


class PerturbedSequences(_EvalImages):
    """Tasks are perturbation names; an item is the whole (frames, 3, H, W) sequence of one image."""

    def make(self, task: str, index: int) -> np.ndarray:
        return sequence(task, self.resized(index), self.prep.eval_resolution,
                        perturbation_rng(self.seed, index, task))
