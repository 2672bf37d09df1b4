"""The `transfer` command line: thin click commands that parse, then call one function each.

A user's mistake (a TransferError) prints one line `error: ...` and exits 2; --debug shows the traceback.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
from pathlib import Path

import click

from .errors import TransferError


class _Group(click.Group):
    """Turns TransferErrors raised by any command, and click's usage errors, into one line on stderr and exit
    status 2."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, False, **extra)
        try:
            rv = super().main(args, prog_name, complete_var, False, **extra)
        except click.UsageError as e:
            where = e.ctx.command_path if e.ctx is not None else prog_name or "transfer"
            click.echo(f"error: {e.format_message()} (see `{where} --help`)", err=True)
            sys.exit(2)
        except click.ClickException as e:
            e.show()
            sys.exit(e.exit_code)
        except click.Abort:
            click.echo("Aborted!", err=True)
            sys.exit(1)
        sys.exit(rv if isinstance(rv, int) else 0)

    def invoke(self, ctx: click.Context):
        from .files import reset_faults

        reset_faults()
        try:
            return super().invoke(ctx)
        except TransferError as e:
            if ctx.meta.get("transfer.debug"):
                raise
            message = " ".join(str(e).split("\n"))
            click.echo(f"error: {message}", err=True)
            ctx.exit(2)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show full tracebacks instead of one-line errors.")
