"""A tiny recipe for training tests: a 1/8-width assembled model on 32 px embedded images."""

import os
import subprocess
import sys
from pathlib import Path

import yaml

from transfer.recipe import merge_dicts

TINY = {
    "stage": "pretrain",
    "model": {"name": "assemble_resnet_tiny", "options": {"width": 0.125, "sk_min_dim": 4}},
    "data": {"source": "embedded", "embedded": {"classes": 4, "train_per_class": 16, "val_per_class": 6,
                                                  "resolution": 32}},
    "augment": {"train_resolution": 32, "eval_resolution": 32, "eval_resize": 32, "crop_area": [0.5, 1.0]},
    "optim": {"lr": 0.4, "batch_size": 16},
    "schedule": {"epochs": 3, "warmup_epochs": 0.5},
    "regularization": {"label_smoothing": 0.1, "mixup": {"alpha": 0.2},
                       "drop_block": {"keep_prob_start": 1.0, "keep_prob_end": 0.9}},
    "runtime": {"workers": 0},
    # Plots cost a second a run (pyplot's import and rendering): only the run-directory test draws them.
    "output": {"checkpoint_every_steps": 2, "log_every_steps": 1, "plots": False},
}


def tiny_recipe(tmp_path: Path, name: str = "tiny.yaml", **sections) -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(merge_dicts(TINY, sections)))
    return path


def cli_env(tmp_path: Path) -> dict:
    env = dict(os.environ, TRANSFER_CACHE=str(tmp_path / "cache"), PYTHONUNBUFFERED="1")
    env.pop("WORLD_SIZE", None)
    return env


def transfer_cmd(*args) -> list[str]:
    return [sys.executable, "-m", "transfer", *map(str, args)]


def run_cli(tmp_path: Path, *args, check: bool = True) -> subprocess.CompletedProcess:
    res = subprocess.run(transfer_cmd(*args), capture_output=True, text=True, env=cli_env(tmp_path), timeout=300)
    if check and res.returncode != 0:
        raise AssertionError(f"transfer {' '.join(map(str, args))} failed ({res.returncode}):\n{res.stderr[-3000:]}")
    return res
