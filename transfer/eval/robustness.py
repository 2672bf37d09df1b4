"""mCE and mFR arithmetic (pure functions) and the choice of corruptions and severities.

mCE (Hendrycks & Dietterich 2019; the paper's Tables 7-8): a corruption's error E_c is pooled over its
severities; CE_c = E_c / E_c(AlexNet); mCE is the mean of CE_c over the corruptions. On data other than
ImageNet there is no AlexNet baseline, so the unnormalised mean of E_c is what compares models.

mFR (ImageNet-P): the flip probability of a perturbation sequence is the share of frames whose top-1
prediction differs from the previous frame's, or from the first (clean) frame's for noise, whose frames are
independent draws rather than a gradual change; averaged over images, then over perturbations.
"""

from __future__ import annotations

import numpy as np

from ..errors import ConfigError, suggest
from .corruptions import CORRUPTIONS, EXTRA, IMAGENET_C, SEVERITIES

# AlexNet's top-1 error on each corruption, pooled over severities 1-5: the mCE denominators
# (shared/reference/assembled-cnn.md, "mCE"; the first 15 are ImageNet-C's published baseline).
ALEXNET_ERRORS = {
    "gaussian_noise": 0.8864, "shot_noise": 0.8945, "impulse_noise": 0.9226, "defocus_blur": 0.8199,
    "glass_blur": 0.8263, "motion_blur": 0.7860, "zoom_blur": 0.7984, "snow": 0.8668, "frost": 0.8266,
    "fog": 0.8193, "brightness": 0.5646, "contrast": 0.8532, "elastic_transform": 0.6461, "pixelate": 0.7178,
    "jpeg_compression": 0.6065, "speckle_noise": 0.8454, "gaussian_blur": 0.7871, "spatter": 0.7175,
    "saturate": 0.6583,
}
IMAGENET_CLASSES = 1000


# The set the official mCE averages: every key of its ALEXNET_CE, ImageNet-C's 15 and the paper's 4
# (clovaai/assembled-cnn mce/eval_robustness.py:251, 297-299), on ImageNet and on Food-101 (Tables 7-8) alike.
# It is the default everywhere, so that one command gives numbers comparable across datasets; 15 stays selectable.
PAPER_CORRUPTIONS = IMAGENET_C + EXTRA
DEFAULT_CORRUPTIONS = "19"
CORRUPTION_SETS = {"paper-19": PAPER_CORRUPTIONS, "imagenet-c-15": IMAGENET_C}


def corruption_set(names: tuple[str, ...]) -> str:
    """The name of a selection: 'paper-19' (the official mCE's 19), 'imagenet-c-15', or 'custom'.

    >>> corruption_set(select_corruptions("19")), corruption_set(select_corruptions("15"))
    ('paper-19', 'imagenet-c-15')
    >>> corruption_set(("fog", "snow"))
    'custom'
    """
    return next((label for label, chosen in CORRUPTION_SETS.items() if tuple(names) == chosen), "custom")


def select_corruptions(spec: str) -> tuple[str, ...]:
    """'19' (the paper's: ImageNet-C's 15 and its 4 extra; the default), '15' (ImageNet-C) or comma-separated
    corruption names."""
    spec = spec.strip()
    if spec == "15":
        return IMAGENET_C
    if spec == "19":
        return PAPER_CORRUPTIONS
    names = tuple(n.strip() for n in spec.split(",") if n.strip())
    for n in names:
        if n not in CORRUPTIONS:
            raise ConfigError(f"--corruptions {spec}: {n!r} is not 15, 19 or a corruption name{suggest(n, CORRUPTIONS)}"
                              f"; names: {', '.join(CORRUPTIONS)}")
    if not names:
        raise ConfigError("--corruptions is empty; give 15, 19 or corruption names separated by commas")
    return tuple(dict.fromkeys(names))


def select_severities(spec: str) -> tuple[int, ...]:
    """'1,2,3,4,5' or a subset such as '3' or '1,5'."""
    try:
        levels = tuple(sorted({int(s) for s in spec.split(",") if s.strip()}))
    except ValueError:
        levels = ()
    if not levels or any(s not in SEVERITIES for s in levels):
        raise ConfigError(f"--severities {spec}: give severities 1-5 separated by commas, e.g. 1,2,3,4,5")
    return levels


def pooled_error(wrong: dict[int, int], counts: dict[int, int]) -> float:
    """Error over all images of all severities of one corruption (per-severity wrong and total counts).

    >>> pooled_error({1: 10, 5: 40}, {1: 100, 5: 100})
    0.25
    """
    total = sum(counts.values())
    return sum(wrong.values()) / total if total else float("nan")


def mean_corruption_error(errors: dict[str, float], baseline: dict[str, float] | None = None) -> float:
    """mCE: mean over corruptions of error / baseline error (mean of raw errors when baseline is None).

    >>> mean_corruption_error({"fog": 0.3, "snow": 0.4}, {"fog": 0.6, "snow": 0.8})   # both half AlexNet's
    0.5
    """
    if not errors:
        raise ValueError("no corruption errors to average")
    if baseline is None:
        return float(np.mean(list(errors.values())))
    return float(np.mean([e / baseline[name] for name, e in errors.items()]))


def is_imagenet(num_classes: int) -> bool:
    """The AlexNet baseline applies to ImageNet's 1000-class label set, which is how ImageNet data is told."""
    return num_classes == IMAGENET_CLASSES


def flip_probability(predictions: np.ndarray, noise: bool) -> float:
    """(images, frames) top-1 predictions -> ImageNet-P flip probability.

    noise: compare frames 2..n with frame 1 (the clean image); else each frame with the one before.

    >>> frames = [[3, 3, 5, 3]]                  # one image; its prediction changes at frame 3 and back
    >>> flip_probability(frames, noise=True), flip_probability(frames, noise=False)
    (0.3333333333333333, 0.6666666666666666)
    """
    p = np.asarray(predictions)
    if p.ndim != 2 or p.shape[1] < 2:
        raise ValueError(f"expected (images, frames >= 2) predictions, got shape {p.shape}")
    reference = p[:, :1] if noise else p[:, :-1]
    return float((p[:, 1:] != reference).mean())


def mean_flip_rate(flips: dict[str, float], baseline: dict[str, float] | None = None) -> float:
    """mFR: mean over perturbations of flip probability / baseline flip probability (raw mean without one)."""
    return mean_corruption_error(flips, baseline)
