"""Nearest-neighbour search over L2-normalised embeddings (inner product = cosine), in bounded memory.

Backends, all exact unless an approximate index is asked for:
- "faiss-gpu": FAISS on every visible GPU (sharded when there are several); k is capped at 2048 there, a
  larger k falls back to "torch" with a message;
- "faiss-cpu": FAISS's brute-force kNN (no copy of the gallery is made for the search);
- "torch": matrix product + top-k on any torch device.
"auto" takes the first that can run. Queries are searched in chunks sized so that the (chunk x gallery)
score block stays under `block_bytes`: peak memory does not grow with queries x gallery.

Leave-one-out is by index: with `self_index`, each query's own gallery row is removed from its results
(masked before the top-k for torch; FAISS searches k + 1 and drops it, or the last neighbour when a tie
pushed it out of the list).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import TransferError, suggest

log = logging.getLogger("transfer")

BACKENDS = ("auto", "faiss-gpu", "faiss-cpu", "torch")
INDEXES = ("flat", "hnsw", "ivf")
FAISS_GPU_MAX_K = 2048
DEFAULT_BLOCK_BYTES = 128 << 20


class SearchError(TransferError):
    """A search that cannot run as asked (backend, index type, k, empty gallery)."""


@dataclass
class SearchResult:
    scores: np.ndarray  # (queries, k) float32 inner products, best first; -inf where no neighbour
    indices: np.ndarray  # (queries, k) int64 gallery rows; -1 where no neighbour
    backend: str
    exact: bool
    note: str = ""


def l2_normalize(x: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def faiss_module():
    # faiss's loader announces at INFO which CPU build it tried; that is noise in a progress log
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)
    try:
        import faiss
    except ImportError:
        return None
    return faiss


def faiss_gpus() -> int:
    faiss = faiss_module()
    if faiss is None or not hasattr(faiss, "StandardGpuResources"):
        return 0
    try:
        return int(faiss.get_num_gpus())
    except (AttributeError, RuntimeError):
        return 0


def choose_backend(backend: str, device: str | None = None) -> str:
    if backend not in BACKENDS:
        raise SearchError(f"unknown backend {backend!r}{suggest(backend, BACKENDS)}; use one of {', '.join(BACKENDS)}")
    if backend == "faiss-gpu" and faiss_gpus() == 0:
        raise SearchError("backend faiss-gpu: this faiss has no GPU support or sees no GPU; install the `gpu` "
                          "extra (faiss-gpu-cu12) or use --backend torch/faiss-cpu")
    if backend == "faiss-cpu" and faiss_module() is None:
        raise SearchError("backend faiss-cpu: faiss is not installed; `pip install faiss-cpu` or use --backend torch")
    if backend != "auto":
        return backend
    wants_cpu = device is not None and device.startswith("cpu")
    if faiss_gpus() and not wants_cpu:
        return "faiss-gpu"
    if torch.cuda.is_available() and not wants_cpu:
        return "torch"  # no GPU faiss, but a GPU: the torch backend runs there
    return "faiss-cpu" if faiss_module() is not None else "torch"


def _chunk_rows(gallery_size: int, block_bytes: int) -> int:
    return max(1, min(65536, block_bytes // max(1, 4 * gallery_size)))


def _drop_self(scores: np.ndarray, indices: np.ndarray, self_index: np.ndarray, k: int):
    """From k + 1 results per row, remove the query's own row, or the last one when it is absent."""
    own = indices == self_index[:, None]
    keep = ~own
    absent = ~own.any(axis=1)
    keep[absent, -1] = False
    return scores[keep].reshape(len(indices), k), indices[keep].reshape(len(indices), k)


def _torch_search(queries, gallery, k, self_index, device, block_bytes):
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    g = torch.from_numpy(gallery).to(dev)
    n = len(queries)
    scores = np.empty((n, k), np.float32)
    indices = np.empty((n, k), np.int64)
    rows = _chunk_rows(len(gallery), block_bytes)
    for start in range(0, n, rows):
        stop = min(n, start + rows)
        q = torch.from_numpy(queries[start:stop]).to(dev)
        s = q @ g.T
        if self_index is not None:
            own = torch.from_numpy(self_index[start:stop]).to(dev)
            r = torch.nonzero(own >= 0).squeeze(1)
            s[r, own[r]] = -math.inf
        top = s.topk(k, dim=1)
        scores[start:stop] = top.values.float().cpu().numpy()
        indices[start:stop] = top.indices.cpu().numpy()
    return scores, indices


