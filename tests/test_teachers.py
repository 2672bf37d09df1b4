"""Distillation teachers from timm: `transfer evaluate timm:NAME --checkpoint FILE --recipe R --save-logits F`
writes what timm's model gives on timm's own preprocessing, one row per training sample in the training's
order, and the distillation of a training run reads row i for its sample i.

No download: the timm model is built with random weights and saved as timm publishes weights (safetensors).
"""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from transfer.cli import cli

from .training_helpers import tiny_recipe

timm = pytest.importorskip("timm")

NAME = "test_efficientnet"  # timm's 0.36M-parameter EfficientNet (160 px, crop_pct 0.95, bicubic)
CLASSES = 4  # the tiny recipe's embedded data
# A label budget: the training set is a seeded subset of the split, so training index i is not image i of the
# split, and an order that only looks right for the whole split shows up.
DATA = {"labels_per_class": 8}


def timm_weights(path, name: str = NAME, num_classes: int = CLASSES, seed: int = 0):
    """A random-init timm model, and its state_dict saved as timm publishes it (model.safetensors)."""
    from safetensors.torch import save_file

    torch.manual_seed(seed)
    model = timm.create_model(name, pretrained=False, num_classes=num_classes).eval()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return model


def by_hand(model, images) -> np.ndarray:
    """The reference: timm's transform for the model (the older resolve_data_config entry point) and the model
    itself, called directly, image by image."""
    from PIL import Image

    transform = timm.data.create_transform(**timm.data.resolve_data_config(model=model))
    with torch.no_grad():
        return np.stack([model(transform(Image.fromarray(im))[None])[0].numpy() for im in images])


def cli_ok(*args) -> dict:
    res = CliRunner().invoke(cli, [str(a) for a in args])
    assert res.exit_code == 0, res.output
    return json.loads(res.output.strip().splitlines()[-1])


def training_images(recipe):
    """The training's own records (the task's data: label budget applied) and the whole split they come from."""
    from transfer.data.sources import open_split
    from transfer.recipe import load_recipe
    from transfer.stages.tasks import task_for

    r = load_recipe(recipe)
    return task_for(r).open_data().train, open_split(r.data, r.data.train_split)


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    """(folder, timm model, the recipe, the saved logits, what evaluate printed, the model's logits by hand on
    each image of the split, by image id)."""
    tmp = tmp_path_factory.mktemp("teacher")
    model = timm_weights(tmp / "model.safetensors")
    recipe = tiny_recipe(tmp, "student.yaml", data=DATA)
    out = cli_ok("evaluate", f"timm:{NAME}", "--checkpoint", tmp / "model.safetensors", "--recipe", recipe,
                 "--save-logits", tmp / "teacher.npy", "--workers", "0", "--batch-size", "7", "--format", "json")
    _, split = training_images(recipe)
    reference = dict(zip(split.ids, by_hand(model, split.images), strict=True))  # by image, not by position
    return tmp, model, recipe, np.load(tmp / "teacher.npy"), out, reference


def test_the_logits_are_timms_on_timms_preprocessing_in_the_training_order(teacher):
    _, _, recipe, saved, out, reference = teacher
    train, split = training_images(recipe)
    assert len(train) == 32 and len(split) == 64
    assert train.ids != split.ids[:32]  # the subset is spread over the split: the order is not trivial
    expected = np.stack([reference[i] for i in train.ids])
    assert saved.shape == (32, CLASSES) and saved.dtype == np.float32
    assert np.abs(saved - expected).max() < 1e-6  # batches of 7 against one image at a time: ~2e-8
    assert np.abs(expected[1:] - expected[:-1]).max() > 1e-2  # the rows differ, so a shifted row would show
    assert out["model"] == f"timm:{NAME}" and out["count"] == 32 and out["split"] == "train"
    assert "160 px, crop_pct 0.95, bicubic" in out["preprocessing"]
    top1 = float(np.mean(expected.argmax(1) == train.labels))
    assert abs(out["top1"] - top1) < 1e-9


