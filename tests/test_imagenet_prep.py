"""data_prep.imagenet on miniature archives built here in the official ILSVRC2012 layout."""

import io
import tarfile

import numpy as np
import pytest
from PIL import Image
from scipy.io import savemat

from data_prep import imagenet
from transfer.data.ondisk import DatasetWriter
from transfer.data.sources import open_split
from transfer.recipe import DataSection

WNIDS = ["n01440764", "n01443537", "n01484850"]
WORDS = ["tench, Tinca tinca", "goldfish, Carassius auratus", "great white shark, white shark"]
VAL_LABELS = [3, 1, 2, 1, 3]  # ILSVRC2012_IDs, 1-based


def jpeg(value: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (12, 10), (value, 255 - value, 40)).save(buf, "JPEG", quality=95)
    return buf.getvalue()


def add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


@pytest.fixture
def raw(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    synsets = np.zeros((4,), dtype=[("ILSVRC2012_ID", "O"), ("WNID", "O"), ("words", "O"), ("num_children", "O")])
    for i, (w, words) in enumerate(zip(WNIDS, WORDS, strict=True)):
        synsets[i] = (i + 1, w, words, 0)
    synsets[3] = (4, "n00000001", "fish", 3)  # an inner node of the hierarchy: not a class
    meta = io.BytesIO()
    savemat(meta, {"synsets": synsets.reshape(-1, 1)})
    with tarfile.open(raw / imagenet.DEVKIT, "w:gz") as tar:
        add(tar, "ILSVRC2012_devkit_t12/data/meta.mat", meta.getvalue())
        add(tar, "ILSVRC2012_devkit_t12/data/ILSVRC2012_validation_ground_truth.txt",
            "".join(f"{v}\n" for v in VAL_LABELS).encode())
    with tarfile.open(raw / imagenet.TRAIN_TAR, "w") as outer:
        for c, w in enumerate(WNIDS):
            inner = io.BytesIO()
            with tarfile.open(fileobj=inner, mode="w") as t:
                for k in range(c + 2):  # 2, 3, 4 images
                    add(t, f"{w}_{k}.JPEG", jpeg(40 * c + k))
            add(outer, f"{w}.tar", inner.getvalue())
    with tarfile.open(raw / imagenet.VAL_TAR, "w") as tar:
        for k in reversed(range(len(VAL_LABELS))):  # archive order is not file-name order
            add(tar, f"ILSVRC2012_val_{k + 1:08d}.JPEG", jpeg(10 * k))
    return raw


def test_converts_counts_labels_and_splits(raw, tmp_path, monkeypatch):
    monkeypatch.setattr(imagenet, "VAL_SHARD", 2)
    out = tmp_path / "imagenet"
    assert imagenet.main(["--raw", str(raw), "--out", str(out), "--quiet"]) == 0
    data = DataSection(source="disk", path=str(out))
    train = open_split(data, "train")
    assert train.classes == ["tench", "goldfish", "great white shark"]
    assert np.bincount(train.labels).tolist() == [2, 3, 4]
    assert all(p.startswith(f"train/{WNIDS[y]}/{WNIDS[y]}_") for p, y in zip(train.ids, train.labels, strict=True))
    val = open_split(data, "validation")
    assert val.labels.tolist() == [v - 1 for v in VAL_LABELS]
    assert val.ids[0] == "validation/ILSVRC2012_val_00000001.JPEG"
    assert val.load(4).getpixel((5, 5))[0] == pytest.approx(40, abs=6)  # the 5th file's colour
    assert len(list((out / "validation").iterdir())) == 3  # shards of 2


def test_resumes_after_an_interruption(raw, tmp_path, monkeypatch):
    out = tmp_path / "imagenet"
    real_write = DatasetWriter.write
    calls = []

    def failing_write(self, split, shard, *a, **k):
        if len(calls) == 2:
            raise KeyboardInterrupt
        calls.append((split, shard))
        return real_write(self, split, shard, *a, **k)

    monkeypatch.setattr(DatasetWriter, "write", failing_write)
    with pytest.raises(KeyboardInterrupt):
        imagenet.convert(raw, out, progress=False)
    assert not (out / "dataset.json").exists()
    calls.clear()
    monkeypatch.setattr(DatasetWriter, "write", lambda self, split, shard, *a, **k: (
        calls.append((split, shard)), real_write(self, split, shard, *a, **k)))
    imagenet.convert(raw, out, progress=False)
    assert calls == [("train", WNIDS[2]), ("validation", "00000")]  # only what was missing
    assert np.bincount(open_split(DataSection(source="disk", path=str(out)), "train").labels).tolist() == [2, 3, 4]


def test_missing_archive_is_one_line(tmp_path, capsys):
    (tmp_path / "raw").mkdir()
    assert imagenet.main(["--raw", str(tmp_path / "raw"), "--out", str(tmp_path / "o"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: missing ILSVRC2012_img_train.tar in") and "\n" not in err
