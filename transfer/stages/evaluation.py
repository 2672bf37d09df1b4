"""`transfer evaluate`: accuracy of saved weights on a dataset, with the weights' own preprocessing."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..data.loader import TransformedDataset, eval_dataset, eval_loader
from ..data.sources import DataError, Records, open_split
from ..errors import ConfigError
from ..eval.classify import evaluate
from ..eval.inference import outputs
from ..files import atomic_write_bytes, atomic_write_csv, check_output_file
from ..models import load_model
from ..models.teachers import is_timm_name, load_timm_teacher
from ..recipe import DataSection, Recipe, load_recipe
from ..runs import resolve_weights, run_holding
from ..runtime import resolve_device

log = logging.getLogger("transfer")


def data_section(data_path: str | None, run_recipe: Recipe | None) -> DataSection:
    """--data PATH as a data section (its kind told from what is there), else the run's own data."""
    if data_path is None:
        if run_recipe is None:
            raise ConfigError("a weights file needs --data PATH (a data_prep folder, an image folder, a CSV, "
                              "'embedded' or 'digits')")
        return run_recipe.data
    base = run_recipe.data if run_recipe is not None else DataSection()
    if data_path == "embedded":
        return DataSection(source="embedded", embedded=base.embedded, train_split=base.train_split,
                           val_split=base.val_split)
    if data_path == "digits":
        return DataSection(source="digits", embedded=base.embedded, val_fraction=base.val_fraction,
                           split_seed=base.split_seed, split_by=base.split_by, val_split=base.val_split)
    p = Path(data_path)
    if p.suffix.lower() == ".csv":
        source = "csv"
    elif any((p / f).is_file() for f in ("dataset.json", "dataset_dict.json", "state.json")):
        source = "disk"
    else:
        source = "folder"
    return DataSection(source=source, path=data_path, image_column=base.image_column,
                       label_column=base.label_column, train_split=base.train_split, val_split=base.val_split,
                       val_fraction=base.val_fraction, split_seed=base.split_seed, split_by=base.split_by)


def open_for_evaluation(weights_or_run: str, data_path: str | None, split: str | None):
    """(weights file, model, records, split): the model and the data it is evaluated on, checked to fit."""
    weights = resolve_weights(weights_or_run)
    run = run_holding(weights_or_run)  # a run's own weights file (weights/final) evaluates on the run's data
    run_recipe = load_recipe(run.recipe) if run is not None else None
    model = load_model(weights)
    data = data_section(data_path, run_recipe)
    split = split or data.val_split
    records = open_split(data, split, model.weights_metadata.get("class_names"))
    check_class_count(weights, model.num_classes, records, f"{data.path or data.source} split {split!r}")
    return weights, model, records, split


def check_class_count(what, num_classes: int, records: Records, where: str) -> None:
    if num_classes and len(records.classes) != num_classes:
        raise ConfigError(f"{what} predicts {num_classes} classes but {where} has {len(records.classes)}")


def open_model(weights_or_run: str, checkpoint: str | None):
    """(what is evaluated, model, its evaluation transform, its class names or None, a timm teacher or None)."""
    if is_timm_name(weights_or_run):
        teacher = load_timm_teacher(weights_or_run, checkpoint)
        return teacher.weights, teacher.model, teacher.transform, teacher.class_names, teacher
    weights = resolve_weights(weights_or_run)
    model = load_model(weights)
    return weights, model, model.input_spec.eval_transform(), model.weights_metadata.get("class_names"), None


def recorded_wnids(data: DataSection, records: Records) -> list[str] | None:
    """The WordNet ids a data_prep folder records for its classes (data_prep/imagenet.py: the classes are names
    in the devkit's ILSVRC2012_ID order, which is not the sorted-synset order of timm's and torchvision's
    ImageNet heads), when `records` has those very classes; else None."""
    meta = Path(data.path or "") / "dataset.json"
    if data.source != "disk" or not meta.is_file():
        return None
    info = json.loads(meta.read_text())
    wnids = info.get("wnids")
    return list(wnids) if wnids and info.get("classes") == list(records.classes) else None