def test_the_distillation_reads_row_i_for_training_sample_i(teacher, monkeypatch):
    """A tiny KD run on the file: every sample of every (shuffled) batch gets softmax(row / T) of its own image."""
    from transfer.engine.objective import Objective
    from transfer.recipe import load_recipe
    from transfer.stages.train import run_training

    tmp, _, _, _, _, reference = teacher
    temperature = 2.0
    # no validation split: the run is only here to distil
    recipe = tiny_recipe(tmp, "kd.yaml", data={**DATA, "val_split": ""}, schedule={"epochs": 1},
                         regularization={"mixup": {"alpha": 0.0}, "distillation": {
                             "logits": str(tmp / "teacher.npy"), "temperature": temperature}},
                         output={"checkpoint_every_steps": 0})
    train, _ = training_images(recipe)
    seen = []
    prepare = Objective.prepare

    def spy(self, images, labels, indices, *layout):
        x, targets = prepare(self, images, labels, indices, *layout)
        seen.append((indices.clone(), labels.clone(), targets[1].clone()))
        return x, targets

    monkeypatch.setattr(Objective, "prepare", spy)
    summary = run_training(load_recipe(recipe), recipe_name="kd", out=str(tmp / "kd-run"), report=False)
    assert summary["status"] == "finished"
    indices = torch.cat([s[0] for s in seen])
    assert len(seen) == 2 and sorted(indices.tolist()) == list(range(32))
    assert indices.tolist() != sorted(indices.tolist())  # shuffled
    for idx, labels, probs in seen:
        expected = torch.softmax(torch.tensor(np.stack([reference[train.ids[i]] for i in idx])) / temperature, 1)
        assert (probs - expected).abs().max() < 1e-6
        assert labels.tolist() == [int(train.labels[i]) for i in idx]


def test_a_torch_state_dict_loads_as_the_safetensors_file_does(teacher):
    """timm also publishes pytorch_model.bin / .pth (torch.save of the state_dict), read with weights_only."""
    from transfer.models.teachers import load_timm_teacher

    tmp, model, *_ = teacher
    torch.save(model.state_dict(), tmp / "pytorch_model.bin")
    a = load_timm_teacher(f"timm:{NAME}", tmp / "pytorch_model.bin")
    b = load_timm_teacher(NAME, tmp / "model.safetensors")
    x = torch.randn(2, 3, 160, 160)
    with torch.no_grad():
        assert torch.equal(a.model(x), b.model(x)) and torch.allclose(a.model(x), model(x))
    assert a.num_classes == CLASSES


def one_error(*args) -> str:
    res = CliRunner().invoke(cli, [str(a) for a in args])
    errors = [line for line in res.output.splitlines() if line.startswith("error: ")]
    assert res.exit_code == 2 and len(errors) == 1 and "Traceback" not in res.output, res.output
    return errors[0]


def test_without_timm_one_line_says_to_install_the_extra(teacher, monkeypatch):
    tmp, *_ = teacher
    monkeypatch.setitem(sys.modules, "timm", None)  # `import timm` raises ImportError
    line = one_error("evaluate", f"timm:{NAME}", "--checkpoint", tmp / "model.safetensors", "--data", "embedded")
    assert "install the timm extra (uv run --extra timm" in line


@pytest.mark.parametrize(("args", "fragment"), [
    (["timm:efficientnet_b77"], "timm has no model 'efficientnet_b77' (did you mean"),
    ([f"timm:{NAME}.no_such_tag"], "has no weights tag 'no_such_tag' (it has: test_efficientnet.r160_in1k"),
    ([f"timm:{NAME}", "--checkpoint", "MISSING"], "does not exist"),
    ([f"timm:{NAME}", "--checkpoint", "OTHER"], f"does not hold timm's {NAME}: "),
    ([f"timm:{NAME}", "--checkpoint", "WIDE", "--recipe", "RECIPE"], "predicts 10 classes but the training images "
                                                                      "of RECIPE has 4"),
    ([f"timm:{NAME}"], "needs its weights file: --checkpoint PATH (timm publishes it as model.safetensors of "
                       "huggingface.co/timm/test_efficientnet.r160_in1k)"),
    (["RUN", "--checkpoint", "WEIGHTS"], "--checkpoint is the weights file of a timm:NAME model"),
    ([f"timm:{NAME}", "--checkpoint", "WEIGHTS", "--robustness"], "drop --robustness"),
    ([f"timm:{NAME}", "--checkpoint", "WEIGHTS", "--recipe", "RECIPE", "--split", "train"], "drop --split"),
    ([f"timm:{NAME}", "--checkpoint", "WEIGHTS", "NODATA"], "needs the images: --recipe "),
], ids=["unknown model", "unknown tag", "missing weights", "another model's weights", "other classes",
        "no weights file", "checkpoint without timm", "robustness", "recipe and split", "no data"])
