"""The training engine end to end: run directory, resume after SIGKILL, SIGTERM, non-finite loss, learning."""

import json
import signal
import subprocess
import time

import pytest
from click.testing import CliRunner
from safetensors.torch import load_file

from transfer.cli import cli
from transfer.engine.checkpoint import load_checkpoint

from .training_helpers import cli_env, run_cli, tiny_recipe, transfer_cmd


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TRANSFER_CACHE", str(tmp_path / "cache"))


def test_run_directory_holds_everything(tmp_path):
    recipe = tiny_recipe(tmp_path, output={"plots": True})
    out = tmp_path / "run"
    res = CliRunner().invoke(cli, ["pretrain", str(recipe), "--out", str(out), "--epochs", "2"])
    assert res.exit_code == 0, res.output
    info = json.loads((out / "run.json").read_text())
    assert info["stage"] == "pretrain" and info["status"] == "finished" and info["steps"] == 8
    assert "epochs: 2" in (out / "recipe.yaml").read_text()
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if r["kind"] == "train"]
    val = [r for r in rows if r["kind"] == "val"]
    assert [r["step"] for r in train] == list(range(1, 9)) and len(val) == 2
    assert all({"loss", "lr", "keep_prob", "images_per_second"} <= set(r) for r in train)
    assert train[-1]["keep_prob"] == pytest.approx(0.9)
    assert {"top1", "top5", "loss"} <= set(val[-1])
    side = json.loads((out / "weights" / "final.json").read_text())
    assert side["class_names"] == ["disc", "square", "triangle", "star"]
    assert side["input"]["train_resolution"] == 32 and side["recipe_hash"] == info["recipe_hash"]
    assert (out / "weights" / "best.safetensors").is_file()
    for name in ("loss", "lr", "accuracy"):
        assert (out / "plots" / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(out / "tb"))
    acc.Reload()
    assert {"train/loss", "train/lr", "val/top1"} <= set(acc.Tags()["scalars"])
    assert [e.step for e in acc.Scalars("train/loss")] == list(range(1, 9))
    # evaluate the run: the same top-1 as its best validation
    res = CliRunner().invoke(cli, ["evaluate", str(out), "--format", "json", "--workers", "0"])
    assert res.exit_code == 0, res.output
    best = max(v["top1"] for v in val)
    assert json.loads(res.output)["top1"] == pytest.approx(best) and json.loads(res.output)["count"] == 24
    # a run's own weights file evaluates on the run's data, no --data needed: the final weights, the last top-1
    res = CliRunner().invoke(cli, ["evaluate", str(out / "weights" / "final.safetensors"), "--format", "json",
                                   "--workers", "0"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["top1"] == pytest.approx(val[-1]["top1"])


def wait_for_checkpoint(path, proc, timeout=120):
    start = time.time()
    while not path.is_file():
        assert proc.poll() is None, proc.stderr.read()
        assert time.time() - start < timeout
        time.sleep(0.005)


def final_weights(run):
    return load_file(str(run / "weights" / "final.safetensors"))


def test_sigterm_writes_a_checkpoint_and_exits_cleanly(tmp_path):
    recipe = tiny_recipe(tmp_path, schedule={"epochs": 30}, output={"checkpoint_every_steps": 0})
    out = tmp_path / "run"
    proc = subprocess.Popen(transfer_cmd("pretrain", recipe, "--out", out), env=cli_env(tmp_path),
                            stderr=subprocess.PIPE, text=True)
    wait_for_checkpoint(out / "checkpoints" / "last.pt", proc)  # the end of epoch 1
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err  # the shell's convention: `&&` does not go on
    assert "stopped by SIGTERM" in err and "--resume" in err
    assert json.loads((out / "run.json").read_text())["status"] == "preempted"
    step = load_checkpoint(out / "checkpoints" / "last.pt")["train"]["step"]
    assert 4 <= step < 120


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    recipe = tiny_recipe(tmp_path, optim={"lr": 1.0e12}, schedule={"warmup_epochs": 0},
                         output={"checkpoint_every_steps": 1})
    out = tmp_path / "run"
    res = run_cli(tmp_path, "pretrain", recipe, "--out", out, check=False)
    assert res.returncode == 2
    line = res.stderr.strip().splitlines()[-1]
    assert line.startswith("error: loss is not finite at step") and "last good checkpoint" in line
    ckpt = load_checkpoint(out / "checkpoints" / "last.pt")
    failed_step = int(line.split("at step ")[1].split()[0])
    assert ckpt["train"]["step"] == failed_step - 1 and f"(step {failed_step - 1})" in line
    assert json.loads((out / "run.json").read_text())["status"] == "failed"


def test_tiny_pretrain_beats_chance_by_a_wide_margin(tmp_path):
    res = 48
    recipe = tiny_recipe(tmp_path, model={"name": "resnet_tiny", "options": {}},
                         data={"embedded": {"classes": 4, "train_per_class": 128, "val_per_class": 16,
                                            "resolution": res}},
                         augment={"train_resolution": res, "eval_resolution": res, "eval_resize": res,
                                  "crop_area": [0.6, 1.0]},
                         optim={"lr": 0.4, "batch_size": 32}, schedule={"epochs": 10, "warmup_epochs": 1},
                         regularization={"mixup": {"alpha": 0.0}, "drop_block": {"keep_prob_end": 1.0}},
                         output={"checkpoint_every_steps": 0, "log_every_steps": 100})
    res = CliRunner().invoke(cli, ["pretrain", str(recipe), "--out", str(tmp_path / "run")])
    assert res.exit_code == 0, res.output
    best = json.loads((tmp_path / "run" / "run.json").read_text())["best"]
    assert best >= 0.55, best  # chance is 0.25 (measured: 0.73)


def test_resume_and_out_errors(tmp_path):
    res = CliRunner().invoke(cli, ["pretrain", str(tiny_recipe(tmp_path)), "--resume"])
    assert res.exit_code == 2 and "--resume needs --out" in res.output
    res = CliRunner().invoke(cli, ["pretrain", "--resume", "--out", str(tmp_path / "none")])
    assert res.exit_code == 2 and "nothing to resume" in res.output
    res = CliRunner().invoke(cli, ["pretrain", "no_such_recipe"])
    assert res.exit_code == 2 and "recipe 'no_such_recipe' not found" in res.output
    res = CliRunner().invoke(cli, ["pretrain", str(tiny_recipe(tmp_path)), "--set", "optim.lr=-1"])
    assert res.exit_code == 2 and "optim.lr: -1" in res.output and "out of range" in res.output


def write_folder_dataset(root, bad: bool):
    from tests.test_data import jpeg

    for split, per in (("train", 8), ("validation", 2)):
        for c, color in enumerate([(220, 20, 20), (20, 220, 20)]):
            d = root / split / f"c{c}"
            d.mkdir(parents=True)
            for k in range(per):
                (d / f"{k}.jpg").write_bytes(jpeg(color, size=(40, 40)))
    if bad:
        (root / "train" / "c0" / "broken.jpg").write_bytes(b"not a jpeg at all")


@pytest.mark.parametrize("policy", ["skip", "fail"])
def test_bad_images_are_counted_and_reported_or_fatal(tmp_path, policy):
    write_folder_dataset(tmp_path / "data", bad=True)
    recipe = tiny_recipe(tmp_path, data={"source": "folder", "path": str(tmp_path / "data"), "on_bad_image": policy},
                         schedule={"epochs": 1}, optim={"batch_size": 17}, runtime={"precision": "bf16",
                                                                                      "channels_last": True},
                         output={"checkpoint_every_steps": 0})
    res = run_cli(tmp_path, "pretrain", recipe, "--out", tmp_path / "run", check=False)
    if policy == "skip":
        assert res.returncode == 0, res.stderr[-2000:]
        assert "epoch 1: skipped 1 unreadable images (first: " in res.stderr and "broken.jpg" in res.stderr
    else:
        assert res.returncode == 2
        last = res.stderr.strip().splitlines()[-1]
        assert last.startswith("error: unreadable image ") and "broken.jpg" in last and "on_bad_image" in last


def test_distillation_from_precomputed_logits_and_from_a_teacher(tmp_path):
    import numpy as np

    base = tiny_recipe(tmp_path, schedule={"epochs": 1}, output={"checkpoint_every_steps": 0})
    teacher_run = tmp_path / "teacher"
    run_cli(tmp_path, "pretrain", base, "--out", teacher_run)
    logits_file = tmp_path / "logits.npy"
    res = CliRunner().invoke(cli, ["evaluate", str(teacher_run), "--split", "train", "--workers", "0",
                                   "--save-logits", str(logits_file), "--format", "json"])
    assert res.exit_code == 0, res.output
    logits = np.load(logits_file)
    assert logits.shape == (64, 4)
    for kd in ({"logits": str(logits_file)}, {"teacher": str(teacher_run / "weights" / "final.safetensors")}):
        recipe = tiny_recipe(tmp_path, "kd.yaml", regularization={"distillation": {**kd, "temperature": 2.0}},
                             schedule={"epochs": 1}, optim={"grad_clip": 1.0}, output={"checkpoint_every_steps": 0})
        out = tmp_path / f"kd-{next(iter(kd))}"
        res = CliRunner().invoke(cli, ["pretrain", str(recipe), "--out", str(out)])
        assert res.exit_code == 0, res.output
        assert json.loads((out / "run.json").read_text())["status"] == "finished"
    np.save(logits_file, logits[:10])
    recipe = tiny_recipe(tmp_path, "bad.yaml", regularization={"distillation": {"logits": str(logits_file)}})
    res = CliRunner().invoke(cli, ["pretrain", str(recipe), "--out", str(tmp_path / "bad")])
    assert res.exit_code == 2 and "has shape (10, 4), expected (64, 4)" in res.output


def test_runtime_threads_holds_for_the_stage_and_is_given_back(tmp_path, monkeypatch):
    import torch

    from transfer.engine.trainer import Trainer
    from transfer.recipe import load_recipe
    from transfer.stages.train import run_training

    seen = []
    fit = Trainer.fit

    def recording_fit(self, *a, **k):
        seen.append(torch.get_num_threads())
        return fit(self, *a, **k)

    monkeypatch.setattr(Trainer, "fit", recording_fit)
    before = torch.get_num_threads()
    want = 1 if before != 1 else 2
    recipe = load_recipe(tiny_recipe(tmp_path, schedule={"epochs": 1}, runtime={"threads": want}))
    assert run_training(recipe, recipe_name="tiny", out=str(tmp_path / "run"), report=False)["status"] == "finished"
    assert seen == [want] and torch.get_num_threads() == before
