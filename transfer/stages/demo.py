"""`transfer demo`: the whole pipeline, real and small, on a CPU in minutes, centred on the label budget.

    DEMO/pretrain/                            the backbone, pretrained on an invented alphabet (glyphs)
    DEMO/finetune-{pretrained,random}[-N]/    digits classification at N labelled digits per class (5, 10,
                                              25; no suffix: all), from that backbone and from scratch
    DEMO/retrieval-{pretrained,random}/       zero-shot digit retrieval (train 0-4, search 5-9), both ways
    DEMO/finetune-*/robustness/               corruption errors and unnormalised mCE (all-label classifiers)
    DEMO/corrupted/                           the corrupted held-out digits both evaluations read (JPEG)
    DEMO/figures/, summary.json, report.md, report.html

With several seeds (`transfer demo --seeds 0,1,2,3,4`) each seed's demo goes to DEMO/seed-N/ and DEMO/report.html
says, for every comparison, each seed's difference and whether the gain held on all of them (seeds.json).

DEMO/demo.json records the settings and each finished stage's seconds. A demo stopped at any moment (a signal
stops the stage under way as `--resume` expects) continues with `transfer demo --resume --out DEMO`: finished
stages are kept, the stopped one resumes from its checkpoint, and the rest run (the linear baselines, seconds
of work, are redone); the summary and report are those
of an uninterrupted demo, but for the seconds (a resumed stage counts only its time after the resume).

Beside each budget's two fine-tunings, two linear baselines on the same images (probes.py). Every figure in
the report is computed by this run; nothing is copied in.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np

from ..errors import TransferError
from ..files import TEMP_SUFFIX, OutputError, atomic_write_bytes, make_dir, remove_temporaries
from ..recipe import load_recipe, merge_dicts
from ..recipes import find_recipe
from ..runs import resolve_weights
from .demo_report import DemoResult, write_report, write_seeds_report

log = logging.getLogger("transfer")

# `quick` shrinks every stage to seconds: for tests and smoke checks, not for reading the numbers.
_SMALL = {"model": {"options": {"width": 0.125, "sk_min_dim": 4}}, "schedule": {"epochs": 1}}
QUICK = {
    "pretrain": {**_SMALL, "data": {"embedded": {"classes": 6, "train_per_class": 24, "val_per_class": 8}}},
    "finetune": {**_SMALL, "data": {"val_fraction": 0.5}},
    "retrieval": _SMALL,
}
# The label budgets of the fine-tuning runs: labelled digits per class (None: all 1,257 training digits).
BUDGETS = (5, 10, 25, None)
# The optimizer steps of a fine-tuning run at each budget, the same from both initialisations: a small budget
# gets more passes over its images an epoch (schedule.epoch_repeats), not fewer updates. Measured over seeds
# 0-4 (README, demo section): at 200 steps on all 1,257 digits (10 passes under AutoAugment) the backbone's
# classifier stopped at 0.961-0.978, below the pixel baseline's 0.972 on two seeds; 300 steps give
# 0.976-0.989. The small budgets take 150: the comparison is at a small, equal compute budget, where the
# backbone pays; with 300 steps random init catches up at 10 labels (gains +0.03 to +0.11).
FINETUNE_STEPS = {5: 150, 10: 150, 25: 150, None: 300}
FINETUNE_EPOCHS = 8  # validated every 2: four points on the curves; the figure reported is the last
QUICK_STEPS, QUICK_EPOCHS, QUICK_BUDGETS = 8, 2, (5, None)
# Robustness on half the held-out digits (270 of 540, spread over the classes: robustness.spread_indices), and
# the chart and report say so: on all 540 the two classifiers' corruptions took 126 of the demo's 600 s (seed
# 0, idle). --quick takes 150 at one severity: robustness was two thirds of the quick demo's time.
ROBUSTNESS = {"full": {"limit": 270, "severities": "1,3,5"}, "quick": {"limit": 150, "severities": "3"}}
STAGE = {"pretrain": "pretrain (invented alphabet)", "finetune": "fine-tune (digits)",
         "retrieval": "retrieval (digits 5-9, unseen)", "robustness": "robustness (digits, 15 corruptions)"}


def _recipe(recipe_name: str, overrides: dict):
    return load_recipe(find_recipe(recipe_name), overrides, source=recipe_name)


class DemoStopped(Exception):
    """A stage was stopped by a signal and left for --resume: the demo stops with it (exit 128 + signal)."""

    def __init__(self, exit_code: int, demo: Path):
        super().__init__(f"the demo stopped; continue it with `transfer demo --resume --out {demo}`")
        self.exit_code = exit_code


def _train(recipe_name: str, out: Path, overrides: dict, report: bool = True) -> dict:
    """One stage's training run in `out`: new, or continued where a stopped demo left it (a finished run is
    kept as it is). A stop signal during it stops the demo."""
    from .train import run_training

    summary = run_training(_recipe(recipe_name, overrides), recipe_name=Path(recipe_name).stem, out=str(out),
                           report=report, resume=(out / "recipe.yaml").is_file())
    if summary.get("status") == "preempted":
        raise DemoStopped(summary.get("exit_code") or 1, out.parent)
    return summary


def budget_schedule(n_train: int, batch_size: int, steps: int, epochs: int) -> dict:
    """The schedule overrides that give a run on n_train images about `steps` optimizer steps in `epochs`."""
    repeats = max(1, round(steps * batch_size / (epochs * n_train)))
    return {"schedule": {"epochs": epochs, "epoch_repeats": repeats},
            "eval": {"every_epochs": max(1, epochs // 4)}}


def run_name(init: str, budget: int | None) -> str:
    return f"finetune-{init}" if budget is None else f"finetune-{init}-{budget}"


def final_top1(run: Path) -> float:
    """The last validation's top-1 (weights/final): no choice made on the held-out digits."""
    return json.loads((run / "weights" / "final.json").read_text())["metrics"]["top1"]


