"""Every user mistake is one line `error: ...` naming what is wrong and how to fix it, exit status 2, never a
traceback. One row per mistake: recipes, data, weights, the command line, file systems.

`uv run --extra test python tools/mistakes.py` prints this table with each command's exit status and line.
"""

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from PIL import Image

from transfer.cli import cli

from .training_helpers import TINY, tiny_recipe


@dataclass
class Ctx:
    tmp: Path
    run: Path  # a finished tiny classification run

    def recipe(self, name: str = "r.yaml", **sections) -> Path:
        return tiny_recipe(self.tmp, name, **sections)

    def file(self, name: str, data: bytes | str) -> Path:
        p = self.tmp / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data.encode() if isinstance(data, str) else data)
        return p

    def folder(self, name: str, classes: dict[str, int]) -> Path:
        root = self.tmp / name
        for c, n in classes.items():
            (root / c).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                Image.new("RGB", (40, 40), (40 * i % 255, 80, 120)).save(root / c / f"{i}.png")
        return root


def yaml_recipe(ctx: Ctx, name: str, data) -> Path:
    return ctx.file(name, yaml.safe_dump(data))


def _bomb(ctx: Ctx) -> list:
    """A training folder where one image claims 20000 x 20000 pixels (a decompression bomb)."""
    root = ctx.folder("bomb", {"a": 8, "b": 8})
    Image.new("1", (20000, 20000)).save(root / "a" / "huge.png")
    return ["pretrain", ctx.recipe("bomb.yaml", data={"source": "folder", "path": str(root)},
                                   optim={"batch_size": 4}, schedule={"epochs": 1}),
            "--out", ctx.tmp / "bomb-run", "--set", "data.on_bad_image=fail"]


def _timm_weights(ctx: Ctx, name: str) -> Path:
    """timm's NAME with random weights, saved as timm publishes weights (model.safetensors)."""
    import timm
    from safetensors.torch import save_file

    path = ctx.tmp / f"{name}.safetensors"
    save_file({k: v.contiguous() for k, v in timm.create_model(name, num_classes=4).state_dict().items()}, str(path))
    return path


