"""Fine-tuning: backbones, the classification report, predictions, the user's own data, and transfer itself."""

import csv
import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from transfer.cli import cli
from transfer.data.sources import DataError, open_split
from transfer.recipe import DataSection

from .test_data import jpeg
from .training_helpers import tiny_recipe, transfer_gain

DIGITS = {"source": "digits", "val_fraction": 0.3, "embedded": {"resolution": 32}}


@pytest.fixture(autouse=True)
def _env(tmp_path, monkeypatch):
    monkeypatch.setenv("TRANSFER_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TRANSFER_RUNS", str(tmp_path / "runs"))


def invoke(*args):
    res = CliRunner().invoke(cli, [str(a) for a in args])
    return res


def finetune_recipe(tmp_path, name="ft.yaml", **sections):
    base = {"stage": "finetune", "data": DIGITS, "augment": {"hflip": False},
            "regularization": {"mixup": {"alpha": 0.0}, "drop_block": {"keep_prob_start": 0.9, "keep_prob_end": 0.7}},
            "optim": {"lr": 0.2, "batch_size": 32, "bn_momentum_rule": True}, "schedule": {"epochs": 1},
            "output": {"checkpoint_every_steps": 0, "log_every_steps": 50}}
    from transfer.recipe import merge_dicts

    return tiny_recipe(tmp_path, name, **merge_dicts(base, sections))


def test_latest_backbone_missing_is_one_line(tmp_path):
    res = invoke("finetune", finetune_recipe(tmp_path), "--backbone", "latest", "--out", tmp_path / "ft")
    assert res.exit_code == 2
    assert res.output.strip().startswith("error: model.backbone=latest: no pretrain run found under")


