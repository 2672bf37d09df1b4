"""Cars196 for retrieval (classes 1-98 train, 99-196 test) from the Stanford Cars files to the on-disk dataset.

    python -m data_prep.cars196 --raw DIR --out data/cars196

DIR is laid out as for data_prep.cars: cars_train/, cars_test/, devkit/cars_meta.mat,
devkit/cars_train_annos.mat and cars_test_annos_withlabels.mat (at DIR or in devkit/). The official train
and test annotations are pooled, then split by class: train (classes 1-98, 8,054 images) and test (classes
99-196, 8,131 images), the test split both query and gallery. Classes are named by cars_meta's class_names.
"""

from __future__ import annotations

import sys
from pathlib import Path

from .cars import annotation_files, class_names, read_annotations
from .common import PrepError, run_main, split_by_class, write_retrieval


def convert(raw: Path, out: Path, *, progress: bool = True) -> Path:
    names = class_names(raw)
    items = []
    for anno_file, folder in annotation_files(raw).values():
        for a in read_annotations(anno_file):
            if not 1 <= a["class"] <= len(names):
                raise PrepError(f"{anno_file.name}: class {a['class']} of {a['fname']} is not in cars_meta.mat")
            items.append((raw / folder / a["fname"], a["class"] - 1, f"{folder}/{a['fname']}"))
    return write_retrieval(out, "cars196", names, split_by_class(items, len(names) // 2), progress=progress)


def main(argv: list[str] | None = None) -> int:
    return run_main("cars196", __doc__, convert, argv)


if __name__ == "__main__":
    sys.exit(main())
