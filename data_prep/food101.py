"""Food-101 from its official archive to the on-disk dataset.

    python -m data_prep.food101 --raw food-101 --out data/food101

--raw is the extracted food-101 folder: images/CLASS/ID.jpg, meta/classes.txt, meta/train.json, meta/test.json.
Splits: train (75,750) and test (25,250), as the paper reports.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from transfer.data.ondisk import DatasetWriter

from .common import PrepError, progress_bar, require, run_main, write_split


def convert(raw: Path, out: Path, *, progress: bool = True) -> Path:
    classes = require(raw, "meta/classes.txt").read_text().split()
    index = {c: i for i, c in enumerate(classes)}
    writer = DatasetWriter(out, "food101", classes)
    splits = {}
    with progress_bar(progress) as bar:
        for split in ("train", "test"):
            listing = json.loads(require(raw, f"meta/{split}.json").read_text())
            unknown = sorted(set(listing) - set(index))
            if unknown:
                raise PrepError(f"meta/{split}.json lists class {unknown[0]!r}, not in meta/classes.txt")
            items = [(raw / "images" / f"{ident}.jpg", index[c], f"{ident}.jpg")
                     for c in classes for ident in listing.get(c, [])]
            splits[split] = write_split(writer, split, items, progress=bar)
    return writer.finish(splits)


def main(argv: list[str] | None = None) -> int:
    return run_main("food101", __doc__, convert, argv)


if __name__ == "__main__":
    sys.exit(main())
