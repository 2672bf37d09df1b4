"""What a seeded CPU run's weights depend on: the same short pretraining under one change at a time.

    uv run --extra test python benchmarks/determinism.py

The demo's pretraining recipe, shrunk to seconds (16 glyph classes x 40 images, 4 epochs, 32 px), trained in a
fresh process per setting: the reference (2 threads, 2 loader workers), the reference again, then one change
each: 0 workers (augmentation in the main process), 1 thread, 4 threads, oneDNN held to AVX2 kernels
(ONEDNN_MAX_CPU_ISA, as on a CPU without AVX-512) and oneDNN off (PyTorch's own convolution kernels). For each:
whether the final weights are bit-identical to the reference's, their largest difference relative to the
largest weight of the same tensor, and the best validation top-1. Writes benchmarks/results/determinism.json
and a table (README, "Reproducibility").
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks._results import save_and_print  # noqa: E402

SMALL = {"data": {"embedded": {"classes": 16, "train_per_class": 40, "val_per_class": 8}}, "schedule": {"epochs": 4},
         "output": {"checkpoint_every_steps": 0, "plots": False, "tensorboard": False, "log_every_steps": 1000}}
CHILD = """
import json, sys
sys.path.insert(0, {root!r})
from transfer.runtime import configure_process
configure_process()
import torch
if {no_onednn}:
    torch.backends.mkldnn.enabled = False
from transfer.recipe import load_recipe, merge_dicts
from transfer.recipes import find_recipe
from transfer.stages.train import run_training
over = merge_dicts({small!r}, {{"runtime": {{"threads": {threads}, "workers": {workers}, "seed": 0}}}})
res = run_training(load_recipe(find_recipe("demo/pretrain.yaml"), over), recipe_name="pretrain", out={out!r},
                   report=False)
print(json.dumps({{"top1": res.get("best_top1")}}))
"""
# (name, threads, workers, extra environment, oneDNN off)
SETTINGS = [("reference: 2 threads, 2 workers", 2, 2, {}, False), ("the reference again", 2, 2, {}, False),
            ("0 workers", 2, 0, {}, False), ("1 thread", 1, 2, {}, False), ("4 threads", 4, 2, {}, False),
            ("oneDNN at most AVX2", 2, 2, {"ONEDNN_MAX_CPU_ISA": "AVX2"}, False),
            ("oneDNN off", 2, 2, {}, True)]


def final_weights(run: Path) -> dict:
    from safetensors.numpy import load_file

    return load_file(run / "weights" / "final.safetensors")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "determinism.json")
    args = ap.parse_args()
    import numpy as np

    rows, reference = [], None
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, threads, workers, extra, no_onednn) in enumerate(SETTINGS):
            run = Path(tmp) / f"run{i}"
            env = {**os.environ, "TRANSFER_CACHE": str(Path(tmp) / "cache"), "OMP_WAIT_POLICY": "PASSIVE", **extra}
            t0 = time.perf_counter()
            res = subprocess.run([sys.executable, "-c", CHILD.format(root=str(ROOT), small=SMALL, threads=threads,
                                                                     workers=workers, out=str(run),
                                                                     no_onednn=no_onednn)],
                                 capture_output=True, text=True, env=env, check=True)
            top1 = json.loads(res.stdout.strip().splitlines()[-1])["top1"]
            w = final_weights(run)
            digest = hashlib.sha256(b"".join(w[k].tobytes() for k in sorted(w))).hexdigest()[:16]
            if reference is None:
                reference = w
            # relative to each tensor's own scale: BatchNorm's running variances are in the hundreds
            diff = max(float(np.abs(w[k].astype(np.float64) - reference[k]).max()
                             / max(float(np.abs(reference[k].astype(np.float64)).max()), 1e-12)) for k in w)
            rows.append({"setting": name, "threads": threads, "workers": workers, "env": extra,
                         "onednn": not no_onednn, "weights_sha256": digest, "identical": diff == 0.0,
                         "max_relative_difference": diff, "top1": top1, "seconds": round(time.perf_counter() - t0, 1)})
            print(json.dumps(rows[-1]), flush=True)
    save_and_print(args.out, {"recipe": "demo/pretrain.yaml", "overrides": SMALL, "rows": rows},
                   ["setting", "weights identical to the reference", "largest relative difference", "top-1"],
                   [[r["setting"], "yes" if r["identical"] else "no", f"{r['max_relative_difference']:.3g}",
                     f"{r['top1']:.4f}"] for r in rows])

if __name__ == "__main__":
    main()
