"""AutoAugment as the paper's official code applies it, on uint8 (3, H, W) tensors.

clovaai/assembled-cnn trains with the TensorFlow ports of the AutoAugment operations in its
preprocessing/autoaugment.py (from tensorflow/tpu's EfficientNet code): the ImageNet policy for pretraining
(`--autoaugment_type=imagenet`, scripts/train_assemble_from_scratch.sh) and the 95 sub-policies the AutoAugment
authors found on CIFAR-10 for fine-tuning (`good`, scripts/finetuning_assemble_on_food101.sh). Those operations
are not torchvision's (data/transforms.py keeps torchvision's policies as `imagenet` and `cifar`):

- a level L of 0-10 maps to an argument by the official `level_to_arg` (autoaugment.py:742-764): Posterize keeps
  int(L/10*4) bits, Solarize's threshold is int(L/10*256), Color/Contrast/Brightness/Sharpness blend by
  0.1 + 0.18*L with no sign, Rotate 3*L degrees, Shear 0.03*L, Translate 25*L pixels (translate_const 250,
  whatever the image size: from level 9 on a 224-px image is all fill), Cutout a square of side 2*int(10*L);
- Contrast blends toward a constant grey of (pixel count / 256), not the mean grey level: the official `mean`
  sums the histogram's counts (autoaugment.py:442-443), so at 224x224 it is 196 whatever the image;
- TensorFlow clamps uint8 shifts to 7 bits, so Posterize at levels 0-2 (0 bits) keeps 1; Solarize's level-10
  threshold 256 becomes 0 as a uint8, so every pixel is inverted;
- pixels that rotate, shear and translate leave empty, and Cutout's square, are grey 128 (autoaugment.py:836);
  sampling is nearest-neighbour (tf.contrib.image's default) with coordinates rounded half away from zero;
- blends truncate to uint8 (TensorFlow's float-to-uint8 cast), as do grayscale and the sharpness filter.

Every operation is checked against the official code's own outputs on the same images and levels
(tests/test_autoaugment.py, fixtures by tools/official_autoaugment_fixtures.py). The randomness (which
sub-policy, whether each operation applies, each sign, Cutout's centre) comes from torch's default generator, so
the loader's per-sample seeding (data/loader.py) makes every image's augmentation reproducible.

>>> image = torch.full((3, 8, 8), 200, dtype=torch.uint8)
>>> apply_operation(image, "Posterize", 3)[0, 0, 0].item()  # int(0.3 * 4) = 1 bit: 200 -> 128
128
>>> len(POLICIES["official_imagenet"]), len(POLICIES["official_good"])
(25, 95)
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

MAX_LEVEL = 10.0  # autoaugment.py:28
FILL = 128  # replace_value, autoaugment.py:836
TRANSLATE_CONST = 250  # the HParams of distort_image_with_autoaugment, autoaugment.py:899-901
CUTOUT_CONST = 100


# --- the operations: each takes the image and the argument the official function takes -----------------------

def blend(image1: torch.Tensor, image2: torch.Tensor, factor: float) -> torch.Tensor:
    """image1 + factor * (image2 - image1) in float32, truncated to uint8 (clipped first when extrapolating)."""
    if factor == 0.0:
        return image1
    if factor == 1.0:
        return image2
    a = image1.to(torch.float32)
    scaled = torch.tensor(factor, dtype=torch.float32) * (image2.to(torch.float32) - a)
    out = a + scaled  # two float32 operations, as the official's two TensorFlow ops
    if not 0.0 < factor < 1.0:
        out = out.clamp(0.0, 255.0)
    return out.to(torch.uint8)


def grayscale(image: torch.Tensor) -> torch.Tensor:
    """tf.image.rgb_to_grayscale on uint8: to [0, 1] in float32, weights (0.2989, 0.5870, 0.1140), back by
    truncating x * 255.5; (1, H, W)."""
    x = image.to(torch.float32) * torch.tensor(1 / 255, dtype=torch.float32)
    w = torch.tensor([0.2989, 0.5870, 0.1140], dtype=torch.float32)
    grey = x[0] * w[0] + x[1] * w[1] + x[2] * w[2]
    return (grey * torch.tensor(255.5, dtype=torch.float32)).to(torch.uint8)[None]


def auto_contrast(image: torch.Tensor) -> torch.Tensor:
    """Each channel stretched to 0-255 from its own min and max (unchanged where they are equal)."""
    x = image.to(torch.float32)
    lo = x.amin(dim=(1, 2), keepdim=True)
    hi = x.amax(dim=(1, 2), keepdim=True)
    scale = 255.0 / (hi - lo).clamp_min(1.0)  # hi - lo >= 1 wherever it is used
    offset = -lo * scale
    out = (x * scale + offset).clamp(0.0, 255.0).to(torch.uint8)
    return torch.where(hi > lo, out, image)


def equalize(image: torch.Tensor) -> torch.Tensor:
    """PIL's histogram equalisation per channel, in integers (the official's TF port of it)."""
    out = []
    for channel in image:
        values = channel.reshape(-1).long()
        histo = torch.bincount(values, minlength=256)
        step = (histo.sum() - histo[values.max()]) // 255  # all pixels but those of the last non-empty bin
        if step == 0:
            out.append(channel)
            continue
        lut = (torch.cumsum(histo, 0) + step // 2) // step
        lut = torch.cat([lut.new_zeros(1), lut[:-1]]).clamp(0, 255)
        out.append(lut[values].reshape(channel.shape).to(torch.uint8))
    return torch.stack(out)


def invert(image: torch.Tensor) -> torch.Tensor:
    return 255 - image


def posterize(image: torch.Tensor, bits: int) -> torch.Tensor:
    # TensorFlow's uint8 shifts clamp the count to 7, so 0 bits keeps the top one.
    shift = min(8 - bits, 7)
    return (image >> shift) << shift


def solarize(image: torch.Tensor, threshold: int) -> torch.Tensor:
    # The threshold becomes a uint8 in the official comparison: 256 (level 10) wraps to 0.
    return torch.where(image < threshold % 256, image, 255 - image)


def solarize_add(image: torch.Tensor, addition: int, threshold: int = 128) -> torch.Tensor:
    added = (image.to(torch.int64) + addition).clamp(0, 255).to(torch.uint8)
    return torch.where(image < threshold, added, image)


def color(image: torch.Tensor, factor: float) -> torch.Tensor:
    return blend(grayscale(image).expand_as(image), image, factor)


def contrast(image: torch.Tensor, factor: float) -> torch.Tensor:
    # The official "mean" is the sum of the grey histogram's counts over 256 (autoaugment.py:442-443): the
    # number of pixels / 256, whatever their values.
    mean = torch.tensor(image.shape[1] * image.shape[2], dtype=torch.float32) / 256.0
    return blend(torch.full_like(image, int(mean.clamp(0.0, 255.0))), image, factor)


def brightness(image: torch.Tensor, factor: float) -> torch.Tensor:
    return blend(torch.zeros_like(image), image, factor)


def sharpness(image: torch.Tensor, factor: float) -> torch.Tensor:
    """Blend with PIL's SMOOTH filter ([1 1 1; 1 5 1; 1 1 1] / 13) inside a one-pixel border of the original."""
    kernel = torch.tensor([[1, 1, 1], [1, 5, 1], [1, 1, 1]], dtype=torch.float32) / 13.0
    smooth = torch.nn.functional.conv2d(image.to(torch.float32)[None], kernel.expand(3, 1, 3, 3), groups=3)[0]
    degenerate = image.clone()
    degenerate[:, 1:-1, 1:-1] = smooth.clamp(0.0, 255.0).to(torch.uint8)
    return blend(degenerate, image, factor)


