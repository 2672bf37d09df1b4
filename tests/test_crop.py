"""The official training crop (transfer/data/crop.py) against what the authors' own preprocessing drew.

tests/fixtures/official/crop/ was made by tools/official_crop_samples.py, which runs clovaai/assembled-cnn's
imagenet_preprocessing.preprocess_image for training under TensorFlow 2.15 and records the boxes of
tf.image.sample_distorted_bounding_box (10,000 per image shape, with the very arguments the official code passes),
a few whole official crops (box, flip, resize) and the official resize alone. Our sampler draws from torch's
generator, so the boxes are compared as distributions (two-sample Kolmogorov-Smirnov tests), and the crop, flip
and resize pixel for pixel.
"""

import doctest
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.stats import ks_2samp
from torchvision.transforms import InterpolationMode
from torchvision.transforms import v2 as T
from torchvision.transforms.v2 import functional as F

from transfer.data import crop
from transfer.data.crop import DistortedBoundingBoxCrop, bilinear_resize_asymmetric, distorted_bounding_box_crop
from transfer.data.loader import TransformedDataset
from transfer.data.transforms import InputSpec
from transfer.recipe import AugmentSection, load_recipe

FIXTURE = Path(__file__).parent / "fixtures" / "official" / "crop"
RECIPES = Path(__file__).parent.parent / "recipes"
OURS = 6000  # boxes drawn here per shape: enough that torchvision's sampler fails by p < 1e-10
ALPHA = 0.001  # ours must not be rejected at this level: 12 comparisons (3 shapes x 4), about 1% for them all


@pytest.fixture(scope="module")
def meta():
    return json.loads((FIXTURE / "fixture.json").read_text())


@pytest.fixture(scope="module")
def official_boxes():
    with np.load(FIXTURE / "boxes.npz") as f:
        return {tuple(int(v) for v in k.split("_")[1].split("x")): f[k].astype(np.int64) for k in f.files}


@pytest.fixture(scope="module")
def pipeline():
    with np.load(FIXTURE / "pipeline.npz") as f:
        return {k: f[k] for k in f.files}


def ours(height, width, n=OURS, seed=0, **kwargs):
    torch.manual_seed(seed)
    return np.array([DistortedBoundingBoxCrop.get_params(height, width, **kwargs) for _ in range(n)], np.int64)


def torchvision_boxes(height, width, n=OURS, seed=0):
    """RandomResizedCrop with the same area range and torchvision's aspect range."""
    torch.manual_seed(seed)
    image = torch.empty(1, height, width)
    return np.array([T.RandomResizedCrop.get_params(image, [0.05, 1.0], [3 / 4, 4 / 3]) for _ in range(n)])


def area(boxes, height, width):
    return boxes[:, 2] * boxes[:, 3] / (height * width)


def aspect(boxes):
    return boxes[:, 3] / boxes[:, 2]


def offsets(boxes, axis, room):
    """Top (axis 0) or left offsets as fractions of the room the box leaves, where it leaves some."""
    free = room - boxes[:, axis + 2]
    return boxes[free > 0, axis] / free[free > 0]


