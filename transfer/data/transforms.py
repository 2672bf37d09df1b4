"""Input transforms, from torchvision: the paper's training crop and the evaluation resize + centre crop.

Normalisation is either torchvision's mean/std or the paper's mean subtraction (pixels in 0-255 minus
123.68/116.78/103.94); whichever is used is written into every weights file's sidecar.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms import v2 as T

from ..models.zoo import IMAGENET_MEAN, IMAGENET_STD, InputSpec
from ..recipe import AugmentSection

# The paper's preprocessing subtracts the ImageNet mean in 0-255 units and does not divide (section 4.1).
PAPER_MEAN = (123.68 / 255, 116.78 / 255, 103.94 / 255)
PAPER_STD = (1 / 255, 1 / 255, 1 / 255)
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


def resolve(aug: AugmentSection, model_input: InputSpec) -> Preprocessing:
    mean, std = (PAPER_MEAN, PAPER_STD) if aug.normalization == "mean_only" else (IMAGENET_MEAN, IMAGENET_STD)
    train = aug.train_resolution or model_input.train_resolution
    evaluation = aug.eval_resolution or model_input.eval_resolution
    resize = aug.eval_resize or (model_input.eval_resize if evaluation == model_input.eval_resolution
                                 else round(evaluation / 0.875))
    return Preprocessing(train, evaluation, resize, mean, std, aug.interpolation, aug.eval_crop)


def from_spec(spec: InputSpec) -> Preprocessing:
    return Preprocessing(spec.train_resolution, spec.eval_resolution, spec.eval_resize, tuple(spec.mean),
                         tuple(spec.std), spec.interpolation, spec.eval_crop)


def _to_tensor(prep: Preprocessing) -> list:
    return [T.PILToTensor(), T.ToDtype(torch.float32, scale=True), T.Normalize(prep.mean, prep.std)]


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
    steps = [_train_crop(aug, prep)]
    if aug.hflip:
        steps.append(T.RandomHorizontalFlip())
    if aug.autoaugment != "none":
        policy = T.AutoAugmentPolicy.IMAGENET if aug.autoaugment == "imagenet" else T.AutoAugmentPolicy.CIFAR10
        steps.append(T.AutoAugment(policy))
    return T.Compose(steps + _to_tensor(prep))


def eval_transform(prep: Preprocessing) -> T.Compose:
    """Resize the shorter side, centre crop (224 from 256, or 256 from 292 for Big-Little), normalise; or, with
    eval_crop "none" (the paper's retrieval evaluation), resize the whole image to a square."""
    interp = _INTERP[prep.interpolation]
    if prep.eval_crop == "none":
        r = prep.eval_resolution
        return T.Compose([T.Resize((r, r), interpolation=interp, antialias=True), *_to_tensor(prep)])
    return T.Compose([T.Resize(prep.eval_resize, interpolation=interp, antialias=True),
                      T.CenterCrop(prep.eval_resolution), *_to_tensor(prep)])