def test_finetune_from_latest_pretrain_run_writes_the_report(tmp_path):
    pre = invoke("pretrain", tiny_recipe(tmp_path, schedule={"epochs": 1}))
    assert pre.exit_code == 0, pre.output
    out = tmp_path / "ft"
    res = invoke("finetune", finetune_recipe(tmp_path), "--backbone", "latest", "--out", out)
    assert res.exit_code == 0, res.output
    side = json.loads((out / "weights" / "final.json").read_text())
    assert side["class_names"] == [str(d) for d in range(10)] and "pretrain-tiny" in side["backbone"]
    report = out / "report"
    summary = json.loads((report / "summary.json").read_text())
    with (report / "predictions.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == summary["count"] == 540
    hits = sum(r["label"] == r["prediction"] for r in rows) / len(rows)
    assert summary["top1"] == pytest.approx(hits)  # the report agrees with its own predictions
    with (report / "per_class.csv").open() as f:
        per_class = {r["class"]: float(r["accuracy"]) for r in csv.DictReader(f)}
    for c in per_class:
        mine = [r for r in rows if r["label"] == c]
        assert per_class[c] == pytest.approx(sum(r["prediction"] == c for r in mine) / len(mine), abs=1e-6)
    assert (report / "confusion.png").read_bytes()[:4] == b"\x89PNG"
    for pair in summary["most_confused"]:
        assert pair["true"] != pair["predicted"] and pair["count"] == sum(
            r["label"] == pair["true"] and r["prediction"] == pair["predicted"] for r in rows)


def test_the_backbone_brings_its_architecture(tmp_path, caplog):
    """A recipe naming resnet50 fine-tunes a tiny assembled backbone: the sidecar says what the backbone is."""
    import logging

    import yaml

    caplog.set_level(logging.INFO, logger="transfer")
    pre = invoke("pretrain", tiny_recipe(tmp_path, schedule={"epochs": 1}), "--out", tmp_path / "pre")
    assert pre.exit_code == 0, pre.output
    recipe = yaml.safe_load(finetune_recipe(tmp_path).read_text())
    recipe["model"] = {"name": "resnet50"}
    path = tmp_path / "ft50.yaml"
    path.write_text(yaml.safe_dump(recipe))
    res = invoke("finetune", path, "--backbone", tmp_path / "pre", "--out", tmp_path / "ft")
    assert res.exit_code == 0, res.output
    side = json.loads((tmp_path / "ft" / "weights" / "final.json").read_text())
    assert side["architecture"] == "assemble_resnet_tiny" and side["overrides"]["width"] == 0.125
    assert "model: assemble_resnet_tiny, the architecture of the backbone" in caplog.text
    assert "new classifier (10 classes) on the backbone from" in caplog.text and "does not fit" not in caplog.text
    # options that contradict the backbone: one line that names them
    recipe["model"] = {"name": "resnet50", "options": {"width": 0.25}}
    path.write_text(yaml.safe_dump(recipe))
    res = invoke("finetune", path, "--backbone", tmp_path / "pre", "--out", tmp_path / "ft2")
    assert res.exit_code == 2 and "was made with width=0.125 and model.options sets width=0.25" in res.output


def test_torchvision_state_dict_as_backbone_and_bn_stats_left_alone(tmp_path):
    import torchvision

    tv = torchvision.models.resnet18()
    path = tmp_path / "tv18.pth"
    torch.save(tv.state_dict(), path)
    out = tmp_path / "ft"
    recipe = finetune_recipe(tmp_path, model={"name": "resnet18", "options": {"width": 1.0}, "restore_bn_stats": False,
                                              "backbone_lr_scale": 0.1},
                             data={"val_fraction": 0.9})
    res = invoke("finetune", recipe, "--backbone", path, "--out", out)
    assert res.exit_code == 0, res.output
    from safetensors.torch import load_file

    final = load_file(str(out / "weights" / "final.safetensors"))
    assert json.loads((out / "weights" / "final.json").read_text())["backbone"] == str(path)
    for ours, theirs in (("stem.conv1.weight", "conv1.weight"), ("stages.3.1.conv2.weight", "layer4.1.conv2.weight")):
        a, b = final[ours].flatten(), tv.state_dict()[theirs].flatten()
        # loaded, then nudged at 1/10 the lr (a fresh backbone would be near 0); the classifier starts as the
        # official one, Glorot-uniform (0.107 at 512 -> 10), so the first steps move the backbone by a few percent
        assert torch.nn.functional.cosine_similarity(a, b, dim=0) > 0.9
    assert final["fc.weight"].shape == (10, 512)


def make_images(root, classes, per_class):
    paths = []
    for c, color in classes.items():
        d = root / c
        d.mkdir(parents=True, exist_ok=True)
        for k in range(per_class):
            p = d / f"{k}.jpg"
            p.write_bytes(jpeg(color, size=(24, 24)))
            paths.append((p, c))
    return paths


def test_csv_without_split_is_split_reproducibly_and_recorded(tmp_path):
    paths = make_images(tmp_path / "imgs", {"red": (230, 10, 10), "blue": (10, 10, 230)}, 10)
    table = tmp_path / "data.csv"
    table.write_text("path,label\n" + "".join(f"{p.relative_to(tmp_path)},{c}\n" for p, c in paths))
    data = DataSection(source="csv", path=str(table), val_fraction=0.3, split_seed=4)
    train, val = open_split(data, "train"), open_split(data, "validation", ["blue", "red"])
    assert len(train) == 14 and len(val) == 6 and set(train.ids).isdisjoint(val.ids)
    assert np.bincount(val.labels).tolist() == [3, 3]  # stratified
    assert open_split(data, "train").ids == train.ids  # reproducible
    recipe = finetune_recipe(tmp_path, data={"source": "csv", "path": str(table), "val_fraction": 0.3},
                             model={"name": "resnet_tiny", "options": {"width": 0.125}},
                             optim={"batch_size": 7})
    res = invoke("finetune", recipe, "--out", tmp_path / "run")
    assert res.exit_code == 0, res.output
    with (tmp_path / "run" / "split.csv").open() as f:
        recorded = list(csv.DictReader(f))
    assert sum(r["split"] == "validation" for r in recorded) == 6 and len(recorded) == 20


def test_csv_errors_name_the_line(tmp_path):
    table = tmp_path / "bad.csv"
    table.write_text("path,label\na.jpg,cat\nb.jpg\n")
    with pytest.raises(DataError, match=r"bad\.csv:3: unreadable row"):
        open_split(DataSection(source="csv", path=str(table)), "train")
    table.write_text("file,class\na.jpg,cat\n")
    with pytest.raises(DataError, match=r"bad\.csv:1: the header must name the columns path,label"):
        open_split(DataSection(source="csv", path=str(table)), "train")
    table.write_text("path,label\na.jpg,cat\nb.jpg,dog\nc.jpg,dog\n")
    with pytest.raises(DataError, match=r"fewer than 2 images.*cat"):
        open_split(DataSection(source="csv", path=str(table)), "train")


def test_image_folder_without_splits_is_pooled_and_split(tmp_path):
    make_images(tmp_path / "pool", {"a": (200, 0, 0), "b": (0, 200, 0), "c": (0, 0, 200)}, 5)
    data = DataSection(source="folder", path=str(tmp_path / "pool"), val_fraction=0.4)
    train, val = open_split(data, "train"), open_split(data, "validation")
    assert (len(train), len(val)) == (9, 6) and train.classes == ["a", "b", "c"]


def test_predict_writes_a_csv_that_matches_the_model(tmp_path):
    pre = invoke("pretrain", tiny_recipe(tmp_path, schedule={"epochs": 1}), "--out", tmp_path / "run")
    assert pre.exit_code == 0, pre.output
    paths = make_images(tmp_path / "imgs", {"x": (250, 250, 250), "y": (20, 20, 20)}, 2)
    (tmp_path / "imgs" / "x" / "broken.jpg").write_bytes(b"nope")
    res = invoke("predict", tmp_path / "run", tmp_path / "imgs", "--topk", "2", "--out", tmp_path / "p.csv")
    assert res.exit_code == 0 and "wrote 5 predictions" in res.output
    with (tmp_path / "p.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 5 and set(rows[0]) >= {"path", "prediction", "probability", "prediction_2"}
    from PIL import Image

    from transfer.models import load_model

    model = load_model(tmp_path / "run" / "weights" / "best.safetensors").eval()
    classes = model.weights_metadata["class_names"]
    by_path = {r["path"]: r for r in rows}
    broken = by_path[str(tmp_path / "imgs" / "x" / "broken.jpg")]
    assert broken["prediction"] == broken["prediction_2"] == "" and broken["status"].startswith("unreadable: ")
    assert list(rows[0]) == ["path", "prediction", "probability", "prediction_2", "probability_2", "status"]
    assert sum(r["status"] == "ok" for r in rows) == 4
    for p, _ in paths:
        x = model.input_spec.eval_transform()(Image.open(p).convert("RGB"))
        with torch.no_grad():
            prob = model(x[None]).softmax(1)[0]
        assert by_path[str(p)]["prediction"] == classes[int(prob.argmax())]
        assert float(by_path[str(p)]["probability"]) == pytest.approx(float(prob.max()), abs=1e-5)
    assert invoke("predict", tmp_path / "run", tmp_path / "nothing").exit_code == 2
    # its own CSV is replaced; any other file is left alone (a weights file above all)
    assert invoke("predict", tmp_path / "run", tmp_path / "imgs", "--out", tmp_path / "p.csv").exit_code == 0
    weights = tmp_path / "run" / "weights" / "final.safetensors"
    before = weights.read_bytes()
    res = invoke("predict", tmp_path / "run", tmp_path / "imgs", "--out", weights)
    assert res.exit_code == 2 and "exists and is not a predictions CSV" in res.output
    assert weights.read_bytes() == before


def test_class_count_mismatch_between_data_and_head(tmp_path):
    res = invoke("finetune", finetune_recipe(tmp_path, model={"options": {"num_classes": 7}}))
    assert res.exit_code == 2
    assert "model.options.num_classes=7 but the data (digits) has 10 classes" in res.output


def test_pretrain_recipe_refused_by_finetune(tmp_path):
    res = invoke("finetune", tiny_recipe(tmp_path))
    assert res.exit_code == 2 and "is a pretraining recipe" in res.output


# Measured by `python benchmarks/transfer_gain.py --seeds 0,1,2,3,4` (session 13, AMD EPYC, 1 thread): gains
# +0.106 / +0.130 / +0.119 / +0.069 / +0.098; the margin is under half the smallest, for other CPU kinds
# (at 2 threads the same seeds gave +0.041 to +0.124: benchmarks/results/transfer_gain.json).
GAIN_MARGIN = 0.03


def test_pretraining_on_the_invented_alphabet_transfers_to_real_digits(tmp_path):
    """The point of the toolkit, small: 10 labelled digits per class, the same steps and seed, from the demo's
    glyph-pretrained backbone and from random init (training_helpers.transfer_gain). The margin is what held
    on seeds 0-4 with room to spare: benchmarks/transfer_gain.py, in the README's Reproducibility section."""
    top1 = transfer_gain(tmp_path)
    print(f"digits top-1 at 10 labels per class: pretrained {top1['pretrained']:.3f}, random {top1['random']:.3f}")
    assert top1["pretrained"] - top1["random"] >= GAIN_MARGIN, top1


def test_empty_class_is_one_line(tmp_path):
    from transfer.recipe import Recipe
    from transfer.stages.tasks import Classification

    make_images(tmp_path / "d" / "train", {"a": (200, 0, 0)}, 3)
    (tmp_path / "d" / "train" / "empty").mkdir()
    make_images(tmp_path / "d" / "validation", {"a": (200, 0, 0)}, 1)
    recipe = Recipe()
    recipe.data = DataSection(source="folder", path=str(tmp_path / "d"))
    with pytest.raises(DataError, match="classes without training images: empty; remove them or add images"):
        Classification(recipe).open_data()
