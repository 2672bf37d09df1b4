"""Training-engine overhead and input-pipeline speed, each side by side with its plain counterpart.

    python benchmarks/engine.py                 # both parts; writes results/engine.json and engine.md

1. Engine overhead: images/s of Trainer.fit against a minimal hand-written loop (forward, cross entropy,
   backward, SGD step) on the same model, batch, precision and in-memory data. Target >= 0.95x.
2. Input pipeline: decoded + augmented images/s with one worker, our folder source + loader against
   torchvision's ImageFolder + DataLoader with the same transforms (target >= 1.0x), and against ImageFolder
   with torchvision's reference transforms on PIL images, on JPEG files written here.
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import io
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from transfer import create_model
from transfer.data.embedded import generate
from transfer.data.loader import EpochBatchSampler, TransformedDataset, make_loader
from transfer.data.sources import open_split
from transfer.data.transforms import InputSpec
from transfer.engine.objective import Objective
from transfer.engine.trainer import Trainer
from transfer.eval.throughput import describe_machine
from transfer.recipe import AugmentSection, DataSection, Recipe
from transfer.runs import RunDir
from transfer.runtime import Dist, autocast_for, resolve_device
from transfer.stages.train import trainer_settings


class TensorSet(Dataset):
    """Pre-made tensors, keyed like the engine's datasets: (index, epoch) -> (image, label, index)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor):
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, key):
        i = key[0] if isinstance(key, tuple) else key
        return self.x[i], int(self.y[i]), i


