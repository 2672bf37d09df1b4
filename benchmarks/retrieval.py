"""Recall@K evaluation at Stanford Online Products test size: time and peak memory of each search backend,
side by side with a plain FAISS IndexFlatIP search with the same k.

    python benchmarks/retrieval.py                       # 60,502 embeddings, 1536-d and 2048-d
    python benchmarks/retrieval.py --n 20000 --dims 512  # smaller

Every item is a query against all the others (leave-one-out, as Recall@K on SOP). The embeddings are
synthetic but shaped like SOP's test set: 11,316 classes of ~5 images, each image its class centre plus
noise (Recall@1 0.65 at 1536-d, 0.85 at 2048-d), L2-normalised. Each measurement runs in a fresh
process, so its peak memory (the rise of the resident-set high-water mark over the embeddings already
loaded) is its own. Exact backends are checked to return the same neighbours as the baseline (up to ties:
equal scores in another order); approximate indexes report the fraction of the exact top-k they find.
Writes results/retrieval.json and results/retrieval.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results"


def make_embeddings(n: int, d: int, classes: int, seed: int = 0, noise: float = 3.2) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.sort(rng.integers(0, classes, size=n))
    centres = rng.standard_normal((classes, d), dtype=np.float32)
    x = centres[labels] + noise * rng.standard_normal((n, d), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x, labels.astype(np.int64)


def _status(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024  # kB
    raise RuntimeError(f"no {field} in /proc/self/status")


def _reset_peak() -> None:
    # Linux (>= 4.0): writing 5 to clear_refs resets the resident high-water mark (VmHWM) to the current
    # resident set, so the peak read afterwards is the search's own, not the imports' or the file load's
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def worker(backend: str, path: str, k: int, out: str) -> None:
    """One measurement in this process: load, search, report seconds and peak memory rise."""
    import faiss  # imports first: neither their time nor their memory is the search's
    import torch

    from transfer.eval.index import search

    emb = np.load(path)
    on_gpu = backend == "torch" and torch.cuda.is_available()  # the torch backend searches on the GPU there
    if on_gpu:
        torch.zeros(1, device="cuda")  # CUDA's start-up is not the search's time
        torch.cuda.synchronize()
    _reset_peak()
    base = _status("VmRSS")
    t = time.perf_counter()
    if backend == "faiss-flat":  # the baseline: what a user would write with FAISS directly
        index = faiss.IndexFlatIP(emb.shape[1])
        index.add(emb)
        scores, indices = index.search(emb, k + 1)
        # leave-one-out as in every backend: drop the query itself (or the last hit if ties pushed it out)
        own = indices == np.arange(len(emb))[:, None]
        keep = ~own
        keep[~own.any(1), -1] = False
        scores, indices = scores[keep].reshape(len(emb), k), indices[keep].reshape(len(emb), k)
        note = ""
        exact = True
    else:
        name, _, kind = backend.partition(":")
        res = search(emb, emb, k, self_index=np.arange(len(emb)), backend=name, index=kind or "flat")
        scores, indices, note, exact = res.scores, res.indices, res.note, res.exact
    seconds = time.perf_counter() - t  # the results are numpy arrays: the GPU work has finished
    peak = _status("VmHWM") - base
    gpu_peak = torch.cuda.max_memory_allocated() if on_gpu else None
    np.savez(out, scores=scores, indices=indices)
    print(json.dumps({"seconds": seconds, "peak_bytes": peak, "gpu_peak_bytes": gpu_peak, "note": note,
                      "exact": exact, "device": "cuda" if on_gpu else "cpu"}))


def measure(backend: str, path: Path, k: int, tmp: Path) -> tuple[dict, np.ndarray, np.ndarray]:
    out = tmp / f"{backend.replace(':', '_')}.npz"
    paths = [str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in paths if p))
    res = subprocess.run([sys.executable, __file__, "--worker", backend, "--file", str(path), "--k", str(k),
                          "--result", str(out)], capture_output=True, text=True, env=env, check=False)
    if res.returncode != 0:
        raise RuntimeError(f"{backend} failed:\n{res.stderr[-2000:]}")
    info = json.loads(res.stdout.strip().splitlines()[-1])
    got = np.load(out)
    return info, got["scores"], got["indices"]


def same_up_to_ties(scores_a, idx_a, scores_b, idx_b, tol: float = 1e-5) -> tuple[bool, int]:
    """Scores agree; any row whose index lists differ only swaps items of (nearly) equal score."""
    if not np.allclose(scores_a, scores_b, atol=tol):
        return False, int((~np.isclose(scores_a, scores_b, atol=tol)).any(1).sum())
    rows = np.flatnonzero((idx_a != idx_b).any(1))
    bad = 0
    for r in rows:
        kth = scores_a[r, -1]
        strict_a = set(idx_a[r][scores_a[r] > kth + tol])
        strict_b = set(idx_b[r][scores_b[r] > kth + tol])
        bad += strict_a != strict_b
    return bad == 0, len(rows)


def recall_at_1(indices: np.ndarray, labels: np.ndarray) -> float:
    from transfer.eval.retrieval import retrieval_metrics

    return retrieval_metrics(indices, labels, labels, ["recall@1"], self_index=np.arange(len(labels)))["recall@1"]


def run(args) -> dict:
    import faiss
    import torch

    from transfer.eval.throughput import describe_machine

    rows = []
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        for d in args.dims:
            emb, labels = make_embeddings(args.n, d, args.classes)
            path = tmp / f"emb{d}.npy"
            np.save(path, emb)
            size = emb.nbytes
            del emb
            base_info, base_scores, base_idx = measure("faiss-flat", path, args.k, tmp)
            print(json.dumps({"dim": d, "baseline_seconds": base_info["seconds"]}), flush=True)
            exact_recall = recall_at_1(base_idx, labels)
            rows.append({"dim": d, "backend": "faiss IndexFlatIP (baseline)", **base_info,
                         "embeddings_bytes": size, "ratio_time": 1.0, "identical": True,
                         "recall@1": exact_recall})
            approx = [f"faiss-cpu:{a}" for a in args.approx] if d == args.dims[0] else []
            for backend in args.backends + approx:
                info, scores, idx = measure(backend, path, args.k, tmp)
                row = {"dim": d, "backend": backend, **info, "embeddings_bytes": size,
                       "ratio_time": info["seconds"] / base_info["seconds"], "recall@1": recall_at_1(idx, labels)}
                if info["exact"]:
                    row["identical"], row["rows_reordered_by_ties"] = same_up_to_ties(base_scores, base_idx,
                                                                                      scores, idx)
                else:
                    found = [len(set(a) & set(b)) for a, b in zip(idx, base_idx, strict=True)]
                    row["recall_vs_exact"] = float(np.sum(found) / base_idx.size)
                rows.append(row)
                print(json.dumps(row), flush=True)
    gpu = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    machine_info = {**describe_machine(torch.device("cpu")), "faiss": faiss.__version__,
                    **({"gpu": describe_machine(gpu)["gpu"]} if gpu.type == "cuda" else {})}
    return {"date": dt.date.today().isoformat(), "machine": machine_info, "n": args.n, "k": args.k,
            "classes": args.classes, "rows": rows}


def machine(m: dict) -> str:
    gpu = f", GPU {m['gpu']} (the torch backend's device)" if "gpu" in m else ""
    return (f"{m['cpus']} CPUs ({m['processor']}), {m['threads']} torch threads{gpu}, torch {m['torch']}, "
            f"faiss {m['faiss']}")


def markdown(result: dict) -> str:
    lines = [f"# Retrieval search at SOP test size ({result['n']:,} embeddings, every one a query, k={result['k']})",
             "", f"{result['date']}; {machine(result['machine'])}. One fresh process per row; peak memory = rise "
             "of the resident high-water mark over the loaded embeddings (on a GPU: the GPU's peak allocation "
             "besides). Ratio = time / FAISS IndexFlatIP's.", "",
             "| dim | backend | seconds | ratio | peak memory / embeddings | same neighbours | Recall@1 | "
             "recall vs exact |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in result["rows"]:
        same = "approximate" if not r["exact"] else ("yes" if r.get("identical") else "NO")
        vs = f"{r['recall_vs_exact']:.4f}" if "recall_vs_exact" in r else "1 (exact)"
        name = r["backend"] + (" (cuda)" if r.get("device") == "cuda" else "")
        memory = f"{r['peak_bytes'] / r['embeddings_bytes']:.2f}x"
        if r.get("gpu_peak_bytes") is not None:
            memory += f", GPU {r['gpu_peak_bytes'] / r['embeddings_bytes']:.2f}x"
        lines.append(f"| {r['dim']} | {name} | {r['seconds']:.2f} | {r['ratio_time']:.3f} | {memory} | {same} | "
                     f"{r['recall@1']:.4f} | {vs} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=60502, help="embeddings (SOP test: 60,502)")
    p.add_argument("--dims", type=lambda s: [int(x) for x in s.split(",")], default=[1536, 2048])
    p.add_argument("--classes", type=int, default=11316, help="classes (SOP test: 11,316)")
    p.add_argument("--k", type=int, default=10, help="neighbours per query")
    p.add_argument("--backends", type=lambda s: s.split(","), default=["faiss-cpu", "torch"])
    p.add_argument("--approx", type=lambda s: [x for x in s.split(",") if x], default=["hnsw", "ivf"],
                   help="approximate indexes to compare (at the first dimension only)")
    p.add_argument("--out", type=Path, default=RESULTS / "retrieval")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--file", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(args.worker, args.file, args.k, args.result)
        return
    result = run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    args.out.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
