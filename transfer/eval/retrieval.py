"""Retrieval metrics: pure functions of neighbour lists and labels (arrays in, numbers out); and at the end
`evaluate_embeddings`, which searches (eval/index.py) and scores embeddings with them.

The protocol (shared/reference/retrieval.md; Musgrave et al. 2020 for MAP@R):
- a query is left out of its own result list by its index (`self_index`), never by dropping rank 0, because
  duplicates and ties can put another item at rank 0;
- queries whose class has no other member in the gallery ("lone queries") are excluded from every metric;
- Recall@K: fraction of queries with at least one same-class item among their K nearest neighbours;
- Precision@K: mean fraction of same-class items among the K nearest neighbours;
- MAP@R: R = same-class gallery items of the query (without itself); mean over queries of
  (1/R) sum_{i<=R} P(i) rel(i), where P(i) is the precision at rank i.

    >>> import numpy as np
    >>> neighbors = np.array([[1, 2], [0, 2], [0, 1]])     # each item's two nearest others
    >>> labels = np.array([0, 0, 1])
    >>> scores = retrieval_metrics(neighbors, labels, labels, ["recall@1", "map@r"], self_index=np.arange(3))
    >>> scores["recall@1"], scores["map@r"], scores["queries"]   # item 2 is alone in class 1: excluded
    (1.0, 1.0, 2)
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from ..errors import RetrievalError, TransferError, suggest
from . import index as knn

DEFINITION = ("leave-one-out by index (a query never retrieves itself), queries without another same-class "
              "gallery item excluded; Recall@K = any same-class item in the top K; MAP@R per Musgrave et al. 2020")


class MetricError(TransferError):
    """An unknown or malformed metric name."""


@dataclass(frozen=True)
class Metric:
    kind: str  # "recall", "precision" or "map@r"
    k: int | None = None

    @property
    def name(self) -> str:
        return "map@r" if self.kind == "map@r" else f"{self.kind}@{self.k}"


_PATTERN = re.compile(r"^(recall|precision|r|p)@(\d+)$")
_EXAMPLES = ["recall@1", "recall@10", "precision@5", "map@r"]


def parse_metrics(spec: str | list[str]) -> list[Metric]:
    """'recall@1,recall@2,map@r' -> [Metric('recall', 1), ...]: names are case-insensitive, kept in order."""
    names = spec.split(",") if isinstance(spec, str) else list(spec)
    out: list[Metric] = []
    for raw in names:
        name = raw.strip().lower()
        if not name:
            continue
        if name in ("map@r", "mapr", "map_at_r"):
            metric = Metric("map@r")
        else:
            m = _PATTERN.match(name)
            if not m or int(m.group(2)) < 1:
                raise MetricError(f"unknown metric {raw.strip()!r}{suggest(name, _EXAMPLES)}; use recall@K, "
                                  f"precision@K (K >= 1) or map@r, comma-separated")
            kind = {"r": "recall", "p": "precision"}.get(m.group(1), m.group(1))
            metric = Metric(kind, int(m.group(2)))
        if metric not in out:
            out.append(metric)
    if not out:
        raise MetricError("no metric given; use e.g. --eval recall@1,recall@10,map@r")
    return out


def relevant_counts(query_labels: np.ndarray, gallery_labels: np.ndarray, self_index: np.ndarray | None = None
                    ) -> np.ndarray:
    """R per query: gallery items with the query's label, not counting the query itself."""
    classes, counts = np.unique(gallery_labels, return_counts=True)
    per_class = dict(zip(classes.tolist(), counts.tolist(), strict=True))
    r = np.array([per_class.get(q, 0) for q in np.asarray(query_labels).tolist()], dtype=np.int64)
    if self_index is not None:
        r -= (np.asarray(self_index) >= 0).astype(np.int64)
    return r


def relevance(neighbors: np.ndarray, query_labels: np.ndarray, gallery_labels: np.ndarray) -> np.ndarray:
    """(queries, k) booleans: neighbour j of query i has the query's label. Index -1 (no neighbour) is False."""
    neighbors = np.asarray(neighbors)
    valid = neighbors >= 0
    labels = np.asarray(gallery_labels)[np.where(valid, neighbors, 0)]
    return valid & (labels == np.asarray(query_labels)[:, None])


def recall_at_k(rel: np.ndarray, k: int) -> np.ndarray:
    """Per query: 1.0 when a relevant item is among the first k neighbours."""
    return rel[:, :k].any(axis=1).astype(np.float64)


def precision_at_k(rel: np.ndarray, k: int) -> np.ndarray:
    """Per query: relevant items among the first k, divided by k."""
    return rel[:, :k].sum(axis=1) / float(k)


