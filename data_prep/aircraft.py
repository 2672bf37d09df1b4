"""FGVC-Aircraft (variant level, 100 classes) from its official archive to the on-disk dataset.

    python -m data_prep.aircraft --raw fgvc-aircraft-2013b/data --out data/aircraft

--raw is the archive's data/ folder (or the folder holding it): images/ID.jpg, variants.txt,
images_variant_trainval.txt and images_variant_test.txt. Splits: trainval (6,667) and test (3,333).
"""

from __future__ import annotations

import sys
from pathlib import Path

from transfer.data.ondisk import DatasetWriter

from .common import PrepError, progress_bar, require, run_main, write_split


def convert(raw: Path, out: Path, *, progress: bool = True) -> Path:
    if not (raw / "variants.txt").exists() and (raw / "data" / "variants.txt").exists():
        raw = raw / "data"
    classes = [line.strip() for line in require(raw, "variants.txt").read_text().splitlines() if line.strip()]
    index = {c: i for i, c in enumerate(classes)}
    writer = DatasetWriter(out, "aircraft", classes)
    splits = {}
    with progress_bar(progress) as bar:
        for split in ("trainval", "test"):
            listing = require(raw, f"images_variant_{split}.txt")
            items = []
            for n, line in enumerate(listing.read_text().splitlines(), 1):
                if not line.strip():
                    continue
                ident, _, variant = line.strip().partition(" ")
                if variant not in index:
                    raise PrepError(f"{listing.name}:{n}: variant {variant!r} is not in variants.txt")
                items.append((raw / "images" / f"{ident}.jpg", index[variant], f"images/{ident}.jpg"))
            splits[split] = write_split(writer, split, items, progress=bar)
    return writer.finish(splits)


def main(argv: list[str] | None = None) -> int:
    return run_main("aircraft", __doc__, convert, argv)


if __name__ == "__main__":
    sys.exit(main())
