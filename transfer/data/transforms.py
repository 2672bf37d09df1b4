"""Input transforms: the training crops (the official one in data/crop.py, torchvision's RandomResizedCrop, the
retrieval crop) and the evaluation resize + centre crop.

Normalisation is either torchvision's mean/std or the paper's mean subtraction (pixels in 0-255 minus
123.68/116.78/103.94); whichever is used is written into every weights file's sidecar.

Images become uint8 tensors right after decoding, so crops and resizes run on torch's vectorised uint8
antialiasing kernels (2-3x faster than PIL's at 224 px; the two differ by a grey level or two at most); the
official crop resizes as TF 1 does instead (data/crop.py), without antialiasing.
torchvision's AutoAugment alone goes back to PIL: its affine and sharpness ops are 4-10x slower on tensors. The
official AutoAugment (data/autoaugment.py) runs on the uint8 tensor.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms import v2 as T

from ..recipe import AugmentSection
from .autoaugment import POLICIES as OFFICIAL_POLICIES
from .autoaugment import OfficialAutoAugment
from .crop import distorted_bounding_box_crop

_INTERP = {"bilinear": InterpolationMode.BILINEAR, "bicubic": InterpolationMode.BICUBIC,
           "nearest": InterpolationMode.NEAREST}


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# The paper's preprocessing subtracts the ImageNet mean in 0-255 units and does not divide (section 4.1);
# as (x / 255 - mean) / std that is this mean and std.
PAPER_MEAN = (123.68 / 255, 116.78 / 255, 103.94 / 255)
PAPER_STD = (1 / 255, 1 / 255, 1 / 255)


@dataclass(frozen=True)
class InputSpec:
    """How images are prepared for a model: the one description of it, from the zoo's defaults through a run's
    recipe to every weights file's sidecar, and the transforms it implies.

    >>> spec = InputSpec(eval_resolution=256, eval_resize=292)   # Big-Little's evaluation
    >>> spec.eval_transform()(Image.new("RGB", (400, 300))).shape
    torch.Size([3, 256, 256])
    """

    train_resolution: int = 224
    eval_resolution: int = 224
    eval_resize: int = 256  # shorter side before the centre crop
    eval_crop: str = "center"  # "center": resize the shorter side, centre crop; "none": resize to a square
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: str = "bilinear"

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> InputSpec:
        """The inverse of to_dict (a sidecar's "input")."""
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})

    def resolve(self, aug: AugmentSection, backbone_input: dict | None = None) -> InputSpec:
        """This (the model's) spec with a recipe's sizes, crop, resampling and normalisation, where "backbone"
        normalisation is the one the backbone's sidecar records (torchvision's mean/std when there is none)."""
        if aug.normalization == "backbone":
            source = backbone_input or {}
            mean, std = tuple(source.get("mean", IMAGENET_MEAN)), tuple(source.get("std", IMAGENET_STD))
        else:
            mean, std = (PAPER_MEAN, PAPER_STD) if aug.normalization == "mean_only" else (IMAGENET_MEAN, IMAGENET_STD)
        evaluation = aug.eval_resolution or self.eval_resolution
        resize = aug.eval_resize or (self.eval_resize if evaluation == self.eval_resolution
                                     else round(evaluation / 0.875))
        return InputSpec(aug.train_resolution or self.train_resolution, evaluation, resize, aug.eval_crop, mean, std,
                         aug.interpolation)

    def train_transform(self, aug: AugmentSection) -> T.Compose:
        """The training crop (the paper's area and aspect ranges), flip, optional AutoAugment, normalise."""
        steps = [T.PILToTensor(), _train_crop(aug, self)]
        if aug.hflip and aug.train_crop != "distorted_bounding_box":  # that one flips before its resize
            steps.append(T.RandomHorizontalFlip())
        if aug.autoaugment in OFFICIAL_POLICIES:  # the official TF operations, on the uint8 tensor
            steps.append(OfficialAutoAugment(aug.autoaugment))
        elif aug.autoaugment != "none":  # torchvision's
            policy = T.AutoAugmentPolicy.IMAGENET if aug.autoaugment == "imagenet" else T.AutoAugmentPolicy.CIFAR10
            steps += [TensorToPIL(), T.AutoAugment(policy), T.PILToTensor()]
        return T.Compose([*steps, self.normalize()])

    def eval_resize_op(self) -> T.Resize:
        """The shorter side to eval_resize (a centre crop follows), or with eval_crop "none" the whole image to an
        eval_resolution square."""
        size = (self.eval_resolution,) * 2 if self.eval_crop == "none" else self.eval_resize
        return T.Resize(size, interpolation=_INTERP[self.interpolation], antialias=True)

    def eval_transform(self) -> T.Compose:
        """Resize the shorter side, centre crop (224 from 256, or 256 from 292 for Big-Little), normalise; or, with
        eval_crop "none" (the paper's retrieval evaluation), resize the whole image to a square."""
        # With eval_crop "none" the centre crop keeps the whole resized square.
        return T.Compose([T.PILToTensor(), self.eval_resize_op(), T.CenterCrop(self.eval_resolution),
                          self.normalize()])

    def normalize(self) -> Normalize:
        return Normalize(self.mean, self.std)


