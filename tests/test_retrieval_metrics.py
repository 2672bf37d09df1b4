"""Retrieval metrics against brute-force loops, and every search backend against exhaustive search."""

from __future__ import annotations

import numpy as np
import pytest

from transfer.eval import index as idx
from transfer.eval.retrieval import MetricError, parse_metrics, per_query_metrics, retrieval_metrics


def brute_neighbours(queries, gallery, self_index):
    """Every gallery row for every query, best first (ties: lower row first), the query itself removed."""
    out = []
    for i, q in enumerate(queries):
        scores = [(-float(np.dot(q, g)), j) for j, g in enumerate(gallery) if j != self_index[i]]
        out.append([j for _, j in sorted(scores)])
    return out


def brute_metrics(order, query_labels, gallery_labels, self_index, ks, per_query=False):
    """The textbook definitions, one query at a time: their means, or (per_query) each query's values with
    NaN for a lone query."""
    recall = {k: [] for k in ks}
    precision = {k: [] for k in ks}
    average_precision = []
    for i, ranked in enumerate(order):
        r = sum(1 for j, lab in enumerate(gallery_labels) if lab == query_labels[i] and j != self_index[i])
        if r == 0:  # a lone query
            for v in [*recall.values(), *precision.values(), average_precision]:
                v.append(np.nan)
            continue
        rel = [gallery_labels[j] == query_labels[i] for j in ranked]
        for k in ks:
            recall[k].append(1.0 if any(rel[:k]) else 0.0)
            precision[k].append(sum(rel[:k]) / k)
        ap, hits = 0.0, 0
        for rank in range(1, r + 1):
            if rel[rank - 1]:
                hits += 1
                ap += hits / rank
        average_precision.append(ap / r)
    per = {f"recall@{k}": v for k, v in recall.items()} | {f"precision@{k}": v for k, v in precision.items()}
    per["map@r"] = average_precision
    if per_query:
        return {name: np.array(v) for name, v in per.items()}
    out = {name: float(np.nanmean(v)) for name, v in per.items()}
    out["queries"] = int(np.sum(~np.isnan(average_precision)))
    return out


def tied_embeddings(rng, n=120, d=8, classes=9):
    """Embeddings on a coarse grid (many exactly equal scores), with exact duplicates, and a lone class."""
    x = rng.integers(-2, 3, size=(n, d)).astype(np.float32)
    x[10:20] = x[0:10]  # duplicates
    x[np.all(x == 0, axis=1)] = 1.0
    labels = rng.integers(0, classes, size=n)
    labels[-1] = classes + 5  # a class with one member: its query is excluded
    return idx.l2_normalize(x), labels


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_metrics_match_brute_force_with_ties_and_duplicates(seed):
    rng = np.random.default_rng(seed)
    emb, labels = tied_embeddings(rng)
    self_index = np.arange(len(emb))
    order = brute_neighbours(emb, emb, self_index)
    ks = [1, 2, 4, 8]
    expected = brute_metrics(order, labels, labels, self_index, ks)
    neighbours = np.array([o[:40] for o in order])
    got = retrieval_metrics(neighbours, labels, labels, [f"recall@{k}" for k in ks] +
                            [f"precision@{k}" for k in ks] + ["map@r"], self_index=self_index)
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, abs=1e-12), key
    assert got["lone_queries"] == 1


def test_per_query_values_match_brute_force_query_by_query():
    rng = np.random.default_rng(4)
    emb, labels = tied_embeddings(rng)
    self_index = np.arange(len(emb))
    order = brute_neighbours(emb, emb, self_index)
    expected = brute_metrics(order, labels, labels, self_index, [1, 4], per_query=True)
    got = per_query_metrics(np.array([o[:40] for o in order]), labels, labels, list(expected), self_index)
    assert list(got) == list(expected)
    for name, values in expected.items():
        np.testing.assert_allclose(got[name], values, atol=1e-12, err_msg=name)  # NaN where brute force has NaN
    assert np.isnan(got["map@r"][-1]) and np.isnan(got["map@r"]).sum() == 1  # the lone class's one query


def test_separate_query_and_gallery_sets():
    rng = np.random.default_rng(3)
    gallery, g_labels = tied_embeddings(rng, n=60)
    queries = idx.l2_normalize(rng.normal(size=(25, gallery.shape[1])).astype(np.float32))
    q_labels = rng.integers(0, 9, size=25)
    q_labels[0] = 99  # no gallery item of its class
    no_self = np.full(25, -1)
    order = brute_neighbours(queries, gallery, no_self)
    expected = brute_metrics(order, q_labels, g_labels, no_self, [1, 5])
    got = retrieval_metrics(np.array(order), q_labels, g_labels, "recall@1,recall@5,map@r")
    assert got["recall@1"] == pytest.approx(expected["recall@1"])
    assert got["recall@5"] == pytest.approx(expected["recall@5"])
    assert got["map@r"] == pytest.approx(expected["map@r"])
    assert got["queries"] == 24 and got["lone_queries"] == 1


