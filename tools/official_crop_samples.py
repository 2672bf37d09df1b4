"""Crop boxes and crops drawn by the authors' own training preprocessing, for tests/test_crop.py.

clovaai/assembled-cnn crops every training image in preprocessing/imagenet_preprocessing.py
(`preprocess_image` -> `_decode_crop_and_flip` -> `tf.image.sample_distorted_bounding_box`, then `_resize_image`).
This imports that module from the checkout given with --official (with ``tensorflow`` meaning tf.compat.v1, in eager
mode; nothing of it is copied here) and runs its `preprocess_image` as utils/data_util.py:217-225 calls it for
training (is_training=True, use_random_crop=True, no boxes: data_util.py:275 passes an empty [0, 0, 4] tensor, so
the whole image is the object), wrapping three TensorFlow functions to record what it does:

- `tf.image.sample_distorted_bounding_box`: the arguments the official code passes (stored in fixture.json) and
  the box it drew. For each image shape, --samples more boxes are drawn by calling the op again with exactly those
  recorded arguments (the official function decodes a JPEG per call; the op alone is 100x faster).
- `tf.image.decode_and_crop_jpeg` and `tf.image.random_flip_left_right`: the crop window and whether it flipped.

It writes tests/fixtures/official/crop/:

- ``boxes.npz``: ``boxes_<H>x<W>`` (int16, N x 4: top, left, height, width) per image shape;
- ``pipeline.npz``: ``decoded`` (the JPEG of a 30 x 40 textured picture decoded by TensorFlow as the official code
  decodes it, uint8), and for each of a few official training crops ``box_<k>`` (top, left, h, w), ``flip_<k>`` and
  ``official_<k>`` (the official `preprocess_image` output at 24 x 24 with the channel means added back: float32,
  as it enters AutoAugment or the network); ``resize_input`` and ``resize_<h>x<w>`` (`_resize_image` alone on a
  random uint8 image, float32);
- ``fixture.json``: the commit, the TensorFlow and numpy versions, the seed, the recorded op arguments, the official
  lines they come from, and the command that regenerates the folder.

From the repository root, with an interpreter that has TensorFlow (made with tensorflow-cpu 2.15.1):

    /path/to/tf-venv/bin/python tools/official_crop_samples.py --official /path/to/assembled-cnn \\
        --out tests/fixtures/official/crop
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "tests" / "fixtures" / "official" / "crop"
SHAPES = ((375, 500), (500, 333), (256, 256))  # ImageNet's commonest landscape and portrait shapes, and a square
PIPELINE_SHAPE = (30, 40)
PIPELINE_SIZE = 24  # output side: the crops of a 30 x 40 picture are both enlarged and reduced to it
PIPELINE_CROPS = 10
RESIZE_INPUT = (37, 53)
RESIZE_SIZES = ((24, 24), (45, 70), (37, 20))  # reduce, enlarge, one axis only: no ratio is an integer
DCT_METHOD = "INTEGER_ACCURATE"  # the --dct_method default, nets/hparams_config.py:223
MODULE = "preprocessing/imagenet_preprocessing.py"
SOURCE_LINES = {
    "sample_distorted_bounding_box": f"{MODULE}:66-77 (min_object_covered 0.1 when use_random_crop)",
    "training call": "utils/data_util.py:217-225 (parse_record_sup) -> 273-285 (preprocess_image, empty bbox)",
    "order": f"{MODULE}:70-96 (box, decode_and_crop_jpeg, random_flip_left_right), 280 (_resize_image)",
    "resize": f"{MODULE}:223-225 (tf.image.resize_images BILINEAR, align_corners=False)",
}


def load_preprocessing(checkout: Path):
    """The official imagenet_preprocessing module, with `tf` bound to tf.compat.v1 (it uses TF 1 names)."""
    import tensorflow as tf

    sys.path.insert(0, str(checkout))
    saved = sys.modules.get("tensorflow")
    sys.modules["tensorflow"] = tf.compat.v1  # bound at import time by `import tensorflow as tf`
    try:
        from preprocessing import imagenet_preprocessing
    finally:
        sys.modules["tensorflow"] = saved
    return imagenet_preprocessing


class Recorder:
    """Wraps tf.compat.v1.image functions the official module calls, keeping their arguments and results.

    The official code passes no seed to sample_distorted_bounding_box, and the TF 1 wrapper then seeds the kernel
    at random, whatever the global seed: each box is drawn here with seed (`seed`, n), n counting the boxes, so
    that the fixture comes out the same on every run (the recorded arguments are the official ones, without it).
    """

    def __init__(self, tf1, seed: int):
        self.image = tf1.image
        self.seed, self.count = seed, 0
        self.real = {name: getattr(tf1.image, name) for name in
                     ("sample_distorted_bounding_box", "decode_and_crop_jpeg", "random_flip_left_right")}
        self.calls: dict[str, list] = {name: [] for name in self.real}

    def __enter__(self):
        for name, real in self.real.items():
            setattr(self.image, name, self._wrap(name, real))
        return self

    def __exit__(self, *exc):
        for name, real in self.real.items():
            setattr(self.image, name, real)

    def _wrap(self, name, real):
        def wrapped(*args, **kwargs):
            out = self.draw(*args, **kwargs) if name == "sample_distorted_bounding_box" else real(*args, **kwargs)
            self.calls[name].append((args, kwargs, out))
            return out
        return wrapped

    def draw(self, *args, **kwargs):
        """The op with the official arguments and the next seed."""
        if "seed" in kwargs or "seed2" in kwargs:
            raise SystemExit("error: the official code now seeds sample_distorted_bounding_box; update this tool")
        self.count += 1
        return self.real["sample_distorted_bounding_box"](*args, **kwargs, seed=self.seed, seed2=self.count)

    def clear(self):
        for calls in self.calls.values():
            calls.clear()


def textured(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A picture with smooth gradients, edges and fine noise, so that a shifted or blurred resize shows."""
    h, w = shape
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    planes = [127 + 90 * np.sin(x / (3 + c) + y / (5 - c)) for c in range(3)]
    image = np.stack(planes, -1) + rng.normal(0, 20, (h, w, 3))
    image[h // 3: h // 2, w // 4: w // 2] = (240, 30, 60)  # a block with sharp edges
    return np.clip(image, 0, 255).astype(np.uint8)


def one_box(recorder: Recorder) -> tuple[list[int], dict, tuple]:
    args, kwargs, (begin, size, _) = recorder.calls["sample_distorted_bounding_box"][-1]
    box = [int(v) for v in begin.numpy()[:2]] + [int(v) for v in size.numpy()[:2]]
    return box, kwargs, args


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--official", type=Path, required=True, help="checkout of clovaai/assembled-cnn")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the folder to write")
    parser.add_argument("--samples", type=int, default=10000, help="boxes per image shape")
    parser.add_argument("--seed", type=int, default=2020, help="the op's seed, TensorFlow's global seed (the "
                        "flips) and numpy's (the pictures)")
    args = parser.parse_args()

    import tensorflow as tf

    tf1 = tf.compat.v1
    official = load_preprocessing(args.official)
    tf.random.set_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    empty_boxes = tf.zeros([0, 0, 4], tf.float32)  # utils/data_util.py:275, when no bbox is given

    def official_training(buffer, size):
        image, _ = official.preprocess_image(buffer, empty_boxes, size, size, 3, is_training=True,
                                             use_random_crop=True, dct_method=DCT_METHOD)
        return image.numpy() + np.asarray(official.CHANNEL_MEANS, np.float32)

    boxes, recorded = {}, None
    with Recorder(tf1, args.seed) as recorder:
        for h, w in SHAPES:
            recorder.clear()
            buffer = tf.io.encode_jpeg(textured((h, w), rng), quality=90)
            official_training(buffer, 224)
            first, kwargs, op_args = one_box(recorder)
            shape = [int(v) for v in op_args[0].numpy()]
            if shape != [h, w, 3]:
                raise SystemExit(f"error: the official code passed image_size {shape} for a {h}x{w} JPEG")
            drawn = [first]
            for _ in range(args.samples - 1):
                begin, size, _ = recorder.draw(*op_args, **kwargs)
                drawn.append([*begin.numpy()[:2].tolist(), *size.numpy()[:2].tolist()])
            boxes[f"boxes_{h}x{w}"] = np.asarray(drawn, np.int16)
            recorded = {k: v for k, v in kwargs.items() if k != "bounding_boxes"}
            recorded["bounding_boxes_shape"] = list(kwargs["bounding_boxes"].shape)

        picture = textured(PIPELINE_SHAPE, rng)
        # 4:4:4, so that decoding a window gives the same pixels as decoding all (chroma upsampling would differ
        # at the window's edges); the decoder is not what this fixture checks.
        buffer = tf.io.encode_jpeg(picture, quality=95, chroma_downsampling=False)
        decoded = tf.io.decode_jpeg(buffer, channels=3, dct_method=DCT_METHOD).numpy()
        pipeline = {"decoded": decoded}
        for k in range(PIPELINE_CROPS):
            recorder.clear()
            out = official_training(buffer, PIPELINE_SIZE)
            box, _, _ = one_box(recorder)
            (_, _, cropped), = recorder.calls["decode_and_crop_jpeg"]
            (flip_args, _, flipped), = recorder.calls["random_flip_left_right"]
            top, left, bh, bw = box
            if not np.array_equal(cropped.numpy(), decoded[top:top + bh, left:left + bw]):
                raise SystemExit("error: decode_and_crop_jpeg differs from the decoded image's window; "
                                 "the fixture's `decoded` would not be the crop's source")
            flip = not np.array_equal(flipped.numpy(), flip_args[0].numpy())
            pipeline.update({f"box_{k}": np.asarray(box, np.int16), f"flip_{k}": np.asarray(flip),
                             f"official_{k}": out.astype(np.float32)})
        flips = [bool(pipeline[f"flip_{k}"]) for k in range(PIPELINE_CROPS)]
        if all(flips) or not any(flips):
            raise SystemExit("error: the pipeline crops are all flipped or all not; choose another --seed")

    resize_input = rng.integers(0, 256, (*RESIZE_INPUT, 3), dtype=np.uint8)
    pipeline["resize_input"] = resize_input
    for h, w in RESIZE_SIZES:
        pipeline[f"resize_{h}x{w}"] = official._resize_image(tf.constant(resize_input), h, w).numpy()

    args.out.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out / "boxes.npz", **boxes)
    np.savez_compressed(args.out / "pipeline.npz", **pipeline)
    commit = subprocess.run(["git", "-C", str(args.official), "rev-parse", "HEAD"], capture_output=True,
                            text=True).stdout.strip() or None
    summary = {}
    for (h, w), (name, b) in zip(SHAPES, boxes.items(), strict=True):
        area = b[:, 2].astype(np.float64) * b[:, 3] / (h * w)
        summary[name] = {"mean_area": round(float(area.mean()), 4), "under_0.1": float((area < 0.1).mean()),
                         "whole_image": float(((b[:, 2] == h) & (b[:, 3] == w)).mean())}
    doc = {
        "source": f"clovaai/assembled-cnn {MODULE}: preprocess_image(is_training=True, use_random_crop=True)",
        "commit": commit, "tensorflow": tf.__version__, "numpy": np.__version__, "seed": args.seed,
        "op_seed": "seed=SEED, seed2=n for the n-th box (the official call passes none)",
        "samples": args.samples, "shapes": [list(s) for s in SHAPES], "op_arguments": recorded,
        "dct_method": DCT_METHOD, "pipeline": {"shape": list(PIPELINE_SHAPE), "size": PIPELINE_SIZE,
                                               "crops": PIPELINE_CROPS, "flips": flips},
        "resize": {"input": list(RESIZE_INPUT), "sizes": [list(s) for s in RESIZE_SIZES]},
        "lines": SOURCE_LINES, "summary": summary,
        "regenerate": "/path/to/tf-venv/bin/python tools/official_crop_samples.py --official CHECKOUT "
                      f"--samples {args.samples} --seed {args.seed}",
    }
    (args.out / "fixture.json").write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {args.out}: " + "; ".join(f"{k} mean area {v['mean_area']}, under 0.1 {v['under_0.1']}"
                                            for k, v in summary.items()))


if __name__ == "__main__":
    main()