def _round_half_away(v: torch.Tensor) -> torch.Tensor:
    """std::round in float32 (torch.round rounds ties to even): for a >= 0, a - floor(a) is exact, so a tie is
    seen as one."""
    a = v.abs()
    low = torch.floor(a)
    return ((low + (a - low >= 0.5)) * torch.sign(v)).long()


def _warp(image: torch.Tensor, transform: Callable) -> torch.Tensor:
    """Nearest-neighbour resampling as TensorFlow's ImageProjectiveTransform: output pixel (x, y) reads input
    transform(x, y) (float32), rounded half away from zero; outside the image, FILL."""
    _, h, w = image.shape
    y, x = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    src_x, src_y = (_round_half_away(v) for v in transform(x, y))
    inside = (src_x >= 0) & (src_x < w) & (src_y >= 0) & (src_y < h)
    index = (src_y.clamp(0, h - 1) * w + src_x.clamp(0, w - 1)).reshape(-1)
    out = image.reshape(3, -1)[:, index].reshape(image.shape)
    return torch.where(inside, out, torch.tensor(FILL, dtype=torch.uint8))


def _f32(v: float) -> torch.Tensor:
    return torch.tensor(v, dtype=torch.float32)


def rotate(image: torch.Tensor, degrees: float) -> torch.Tensor:
    """tf.contrib.image.rotate about the centre, by `degrees` (float32 throughout, as the official graph)."""
    radians = _f32(degrees) * _f32(math.pi / 180.0)
    cos, sin = torch.cos(radians), torch.sin(radians)
    h1, w1 = _f32(image.shape[1]) - 1, _f32(image.shape[2]) - 1
    # tf.contrib.image's centre offsets (w1 - (cos w1 - sin h1)) / 2 and (h1 - (sin w1 + cos h1)) / 2, summed in
    # the order TensorFlow's graph optimiser rewrites them to: in the written order a 224-px rotation picks
    # another neighbour at one pixel in 6 of 44 (level, sign) cases.
    x_offset = ((w1 + sin * h1) - cos * w1) / 2.0
    y_offset = ((h1 - cos * h1) - sin * w1) / 2.0
    return _warp(image, lambda x, y: (cos * x + -sin * y + x_offset, sin * x + cos * y + y_offset))


