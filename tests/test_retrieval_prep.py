"""The retrieval converters, each on a miniature archive built here in its official format."""

import json
import shutil

import numpy as np
import pytest
from scipy.io import savemat

from data_prep import cars196, common, cub, inshop, sop

from .test_fgvc_prep import img, load, struct


def table(out, split):
    """Every column of a split but the images, read straight from its shards."""
    import datasets

    meta = json.loads((out / "dataset.json").read_text())
    shards = datasets.concatenate_datasets([datasets.load_from_disk(str(out / s)) for s in meta["splits"][split]])
    return shards.remove_columns("image"), meta


def check_retrieval(out, classes, train, test, *, queries=None):
    """train/test: the expected (path, label) rows; queries: the expected is_query flags (default all)."""
    tr, meta = table(out, "train")
    te, _ = table(out, "test")
    assert meta["task"] == "retrieval" and meta["classes"] == classes and set(meta["splits"]) == {"train", "test"}
    assert list(zip(tr["path"], tr["label"], strict=True)) == train
    assert list(zip(te["path"], te["label"], strict=True)) == test
    assert not set(tr["label"]) & set(te["label"])
    assert "is_query" not in tr.column_names
    assert te.features["is_query"].dtype == "bool" and te.features["is_gallery"].dtype == "bool"
    queries = [True] * len(test) if queries is None else queries
    gallery = [True] * len(test) if queries is None or all(queries) else [not q for q in queries]
    assert te["is_query"] == queries and te["is_gallery"] == gallery
    assert load(out, "test").load(0).size == (30, 20)


