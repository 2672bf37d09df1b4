"""The transfer gain of the test (tests/training_helpers.transfer_gain) over seeds and thread counts.

    uv run --extra test python benchmarks/transfer_gain.py --seeds 0,1,2,3,4 --threads 1,2

For each (threads, seed): the digits top-1 at 10 labelled images per class from the glyph-pretrained backbone
and from random init, and their difference. The test's margin must hold on every seed with room to spare;
the thread counts show how much a seeded result moves with the CPU kernels chosen. Writes
benchmarks/results/transfer_gain.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks._results import save_and_print  # noqa: E402

CHILD = """
import json, sys
from pathlib import Path
sys.path.insert(0, {root!r})
from tests.training_helpers import transfer_gain
print(json.dumps(transfer_gain(Path({tmp!r}), seed={seed}, threads={threads})))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="0,1,2,3,4")
    ap.add_argument("--threads", default="1")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "transfer_gain.json")
    args = ap.parse_args()
    rows = []
    for threads in map(int, args.threads.split(",")):
        for seed in map(int, args.seeds.split(",")):
            with tempfile.TemporaryDirectory() as tmp:
                t0 = time.perf_counter()
                # a process per measurement: nothing carries over between them
                res = subprocess.run([sys.executable, "-c", CHILD.format(root=str(ROOT), threads=threads, tmp=tmp,
                                                                         seed=seed)],
                                     capture_output=True, text=True, check=True)
                top1 = json.loads(res.stdout.strip().splitlines()[-1])
            rows.append({"threads": threads, "seed": seed, **top1, "gain": top1["pretrained"] - top1["random"],
                         "seconds": round(time.perf_counter() - t0, 1)})
            print(json.dumps(rows[-1]), flush=True)
    save_and_print(args.out, {"rows": rows}, ["threads", "seed", "pretrained", "random", "gain", "seconds"],
                   [[str(r["threads"]), str(r["seed"]), f"{r['pretrained']:.4f}", f"{r['random']:.4f}",
                     f"{r['gain']:+.4f}", str(r["seconds"])] for r in rows])

if __name__ == "__main__":
    main()
