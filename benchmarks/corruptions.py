"""Corruption generation speed: images/s of one worker (one process, one thread) per corruption at 224 px.

    python benchmarks/corruptions.py                 # every corruption, severities 1-5, 20 images each
    python benchmarks/corruptions.py --images 5 --severities 3

Writes benchmarks/results/corruptions.json and corruptions.md, with the time an evaluation of 10,000 images x
19 corruptions x 5 severities would take to corrupt on this machine (all its cores as data-loader workers), and
the reference implementation (imagecorruptions) timed on the two blurs it loops over in Python. Times are the
process's CPU time (one thread), not wall-clock: on a shared machine a worker's wall-clock rate depends on what
else runs, its CPU time does not, and with a core of its own a worker runs at that rate.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_sample_images

from transfer.data.corrupted import PAPER_JPEG_QUALITY
from transfer.eval.corruptions import CORRUPTIONS, corrupt, corruption_rng, jpeg_bytes
from transfer.eval.throughput import describe_machine

RESULTS = Path(__file__).parent / "results"


def crops(n: int, size: int = 224) -> list[np.ndarray]:
    """n real 224 px crops of the two sklearn sample photos (427 x 640)."""
    photos = load_sample_images().images
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        p = photos[i % 2]
        y, x = rng.integers(0, p.shape[0] - size), rng.integers(0, p.shape[1] - size)
        out.append(np.ascontiguousarray(p[y:y + size, x:x + size]))
    return out


def time_corruption(name: str, images: list[np.ndarray], severities: list[int]) -> dict:
    per_severity = {}
    corrupt(images[0], name, severities[0], corruption_rng(1, 0, name, severities[0]))  # imports, caches: untimed
    for s in severities:
        start = time.process_time()
        for i, img in enumerate(images):
            jpeg_bytes(corrupt(img, name, s, corruption_rng(0, i, name, s)), PAPER_JPEG_QUALITY)
        per_severity[s] = len(images) / (time.process_time() - start)
    total = len(images) * len(severities) / sum(len(images) / v for v in per_severity.values())
    return {"images_per_second": total, "by_severity": per_severity}


def time_reference(images: list[np.ndarray]) -> dict:
    """imagecorruptions' own glass and zoom blur at severity 3 (its global RNG; one image each: glass takes s)."""
    import warnings

    warnings.filterwarnings("ignore")
    from imagecorruptions import corrupt as reference

    out = {}
    for name in ("glass_blur", "zoom_blur"):
        start = time.process_time()
        reference(images[0], corruption_name=name, severity=3)
        out[name] = 1 / (time.process_time() - start)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=20, help="Images per corruption and severity.")
    ap.add_argument("--severities", default="1,2,3,4,5")
    ap.add_argument("--no-reference", action="store_true", help="Skip timing the imagecorruptions package.")
    args = ap.parse_args()
    torch.set_num_threads(1)  # a data-loader worker
    severities = [int(s) for s in args.severities.split(",")]
    images = crops(args.images)
    rows = {name: time_corruption(name, images, severities) for name in CORRUPTIONS}
    seconds_per_image = statistics.fmean(1 / r["images_per_second"] for r in rows.values())
    workers = os.cpu_count() or 1
    projected_h = 10_000 * 19 * 5 * seconds_per_image / workers / 3600
    reference = {} if args.no_reference else time_reference(images)
    machine = describe_machine(torch.device("cpu"))
    report = {"date": dt.date.today().isoformat(), "machine": machine, "images": args.images,
              "severities": severities, "resolution": 224, "jpeg_quality": PAPER_JPEG_QUALITY,
              "corruptions": rows, "mean_seconds_per_image": seconds_per_image, "workers": workers,
              "projected_hours_10k_x19x5": projected_h, "reference_images_per_second": reference}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "corruptions.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [
        f"Corruption generation, one worker (one process, 1 thread, CPU time), 224 px, severities "
        f"{','.join(map(str, severities))}, {args.images} real photo crops each, JPEG q{PAPER_JPEG_QUALITY} "
        f"encoding included; {machine['processor']}, {machine['cpus']} CPUs, {report['date']}.",
        "",
        "| corruption | images/s | " + " | ".join(f"sev {s}" for s in severities) + " |",
        "|---|---|" + "---|" * len(severities),
    ]
    for name, r in rows.items():
        lines.append(f"| {name} | {r['images_per_second']:.1f} | "
                     + " | ".join(f"{r['by_severity'][s]:.1f}" for s in severities) + " |")
    lines += ["", f"Mean over the 19: {seconds_per_image * 1000:.1f} ms per image. Projected corruption time for "
              f"10,000 images x 19 corruptions x 5 severities with {workers} workers on this machine: "
              f"**{projected_h:.1f} h** (the model's forward passes come on top)."]
    if reference:
        lines += ["", "The reference implementation (imagecorruptions), severity 3, one image: "
                  + ", ".join(f"{k} {1 / v:.2f} s/image ({rows[k]['by_severity'].get(3, float('nan')):.0f} images/s "
                              f"here)" for k, v in reference.items()) + "."]
    (RESULTS / "corruptions.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
