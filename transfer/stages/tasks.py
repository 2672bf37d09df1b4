"""What a training run learns to do: the seam between the one training stage and its tasks.

A task gives the stage what differs between classification and retrieval: its data, the head its loss needs,
its objective, how the trainer validates and which metric picks the best weights, and the report written
after training. The trainer and the stage know nothing else about either.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..data.sources import DataError, Records, labelled_subset, open_split
from ..engine.objective import Objective
from ..errors import ConfigError
from ..eval.classify import evaluate
from ..eval.inference import embed
from ..eval.retrieval import Metric, evaluate_embeddings, parse_metrics
from ..models import load_model
from ..recipe import Recipe, RetrievalSection
from ..runs import RunDir
from ..runtime import Dist

log = logging.getLogger("transfer")


@dataclass
class StageData:
    train: Records
    val: Records | None
    classes: list[str]


class Classification:
    """Images to classes: top-1 picks the best weights; RUN/report/ holds per-class accuracy and confusions."""

    name = "classification"

    def __init__(self, recipe: Recipe):
        self.recipe = recipe
        self.select = "top1"

    def open_data(self) -> StageData:
        r = self.recipe
        train = open_split(r.data, r.data.train_split)
        if len(train.classes) < 2:
            raise DataError(f"the data ({r.data.path or r.data.source}) has one class "
                            f"({', '.join(train.classes) or 'none'}); a classifier needs at least two: add a class")
        val = open_split(r.data, r.data.val_split, train.classes) if r.data.val_split else None
        if r.data.labels_per_class:
            train = labelled_subset(train, r.data.labels_per_class, r.data.split_seed)
            log.info("label budget: %d training images, at most %d per class (data.labels_per_class)", len(train),
                     r.data.labels_per_class)
        counts = np.bincount(train.labels, minlength=len(train.classes))
        empty = [train.classes[i] for i in np.flatnonzero(counts == 0)]
        if empty:
            raise DataError(f"classes without training images: {', '.join(empty[:5])}"
                            f"{' ...' if len(empty) > 5 else ''}; remove them or add images")
        return StageData(train, val, train.classes)

    def head_options(self) -> dict:
        return {}

    def objective(self, data: StageData) -> Objective:
        return build_objective(self.recipe, len(data.classes), len(data.train))

    def validation(self, data: StageData):
        rt = self.recipe.runtime
        topk = self.recipe.eval.measured_topk

        def validate(model: nn.Module, loader, device: torch.device, dist: Dist) -> dict:
            return evaluate(model, loader, device, precision=rt.precision, channels_last=rt.channels_last,
                            topk=topk, dist=dist)

        return validate

    def report(self, run: RunDir, data: StageData, val_set, device: torch.device) -> dict:
        from .report import classification_report

        return classification_report(run, val_set, self.recipe, device)


class Retrieval:
    """Zero-shot embeddings: trained as a classifier over the training classes (softmax, cosine-softmax or
    ArcFace), validated by searching the unseen test classes; RUN/retrieval/ holds metrics, embeddings, index
    and a picture."""

    name = "retrieval"

    def __init__(self, recipe: Recipe):
        self.recipe = recipe
        self.cfg: RetrievalSection = recipe.retrieval
        self.metrics = check_retrieval_recipe(recipe)
        self.select = self.cfg.select

    def open_data(self) -> StageData:
        r = self.recipe
        train = zero_shot_train(open_split(r.data, r.data.train_split))
        return StageData(train, open_split(r.data, r.data.val_split), train.classes)

    def head_options(self) -> dict:
        """The classifier the loss needs: linear for softmax, cosine (scale s) for cosine-softmax and ArcFace.

        The classifier reads ReLU(BN(embedding)) and retrieval embeds BN(embedding), as the official graph does
        (nets/resnet_model.py:589-593); `model.options.embedding_relu: false` feeds it the embedding itself. The
        choice is recorded in the run's weights files, whatever the backbone had."""
        relu = {"embedding_relu": bool(self.recipe.model.options.get("embedding_relu", True))}
        if self.cfg.loss == "softmax":
            return {"head": "linear", **relu}
        return {"head": "cosine", "head_scale": self.cfg.scale, **relu}

    def objective(self, data: StageData) -> Objective:
        arcface = self.cfg.loss == "arcface"
        return build_objective(self.recipe, len(data.classes), len(data.train),
                               margin=self.cfg.margin if arcface else 0.0,
                               logit_scale=self.cfg.scale if arcface else 1.0)

    def validation(self, data: StageData):
        records, rt, metrics, backend = data.val, self.recipe.runtime, self.metrics, self.cfg.backend

        def validate(model: nn.Module, loader, device: torch.device, dist: Dist) -> dict:
            emb, readable = embed(model, loader, len(records), device, precision=rt.precision,
                                  channels_last=rt.channels_last, dist=dist)
            ev = evaluate_embeddings(emb, records.labels, metrics, is_query=records.is_query,
                                     is_gallery=records.is_gallery, readable=readable, backend=backend,
                                     device=str(device))
            return {k: v for k, v in ev.metrics.items() if isinstance(v, int | float) and not isinstance(v, bool)}

        return validate

    def report(self, run: RunDir, data: StageData, val_set, device: torch.device) -> dict:
        from .retrieval import retrieval_report

        return retrieval_report(run, data.val, val_set, self.recipe, device)