def kernel_loop(height, width, u, min_object_covered=0.1, aspect_range=(0.75, 1.33), area_range=(0.05, 1.0)):
    """sample_distorted_bounding_box_op.cc read line by line, one attempt at a time in float32 scalars, taking
    each attempt's uniforms (aspect, height, top, left) from a row of u: the slow obvious version."""
    f = np.float32
    for a, uh, ut, ul in u:
        ratio = f(a) * (f(aspect_range[1]) - f(aspect_range[0])) + f(aspect_range[0])
        min_area, max_area = (f(r) * f(width) * f(height) for r in area_range)
        h = int(np.rint(np.sqrt(min_area / ratio)))
        max_h = int(np.rint(np.sqrt(max_area / ratio)))
        if int(np.rint(f(max_h) * ratio)) > width:
            max_h = int((width + 0.5 - float(f(1e-7))) / float(ratio))
            if int(np.rint(f(max_h) * ratio)) > width:
                max_h -= 1
        max_h = min(max_h, height)
        if h >= max_h:
            h = max_h
        if h < max_h:
            h += min(int(uh * (max_h - h + 1)), max_h - h)
        w = int(np.rint(f(h) * ratio))
        area = f(w * h)
        if area < min_area:
            h += 1
            w = int(np.rint(f(h) * ratio))
            area = f(w * h)
        if area > max_area:
            h -= 1
            w = int(np.rint(f(h) * ratio))
            area = f(w * h)
        if area < min_area or area > max_area or w > width or h > height or w <= 0 or h <= 0:
            continue
        top = min(int(ut * (height - h)), height - h - 1) if h < height else 0
        left = min(int(ul * (width - w)), width - w - 1) if w < width else 0
        if area >= 1 and area / f(height * width) >= f(min_object_covered):
            return top, left, h, w
    return 0, 0, height, width


def test_the_sampler_is_the_kernel_read_line_by_line():
    # ImageNet's shapes, thin ones where most attempts fail, tiny ones where rounding decides, other bounds.
    cases = [((375, 500), {}), ((500, 333), {}), ((17, 90), {}), ((3, 2), {}), ((1, 1), {}), ((7, 5), {}),
             ((256, 256), {"min_object_covered": 0.6}), ((64, 48), {"area_range": (0.3, 0.5)}),
             ((100, 101), {"aspect_range": (0.5, 2.0), "area_range": (0.9, 1.0)})]
    for (h, w), kwargs in cases:
        for seed in range(60 if h > 50 else 15):
            torch.manual_seed(seed)
            u = torch.rand(crop.MAX_ATTEMPTS, 4, dtype=torch.float64).numpy()
            torch.manual_seed(seed)
            assert DistortedBoundingBoxCrop.get_params(h, w, **kwargs) == kernel_loop(h, w, u, **kwargs), (h, w)


