"""The `transfer` command line: thin click commands that parse, then call one function each.

A user's mistake (a TransferError) prints one line `error: ...` and exits 2; --debug shows the traceback.
"""

from __future__ import annotations

import json
import logging
import sys

import click

from .errors import TransferError


class _Group(click.Group):
    """Turns TransferErrors raised by any command into one line on stderr and exit status 2."""

    def invoke(self, ctx: click.Context):
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
    from .eval.throughput import BenchmarkSettings, describe_machine, measure_throughput, resolve_device
    from .models.zoo import build_for_benchmark

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
    from .stages.train import run_training

    r, name = _load_for_training(recipe, "pretrain.yaml", out, resume,
                                 _recipe_overrides(data_path, epochs, batch_size, device, sets))
    run_training(r, recipe_name=name, out=out, resume=resume)


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
    from .stages.train import run_training

    overrides = _recipe_overrides(data_path, epochs, batch_size, device, sets)
    if backbone is not None:
        overrides = merge_dicts(overrides, {"model": {"backbone": backbone}})
    r, name = _load_for_training(recipe, "demo/finetune.yaml", out, resume, overrides)
    if r.stage == "pretrain":
        raise TransferError(f"recipe {name} is a pretraining recipe (stage: pretrain); run it with "
                            f"`transfer pretrain`")
    run_training(r, recipe_name=name, out=out, resume=resume)


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
    from .stages.evaluation import predict_images

    n = predict_images(weights_or_run, images, out_file=out_file, topk=topk, batch_size=batch_size, device=device)
    click.echo(f"wrote {n} predictions to {out_file}")


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
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True,
              help="A table, or one JSON object of the metrics.")
def evaluate(weights_or_run, data_path, split, batch_size, device, workers, save_logits, fmt) -> None:
    """Top-1 / top-5 accuracy of a weights file or a run directory (its best weights)."""
    from .stages.evaluation import evaluate_classifier

    result = evaluate_classifier(weights_or_run, data_path=data_path, split=split, batch_size=batch_size,
                                 device=device, workers=workers, save_logits=save_logits)
    shown = {k: v for k, v in result.items() if k not in ("logits", "indices")}
    if fmt == "json":
        click.echo(json.dumps(shown))
        return
    _print_table(f"evaluate {weights_or_run}", ["metric", "value"],
                 [[k, f"{v:.4f}" if isinstance(v, float) else str(v)] for k, v in shown.items()])


def main() -> None:
    cli(prog_name="transfer")


if __name__ == "__main__":
    main()
