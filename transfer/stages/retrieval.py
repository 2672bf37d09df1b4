"""What a retrieval run writes and `transfer retrieve`: embed, index, search, score, picture. (Training a
retrieval model is the retrieval task of stages/tasks.py.)

    RUN/retrieval/metrics.json     {metric: value, backend, exact, definition, queries, gallery}
    RUN/retrieval/embeddings.npz   embeddings (n x d float32, L2-normalised), labels, ids, is_query, is_gallery
    RUN/retrieval/per_query.csv    each query's id, class and own score per metric (empty: a lone query)
    RUN/retrieval/index.faiss      an exact inner-product FAISS index of the gallery rows (in npz order)
    RUN/retrieval/grid.png         queries with their nearest gallery images (green: same class)
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..data.loader import eval_dataset, eval_loader
from ..data.sources import DataError, FileRecords, Records, open_split
from ..errors import RetrievalError, TransferError
from ..eval import index as knn
from ..eval.inference import embed
from ..eval.retrieval import Evaluation, Metric, evaluate_embeddings, parse_metrics
from ..files import (
    atomic_savefig,
    atomic_write_bytes,
    atomic_write_csv,
    building_dir,
    check_output_dir,
    make_dir,
    pyplot,
)
from ..recipe import Recipe, RetrievalSection
from ..runtime import resolve_device

log = logging.getLogger("transfer")


# ------------------------------------------------------------------------------------------------ embedding
def embedding_model(model: nn.Module, where: str) -> nn.Module:
    if not hasattr(model, "pool_features"):
        raise RetrievalError(f"{where} is not an embedding model (no pool_features); use a transfer ResNet run "
                             f"or weights file")
    return model


# ------------------------------------------------------------------------------------------------ outputs
# what save_outputs writes
OUTPUT_FILES = {"metrics.json", "per_query.csv", "embeddings.npz", "index.faiss", "grid.png"}


def save_outputs(out: Path, emb: np.ndarray, records: Records, readable: np.ndarray, ev: Evaluation,
                 grid: bool = True) -> dict[str, Path]:
    make_dir(out)
    n = len(records)
    is_query = np.zeros(n, bool)
    is_query[ev.queries] = True
    is_gallery = np.zeros(n, bool)
    is_gallery[ev.gallery] = True
    paths = {"metrics": out / "metrics.json", "embeddings": out / "embeddings.npz"}
    atomic_write_bytes(paths["metrics"], (json.dumps(ev.metrics, indent=2) + "\n").encode())
    paths["per_query"] = out / "per_query.csv"
    names = list(ev.per_query)
    labels = np.asarray(records.labels)
    atomic_write_csv(paths["per_query"], ["id", "class", *names],
                     ([records.ids[row], _class_name(records, labels[row]),
                       *("" if np.isnan(ev.per_query[m][i]) else f"{ev.per_query[m][i]:.6g}" for m in names)]
                      for i, row in enumerate(ev.queries)))
    import io

    buf = io.BytesIO()
    np.savez(buf, embeddings=emb.astype(np.float32), labels=np.asarray(records.labels, np.int64),
             ids=np.asarray(records.ids, dtype=str), is_query=is_query, is_gallery=is_gallery, readable=readable,
             classes=np.asarray(records.classes, dtype=str))
    atomic_write_bytes(paths["embeddings"], buf.getvalue())
    index = knn.build_index(emb[ev.gallery])
    if index is not None:
        import faiss

        paths["index"] = out / "index.faiss"
        atomic_write_bytes(paths["index"], faiss.serialize_index(index).tobytes())
    if grid:
        paths["grid"] = write_grid(out / "grid.png", records, ev)
    return paths


def _class_name(records: Records, label: int) -> str:
    return records.classes[label] if 0 <= label < len(records.classes) else ""


def write_grid(path: Path, records: Records, ev: Evaluation, rows: int = 6, k: int = 5) -> Path:
    """A PNG: `rows` queries spread over the query set, each followed by its k nearest gallery images."""
    plt = pyplot()

    # one query from each of `rows` classes spread over the label range, so the grid shows different classes
    q_labels = np.asarray(records.labels)[ev.queries]
    classes, first = np.unique(q_labels, return_index=True)
    spread = np.unique(np.linspace(0, len(classes) - 1, min(rows, len(classes))).round().astype(int))
    picks = first[spread]
    k = min(k, ev.result.indices.shape[1])
    fig, axes = plt.subplots(len(picks), k + 1, figsize=(1.6 * (k + 1), 1.7 * len(picks)), squeeze=False)
    for r, qi in enumerate(picks):
        q_row = ev.queries[qi]
        cells = [(q_row, None)] + [(ev.gallery[j] if j >= 0 else None, ev.result.scores[qi, c])
                                   for c, j in enumerate(ev.result.indices[qi, :k])]
        for c, (row, score) in enumerate(cells):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if row is None:
                ax.axis("off")
                continue
            try:
                ax.imshow(records.load(int(row)))
            except Exception:  # an unreadable image still gets its cell
                ax.text(0.5, 0.5, "unreadable", ha="center", va="center")
            label = _class_name(records, records.labels[row])
            if c == 0:  # the query's own score on the first metric, so a failure is seen as one
                first = next(iter(ev.per_query))
                value = ev.per_query[first][qi]
                own = "lone" if np.isnan(value) else f"{first} {value:.2f}"
                ax.set_title(f"query {label}\n{own}", fontsize=7)
                color = "black"
            else:
                same = records.labels[row] == records.labels[q_row]
                color = "green" if same else "red"
                ax.set_title(f"{score:.3f}\n{label}", fontsize=7, color=color)
            for spine in ax.spines.values():
                spine.set_edgecolor(color)
                spine.set_linewidth(3 if c else 1)
    fig.suptitle("queries (left) and nearest gallery images; green = same class", fontsize=8)
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=100)
    plt.close(fig)
    return path


def score_and_save(model: nn.Module, records: Records, dataset, metrics: list[Metric], out: Path, *,
                   device: torch.device, precision: str, backend: str, index: str = "flat", batch_size: int = 64,
                   workers: int = 2) -> tuple[Evaluation, dict[str, Path]]:
    """Embed every record, search, score, and write metrics, embeddings, index and grid into `out`."""
    emb, readable = embed(model, eval_loader(dataset, batch_size, workers), len(records), device,
                          precision=precision)
    if not readable.any():
        raise RetrievalError(f"no readable images among the {len(records)} to embed")
    ev = evaluate_embeddings(emb, records.labels, metrics, is_query=records.is_query, is_gallery=records.is_gallery,
                             readable=readable, backend=backend, index=index, device=str(device),
                             extra_k=5)  # the grid shows 5 neighbours
    return ev, save_outputs(out, emb, records, readable, ev)


def retrieval_report(run, records: Records, dataset, recipe: Recipe, device: torch.device) -> dict:
    """After training: evaluate the best (or, as eval.report_weights says, final) weights on the test split and
    write RUN/retrieval/."""
    from ..models import load_model
    from ..runs import resolve_weights

    model = load_model(resolve_weights(run.path, recipe.eval.report_weights)).to(device)
    with building_dir(run.path / "retrieval") as out:  # a stop or a kill never leaves half of it
        ev, _ = score_and_save(model, records, dataset, parse_metrics(recipe.retrieval.metrics), out, device=device,
                               precision=recipe.runtime.precision, backend=recipe.retrieval.backend,
                               workers=recipe.runtime.workers)
    return {f"test_{k}": v for k, v in ev.metrics.items() if isinstance(v, float)}


# ------------------------------------------------------------------------------------------------ `retrieve`
def load_embeddings_file(path: str) -> tuple[np.ndarray, np.ndarray]:
    p = Path(path)
    if not p.is_file():
        raise RetrievalError(f"--embeddings {path}: no such file")
    try:
        data = np.load(p, allow_pickle=False)
    except (ValueError, OSError) as e:
        raise RetrievalError(f"--embeddings {path}: not a readable .npz file ({e})") from None
    missing = [k for k in ("embeddings", "labels") if k not in data.files]
    if missing:
        raise RetrievalError(f"--embeddings {path} lacks the array(s) {', '.join(missing)} (has: "
                             f"{', '.join(data.files) or 'none'}); save with np.savez(F, embeddings=E, labels=L)")
    emb, labels = np.asarray(data["embeddings"]), np.asarray(data["labels"])
    if emb.ndim != 2 or labels.ndim != 1 or len(emb) != len(labels):
        raise RetrievalError(f"--embeddings {path}: expected embeddings (n, d) and labels (n,), got "
                             f"{emb.shape} and {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise RetrievalError(f"--embeddings {path}: labels must be integers, got {labels.dtype}")
    if not np.isfinite(emb).all():
        raise RetrievalError(f"--embeddings {path}: embeddings contain NaN or infinite values")
    return knn.l2_normalize(emb), labels.astype(np.int64)


def evaluate_file(path: str, metrics: str, *, backend: str = "auto", index: str = "flat",
                  device: str | None = None) -> dict:
    """Score saved embeddings: query = gallery, leave-one-out."""
    emb, labels = load_embeddings_file(path)
    ev = evaluate_embeddings(emb, labels, parse_metrics(metrics), backend=backend, index=index, device=device)
    return ev.metrics


def _run_and_recipe(run_arg: str | None):
    from ..recipe import load_recipe
    from ..runs import RunDir, latest_run

    if run_arg is None:
        try:
            run = latest_run("retrieval")
        except TransferError as e:
            raise RetrievalError(f"{e}; or name a retrieval run: transfer retrieve RUN") from None
        return run, load_recipe(run.recipe)
    p = Path(run_arg)
    if p.is_dir() and RunDir(p).recipe.is_file():
        return RunDir(p), load_recipe(RunDir(p).recipe)
    return None, None


def evaluate_run(run_arg: str | None, metrics: str | None, *, data_path: str | None = None,
                 split: str | None = None, backend: str = "auto", index: str = "flat", batch_size: int = 64,
                 device: str = "auto", workers: int = 2, out: str | None = None) -> dict:
    """Embed a run's (or weights file's) test split, search, score; write metrics, embeddings, index, grid."""
    from ..models import load_model
    from ..runs import resolve_weights
    from .evaluation import data_section

    run, recipe = _run_and_recipe(run_arg)
    if recipe is not None and recipe.stage != "retrieval" and data_path is None:
        raise RetrievalError(f"{run.path} is a {recipe.stage} run: its validation split holds the classes it was "
                             f"trained on, so Recall@K there is no retrieval result; give a retrieval run, or add "
                             f"--data with images of classes it never saw")
    weights = resolve_weights(run.path if run is not None else run_arg)
    target = Path(out) if out else (run.path / "retrieval" if run is not None else Path("retrieval"))
    check_output_dir(target, OUTPUT_FILES, "retrieval output folder (" + ", ".join(sorted(OUTPUT_FILES)) + ")")
    model = embedding_model(load_model(weights), str(weights))
    data = data_section(data_path, recipe)
    split = split or data.val_split
    records = open_split(data, split)
    chosen = parse_metrics(metrics or (recipe.retrieval.metrics if recipe else RetrievalSection().metrics))
    dev = resolve_device(device)
    model.to(dev)
    dataset = eval_dataset(records, model.input_spec)
    ev, files = score_and_save(model, records, dataset, chosen, target, device=dev,
                               precision="bf16" if dev.type == "cuda" else "fp32",  # AMP on GPU
                               backend=backend, index=index, batch_size=batch_size, workers=workers)
    return {**ev.metrics, "weights": str(weights), "split": split, "written": str(target),
            "files": {k: str(v) for k, v in files.items()}}


def search_images(run_arg: str | None, images: tuple[str, ...], *, topk: int = 5, backend: str = "auto",
                  batch_size: int = 64, device: str = "auto") -> list[dict]:
    """Embed query images with the run's model; search the gallery saved by its evaluation."""
    from ..models import load_model
    from ..runs import resolve_weights
    from .evaluation import image_paths

    run, _ = _run_and_recipe(run_arg)
    if run is None:
        raise RetrievalError(f"{run_arg} is not a run directory; --query searches the gallery saved in a run")
    saved = run.path / "retrieval" / "embeddings.npz"
    if not saved.is_file():
        raise RetrievalError(f"{run.path} has no saved gallery ({saved} is missing); run `transfer retrieve "
                             f"{run.path}` first")
    store = np.load(saved, allow_pickle=False)
    gallery = np.flatnonzero(store["is_gallery"])
    if len(gallery) == 0:
        raise RetrievalError(f"the gallery saved in {saved} is empty")
    paths = image_paths(images)
    model = embedding_model(load_model(resolve_weights(run.path)), str(run.path))
    dev = resolve_device(device)
    model.to(dev)
    records = FileRecords(np.zeros(len(paths), np.int64), paths, ["?"])
    dataset = eval_dataset(records, model.input_spec)
    emb, readable = embed(model, eval_loader(dataset, batch_size, 0), len(paths), dev)
    if not readable.all():
        bad = paths[int(np.flatnonzero(~readable)[0])]
        raise DataError(f"query image {bad} could not be read; check the file (a JPEG/PNG image)")
    result = knn.search(emb, store["embeddings"][gallery], topk, backend=backend, device=str(dev))
    ids, labels, classes = store["ids"], store["labels"], store["classes"]
    out = []
    for i, path in enumerate(paths):
        hits = [{"rank": r + 1, "id": str(ids[gallery[j]]), "label": str(classes[labels[gallery[j]]]),
                 "score": float(result.scores[i, r])} for r, j in enumerate(result.indices[i]) if j >= 0]
        out.append({"query": path, "neighbours": hits, "backend": result.backend})
    return out
