"""Evaluation images under corruptions and perturbation sequences, made inside data-loader workers.

Corrupted sets are prepared as the authors' generator prepares them (clovaai/assembled-cnn
datasets/CE_dataset/CE_validation_generator.py, resize_and_center_crop): the shorter side resized with Pillow's
bilinear filter, the longer side truncated, the crop's corner rounded down; then corrupted at that resolution,
stored as JPEG at quality 85 as ImageNet-C and the paper store them, and normalised last. The shorter side is
`corrupted_set_resize`: for an ImageNet model (the AlexNet-normalised mCE, the paper's number) the official sets'
`official_resize(crop)` (256 for a 224 crop, 292 for 256: what its mCE scripts evaluate for ResNet-50 and for both
Assemble-ResNets, scripts/eval_*_mCE_on_imagenet.sh, though Assemble-ResNet-152's top-1 is taken 257 -> 256); for
other data the model's own evaluation resize, so that the clean top-1 is the one `transfer evaluate` gives. The
clean images are the same crops without the JPEG. With a cache folder the JPEG files are written once and read
back on later evaluations. Perturbation sequences keep the model's own
evaluation resize (`InputSpec.eval_transform`): their frames translate the image before the centre crop.
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
from ..eval.perturbations import perturbation_rng, sequence
from .loader import BadSample
from .sources import BadImage, Records
from .transforms import InputSpec

PAPER_JPEG_QUALITY = 85  # the quality corrupted sets are stored at (ImageNet-C; the paper, section 4.3)


def official_resize(crop: int) -> int:
    """The shorter side the official mCE sets resize to before a `crop` centre crop: crop / 0.875, truncated.

    >>> official_resize(224), official_resize(256), official_resize(64)   # 256->224 and 292->256 as the scripts
    (256, 292, 73)
    """
    return int(crop / 0.875)


def corrupted_set_resize(prep: InputSpec, imagenet: bool) -> int:
    """The shorter side before the centre crop of the corrupted sets (see the module's docstring)."""
    return official_resize(prep.eval_resolution) if imagenet else prep.eval_resize


def resize_and_centre_crop(image: Image.Image, resize: int, crop: int) -> np.ndarray:
    """The official generator's preparation: shorter side to `resize` (Pillow bilinear, the other side truncated),
    then the centre `crop` square with its corner rounded down; (crop, crop, 3) uint8."""
    w, h = image.size
    size = (resize, int(resize * h / w)) if h > w else (int(resize * w / h), resize)
    resized = image.resize(size, resample=Image.BILINEAR)
    top, left = int((size[1] - crop) / 2), int((size[0] - crop) / 2)
    return np.asarray(resized.crop((left, top, left + crop, top + crop)))


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
    """Tasks are (corruption, severity) pairs; (None, 0) is the clean image (no JPEG round trip). Images are prepared
    as the official generator prepares them (`resize_and_centre_crop`: shorter side to `resize`, default the model's
    eval_resize), at the model's evaluation resolution, or resized whole to that square for models evaluated
    without a crop (eval_crop "none")."""

    def __init__(self, records: Records, indices: np.ndarray, prep: InputSpec,
                 tasks: list[tuple[str | None, int]], seed: int = 0, cache: str | Path | None = None,
                 resize: int | None = None):
        super().__init__(records, indices, prep, tasks, seed)
        self.crop = prep.eval_resolution
        self.crop_resize = (resize or prep.eval_resize) if prep.eval_crop == "center" else None
        self.cache = Path(cache) / self.cache_key() if cache else None

    def preprocessing(self) -> dict:
        """What robustness.json records of how the images were prepared."""
        if self.crop_resize is None:
            return {"resize": [self.crop, self.crop], "crop": None, "resample": "pil-bilinear"}
        return {"resize": self.crop_resize, "crop": self.crop, "resample": "pil-bilinear",
                "official_sets": self.crop_resize == official_resize(self.crop),
                "as": "clovaai/assembled-cnn CE_validation_generator.py resize_and_center_crop"}

    def cache_key(self) -> str:
        """What the cached JPEGs depend on besides (corruption, severity, index): the data, sizes and seed."""
        h = hashlib.sha1()
        parts = (len(self.records), *self.records.ids[:1000], "official-crop", self.crop_resize, self.crop, self.seed)
        for part in parts:
            h.update(str(part).encode() + b"\0")
        return f"{self.crop}px-seed{self.seed}-{h.hexdigest()[:12]}"

    def prepared(self, index: int) -> np.ndarray:
        image = self.records.load(index)
        if self.crop_resize is None:
            return np.asarray(image.resize((self.crop, self.crop), resample=Image.BILINEAR))
        return resize_and_centre_crop(image, self.crop_resize, self.crop)

    def make(self, task: tuple[str | None, int], index: int) -> np.ndarray:
        name, severity = task
        if name is None:
            return self.prepared(index)
        path = self.cache / name / str(severity) / f"{index:07d}.jpg" if self.cache else None
        if path is not None and path.is_file():
            return np.asarray(Image.open(path).convert("RGB"))
        rng = corruption_rng(self.seed, index, name, severity)
        data = jpeg_bytes(corrupt(self.prepared(index), name, severity, rng), PAPER_JPEG_QUALITY)
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
