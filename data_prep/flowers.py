"""Oxford Flowers-102 from its official files to the on-disk dataset.

    python -m data_prep.flowers --raw DIR --out data/flowers

DIR holds jpg/image_NNNNN.jpg, imagelabels.mat and setid.mat. Splits: train = the official train + val
(2,040 images, as the paper) and test (6,149). The official files number the classes 1..102; their names
(pink primrose, hard-leaved pocket orchid, ...) are the list torchvision's Flowers102 carries.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from transfer.data.ondisk import DatasetWriter

from .common import PrepError, progress_bar, require, run_main, write_split


def convert(raw: Path, out: Path, *, progress: bool = True) -> Path:
    from scipy.io import loadmat

    labels = [int(v) for v in np.atleast_1d(loadmat(str(require(raw, "imagelabels.mat")), squeeze_me=True)["labels"])]
    setid = loadmat(str(require(raw, "setid.mat")), squeeze_me=True)
    from torchvision.datasets import Flowers102

    if max(labels) > len(Flowers102.classes) or min(labels) < 1:
        raise PrepError(f"imagelabels.mat labels run {min(labels)}..{max(labels)}; Flowers-102 has classes "
                        f"1..{len(Flowers102.classes)}")
    classes = list(Flowers102.classes)
    writer = DatasetWriter(out, "flowers", classes)
    parts = {"train": [int(i) for key in ("trnid", "valid") for i in np.atleast_1d(setid[key])],
             "test": [int(i) for i in np.atleast_1d(setid["tstid"])]}
    splits = {}
    with progress_bar(progress) as bar:
        for split, ids in parts.items():
            items = [(raw / "jpg" / f"image_{i:05d}.jpg", labels[i - 1] - 1, f"jpg/image_{i:05d}.jpg")
                     for i in sorted(ids)]
            splits[split] = write_split(writer, split, items, progress=bar)
    return writer.finish(splits)


def main(argv: list[str] | None = None) -> int:
    return run_main("flowers", __doc__, convert, argv)


if __name__ == "__main__":
    sys.exit(main())