def output_columns(classes: list[str] | None, records: Records, data: DataSection, what, where: str, *,
                   strict: bool) -> list[int] | None:
    """Which output of a model whose outputs are `classes` is each class of `records`, by name or by the WordNet
    ids the data records; None when they are already in the records' order (or, not `strict`, when the model's
    classes are unknown or unlike the data's: a timm head, taken to be in the data's order)."""
    if classes is None:
        return None
    for ids in (list(records.classes), recorded_wnids(data, records)):
        index = {c: i for i, c in enumerate(classes)}
        if ids is not None and len(ids) == len(classes) and all(c in index for c in ids):
            columns = [index[c] for c in ids]
            return None if columns == list(range(len(ids))) else columns
    if strict:
        raise ConfigError(f"{what}'s classes are not those of {where} (first: {classes[0]!r} against "
                          f"{records.classes[0]!r}); its logits would not line up with the labels")
    log.warning("%s's classes (%s, ...) are not named as those of %s (%s, ...): taken to be in the same order; "
                "a top-1 near chance says they are not", what, classes[0], where, records.classes[0])
    return None


class OutputsInOrder(nn.Module):
    """A model whose outputs are picked and put in another class order (output j = the model's columns[j])."""

    def __init__(self, model: nn.Module, columns: list[int]):
        super().__init__()
        self.model = model
        self.register_buffer("columns", torch.tensor(columns, dtype=torch.long), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)[:, self.columns]


def check_options(weights_or_run: str, *, batch_size: int, save_logits: str | None, checkpoint: str | None) -> None:
    """The command line's own mistakes, found before any model or data is opened."""
    if save_logits:
        if Path(save_logits).suffix != ".npy":
            raise ConfigError(f"--save-logits {save_logits}: give a .npy file name")
        check_output_file(Path(save_logits), _is_npy, ".npy array")
    if batch_size < 1:
        raise ConfigError(f"--batch-size {batch_size}: give at least 1")
    if checkpoint is not None and not is_timm_name(weights_or_run):
        raise ConfigError(f"--checkpoint is the weights file of a timm:NAME model; {weights_or_run} is this "
                          f"package's weights or run already: drop --checkpoint")


def logits_by_sample(result: dict, n: int) -> np.ndarray:
    """(n, classes) float32: row i the logits of sample i (the index the training loader hands the
    objective); rows of unreadable images are zero, a uniform teacher (training skips those images anyway)."""
    if not len(result["indices"]):
        raise DataError(f"none of the {n} images could be read; no logits written")
    out = np.zeros((n, result["logits"].shape[1]), dtype=np.float32)
    out[result["indices"]] = result["logits"]
    if result["bad_images"]:
        log.warning("%d unreadable images: their rows of logits are zero", result["bad_images"])
    return out


def run_evaluation(opened: tuple, records: Records, split: str, *, batch_size: int, device: str, workers: int,
                   save_logits: str | None, columns: list[int] | None = None) -> dict:
    """`opened` (open_model's answer) on `records` with its own transform: the metrics, and with `save_logits`
    the logits as .npy, row i = sample i of `records`; `columns` (output_columns) puts the outputs in the
    records' class order first."""
    weights, model, transform, _, teacher = opened
    if columns is not None:
        log.info("%s: outputs put in the order of the data's classes", weights)
        model = OutputsInOrder(model, columns)
    dev = resolve_device(device)
    model.to(dev)
    dataset = TransformedDataset(records, transform)
    result = evaluate(model, eval_loader(dataset, batch_size, workers), dev, keep_logits=save_logits is not None)
    result = {"weights": str(weights), **({"model": f"timm:{teacher.name}", "preprocessing": teacher.describe()}
                                          if teacher else {}), "split": split, **result}
    if save_logits:
        import io

        buf = io.BytesIO()
        np.save(buf, logits_by_sample(result, len(records)))
        atomic_write_bytes(Path(save_logits), buf.getvalue())
        result["logits_file"] = save_logits
    return result