def fails(module, raw, out, capsys, *names):
    capsys.readouterr()  # drop what earlier runs wrote (datasets' own progress bars)
    assert module.main(["--raw", str(raw), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and all(n in err for n in names), err


def make_sop(raw, rows):
    header = "image_id class_id super_class_id path\n"
    for split, listed in rows.items():
        raw.mkdir(parents=True, exist_ok=True)
        (raw / f"Ebay_{split}.txt").write_text(header + "".join(
            f"{i} {c} 1 {p}\n" for i, (c, p) in enumerate(listed, 1)))
        for _, p in listed:
            img(raw / p)


SOP_ROWS = {"train": [(1, "bicycle_final/11_0.JPG"), (1, "bicycle_final/11_1.JPG"), (2, "chair_final/22_0.JPG")],
            "test": [(3, "bicycle_final/33_0.JPG"), (10, "mug_final/10_0.JPG"), (10, "mug_final/10_1.JPG")]}


def test_sop_classes_by_id_in_numeric_order(tmp_path, capsys):
    raw = tmp_path / "Stanford_Online_Products"
    make_sop(raw, SOP_ROWS)
    assert sop.main(["--raw", str(raw), "--out", str(tmp_path / "o"), "--quiet"]) == 0
    check_retrieval(tmp_path / "o", ["1", "2", "3", "10"],
                    [("bicycle_final/11_0.JPG", 0), ("bicycle_final/11_1.JPG", 0), ("chair_final/22_0.JPG", 1)],
                    [("bicycle_final/33_0.JPG", 2), ("mug_final/10_0.JPG", 3), ("mug_final/10_1.JPG", 3)])
    (raw / "Ebay_test.txt").write_text("image_id class_id path\n")
    fails(sop, raw, tmp_path / "bad", capsys, "Ebay_test.txt:1", "header")
    (raw / "Ebay_test.txt").unlink()
    fails(sop, raw, tmp_path / "bad", capsys, "missing Ebay_test.txt")


def test_sop_resumes_without_rewriting_whole_shards(tmp_path, monkeypatch):
    monkeypatch.setattr(common, "SHARD", 2)
    raw, out = tmp_path / "sop", tmp_path / "o"
    make_sop(raw, SOP_ROWS)
    sop.convert(raw, out, progress=False)
    assert json.loads((out / "dataset.json").read_text())["splits"]["test"] == ["test/00000", "test/00001"]
    kept = (out / "test" / "00000" / "state.json").stat().st_mtime_ns
    # as if interrupted while writing the last shard: it and dataset.json are not there yet
    shutil.rmtree(out / "test" / "00001")
    (out / "dataset.json").unlink()
    sop.convert(raw, out, progress=False)
    assert (out / "test" / "00000" / "state.json").stat().st_mtime_ns == kept
    te, _ = table(out, "test")
    assert te["label"] == [2, 3, 3] and te["is_query"] == [True] * 3


def test_cub_splits_classes_in_half_and_ignores_the_classification_split(tmp_path, capsys):
    raw = tmp_path / "CUB_200_2011"
    names = ["001.Black_footed_Albatross", "002.Laysan_Albatross", "003.Sooty_Albatross", "004.Groove_billed_Ani"]
    images = [(1, "002.Laysan_Albatross/a.jpg", 2), (2, "001.Black_footed_Albatross/b.jpg", 1),
              (3, "004.Groove_billed_Ani/c.jpg", 4), (4, "003.Sooty_Albatross/d.jpg", 3),
              (5, "001.Black_footed_Albatross/e.jpg", 1)]
    raw.mkdir()
    (raw / "classes.txt").write_text("".join(f"{i} {n}\n" for i, n in enumerate(names, 1)))
    (raw / "images.txt").write_text("".join(f"{i} {p}\n" for i, p, _ in images))
    (raw / "train_test_split.txt").write_text("".join(f"{i} {i % 2}\n" for i, _, _ in images))
    for _, p, _ in images:
        img(raw / "images" / p)
    fails(cub, raw, tmp_path / "bad", capsys, "missing image_class_labels.txt")
    (raw / "image_class_labels.txt").write_text("".join(f"{i} {c}\n" for i, _, c in images))
    assert cub.main(["--raw", str(raw), "--out", str(tmp_path / "o"), "--quiet"]) == 0
    check_retrieval(tmp_path / "o", names,
                    [("images/002.Laysan_Albatross/a.jpg", 1), ("images/001.Black_footed_Albatross/b.jpg", 0),
                     ("images/001.Black_footed_Albatross/e.jpg", 0)],
                    [("images/004.Groove_billed_Ani/c.jpg", 3), ("images/003.Sooty_Albatross/d.jpg", 2)])
    (raw / "image_class_labels.txt").write_text("1 2\n2 x\n")
    fails(cub, raw, tmp_path / "bad", capsys, "image_class_labels.txt:2")


def test_cars196_pools_the_official_splits_and_splits_by_class(tmp_path, capsys):
    raw = tmp_path / "cars"
    names = ["AM General Hummer", "Acura RL", "Audi A5", "BMW M3"]
    fields = ["bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "fname"]
    annos = {"train": [(3, "00001.jpg"), (1, "00002.jpg"), (4, "00003.jpg")],
             "test": [(2, "00001.jpg"), (3, "00002.jpg")]}
    (raw / "devkit").mkdir(parents=True)
    for split, rows in annos.items():
        structs = struct([dict(zip(fields, (0, 0, 9, 9, c, f), strict=True)) for c, f in rows], fields)
        name = "devkit/cars_train_annos.mat" if split == "train" else "cars_test_annos_withlabels.mat"
        savemat(raw / name, {"annotations": structs})
        for _, f in rows:
            img(raw / f"cars_{split}" / f)
    fails(cars196, raw, tmp_path / "bad", capsys, "missing devkit/cars_meta.mat")
    savemat(raw / "devkit" / "cars_meta.mat", {"class_names": np.array(names, dtype=object).reshape(1, -1)})
    assert cars196.main(["--raw", str(raw), "--out", str(tmp_path / "o"), "--quiet"]) == 0
    check_retrieval(tmp_path / "o", names, [("cars_train/00002.jpg", 0), ("cars_test/00001.jpg", 1)],
                    [("cars_train/00001.jpg", 2), ("cars_train/00003.jpg", 3), ("cars_test/00002.jpg", 2)])


INSHOP = [("img/WOMEN/Dresses/id_00000002/02_1_front.jpg", "id_00000002", "train"),
          ("img/WOMEN/Dresses/id_00000002/02_2_side.jpg", "id_00000002", "train"),
          ("img/MEN/Denim/id_00000080/01_1_front.jpg", "id_00000080", "query"),
          ("img/MEN/Denim/id_00000080/01_2_side.jpg", "id_00000080", "gallery"),
          ("img/WOMEN/Tees/id_00000001/01_1_front.jpg", "id_00000001", "train"),
          ("img/WOMEN/Tees/id_00000007/01_1_front.jpg", "id_00000007", "gallery"),
          ("img/WOMEN/Tees/id_00000007/01_4_full.jpg", "id_00000007", "query"),
          ("img/WOMEN/Tees/id_00000007/01_7_back.jpg", "id_00000007", "gallery")]


def write_partition(path, rows, count=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    # the official file pads the columns with runs of spaces
    path.write_text(f"{len(rows) if count is None else count}\nimage_name item_id evaluation_status\n"
                    + "".join(f"{p:<60}{i}   {s}\n" for p, i, s in rows))


@pytest.mark.parametrize("layout", ["flat", "archive"])
def test_inshop_query_and_gallery_from_the_partition_file(tmp_path, capsys, layout):
    raw = tmp_path / "In-shop Clothes Retrieval Benchmark"
    # flat: list and img/ at --raw; archive: Eval/list_eval_partition.txt and Img/img/ as distributed
    listing = raw / ("list_eval_partition.txt" if layout == "flat" else "Eval/list_eval_partition.txt")
    for p, _, _ in INSHOP:
        img(raw / ("" if layout == "flat" else "Img") / p)
    fails(inshop, raw, tmp_path / "bad", capsys, "missing list_eval_partition.txt")
    write_partition(listing, INSHOP, count=9)
    fails(inshop, raw, tmp_path / "bad", capsys, "list_eval_partition.txt", "9 images")
    write_partition(listing, INSHOP)
    assert inshop.main(["--raw", str(raw), "--out", str(tmp_path / "o"), "--quiet"]) == 0
    classes = ["id_00000001", "id_00000002", "id_00000007", "id_00000080"]
    test = [r for r in INSHOP if r[2] != "train"]
    check_retrieval(tmp_path / "o", classes, [(p, classes.index(i)) for p, i, s in INSHOP if s == "train"],
                    [(p, classes.index(i)) for p, i, _ in test], queries=[s == "query" for _, _, s in test])
    write_partition(listing, [*INSHOP[:2], (INSHOP[2][0], "id_00000002", "query")])
    fails(inshop, raw, tmp_path / "bad", capsys, "list_eval_partition.txt", "id_00000002", "both train and test")
