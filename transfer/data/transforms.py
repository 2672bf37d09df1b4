"""Input transforms, from torchvision: the paper's training crop and the evaluation resize + centre crop.

Normalisation is either torchvision's mean/std or the paper's mean subtraction (pixels in 0-255 minus
123.68/116.78/103.94); whichever is used is written into every weights file's sidecar.

Images become uint8 tensors right after decoding, so crops and resizes run on torch's vectorised uint8
antialiasing kernels (2-3x faster than PIL's at 224 px; the two differ by a grey level or two at most).
AutoAugment alone goes back to PIL: its affine and sharpness ops are 4-10x slower on tensors.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms import v2 as T

from ..models.zoo import IMAGENET_MEAN, IMAGENET_STD, PAPER_MEAN, PAPER_STD, InputSpec
from ..recipe import AugmentSection

_INTERP = {"bilinear": InterpolationMode.BILINEAR, "bicubic": InterpolationMode.BICUBIC,
           "nearest": InterpolationMode.NEAREST}


@dataclass(frozen=True)
class Preprocessing:
    """Resolved sizes and normalisation for one run (recipe values, else the model's defaults)."""

    train_resolution: int
    eval_resolution: int
    eval_resize: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str
    eval_crop: str = "center"

    def input_spec(self) -> InputSpec:
        return InputSpec(self.train_resolution, self.eval_resolution, self.eval_resize, self.eval_crop, self.mean,
                         self.std, self.interpolation)


def resolve(aug: AugmentSection, model_input: InputSpec, backbone_input: dict | None = None) -> Preprocessing:
    """Sizes from the recipe, else the model's; normalisation as the recipe says, where "backbone" is the one
    the backbone's sidecar records (torchvision's mean/std when there is no sidecar)."""
    if aug.normalization == "backbone":
        source = backbone_input or {}
        mean, std = tuple(source.get("mean", IMAGENET_MEAN)), tuple(source.get("std", IMAGENET_STD))
    else:
        mean, std = (PAPER_MEAN, PAPER_STD) if aug.normalization == "mean_only" else (IMAGENET_MEAN, IMAGENET_STD)
    train = aug.train_resolution or model_input.train_resolution
    evaluation = aug.eval_resolution or model_input.eval_resolution
    resize = aug.eval_resize or (model_input.eval_resize if evaluation == model_input.eval_resolution
                                 else round(evaluation / 0.875))
    return Preprocessing(train, evaluation, resize, mean, std, aug.interpolation, aug.eval_crop)


def from_spec(spec: InputSpec) -> Preprocessing:
    return Preprocessing(spec.train_resolution, spec.eval_resolution, spec.eval_resize, tuple(spec.mean),
                         tuple(spec.std), spec.interpolation, spec.eval_crop)


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


def _train_crop(aug: AugmentSection, prep: Preprocessing):
    interp = _INTERP[prep.interpolation]
    r = prep.train_resolution
    if aug.train_crop == "random_resized":
        return T.RandomResizedCrop(r, scale=tuple(aug.crop_area), ratio=tuple(aug.crop_aspect),
                                   interpolation=interp, antialias=True)
    # The paper's retrieval crop: with p = 0.5 resize to a 256/224-larger square and random-crop, else resize.
    big = round(r * 256 / 224)
    return T.RandomChoice([T.Compose([T.Resize((big, big), interpolation=interp, antialias=True), T.RandomCrop(r)]),
                           T.Resize((r, r), interpolation=interp, antialias=True)])


def train_transform(aug: AugmentSection, prep: Preprocessing) -> T.Compose:
    """Random resized crop (the paper's area and aspect ranges), flip, optional AutoAugment, normalise."""
    steps = [T.PILToTensor(), _train_crop(aug, prep)]
    if aug.hflip:
        steps.append(T.RandomHorizontalFlip())
    if aug.autoaugment != "none":
        policy = T.AutoAugmentPolicy.IMAGENET if aug.autoaugment == "imagenet" else T.AutoAugmentPolicy.CIFAR10
        steps += [TensorToPIL(), T.AutoAugment(policy), T.PILToTensor()]
    return T.Compose([*steps, Normalize(prep.mean, prep.std)])


def takes_tensors(transform) -> bool:
    """Whether `transform` starts by converting a PIL image to a tensor, so that it is better given the tensor."""
    return isinstance(transform, T.Compose) and isinstance(transform.transforms[0], T.PILToTensor)


def eval_resize(prep: Preprocessing) -> T.Resize:
    """The shorter side to eval_resize (a centre crop follows), or with eval_crop "none" the whole image to an
    eval_resolution square."""
    size = (prep.eval_resolution,) * 2 if prep.eval_crop == "none" else prep.eval_resize
    return T.Resize(size, interpolation=_INTERP[prep.interpolation], antialias=True)


def eval_transform(prep: Preprocessing) -> T.Compose:
    """Resize the shorter side, centre crop (224 from 256, or 256 from 292 for Big-Little), normalise; or, with
    eval_crop "none" (the paper's retrieval evaluation), resize the whole image to a square."""
    # With eval_crop "none" the centre crop keeps the whole resized square.
    return T.Compose([T.PILToTensor(), eval_resize(prep), T.CenterCrop(prep.eval_resolution),
                      Normalize(prep.mean, prep.std)])
