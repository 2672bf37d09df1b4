"""ILSVRC2012 from its official archives to the on-disk dataset.

    python -m data_prep.imagenet --raw DIR --out DIR

DIR holds the three files of the official download:
    ILSVRC2012_img_train.tar        one tar per class (n01440764.tar, ...), each of JPEG files
    ILSVRC2012_img_val.tar          50,000 JPEG files (ILSVRC2012_val_00000001.JPEG, ...)
    ILSVRC2012_devkit_t12.tar.gz    data/meta.mat (synsets) and data/ILSVRC2012_validation_ground_truth.txt

Labels follow the devkit's ILSVRC2012_ID order (1..1000 -> 0..999). Each training class is one shard and the
validation set is cut into shards of 5,000: an interrupted run continues from the shards already written.
"""

from __future__ import annotations

import sys
import tarfile
from pathlib import Path

from transfer.data.ondisk import DatasetWriter

from .common import PrepError, run_main

TRAIN_TAR = "ILSVRC2012_img_train.tar"
VAL_TAR = "ILSVRC2012_img_val.tar"
DEVKIT = "ILSVRC2012_devkit_t12.tar.gz"
VAL_SHARD = 5000


def _require(raw: Path, name: str) -> Path:
    path = raw / name
    if not path.is_file():
        raise PrepError(f"missing {name} in {raw}: download the ILSVRC2012 archives ({TRAIN_TAR}, {VAL_TAR}, "
                        f"{DEVKIT}) into that folder")
    return path


def read_devkit(devkit: Path) -> tuple[list[str], list[str], list[int]]:
    """(wnids, class names, validation labels 0-based) from the devkit archive."""
    import io

    from scipy.io import loadmat

    with tarfile.open(devkit) as tar:
        members = {Path(m.name).name: m for m in tar.getmembers() if m.isfile()}
        for needed in ("meta.mat", "ILSVRC2012_validation_ground_truth.txt"):
            if needed not in members:
                raise PrepError(f"{devkit.name} has no data/{needed}; is it the 2012 devkit (t12)?")
        meta = loadmat(io.BytesIO(tar.extractfile(members["meta.mat"]).read()), squeeze_me=True)["synsets"]
        truth = tar.extractfile(members["ILSVRC2012_validation_ground_truth.txt"]).read().decode().split()
    leaves = sorted((int(s["ILSVRC2012_ID"]), str(s["WNID"]), str(s["words"])) for s in meta
                    if int(s["num_children"]) == 0)
    ids = [i for i, _, _ in leaves]
    if ids != list(range(1, len(ids) + 1)):
        raise PrepError(f"{devkit.name}: leaf synset ids are not 1..{len(ids)}")
    wnids = [w for _, w, _ in leaves]
    names = [words.split(",")[0].strip() for _, _, words in leaves]
    return wnids, names, [int(t) - 1 for t in truth]


def convert(raw: Path, out: Path, *, progress: bool = True) -> Path:
    train_tar, val_tar, devkit = (_require(raw, n) for n in (TRAIN_TAR, VAL_TAR, DEVKIT))
    wnids, names, val_labels = read_devkit(devkit)
    index = {w: i for i, w in enumerate(wnids)}
    writer = DatasetWriter(out, "imagenet", names, wnids=wnids)

    from rich.progress import Progress

    with Progress(disable=not progress, transient=False) as bar:
        with tarfile.open(train_tar) as outer:
            class_tars = [m for m in outer.getmembers() if m.isfile() and m.name.endswith(".tar")]
            unknown = [m.name for m in class_tars if Path(m.name).stem not in index]
            if unknown:
                raise PrepError(f"{TRAIN_TAR} holds {unknown[0]}, a class the devkit does not list")
            task = bar.add_task("train classes", total=len(class_tars))
            for member in class_tars:
                wnid = Path(member.name).stem
                if not writer.has("train", wnid):
                    images, paths = [], []
                    with tarfile.open(fileobj=outer.extractfile(member)) as inner:
                        for f in inner.getmembers():
                            if f.isfile():
                                images.append(inner.extractfile(f).read())
                                paths.append(f"train/{wnid}/{Path(f.name).name}")
                    writer.write("train", wnid, images, [index[wnid]] * len(images), paths)
                bar.advance(task)
        train_shards = sorted(Path(m.name).stem for m in class_tars)

        with tarfile.open(val_tar) as tar:
            files = sorted((m for m in tar.getmembers() if m.isfile()), key=lambda m: Path(m.name).name)
            if len(files) != len(val_labels):
                raise PrepError(f"{VAL_TAR} has {len(files)} images but the devkit labels {len(val_labels)}")
            val_shards = []
            task = bar.add_task("validation", total=len(files))
            for start in range(0, len(files), VAL_SHARD):
                shard = f"{start // VAL_SHARD:05d}"
                val_shards.append(shard)
                chunk = files[start:start + VAL_SHARD]
                if not writer.has("validation", shard):
                    writer.write("validation", shard, [tar.extractfile(m).read() for m in chunk],
                                 val_labels[start:start + len(chunk)],
                                 [f"validation/{Path(m.name).name}" for m in chunk])
                bar.advance(task, len(chunk))
    return writer.finish({"train": train_shards, "validation": val_shards})


def main(argv: list[str] | None = None) -> int:
    return run_main("imagenet", __doc__, convert, argv)


if __name__ == "__main__":
    sys.exit(main())