def test_the_module_examples_run():
    result = doctest.testmod(crop, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


def test_the_constants_are_the_arguments_the_official_code_passed(meta):
    args = meta["op_arguments"]
    assert args["min_object_covered"] == crop.MIN_OBJECT_COVERED
    assert list(crop.ASPECT_RANGE) == args["aspect_ratio_range"] and list(crop.AREA_RANGE) == args["area_range"]
    assert args["max_attempts"] == crop.MAX_ATTEMPTS and args["use_image_if_no_bounding_boxes"]
    assert args["bounding_boxes_shape"] == [0, 0, 4]  # no boxes: the whole image is the object


@pytest.mark.parametrize("shape", [(375, 500), (500, 333), (256, 256)])
def test_the_box_distribution_is_tensorflows_and_not_torchvisions(official_boxes, shape):
    h, w = shape
    tf, mine, tv = official_boxes[shape], ours(h, w), torchvision_boxes(h, w)
    assert ks_2samp(area(tf, h, w), area(mine, h, w)).pvalue > ALPHA
    assert ks_2samp(aspect(tf), aspect(mine)).pvalue > ALPHA
    # The offsets, as fractions of the room left: the kernel's Uniform(H - h) never reaches the last row.
    for axis, room in ((0, h), (1, w)):
        assert ks_2samp(offsets(tf, axis, room), offsets(mine, axis, room)).pvalue > ALPHA
    # The same test rejects torchvision's sampler (uniform area, crops under 10% of the image) decisively.
    assert ks_2samp(area(tf, h, w), area(tv, h, w)).pvalue < 1e-10
    assert (area(tv, h, w) < 0.1).mean() > 0.04 and (area(tf, h, w) < 0.1).mean() == 0
    if h != 375:  # on 375 x 500 log-uniform and TF's aspects happen to agree (no box hits the image's sides)
        assert ks_2samp(aspect(tf), aspect(tv)).pvalue < 1e-10


@pytest.mark.parametrize("shape", [(375, 500), (500, 333), (256, 256), (30, 40), (17, 90)])
def test_every_box_lies_inside_the_image_and_covers_the_minimum(shape):
    h, w = shape
    for covered in (0.1, 0.5):
        b = ours(h, w, n=300, min_object_covered=covered)
        assert (b[:, :2] >= 0).all() and (b[:, 2:] >= 1).all()
        assert (b[:, 0] + b[:, 2] <= h).all() and (b[:, 1] + b[:, 3] <= w).all()
        assert (area(b, h, w) >= covered - 1e-7).all()


def test_the_official_boxes_obey_the_same_rules(official_boxes):
    """What the test above asks of ours holds for TensorFlow's own boxes."""
    for (h, w), b in official_boxes.items():
        assert (b[:, 0] + b[:, 2] <= h).all() and (b[:, 1] + b[:, 3] <= w).all() and (b >= 0).all()
        assert (area(b, h, w) >= 0.1).all()


def test_when_no_attempt_can_succeed_the_crop_is_the_whole_image():
    # 4 x 400: a box within the aspect range is at most 4 x 5, a 1/80 of the image, under the least area 0.05.
    assert (ours(4, 400, n=50) == [0, 0, 4, 400]).all()
    # min_object_covered 1.0 (the official crop without use_random_crop, imagenet_preprocessing.py:69): only the
    # whole 375 x 500 image covers it all, and its aspect 4/3 is outside [0.75, 1.33].
    assert (ours(375, 500, n=50, min_object_covered=1.0) == [0, 0, 375, 500]).all()
    # ... while a 300 x 300 image is its own crop within every bound: found by an attempt, not the fallback.
    assert (ours(300, 300, n=50, min_object_covered=1.0) == [0, 0, 300, 300]).all()


def test_the_boxes_repeat_under_a_seed_and_differ_between_seeds():
    assert np.array_equal(ours(375, 500, n=200, seed=3), ours(375, 500, n=200, seed=3))
    assert not np.array_equal(ours(375, 500, n=200, seed=3), ours(375, 500, n=200, seed=4))


def test_the_loader_seeds_the_crop_per_sample_and_epoch():
    class Pictures:
        def __init__(self):
            self.ids, self.labels = ["a", "b"], [0, 1]

        def __len__(self):
            return 2

        def load(self, index):
            rng = np.random.default_rng(index)
            return Image.fromarray(rng.integers(0, 256, (90, 120, 3), dtype=np.uint8))

        load_tensor = load

    aug = AugmentSection(train_crop="distorted_bounding_box", train_resolution=32)
    data = TransformedDataset(Pictures(), InputSpec(train_resolution=32).train_transform(aug), seed=5)
    first = data[(1, 0)][0]
    assert first.shape == (3, 32, 32)
    assert torch.equal(first, data[(1, 0)][0])  # the same (index, epoch): the same crop and flip
    assert not torch.equal(first, data[(1, 1)][0])


def official_crop(pipeline, k, flip_first=True):
    """Our composed crop with the box and the flip the official run drew, as (H, W, 3) float."""
    transform = distorted_bounding_box_crop(pipeline["official_0"].shape[0], flip=True)
    box_step, flip_step, resize_step = transform.transforms
    flip_step.p = 1.0 if bool(pipeline[f"flip_{k}"]) else 0.0
    top, left, h, w = (int(v) for v in pipeline[f"box_{k}"])
    box_step.get_params = lambda *args: (top, left, h, w)
    image = torch.from_numpy(pipeline["decoded"]).permute(2, 0, 1)
    if not flip_first:
        transform = T.Compose([box_step, resize_step, flip_step])
    return transform(image).permute(1, 2, 0).numpy().astype(np.float64)


def test_crop_flip_resize_is_the_official_pipeline_pixel_for_pixel(pipeline, meta):
    flips = meta["pipeline"]["flips"]
    assert any(flips) and not all(flips)
    for k in range(meta["pipeline"]["crops"]):
        official = pipeline[f"official_{k}"].astype(np.float64)
        # Ours is rounded to uint8 where the official stays float: half a grey level at most.
        assert np.abs(official_crop(pipeline, k) - official).max() <= 0.5 + 1e-3
        if flips[k]:  # TF 1's resize is not mirror-symmetric: flipping after it misplaces the picture
            assert np.abs(official_crop(pipeline, k, flip_first=False) - official).max() > 4  # 8.03 or more here


def test_train_transform_flips_once(pipeline):
    for hflip in (True, False):
        aug = AugmentSection(train_crop="distorted_bounding_box", hflip=hflip)
        steps = InputSpec().train_transform(aug).transforms
        flips = [s for s in steps if isinstance(s, T.RandomHorizontalFlip)]
        flips += [s for s in steps if isinstance(s, T.Compose) for s in s.transforms
                  if isinstance(s, T.RandomHorizontalFlip)]
        assert len(flips) == int(hflip)


def asymmetric_reference(image: torch.Tensor, size) -> torch.Tensor:
    """An independent bilinear sampler at input coordinates i * H / h: grid_sample with align_corners=True reads
    the normalised position -1 + 2 p / (n - 1) at input pixel p; border padding clamps at the last pixel."""
    _, n_y, n_x = image.shape

    def normalised(n_in, n_out):
        p = torch.arange(n_out, dtype=torch.float64) * n_in / n_out
        return -1 + 2 * p / (n_in - 1)

    gy, gx = torch.meshgrid(normalised(n_y, size[0]), normalised(n_x, size[1]), indexing="ij")
    grid = torch.stack([gx, gy], -1)[None]
    return torch.nn.functional.grid_sample(image[None].double(), grid, mode="bilinear", padding_mode="border",
                                           align_corners=True)[0]


def test_the_resize_is_tf1_bilinear_without_antialiasing(pipeline, meta):
    image = torch.from_numpy(pipeline["resize_input"]).permute(2, 0, 1)
    for h, w in meta["resize"]["sizes"]:
        official = torch.from_numpy(pipeline[f"resize_{h}x{w}"]).permute(2, 0, 1).double()
        mine = bilinear_resize_asymmetric(image, (h, w)).double()
        assert (mine - official).abs().max() <= 0.5 + 1e-3
        assert (mine - asymmetric_reference(image, (h, w))).abs().max() <= 0.5 + 1e-3
        # Half-pixel centres (PyTorch's align_corners=False, TF 2's tf.image.resize) is another picture.
        half = torch.nn.functional.interpolate(image[None].double(), size=(h, w), mode="bilinear",
                                               align_corners=False, antialias=False)[0]
        assert (half - official).abs().max() > 10
    # Other interpolations resize with torchvision, also without antialiasing.
    resize = distorted_bounding_box_crop(32, flip=False, interpolation=InterpolationMode.BICUBIC).transforms[-1]
    assert isinstance(resize, T.Resize) and resize.antialias is False
    assert torch.equal(resize(image), F.resize(image, [32, 32], InterpolationMode.BICUBIC, antialias=False))


@pytest.mark.parametrize("name", ["pretrain.yaml", *[f"ablation/e{i}.yaml" for i in range(13)], "food101.yaml",
                                  "cars.yaml", "flowers.yaml", "aircraft.yaml", "pets.yaml"])
def test_the_paper_recipes_use_the_official_crop(name, meta):
    aug = load_recipe(RECIPES / name).augment
    assert aug.train_crop == "distorted_bounding_box"
    assert aug.crop_aspect == meta["op_arguments"]["aspect_ratio_range"]
    assert aug.crop_area == meta["op_arguments"]["area_range"]
    assert aug.crop_min_covered == meta["op_arguments"]["min_object_covered"]
    assert aug.interpolation == "bilinear"