# (what the user did, argv given the context, a fragment the one line must hold)
MISTAKES = [
    # ---- recipes
    ("recipe file missing", lambda c: ["pretrain", c.tmp / "none.yaml"], "not found"),
    ("recipe is not YAML", lambda c: ["pretrain", c.file("bad.yaml", "optim: [1, 2\n")], "not valid YAML"),
    ("recipe is not UTF-8", lambda c: ["pretrain", c.file("latin.yaml", b"stage: pretrain\n# caf\xe9\n")],
     "not UTF-8"),
    ("recipe is a list", lambda c: ["pretrain", c.file("list.yaml", "- a\n- b\n")], "mapping"),
    ("base is a number", lambda c: ["pretrain", c.file("b3.yaml", "base: 3\n")], "base"),
    ("base file missing", lambda c: ["pretrain", c.file("b.yaml", "base: nowhere.yaml\n")], "does not exist"),
    ("base chain loops", lambda c: [c.file("loop2.yaml", "base: loop1.yaml\n") and "pretrain",
                                    c.file("loop1.yaml", "base: loop2.yaml\n")], "loops"),
    ("unknown key", lambda c: ["pretrain", c.recipe(optim={"lrr": 0.1})], "did you mean"),
    ("value of the wrong type", lambda c: ["pretrain", c.recipe(optim={"lr": "fast"})], "optim.lr"),
    ("--set into a number", lambda c: ["pretrain", c.recipe(), "--set", "optim.lr=0.1", "--set", "optim.lr.x=1"],
     "optim.lr"),
    ("--set without =", lambda c: ["pretrain", c.recipe(), "--set", "optim.lr"], "key.path=value"),
    ("--set of an unknown section", lambda c: ["pretrain", c.recipe(), "--set", "nosuch.key=1"], "nosuch"),
    ("unknown model", lambda c: ["pretrain", c.recipe(model={"name": "resnet5O"})], "resnet5O"),
    ("unknown model option", lambda c: ["pretrain", c.recipe(model={"options": {"widht": 0.5}})], "widht"),
    ("resolution the model cannot run at", lambda c: ["pretrain", c.recipe(
        model={"name": "assemble_resnet_tiny", "options": {}},
        augment={"train_resolution": 16, "eval_resolution": 16, "eval_resize": 16})], "resolution"),
    ("resolution below the schema's minimum", lambda c: ["pretrain", c.recipe(augment={"train_resolution": 8})],
     "train_resolution"),
    ("top-0", lambda c: ["pretrain", c.recipe(eval={"topk": [0]})], "topk"),
    ("crop area reversed", lambda c: ["pretrain", c.recipe(augment={"crop_area": [1.0, 0.5]})], "crop_area"),
    ("crop area empty", lambda c: ["pretrain", c.recipe(augment={"crop_area": []})], "crop_area"),
    ("crop aspect zero", lambda c: ["pretrain", c.recipe(augment={"crop_aspect": [0, 0]})], "crop_aspect"),
    ("device is not a device", lambda c: ["pretrain", c.recipe(), "--device", "banana"], "banana"),
    ("CUDA on a machine without it", lambda c: ["pretrain", c.recipe(), "--device", "cuda:7"], "cuda"),
    ("negative seed", lambda c: ["pretrain", c.recipe(runtime={"seed": -1})], "seed"),
    ("seed of 2**70", lambda c: ["pretrain", c.recipe(runtime={"seed": 2**70})], "seed"),
    ("batch size 0", lambda c: ["pretrain", c.recipe(), "--batch-size", "0"], "batch_size"),
    ("negative learning rate", lambda c: ["pretrain", c.recipe(optim={"lr": -0.1})], "optim.lr"),
    ("zero epochs", lambda c: ["pretrain", c.recipe(), "--epochs", "0"], "epochs"),
    ("label smoothing above 1", lambda c: ["pretrain", c.recipe(regularization={"label_smoothing": 1.5})],
     "label_smoothing"),
    ("mixup alpha negative", lambda c: ["pretrain", c.recipe(regularization={"mixup": {"alpha": -1}})], "alpha"),
    ("unknown stage", lambda c: ["pretrain", c.recipe(stage="warmup")], "stage"),
    ("unknown data source", lambda c: ["pretrain", c.recipe(data={"source": "imagenet"})], "data.source"),
    ("data path missing", lambda c: ["pretrain", c.recipe(data={"source": "folder", "path": str(c.tmp / "no")})],
     "not found"),
    ("batch larger than the data", lambda c: ["pretrain", c.recipe(), "--batch-size", "4096"], "batch"),
    ("accumulation does not divide the batch", lambda c: ["pretrain", c.recipe(optim={"accumulation": 3})],
     "divisible"),
    ("log every 0 steps", lambda c: ["pretrain", c.recipe(output={"log_every_steps": 0})], "log_every_steps"),
    ("teacher file missing", lambda c: ["pretrain", c.recipe(regularization={"distillation": {
        "teacher": str(c.tmp / "teacher.safetensors")}})], "teacher"),
    ("teacher logits of the wrong shape", lambda c: ["pretrain", c.recipe(regularization={"distillation": {
        "logits": str(_npy(c, "logits.npy", (3, 4)))}})], "shape"),
    ("teacher logits not made yet", lambda c: ["pretrain", c.recipe(regularization={"distillation": {
        "logits": str(c.tmp / "missing.npy")}})], "--recipe RECIPE --save-logits"),
    ("pretraining recipe given to finetune", lambda c: ["finetune", c.recipe()], "transfer pretrain"),
    # ---- data
    ("a folder with one class", lambda c: ["pretrain", c.recipe(data={"source": "folder", "path": str(
        c.folder("one", {"only": 6}))})], "class"),
    ("an empty image folder", lambda c: ["pretrain", c.recipe(data={"source": "folder", "path": str(
        c.folder("empty", {"a": 0, "b": 0}))})], "no images"),
    ("a CSV without a label column", lambda c: ["pretrain", c.recipe(data={"source": "csv", "path": str(
        c.file("d.csv", "path,split\nx.png,train\n"))})], "label"),
    ("a decompression bomb with on_bad_image=fail", _bomb, "unreadable image"),
    # ---- weights and the evaluation commands
    ("a random file named .safetensors to predict", lambda c: ["predict", c.file("junk.safetensors", b"\x00" * 64),
                                                               c.tmp], "safetensors"),
    ("a random file named .safetensors to evaluate", lambda c: ["evaluate", c.file("junk2.safetensors", b"xyz" * 9),
                                                                "--data", "embedded"], "safetensors"),
    ("predict --batch-size 0", lambda c: ["predict", c.run, c.tmp, "--batch-size", "0"], "batch-size"),
    ("predict on images that do not exist", lambda c: ["predict", c.run, c.tmp / "nope"], "neither"),
    ("predict --out onto the weights", lambda c: ["predict", c.run, c.tmp, "--out",
                                                  c.run / "weights" / "final.safetensors"], "predictions CSV"),
    ("evaluate --save-logits to a non-.npy", lambda c: ["evaluate", c.run, "--save-logits", c.tmp / "l.txt"],
     ".npy"),
    ("evaluate --batch-size 0", lambda c: ["evaluate", c.run, "--batch-size", "0"], "batch-size"),
    ("evaluate a run that does not exist", lambda c: ["evaluate", c.tmp / "norun"], "neither"),
    # timm teachers (`transfer evaluate timm:NAME --checkpoint FILE`; without timm: tests/test_teachers.py)
    ("an unknown timm model", lambda c: ["evaluate", "timm:efficientnet_b77", "--data", "embedded"],
     "timm has no model"),
    ("a timm model without its weights file", lambda c: ["evaluate", "timm:resnet10t", "--data", "embedded"],
     "--checkpoint PATH"),
    ("a timm model's weights file missing", lambda c: ["evaluate", "timm:resnet10t", "--checkpoint",
                                                      c.tmp / "none.safetensors", "--data", "embedded"],
     "does not exist"),
    ("another timm model's weights", lambda c: ["evaluate", "timm:resnet10t", "--checkpoint",
                                               _timm_weights(c, "test_vit"), "--data", "embedded"],
     "does not hold timm's resnet10t"),
    ("robustness at severity 9", lambda c: ["evaluate", c.run, "--robustness", "--severities", "9"], "severit"),
    ("robustness with an unknown corruption", lambda c: ["evaluate", c.run, "--robustness", "--corruptions",
                                                         "fog,smoke"], "smoke"),
    ("robustness --out onto a folder of other files", lambda c: ["evaluate", c.run, "--robustness", "--out",
                                                                 c.folder("pics", {"x": 1})], "choose another"),
    ("retrieve on a classification run", lambda c: ["retrieve", c.run], "retrieval"),
    ("retrieve an embeddings file that does not exist", lambda c: ["retrieve", "--embeddings", c.tmp / "e.npz"],
     "e.npz"),
    ("retrieve with an unknown metric", lambda c: ["retrieve", "--embeddings", _npz(c), "--eval", "recall@0"],
     "recall@0"),
    ("finetune from a backbone that does not exist", lambda c: ["finetune", "--backbone", c.tmp / "nobackbone"],
     "nobackbone"),
    ("finetune from a random file", lambda c: ["finetune", "--backbone", c.file("rnd.pth", b"\x80\x04junk")],
     "rnd.pth"),
    ("convert a path that does not exist", lambda c: ["convert", "official", c.tmp / "nockpt", "--out",
                                                      c.tmp / "o.safetensors"], "nockpt"),
    ("convert a non-checkpoint", lambda c: ["convert", "timm", c.file("t.pth", b"junk"), "--out",
                                            c.tmp / "o.safetensors"], "t.pth"),
    ("benchmark an unknown model", lambda c: ["benchmark", "resnet9000"], "resnet9000"),
    ("benchmark --batch-size 0", lambda c: ["benchmark", "resnet18", "--batch-size", "0"], "batch size"),
    # ---- command line and file system
    ("--resume without --out", lambda c: ["pretrain", "--resume"], "--out"),
    ("--resume of nothing", lambda c: ["pretrain", "--resume", "--out", c.tmp / "nothing"], "nothing to resume"),
    ("--out is a file", lambda c: ["pretrain", c.recipe(), "--out", c.file("afile", "x")], "afile"),
    ("--out holds somebody's files", lambda c: ["pretrain", c.recipe(), "--out", c.folder("theirs", {"x": 1})],
     "not empty"),
    ("--out holds a finished run", lambda c: ["pretrain", c.recipe(), "--out", c.run], "--resume"),
    ("demo --out holds files", lambda c: ["demo", "--quick", "--out", c.folder("demo-theirs", {"x": 1})],
     "choose another"),
    ("an unknown option", lambda c: ["pretrain", "--epochz", "3"], "--epochz"),
    ("an unknown command", lambda c: ["pretrian"], "pretrian"),
    ("a bad choice", lambda c: ["models", "--format", "xml"], "xml"),
]