Task = Classification | Retrieval


def task_for(recipe: Recipe) -> Task:
    """The recipe's task (its `stage`: retrieval, else classification), checked before any data is opened."""
    return Retrieval(recipe) if recipe.stage == "retrieval" else Classification(recipe)


def zero_shot_train(records: Records) -> Records:
    """Training labels renumbered 0..T-1 over the classes present (a retrieval dataset's label space covers
    its test classes too; the training head needs only the training ones)."""
    present, labels = np.unique(records.labels, return_inverse=True)
    return dataclasses.replace(records, labels=labels.astype(np.int64), classes=[records.classes[i] for i in present])


def check_retrieval_recipe(recipe: Recipe) -> list[Metric]:
    cfg = recipe.retrieval
    metrics = parse_metrics(cfg.metrics)
    if cfg.select not in [m.name for m in metrics]:
        raise ConfigError(f"retrieval.select={cfg.select!r} is not among retrieval.metrics "
                          f"({', '.join(m.name for m in metrics)}); add it there or choose one of those")
    if cfg.loss == "arcface" and recipe.regularization.mixup.alpha > 0:
        raise ConfigError("retrieval.loss=arcface puts its margin on one target class; mixed images have two: "
                          "set regularization.mixup.alpha=0 or use cosine_softmax")
    if not recipe.data.val_split:
        raise ConfigError("a retrieval recipe needs data.val_split: the test classes searched at validation")
    return metrics


def build_objective(recipe: Recipe, num_classes: int, num_train: int, *, margin: float = 0.0,
                    logit_scale: float = 1.0) -> Objective:
    """Label smoothing, mixup and distillation as the recipe says (a teacher model or precomputed logits)."""
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
                              f"`transfer evaluate TEACHER --recipe RECIPE --save-logits {path}`, RECIPE this "
                              f"recipe (its rows are then in the training's sample order)")
        arr = np.load(path)
        if arr.shape != (num_train, num_classes):
            raise ConfigError(f"regularization.distillation.logits: {path} has shape {arr.shape}, expected "
                              f"({num_train}, {num_classes}): one row of logits per training image")
        logits = torch.from_numpy(arr.astype(np.float32))
    return Objective(num_classes, reg.label_smoothing, reg.mixup.alpha, reg.mixup.mode, teacher, logits,
                     kd.temperature, kd.weight, margin, logit_scale)