def shear_x(image: torch.Tensor, level: float) -> torch.Tensor:
    s = _f32(level)
    return _warp(image, lambda x, y: (x + s * y, y))


def shear_y(image: torch.Tensor, level: float) -> torch.Tensor:
    s = _f32(level)
    return _warp(image, lambda x, y: (x, s * x + y))


def translate_x(image: torch.Tensor, pixels: float) -> torch.Tensor:
    p = _f32(pixels)
    return _warp(image, lambda x, y: (x + p, y))


def translate_y(image: torch.Tensor, pixels: float) -> torch.Tensor:
    p = _f32(pixels)
    return _warp(image, lambda x, y: (x, y + p))


def cutout(image: torch.Tensor, pad_size: int, centre: tuple[int, int]) -> torch.Tensor:
    """Rows and columns within pad_size of `centre` (row, column; the far side exclusive), clipped to the
    image, set to FILL."""
    out = image.clone()
    r, c = centre
    out[:, max(0, r - pad_size):r + pad_size, max(0, c - pad_size):c + pad_size] = FILL
    return out


# --- levels: the official level_to_arg (autoaugment.py:709-764) -----------------------------------------------

def _enhance(level: float) -> float:
    return (level / MAX_LEVEL) * 1.8 + 0.1


def _scaled(scale: float) -> Callable[[float], float]:
    return lambda level: (level / MAX_LEVEL) * scale


def _truncated(scale: float) -> Callable[[float], int]:
    return lambda level: int((level / MAX_LEVEL) * scale)


# name -> (operation, level -> argument or None for none, whether the official negates it with probability 1/2)
OPERATIONS: dict[str, tuple[Callable, Callable | None, bool]] = {
    "AutoContrast": (auto_contrast, None, False),
    "Equalize": (equalize, None, False),
    "Invert": (invert, None, False),
    "Rotate": (rotate, _scaled(30.0), True),
    "Posterize": (posterize, _truncated(4), False),
    "Solarize": (solarize, _truncated(256), False),
    "SolarizeAdd": (solarize_add, _truncated(110), False),
    "Color": (color, _enhance, False),
    "Contrast": (contrast, _enhance, False),
    "Brightness": (brightness, _enhance, False),
    "Sharpness": (sharpness, _enhance, False),
    "ShearX": (shear_x, _scaled(0.3), True),
    "ShearY": (shear_y, _scaled(0.3), True),
    "TranslateX": (translate_x, _scaled(TRANSLATE_CONST), True),
    "TranslateY": (translate_y, _scaled(TRANSLATE_CONST), True),
    "Cutout": (cutout, _truncated(CUTOUT_CONST), False),
}


