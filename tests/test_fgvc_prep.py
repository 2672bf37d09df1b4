"""The fine-grained converters, each on a miniature archive built here in its official format."""

import json

import numpy as np
import pytest
from scipy.io import savemat

from data_prep import aircraft, cars, flowers, food101, pets
from transfer.data.sources import open_split
from transfer.recipe import DataSection

from .test_data import jpeg


def img(path, color=(120, 60, 30), size=(30, 20)):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(jpeg(color, size=size))


def load(out, split):
    return open_split(DataSection(source="disk", path=str(out)), split)


def test_food101(tmp_path):
    raw = tmp_path / "food-101"
    classes = ["apple_pie", "baby_back_ribs"]
    (raw / "meta").mkdir(parents=True)
    (raw / "meta" / "classes.txt").write_text("\n".join(classes) + "\n")
    train = {"apple_pie": ["apple_pie/1", "apple_pie/2"], "baby_back_ribs": ["baby_back_ribs/3"]}
    test = {"apple_pie": ["apple_pie/4"], "baby_back_ribs": ["baby_back_ribs/5", "baby_back_ribs/6"]}
    (raw / "meta" / "train.json").write_text(json.dumps(train))
    (raw / "meta" / "test.json").write_text(json.dumps(test))
    for listing in (train, test):
        for ids in listing.values():
            for i in ids:
                img(raw / "images" / f"{i}.jpg")
    assert food101.main(["--raw", str(raw), "--out", str(tmp_path / "o"), "--quiet"]) == 0
    tr, te = load(tmp_path / "o", "train"), load(tmp_path / "o", "test")
    assert tr.classes == classes and tr.labels.tolist() == [0, 0, 1] and te.labels.tolist() == [0, 1, 1]
    assert te.ids[0] == "apple_pie/4.jpg"


def struct(rows, fields):
    arr = np.zeros((len(rows),), dtype=[(f, "O") for f in fields])
    for i, r in enumerate(rows):
        arr[i] = tuple(r[f] for f in fields)
    return arr.reshape(1, -1)