def _new_folder(out: str | Path) -> Path:
    """The demo's folder, made new: it never writes into what it did not create."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(not _temporary(p) for p in out.iterdir())):
        resume = " (or continue the demo in it with --resume)" if (out / DEMO_FILE).is_file() else ""
        raise OutputError(f"--out {out} exists and is not an empty folder; the demo writes a new folder: choose "
                          f"another --out{resume}")
    if out.is_dir():
        remove_temporaries(out)  # all an empty folder can hold: what a demo killed at its first write left
    return make_dir(out)


def _temporary(p: Path) -> bool:
    return p.name.startswith(".") and p.name.endswith(TEMP_SUFFIX)


CORRUPTED = "corrupted"  # the corrupted held-out digits as JPEGs, shared by the two robustness evaluations
DEMO_FILE = "demo.json"  # {"settings": what the demo was started with, "seconds": each finished stage's}


def demo_settings(out: str | Path) -> dict:
    """The settings a demo folder was started with (to continue it with the same), or a one-line error."""
    f = Path(out) / DEMO_FILE
    if not f.is_file():
        raise TransferError(f"nothing to resume in {out}: it holds no demo ({DEMO_FILE}); start without --resume")
    return json.loads(f.read_text())["settings"]


def _demo_folder(out: Path, settings: dict, resume: bool) -> dict[str, float]:
    """The folder, new or (resume) the one these settings started; the seconds its finished stages took."""
    if not resume:
        _new_folder(out)
        _record(out, settings, {})
        return {}
    if demo_settings(out) != settings:
        raise TransferError(f"{out} is a demo with {demo_settings(out)}, not {settings}; resume it with its own "
                            f"settings (leave out --seed, --seeds and --quick)")
    return dict(json.loads((out / DEMO_FILE).read_text()).get("seconds", {}))


def _record(out: Path, settings: dict, seconds: dict[str, float]) -> None:
    atomic_write_bytes(out / DEMO_FILE, (json.dumps({"settings": settings, "seconds": seconds}, indent=2) + "\n"
                                         ).encode())


def run_demo(out: str | Path, *, seed: int = 0, quick: bool = False, workers: int = 1,
             resume: bool = False) -> DemoResult:
    from ..data.sources import labelled_subset, open_split
    from .probes import digit_pixels, frozen_features, linear_top1

    out = Path(out)
    started = {"seed": seed, "quick": quick, "workers": workers}
    res = DemoResult(out)
    done = _demo_folder(out, started, resume)
    shrink = QUICK if quick else {}
    base = {"runtime": {"seed": seed, "workers": workers}}

    def timed(name: str, fn):
        t = time.perf_counter()
        log.info("demo: %s%s", name, " (finished before the resume)" if name in done else "")
        value = fn()  # a finished stage is read back, not redone: its seconds are the first run's
        res.seconds[name] = done[name] if name in done else time.perf_counter() - t
        _record(out, started, res.seconds)
        return value

    pre = timed("pretrain", lambda: _train("demo/pretrain.yaml", out / "pretrain",
                                           merge_dicts(base, shrink.get("pretrain", {}))))
    res.rows.append({"stage": STAGE["pretrain"], "init": "random", "metric": "top-1",
                     "value": pre.get("best_top1"), "labels_per_class": None})
    backbones = {"pretrained": str(out / "pretrain"), "random": None}
    backbone_weights = resolve_weights(out / "pretrain")  # what the fine-tuning runs start from

    # The label-budget experiment: each budget fine-tuned both ways, and two linear baselines on exactly
    # those training images, all scored on the same held-out digits.
    recipe = _recipe("demo/finetune.yaml", merge_dicts(base, shrink.get("finetune", {})))
    data = recipe.data
    train_all = open_split(data, data.train_split)
    val = open_split(data, data.val_split, train_all.classes)
    val_pixels, val_frozen = digit_pixels(val, data, data.val_split), frozen_features(backbone_weights, val)
    frozen_all = frozen_features(backbone_weights, train_all)
    epochs = QUICK_EPOCHS if quick else FINETUNE_EPOCHS
    for budget in QUICK_BUDGETS if quick else BUDGETS:
        train = train_all if budget is None else labelled_subset(train_all, budget, data.split_seed)
        steps = QUICK_STEPS if quick else FINETUNE_STEPS[budget]
        schedule = budget_schedule(len(train), recipe.optim.batch_size, steps, epochs)
        for init, backbone in backbones.items():
            name = run_name(init, budget)
            # plots and the report (confusion matrix) only for the runs on all labels: the report shows those
            over = merge_dicts(merge_dicts(base, shrink.get("finetune", {})),
                               {"model": {"backbone": backbone}, "data": {"labels_per_class": budget}, **schedule,
                                **({} if budget is None else {"output": {"plots": False}})})
            timed(name, lambda name=name, over=over, budget=budget: _train("demo/finetune.yaml", out / name, over,
                                                                           report=budget is None))
            res.rows.append({"stage": STAGE["finetune"], "init": init, "metric": "top-1",
                             "value": final_top1(out / name), "labels_per_class": budget})
        # the same images as the runs (the draw is the one open_data makes: same records, count and seed)
        chosen = np.isin(train_all.ids, train.ids)
        t = time.perf_counter()
        res.rows.append({"stage": STAGE["finetune"], "init": "pixels", "metric": "top-1", "labels_per_class": budget,
                         "value": linear_top1(digit_pixels(train, data, data.train_split), train.labels, val_pixels,
                                              val.labels)})
        res.rows.append({"stage": STAGE["finetune"], "init": "frozen", "metric": "top-1", "labels_per_class": budget,
                         "value": linear_top1(frozen_all[chosen], train_all.labels[chosen], val_frozen, val.labels)})
        res.seconds["baselines"] = res.seconds.get("baselines", 0.0) + time.perf_counter() - t

    for init, backbone in backbones.items():
        name = f"retrieval-{init}"
        over = merge_dicts(merge_dicts(base, shrink.get("retrieval", {})), {"model": {"backbone": backbone}})
        timed(name, lambda name=name, over=over: _train("demo/retrieval.yaml", out / name, over))
        metrics = json.loads((out / name / "retrieval" / "metrics.json").read_text())
        for m in ("recall@1", "recall@2", "recall@4", "recall@8", "map@r"):
            res.rows.append({"stage": STAGE["retrieval"], "init": init, "metric": m, "value": metrics.get(m),
                             "labels_per_class": None})
    for init in backbones:
        name = run_name(init, None)
        settings = ROBUSTNESS["quick" if quick else "full"]
        r = timed(f"robustness-{init}", lambda name=name, settings=settings: _robustness(
            out / name, seed=seed, workers=workers, **settings))
        res.rows.append({"stage": STAGE["robustness"], "init": init, "metric": "mCE (unnormalised)",
                         "value": r["mce_unnormalized"], "labels_per_class": None})
    write_report(res, seed=seed, quick=quick, robustness=ROBUSTNESS["quick" if quick else "full"])
    return res


def _robustness(run: Path, **settings) -> dict:
    """The all-label classifier's corruption errors, or what an earlier (stopped) demo wrote of them."""
    from .robustness import evaluate_robustness

    written = run / "robustness" / "robustness.json"  # published whole, after everything else of it
    if written.is_file():
        return json.loads(written.read_text())
    # Both classifiers see the same corrupted digits (same records, crop and seed): the first one's evaluation
    # keeps them in DEMO/corrupted/ and the second reads them back instead of corrupting them again.
    return evaluate_robustness(str(run / "weights" / "final.safetensors"), corruptions="15",
                               cache=str(run.parent / CORRUPTED), out=str(run / "robustness"), **settings)


def run_demo_seeds(out: str | Path, seeds: list[int], *, quick: bool = False, workers: int = 1,
                   resume: bool = False) -> dict[int, DemoResult]:
    """The demo once per seed, each in its own DEMO/seed-N/, then the report over the seeds."""
    out = Path(out)
    _demo_folder(out, {"seeds": seeds, "quick": quick, "workers": workers}, resume)
    per_seed = {}
    for seed in seeds:
        log.info("demo: seed %d (%d of %d)", seed, len(per_seed) + 1, len(seeds))
        folder = out / f"seed-{seed}"
        per_seed[seed] = run_demo(folder, seed=seed, quick=quick, workers=workers,
                                  resume=resume and (folder / DEMO_FILE).is_file())
    write_seeds_report(out, per_seed)
    return per_seed
