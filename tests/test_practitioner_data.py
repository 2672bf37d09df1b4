"""A practitioner's own data without traps: no split shared by training and validation, the common names of
the validation split, string labels, a hub name that is a loader, archives with gaps: each works or is one
line. Every dataset here is real: HuggingFace save_to_disk / parquet files, folders and CSVs made by the test.
"""

import logging

import numpy as np
import pytest

from transfer.data.sources import DataError, open_split
from transfer.recipe import DataSection

from .test_data import jpeg, write_folder


def hf_table(labels, *, names=None, strings=False):
    import datasets

    label = (datasets.ClassLabel(names=names) if names else datasets.Value("string") if strings
             else datasets.Value("int64"))
    features = datasets.Features({"image": datasets.Image(), "label": label})
    images = [{"bytes": jpeg((10 * i % 250, 80, 120)), "path": None} for i in range(len(labels))]
    return datasets.Dataset.from_dict({"image": images, "label": list(labels)}, features=features)


def ids_of(rec):
    return {bytes(rec.table[int(i)]["image"]["bytes"]) for i in range(len(rec))}


def test_a_dataset_without_splits_is_split_here_never_shared(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="transfer")
    hf_table([0, 1] * 11, names=["cat", "dog"]).save_to_disk(str(tmp_path / "ds"))
    data = DataSection(source="disk", path=str(tmp_path / "ds"), val_fraction=0.25)
    train, val = open_split(data, "train"), open_split(data, "validation")
    assert len(train) + len(val) == 22 and not ids_of(train) & ids_of(val)  # no image in both
    assert train.made_split and val.made_split and sorted(np.bincount(val.labels)) == [3, 3]  # stratified
    assert "has no validation split: validating on a seeded stratified 25%" in caplog.text
    again = open_split(data, "validation")
    assert again.ids == val.ids  # seeded


def test_a_train_only_dataset_dict_is_split_from_train(tmp_path):
    import datasets

    datasets.DatasetDict({"train": hf_table([0, 1] * 6, names=["a", "b"])}).save_to_disk(str(tmp_path / "dd"))
    data = DataSection(source="disk", path=str(tmp_path / "dd"), val_fraction=0.5)
    train, val = open_split(data, "train"), open_split(data, "validation")
    assert len(train) == len(val) == 6 and not ids_of(train) & ids_of(val) and val.made_split


def test_the_common_names_of_the_validation_split_are_taken_and_said(tmp_path, caplog):
    import datasets

    caplog.set_level(logging.INFO, logger="transfer")
    datasets.DatasetDict({"train": hf_table([0, 1, 1], names=["a", "b"]),
                          "test": hf_table([1, 0], names=["a", "b"])}).save_to_disk(str(tmp_path / "hf"))
    val = open_split(DataSection(source="disk", path=str(tmp_path / "hf")), "validation")
    assert val.labels.tolist() == [1, 0] and not val.made_split
    assert "has no split 'validation': validating on its split 'test'" in caplog.text
    # folders named train/ and val/ (and valid/ is not preferred over val/)
    write_folder(tmp_path / "f", {"train": {"x": {"1.jpg": jpeg()}, "y": {"2.jpg": jpeg()}},
                                  "val": {"x": {"3.jpg": jpeg()}}, "valid": {"y": {"4.jpg": jpeg()}}})
    rec = open_split(DataSection(source="folder", path=str(tmp_path / "f")), "validation")
    assert [p.split("/")[-1] for p in rec.ids] == ["3.jpg"]
    # a CSV whose split column says train / valid
    for name in ("a.png", "b.png", "c.png"):
        (tmp_path / name).write_bytes(jpeg(fmt="PNG"))
    (tmp_path / "t.csv").write_text("path,label,split\na.png,x,train\nb.png,y,train\nc.png,y,valid\n")
    rec = open_split(DataSection(source="csv", path=str(tmp_path / "t.csv")), "validation")
    assert rec.ids[0].endswith("c.png") and rec.classes == ["x", "y"]


