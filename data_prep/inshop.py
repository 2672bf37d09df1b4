"""In-Shop Clothes Retrieval (DeepFashion) from its official archive to the on-disk dataset.

    python -m data_prep.inshop --raw "In-shop Clothes Retrieval Benchmark" --out data/inshop

--raw holds list_eval_partition.txt (at --raw or in Eval/: a first line with the number of images, the
header "image_name item_id evaluation_status", then one image per line with status train, query or gallery)
and the images at the listed paths (img/...), under --raw or under --raw/Img as the archive's img.zip extracts.
Zero-shot splits: train (3,997 items, 25,882 images) and test (3,985 items), whose is_query/is_gallery
columns give the official 14,218 queries and 12,612 gallery images. Classes are named by their item_id.
"""

from __future__ import annotations

import sys
from pathlib import Path

from .common import PrepError, read_rows, require, run_main, write_retrieval, zero_shot_classes

HEADER = "image_name item_id evaluation_status"
STATUSES = ("train", "query", "gallery")


def image_root(raw: Path, first: str) -> Path:
    """Where the listed paths (img/...) start: --raw itself, or Img/ of the extracted archive."""
    return next((root for root in (raw, raw / "Img") if (root / first).exists()), raw)


def convert(raw: Path, out: Path, *, progress: bool = True) -> Path:
    listing = require(raw, "list_eval_partition.txt", "Eval/list_eval_partition.txt")
    rows = read_rows(listing, 3, header=HEADER, counted=True)
    bad = next((row for row in rows if row[2] not in STATUSES), None)
    if bad:
        raise PrepError(f"{listing.name}: evaluation_status {bad[2]!r} of {bad[0]} is not one of "
                        f"{', '.join(STATUSES)}")
    train = [row for row in rows if row[2] == "train"]
    test = [row for row in rows if row[2] != "train"]
    classes = zero_shot_classes([r[1] for r in train], [r[1] for r in test], listing.name)
    index = {c: i for i, c in enumerate(classes)}
    root = image_root(raw, rows[0][0])
    parts = {split: [(root / path, index[item], path) for path, item, _ in part]
             for split, part in (("train", train), ("test", test))}
    return write_retrieval(out, "inshop", classes, parts, is_query=[r[2] == "query" for r in test],
                           progress=progress)


def main(argv: list[str] | None = None) -> int:
    return run_main("inshop", __doc__, convert, argv)


if __name__ == "__main__":
    sys.exit(main())
