"""ImageNet-P style perturbation sequences (Hendrycks & Dietterich 2019), made on the fly and seeded.

Each sequence is FRAMES images of one evaluation image. Noise sequences: the clean crop, then independent noise
draws at one level (flip probability against the first frame). The others change gradually from the clean crop
(flip probability between consecutive frames): blur and brightness grow step by step, translation moves the crop
window one pixel per frame in a random direction. ImageNet-P has 31 frames and its own parameters; these are
shorter (cost: one forward pass per frame) so their flip probabilities compare models with each other, not with
published ImageNet-P numbers.
"""

from __future__ import annotations

import zlib

import numpy as np

from .corruptions import GAUSSIAN_NOISE, SHOT_NOISE, _gaussian, _hsv_map, to_uint8

FRAMES = 11
PERTURBATIONS = ("gaussian_noise", "shot_noise", "gaussian_blur", "brightness", "translate")
NOISE = {"gaussian_noise", "shot_noise"}  # frames are independent draws: compare each with the first


def perturbation_rng(seed: int, index: int, name: str) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, index, zlib.crc32(b"perturb:" + name.encode())]))


def centre_crop(image: np.ndarray, size: int, dy: int = 0, dx: int = 0) -> np.ndarray:
    """torchvision's CenterCrop on an (H, W, 3) array (shifted by dy, dx); pads by reflection where needed."""
    h, w = image.shape[:2]
    pad = max(0, size - min(h, w)) + max(abs(dy), abs(dx))
    if pad:
        image = np.pad(image, ((pad, pad), (pad, pad), (0, 0)), mode="reflect")
    top = round((h - size) / 2) + pad + dy
    left = round((w - size) / 2) + pad + dx
    return image[top:top + size, left:left + size]


def sequence(name: str, resized: np.ndarray, size: int, rng: np.random.Generator, frames: int = FRAMES) -> np.ndarray:
    """(frames, size, size, 3) uint8 frames of perturbation `name`; `resized` is the image before the centre crop."""
    if name == "translate":
        angle = rng.uniform(0, 2 * np.pi)
        return np.stack([centre_crop(resized, size, round(t * np.sin(angle)), round(t * np.cos(angle)))
                         for t in range(frames)])
    clean = centre_crop(resized, size)
    x = clean.astype(np.float32) / 255
    out = [clean]
    for t in range(1, frames):
        if name == "gaussian_noise":  # ImageNet-C severity 1: a level most images survive
            y = x + rng.normal(scale=GAUSSIAN_NOISE[0], size=x.shape)
        elif name == "shot_noise":
            y = rng.poisson(x * SHOT_NOISE[0]) / SHOT_NOISE[0]
        elif name == "gaussian_blur":  # sigma 0.15 px more per frame: 1.5 px at the last
            y = _gaussian(x, 0.15 * t)
        elif name == "brightness":  # HSV value +0.02 per frame: +0.2 at the last
            y = _hsv_map(x, 2, lambda v, t=t: v + 0.02 * t)
        else:
            raise ValueError(f"unknown perturbation {name!r}; one of {PERTURBATIONS}")
        out.append(to_uint8(y))
    return np.stack(out)
