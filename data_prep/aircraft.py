"""FGVC-Aircraft (variant level, 100 classes) from its official archive to the on-disk dataset.

    python -m data_prep.aircraft --raw fgvc-aircraft-2013b/data --out data/aircraft

--raw is the archive's data/ folder (or the folder holding it): images/ID.jpg, variants.txt,
images_variant_trainval.txt and images_variant_test.txt. Splits: trainval (6,667) and test (3,333).
Every image carries a copyright banner in its bottom 20 pixel rows; the benchmark protocol removes it, and
so does this converter (re-encoded as JPEG, quality 95), unless --keep-banner.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

from PIL import Image

from transfer.data.ondisk import DatasetWriter

from .common import PrepError, progress_bar, require, run_main, write_split

BANNER_ROWS = 20  # the height of the copyright banner at the bottom of every FGVC-Aircraft image


def without_banner(path: Path, ident: str) -> bytes:
    """The image with its bottom BANNER_ROWS rows cut off."""
    with Image.open(path) as img:
        img = img.convert("RGB")
        if img.height <= BANNER_ROWS:
            raise PrepError(f"{path} is {img.height} pixels high: no room for the {BANNER_ROWS}-row banner; "
                            f"is it an FGVC-Aircraft image? (--keep-banner stores it as it is)")
        buf = io.BytesIO()
        img.crop((0, 0, img.width, img.height - BANNER_ROWS)).save(buf, "JPEG", quality=95)
    return buf.getvalue()


def convert(raw: Path, out: Path, *, progress: bool = True, keep_banner: bool = False) -> Path:
    if not (raw / "variants.txt").exists() and (raw / "data" / "variants.txt").exists():
        raw = raw / "data"
    classes = [line.strip() for line in require(raw, "variants.txt").read_text().splitlines() if line.strip()]
    index = {c: i for i, c in enumerate(classes)}
    writer = DatasetWriter(out, "aircraft", classes, banner_removed=not keep_banner)
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
            splits[split] = write_split(writer, split, items, progress=bar,
                                        transform=None if keep_banner else without_banner)
    return writer.finish(splits)


def main(argv: list[str] | None = None) -> int:
    return run_main("aircraft", __doc__, convert, argv, lambda p: p.add_argument(
        "--keep-banner", action="store_true", help="store the images with their copyright banner (default: cut off)"))


if __name__ == "__main__":
    sys.exit(main())
