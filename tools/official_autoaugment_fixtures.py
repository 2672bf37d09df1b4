"""Reference outputs of the official AutoAugment operations, for tests/test_autoaugment.py.

clovaai/assembled-cnn applies AutoAugment with the TensorFlow ports in preprocessing/autoaugment.py (taken from
tensorflow/tpu's EfficientNet code). This imports that file from the checkout given with ``--official`` (nothing of
it is copied here) and runs its own entry point, ``distort_image_with_autoaugment(image, "test")``, once per case,
with the file's one-entry debugging policy (``policy_vtest``) replaced by the single operation under test at
probability 1. So each output passes through the official level-to-argument table, fill value, hyper-parameters and
probability gate. The file is TensorFlow 1 code (``tf.contrib``, ``tf.random_uniform``, ``inspect.getargspec``);
it runs here in graph mode under TensorFlow 2 with three stand-ins set on the imported module, not in its file:

- ``tf``: ``tf.compat.v1``, plus ``tf.contrib.image.{rotate,translate,transform}`` rebuilt over the kernel that
  tf.contrib.image called (ImageProjectiveTransformV2, nearest neighbour, zeros outside), and a
  ``tf.contrib.training.HParams`` that records the hyper-parameters the official code passes;
- ``tf.random_uniform``: a scripted draw that returns, by the official function asking, the case's sign
  (``_randomly_negate_tensor``), "apply" (``_apply_func_with_prob``), sub-policy 0
  (``select_and_apply_random_policy``) or Cutout centre (``cutout``), so that every sign and centre is the
  caller's choice;
- ``inspect.getargspec`` (gone in Python 3.11): ``inspect.getfullargspec``.

Cases: every operation of the file's ``NAME_TO_FUNC`` at levels 0, 3, 7 and 10 (and 5 for Contrast and
Sharpness, 1 for the translations; the three without a magnitude once), both signs where the official randomises
one, on two images: ``photo``, 32x48, a 4x4 block average of sklearn's sample ``china.jpg``, and ``gradient``,
36x52, synthetic (a constant blue channel, the degenerate case of autocontrast and equalize); and the five
geometric operations at every level and sign on a 224x224 image of its own coordinates, kept as SHA-256 digests.
It writes tests/fixtures/official/autoaugment/:

- ``autoaugment.npz``: ``input__IMAGE`` and ``IMAGE__OP__LEVEL__SIGN`` (uint8, HWC, as the official code returns);
- ``fixture.json``: the cases (with the SHA-256 of each 224-px output), the official policy lists
  (``imagenet_policies()``, ``good_policies()``, as the file returns them), the recorded hyper-parameters and fill
  value, the official commit, versions and the command that regenerates the folder.

    /tmp/tfvenv/bin/python tools/official_autoaugment_fixtures.py --official /path/to/assembled-cnn \\
        --out tests/fixtures/official/autoaugment

It needs TensorFlow (made with tensorflow-cpu 2.15.1), numpy < 2 and scikit-learn (for the photo).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import inspect
import json
import platform
import re
import subprocess
import sys
import types
from pathlib import Path

import numpy as np

SOURCE = "preprocessing/autoaugment.py"
LEVELS = (0, 3, 7, 10)
# Level 5: the enhance factor is exactly 1.0, the official blend's early return (two of the four blends).
# Translations reach 25 px per level (translate_const 250): beyond level 1 nothing of a 52-px image stays in view.
LEVELS_OF = {"Contrast": (0, 3, 5, 7, 10),
             "Sharpness": (0, 3, 5, 7, 10), "TranslateX": (0, 1, 3, 10), "TranslateY": (0, 1, 3, 10),
             "AutoContrast": (0,), "Equalize": (0,), "Invert": (0,)}  # the last three take no magnitude
SIGNED = ("Rotate", "ShearX", "ShearY", "TranslateX", "TranslateY")  # level_to_arg negates these at random
# Cutout centres (row, column): near an edge, so the official clipping of the square matters.
CENTRES = {"photo": (6, 40), "gradient": (30, 4)}
# The geometric operations also on a 224x224 image that holds its own coordinates (R = column, G = row,
# B = (row + column) % 256), at every level and sign: at the official size, the float32 order of the rotation's
# sums decides a few pixels. Only a SHA-256 of each output is kept (the outputs would be megabytes).
COORDS = 224
GEOMETRIC = ("Rotate", "ShearX", "ShearY", "TranslateX", "TranslateY")


def coordinate_image(size: int) -> np.ndarray:
    y, x = np.mgrid[0:size, 0:size]
    return np.stack([x, y, (x + y) % 256], axis=-1).astype(np.uint8)


def test_images() -> dict[str, np.ndarray]:
    from sklearn.datasets import load_sample_images

    china = load_sample_images().images[0]  # (427, 640, 3) uint8
    patch = china[120:248, 220:412].astype(np.float64)  # 128 x 192: roof, trees, sky
    photo = np.round(patch.reshape(32, 4, 48, 4, 3).mean(axis=(1, 3))).astype(np.uint8)
    y, x = np.mgrid[0:36, 0:52]
    gradient = np.stack([40 + (x * 160) // 51,  # 40..200: autocontrast stretches it
                         (y * 255) // 35 ^ ((x // 13) * 37 % 256),  # 0..255 with steps
                         np.full_like(x, 77)], axis=-1).astype(np.uint8)  # constant: the degenerate channel
    return {"photo": photo, "gradient": gradient}


class Draws:
    """What the stand-in tf.random_uniform returns, chosen by the official function that asks."""

    def __init__(self):
        self.sign = 0.75  # floor(u + 0.5) = 1: _randomly_negate_tensor keeps the level; 0.25 negates it
        self.centre: list[int] = []

    def value(self, caller: str):
        if caller == "_randomly_negate_tensor":
            return self.sign
        if caller == "_apply_func_with_prob":
            return 0.5  # floor(0.5 + 1.0) = 1: applied
        if caller == "select_and_apply_random_policy":
            return 0  # the one sub-policy
        if caller == "cutout":
            return self.centre.pop(0)  # row, then column
        raise RuntimeError(f"unexpected tf.random_uniform from {caller}")


def tf1_namespace(tf, draws: Draws, hparams: dict):
    """tf.compat.v1 with the TF 1 names the official file uses that TensorFlow 2 no longer has."""

    def transform(images, transforms, interpolation="NEAREST"):
        # tf.contrib.image.transform: one image (H, W, C), a flat 8-parameter map from output to input pixel.
        batch = tf.convert_to_tensor(images)[None]
        flat = tf.reshape(tf.convert_to_tensor(transforms, dtype=tf.float32), [1, 8])
        out = tf.raw_ops.ImageProjectiveTransformV2(images=batch, transforms=flat, output_shape=tf.shape(batch)[1:3],
                                                    interpolation=interpolation, fill_mode="CONSTANT")
        return out[0]

    def rotate(images, angles, interpolation="NEAREST"):
        # tf.contrib.image.rotate: about the image centre, as angles_to_projective_transforms builds it.
        shape = tf.shape(images)
        h, w = tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32)
        a = tf.convert_to_tensor(angles, dtype=tf.float32)
        cos, sin = tf.cos(a), tf.sin(a)
        x_offset = ((w - 1) - (cos * (w - 1) - sin * (h - 1))) / 2.0
        y_offset = ((h - 1) - (sin * (w - 1) + cos * (h - 1))) / 2.0
        return transform(images, tf.stack([cos, -sin, x_offset, sin, cos, y_offset, 0.0, 0.0]), interpolation)

    def translate(images, translations, interpolation="NEAREST"):
        # tf.contrib.image.translate: output (x, y) reads input (x - dx, y - dy).
        t = tf.convert_to_tensor(translations, dtype=tf.float32)
        return transform(images, tf.stack([1.0, 0.0, -t[0], 0.0, 1.0, -t[1], 0.0, 0.0]), interpolation)

    def h_params(**kwargs):
        hparams.update(kwargs)
        return types.SimpleNamespace(**kwargs)

    def random_uniform(shape, minval=0, maxval=None, dtype=tf.float32, **_):
        return tf.constant(draws.value(sys._getframe(1).f_code.co_name), dtype=dtype, shape=shape)

    class TF1(types.SimpleNamespace):
        def __getattr__(self, name):
            return getattr(tf.compat.v1, name)

    contrib = types.SimpleNamespace(image=types.SimpleNamespace(rotate=rotate, translate=translate,
                                                                transform=transform),
                                    training=types.SimpleNamespace(HParams=h_params))
    return TF1(contrib=contrib, random_uniform=random_uniform)


def load_official(checkout: Path, tf, draws: Draws, hparams: dict):
    spec = importlib.util.spec_from_file_location("official_autoaugment", checkout / SOURCE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.tf = tf1_namespace(tf, draws, hparams)
    module.inspect = types.SimpleNamespace(getargspec=inspect.getfullargspec)
    return module


def cases(operations) -> list[dict]:
    out = []
    for image in CENTRES:
        for op in operations:
            for level in LEVELS_OF.get(op, LEVELS):
                for sign in ("pos", "neg") if op in SIGNED else ("pos",):
                    case = {"image": image, "op": op, "level": level, "sign": sign}
                    if op == "Cutout":
                        case["centre"] = list(CENTRES[image])
                    out.append(case)
    for op in GEOMETRIC:
        for level in range(11):
            for sign in ("pos", "neg"):
                out.append({"image": "coords", "op": op, "level": level, "sign": sign})
    return out


def key(case: dict) -> str:
    return f"{case['image']}__{case['op']}__{case['level']}__{case['sign']}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--official", type=Path, required=True, help="checkout of clovaai/assembled-cnn")
    parser.add_argument("--out", type=Path, required=True, help="folder to write (tests/fixtures/official/autoaugment)")
    args = parser.parse_args()
    if not (args.official / SOURCE).is_file():
        raise SystemExit(f"error: {args.official / SOURCE} does not exist; is --official a clovaai/assembled-cnn "
                         "checkout?")
    import tensorflow as tf

    tf.compat.v1.disable_eager_execution()
    draws, hparams, replace_values = Draws(), {}, []
    aa = load_official(args.official, tf, draws, hparams)
    parse = aa._parse_policy_info

    def recording_parse(name, prob, level, replace_value, augmentation_hparams):
        replace_values.append(list(replace_value))
        return parse(name, prob, level, replace_value, augmentation_hparams)

    aa._parse_policy_info = recording_parse
    images = {**test_images(), "coords": coordinate_image(COORDS)}
    placeholders = {name: tf.compat.v1.placeholder(tf.uint8, img.shape) for name, img in images.items()}
    all_cases, fetches = cases(aa.NAME_TO_FUNC), {}
    for case in all_cases:
        draws.sign = 0.75 if case["sign"] == "pos" else 0.25
        draws.centre = list(case.get("centre", ()))
        aa.policy_vtest = lambda c=case: [[(c["op"], 1.0, c["level"])]]
        fetches[key(case)] = aa.distort_image_with_autoaugment(placeholders[case["image"]], "test")
        if draws.centre:
            raise RuntimeError(f"{key(case)}: the official cutout drew {2 - len(draws.centre)} of 2 centre values")
    with tf.compat.v1.Session() as sess:
        results = sess.run(fetches, {placeholders[n]: img for n, img in images.items()})
    arrays = {f"input__{n}": img for n, img in images.items() if n != "coords"}
    for case in all_cases:
        out = np.ascontiguousarray(results[key(case)], np.uint8)
        if case["image"] == "coords":
            case["sha256"] = hashlib.sha256(out.tobytes()).hexdigest()
        else:
            arrays[key(case)] = out
    if any(v != replace_values[0] for v in replace_values):
        raise RuntimeError(f"the official code passed several fill values: {replace_values}")

    args.out.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out / "autoaugment.npz", **arrays)
    commit = subprocess.run(["git", "-C", str(args.official), "rev-parse", "HEAD"], capture_output=True,
                            text=True).stdout.strip() or None
    doc = {
        "source": f"clovaai/assembled-cnn {SOURCE}", "commit": commit,
        "regenerate": f"/tmp/tfvenv/bin/python tools/official_autoaugment_fixtures.py --official CHECKOUT --out "
                      f"{args.out}",
        "versions": {"python": platform.python_version(), "tensorflow": tf.__version__, "numpy": np.__version__},
        "max_level": aa._MAX_LEVEL, "hparams": hparams, "replace_value": replace_values[0],
        "operations": list(aa.NAME_TO_FUNC),
        "policies": {"imagenet": aa.imagenet_policies(), "good": aa.good_policies()},
        "coords": {"size": COORDS, "layout": "R = column, G = row, B = (row + column) % 256"},
        "cases": all_cases,
    }
    # One case and one sub-policy a line: small, and still readable.
    text = json.dumps(doc, indent=1)
    text = re.sub(r"\[\s+\[\s+\"(\w+)\",\s+([\d.]+),\s+(\d+)\s+\],\s+\[\s+\"(\w+)\",\s+([\d.]+),\s+(\d+)\s+\]\s+\]",
                  r'[["\1", \2, \3], ["\4", \5, \6]]', text)
    text = re.sub(r"\{\n\s+(\"image\"[^{}]*?)\n\s+\}", lambda m: "{" + re.sub(r"\s*\n\s*", " ", m.group(1)) + "}", text)
    (args.out / "fixture.json").write_text(text + "\n")
    size = (args.out / "autoaugment.npz").stat().st_size
    print(f"wrote {args.out}: {len(all_cases)} cases, autoaugment.npz {size / 1024:.0f} KB", file=sys.stderr)


if __name__ == "__main__":
    main()