def _npy(ctx: Ctx, name: str, shape) -> Path:
    path = ctx.tmp / name
    np.save(path, np.zeros(shape, np.float32))
    return path


def _npz(ctx: Ctx) -> Path:
    path = ctx.tmp / "emb.npz"
    np.savez(path, embeddings=np.eye(4, dtype=np.float32), labels=np.array([0, 0, 1, 1]))
    return path


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    import os

    tmp = tmp_path_factory.mktemp("mistakes")
    os.environ["TRANSFER_CACHE"] = str(tmp / "cache")
    os.environ["TRANSFER_RUNS"] = str(tmp / "runs")
    run = tmp / "run"
    res = CliRunner().invoke(cli, ["pretrain", str(tiny_recipe(tmp, schedule={"epochs": 1})), "--out", str(run)])
    assert res.exit_code == 0, res.output
    return Ctx(tmp, run)


def attempt(ctx: Ctx, make) -> tuple[int, str, BaseException | None]:
    """(exit status, output, an exception other than SystemExit) of the mistake."""
    args = [str(a) for a in make(ctx)]
    res = CliRunner().invoke(cli, args)
    unexpected = res.exception if res.exception is not None and not isinstance(res.exception, SystemExit) else None
    return res.exit_code, res.output, unexpected


@pytest.mark.parametrize(("what", "make", "fragment"), MISTAKES, ids=[m[0] for m in MISTAKES])
def test_a_mistake_is_one_line_and_exit_2(ctx, what, make, fragment):
    code, output, unexpected = attempt(ctx, make)
    assert unexpected is None, f"{what}: {type(unexpected).__name__}: {unexpected}"
    lines = [line for line in output.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert code == 2 and len(errors) == 1 and "Traceback" not in output, (code, output[-1500:])
    assert fragment in errors[0], errors[0]


def test_a_decompression_bomb_is_a_bad_image_that_is_skipped(ctx, caplog):
    import logging

    caplog.set_level(logging.INFO, logger="transfer")
    args = [str(a) for a in _bomb(ctx)[:-2]]  # on_bad_image: skip (the default)
    args[args.index("--out") + 1] = str(ctx.tmp / "bomb-skip")
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    assert "skipped 1 unreadable images" in caplog.text and "huge.png" in caplog.text
    assert json.loads((ctx.tmp / "bomb-skip" / "run.json").read_text())["status"] == "finished"


def test_the_tiny_recipe_is_valid_as_it_stands(ctx):
    """The rows above each change one thing of a recipe that is itself fine."""
    from transfer.recipe import load_recipe

    assert load_recipe(tiny_recipe(ctx.tmp, "valid.yaml")).model.name == TINY["model"]["name"]


def test_top_k_above_the_class_count_is_measured_and_top_1_always(ctx):
    """eval.topk [10] on 4 classes: top-10 is 1 by definition; top-1 is measured anyway (it picks the best)."""
    out = ctx.tmp / "top10"
    res = CliRunner().invoke(cli, ["pretrain", str(ctx.recipe("top10.yaml", eval={"topk": [10]},
                                                             schedule={"epochs": 1})), "--out", str(out)])
    assert res.exit_code == 0, res.output
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    val = [r for r in rows if r["kind"] == "val"][-1]
    assert val["top10"] == 1.0 and 0 <= val["top1"] <= 1 and "top5" not in val


def _flowers_with_corrupt_mat(tmp: Path) -> tuple:
    from data_prep import flowers

    raw = tmp / "flowers-raw"
    raw.mkdir()
    (raw / "imagelabels.mat").write_bytes(b"MATLAB 5.0 MAT-file" + b"\x00" * 20)
    (raw / "setid.mat").write_bytes(b"not a mat file")
    return flowers.main, raw


def _food101_with_malformed_json(tmp: Path) -> tuple:
    from data_prep import food101

    raw = tmp / "food-raw"
    (raw / "meta").mkdir(parents=True)
    (raw / "meta" / "classes.txt").write_text("apple_pie\n")
    (raw / "meta" / "train.json").write_text('{"apple_pie": ["apple_pie/1", ')
    return food101.main, raw


@pytest.mark.parametrize("make", [_flowers_with_corrupt_mat, _food101_with_malformed_json],
                         ids=["flowers: corrupt .mat files", "food101: malformed train.json"])
def test_a_damaged_official_archive_is_one_line(tmp_path, capsys, make):
    main, raw = make(tmp_path)
    assert main(["--raw", str(raw), "--out", str(tmp_path / "out"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {raw} does not read as the official"), err


def test_a_warm_up_longer_than_the_run_is_a_warning(ctx, caplog):
    import logging

    caplog.set_level(logging.INFO, logger="transfer")
    res = CliRunner().invoke(cli, ["pretrain", str(ctx.recipe("warm.yaml", schedule={"epochs": 1, "warmup_epochs": 4})),
                                   "--out", str(ctx.tmp / "warm")])
    assert res.exit_code == 0, res.output
    assert "schedule.warmup_epochs=4 is longer than the run (1 epochs)" in caplog.text and "0.25 of it" in caplog.text