def apply_operation(image: torch.Tensor, name: str, level: float, *, negate: bool = False,
                    centre: tuple[int, int] | None = None) -> torch.Tensor:
    """The official operation `name` at magnitude `level` (0-10): `negate` flips a signed one's argument (the
    official draws it), `centre` is Cutout's (row, column) (the official draws it uniformly)."""
    function, to_argument, signed = OPERATIONS[name]
    if to_argument is None:
        return function(image)
    argument = to_argument(level)
    if signed and negate:
        argument = -argument
    if name == "Cutout":
        return function(image, argument, centre)
    return function(image, argument)


# --- the two policies the paper trained with ------------------------------------------------------------------

# imagenet_policies(), autoaugment.py:70-106: five groups of five; the last group repeats five earlier entries.
_IMAGENET = [
    [("Posterize", 0.4, 8), ("Rotate", 0.6, 9)], [("Solarize", 0.6, 5), ("AutoContrast", 0.6, 5)],
    [("Equalize", 0.8, 8), ("Equalize", 0.6, 3)], [("Posterize", 0.6, 7), ("Posterize", 0.6, 6)],
    [("Equalize", 0.4, 7), ("Solarize", 0.2, 4)],
    [("Equalize", 0.4, 4), ("Rotate", 0.8, 8)], [("Solarize", 0.6, 3), ("Equalize", 0.6, 7)],
    [("Posterize", 0.8, 5), ("Equalize", 1.0, 2)], [("Rotate", 0.2, 3), ("Solarize", 0.6, 8)],
    [("Equalize", 0.6, 8), ("Posterize", 0.4, 6)],
    [("Rotate", 0.8, 8), ("Color", 0.4, 0)], [("Rotate", 0.4, 9), ("Equalize", 0.6, 2)],
    [("Equalize", 0.0, 7), ("Equalize", 0.8, 8)], [("Invert", 0.6, 4), ("Equalize", 1.0, 8)],
    [("Color", 0.6, 4), ("Contrast", 1.0, 8)],
    [("Rotate", 0.8, 8), ("Color", 1.0, 2)], [("Color", 0.8, 8), ("Solarize", 0.8, 7)],
    [("Sharpness", 0.4, 7), ("Invert", 0.6, 8)], [("ShearX", 0.6, 5), ("Equalize", 1.0, 9)],
    [("Color", 0.4, 0), ("Equalize", 0.6, 3)],
    [("Equalize", 0.4, 7), ("Solarize", 0.2, 4)], [("Solarize", 0.6, 5), ("AutoContrast", 0.6, 5)],
    [("Invert", 0.6, 4), ("Equalize", 1.0, 8)], [("Color", 0.6, 4), ("Contrast", 1.0, 8)],
    [("Equalize", 0.8, 8), ("Equalize", 0.6, 3)],
]