def _faiss_search(queries, gallery, k, gpu: bool, block_bytes):
    faiss = faiss_module()
    n = len(queries)
    if gpu:
        index = faiss.IndexFlatIP(gallery.shape[1])
        index = faiss.index_cpu_to_all_gpus(index, co=_sharded()) if faiss_gpus() > 1 else \
            faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), 0, index)
        index.add(gallery)
        search = index.search
    else:
        def search(q, kk):
            return faiss.knn(q, gallery, kk, metric=faiss.METRIC_INNER_PRODUCT)
    scores = np.empty((n, k), np.float32)
    indices = np.empty((n, k), np.int64)
    rows = _chunk_rows(len(gallery), block_bytes) if gpu else max(1, min(n, 16384))
    for start in range(0, n, rows):
        stop = min(n, start + rows)
        scores[start:stop], indices[start:stop] = search(queries[start:stop], k)
    return scores, indices


def _sharded():
    faiss = faiss_module()
    co = faiss.GpuMultipleClonerOptions()
    co.shard = True
    return co


def _approximate(queries, gallery, k, kind: str):
    faiss = faiss_module()
    if faiss is None:
        raise SearchError(f"index {kind} needs faiss; `pip install faiss-cpu`")
    d = gallery.shape[1]
    if kind == "hnsw":
        index = faiss.IndexHNSWFlat(d, 32, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = 80
        index.hnsw.efSearch = max(128, 2 * k)
        note = f"HNSW M=32, efSearch={index.hnsw.efSearch}"
    else:
        nlist = max(1, min(len(gallery) // 39, int(4 * math.sqrt(len(gallery)))))
        quantizer = faiss.IndexFlatIP(d)
        index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
        index.train(gallery)
        index.nprobe = min(nlist, max(8, nlist // 8))  # ~1/8 of the lists: recall ~0.9+ on real embeddings
        note = f"IVF nlist={nlist}, nprobe={index.nprobe}"
    index.add(gallery)
    scores, indices = index.search(queries, k)
    return scores, indices.astype(np.int64), note


def search(queries: np.ndarray, gallery: np.ndarray, k: int, *, self_index: np.ndarray | None = None,
           backend: str = "auto", index: str = "flat", device: str | None = None,
           block_bytes: int = DEFAULT_BLOCK_BYTES) -> SearchResult:
    """The k nearest gallery rows of every query by inner product, best first."""
    if index not in INDEXES:
        raise SearchError(f"unknown index {index!r}{suggest(index, INDEXES)}; use one of {', '.join(INDEXES)}")
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    gallery = np.ascontiguousarray(gallery, dtype=np.float32)
    if len(gallery) == 0:
        raise SearchError("the gallery is empty: nothing to search")
    if queries.shape[1] != gallery.shape[1]:
        raise SearchError(f"queries have {queries.shape[1]} dimensions, the gallery {gallery.shape[1]}")
    if self_index is not None:
        self_index = np.asarray(self_index, dtype=np.int64)
    available = len(gallery) - (1 if self_index is not None and (self_index >= 0).any() else 0)
    k_eff = max(0, min(k, available))
    name = choose_backend(backend, device)
    note = ""
    # the torch backend masks the query's own row; FAISS searches one more neighbour and drops it afterwards
    extra = 1 if self_index is not None and (name != "torch" or index != "flat") else 0
    if name == "faiss-gpu" and k_eff + extra > FAISS_GPU_MAX_K:
        note = f"k={k_eff} is above faiss-gpu's limit of {FAISS_GPU_MAX_K}: searched with the torch backend"
        log.warning(note)
        name, extra = "torch", 0 if index == "flat" else extra
    if k_eff == 0:
        scores, indices = np.empty((len(queries), 0), np.float32), np.empty((len(queries), 0), np.int64)
    elif index != "flat":
        scores, indices, note = _approximate(queries, gallery, k_eff + extra, index)
    elif name == "torch":
        scores, indices = _torch_search(queries, gallery, k_eff, self_index, device, block_bytes)
    else:
        scores, indices = _faiss_search(queries, gallery, k_eff + extra, name == "faiss-gpu", block_bytes)
    if extra and k_eff:
        scores, indices = _drop_self(scores, indices, self_index, k_eff)
    if k_eff < k:  # fewer gallery items than k: pad, so callers always get k columns
        pad = k - k_eff
        scores = np.concatenate([scores, np.full((len(queries), pad), -np.inf, np.float32)], axis=1)
        indices = np.concatenate([indices, np.full((len(queries), pad), -1, np.int64)], axis=1)
    return SearchResult(scores, indices.astype(np.int64), name if index == "flat" else f"faiss-{index}",
                        exact=index == "flat", note=note)


def build_index(gallery: np.ndarray):
    """An exact FAISS inner-product index of the gallery, for saving next to the embeddings."""
    faiss = faiss_module()
    if faiss is None:
        return None
    index = faiss.IndexFlatIP(gallery.shape[1])
    index.add(np.ascontiguousarray(gallery, dtype=np.float32))
    return index