def test_a_timm_mistake_is_one_line(teacher, args, fragment):
    tmp, _, recipe, *_ = teacher
    if not (tmp / "other.safetensors").exists():
        timm_weights(tmp / "other.safetensors", "resnet10t")
        timm_weights(tmp / "wide.safetensors", num_classes=10)
    files = {"MISSING": tmp / "nowhere.safetensors", "OTHER": tmp / "other.safetensors", "WEIGHTS":
             tmp / "model.safetensors", "WIDE": tmp / "wide.safetensors", "RUN": tmp / "other.safetensors",
             "RECIPE": recipe}
    data = [] if "--recipe" in args or "NODATA" in args else ["--data", "embedded"]
    line = one_error("evaluate", *[files.get(a, a) for a in args if a != "NODATA"], *data, "--workers", "0")
    assert fragment.replace("RECIPE", str(recipe)) in line, line


def test_this_packages_teacher_with_a_recipe_gives_its_outputs_in_the_training_class_order(teacher):
    """--recipe serves this package's weights too. Column j is the student's class j: a teacher whose classes
    are the training's in another order has its outputs reordered; one with other classes is one line."""
    from transfer.models import create_model
    from transfer.models.weights import save_weights

    tmp, _, recipe, *_ = teacher
    train, _ = training_images(recipe)
    model = create_model("assemble_resnet_tiny", width=0.125, sk_min_dim=4, num_classes=CLASSES)
    save_weights(model, tmp / "own.safetensors", class_names=list(train.classes))
    out = cli_ok("evaluate", tmp / "own.safetensors", "--recipe", recipe, "--save-logits", tmp / "own.npy",
                 "--workers", "0", "--format", "json")
    own = np.load(tmp / "own.npy")
    assert own.shape == (32, CLASSES) and out["count"] == 32
    # the same network, its outputs named in reverse: output k is the training's class 3 - k
    save_weights(model, tmp / "swapped.safetensors", class_names=list(reversed(train.classes)))
    swapped = cli_ok("evaluate", tmp / "swapped.safetensors", "--recipe", recipe, "--save-logits",
                     tmp / "swapped.npy", "--workers", "0", "--format", "json")
    assert np.abs(np.load(tmp / "swapped.npy") - own[:, ::-1]).max() < 1e-5
    assert abs(swapped["top1"] - np.mean(own[:, ::-1].argmax(1) == train.labels)) < 1e-9
    save_weights(model, tmp / "other.safetensors", class_names=["w", "x", "y", "z"])
    line = one_error("evaluate", tmp / "other.safetensors", "--recipe", recipe, "--workers", "0")
    assert "classes are not those of the training images of" in line and "'w' against" in line


def test_imagenet_outputs_follow_the_wordnet_ids_a_data_prep_folder_records(tmp_path):
    """timm's ImageNet head is in sorted-synset order (the package's own list of the 1000 synsets says which);
    data_prep/imagenet.py names its classes in the devkit's order and records their WordNet ids."""
    from types import SimpleNamespace

    from transfer.errors import ConfigError
    from transfer.models.teachers import load_timm_teacher
    from transfer.recipe import DataSection
    from transfer.stages.evaluation import output_columns

    timm_weights(tmp_path / "in1k.safetensors", num_classes=1000)
    synsets = (Path(__file__).resolve().parents[1] / "transfer/convert/imagenet_synsets.txt").read_text().split()
    assert load_timm_teacher(NAME, tmp_path / "in1k.safetensors").class_names == synsets
    names, wnids = ["kit fox", "tench", "goldfish"], ["n02119789", "n01440764", "n01443537"]  # devkit order
    (tmp_path / "dataset.json").write_text(json.dumps({"classes": names, "wnids": wnids}))
    data, records = DataSection(source="disk", path=str(tmp_path)), SimpleNamespace(classes=names)
    teacher_classes = sorted(wnids)  # n01440764, n01443537, n02119789
    assert output_columns(teacher_classes, records, data, "t", "d", strict=True) == [2, 0, 1]
    assert output_columns(names, records, data, "t", "d", strict=True) is None  # already in order
    assert output_columns(None, records, data, "t", "d", strict=True) is None  # a head of unknown classes
    with pytest.raises(ConfigError, match="classes are not those of d"):
        output_columns(["a", "b", "c"], records, data, "t", "d", strict=True)