# good_policies(), autoaugment.py:148-267: the AutoAugment research code's CIFAR-10 policies (exp0_0 ... exp2_7).
_GOOD = [
    # exp0_0 - exp0_3
    [("Invert", 0.1, 7), ("Contrast", 0.2, 6)], [("Rotate", 0.7, 2), ("TranslateX", 0.3, 9)],
    [("Sharpness", 0.8, 1), ("Sharpness", 0.9, 3)], [("ShearY", 0.5, 8), ("TranslateY", 0.7, 9)],
    [("AutoContrast", 0.5, 8), ("Equalize", 0.9, 2)],
    [("Solarize", 0.4, 5), ("AutoContrast", 0.9, 3)], [("TranslateY", 0.9, 9), ("TranslateY", 0.7, 9)],
    [("AutoContrast", 0.9, 2), ("Solarize", 0.8, 3)], [("Equalize", 0.8, 8), ("Invert", 0.1, 3)],
    [("TranslateY", 0.7, 9), ("AutoContrast", 0.9, 1)],
    [("Solarize", 0.4, 5), ("AutoContrast", 0.0, 2)], [("TranslateY", 0.7, 9), ("TranslateY", 0.7, 9)],
    [("AutoContrast", 0.9, 0), ("Solarize", 0.4, 3)], [("Equalize", 0.7, 5), ("Invert", 0.1, 3)],
    [("TranslateY", 0.7, 9), ("TranslateY", 0.7, 9)],
    [("Solarize", 0.4, 5), ("AutoContrast", 0.9, 1)], [("TranslateY", 0.8, 9), ("TranslateY", 0.9, 9)],
    [("AutoContrast", 0.8, 0), ("TranslateY", 0.7, 9)], [("TranslateY", 0.2, 7), ("Color", 0.9, 6)],
    [("Equalize", 0.7, 6), ("Color", 0.4, 9)],
    # exp1_0 - exp1_6
    [("ShearY", 0.2, 7), ("Posterize", 0.3, 7)], [("Color", 0.4, 3), ("Brightness", 0.6, 7)],
    [("Sharpness", 0.3, 9), ("Brightness", 0.7, 9)], [("Equalize", 0.6, 5), ("Equalize", 0.5, 1)],
    [("Contrast", 0.6, 7), ("Sharpness", 0.6, 5)],
    [("Brightness", 0.3, 7), ("AutoContrast", 0.5, 8)], [("AutoContrast", 0.9, 4), ("AutoContrast", 0.5, 6)],
    [("Solarize", 0.3, 5), ("Equalize", 0.6, 5)], [("TranslateY", 0.2, 4), ("Sharpness", 0.3, 3)],
    [("Brightness", 0.0, 8), ("Color", 0.8, 8)],
    [("Solarize", 0.2, 6), ("Color", 0.8, 6)], [("Solarize", 0.2, 6), ("AutoContrast", 0.8, 1)],
    [("Solarize", 0.4, 1), ("Equalize", 0.6, 5)], [("Brightness", 0.0, 0), ("Solarize", 0.5, 2)],
    [("AutoContrast", 0.9, 5), ("Brightness", 0.5, 3)],
    [("Contrast", 0.7, 5), ("Brightness", 0.0, 2)], [("Solarize", 0.2, 8), ("Solarize", 0.1, 5)],
    [("Contrast", 0.5, 1), ("TranslateY", 0.2, 9)], [("AutoContrast", 0.6, 5), ("TranslateY", 0.0, 9)],
    [("AutoContrast", 0.9, 4), ("Equalize", 0.8, 4)],
    [("Brightness", 0.0, 7), ("Equalize", 0.4, 7)], [("Solarize", 0.2, 5), ("Equalize", 0.7, 5)],
    [("Equalize", 0.6, 8), ("Color", 0.6, 2)], [("Color", 0.3, 7), ("Color", 0.2, 4)],
    [("AutoContrast", 0.5, 2), ("Solarize", 0.7, 2)],
    [("AutoContrast", 0.2, 0), ("Equalize", 0.1, 0)], [("ShearY", 0.6, 5), ("Equalize", 0.6, 5)],
    [("Brightness", 0.9, 3), ("AutoContrast", 0.4, 1)], [("Equalize", 0.8, 8), ("Equalize", 0.7, 7)],
    [("Equalize", 0.7, 7), ("Solarize", 0.5, 0)],
    [("Equalize", 0.8, 4), ("TranslateY", 0.8, 9)], [("TranslateY", 0.8, 9), ("TranslateY", 0.6, 9)],
    [("TranslateY", 0.9, 0), ("TranslateY", 0.5, 9)], [("AutoContrast", 0.5, 3), ("Solarize", 0.3, 4)],
    [("Solarize", 0.5, 3), ("Equalize", 0.4, 4)],
    # exp2_0 - exp2_7
    [("Color", 0.7, 7), ("TranslateX", 0.5, 8)], [("Equalize", 0.3, 7), ("AutoContrast", 0.4, 8)],
    [("TranslateY", 0.4, 3), ("Sharpness", 0.2, 6)], [("Brightness", 0.9, 6), ("Color", 0.2, 8)],
    [("Solarize", 0.5, 2), ("Invert", 0.0, 3)],
    [("AutoContrast", 0.1, 5), ("Brightness", 0.0, 0)], [("Cutout", 0.2, 4), ("Equalize", 0.1, 1)],
    [("Equalize", 0.7, 7), ("AutoContrast", 0.6, 4)], [("Color", 0.1, 8), ("ShearY", 0.2, 3)],
    [("ShearY", 0.4, 2), ("Rotate", 0.7, 0)],
    [("ShearY", 0.1, 3), ("AutoContrast", 0.9, 5)], [("TranslateY", 0.3, 6), ("Cutout", 0.3, 3)],
    [("Equalize", 0.5, 0), ("Solarize", 0.6, 6)], [("AutoContrast", 0.3, 5), ("Rotate", 0.2, 7)],
    [("Equalize", 0.8, 2), ("Invert", 0.4, 0)],
    [("Equalize", 0.9, 5), ("Color", 0.7, 0)], [("Equalize", 0.1, 1), ("ShearY", 0.1, 3)],
    [("AutoContrast", 0.7, 3), ("Equalize", 0.7, 0)], [("Brightness", 0.5, 1), ("Contrast", 0.1, 7)],
    [("Contrast", 0.1, 4), ("Solarize", 0.6, 5)],
    [("Solarize", 0.2, 3), ("ShearX", 0.0, 0)], [("TranslateX", 0.3, 0), ("TranslateX", 0.6, 0)],
    [("Equalize", 0.5, 9), ("TranslateY", 0.6, 7)], [("ShearX", 0.1, 0), ("Sharpness", 0.5, 1)],
    [("Equalize", 0.8, 6), ("Invert", 0.3, 6)],
    [("AutoContrast", 0.3, 9), ("Cutout", 0.5, 3)], [("ShearX", 0.4, 4), ("AutoContrast", 0.9, 2)],
    [("ShearX", 0.0, 3), ("Posterize", 0.0, 3)], [("Solarize", 0.4, 3), ("Color", 0.2, 4)],
    [("Equalize", 0.1, 4), ("Equalize", 0.7, 6)],
    [("Equalize", 0.3, 8), ("AutoContrast", 0.4, 3)], [("Solarize", 0.6, 4), ("AutoContrast", 0.7, 6)],
    [("AutoContrast", 0.2, 9), ("Brightness", 0.4, 8)], [("Equalize", 0.1, 0), ("Equalize", 0.0, 6)],
    [("Equalize", 0.8, 4), ("Equalize", 0.0, 4)],
    [("Equalize", 0.5, 5), ("AutoContrast", 0.1, 2)], [("Solarize", 0.5, 5), ("AutoContrast", 0.9, 5)],
    [("AutoContrast", 0.6, 1), ("AutoContrast", 0.7, 8)], [("Equalize", 0.2, 0), ("AutoContrast", 0.1, 2)],
    [("Equalize", 0.6, 9), ("Equalize", 0.4, 4)],
]