def test_cars_with_and_without_bbox_crop(tmp_path, capsys):
    raw = tmp_path / "cars"
    (raw / "devkit").mkdir(parents=True)
    savemat(raw / "devkit" / "cars_meta.mat", {"class_names": np.array(["AM General Hummer", "Acura RL"],
                                                                        dtype=object).reshape(1, -1)})
    fields = ["bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "fname"]
    train = [{"bbox_x1": 2, "bbox_y1": 3, "bbox_x2": 11, "bbox_y2": 8, "class": 2, "fname": "00001.jpg"},
             {"bbox_x1": 0, "bbox_y1": 0, "bbox_x2": 29, "bbox_y2": 19, "class": 1, "fname": "00002.jpg"}]
    test = [{"bbox_x1": 1, "bbox_y1": 1, "bbox_x2": 5, "bbox_y2": 5, "class": 1, "fname": "00001.jpg"}]
    savemat(raw / "devkit" / "cars_train_annos.mat", {"annotations": struct(train, fields)})
    for a in train:
        img(raw / "cars_train" / a["fname"])
    img(raw / "cars_test" / "00001.jpg")
    assert cars.main(["--raw", str(raw), "--out", str(tmp_path / "x"), "--quiet"]) == 2
    assert "missing cars_test_annos_withlabels.mat" in capsys.readouterr().err
    savemat(raw / "cars_test_annos_withlabels.mat", {"annotations": struct(test, fields)})
    assert cars.main(["--raw", str(raw), "--out", str(tmp_path / "o"), "--quiet"]) == 0
    tr = load(tmp_path / "o", "train")
    assert tr.classes == ["AM General Hummer", "Acura RL"] and tr.labels.tolist() == [1, 0]
    assert load(tmp_path / "o", "test").labels.tolist() == [0]
    assert cars.main(["--raw", str(raw), "--out", str(tmp_path / "c"), "--quiet", "--crop-bbox"]) == 0
    assert load(tmp_path / "c", "train").load(0).size == (10, 6)  # x 2..11, y 3..8 inclusive


def test_flowers_trains_on_train_plus_val(tmp_path):
    raw = tmp_path / "flowers"
    labels = [1, 2, 2, 1, 3, 3]
    raw.mkdir()
    savemat(raw / "imagelabels.mat", {"labels": np.array([labels])})
    savemat(raw / "setid.mat", {"trnid": np.array([[1, 2]]), "valid": np.array([[5]]), "tstid": np.array([[3, 4, 6]])})
    for i in range(1, 7):
        img(raw / "jpg" / f"image_{i:05d}.jpg")
    assert flowers.main(["--raw", str(raw), "--out", str(tmp_path / "o"), "--quiet"]) == 0
    tr, te = load(tmp_path / "o", "train"), load(tmp_path / "o", "test")
    assert tr.ids == ["jpg/image_00001.jpg", "jpg/image_00002.jpg", "jpg/image_00005.jpg"]
    assert tr.labels.tolist() == [0, 1, 2] and te.labels.tolist() == [1, 0, 2]
    from torchvision.datasets import Flowers102

    assert tr.classes == Flowers102.classes and len(tr.classes) == 102
    assert tr.classes[:3] == ["pink primrose", "hard-leaved pocket orchid", "canterbury bells"]


def test_aircraft_variants_with_spaces(tmp_path):
    data = tmp_path / "fgvc-aircraft-2013b" / "data"
    data.mkdir(parents=True)
    (data / "variants.txt").write_text("707-320\nA300B4\nCessna 172\n")
    (data / "images_variant_trainval.txt").write_text("1025794 707-320\n1340192 Cessna 172\n")
    (data / "images_variant_test.txt").write_text("0056978 A300B4\n")
    from PIL import Image

    for i in ("1025794", "1340192", "0056978"):  # 50 rows: a dark photo over a white 20-row banner
        photo = Image.new("RGB", (30, 50), (20, 20, 20))
        photo.paste((255, 255, 255), (0, 30, 30, 50))
        (data / "images").mkdir(exist_ok=True)
        photo.save(data / "images" / f"{i}.jpg", quality=95)
    assert aircraft.main(["--raw", str(data.parent), "--out", str(tmp_path / "o"), "--quiet"]) == 0
    tr = load(tmp_path / "o", "trainval")
    assert tr.classes == ["707-320", "A300B4", "Cessna 172"] and tr.labels.tolist() == [0, 2]
    assert load(tmp_path / "o", "test").labels.tolist() == [1]
    stored = np.asarray(tr.load(0))
    assert stored.shape == (30, 30, 3) and stored.max() < 60  # the banner is gone, the photo is whole
    assert aircraft.main(["--raw", str(data.parent), "--out", str(tmp_path / "k"), "--quiet", "--keep-banner"]) == 0
    kept = np.asarray(load(tmp_path / "k", "trainval").load(0))
    assert kept.shape == (50, 30, 3) and kept[-10:].min() > 200
    (data / "images_variant_test.txt").write_text("0056978 A380\n")
    with pytest.raises(aircraft.PrepError, match=r"images_variant_test\.txt:1: variant 'A380'"):
        aircraft.convert(data, tmp_path / "p", progress=False)


def test_pets_names_from_files(tmp_path):
    raw = tmp_path / "pets"
    (raw / "annotations").mkdir(parents=True)
    (raw / "annotations" / "trainval.txt").write_text("Abyssinian_100 1 1 1\nbasset_hound_12 2 2 1\n")
    (raw / "annotations" / "test.txt").write_text("#comment\nbasset_hound_3 2 2 1\nAbyssinian_7 1 1 1\n")
    for n in ("Abyssinian_100", "basset_hound_12", "basset_hound_3", "Abyssinian_7"):
        img(raw / "images" / f"{n}.jpg")
    assert pets.main(["--raw", str(raw), "--out", str(tmp_path / "o"), "--quiet"]) == 0
    tr = load(tmp_path / "o", "trainval")
    assert tr.classes == ["Abyssinian", "basset_hound"] and tr.labels.tolist() == [0, 1]
    assert load(tmp_path / "o", "test").labels.tolist() == [1, 0]


def test_huggingface_progress_lines_are_not_printed(tmp_path, capfd):
    """Our progress bar only: the `datasets` package's own ("Saving the dataset ...") stays silent."""
    raw = tmp_path / "food-101"
    (raw / "meta").mkdir(parents=True)
    (raw / "meta" / "classes.txt").write_text("apple_pie\n")
    for split in ("train", "test"):
        (raw / "meta" / f"{split}.json").write_text(json.dumps({"apple_pie": [f"apple_pie/{split}"]}))
        img(raw / "images" / "apple_pie" / f"{split}.jpg")
    assert food101.main(["--raw", str(raw), "--out", str(tmp_path / "o")]) == 0
    out, err = capfd.readouterr()
    assert "Saving the dataset" not in out + err and "examples/s" not in out + err
    assert "wrote" in out
