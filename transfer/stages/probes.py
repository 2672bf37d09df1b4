"""The linear baselines of the demo's label-budget experiment: a logistic regression on fixed features.

`pixels` fits it on the digits' raw 8x8 ink counts (what any digits tutorial starts from); `frozen` fits it on
a pretrained backbone's pooled features, the backbone left as it is (a linear probe). Each sees exactly the
training images of the fine-tuning run at the same label budget and is scored on the same held-out digits.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..data.loader import eval_dataset, eval_loader
from ..data.sources import Records
from ..recipe import DataSection


def linear_top1(train_x: np.ndarray, train_y: np.ndarray, val_x: np.ndarray, val_y: np.ndarray) -> float:
    """Top-1 of a logistic regression on standardised features (scikit-learn's lbfgs, L2 with C=1)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    fit = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000)).fit(train_x, train_y)
    return float((fit.predict(val_x) == val_y).mean())


def digit_pixels(records: Records, data: DataSection, split: str) -> np.ndarray:
    """(N, 64) raw ink counts of records the digits source made (ids `digits/{split}/{position}`)."""
    from ..data.embedded import load_digits_counts

    counts, labels = load_digits_counts(split, data.split_seed, data.val_fraction, by_class=data.split_by == "class")
    where = np.array([int(i.rsplit("/", 1)[1]) for i in records.ids])
    assert np.array_equal(labels[where], records.labels), "the records are not the digits source's split"
    return counts[where].reshape(len(where), -1).astype(np.float32)


def frozen_features(weights: Path, records: Records, *, device: str = "auto", workers: int = 0,
                    batch_size: int = 256) -> np.ndarray:
    """(N, D) pooled features of the model in `weights`, on its own evaluation preprocessing."""
    from ..eval.inference import embed
    from ..models import load_model
    from ..runtime import resolve_device
    from .retrieval import embedding_model

    dev = resolve_device(device)
    model = embedding_model(load_model(weights), str(weights)).to(dev)
    dataset = eval_dataset(records, model.input_spec)
    features, readable = embed(model, eval_loader(dataset, batch_size, workers), len(records), dev)
    assert readable.all(), "an embedded-source image could not be read"
    return features
