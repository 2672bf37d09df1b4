"""Stanford Cars (196 classes) from its official files to the on-disk dataset.

    python -m data_prep.cars --raw DIR --out data/cars [--crop-bbox]

DIR holds cars_train/, cars_test/, devkit/cars_meta.mat, devkit/cars_train_annos.mat and
cars_test_annos_withlabels.mat (at DIR or in devkit/). Splits: train (8,144) and test (8,041).
--crop-bbox stores each image cropped to its annotated bounding box.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np

from transfer.data.ondisk import DatasetWriter

from .common import PrepError, progress_bar, require, run_main, write_split


def read_annotations(path: Path) -> list[dict]:
    from scipy.io import loadmat

    loaded = loadmat(str(path), squeeze_me=True)
    if "annotations" not in loaded:
        raise PrepError(f"{path.name} has no annotations; is it the devkit's annotation file?")
    annos = np.atleast_1d(loaded["annotations"])
    fields = annos.dtype.names or ()
    if "class" not in fields or "fname" not in fields:
        raise PrepError(f"{path.name} has no class/fname annotations; is it the labelled annotation file?")
    return [{k: (str(a[k]) if k == "fname" else int(a[k])) for k in fields} for a in annos]


def cropper(annos: dict[str, dict]):
    from PIL import Image

    def crop(path: Path, ident: str) -> bytes:
        a = annos[path.name]
        img = Image.open(path).convert("RGB")
        img = img.crop((a["bbox_x1"], a["bbox_y1"], a["bbox_x2"] + 1, a["bbox_y2"] + 1))
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=95)
        return buf.getvalue()

    return crop


def class_names(raw: Path) -> list[str]:
    from scipy.io import loadmat

    meta = loadmat(str(require(raw, "devkit/cars_meta.mat")), squeeze_me=True)
    if "class_names" not in meta:
        raise PrepError("cars_meta.mat has no class_names; is it the devkit's cars_meta.mat?")
    return [str(n) for n in np.atleast_1d(meta["class_names"])]


def annotation_files(raw: Path) -> dict[str, tuple[Path, str]]:
    """Per official split: its labelled annotation file and the image folder it refers to."""
    return {"train": (require(raw, "devkit/cars_train_annos.mat"), "cars_train"),
            "test": (require(raw, "cars_test_annos_withlabels.mat", "devkit/cars_test_annos_withlabels.mat"),
                     "cars_test")}


def convert(raw: Path, out: Path, *, progress: bool = True, crop_bbox: bool = False) -> Path:
    names = class_names(raw)
    files = annotation_files(raw)
    writer = DatasetWriter(out, "cars", names, cropped_to_bbox=crop_bbox)
    splits = {}
    with progress_bar(progress) as bar:
        for split, (anno_file, folder) in files.items():
            annos = read_annotations(anno_file)
            items = [(raw / folder / a["fname"], a["class"] - 1, f"{folder}/{a['fname']}") for a in annos]
            transform = cropper({a["fname"]: a for a in annos}) if crop_bbox else None
            splits[split] = write_split(writer, split, items, transform=transform, progress=bar)
    return writer.finish(splits)


def main(argv: list[str] | None = None) -> int:
    return run_main("cars", __doc__, convert, argv, extra_args=lambda p: p.add_argument(
        "--crop-bbox", action="store_true", help="crop each image to its bounding box"))


if __name__ == "__main__":
    sys.exit(main())
