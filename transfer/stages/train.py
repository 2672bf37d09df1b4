"""A training stage composed from its parts: recipe -> data, model, objective -> Trainer.fit -> run directory.

`transfer pretrain` runs it with a pretraining recipe; the fine-tuning stages build on the same pieces.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..data.loader import TransformedDataset
from ..data.sources import DataError, Records, open_split
from ..data.transforms import Preprocessing, eval_transform, resolve, train_transform
from ..engine import distributed
from ..engine.objective import Objective
from ..engine.trainer import Trainer
from ..errors import ConfigError, TransferError
from ..models import create_model
from ..models.weights import load_model, load_weights, read_metadata
from ..recipe import Recipe
from ..runs import RunDir, latest_run, new_run_dir, resolve_weights

log = logging.getLogger("transfer")


@dataclass
class StageData:
    train: Records
    val: Records | None
    classes: list[str]


def open_data(recipe: Recipe) -> StageData:
    train = open_split(recipe.data, recipe.data.train_split)
    val = open_split(recipe.data, recipe.data.val_split, train.classes) if recipe.data.val_split else None
    counts = np.bincount(train.labels, minlength=len(train.classes))
    empty = [train.classes[i] for i in np.flatnonzero(counts == 0)]
    if empty:
        raise DataError(f"classes without training images: {', '.join(empty[:5])}"
                        f"{' ...' if len(empty) > 5 else ''}; remove them or add images")
    return StageData(train, val, train.classes)


def open_retrieval_data(recipe: Recipe) -> StageData:
    """Zero-shot: the validation split has its own classes (unseen in training); training labels renumbered."""
    from .retrieval import zero_shot_train

    train = zero_shot_train(open_split(recipe.data, recipe.data.train_split))
    val = open_split(recipe.data, recipe.data.val_split)
    return StageData(train, val, train.classes)


def build_objective(recipe: Recipe, num_classes: int, num_train: int) -> Objective:
    reg = recipe.regularization
    kd = reg.distillation
    teacher = logits = None
    if kd.teacher and kd.logits:
        raise ConfigError("regularization.distillation: set either teacher or logits, not both")
    if kd.teacher:
        teacher = load_model(kd.teacher)
        if teacher.num_classes != num_classes:
            raise ConfigError(f"regularization.distillation.teacher {kd.teacher} predicts {teacher.num_classes} "
                              f"classes, the data has {num_classes}")
    if kd.logits:
        path = Path(kd.logits)
        if not path.is_file():
            raise ConfigError(f"regularization.distillation.logits: {path} does not exist; make it with "
                              f"`transfer evaluate TEACHER --split train --save-logits {path}`")
        arr = np.load(path)
        if arr.shape != (num_train, num_classes):
            raise ConfigError(f"regularization.distillation.logits: {path} has shape {arr.shape}, expected "
                              f"({num_train}, {num_classes}): one row of logits per training image")
        logits = torch.from_numpy(arr.astype(np.float32))
    return Objective(num_classes, reg.label_smoothing, reg.mixup.alpha, reg.mixup.mode, teacher, logits,
                     kd.temperature, kd.weight)


# Options that change no weight but the function: a backbone's choice carries over to its fine-tuning.
BACKBONE_OPTIONS = ("pooling", "se_bias", "embedding_relu")


def backbone_metadata(backbone: Path | None) -> dict:
    """A backbone's sidecar ({} for none, or for a bare torchvision state_dict)."""
    if backbone is None or backbone.suffix != ".safetensors":
        return {}
    try:
        return read_metadata(backbone)
    except TransferError:
        return {}


def resolve_backbone(backbone: str) -> Path:
    """'latest' (the newest pretrain run), a run directory, a .safetensors file or a torchvision state_dict."""
    if backbone == "latest":
        try:
            return resolve_weights(latest_run("pretrain").path)
        except TransferError as e:
            raise ConfigError(f"model.backbone=latest: {e}; or pass --backbone RUN_DIR_OR_WEIGHTS") from None
    return resolve_weights(backbone)