def average_precision_at_r(rel: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Per query: (1/R) sum_{i<=R} P(i) rel(i). Needs at least max(R) neighbours per query."""
    r = np.asarray(r)
    if len(r) and r.max() > rel.shape[1]:
        raise ValueError(f"MAP@R needs {int(r.max())} neighbours per query (the largest class), got {rel.shape[1]}")
    ranks = np.arange(1, rel.shape[1] + 1)
    within = ranks[None, :] <= r[:, None]
    hits = rel & within
    precision = np.cumsum(hits, axis=1) / ranks[None, :]
    return (precision * hits).sum(axis=1) / np.maximum(r, 1)


def neighbours_needed(metrics: list[Metric], r: np.ndarray) -> int:
    """How many neighbours the metrics read: the largest K, and the largest R for MAP@R."""
    k = max((m.k for m in metrics if m.k is not None), default=1)
    if any(m.kind == "map@r" for m in metrics) and len(r):
        k = max(k, int(r.max()))
    return k


def per_query_metrics(neighbors: np.ndarray, query_labels: np.ndarray, gallery_labels: np.ndarray,
                      metrics: list[Metric] | list[str] | str, self_index: np.ndarray | None = None
                      ) -> dict[str, np.ndarray]:
    """{metric name: (queries,) values}: each query's own score, NaN for a lone query (no other item of its
    class in the gallery), which no metric can score. The means of `retrieval_metrics` are their nanmeans.

    >>> import numpy as np
    >>> neighbors = np.array([[1, 2], [2, 0], [0, 1]])
    >>> labels = np.array([0, 0, 1])
    >>> per_query_metrics(neighbors, labels, labels, "recall@1,recall@2", self_index=np.arange(3))
    {'recall@1': array([ 1.,  0., nan]), 'recall@2': array([ 1.,  1., nan])}
    """
    if not (metrics and isinstance(metrics, list) and isinstance(metrics[0], Metric)):
        metrics = parse_metrics(metrics)
    query_labels = np.asarray(query_labels)
    r = relevant_counts(query_labels, np.asarray(gallery_labels), self_index)
    keep = r > 0
    rel = relevance(neighbors, query_labels, gallery_labels)[keep]
    out: dict[str, np.ndarray] = {}
    for m in metrics:
        values = np.full(len(query_labels), np.nan)
        if m.kind == "recall":
            values[keep] = recall_at_k(rel, m.k)
        elif m.kind == "precision":
            values[keep] = precision_at_k(rel, m.k)
        else:
            values[keep] = average_precision_at_r(rel, r[keep])
        out[m.name] = values
    return out


def summarize(per_query: dict[str, np.ndarray]) -> dict:
    """{metric name: mean over the scored queries (NaN when none), 'queries': scored, 'lone_queries': not}."""
    scored = ~np.isnan(next(iter(per_query.values())))
    out: dict = {name: float(v[scored].mean()) if scored.any() else float("nan") for name, v in per_query.items()}
    out["queries"] = int(scored.sum())
    out["lone_queries"] = int((~scored).sum())
    return out


def retrieval_metrics(neighbors: np.ndarray, query_labels: np.ndarray, gallery_labels: np.ndarray,
                      metrics: list[Metric] | list[str] | str, self_index: np.ndarray | None = None) -> dict:
    """{metric name: value in [0, 1], 'queries': queries scored, 'lone_queries': queries excluded}.

    `neighbors` (queries, k) holds gallery indices, nearest first, the query itself already removed;
    `self_index[i]` is query i's own index in the gallery (-1 when it is not in the gallery).
    """
    return summarize(per_query_metrics(neighbors, query_labels, gallery_labels, metrics, self_index))


# ---------------------------------------------------------------- embeddings in, scores out (search, then score)
@dataclass
class Evaluation:
    metrics: dict
    per_query: dict[str, np.ndarray]  # metric name -> one value per query (NaN: a lone query)
    result: knn.SearchResult
    queries: np.ndarray  # rows (of the embedded set) that are queries
    gallery: np.ndarray  # rows that form the gallery, in index order


def query_gallery(n: int, is_query: np.ndarray | None, is_gallery: np.ndarray | None, readable: np.ndarray):
    """Query rows, gallery rows and each query's own position in the gallery (-1: not in it)."""
    q = np.ones(n, bool) if is_query is None else np.asarray(is_query, bool)
    g = np.ones(n, bool) if is_gallery is None else np.asarray(is_gallery, bool)
    queries = np.flatnonzero(q & readable)
    gallery = np.flatnonzero(g & readable)
    position = np.full(n, -1, np.int64)
    position[gallery] = np.arange(len(gallery))
    return queries, gallery, position[queries]


def evaluate_embeddings(emb: np.ndarray, labels: np.ndarray, metrics: list[Metric], *,
                        is_query: np.ndarray | None = None, is_gallery: np.ndarray | None = None,
                        readable: np.ndarray | None = None, backend: str = "auto", index: str = "flat",
                        device: str | None = None, extra_k: int = 0) -> Evaluation:
    labels = np.asarray(labels)
    readable = np.ones(len(labels), bool) if readable is None else readable
    queries, gallery, self_index = query_gallery(len(labels), is_query, is_gallery, readable)
    if len(gallery) == 0:
        raise RetrievalError("the gallery is empty: no readable gallery items to search")
    if len(queries) == 0:
        raise RetrievalError("there are no queries: no readable items marked is_query")
    r = relevant_counts(labels[queries], labels[gallery], self_index)
    k = max(neighbours_needed(metrics, r), extra_k)
    result = knn.search(emb[queries], emb[gallery], k, self_index=self_index, backend=backend, index=index,
                        device=device)
    per_query = per_query_metrics(result.indices, labels[queries], labels[gallery], metrics, self_index=self_index)
    scores = summarize(per_query)
    scores.update(backend=result.backend, exact=result.exact, gallery=len(gallery), definition=DEFINITION)
    if result.note:
        scores["note"] = result.note
    return Evaluation(scores, per_query, result, queries, gallery)
