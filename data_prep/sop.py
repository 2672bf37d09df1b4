"""Stanford Online Products (retrieval, 22,634 products) from its official archive to the on-disk dataset.

    python -m data_prep.sop --raw Stanford_Online_Products --out data/sop

--raw is the extracted Stanford_Online_Products folder: Ebay_train.txt and Ebay_test.txt (a header line, then
"image_id class_id super_class_id path") and the images at the listed paths (CATEGORY_final/ID.JPG).
Zero-shot splits: train (11,318 classes, 59,551 images) and test (11,316 classes, 60,502 images), the test
split both query and gallery. Classes are named by their class_id.
"""

from __future__ import annotations

import sys
from pathlib import Path

from .common import read_rows, require, run_main, write_retrieval, zero_shot_classes

HEADER = "image_id class_id super_class_id path"


def convert(raw: Path, out: Path, *, progress: bool = True) -> Path:
    listings = {split: read_rows(require(raw, f"Ebay_{split}.txt"), 4, header=HEADER)
                for split in ("train", "test")}
    classes = zero_shot_classes(*[[row[1] for row in rows] for rows in listings.values()], "Ebay_test.txt")
    index = {c: i for i, c in enumerate(classes)}
    parts = {split: [(raw / path, index[class_id], path) for _, class_id, _, path in rows]
             for split, rows in listings.items()}
    return write_retrieval(out, "sop", classes, parts, progress=progress)


def main(argv: list[str] | None = None) -> int:
    return run_main("sop", __doc__, convert, argv)


if __name__ == "__main__":
    sys.exit(main())