POLICIES: dict[str, list[list[tuple[str, float, int]]]] = {"official_imagenet": _IMAGENET, "official_good": _GOOD}


class OfficialAutoAugment:
    """A policy applied to one uint8 (3, H, W) image as distort_image_with_autoaugment does: one sub-policy
    uniformly at random, then each of its operations with its probability, a signed operation's argument negated
    with probability 1/2 and Cutout centred uniformly on a pixel. Draws from torch's default generator (or
    `generator`), so a seeded generator makes it reproducible.

    >>> aa = OfficialAutoAugment("official_good")
    >>> image = torch.arange(3 * 16 * 16, dtype=torch.int32).reshape(3, 16, 16).remainder(256).to(torch.uint8)
    >>> a = aa(image, torch.Generator().manual_seed(7))
    >>> b = aa(image, torch.Generator().manual_seed(7))
    >>> bool((a == b).all()), a.shape, a.dtype
    (True, torch.Size([3, 16, 16]), torch.uint8)
    """

    def __init__(self, policy: str):
        self.policy = policy
        self.subpolicies = POLICIES[policy]

    def __call__(self, image: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        index = int(torch.randint(len(self.subpolicies), (), generator=generator))
        for name, probability, level in self.subpolicies[index]:
            gate, sign = torch.rand(2, generator=generator)
            # floor(u + p) in float32 (autoaugment.py:798-799); the official keeps the sign when
            # floor(u + 0.5) is 1 (autoaugment.py:704-705)
            if torch.floor(gate + probability) < 1:
                continue
            centre = None
            if name == "Cutout":
                centre = (int(torch.randint(image.shape[1], (), generator=generator)),
                          int(torch.randint(image.shape[2], (), generator=generator)))
            image = apply_operation(image, name, level, negate=bool(torch.floor(sign + 0.5) < 1), centre=centre)
        return image

    def __repr__(self) -> str:
        return f"OfficialAutoAugment({self.policy!r}, {len(self.subpolicies)} sub-policies)"