def test_map_at_r_hand_computed():
    # query 0 (class 0, R = 2): ranks 1..3 are [rel, not, rel] -> AP over R=2 ranks = (1/1) / 2 = 0.5
    # query 1 (class 1, R = 1): rank 1 relevant -> 1.0
    neighbours = np.array([[1, 2, 3], [4, 0, 1]])
    gallery_labels = np.array([0, 0, 5, 0, 1])
    got = retrieval_metrics(neighbours, np.array([0, 1]), gallery_labels, ["map@r", "precision@2", "recall@1"],
                            self_index=np.array([0, -1]))
    assert got["map@r"] == pytest.approx((0.5 + 1.0) / 2)
    assert got["precision@2"] == pytest.approx((0.5 + 0.5) / 2)
    assert got["recall@1"] == 1.0


def test_map_at_r_refuses_too_few_neighbours():
    with pytest.raises(ValueError, match="needs 3 neighbours"):
        retrieval_metrics(np.array([[1, 2]]), np.array([0]), np.array([0, 0, 0, 0]), ["map@r"],
                          self_index=np.array([0]))


def test_parse_metrics_errors_name_the_metric():
    assert [m.name for m in parse_metrics("Recall@1, r@10,map@r,precision@5")] == \
        ["recall@1", "recall@10", "map@r", "precision@5"]
    with pytest.raises(MetricError, match=r"unknown metric 'recal@1'.*did you mean"):
        parse_metrics("recal@1")
    with pytest.raises(MetricError, match="recall@0"):
        parse_metrics("recall@0")


def _assert_same_up_to_ties(result, order, emb, self_index, k):
    """Scores equal the exhaustive ones; neighbours strictly above the k-th score are the same set."""
    for i, ranked in enumerate(order):
        exact = np.array([float(np.dot(emb[i], emb[j])) for j in ranked[:k]])
        np.testing.assert_allclose(result.scores[i], exact, atol=1e-5)
        assert self_index[i] not in result.indices[i]
        assert len(set(result.indices[i])) == k
        kth = exact[-1]
        assert {j for j in ranked[:k] if np.dot(emb[i], emb[j]) > kth + 1e-5} <= set(result.indices[i])


@pytest.mark.parametrize("backend", ["torch", "faiss-cpu"])
def test_backends_match_exhaustive_search(backend):
    rng = np.random.default_rng(4)
    emb, _ = tied_embeddings(rng, n=150)
    self_index = np.arange(len(emb))
    order = brute_neighbours(emb, emb, self_index)
    k = 12
    # a tiny block size forces many chunks (bounded memory) in the torch backend
    result = idx.search(emb, emb, k, self_index=self_index, backend=backend, block_bytes=4 * 150 * 7)
    assert result.backend == backend and result.exact
    _assert_same_up_to_ties(result, order, emb, self_index, k)


def test_leave_one_out_is_by_index_not_rank_zero():
    # items 0 and 1 are identical: either may come first; only the query itself is removed
    emb = idx.l2_normalize(np.array([[1, 0], [1, 0], [0, 1], [0.6, 0.8]], np.float32))
    for backend in ("torch", "faiss-cpu"):
        res = idx.search(emb, emb, 3, self_index=np.arange(4), backend=backend)
        assert res.indices[0, 0] == 1 and res.indices[1, 0] == 0
        assert res.scores[0, 0] == pytest.approx(1.0)
        assert all(i not in row for i, row in enumerate(res.indices))


def test_k_larger_than_gallery_pads():
    emb = idx.l2_normalize(np.eye(3, dtype=np.float32))
    res = idx.search(emb, emb, 5, self_index=np.arange(3), backend="torch")
    assert res.indices.shape == (3, 5)
    assert (res.indices[:, 2:] == -1).all() and np.isneginf(res.scores[:, 2:]).all()


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_approximate_indexes_are_labelled_and_close(kind):
    rng = np.random.default_rng(5)
    emb = idx.l2_normalize(rng.normal(size=(800, 16)).astype(np.float32))
    exact = idx.search(emb, emb, 10, self_index=np.arange(800), backend="torch")
    approx = idx.search(emb, emb, 10, self_index=np.arange(800), index=kind)
    assert not approx.exact and approx.backend == f"faiss-{kind}"
    overlap = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(approx.indices, exact.indices, strict=True)])
    assert overlap > 0.8
    assert all(i not in row for i, row in enumerate(approx.indices))


def test_search_errors():
    emb = np.ones((2, 4), np.float32)
    with pytest.raises(idx.SearchError, match="gallery is empty"):
        idx.search(emb, np.zeros((0, 4), np.float32), 1)
    with pytest.raises(idx.SearchError, match=r"unknown backend 'fais-cpu'.*did you mean"):
        idx.search(emb, emb, 1, backend="fais-cpu")
    if idx.faiss_gpus() == 0:
        with pytest.raises(idx.SearchError, match="no GPU support"):
            idx.search(emb, emb, 1, backend="faiss-gpu")
