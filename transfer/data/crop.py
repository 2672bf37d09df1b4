"""The official training crop: TensorFlow's distorted bounding box, a flip, then TF 1's bilinear resize.

clovaai/assembled-cnn trains (ImageNet and fine-tuning alike: both use preprocessing_type imagenet*) with
preprocessing/imagenet_preprocessing.py: `_decode_crop_and_flip` (lines 57-97) samples a box with
`tf.image.sample_distorted_bounding_box` (lines 70-77: no boxes given, so the whole image is the object; min
coverage 0.1, aspect [0.75, 1.33], area [0.05, 1.0], 100 attempts), decodes only that window, flips it at random,
and `preprocess_image` (line 280) then resizes it to the output size with `_resize_image` (lines 223-225:
`tf.image.resize_images`, BILINEAR, align_corners=False, i.e. TF 1's half_pixel_centers=False).

The sampler is TensorFlow's kernel (core/kernels/image/sample_distorted_bounding_box_op.cc) written again over
torch's generator, so the data loader's per-sample seeding holds: each attempt draws an aspect ratio uniformly,
then an integer *height* uniformly between the heights of the least and the largest allowed area (so the area is
not uniform, as it is in torchvision's RandomResizedCrop), rounds the width, nudges the box by one row where
rounding broke the area bounds, and rejects it unless it covers `min_object_covered` of the image; offsets are
uniform over [0, H - h) (the kernel never places a box flush with the bottom or right edge unless it spans the
image). After `max_attempts` failures the whole image is the crop. The arithmetic is done in float32 as the
kernel does it, so that boxes on the bounds are accepted or rejected alike. The numbers are torch's, not the
kernel's Philox stream: the boxes are TF's in distribution (tests/test_crop.py), not one by one.

TF 1's bilinear resize maps output pixel i to input coordinate i * in / out ("asymmetric", as ONNX calls it),
not PyTorch's and TF 2's half-pixel (i + 0.5) * in / out - 0.5: the picture shifts by (in / out - 1) / 2 input
pixels towards the top left (0.6 px for a 500 px crop resized to 224), and a flip before the resize differs from
one after it, so the flip comes first here, as in the official code.

>>> torch.manual_seed(0) and None
>>> top, left, h, w = DistortedBoundingBoxCrop.get_params(375, 500)
>>> 0 <= top <= 375 - h and 0 <= left <= 500 - w and h * w >= 0.1 * 375 * 500
True
>>> bilinear_resize_asymmetric(torch.tensor([[[0, 10, 20, 30]]], dtype=torch.uint8), (1, 2)).tolist()
[[[0, 20]]]
"""

from __future__ import annotations

import math
import struct

import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms import v2 as T
from torchvision.transforms.v2 import functional as F

# preprocessing/imagenet_preprocessing.py:67 (use_random_crop=True), 74, 75, 76 of clovaai/assembled-cnn.
MIN_OBJECT_COVERED = 0.1
ASPECT_RANGE = (0.75, 1.33)  # 1.33, not 4/3
AREA_RANGE = (0.05, 1.0)
MAX_ATTEMPTS = 100

_FLOAT = struct.Struct("f")


def _f32(x: float) -> float:
    """x rounded to float32: a float32 operation is its exact (double) result rounded so, which for +, *, / and
    sqrt of float32 operands gives the float32 result exactly."""
    return _FLOAT.unpack(_FLOAT.pack(x))[0]


_EPS = _f32(1e-7)  # the kernel's kEps: a float, promoted to double where it is used


def _constants(height: int, width: int, min_object_covered: float, aspect_range, area_range) -> tuple:
    """What every attempt uses, in float32 as the kernel holds it: the least aspect and the aspect span, the least
    and largest box areas, the image area and the least coverage."""
    low = _f32(aspect_range[0])
    return (low, _f32(_f32(aspect_range[1]) - low), _f32(_f32(_f32(area_range[0]) * width) * height),
            _f32(_f32(_f32(area_range[1]) * width) * height), _f32(height * width), _f32(min_object_covered))


def _attempt(height: int, width: int, constants: tuple, uniforms) -> tuple | None:
    """One attempt of the kernel: GenerateRandomCrop, then SatisfiesOverlapConstraints with the whole image as the
    one object. `uniforms`: four numbers in [0, 1) (aspect, height, top, left). (top, left, h, w) or None.
    Python's round() is lrintf's rounding (to nearest, ties to even)."""
    u_aspect, u_height, u_top, u_left = uniforms
    low, span, min_area, max_area, image_area, min_covered = constants
    aspect = _f32(_f32(_f32(u_aspect) * span) + low)  # width / height
    h = round(_f32(math.sqrt(_f32(min_area / aspect))))
    max_h = round(_f32(math.sqrt(_f32(max_area / aspect))))
    if round(_f32(max_h * aspect)) > width:
        # The tallest box whose rounded width still fits (one row less where float error still lets it overflow).
        max_h = int((width + 0.5 - _EPS) / aspect)
        if round(_f32(max_h * aspect)) > width:
            max_h -= 1
    max_h = min(max_h, height)
    h = min(h, max_h)
    if h < max_h:
        h += min(int(u_height * (max_h - h + 1)), max_h - h)  # Uniform(max_h - h + 1)
    w = round(_f32(h * aspect))
    area = _f32(w * h)
    if area < min_area:  # rounding left the box just too small: one row taller
        h += 1
        w = round(_f32(h * aspect))
        area = _f32(w * h)
    if area > max_area:  # or just too large: one row shorter
        h -= 1
        w = round(_f32(h * aspect))
        area = _f32(w * h)
    if area < min_area or area > max_area or not (0 < w <= width and 0 < h <= height):
        return None
    # The box lies inside the image, so its coverage of the image is its share of it.
    if area < 1 or _f32(area / image_area) < min_covered:
        return None
    top = min(int(u_top * (height - h)), height - h - 1) if h < height else 0  # Uniform(height - h)
    left = min(int(u_left * (width - w)), width - w - 1) if w < width else 0
    return top, left, h, w


