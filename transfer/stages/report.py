"""After a classification run: per-class accuracy, the confusion matrix (PNG), most-confused pairs, predictions."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from ..data.loader import eval_loader
from ..eval.classify import confusion_matrix, evaluate, most_confused, per_class_accuracy
from ..files import atomic_savefig, atomic_write_bytes, atomic_write_csv, building_dir, pyplot
from ..models import load_model
from ..recipe import Recipe
from ..runs import RunDir, resolve_weights


def confusion_png(cm: np.ndarray, classes: list[str], path: Path, title: str = "confusion matrix") -> Path:
    plt = pyplot()

    k = len(classes)
    rows = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    size = min(max(4.0, 0.35 * k + 2), 24)
    fig, ax = plt.subplots(figsize=(size, size), dpi=100)
    im = ax.imshow(rows, cmap="Blues", vmin=0, vmax=1)
    if k <= 40:
        ax.set_xticks(range(k), classes, rotation=90, fontsize=8)
        ax.set_yticks(range(k), classes, fontsize=8)
        if k <= 16:
            for t in range(k):
                for p in range(k):
                    if cm[t, p]:
                        ax.text(p, t, int(cm[t, p]), ha="center", va="center", fontsize=7,
                                color="white" if rows[t, p] > 0.5 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.colorbar(im, fraction=0.046)
    fig.tight_layout()
    atomic_savefig(fig, path)
    plt.close(fig)
    return path


def write_report(out: Path, result: dict, labels: np.ndarray, ids: list[str], classes: list[str]) -> dict:
    """Files of the report under `out`; returns the figures for the run summary."""
    logits = torch.from_numpy(result["logits"])
    probs = logits.softmax(1).numpy()
    preds = probs.argmax(1)
    cm = confusion_matrix(labels, preds, len(classes))
    acc = per_class_accuracy(cm)
    confused = most_confused(cm, classes)
    confusion_png(cm, classes, out / "confusion.png")
    atomic_write_csv(out / "per_class.csv", ["class", "accuracy", "count"],
                     [[c, f"{a:.6f}", int(n)] for c, a, n in zip(classes, acc, cm.sum(1), strict=True)])
    atomic_write_csv(out / "predictions.csv", ["path", "label", "prediction", "probability"],
                     [[ident, classes[y], classes[p], f"{pr[p]:.6f}"]
                      for ident, y, p, pr in zip(ids, labels, preds, probs, strict=True)])
    summary = {"top1": result["top1"], "top5": result.get("top5"), "count": result["count"],
               "mean_per_class_accuracy": float(np.nanmean(acc)), "most_confused": confused}
    atomic_write_bytes(out / "summary.json", (json.dumps(summary, indent=2) + "\n").encode())
    return summary


def classification_report(run: RunDir, val_set, recipe: Recipe, device: torch.device) -> dict:
    """Evaluate the run's best (or, as eval.report_weights says, final) weights on the validation split and
    write RUN/report/."""
    model = load_model(resolve_weights(run.path, recipe.eval.report_weights)).to(device)
    result = evaluate(model, eval_loader(val_set, 64, recipe.runtime.workers), device,
                      precision=recipe.runtime.precision, topk=recipe.eval.measured_topk, keep_logits=True)
    records = val_set.records
    idx = result["indices"]
    with building_dir(run.path / "report") as out:  # a stop or a kill never leaves half a report
        summary = write_report(out, result, records.labels[idx], [records.ids[i] for i in idx], records.classes)
    return {"report_top1": summary["top1"], "report_mean_per_class": summary["mean_per_class_accuracy"]}