def test_a_missing_split_names_the_splits_there_are(tmp_path):
    import datasets

    datasets.DatasetDict({"train2": hf_table([0, 1], names=["a", "b"]),
                          "holdout": hf_table([0], names=["a", "b"])}).save_to_disk(str(tmp_path / "d"))
    with pytest.raises(DataError, match=r"has no split 'train' \(its splits: train2, holdout\); set "
                                        r"data.train_split / data.val_split"):
        open_split(DataSection(source="disk", path=str(tmp_path / "d")), "train")


def test_a_folder_with_only_train_is_split_from_it(tmp_path):
    write_folder(tmp_path, {"train": {c: {f"{c}{i}.jpg": jpeg() for i in range(4)} for c in ("x", "y")}})
    data = DataSection(source="folder", path=str(tmp_path), val_fraction=0.5)
    train, val = open_split(data, "train"), open_split(data, "validation")
    assert len(train) == len(val) == 4 and not set(train.ids) & set(val.ids)


def test_string_labels_are_class_names(tmp_path):
    import datasets

    datasets.DatasetDict({"train": hf_table(["tabby", "siamese", "tabby"], strings=True),
                          "validation": hf_table(["siamese", "lynx"], strings=True)}).save_to_disk(str(tmp_path / "s"))
    data = DataSection(source="disk", path=str(tmp_path / "s"))
    train = open_split(data, "train")
    assert train.classes == ["siamese", "tabby"] and train.labels.tolist() == [1, 0, 1]
    with pytest.raises(DataError, match="labels not in the training split: lynx"):
        open_split(data, "validation", train.classes)


def test_a_hub_name_that_is_a_loader_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # imagefolder would read this folder
    with pytest.raises(DataError, match=r"names a HuggingFace loader, not a dataset .* data\.source=folder"):
        open_split(DataSection(source="hub", path="imagefolder"), "train")


def test_pets_with_a_gap_in_its_class_ids_is_one_line(tmp_path, capsys):
    from data_prep import pets

    raw = tmp_path / "pets"
    (raw / "annotations").mkdir(parents=True)
    (raw / "annotations" / "trainval.txt").write_text("Abyssinian_1 1 1 1\nbeagle_2 3 2 1\n")
    (raw / "annotations" / "test.txt").write_text("beagle_3 3 2 1\n")
    assert pets.main(["--raw", str(raw), "--out", str(tmp_path / "o"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "list no image of class 2" in err[0]


def test_preprocessing_is_the_sidecars_for_a_model_a_file_and_a_run(tmp_path):
    """Mean subtraction on 0-255 and 292 -> 256 (the paper's Big-Little evaluation), against a hand-written
    torchvision pipeline; the same from the model, its weights file and a list of images."""
    import torch
    from PIL import Image
    from torchvision.transforms.v2 import functional as F

    import transfer
    from transfer.data.transforms import PAPER_MEAN, PAPER_STD, InputSpec
    from transfer.models.weights import save_weights

    model = transfer.create_model("resnet_tiny", num_classes=3)
    model.input_spec = InputSpec(224, 256, 292, "center", PAPER_MEAN, PAPER_STD, "bilinear")
    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (300, 400, 3), dtype=np.uint8))
    want = F.center_crop(F.pil_to_tensor(F.resize(img, 292, antialias=True)), 256).float()
    want = want - torch.tensor([123.68, 116.78, 103.94]).view(3, 1, 1)
    got = model.preprocess(img)
    assert got.shape == (3, 256, 256)
    assert (got - want).abs().max() <= 1.01 and (got - want).abs().mean() < 0.1  # within a grey level
    path = save_weights(model, tmp_path / "w.safetensors")
    assert torch.equal(transfer.preprocessing(path)(img), got)
    assert torch.equal(model.preprocess([img, img]), torch.stack([got, got]))