def _shared_run_dir(recipe: Recipe, recipe_name: str, out: str | None, resume: bool, d) -> RunDir:
    """Rank 0 chooses (and creates) the run directory; the other processes learn it from rank 0."""
    path = [None]
    if d.is_main:
        path[0] = str(new_run_dir(recipe.stage, recipe_name, out, resume).path)
    if d.enabled:
        import torch.distributed as tdist

        tdist.broadcast_object_list(path, src=0)
    return RunDir(Path(path[0]))


def record_made_splits(run: RunDir, data: StageData) -> None:
    """When the data had no validation split and one was drawn here, write it into the run (split.csv)."""
    import csv

    parts = [(name, rec) for name, rec in (("train", data.train), ("validation", data.val))
             if rec is not None and getattr(rec, "made_split", False)]
    if not parts:
        return
    with (run.path / "split.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label", "split"])
        for name, rec in parts:
            for ident, label in zip(rec.ids, rec.labels, strict=True):
                w.writerow([ident, rec.classes[label], name])


def run_training(recipe: Recipe, *, recipe_name: str, out: str | None = None, resume: bool = False,
                 report: bool = True) -> dict:
    """Train as the recipe says, then (classification) report on the validation split with the best weights."""
    from . import retrieval as rt

    is_retrieval = recipe.stage == "retrieval"
    if is_retrieval:
        rt.check_recipe(recipe)
    d = distributed.setup(recipe.runtime.device)
    try:
        torch.manual_seed(recipe.runtime.seed)  # the same initial weights on every process
        data = open_retrieval_data(recipe) if is_retrieval else open_data(recipe)
        m = recipe.model
        asked = m.options.get("num_classes")
        if asked is not None and asked != len(data.classes):
            where = recipe.data.path or recipe.data.source
            raise ConfigError(f"model.options.num_classes={asked} but the data ({where}) has {len(data.classes)} "
                              f"classes; remove the option: the classifier is sized from the data")
        backbone = resolve_backbone(m.backbone) if m.backbone else None
        backbone_meta = backbone_metadata(backbone)
        # Weight-free choices the backbone was made with (a converted timm or official file records them).
        inherited = {k: v for k, v in backbone_meta.get("overrides", {}).items() if k in BACKBONE_OPTIONS}
        options = {**inherited, **m.options, "num_classes": len(data.classes),
                   **(rt.head_options(recipe.retrieval) if is_retrieval else {})}
        model = create_model(m.name, weights=m.weights, **options)
        extra = {"class_names": data.classes}
        lr_scale = None
        if backbone is not None:
            log.info("backbone: %s%s", backbone, "" if m.restore_bn_stats else " (BN statistics not restored)")
            load_weights(model, backbone, restore_bn_stats=m.restore_bn_stats)
            extra["backbone"] = str(backbone)
            if m.backbone_lr_scale != 1.0:
                lr_scale = {"stem.": m.backbone_lr_scale, "stages.": m.backbone_lr_scale}
        prep: Preprocessing = resolve(recipe.augment, model.input_spec, backbone_meta.get("input"))
        model.input_spec = prep.input_spec()
        train_set = TransformedDataset(data.train, train_transform(recipe.augment, prep), recipe.runtime.seed)
        val_set = TransformedDataset(data.val, eval_transform(prep)) if data.val is not None else None
        objective = build_objective(recipe, len(data.classes), len(data.train))
        validate, select = None, "top1"
        if is_retrieval:
            validate, select = rt.RetrievalValidation(data.val, recipe.retrieval), recipe.retrieval.select
            if recipe.retrieval.loss == "arcface":
                objective.margin, objective.logit_scale = recipe.retrieval.margin, recipe.retrieval.scale
        run = _shared_run_dir(recipe, recipe_name, out, resume, d)
        if d.is_main and not resume:
            record_made_splits(run, data)
        trainer = Trainer(model, objective, train_set, val_set, recipe, run, d, weights_metadata=extra,
                          lr_scale=lr_scale, validate=validate, select=select)
        summary = trainer.fit(resume=resume)
        if d.is_main and summary.get("status") == "finished" and data.val is not None and report:
            if is_retrieval:
                summary.update(rt.retrieval_report(run, data.val, val_set, recipe, d.device))
            else:
                from .report import classification_report

                summary.update(classification_report(run, val_set, recipe, d.device))
        return summary
    finally:
        distributed.teardown(d)
