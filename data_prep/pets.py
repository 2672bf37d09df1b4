"""Oxford-IIIT Pets (37 breeds) from its official archives to the on-disk dataset.

    python -m data_prep.pets --raw DIR --out data/pets

DIR holds images/NAME.jpg and annotations/trainval.txt, annotations/test.txt (lines "NAME CLASS SPECIES
BREED", CLASS 1..37). Splits: trainval (3,680) and test (3,669). Class names come from the image names.
"""

from __future__ import annotations

import sys
from pathlib import Path

from transfer.data.ondisk import DatasetWriter

from .common import PrepError, progress_bar, require, run_main, write_split


def read_listing(path: Path) -> list[tuple[str, int]]:
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) < 2 or not parts[1].isdigit():
            raise PrepError(f"{path.name}:{n}: expected 'NAME CLASS SPECIES BREED', got {line!r}")
        rows.append((parts[0], int(parts[1]) - 1))
    return rows


def convert(raw: Path, out: Path, *, progress: bool = True) -> Path:
    listings = {split: read_listing(require(raw, f"annotations/{split}.txt")) for split in ("trainval", "test")}
    names: dict[int, str] = {}
    for rows in listings.values():
        for name, label in rows:
            names.setdefault(label, name.rsplit("_", 1)[0])
    gaps = [i + 1 for i in range(max(names) + 1) if i not in names]
    if gaps:
        raise PrepError(f"annotations/trainval.txt and test.txt number the classes 1..{max(names) + 1} but list no "
                        f"image of class {', '.join(map(str, gaps[:5]))}; is the archive complete? (the official "
                        f"one has all 37)")
    classes = [names[i] for i in range(max(names) + 1)]
    writer = DatasetWriter(out, "pets", classes)
    splits = {}
    with progress_bar(progress) as bar:
        for split, rows in listings.items():
            items = [(raw / "images" / f"{name}.jpg", label, f"images/{name}.jpg") for name, label in rows]
            splits[split] = write_split(writer, split, items, progress=bar)
    return writer.finish(splits)


def main(argv: list[str] | None = None) -> int:
    return run_main("pets", __doc__, convert, argv)


if __name__ == "__main__":
    sys.exit(main())