class DistortedBoundingBoxCrop(torch.nn.Module):
    """The official training crop's box: tf.image.sample_distorted_bounding_box with no boxes given
    (use_image_if_no_bounding_boxes), the whole image being the object. Crops a (..., H, W) tensor or PIL image.
    """

    def __init__(self, min_object_covered: float = MIN_OBJECT_COVERED,
                 aspect_range: tuple[float, float] = ASPECT_RANGE, area_range: tuple[float, float] = AREA_RANGE,
                 max_attempts: int = MAX_ATTEMPTS):
        super().__init__()
        self.min_object_covered = float(min_object_covered)
        self.aspect_range = (float(aspect_range[0]), float(aspect_range[1]))
        self.area_range = (float(area_range[0]), float(area_range[1]))
        self.max_attempts = int(max_attempts)

    @staticmethod
    def get_params(height: int, width: int, min_object_covered: float = MIN_OBJECT_COVERED,
                   aspect_range: tuple[float, float] = ASPECT_RANGE, area_range: tuple[float, float] = AREA_RANGE,
                   max_attempts: int = MAX_ATTEMPTS) -> tuple[int, int, int, int]:
        """(top, left, h, w) of a box in a height x width image, drawn from torch's default generator."""
        # Every attempt's uniforms in one draw: a draw per attempt took most of the time.
        draws = torch.rand(max_attempts, 4, dtype=torch.float64).numpy()
        constants = _constants(height, width, min_object_covered, aspect_range, area_range)
        for uniforms in draws:
            box = _attempt(height, width, constants, uniforms.tolist())
            if box is not None:
                return box
        return 0, 0, height, width

    def forward(self, image):
        height, width = F.get_size(image)
        top, left, h, w = self.get_params(height, width, self.min_object_covered, self.aspect_range,
                                          self.area_range, self.max_attempts)
        return F.crop(image, top, left, h, w)

    def extra_repr(self) -> str:
        return (f"min_object_covered={self.min_object_covered}, aspect_range={self.aspect_range}, "
                f"area_range={self.area_range}, max_attempts={self.max_attempts}")


def _source_coordinates(n_in: int, n_out: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For each output index i: the input indices below and above i * n_in / n_out and the weight of the upper
    one, in float32 as TF's resize_bilinear computes them (LegacyScaler, clamped to the last pixel)."""
    position = torch.arange(n_out, dtype=torch.float32) * torch.tensor(n_in / n_out, dtype=torch.float32)
    lower = position.floor()
    upper = position.ceil().clamp(max=n_in - 1)
    return lower.long(), upper.long(), position - lower


def bilinear_resize_asymmetric(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """TF 1's tf.image.resize_images(BILINEAR, align_corners=False) of a uint8 (..., H, W) tensor, without
    antialiasing, rounded back to uint8: output pixel (i, j) interpolates the input at (i * H / h, j * W / w).
    Rows first, then columns (TF interpolates along rows first; the two orders differ in float rounding only)."""
    if tuple(image.shape[-2:]) == tuple(size):
        return image  # resize_images skips the resize then (skip_resize_if_same); the mapping is the identity
    top, bottom, wy = _source_coordinates(image.shape[-2], size[0])
    left, right, wx = _source_coordinates(image.shape[-1], size[1])
    x = image.contiguous()  # a crop of PILToTensor's output is a strided view; selecting from it was 10x slower
    x = torch.lerp(x.index_select(-2, top).to(torch.float32), x.index_select(-2, bottom).to(torch.float32),
                   wy.unsqueeze(-1))
    shape = (*x.shape[:-1], size[1])
    # gather, not x[..., left]: advanced indexing along the last dimension took 5 ms at 224 px
    x = torch.lerp(x.gather(-1, left.expand(shape)), x.gather(-1, right.expand(shape)), wx)
    return x.round_().clamp_(0, 255).to(torch.uint8)


class AsymmetricBilinearResize(torch.nn.Module):
    """bilinear_resize_asymmetric to a fixed (height, width)."""

    def __init__(self, size: int | tuple[int, int]):
        super().__init__()
        self.size = (size, size) if isinstance(size, int) else tuple(size)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return bilinear_resize_asymmetric(image, self.size)

    def extra_repr(self) -> str:
        return f"size={self.size}"


def distorted_bounding_box_crop(size: int, *, flip: bool, min_object_covered: float = MIN_OBJECT_COVERED,
                                aspect_range: tuple[float, float] = ASPECT_RANGE,
                                area_range: tuple[float, float] = AREA_RANGE,
                                interpolation: InterpolationMode = InterpolationMode.BILINEAR) -> T.Compose:
    """The official training crop of a uint8 tensor: box, optional flip, resize to size x size without
    antialiasing. Bilinear is TF 1's asymmetric resize; another interpolation is torchvision's (half-pixel)."""
    steps = [DistortedBoundingBoxCrop(min_object_covered, aspect_range, area_range)]
    if flip:
        steps.append(T.RandomHorizontalFlip())  # before the resize, as the official code flips the crop
    if interpolation == InterpolationMode.BILINEAR:
        steps.append(AsymmetricBilinearResize(size))
    else:
        steps.append(T.Resize((size, size), interpolation=interpolation, antialias=False))
    return T.Compose(steps)
