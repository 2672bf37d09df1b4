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


def run_cli(tmp_path: Path, *args, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
    res = subprocess.run(transfer_cmd(*args), capture_output=True, text=True, env=cli_env(tmp_path), timeout=timeout)
    if check and res.returncode != 0:
        raise AssertionError(f"transfer {' '.join(map(str, args))} failed ({res.returncode}):\n{res.stderr[-3000:]}")
    return res


# ---------------------------------------------------------------------------------------------- run artefacts
_TIMES = ("time", "images_per_second", "updated", "created")  # wall-clock values: they differ run to run


def tensorboard_scalars(tb: Path) -> list[tuple[str, int, float]]:
    """Every scalar event under tb/ as (tag, step, value), in file order."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    from tensorboard.util import tensor_util

    out = []
    for f in sorted(tb.glob("events.out.tfevents.*")):
        for event in EventFileLoader(str(f)).Load():
            for v in event.summary.value:
                value = v.simple_value if v.HasField("simple_value") else float(tensor_util.make_ndarray(v.tensor))
                out.append((v.tag, event.step, round(value, 6)))
    return out


def _npz(path: Path) -> dict:
    """An .npz's arrays as bytes (the zip itself records the time it was written)."""
    import numpy as np

    with np.load(path) as z:
        return {k: (z[k].dtype.str, z[k].shape, z[k].tobytes()) for k in z.files}


def run_artefacts(run: Path) -> dict:
    """What a finished run gives its user, with wall-clock values left out: weights files (bytes), sidecars,
    run.json, metrics.jsonl rows, TensorBoard scalars, and every file of plots/, report/ and retrieval/."""
    import json

    out = {}
    for f in sorted((run / "weights").iterdir()):
        out[f"weights/{f.name}"] = json.loads(f.read_text()) if f.suffix == ".json" else f.read_bytes()
    out["run.json"] = {k: v for k, v in json.loads((run / "run.json").read_text()).items() if k not in _TIMES}
    out["metrics"] = [{k: v for k, v in json.loads(line).items() if k not in _TIMES}
                      for line in (run / "metrics.jsonl").read_text().splitlines()]
    out["tb"] = sorted(e for e in tensorboard_scalars(run / "tb") if not e[0].endswith(_TIMES))
    for folder in ("plots", "report", "retrieval"):
        for f in sorted((run / folder).rglob("*")) if (run / folder).is_dir() else []:
            out[str(f.relative_to(run))] = _npz(f) if f.suffix == ".npz" else f.read_bytes()
    out["temporaries"] = sorted(str(p.relative_to(run)) for p in run.rglob("*.tmp"))
    return out


def assert_same_artefacts(got: dict, want: dict) -> None:
    assert got.keys() == want.keys(), sorted(set(got) ^ set(want))
    different = [k for k in want if got[k] != want[k]]
    assert not different, {k: (str(got[k])[:300], str(want[k])[:300]) for k in different[:3]}
    steps = [(tag, step) for tag, step, _ in got["tb"]]
    assert len(steps) == len(set(steps)), "a TensorBoard step is written twice"


# The transfer-gain check, small: the demo's own recipes (recipes/demo/), a shorter pretraining on fewer
# glyphs, then 10 labelled digits per class fine-tuned from that backbone and from random init with the same
# steps and seed. tests/test_finetune.py runs seed 0; benchmarks/transfer_gain.py runs seeds 0-4 and thread
# counts, which is where the test's margin comes from.
GAIN_PRETRAIN = {"data": {"embedded": {"classes": 32, "train_per_class": 40, "val_per_class": 4}},
                 "schedule": {"epochs": 8}}
GAIN_LABELS, GAIN_STEPS, GAIN_EPOCHS = 10, 150, 2
# One network thread and one loader worker, as the demo recipes run (one core each on 2 cores).
QUIET = {"output": {"checkpoint_every_steps": 0, "log_every_steps": 1000, "plots": False, "tensorboard": False},
         "runtime": {"workers": 1, "threads": 1}}


def transfer_gain(tmp_path: Path, seed: int = 0, threads: int = 1) -> dict[str, float]:
    """{"pretrained": top-1, "random": top-1} on the 540 held-out digits, the last validation of each run."""
    import json

    from transfer.recipe import load_recipe
    from transfer.recipes import find_recipe
    from transfer.stages.demo import budget_schedule
    from transfer.stages.train import run_training

    seeded = merge_dicts(QUIET, {"runtime": {"seed": seed, "threads": threads}})
    pre = load_recipe(find_recipe("demo/pretrain.yaml"), merge_dicts(seeded, GAIN_PRETRAIN))
    run_training(pre, recipe_name="pretrain", out=str(tmp_path / "pre"), report=False)
    ft = load_recipe(find_recipe("demo/finetune.yaml"))
    schedule = budget_schedule(10 * GAIN_LABELS, ft.optim.batch_size, GAIN_STEPS, GAIN_EPOCHS)
    top1 = {}
    for init, backbone in (("pretrained", str(tmp_path / "pre")), ("random", None)):
        over = merge_dicts(seeded, {"model": {"backbone": backbone}, "data": {"labels_per_class": GAIN_LABELS},
                                    **schedule})
        run_training(load_recipe(find_recipe("demo/finetune.yaml"), over), recipe_name="finetune",
                     out=str(tmp_path / init), report=False)
        top1[init] = json.loads((tmp_path / init / "weights" / "final.json").read_text())["metrics"]["top1"]
    return top1
