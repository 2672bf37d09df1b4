"""A training stage composed from its parts: recipe -> data, model, objective -> Trainer.fit -> run directory.

`transfer pretrain` runs it with a pretraining recipe; the fine-tuning stages build on the same pieces.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from .. import runtime
from ..data.loader import TransformedDataset, eval_dataset
from ..engine.signals import Stopped, StopSignals
from ..engine.trainer import Trainer, TrainerSettings
from ..errors import ConfigError, TransferError, WeightsError
from ..files import atomic_write_csv
from ..models import ResNet, create_model
from ..models.weights import load_weights, read_metadata
from ..models.zoo import smallest_input
from ..recipe import Recipe
from ..runs import RunDir, latest_run, new_run_dir, resolve_weights
from .tasks import StageData, Task, task_for

log = logging.getLogger("transfer")


# The backbone's own head: what a fine-tuning run chooses afresh instead of inheriting.
HEAD_OPTIONS = ("num_classes", "embedding_dim", "head", "head_scale")


def backbone_architecture(recipe_name: str, meta: dict, backbone: Path | None) -> tuple[str, dict]:
    """(architecture, options) a fine-tuning run builds: the backbone's, as its sidecar records them (width,
    tweaks, pooling rules, ...), so that `--backbone` of another architecture than the recipe's works; the
    recipe's model.options go on top. Without a sidecar: the recipe's model.name."""
    arch = meta.get("architecture")
    if not arch:
        return recipe_name, {}
    if arch != recipe_name:
        log.info("model: %s, the architecture of the backbone %s (the recipe names %s)", arch, backbone,
                 recipe_name)
    return arch, {k: v for k, v in meta.get("overrides", {}).items() if k not in HEAD_OPTIONS}


def backbone_metadata(backbone: Path | None) -> dict:
    """A backbone's sidecar ({} for none, or for a bare torchvision state_dict)."""
    if backbone is None or backbone.suffix != ".safetensors":
        return {}
    try:
        return read_metadata(backbone)
    except TransferError:
        return {}


def resolve_backbone(backbone: str) -> Path:
    """'latest' (the newest pretrain run), a run directory, a .safetensors file or a torchvision state_dict."""
    if backbone == "latest":
        try:
            return resolve_weights(latest_run("pretrain").path)
        except TransferError as e:
            raise ConfigError(f"model.backbone=latest: {e}; or pass --backbone RUN_DIR_OR_WEIGHTS") from None
    return resolve_weights(backbone)


def _shared_run_dir(recipe: Recipe, recipe_name: str, out: str | None, resume: bool, d) -> tuple[RunDir, str]:
    """Rank 0 chooses (and creates) the run directory; the other processes learn it (and the mode) from rank 0."""
    chosen = [None]
    if d.is_main:
        run, mode = new_run_dir(recipe, recipe_name, out, resume)
        chosen[0] = (str(run.path), mode)
    if d.enabled:
        import torch.distributed as tdist

        tdist.broadcast_object_list(chosen, src=0)
    return RunDir(Path(chosen[0][0])), chosen[0][1]


def record_made_splits(run: RunDir, data: StageData) -> None:
    """When the data had no validation split and one was drawn here, write it into the run (split.csv)."""
    parts = [(name, rec) for name, rec in (("train", data.train), ("validation", data.val))
             if rec is not None and getattr(rec, "made_split", False)]
    if parts:
        atomic_write_csv(run.path / "split.csv", ["path", "label", "split"],
                         [[ident, rec.classes[label], name] for name, rec in parts
                          for ident, label in zip(rec.ids, rec.labels, strict=True)])


def _finished_summary(run: RunDir) -> dict:
    """What a finished run's run.json says, as a summary."""
    info = run.info()
    summary = {"status": "finished", "epochs": info.get("epochs_done"), "steps": info.get("steps")}
    if info.get("best") is not None:
        summary[f"best_{info.get('best_metric', 'top1')}"] = info["best"]
        summary["best_epoch"] = info.get("best_epoch")
    return {**summary, "run": str(run.path)}


def trainer_settings(recipe: Recipe) -> TrainerSettings:
    return TrainerSettings(recipe.optim, recipe.schedule, recipe.regularization, recipe.runtime, recipe.output,
                           recipe.eval.every_epochs, recipe.data.on_bad_image, recipe.hash(), recipe.stage,
                           eval_fine_from=recipe.eval.fine_from, drop_last=recipe.data.drop_last)


def run_training(recipe: Recipe, *, recipe_name: str, out: str | None = None, resume: bool = False,
                 report: bool = True) -> dict:
    """Train as the recipe says, then write the plots and (with validation data) the report of the best weights.

    A stop signal at any moment leaves the run for `--resume` (summary status "preempted", `exit_code` set);
    `--resume` on a finished run changes nothing.
    """
    threads = torch.get_num_threads()
    if recipe.runtime.threads:
        torch.set_num_threads(recipe.runtime.threads)
    try:
        with StopSignals() as signals:
            summary = _run_training(recipe, recipe_name, out, resume, report, signals)
    finally:
        torch.set_num_threads(threads)  # a demo or a test runs several stages in one process
    if summary.get("status") == "preempted":
        summary["exit_code"] = signals.exit_code
    return summary