def hand_loop(model, x, y, batch, steps, channels_last, device, precision) -> list[float]:
    """The plain loop: the batch taken from the same CPU tensors and moved to the device inside the timed
    step, as the engine's loader hands it over; on a GPU each step ends in a synchronisation."""
    model = model.to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    times = []
    for s in range(steps):
        i = (s * batch) % (len(y) - batch + 1)
        start = time.perf_counter()
        xb, yb = x[i:i + batch].to(device), y[i:i + batch].to(device)
        if channels_last:
            xb = xb.contiguous(memory_format=torch.channels_last)
        with autocast_for(device, precision):
            loss = torch.nn.functional.cross_entropy(model(xb), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        loss.item()  # what the engine's per-step log line reads; on a GPU, the step's end
        times.append(time.perf_counter() - start)
    return times


def engine_loop(model, x, y, batch, steps, channels_last, device, precision, out: Path, workers: int = 0
                ) -> list[float]:
    recipe = Recipe()
    recipe.runtime.device, recipe.runtime.precision = str(device), precision
    recipe.optim.batch_size, recipe.optim.lr, recipe.optim.reference_batch = batch, 0.01, batch
    recipe.schedule.epochs, recipe.schedule.warmup_epochs = 1, 0
    recipe.runtime.workers, recipe.runtime.channels_last = workers, channels_last
    recipe.output.log_every_steps, recipe.output.tensorboard, recipe.output.plots = 1, False, False
    data = TensorSet(x[: batch * steps], y[: batch * steps])
    run = RunDir(out)
    out.mkdir(parents=True, exist_ok=True)
    settings = trainer_settings(recipe)
    Trainer(model.to(device), Objective(int(y.max()) + 1), data, None, settings, run, Dist(device=device),
            validate=None, select="top1").fit()
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [batch / r["images_per_second"] for r in rows if r["kind"] == "train"]


def engine_overhead(args) -> dict:
    """Each round trains a fresh model both ways, in alternating order; the ratio is the median of the per-round
    ratios of median step times, so drift on a shared machine hits both sides of each ratio alike."""
    device = resolve_device(args.device)
    torch.manual_seed(0)
    n = args.batch_size * args.steps
    x = torch.randn(n, 3, args.resolution, args.resolution)
    y = torch.randint(0, 10, (n,))
    results = {"hand_loop": [], "engine": []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for kind in (("hand_loop", "engine") if r % 2 == 0 else ("engine", "hand_loop")):
                torch.manual_seed(1)
                model = create_model(args.model, num_classes=10)
                if args.channels_last:
                    model = model.to(memory_format=torch.channels_last)
                common = (model, x, y, args.batch_size, args.steps, args.channels_last, device, args.precision)
                if kind == "hand_loop":
                    ts = hand_loop(*common)
                else:
                    ts = engine_loop(*common, Path(tmp) / f"run{r}", args.workers)
                results[kind].append(ts[2:])  # the first steps warm the allocator
    ips = {k: args.batch_size / statistics.median(t for rnd in v for t in rnd) for k, v in results.items()}
    per_round = [statistics.median(h) / statistics.median(e)
                 for h, e in zip(results["hand_loop"], results["engine"], strict=True)]
    return {"model": args.model, "batch_size": args.batch_size, "resolution": args.resolution,
            "channels_last": args.channels_last, "precision": args.precision, "workers": args.workers,
            "steps": args.steps, "rounds": args.rounds,
            "hand_loop_images_per_second": ips["hand_loop"], "engine_images_per_second": ips["engine"],
            "ratio": statistics.median(per_round), "per_round_ratios": per_round}


def write_jpegs(root: Path, classes: int, per_class: int, size: int) -> None:
    from PIL import Image

    images, labels = generate(classes, per_class, size, seed=0)
    for k, (img, label) in enumerate(zip(images, labels, strict=True)):
        d = root / "train" / f"class{label:02d}"
        d.mkdir(parents=True, exist_ok=True)
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, "JPEG", quality=90)
        (d / f"{k:05d}.jpg").write_bytes(buf.getvalue())


def pil_preset(aug: AugmentSection, prep, train: bool):
    """What torchvision's classification reference scripts build (their default PIL backend): every step on PIL
    images, then PILToTensor, ToDtype and Normalize; our pipelines before the tensor rewrite were the same."""
    from torchvision.transforms import v2 as T

    if train:
        steps = [T.RandomResizedCrop(prep.train_resolution, scale=tuple(aug.crop_area), ratio=tuple(aug.crop_aspect),
                                     antialias=True), T.RandomHorizontalFlip()]
        if aug.autoaugment == "imagenet":
            steps.append(T.AutoAugment(T.AutoAugmentPolicy.IMAGENET))
    else:
        steps = [T.Resize(prep.eval_resize, antialias=True), T.CenterCrop(prep.eval_resolution)]
    return T.Compose([*steps, T.PILToTensor(), T.ToDtype(torch.float32, scale=True), T.Normalize(prep.mean, prep.std)])


def run_ours(epoch: int, dataset) -> int:
    s = EpochBatchSampler(len(dataset), 32)
    s.set_epoch(epoch)
    return sum(len(b) for b in make_loader(dataset, s, 1))


def run_folder(epoch: int, dataset) -> int:
    loader = DataLoader(dataset, batch_size=32, shuffle=True, drop_last=True, num_workers=1, prefetch_factor=4)
    return sum(len(b[1]) for b in loader)


PIPELINES = {"autoaugment": ("RRC + flip + AutoAugment(ImageNet)", "imagenet", True),
             "no_autoaugment": ("RRC + flip", "none", True),
             "eval": ("resize + centre crop (evaluation)", "none", False)}


def input_pipeline(args) -> dict:
    """Per worker, three loaders on the same files, each round timing all three back to back (order rotating):
    torchvision's ImageFolder with torchvision's reference PIL transforms, ImageFolder with our transforms, and
    our folder source + loader with our transforms. Ratios are medians of the per-round ratios. AutoAugment draws
    its ops at random, differently in each loader, which makes that row the noisiest."""
    import torchvision

    out = {"images": args.images, "source_size": args.source_size, "resolution": args.pipeline_resolution,
           "workers": 1, "rounds": args.rounds}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_jpegs(root, 8, args.images // 8, args.source_size)
        records = open_split(DataSection(source="folder", path=str(root)), "train")
        r = args.pipeline_resolution
        for key, (_, policy, train) in PIPELINES.items():
            aug = AugmentSection(autoaugment=policy)
            prep = InputSpec(r, r, round(r / 0.875)).resolve(aug)
            transform = prep.train_transform(aug) if train else prep.eval_transform()

            loaders = {"preset": functools.partial(run_folder, dataset=torchvision.datasets.ImageFolder(
                           str(root / "train"), transform=pil_preset(aug, prep, train))),
                       "imagefolder": functools.partial(run_folder, dataset=torchvision.datasets.ImageFolder(
                           str(root / "train"), transform=transform)),
                       "transfer": functools.partial(run_ours, dataset=TransformedDataset(records, transform))}
            rates = {name: [] for name in loaders}
            names = list(loaders)
            for rnd in range(args.rounds):
                for name in names[rnd % 3:] + names[:rnd % 3]:
                    start = time.perf_counter()
                    n = loaders[name](rnd)
                    rates[name].append(n / (time.perf_counter() - start))
            out[key] = {f"{k}_images_per_second": statistics.median(v) for k, v in rates.items()}
            for base in ("imagefolder", "preset"):
                out[key][f"ratio_vs_{base}"] = statistics.median(
                    a / b for a, b in zip(rates["transfer"], rates[base], strict=True))
            print(key, json.dumps(out[key]), flush=True)
    return out


def markdown(result: dict) -> str:
    m = result["machine"]
    e, p = result.get("engine"), result.get("input_pipeline")
    lines = [f"{m['device']} ({m.get('gpu', m['processor'])}, {m['threads']} threads), torch {m['torch']}, "
             f"{result['date']}.", ""]
    if e:
        rounds = e.get("per_round_ratios")
        spread = f" (rounds: {min(rounds):.3f}-{max(rounds):.3f})" if rounds else ""
        lines += ["| training loop | images/s (median step) | ratio |", "|---|---|---|",
                  f"| hand-written loop | {e['hand_loop_images_per_second']:.1f} | 1.00 |",
                  f"| transfer engine (Trainer.fit) | {e['engine_images_per_second']:.1f} | {e['ratio']:.3f}{spread} |",
                  "",
                  f"{e['model']}, batch {e['batch_size']}, {e['resolution']} px, {e.get('precision', 'fp32')}"
                  f"{', channels_last' if e['channels_last'] else ''}, engine loader workers "
                  f"{e.get('workers', 0)}; {e['rounds']} rounds of {e['steps']} steps each "
                  "way, order alternating; ratio = median of the per-round ratios.", ""]
    if p:
        lines += ["| input pipeline (1 worker), img/s | ImageFolder + torchvision PIL preset | ImageFolder + our "
                  "transforms | transfer loader + our transforms | ratio vs ImageFolder, same transforms | "
                  "ratio vs PIL preset |", "|---|---|---|---|---|---|"]
        for key, (label, _, _) in PIPELINES.items():
            q = p[key]
            lines.append(f"| {label} | {q['preset_images_per_second']:.1f} | {q['imagefolder_images_per_second']:.1f} "
                         f"| {q['transfer_images_per_second']:.1f} | {q['ratio_vs_imagefolder']:.3f} | "
                         f"{q['ratio_vs_preset']:.3f} |")
        lines += ["", f"{p['images']} JPEGs of {p['source_size']} px -> {p['resolution']} px, normalised; ratios = "
                  f"medians over {p['rounds']} rounds of back-to-back timings (order rotating)."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--resolution", type=int, default=112)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--device", default="cpu", help="the engine part's device: cpu, cuda, auto")
    parser.add_argument("--workers", type=int, default=0,
                        help="the engine's loader workers (0: batches made in the training process, between "
                             "steps; on a GPU that serial work is the gap, as it would be in a real run)")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"],
                        help="the engine part's precision (autocast in both loops)")
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--source-size", type=int, default=320)
    parser.add_argument("--pipeline-resolution", type=int, default=224)
    parser.add_argument("--only", choices=["engine", "input_pipeline"])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    path = args.out / "engine.json"
    # --only re-measures one part and keeps the other from the last full run
    result = json.loads(path.read_text()) if args.only and path.is_file() else {}
    result.update(date=dt.date.today().isoformat(), machine=describe_machine(resolve_device(args.device)),
                  args={k: v for k, v in vars(args).items() if k != "out"})
    if args.only in (None, "engine"):
        result["engine"] = engine_overhead(args)
        print(json.dumps(result["engine"], indent=1), flush=True)
    if args.only in (None, "input_pipeline"):
        result["input_pipeline"] = input_pipeline(args)
        print(json.dumps(result["input_pipeline"], indent=1), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2, default=str) + "\n")
    table = markdown(result)
    (args.out / "engine.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