def evaluate_classifier(weights_or_run: str, *, data_path: str | None = None, split: str | None = None,
                        batch_size: int = 64, device: str = "auto", workers: int = 2,
                        save_logits: str | None = None, checkpoint: str | None = None) -> dict:
    """Top-1 / top-5 and loss of this package's weights (a file or a run) or of a timm model (`timm:NAME` with
    `checkpoint`, fed as timm feeds it) on a data split; with `save_logits`, the logits as .npy, row i = image
    i of the split. (A training recipe's own images, in its order: stages/distillation.py.)"""
    check_options(weights_or_run, batch_size=batch_size, save_logits=save_logits, checkpoint=checkpoint)
    if is_timm_name(weights_or_run):
        if data_path is None:
            raise ConfigError(f"{weights_or_run} needs the images: --recipe RECIPE (its training images, in its "
                              f"order: teacher logits) or --data PATH")
        opened = open_model(weights_or_run, checkpoint)
        data = data_section(data_path, None)
        split = split or data.val_split
        records, where = open_split(data, split), f"{data.path or data.source} split {split!r}"
        check_class_count(weights_or_run, opened[1].num_classes, records, where)
        columns = output_columns(opened[3], records, data, weights_or_run, where, strict=False)
    else:
        weights, model, records, split = open_for_evaluation(weights_or_run, data_path, split)
        opened, columns = (weights, model, model.input_spec.eval_transform(), None, None), None
    return run_evaluation(opened, records, split, batch_size=batch_size, device=device, workers=workers,
                          save_logits=save_logits, columns=columns)


def image_paths(items: tuple[str, ...]) -> list[str]:
    """Image files named, and the images inside folders named (sorted)."""
    from torchvision.datasets.folder import IMG_EXTENSIONS

    paths = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            paths += sorted(str(f) for f in p.rglob("*") if f.suffix.lower() in IMG_EXTENSIONS)
        elif p.is_file():
            paths.append(str(p))
        else:
            raise DataError(f"{item} is neither an image file nor a folder")
    if not paths:
        raise DataError(f"no images found in {', '.join(items)}")
    return paths


PREDICTIONS_HEADER = ("path", "prediction", "probability")


def _is_predictions(path: Path) -> bool:
    """A CSV that `transfer predict` wrote (so that writing it again replaces only our own output)."""
    try:
        with path.open("rb") as f:
            return f.readline().decode().startswith(",".join(PREDICTIONS_HEADER))
    except (OSError, UnicodeDecodeError):
        return False


def _is_npy(path: Path) -> bool:
    try:
        with path.open("rb") as f:
            return f.read(6) == b"\x93NUMPY"
    except OSError:
        return False


def predict_images(weights_or_run: str, images: tuple[str, ...], *, out_file: str, topk: int = 1,
                   batch_size: int = 64, device: str = "auto") -> int:
    """Write `out_file`: path, predicted class, probability (and top-k columns), status (ok, or why an image
    was unreadable); returns the image count."""

    from ..data.sources import FileRecords

    if batch_size < 1:
        raise ConfigError(f"--batch-size {batch_size}: give at least 1")
    out = check_output_file(Path(out_file), _is_predictions, "predictions CSV written by `transfer predict`")
    weights = resolve_weights(weights_or_run)
    model = load_model(weights)
    classes = model.weights_metadata.get("class_names") or [str(i) for i in range(model.num_classes)]
    paths = image_paths(images)
    records = FileRecords(np.zeros(len(paths), dtype=np.int64), paths, classes)
    dataset = eval_dataset(records, model.input_spec)
    dev = resolve_device(device)
    model.to(dev)
    k = max(1, min(topk, len(classes)))
    rows: dict[int, list] = {}
    for batch, logits in outputs(model, eval_loader(dataset, batch_size, 0), dev):
        for bad in batch.bad:  # the same columns, empty, and the reason in `status`
            rows[bad.index] = [bad.ident] + [""] * (2 * k) + [f"unreadable: {bad.reason}"]
        if logits is None:
            continue
        top = logits.softmax(1).cpu().topk(k, dim=1)
        for i, vals, idx in zip(batch.indices.tolist(), top.values.tolist(), top.indices.tolist(), strict=True):
            row = [paths[i], classes[idx[0]], f"{vals[0]:.6f}"]
            for j in range(1, k):
                row += [classes[idx[j]], f"{vals[j]:.6f}"]
            rows[i] = [*row, "ok"]
    header = [*PREDICTIONS_HEADER]
    for j in range(2, k + 1):
        header += [f"prediction_{j}", f"probability_{j}"]
    atomic_write_csv(out, [*header, "status"], (rows[i] for i in range(len(paths))))
    return len(paths)