def build_model(recipe: Recipe, task: Task, data: StageData) -> tuple[ResNet, dict, dict[str, float] | None]:
    """(the model to train, what its weights files' sidecars add, the backbone's learning-rate scale): the
    recipe's architecture, or the backbone's, with its weights loaded and a new head for the task's classes;
    its input spec is the recipe's resolved against the model's (and the backbone's normalisation)."""
    m = recipe.model
    asked = m.options.get("num_classes")
    if asked is not None and asked != len(data.classes):
        where = recipe.data.path or recipe.data.source
        raise ConfigError(f"model.options.num_classes={asked} but the data ({where}) has {len(data.classes)} "
                          f"classes; remove the option: the classifier is sized from the data")
    backbone = resolve_backbone(m.backbone) if m.backbone else None
    backbone_meta = backbone_metadata(backbone)
    name, inherited = backbone_architecture(m.name, backbone_meta, backbone)
    options = {**inherited, **m.options, "num_classes": len(data.classes), **task.head_options()}
    model = create_model(name, weights=m.weights, **options)
    extra = {"class_names": data.classes}
    lr_scale = None
    if backbone is not None:
        try:
            load_weights(model, backbone, restore_bn_stats=m.restore_bn_stats, new_head=True)
        except WeightsError:
            changed = sorted(k for k in m.options if k in inherited and m.options[k] != inherited[k])
            if not changed:
                raise
            made = ", ".join(f"{k}={inherited[k]!r}" for k in changed)
            asked = ", ".join(f"{k}={m.options[k]!r}" for k in changed)
            raise ConfigError(f"the backbone {backbone} was made with {made} and model.options sets {asked}: "
                              f"its weights do not fit; remove them from model.options") from None
        if not m.restore_bn_stats:
            log.info("backbone BN statistics not restored (model.restore_bn_stats: false)")
        extra["backbone"] = str(backbone)
        if m.backbone_lr_scale != 1.0:
            lr_scale = {"stem.": m.backbone_lr_scale, "stages.": m.backbone_lr_scale}
    prep = model.input_spec.resolve(recipe.augment, backbone_meta.get("input"))
    problem = smallest_input(model.config, {"augment.train_resolution": prep.train_resolution,
                                            "augment.eval_resolution": prep.eval_resolution})
    if problem:
        raise ConfigError(f"model {m.name}: {problem}")
    model.input_spec = prep
    return model, extra, lr_scale


def _run_training(recipe: Recipe, recipe_name: str, out: str | None, resume: bool, report: bool,
                  signals: StopSignals) -> dict:
    task = task_for(recipe)  # a bad retrieval section fails here, before any process group or data
    d = runtime.setup(recipe.runtime.device)
    try:
        if resume:  # a finished run: say so before opening any data (every process reads the same run.json)
            done = RunDir(Path(out)) if out else None
            if done is not None and done.info().get("status") == "finished" and done.recipe.is_file():
                if d.is_main:
                    log.info("%s is finished already; nothing to do (delete it, or choose another --out, to "
                             "train again)", done.path)
                return _finished_summary(done)
        torch.manual_seed(recipe.runtime.seed)  # the same initial weights on every process
        data = task.open_data()
        model, extra, lr_scale = build_model(recipe, task, data)
        prep = model.input_spec
        train_set = TransformedDataset(data.train, prep.train_transform(recipe.augment), recipe.runtime.seed)
        val_set = eval_dataset(data.val, prep) if data.val is not None else None
        objective = task.objective(data)
        run, mode = _shared_run_dir(recipe, recipe_name, out, resume, d)
        if d.is_main and mode in ("new", "restart"):
            record_made_splits(run, data)
        trainer = Trainer(model, objective, train_set, val_set, trainer_settings(recipe), run, d,
                          validate=task.validation(data), select=task.select, weights_metadata=extra,
                          lr_scale=lr_scale, signals=signals)
        if mode == "done":  # finished while this process opened the data
            return _finished_summary(run)
        if mode == "report":
            summary = {**_finished_summary(run), "status": "reporting"}
            log.info("%s: training is finished; writing its plots and report", run.path)
        else:
            summary = trainer.fit(resume=mode == "resume")
        if d.is_main and summary["status"] != "preempted":
            summary = _write_reports(run, recipe, task, data, val_set, d, signals, summary, report)
        return summary
    finally:
        runtime.teardown(d)


def _write_reports(run: RunDir, recipe: Recipe, task: Task, data: StageData, val_set, d, signals: StopSignals,
                   summary: dict, report: bool) -> dict:
    """The plots and the report of a trained run, then status finished. A stop signal abandons them (each is
    built whole before it is published) and leaves status "reporting" for --resume."""
    from ..engine.observe import print_summary, write_plots

    try:
        with signals.interrupting():
            if recipe.output.plots and run.metrics.is_file():
                write_plots(run.metrics, run.path / "plots")
            if data.val is not None and report:
                summary.update(task.report(run, data, val_set, d.device))
    except Stopped as stop:
        log.warning("stopped by %s while writing the plots and report: the weights are saved; finish with "
                    "--resume --out %s", stop.name, run.path)
        return {**summary, "status": "preempted"}
    run.update_info(status="finished")
    summary["status"] = "finished"
    print_summary(summary)
    return summary
