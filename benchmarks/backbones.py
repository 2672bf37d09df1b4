"""Throughput of every paper row relative to plain ResNet-50, side by side, in several settings.

    python benchmarks/backbones.py                       # CPU or GPU, whichever `--device auto` finds
    python benchmarks/backbones.py --settings fp32 --models resnet50 assemble_resnet50

Writes benchmarks/results/backbones.json and backbones.md (the table the README shows). Models are timed
round-robin within each setting (transfer.eval.throughput), so ratios are robust on a noisy shared machine.
Also times the anti-aliasing filter written two ways, the reason BlurPool is a depthwise convolution.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from transfer.eval.throughput import BenchmarkSettings, describe_machine, measure_throughput
from transfer.models.factory import build_for_benchmark
from transfer.models.layers import BlurPool
from transfer.models.zoo import MODELS
from transfer.runtime import resolve_device

# (model, paper rows, paper img/s on a P40, FP32, batch 64: Tables 2 and 7)
ROWS = [
    ("torchvision:resnet50", "reference", None),
    ("resnet50", "E0 M0 C0", 536),
    ("resnet50_se", "C1", 466),
    ("resnet50_sk", "C2", 326),
    ("resnet50_sk_dagger", "C3", 382),
    ("resnet50_sk_dagger_r16", "C4", 402),
    ("resnet50_sk_se", "C5", 345),
    ("resnet50d", "E1 M1", 493),
    ("resnet50d_se", "E4", 420),
    ("resnet50d_sk", "E6 M2", 359),
    ("resnet50d_sk_bl", "E9 M3", 359),
    ("assemble_resnet50", "E10 E11 M4", 312),
    ("assemble_resnet152", "E12", 143),
]
PAPER = {name: (rows, ips) for name, rows, ips in ROWS}
SETTINGS = {
    "fp32": {},
    "cl": {"channels_last": True},
    "bf16_cl": {"channels_last": True, "dtype": "bf16"},
    "compile_bf16_cl": {"channels_last": True, "dtype": "bf16", "compile": True},
}
LABELS = {"fp32": "fp32", "cl": "fp32 channels_last", "bf16_cl": "bf16 channels_last",
          "compile_bf16_cl": "compiled bf16 channels_last"}
# Compilation costs tens of seconds a model on a CPU: by default only the headline pair and the reference.
COMPILE_MODELS = ["torchvision:resnet50", "resnet50", "assemble_resnet50"]


def blur_comparison(device: torch.device, repeats: int = 20) -> list[dict]:
    """The [1,2,1]^2/16 stride-2 filter as a depthwise conv (BlurPool) vs as two average pools."""

    def as_pools(x):
        x = F.pad(x, (1, 1, 1, 1), mode="reflect")
        return F.avg_pool2d(F.avg_pool2d(x, 2, 1), 2, 2)

    out = []
    for shape in [(16, 64, 112, 112), (16, 128, 56, 56), (16, 256, 28, 28)]:
        for channels_last in (False, True):
            x = torch.randn(shape, device=device)
            blur = BlurPool(shape[1]).to(device)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
                blur = blur.to(memory_format=torch.channels_last)
            row = {"shape": list(shape), "channels_last": channels_last}
            with torch.inference_mode():
                torch.testing.assert_close(blur(x), as_pools(x), rtol=1e-4, atol=1e-5)
                for label, fn in (("depthwise_conv_ms", blur), ("two_avg_pools_ms", as_pools)):
                    times = []
                    for _ in range(repeats + 2):
                        if device.type == "cuda":
                            torch.cuda.synchronize()
                        start = time.perf_counter()
                        fn(x)
                        if device.type == "cuda":
                            torch.cuda.synchronize()
                        times.append(time.perf_counter() - start)
                    row[label] = statistics.median(times[2:]) * 1e3
            out.append(row)
    return out


def markdown(result: dict) -> str:
    settings = result["settings"]
    machine = result["machine"]
    lines = [
        f"Inference throughput, batch {result['batch_size']}, {result['resolution']} px, median of "
        f"{result['repeats']} round-robin repeats; {machine['device']} "
        f"({machine.get('gpu', machine['processor'])}, {machine['threads']} threads), torch {machine['torch']}, "
        f"{result['date']}. Ratios are to our resnet50 in the same setting; the paper's are P40 FP32 batch 64.",
        "",
        "| model | paper rows | paper img/s | paper ratio | "
        + " | ".join(f"{LABELS[s]} img/s (ratio)" for s in settings) + " |",
        "|---|---|---|---|" + "---|" * len(settings),
    ]
    names = list(dict.fromkeys(r["model"] for s in settings for r in result["results"][s]))
    for name in names:
        rows, ips = PAPER.get(name, ("-", None))
        paper_ratio = f"{ips / PAPER['resnet50'][1]:.2f}" if ips else "-"
        cells = []
        for s in settings:
            hit = [r for r in result["results"][s] if r["model"] == name]
            cells.append(f"{hit[0]['images_per_second']:.1f} ({hit[0]['ratio_to_resnet50']:.2f})" if hit else "-")
        lines.append(f"| {name} | {rows} | {ips or '-'} | {paper_ratio} | " + " | ".join(cells) + " |")
    if result.get("blur"):
        lines += ["", "Anti-aliasing filter, ms per call (median): depthwise conv (what BlurPool runs) vs two "
                  "average pools (the same numbers).", "",
                  "| input | channels_last | depthwise conv | two avg-pools |", "|---|---|---|---|"]
        for row in result["blur"]:
            lines.append(f"| {'x'.join(map(str, row['shape']))} | {row['channels_last']} | "
                         f"{row['depthwise_conv_ms']:.2f} | {row['two_avg_pools_ms']:.2f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--resolution", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--models", nargs="+", default=[r[0] for r in ROWS])
    parser.add_argument("--compile-models", nargs="+", default=COMPILE_MODELS)
    parser.add_argument("--no-blur", action="store_true", help="skip the filter micro-benchmark")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--name", default="backbones", help="file stem for the JSON and markdown outputs")
    parser.add_argument("--update", action="store_true",
                        help="re-measure only --settings and keep the other settings of an existing JSON")
    args = parser.parse_args()
    for m in args.models:
        if not m.startswith("torchvision:") and m not in MODELS:
            parser.error(f"unknown model {m}")
    if "resnet50" not in args.models:
        args.models.insert(0, "resnet50")

    device = resolve_device(args.device)
    result = {"date": dt.date.today().isoformat(), "machine": describe_machine(device),
              "batch_size": args.batch_size, "resolution": args.resolution, "repeats": args.repeats,
              "settings": args.settings, "results": {}}
    previous = args.out / f"{args.name}.json"
    if args.update and previous.is_file():
        old = json.loads(previous.read_text())
        result["results"] = old["results"]
        result["blur"] = old.get("blur")
        result["settings"] = [s for s in SETTINGS if s in old["settings"] or s in args.settings]
    for setting in args.settings:
        names = args.models
        if SETTINGS[setting].get("compile"):
            names = [n for n in args.models if n in args.compile_models or n == "resnet50"]
        settings = BenchmarkSettings(batch_size=args.batch_size, resolution=args.resolution, device=args.device,
                                     warmup=args.warmup, repeats=args.repeats, **SETTINGS[setting])
        print(f"[{setting}] {len(names)} models ...", flush=True)
        rows = measure_throughput({n: build_for_benchmark(n) for n in names}, settings)
        base = next(r["images_per_second"] for r in rows if r["model"] == "resnet50")
        for r in rows:
            r["ratio_to_resnet50"] = r["images_per_second"] / base
            print(f"  {r['model']:<24} {r['images_per_second']:8.1f} img/s  {r['ratio_to_resnet50']:.3f}",
                  flush=True)
        result["results"][setting] = rows
    if not args.no_blur:
        result["blur"] = blur_comparison(device)
    elif not result.get("blur"):
        result.pop("blur", None)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.name}.json").write_text(json.dumps(result, indent=2) + "\n")
    table = markdown(result)
    (args.out / f"{args.name}.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