class Normalize:
    """uint8 (..., 3, H, W) in any memory layout -> contiguous float32 (x / 255 - mean) / std.

    PILToTensor returns a channels-last view, on which ToDtype + Normalize took ~300 us per 224-px image, a
    fifth of the whole pipeline; one contiguous copy first and two in-place passes take ~75 us."""

    def __init__(self, mean, std):
        self.mean, self.std = tuple(mean), tuple(std)
        self.shift = torch.tensor(self.mean).view(3, 1, 1) * 255
        self.scale = 1 / (torch.tensor(self.std).view(3, 1, 1) * 255)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous().to(torch.float32).sub_(self.shift).mul_(self.scale)

    def __repr__(self) -> str:
        return f"Normalize(mean={self.mean}, std={self.std})"


class TensorToPIL:
    """uint8 (3, H, W) -> RGB PIL image by merging the three planes: ~35 us at 224 px, where torchvision's
    to_pil_image interleaves the channels through a transpose that took 80-340 us."""

    def __call__(self, x: torch.Tensor) -> Image.Image:
        planes = x.numpy()
        return Image.merge("RGB", [Image.fromarray(np.ascontiguousarray(p)) for p in planes])

    def __repr__(self) -> str:
        return "TensorToPIL()"


def _train_crop(aug: AugmentSection, prep: InputSpec):
    interp = _INTERP[prep.interpolation]
    r = prep.train_resolution
    if aug.train_crop == "distorted_bounding_box":
        return distorted_bounding_box_crop(r, flip=aug.hflip, min_object_covered=aug.crop_min_covered,
                                           aspect_range=tuple(aug.crop_aspect), area_range=tuple(aug.crop_area),
                                           interpolation=interp)
    if aug.train_crop == "random_resized":
        return T.RandomResizedCrop(r, scale=tuple(aug.crop_area), ratio=tuple(aug.crop_aspect),
                                   interpolation=interp, antialias=True)
    # The paper's retrieval crop: with p = 0.5 resize to a 256/224-larger square and random-crop, else resize.
    big = round(r * 256 / 224)
    return T.RandomChoice([T.Compose([T.Resize((big, big), interpolation=interp, antialias=True), T.RandomCrop(r)]),
                           T.Resize((r, r), interpolation=interp, antialias=True)])


def takes_tensors(transform) -> bool:
    """Whether `transform` starts by converting a PIL image to a tensor, so that it is better given the tensor."""
    return isinstance(transform, T.Compose) and isinstance(transform.transforms[0], T.PILToTensor)
