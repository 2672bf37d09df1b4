"""CUB-200-2011 for retrieval (classes 1-100 train, 101-200 test) from its official archive to the on-disk dataset.

    python -m data_prep.cub --raw CUB_200_2011 --out data/cub

--raw is the extracted CUB_200_2011 folder: images.txt ("IMAGE_ID PATH"), image_class_labels.txt
("IMAGE_ID CLASS_ID"), classes.txt ("CLASS_ID NAME") and images/PATH. Zero-shot splits by class: train
(classes 1-100, 5,864 images) and test (classes 101-200, 5,924 images), the test split both query and
gallery. train_test_split.txt is the classification split and is not used.
"""

from __future__ import annotations

import sys
from pathlib import Path

from .common import PrepError, read_rows, require, run_main, split_by_class, write_retrieval


def read_classes(raw: Path) -> list[str]:
    rows = read_rows(require(raw, "classes.txt"), 2, ints=(0,))
    if [class_id for class_id, _ in rows] != list(range(1, len(rows) + 1)):
        raise PrepError("classes.txt: class ids must run 1..N in order")
    return [name for _, name in rows]


def convert(raw: Path, out: Path, *, progress: bool = True) -> Path:
    classes = read_classes(raw)
    images = read_rows(require(raw, "images.txt"), 2)
    labels = dict(read_rows(require(raw, "image_class_labels.txt"), 2, ints=(1,)))
    items = []
    for image_id, path in images:
        if image_id not in labels:
            raise PrepError(f"image_class_labels.txt has no class for image {image_id} of images.txt")
        if not 1 <= labels[image_id] <= len(classes):
            raise PrepError(f"image_class_labels.txt: class {labels[image_id]} of image {image_id} is not in "
                            f"classes.txt")
        items.append((raw / "images" / path, labels[image_id] - 1, f"images/{path}"))
    parts = split_by_class(items, len(classes) // 2)
    return write_retrieval(out, "cub", classes, parts, progress=progress)


def main(argv: list[str] | None = None) -> int:
    return run_main("cub", __doc__, convert, argv)


if __name__ == "__main__":
    sys.exit(main())
