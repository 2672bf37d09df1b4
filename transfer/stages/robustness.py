"""`transfer evaluate --robustness`: clean top-1, mCE (and mFR), and throughput of one model from one command.

All (corruption, severity) sets and the clean set go through one data loader, so the workers that corrupt the
images start once and the model never waits for a set to be set up. The default set is the official mCE's 19
(`eval.robustness.PAPER_CORRUPTIONS`); robustness.json records which set (`corruption_set`) and how the images were
prepared (`preprocessing`: the official generator's resize and centre crop; for ImageNet models the official sets'
sizes, 256 -> 224 and 292 -> 256; `data.corrupted`).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from ..data.corrupted import CorruptedImages, PerturbedSequences, corrupted_set_resize
from ..data.loader import eval_loader
from ..errors import ConfigError
from ..eval.inference import outputs
from ..eval.perturbations import FRAMES, NOISE, PERTURBATIONS
from ..eval.robustness import (
    ALEXNET_ERRORS,
    DEFAULT_CORRUPTIONS,
    corruption_set,
    flip_probability,
    is_imagenet,
    mean_corruption_error,
    mean_flip_rate,
    pooled_error,
    select_corruptions,
    select_severities,
)
from ..eval.throughput import BenchmarkSettings, measure_throughput
from ..files import atomic_savefig, atomic_write_bytes, check_output_dir, pyplot
from ..runs import RunDir
from ..runtime import resolve_device
from .evaluation import open_for_evaluation


def spread_indices(n: int, limit: int | None) -> np.ndarray:
    """All n indices, or `limit` of them spread evenly (folders are sorted by class: every class gets some)."""
    if limit is None or limit >= n:
        return np.arange(n)
    if limit < 1:
        raise ConfigError(f"--limit {limit}: give a number of images >= 1")
    return np.unique(np.linspace(0, n - 1, limit).round().astype(np.int64))


@torch.no_grad()
def predict(model: torch.nn.Module, loader, device: torch.device, n: int, frames: int = 0) -> np.ndarray:
    """Top-1 class of every item (of every frame when frames > 0), in item order; -1 for unreadable images."""
    out = np.full((n, frames) if frames else n, -1, dtype=np.int64)
    for batch, logits in outputs(model, loader, device):
        if logits is not None:  # sequences came through as (B*F) images
            pred = logits.argmax(1).cpu().numpy()
            out[batch.indices.numpy()] = pred.reshape(len(batch), frames) if frames else pred
    return out


def corruption_errors(predictions: np.ndarray, labels: np.ndarray, tasks: list) -> tuple[float, dict, dict]:
    """(clean top-1, {corruption: pooled error}, {corruption: {severity: error}}) from item predictions."""
    n = len(labels)
    wrong: dict[str, dict[int, int]] = {}
    counts: dict[str, dict[int, int]] = {}
    top1 = float("nan")
    for t, (name, severity) in enumerate(tasks):
        p = predictions[t * n:(t + 1) * n]
        ok = p >= 0
        right = int((p[ok] == labels[ok]).sum())
        if name is None:
            top1 = right / max(int(ok.sum()), 1)
            continue
        wrong.setdefault(name, {})[severity] = int(ok.sum()) - right
        counts.setdefault(name, {})[severity] = int(ok.sum())
    errors = {name: pooled_error(wrong[name], counts[name]) for name in wrong}
    by_severity = {name: {s: wrong[name][s] / max(counts[name][s], 1) for s in wrong[name]} for name in wrong}
    return top1, errors, by_severity


def output_dir(weights_or_run: str, weights: Path, out: str | None) -> Path:
    if out is not None:
        return Path(out)
    if Path(weights_or_run).is_dir():
        return RunDir(Path(weights_or_run)).path / "robustness"
    return weights.parent / f"{weights.stem}-robustness"


def evaluate_robustness(weights_or_run: str, *, data_path: str | None = None, split: str | None = None,
                        corruptions: str = DEFAULT_CORRUPTIONS, severities: str = "1,2,3,4,5",
                        perturbations: bool = False, limit: int | None = None, seed: int = 0,
                        imagenet: bool | None = None, batch_size: int = 64, device: str = "auto", workers: int = 2,
                        cache: str | None = None, out: str | None = None) -> dict:
    names = select_corruptions(corruptions)
    levels = select_severities(severities)
    weights, model, records, split = open_for_evaluation(weights_or_run, data_path, split)
    folder = check_output_dir(output_dir(weights_or_run, weights, out), {"robustness.json", "corruption_errors.png"},
                              "robustness output folder (robustness.json, corruption_errors.png)")
    prep = model.input_spec
    indices = spread_indices(len(records), limit)
    labels = np.asarray(records.labels)[indices]
    dev = resolve_device(device)
    model.to(dev)

    imagenet = is_imagenet(len(records.classes)) if imagenet is None else imagenet
    tasks = [(None, 0)] + [(name, s) for name in names for s in levels]
    images = CorruptedImages(records, indices, prep, tasks, seed=seed, cache=cache,
                             resize=corrupted_set_resize(prep, imagenet))
    preds = predict(model, eval_loader(images, batch_size, workers), dev, len(images))
    top1, errors, by_severity = corruption_errors(preds, labels, tasks)
    result = {
        "top1": top1,
        "mce": mean_corruption_error(errors, ALEXNET_ERRORS) if imagenet else None,
        "mce_unnormalized": mean_corruption_error(errors),
        "images_per_second": None,
        "corruptions": errors,
        "corruption_set": corruption_set(names),
        "preprocessing": images.preprocessing(),
        "severities": list(levels),
        "errors_by_severity": by_severity,
        "normalized_by": "alexnet" if imagenet else None,
        "images": len(indices),
        "split": split,
        "weights": str(weights),
    }
    if perturbations:
        seqs = PerturbedSequences(records, indices, prep, list(PERTURBATIONS), seed=seed)
        seq_preds = predict(model, eval_loader(seqs, max(1, batch_size // FRAMES), workers), dev, len(seqs), FRAMES)
        n = len(indices)
        flips = {}
        for t, name in enumerate(PERTURBATIONS):
            p = seq_preds[t * n:(t + 1) * n]
            flips[name] = flip_probability(p[(p >= 0).all(1)], noise=name in NOISE)
        # No AlexNet flip probabilities are bundled (the reference gives none), so mFR stays unnormalised.
        result.update(mfr_unnormalized=mean_flip_rate(flips), flip_probabilities=flips, frames=FRAMES)
    settings = BenchmarkSettings(batch_size=batch_size, resolution=prep.eval_resolution, device=str(dev),
                                 warmup=1, repeats=3)
    result["images_per_second"] = measure_throughput({"model": model}, settings)[0]["images_per_second"]

    result["chart"] = str(errors_chart(result, folder / "corruption_errors.png"))
    atomic_write_bytes(folder / "robustness.json", json.dumps(result, indent=2).encode())
    return result


def errors_chart(result: dict, path: Path) -> Path:
    """A bar per corruption (error pooled over severities), with the clean error as a line."""
    plt = pyplot()

    names = list(result["corruptions"])
    errors = [result["corruptions"][n] for n in names]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.45 * len(names) + 2), 4.5), dpi=100)
    ax.bar(range(len(names)), errors, color="tab:blue", label="error under corruption")
    if result["normalized_by"] == "alexnet":
        ax.scatter(range(len(names)), [ALEXNET_ERRORS[n] for n in names], color="tab:red", marker="_", s=200,
                   label="AlexNet error")
    ax.axhline(1 - result["top1"], color="black", linestyle="--", label="clean error")
    ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("top-1 error (pooled over severities)")
    mce = f"mCE {result['mce']:.4f}, " if result["mce"] is not None else ""
    ax.set_title(f"{mce}unnormalised mCE {result['mce_unnormalized']:.4f}, clean top-1 {result['top1']:.4f}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    atomic_savefig(fig, path)
    plt.close(fig)
    return path