@click.version_option(package_name="transfer", prog_name="transfer")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Assemble-ResNet (arXiv 2001.06268) in PyTorch: backbones, pretraining, fine-tuning, retrieval."""
    ctx.meta["transfer.debug"] = debug
    logging.basicConfig(level=logging.DEBUG if debug else logging.INFO, format="%(levelname)s: %(message)s",
                        stream=sys.stderr)


def _print_table(title: str, columns: list[str], rows: list[list[str]], caption: str | None = None) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, caption=caption)
    for i, col in enumerate(columns):
        table.add_column(col, justify="left" if i == 0 else "right")
    for row in rows:
        table.add_row(*row)
    Console(width=max(120, len(columns) * 14)).print(table)


def _start_computing() -> None:
    """The process-wide settings of every command that runs a network (runtime.configure_process), taken once
    its arguments are known to be fine, so that a mistake is still reported before torch loads."""
    from .runtime import configure_process

    configure_process()


@cli.command()
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True,
              help="A table, or a JSON list of one object per model.")
def models(fmt: str) -> None:
    """List every named model: depth, tweaks, parameters, MACs at 224 px, resolutions.

    Each name is one row of the paper's ablation (Tables 2, 6 and 7); `create_model(name)` builds it.
    """
    from .models.zoo import describe, list_models

    rows = [describe(name) for name in list_models()]
    if fmt == "json":
        click.echo(json.dumps(rows, indent=2))
        return
    _print_table(
        "transfer models",
        ["name", "depth", "tweaks", "params (M)", "GMACs@224", "train/eval px", "paper rows"],
        [[r["name"], str(r["depth"]), ", ".join(r["tweaks"]) or "-", f"{r['params'] / 1e6:.1f}",
          f"{r['macs'] / 1e9:.2f}", f"{r['resolution']['train']}/{r['resolution']['eval']}", r["paper"]]
         for r in rows],
    )


@cli.command()
@click.argument("model_names", nargs=-1, required=True, metavar="MODEL [MODEL ...]")
@click.option("--batch-size", default=16, show_default=True, help="Images per forward pass.")
@click.option("--resolution", default=224, show_default=True, help="Input height and width in pixels.")
@click.option("--dtype", type=click.Choice(["fp32", "bf16", "fp16"]), default="fp32", show_default=True,
              help="fp32, or autocast to bf16/fp16.")
@click.option("--channels-last/--no-channels-last", default=False, show_default=True,
              help="Convert models and inputs to the channels_last memory format.")
@click.option("--compile/--no-compile", "compile_", default=False, show_default=True,
              help="torch.compile each model first (compilation is not timed).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--warmup", default=2, show_default=True, help="Untimed passes per model.")
@click.option("--repeats", default=5, show_default=True, help="Timed passes per model (median reported).")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True,
              help="A table, or a JSON list of model, images_per_second, ratio, peak_memory_mb.")
def benchmark(model_names: tuple[str, ...], batch_size: int, resolution: int, dtype: str, channels_last: bool,
              compile_: bool, device: str, warmup: int, repeats: int, fmt: str) -> None:
    """Inference throughput of MODELs, timed side by side; ratios are to the first MODEL.

    MODEL is a name from `transfer models`, or torchvision:NAME (e.g. torchvision:resnet50) for reference.
    """
    _start_computing()
    from .eval.throughput import BenchmarkSettings, describe_machine, measure_throughput
    from .models.factory import build_for_benchmark
    from .runtime import resolve_device

    settings = BenchmarkSettings(batch_size, resolution, dtype, channels_last, compile_, device, warmup, repeats)
    models = {name: build_for_benchmark(name) for name in model_names}
    rows = measure_throughput(models, settings)
    if fmt == "json":
        click.echo(json.dumps([{k: r[k] for k in ("model", "images_per_second", "ratio", "peak_memory_mb")}
                               for r in rows], indent=2))
        return
    machine = describe_machine(resolve_device(device))
    cols = ["model", "images/s (median)", f"ratio to {rows[0]['model']}"]
    has_mem = rows[0]["peak_memory_mb"] is not None
    if has_mem:
        cols.append("peak MiB")
    _print_table(
        f"inference, batch {batch_size}, {resolution} px, {dtype}"
        f"{', channels_last' if channels_last else ''}{', compiled' if compile_ else ''}",
        cols,
        [[r["model"], f"{r['images_per_second']:.1f}", f"{r['ratio']:.3f}"]
         + ([f"{r['peak_memory_mb']:.0f}"] if has_mem else []) for r in rows],
        caption=f"{machine['device']} ({machine.get('gpu', machine['processor'])}, {machine['threads']} threads), "
                f"torch {machine['torch']}; median of {repeats} round-robin repeats",
    )


def training_options(fn):
    """The flags every training command shares."""
    opts = [
        click.option("--out", type=click.Path(file_okay=False),
                     help="Run directory (default: runs/STAGE-RECIPE-TIME)."),
        click.option("--resume", is_flag=True, help="Continue the run in --out from its last checkpoint."),
        click.option("--data", "data_path", help="Dataset location (sets data.path)."),
        click.option("--epochs", type=int, help="Sets schedule.epochs."),
        click.option("--batch-size", type=int, help="Global batch size (sets optim.batch_size)."),
        click.option("--device", help="auto, cpu, cuda or cuda:N (sets runtime.device)."),
        click.option("--set", "sets", multiple=True, metavar="KEY.PATH=VALUE",
                     help="Override any recipe key; repeatable, e.g. --set optim.lr=0.05."),
    ]
    for o in reversed(opts):
        fn = o(fn)
    return fn


def _recipe_overrides(data_path, epochs, batch_size, device, sets) -> dict:
    from .recipe import merge_dicts, parse_set

    flags = {}
    if data_path is not None:
        flags["data"] = {"path": data_path}
    if epochs is not None:
        flags["schedule"] = {"epochs": epochs}
    if batch_size is not None:
        flags["optim"] = {"batch_size": batch_size}
    if device is not None:
        flags["runtime"] = {"device": device}
    return merge_dicts(flags, parse_set(sets))


def _exit_as(summary: dict) -> None:
    """A run stopped by a signal exits 128 + its number (143 for SIGTERM), as the shell reports a killed
    process: `transfer pretrain ... && transfer finetune ...` does not go on with an unfinished backbone."""
    if summary.get("exit_code"):
        sys.exit(summary["exit_code"])


def _load_for_training(recipe_arg, default: str, out, resume, overrides):
    """(recipe, name): from the run directory when resuming, else from the recipe file (+ overrides)."""
    from pathlib import Path

    from .recipe import load_recipe
    from .recipes import find_recipe
    from .runs import RunDir

    if resume:
        if out is None:
            raise TransferError("--resume needs --out RUN_DIR: the run to continue")
        saved = RunDir(Path(out)).recipe
        if not saved.is_file():
            raise TransferError(f"nothing to resume in {out}: {saved} does not exist; start without --resume")
        if recipe_arg or overrides:
            logging.getLogger("transfer").warning("--resume continues with the run's own recipe; the recipe "
                                                  "argument and overrides are ignored")
        return load_recipe(saved), Path(out).name
    path = find_recipe(recipe_arg or default)
    return load_recipe(path, overrides), path.stem


@cli.command()
@click.argument("recipe", required=False)
@training_options
def pretrain(recipe, out, resume, data_path, epochs, batch_size, device, sets) -> None:
    """Pretrain a backbone (the ImageNet stage) as RECIPE says (default: recipes/pretrain.yaml).

    Under torchrun it trains on every process: torchrun --nproc-per-node N -m transfer pretrain RECIPE.
    """
    r, name = _load_for_training(recipe, "pretrain.yaml", out, resume,
                                 _recipe_overrides(data_path, epochs, batch_size, device, sets))
    _start_computing()  # torch: after the recipe is known to be fine
    from .stages.train import run_training

    _exit_as(run_training(r, recipe_name=name, out=out, resume=resume))


@cli.command()
@click.argument("recipe", required=False)
@click.option("--backbone", help="Pretrained backbone: a pretrain run directory, a weights file, a torchvision "
              "state_dict, or 'latest' (sets model.backbone; default: the recipe's).")
@training_options
def finetune(recipe, backbone, out, resume, data_path, epochs, batch_size, device, sets) -> None:
    """Fine-tune a pretrained backbone on a downstream dataset as RECIPE says (e.g. recipes/cars.yaml).

    The classifier is replaced for the dataset's classes; after training, RUN/report/ holds per-class
    accuracy, the confusion matrix, the most-confused pairs and the predictions.
    """
    from .recipe import merge_dicts

    overrides = _recipe_overrides(data_path, epochs, batch_size, device, sets)
    if backbone is not None:
        overrides = merge_dicts(overrides, {"model": {"backbone": backbone}})
    r, name = _load_for_training(recipe, "demo/finetune.yaml", out, resume, overrides)
    if r.stage == "pretrain":
        raise TransferError(f"recipe {name} is a pretraining recipe (stage: pretrain); run it with "
                            f"`transfer pretrain`")
    _start_computing()
    from .stages.train import run_training

    _exit_as(run_training(r, recipe_name=name, out=out, resume=resume))


@cli.command()
@click.argument("weights_or_run")
@click.argument("images", nargs=-1, required=True)
@click.option("--topk", default=1, show_default=True, help="Classes per image in the CSV.")
@click.option("--out", "out_file", default="predictions.csv", show_default=True, type=click.Path(dir_okay=False),
              help="The CSV file to write.")
@click.option("--batch-size", default=64, show_default=True, help="Images per forward pass.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
def predict(weights_or_run, images, topk, out_file, batch_size, device) -> None:
    """Classify IMAGES (files or folders) with a weights file or a run; writes a CSV of path, class, probability."""
    _start_computing()
    from .stages.evaluation import predict_images

    n = predict_images(weights_or_run, images, out_file=out_file, topk=topk, batch_size=batch_size, device=device)
    click.echo(f"wrote {n} predictions to {out_file}")


@cli.command()
@click.argument("source_format", metavar="SOURCE", type=click.Choice(["official", "timm", "torchvision"]))
@click.argument("path", type=click.Path())
@click.option("--out", "out_file", required=True, type=click.Path(dir_okay=False),
              help="The weights file to write (FILE.safetensors, with FILE.json beside it).")
@click.option("--arch", help="The zoo model the weights are (default: inferred from the file's variables).")
@click.option("--pool", type=click.Choice(["avg", "gem"]),
              help="Global pooling of an official checkpoint (weight-free, so not in the file; the official "
              "retrieval models use gem). Default: the architecture's.")
@click.option("--eval-resize", type=int, help="Shorter side before the centre crop (default: the architecture's).")
@click.option("--eval-resolution", type=int, help="Evaluation crop size (default: the architecture's).")
@click.option("--interpolation", type=click.Choice(["bilinear", "bicubic", "nearest"]),
              help="Resize interpolation recorded for the weights (default: the architecture's).")
@click.option("--force", is_flag=True, help="Replace --out if it exists.")
def convert(source_format, path, out_file, arch, pool, eval_resize, eval_resolution, interpolation, force) -> None:
    """Convert published weights into a weights file: SOURCE is official, timm or torchvision.

    official: a clovaai/assembled-cnn TensorFlow checkpoint folder (with its `checkpoint` file) or prefix
    (DIR/model.ckpt-STEP). timm / torchvision: a ResNet state_dict (.pth or .safetensors). The file then
    loads with `transfer.load_model(FILE)` and works with evaluate, predict, finetune --backbone.
    """
    from .convert import convert as run_convert

    inputs = {k: v for k, v in (("eval_resize", eval_resize), ("eval_resolution", eval_resolution),
                                ("interpolation", interpolation)) if v is not None}
    for key in ("eval_resize", "eval_resolution"):
        if key in inputs and inputs[key] < 16:
            raise TransferError(f"--{key.replace('_', '-')} {inputs[key]} is too small; give at least 16 pixels")
    written = run_convert(source_format, path, out_file, arch=arch, pool=pool, input_overrides=inputs, force=force)
    from .models.weights import read_metadata

    meta = read_metadata(written)
    click.echo(f"wrote {written} ({meta['architecture']}, {meta['params']:,} parameters, {meta['num_classes']} "
               f"classes) from {source_format} {path}")


@cli.command("export")
@click.argument("weights_or_run")
@click.option("--format", "fmt", type=click.Choice(["torchscript", "onnx"]), required=True,
              help="torchscript (a traced module, .pt) or onnx (.onnx, torch's dynamo exporter).")
@click.option("--out", "out_file", required=True, type=click.Path(dir_okay=False),
              help="The file to write (FILE.pt or FILE.onnx), with FILE.pt.json / FILE.onnx.json beside it (classes, "
              "preprocessing).")
@click.option("--dynamic-batch/--static-batch", default=True, show_default=True,
              help="ONNX: any batch size, or only the batch of 2 it was exported with (TorchScript: always any).")
@click.option("--resolution", type=int, help="Input height and width (default: the weights' evaluation size).")
@click.option("--force", is_flag=True, help="Replace --out if it exists.")
def export(weights_or_run, fmt, out_file, dynamic_batch, resolution, force) -> None:
    """Export a weights file or a run (its best weights) as TorchScript or ONNX, for serving.

    The exported model is the evaluation model; its outputs equal the PyTorch model's. FILE.pt.json (or
    FILE.onnx.json) beside it holds the sidecar (classes, resize, crop, normalisation), which neither format
    carries.
    """
    from .export import export_model

    if resolution is not None and resolution < 16:
        raise TransferError(f"--resolution {resolution} is too small; give at least 16 pixels")
    written = export_model(weights_or_run, out_file, fmt, dynamic_batch=dynamic_batch, resolution=resolution,
                           force=force)
    click.echo(f"wrote {written} ({fmt}) and {written.name}.json")


def robustness_options(fn):
    """`evaluate --robustness` and the flags that shape it (None: not given)."""
    opts = [
        click.option("--robustness", is_flag=True, help="Evaluate under corruptions: top-1, mCE, images/s."),
        click.option("--corruptions", help="19 (default: the official mCE's, ImageNet-C's 15 + speckle_noise, "
                     "gaussian_blur, spatter, saturate), 15 (ImageNet-C) or comma-separated corruption names."),
        click.option("--severities", help="Severities to pool, e.g. 3 or 1,2,3,4,5 (default: all five)."),
        click.option("--perturbations", is_flag=True, default=None,
                     help="Also flip probabilities on perturbation sequences (noise, blur, brightness, translation) "
                     "and their mean, mFR (unnormalised: no AlexNet flip rates are bundled)."),
        click.option("--limit", type=int, help="Evaluate on this many images, spread evenly over the split."),
        click.option("--seed", type=int, help="Seed of the corruptions and perturbations (default 0)."),
        click.option("--imagenet/--not-imagenet", default=None,
                     help="Normalise mCE by AlexNet's errors (default: when the data has 1000 classes)."),
        click.option("--cache", type=click.Path(file_okay=False),
                     help="Keep corrupted images here as JPEG (quality 85) and reuse them next time."),
        click.option("--out", type=click.Path(file_okay=False),
                     help="Folder for robustness.json and the chart (default: RUN/robustness, or beside WEIGHTS)."),
    ]
    for o in reversed(opts):
        fn = o(fn)
    return fn


def _evaluate_robustness(weights_or_run, data_path, split, batch_size, device, workers, save_logits, fmt,
                         robustness, corruptions, severities, perturbations, limit, seed, imagenet, cache, out):
    _start_computing()
    from .eval.robustness import ALEXNET_ERRORS
    from .stages.robustness import evaluate_robustness

    if not robustness:
        raise TransferError("--corruptions, --severities, --perturbations, --limit, --seed, --imagenet, --cache and "
                            "--out shape a robustness evaluation: add --robustness")
    if save_logits:
        raise TransferError("--save-logits is for the clean evaluation; run it without --robustness")
    r = evaluate_robustness(weights_or_run, data_path=data_path, split=split, corruptions=corruptions or "19",
                            severities=severities or "1,2,3,4,5", perturbations=bool(perturbations), limit=limit,
                            seed=seed or 0, imagenet=imagenet, batch_size=batch_size, device=device, workers=workers,
                            cache=cache, out=out)
    if fmt == "json":
        keys = ["top1", "mce", "mce_unnormalized", "images_per_second", "corruptions"]
        keys += [k for k in ("mfr_unnormalized", "flip_probabilities") if k in r]
        click.echo(json.dumps({k: r[k] for k in keys} | {k: r[k] for k in ("corruption_set", "preprocessing")}))
        return
    click.echo(f"corruptions: {r['corruption_set']} ({len(r['corruptions'])}), severities "
               f"{','.join(map(str, r['severities']))}, {r['images']} images")
    rows = [[name, f"{err:.4f}"] + ([f"{err / ALEXNET_ERRORS[name]:.4f}"] if r["mce"] is not None else [])
            for name, err in r["corruptions"].items()]
    _print_table(f"robustness of {weights_or_run}", ["corruption", "error"] + (["CE (/AlexNet)"] if r["mce"]
                 is not None else []), rows)
    summary = [["corruption set", f"{r['corruption_set']} ({len(r['corruptions'])} corruptions)"],
               ["top-1 (clean)", f"{r['top1']:.4f}"],
               ["mCE (AlexNet-normalised)", "-" if r["mce"] is None else f"{r['mce']:.4f}"],
               ["mCE (unnormalised)", f"{r['mce_unnormalized']:.4f}"],
               ["images/s", f"{r['images_per_second']:.1f}"]]
    if "mfr_unnormalized" in r:
        summary += [[f"flip probability {k}", f"{v:.4f}"] for k, v in r["flip_probabilities"].items()]
        summary.append(["mFR (unnormalised)", f"{r['mfr_unnormalized']:.4f}"])
    _print_table("summary", ["metric", "value"], summary, caption=f"chart: {r['chart']}")


@cli.command()
@click.argument("weights_or_run")
@click.option("--data", "data_path", help="Dataset: a data_prep folder, an image folder, or 'embedded' "
              "(default: the run's own validation data).")
@click.option("--split", default=None, help="Split to evaluate (default: the recipe's validation split).")
@click.option("--batch-size", default=64, show_default=True, help="Images per forward pass.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--workers", default=2, show_default=True, help="Data-loading worker processes.")
@click.option("--save-logits", type=click.Path(dir_okay=False),
              help="Also write the logits as a .npy file, one row per image (teacher logits for distillation).")
@click.option("--checkpoint", type=click.Path(dir_okay=False),
              help="The weights file of a timm:NAME model: a state_dict as timm publishes it (.safetensors, "
              ".bin, .pth), as for timm's validate.py --checkpoint.")
@click.option("--recipe", "recipe_arg", help="Evaluate on this training recipe's training images, in its "
              "training order (with --save-logits: the teacher logits its distillation.logits reads).")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True,
              help="A table, or one JSON object of the metrics.")
@robustness_options
def evaluate(weights_or_run, data_path, split, batch_size, device, workers, save_logits, checkpoint, recipe_arg, fmt,
             **robust) -> None:
    """Top-1 / top-5 accuracy of a weights file, a run directory (its best weights), or timm:NAME (a timm
    model with --checkpoint FILE, fed with timm's own preprocessing for NAME, e.g. timm:tf_efficientnet_b7 at
    600 px: a distillation teacher).

    With --robustness: clean top-1, mCE over the official 19 corruptions (pooled over severities; normalised by
    AlexNet's errors when the data has ImageNet's 1000 classes, unnormalised always) and images/s, plus flip
    probabilities and unnormalised mFR with --perturbations. Writes robustness.json and corruption_errors.png
    into RUN/robustness (or --out).
    """
    if robust["robustness"] or any(v is not None and v is not False for k, v in robust.items() if k != "robustness"):
        if checkpoint or recipe_arg or weights_or_run.startswith("timm:"):
            raise TransferError("--robustness evaluates this package's weights on a data split; timm:NAME, "
                                "--checkpoint and --recipe are for the clean evaluation: drop --robustness")
        return _evaluate_robustness(weights_or_run, data_path, split, batch_size, device, workers, save_logits, fmt,
                                    **robust)
    _start_computing()
    if recipe_arg is not None:
        from .stages.distillation import evaluate_on_training_images

        result = evaluate_on_training_images(weights_or_run, recipe_arg, data_path=data_path, split=split,
                                             checkpoint=checkpoint, batch_size=batch_size, device=device,
                                             workers=workers, save_logits=save_logits)
    else:
        from .stages.evaluation import evaluate_classifier

        result = evaluate_classifier(weights_or_run, data_path=data_path, split=split, batch_size=batch_size,
                                     device=device, workers=workers, save_logits=save_logits, checkpoint=checkpoint)
    shown = {k: v for k, v in result.items() if k not in ("logits", "indices")}
    if fmt == "json":
        click.echo(json.dumps(shown))
        return
    _print_table(f"evaluate {weights_or_run}", ["metric", "value"],
                 [[k, f"{v:.4f}" if isinstance(v, float) else str(v)] for k, v in shown.items()])


@cli.command()
@click.argument("run", required=False)
@click.option("--eval", "metrics", default=None,
              help="Comma list of metrics: recall@K (any K), precision@K, map@r (default: the run's recipe, "
              "recall@1,2,4,8 and map@r).")
@click.option("--embeddings", "embeddings_file", type=click.Path(dir_okay=False),
              help="Score a saved .npz (arrays embeddings n x d float32, labels n int) instead of a run: "
              "query = gallery, leave-one-out.")
@click.option("--query", "queries", multiple=True,
              help="Search the run's saved gallery with this image (or folder; repeatable) and print the top-k.")
@click.option("--topk", default=5, show_default=True, help="Neighbours printed per --query image.")
@click.option("--data", "data_path", help="Dataset to embed: a data_prep folder, an image folder, a CSV "
              "(path,label,split,is_query,is_gallery) or 'digits' (default: the run's own test split).")
@click.option("--split", default=None, help="Split to embed (default: the recipe's validation split).")
@click.option("--backend", type=click.Choice(["auto", "faiss-gpu", "faiss-cpu", "torch"]), default="auto",
              show_default=True, help="Nearest-neighbour search backend (auto: FAISS GPU, else torch on a GPU, "
              "else FAISS CPU).")
@click.option("--index", "index_kind", type=click.Choice(["flat", "hnsw", "ivf"]), default="flat",
              show_default=True, help="flat = exact search; hnsw / ivf = approximate FAISS indexes for very "
              "large galleries (reported as approximate).")
@click.option("--batch-size", default=64, show_default=True, help="Images per embedding batch.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--workers", default=2, show_default=True, help="Data-loading worker processes.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False),
              help="Where to write metrics.json, embeddings.npz, index.faiss and grid.png (default: RUN/retrieval).")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True,
              help="json prints one JSON object: {metric: value} (or the --query results).")
def retrieve(run, metrics, embeddings_file, queries, topk, data_path, split, backend, index_kind, batch_size,
             device, workers, out_dir, fmt) -> None:
    """Embed a retrieval run's test split, search it, and report Recall@K / Precision@K / MAP@R.

    RUN is a retrieval run directory or a weights file with --data (default: the latest retrieval run).
    Queries never retrieve themselves (left out by index); queries without another item of their class in
    the gallery are excluded. Writes metrics, embeddings (with ids and labels), the FAISS index and a PNG
    grid of queries with their nearest neighbours.
    """
    _start_computing()
    from .stages import retrieval as rt

    if embeddings_file and queries:
        raise TransferError("--embeddings and --query do not go together: --query searches a run's gallery")
    if queries:
        found = rt.search_images(run, queries, topk=topk, backend=backend, batch_size=batch_size, device=device)
        if fmt == "json":
            click.echo(json.dumps(found))
            return
        for item in found:
            _print_table(f"query {item['query']}", ["rank", "id", "label", "score"],
                         [[str(h["rank"]), h["id"], h["label"], f"{h['score']:.4f}"] for h in item["neighbours"]])
        return
    if embeddings_file:
        scores = rt.evaluate_file(embeddings_file, metrics or "recall@1,recall@2,recall@4,recall@8,map@r",
                                  backend=backend, index=index_kind, device=None if device == "auto" else device)
    else:
        scores = rt.evaluate_run(run, metrics, data_path=data_path, split=split, backend=backend, index=index_kind,
                                 batch_size=batch_size, device=device, workers=workers, out=out_dir)
    names = [m.name for m in rt.parse_metrics(metrics or [k for k in scores if "@" in k])]
    if fmt == "json":
        click.echo(json.dumps({n: scores[n] for n in names}))
        return
    _print_table(f"retrieve {embeddings_file or run or 'latest retrieval run'}", ["metric", "value"],
                 [[n, f"{scores[n]:.4f}"] for n in names])
    click.echo(f"{scores['queries']} queries ({scores['lone_queries']} without another item of their class, "
               f"excluded), gallery {scores['gallery']}, backend {scores['backend']}"
               f"{'' if scores['exact'] else ' (APPROXIMATE search)'}")
    click.echo(f"definition: {scores['definition']}")
    if "note" in scores:
        click.echo(f"note: {scores['note']}")
    if "written" in scores:
        click.echo(f"written to {scores['written']}: {', '.join(Path(f).name for f in scores['files'].values())}")


@cli.command()
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="Folder for the demo's runs and report (default: runs/demo-TIME).")
@click.option("--seed", default=0, show_default=True, help="Seed of every stage (data order, augmentation, init).")
@click.option("--seeds", default=None, metavar="LIST",
              help="Run the demo once per seed (e.g. 0,1,2,3,4) into DEMO/seed-N/, and report which gains held on "
                   "every seed (DEMO/report.html, seeds.json). Replaces --seed.")
@click.option("--workers", default=1, show_default=True,
              help="Data-loading worker processes per stage (1: on 2 cores, one for them and one for the network).")
@click.option("--quick", is_flag=True, help="Shrink every stage to seconds (a smoke check; the numbers mean little).")
@click.option("--resume", is_flag=True,
              help="Continue the stopped demo in --out with its own settings: finished stages are kept, the stopped "
                   "one resumes from its checkpoint.")
@click.pass_context
def demo(ctx, out_dir, seed, seeds, workers, quick, resume) -> None:
    """Run the whole pipeline small, on a CPU in minutes: pretrain an assembled ResNet on an invented alphabet;
    fine-tune it on scikit-learn's digits at 5, 10, 25 and all labels per class, and train from random init,
    to show the transfer gain beside two linear baselines; zero-shot
    digit retrieval (train 0-4, search 5-9) both ways; robustness (unnormalised mCE) of both classifiers.

    Ends with a summary table and DEMO/report.html (and report.md): training curves, confusion matrices,
    retrieval grids and corruption charts, every figure computed by this run. Stopped (a signal, a crash), it
    continues with `transfer demo --resume --out DEMO`.
    """
    import time

    from .runs import runs_root
    from .stages.demo import DemoStopped

    if resume:
        if out_dir is None:
            raise TransferError("--resume needs --out DEMO: the demo to continue")
        from .stages.demo import demo_settings

        saved = demo_settings(out_dir)
        given = {"seed": seed, "seeds": seeds and seeds.replace(" ", "").split(","), "quick": quick, "workers": workers}
        saved_as_given = {**saved, "seeds": [str(s) for s in saved["seeds"]] if "seeds" in saved else None}
        differ = [k for k, v in given.items() if ctx.get_parameter_source(k) != click.core.ParameterSource.DEFAULT
                  and saved_as_given.get(k) != v]
        if differ:
            raise TransferError(f"{out_dir} is a demo with {saved}, not the --{differ[0]} given; resume it with its "
                                f"own settings (leave out --seed, --seeds, --quick and --workers)")
        seed, quick, workers = saved.get("seed", 0), saved["quick"], saved["workers"]
        seeds = ",".join(map(str, saved["seeds"])) if "seeds" in saved else None
    _start_computing()
    out = Path(out_dir) if out_dir else runs_root() / f"demo-{time.strftime('%Y%m%d-%H%M%S')}"
    try:
        _run_demo(out, seed, seeds, workers, quick, resume)
    except DemoStopped as stop:
        click.echo(str(stop), err=True)
        sys.exit(stop.exit_code)


def _run_demo(out: Path, seed: int, seeds: str | None, workers: int, quick: bool, resume: bool) -> None:
    from .stages.demo import run_demo
    from .stages.demo_report import HEADER, summary_table

    if seeds is not None:
        try:
            chosen = [int(s) for s in seeds.split(",")]
        except ValueError:
            raise click.BadParameter(f"{seeds!r} is not a comma-separated list of integers, e.g. 0,1,2,3,4",
                                     param_hint="--seeds") from None
        if len(set(chosen)) != len(chosen) or any(s < 0 for s in chosen):
            raise click.BadParameter(f"{seeds!r}: each seed once, none negative", param_hint="--seeds")
        from .stages.demo import run_demo_seeds
        from .stages.demo_report import over_seeds

        per_seed = run_demo_seeds(out, chosen, quick=quick, workers=workers, resume=resume)
        rows = over_seeds(per_seed)
        _print_table(f"transfer demo over seeds {seeds}", ["stage", "metric", "labels per class", "smallest gain",
                                                            "held on every seed"],
                     [[r["stage"], r["metric"], "all" if r["labels_per_class"] is None else str(r["labels_per_class"]),
                       f"{r['smallest_gain']:+.4f}", "yes" if r["holds"] else "no"] for r in rows])
        click.echo(f"report: {out / 'report.html'} (and report.md); each seed's under {out}/seed-N")
        return
    res = run_demo(out, seed=seed, quick=quick, workers=workers, resume=resume)
    total = sum(res.seconds.values())
    _print_table(f"transfer demo (seed {seed}): {total / 60:.1f} min", HEADER, summary_table(res))
    click.echo(f"report: {out / 'report.html'} (and report.md); runs under {out}")


def _stop_now(signum, frame) -> None:
    """SIGTERM / SIGINT outside a training stage (while starting, importing torch takes seconds; or in
    evaluate, predict, ...): stop at once, in one line, with the shell's status for the signal, no traceback.
    Files are published whole (files.py), and the unwinding removes a temporary file being written."""
    print(f"stopped by {signal.Signals(signum).name}", file=sys.stderr)
    raise SystemExit(128 + signum)


def main() -> None:
    # A training stage replaces these with its own graceful handlers (engine/signals.py) and puts them back.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _stop_now)
    try:
        cli(prog_name="transfer")
    finally:
        # The command is done and its status decided. A stop that arrives while the interpreter shuts down
        # (seconds with torch loaded) has nothing left to stop: without this, Python's finalisation puts the
        # default action back and the process dies by the signal, reporting a finished run as killed.
        # SIG_IGN, unlike a Python handler, survives finalisation.
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, signal.SIG_IGN)


if __name__ == "__main__":
    main()
