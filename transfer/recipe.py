"""Recipes: one YAML file describes a run. The schema below holds every default, once.

A recipe may start with `base: other.yaml` (a path relative to it): the base is loaded first and this file's
keys are merged over it, so the paper's ablation rows are a base plus a few lines each. `--set a.b=value`
overrides any key after that (values are read as YAML: 0.1, true, [1, 2], null).
Validation names the file, the key path and the problem, and suggests the closest key for unknown ones.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .errors import ConfigError, suggest


def opt(default, help: str, *, choices: tuple | None = None, min: float | None = None,
        max: float | None = None, check=None):
    """A schema field: its default, a one-line help (for the docs), and the allowed values (`check`: a function
    of the value giving what is wrong with it, or None)."""
    meta = {"help": help, "choices": choices, "min": min, "max": max, "check": check}
    if isinstance(default, list | dict):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


def _range_pair(low: float, high: float | None = None):
    """A check: two numbers [a, b] with low < a <= b (<= high)."""
    def check(v):
        if len(v) != 2 or not low < v[0] <= v[1] or (high is not None and v[1] > high):
            top = f" <= {high}" if high is not None else ""
            return f"{v} must be two numbers [a, b] with {low} < a <= b{top}"
        return None
    return check


def _positive_ints(v):
    return None if v and all(k >= 1 for k in v) else f"{v} must list one or more k >= 1"


# Seeds are combined into per-step and per-image seeds that torch and numpy take as 64- and 32-bit integers.
MAX_SEED = 2**32 - 1


def section(cls, help: str):
    return field(default_factory=cls, metadata={"help": help})


@dataclass
class ModelSection:
    name: str = opt("assemble_resnet50", "a name from `transfer models`")
    options: dict = opt({}, "create_model overrides (any ResNetConfig field: width, drop_block, ...)")
    weights: str | None = opt(None, "initial weights: a .safetensors file, a torchvision state_dict, or "
                              "torchvision's weight name (IMAGENET1K_V2), read from the torch hub cache")
    backbone: str | None = opt(None, "fine-tuning: a pretrain run directory, a weights file, a torchvision "
                               "state_dict, or 'latest' (the newest `transfer pretrain` run)")
    restore_bn_stats: bool = opt(True, "load the backbone's BN running statistics (the paper's warm start: no)")
    backbone_lr_scale: float = opt(1.0, "learning-rate multiplier of the backbone relative to the new head", min=0)


@dataclass
class EmbeddedSection:
    classes: int = opt(10, "number of procedurally generated classes", min=2, max=1000)
    train_per_class: int = opt(200, "training images per class", min=1)
    val_per_class: int = opt(50, "validation images per class", min=1)
    resolution: int = opt(64, "image side in pixels", min=16, max=512)
    seed: int = opt(0, "generator seed: the same seed gives the same images", min=0, max=MAX_SEED)
    kind: str = opt("shapes", "shapes (figures, outlines and strokes in colour and texture; at most 64 classes) or "
                    "glyphs (pen strokes of an invented alphabet, formed as scikit-learn's digits are: 8x8 ink "
                    "counts; at most 1000 classes)", choices=("shapes", "glyphs"))


@dataclass
class DataSection:
    source: str = opt("embedded", "embedded | digits (scikit-learn) | disk (data_prep output) | folder "
                      "(class sub-folders) | csv (path,label[,split]) | hub",
                      choices=("embedded", "digits", "disk", "folder", "csv", "hub"))
    path: str | None = opt(None, "dataset location: a folder, or a HuggingFace hub name for source=hub")
    train_split: str = opt("train", "split used for training")
    val_split: str = opt("validation", "split used for validation")
    image_column: str = opt("image", "image column of disk and hub datasets")
    label_column: str = opt("label", "label column of disk and hub datasets")
    on_bad_image: str = opt("skip", "skip (count and report) or fail on unreadable images",
                            choices=("skip", "fail"))
    prepare: str | None = opt(None, "the command that prepares this dataset (shown when it is missing)")
    val_fraction: float = opt(0.2, "held-out fraction when the data has no validation split (seeded, stratified)",
                              min=0.01, max=0.9)
    split_seed: int = opt(0, "seed of the split made for data without one", min=0, max=MAX_SEED)
    split_by: str = opt("image", "how a split is made for data without one: image (seeded, stratified: every "
                        "class in both parts) or class (zero-shot retrieval: the last val_fraction of the sorted "
                        "classes are held out)", choices=("image", "class"))
    labels_per_class: int | None = opt(None, "train on this many labelled images per class only (a seeded draw "
                                       "from the training split, seed split_seed; a label-budget experiment); "
                                       "null: all of them", min=1)
    drop_last: bool = opt(True, "drop each epoch's last incomplete batch; false: train on it as one more, smaller "
                          "step, as the official input pipeline does (it keeps the remainder)")
    embedded: EmbeddedSection = section(EmbeddedSection, "the embedded synthetic dataset")


@dataclass
class AugmentSection:
    train_resolution: int | None = opt(None, "training crop size (default: the model's)", min=16)
    eval_resolution: int | None = opt(None, "evaluation crop size (default: the model's)", min=16)
    eval_resize: int | None = opt(None, "shorter side before the evaluation centre crop (default: the model's)",
                                  min=16)
    train_crop: str = opt("random_resized", "distorted_bounding_box (the official ImageNet and fine-tuning crop: "
                          "TF's sample_distorted_bounding_box, flip, TF 1's bilinear resize without antialiasing), "
                          "random_resized (torchvision's RandomResizedCrop: uniform area, 7% of crops under a tenth "
                          "of the image; antialiased resize) or resize_random_crop (the paper's retrieval crop: p=0.5 "
                          "resize to a 256/224-larger square + random crop, else resize)",
                          choices=("distorted_bounding_box", "random_resized", "resize_random_crop"))
    eval_crop: str = opt("center", "center (resize the shorter side to eval_resize, centre crop) or none (resize "
                         "to an eval_resolution square: the paper's retrieval evaluation)", choices=("center", "none"))
    crop_area: list[float] = opt([0.05, 1.0], "training crop area range, a fraction of the image "
                                 "(distorted_bounding_box, random_resized; paper: 0.05-1)", check=_range_pair(0, 1))
    crop_aspect: list[float] = opt([0.75, 1.3333333], "training crop aspect range, width / height "
                                   "(distorted_bounding_box, random_resized; official code: 0.75-1.33)",
                                   check=_range_pair(0))
    crop_min_covered: float = opt(0.1, "distorted_bounding_box: the least fraction of the image a crop covers "
                                  "(official: 0.1, so no crop under a tenth of the image)", min=0, max=1)
    hflip: bool = opt(True, "random horizontal flip")
    autoaugment: str = opt("none", "AutoAugment policy after crop and flip: official_imagenet / official_good (the "
                           "official TF operations, its ImageNet and 95-entry `good` lists: the paper's), imagenet / "
                           "cifar (torchvision's)", choices=("none", "official_imagenet", "official_good", "imagenet",
                                                             "cifar"))
    normalization: str = opt("mean_std", "mean_std (torchvision), mean_only (the paper's mean subtraction) or "
                             "backbone (as the backbone's sidecar records; mean_std without one)",
                             choices=("mean_std", "mean_only", "backbone"))
    interpolation: str = opt("bilinear", "resize interpolation", choices=("bilinear", "bicubic", "nearest"))


@dataclass
class OptimSection:
    optimizer: str = opt("sgd", "optimizer", choices=("sgd",))
    lr: float = opt(0.1, "learning rate per `reference_batch` images (scaled linearly with batch_size)", min=0)
    reference_batch: int = opt(256, "batch size at which `lr` applies", min=1)
    momentum: float = opt(0.9, "SGD momentum", min=0, max=1)
    nesterov: bool = opt(False, "Nesterov momentum")
    weight_decay: float = opt(1e-4, "L2 weight decay", min=0)
    decay_norm: bool = opt(False, "apply weight decay to BatchNorm parameters (paper: no)")
    decay_bias: bool = opt(True, "apply weight decay to biases (paper: the FC bias is decayed)")
    grad_clip: float | None = opt(None, "clip the global gradient norm to this value", min=0)
    batch_size: int = opt(256, "global batch size (all processes, all accumulation steps)", min=1)
    accumulation: int = opt(1, "gradient accumulation steps per optimizer step (BatchNorm's running statistics "
                            "move once per step, by the mean over its micro-batches, as over that many GPUs)", min=1)
    bn_momentum_rule: bool = opt(False, "BN momentum from steps per epoch s: TF decay max(1 - 10/s, 0.9) "
                                 "(the paper's fine-tuning rule)")


@dataclass
class ScheduleSection:
    epochs: int = opt(120, "training epochs", min=1)
    warmup_epochs: float = opt(5.0, "linear warm-up from 0, then the schedule", min=0)
    lr_schedule: str = opt("cosine", "after warm-up: cosine to min_lr, or constant", choices=("cosine", "constant"))
    min_lr: float = opt(0.0, "final learning rate of the cosine schedule", min=0)
    epoch_repeats: int = opt(1, "passes over the training images in one epoch (timm's --epoch-repeats): a few "
                             "labelled images get epochs long enough to validate and checkpoint at", min=1)


@dataclass
class MixupSection:
    alpha: float = opt(0.0, "Beta(alpha, alpha) mixing; 0 turns mixup off (paper: 0.2)", min=0)
    mode: str = opt("per_sample", "per_sample (one lambda per mixed image, as both official mixup types draw it) "
                    "or batch (one lambda per group of runtime.group_size, or per micro-batch)",
                    choices=("per_sample", "batch"))
    # in_batch by default: two_batches reads twice the images per step, which the official did silently (its
    # --mixup_type=1); a recipe that wants the paper's says so, and its comment says why.
    pairing: str = opt("in_batch", "two_batches (the official --mixup_type=1, the paper's: a step of B samples "
                       "reads 2B images, each group's first half mixed with its second; an epoch, still N/B "
                       "steps, reads the images twice) or in_batch (--mixup_type=2: B images give B samples)",
                       choices=("two_batches", "in_batch"))


@dataclass
class DropBlockSection:
    keep_prob_start: float = opt(1.0, "DropBlock keep_prob at the first step", min=0.01, max=1)
    keep_prob_end: float = opt(1.0, "keep_prob at the last step, linear in between (paper: 0.9)", min=0.01, max=1)


@dataclass
class DistillationSection:
    teacher: str | None = opt(None, "teacher: a weights file (.safetensors with sidecar) run in eval mode")
    logits: str | None = opt(None, "precomputed teacher logits: a .npy file, one row per training sample")
    temperature: float = opt(1.0, "softmax temperature T (paper: 1)", min=0.01)
    weight: float = opt(1.0, "weight of the T^2 * KL term", min=0)


@dataclass
class EmaSection:
    decay: float = opt(0.0, "weight EMA after every optimizer step, ema = decay * ema + (1 - decay) * weights "
                       "(timm's ModelEma; e.g. 0.9998); 0 turns it off (the paper does not use it)", min=0,
                       max=0.999999)


@dataclass
class RegularizationSection:
    label_smoothing: float = opt(0.0, "label smoothing epsilon (paper: 0.1)", min=0, max=1)
    mixup: MixupSection = section(MixupSection, "mixup")
    drop_block: DropBlockSection = section(DropBlockSection, "DropBlock keep_prob schedule")
    distillation: DistillationSection = section(DistillationSection, "knowledge distillation")
    ema: EmaSection = section(EmaSection, "an exponential moving average of the weights, validated and saved "
                              "beside them (weights/ema_best, ema_final)")


@dataclass
class EvalSection:
    every_epochs: int = opt(1, "validate every N epochs (and after the last)", min=1)
    fine_from: float = opt(1.0, "validate every epoch of each every_epochs block that ends after this fraction of "
                           "schedule.epochs (the official ratio_fine_eval); 1: never", min=0, max=1)
    topk: list[int] = opt([1, 5], "top-k accuracies to report (top-1 is always measured: it picks the best "
                          "weights)", check=_positive_ints)
    report_weights: str = opt("best", "the weights the run's report (report/, retrieval/) evaluates: best (chosen "
                              "on the validation split) or final (the last; nothing chosen on it, for a validation "
                              "split that is the test set)", choices=("best", "final"))

    @property
    def measured_topk(self) -> list[int]:
        return sorted({1, *self.topk})


@dataclass
class RetrievalSection:
    loss: str = opt("cosine_softmax", "retrieval training loss: softmax (linear classifier), cosine_softmax "
                    "(normalised weights and features times scale) or arcface (cosine + additive angular margin)",
                    choices=("softmax", "cosine_softmax", "arcface"))
    scale: float = opt(20.0, "logit scale s of cosine_softmax and arcface (not given by the paper: 20 is "
                       "temperature 0.05 of Zhai & Wu 2019)", min=1)
    margin: float = opt(0.3, "ArcFace additive angular margin in radians (paper: 0.3 for SOP)", min=0, max=1.5)
    metrics: list[str] = opt(["recall@1", "recall@2", "recall@4", "recall@8", "map@r"],
                             "metrics computed at each validation (recall@K, precision@K, map@r)")
    select: str = opt("recall@1", "the metric that selects the best checkpoint")
    backend: str = opt("auto", "nearest-neighbour search: auto, faiss-gpu, faiss-cpu or torch",
                       choices=("auto", "faiss-gpu", "faiss-cpu", "torch"))


@dataclass
class RuntimeSection:
    device: str = opt("auto", "auto, cpu, cuda or cuda:N")
    precision: str = opt("fp32", "fp32, bf16 (autocast) or fp16 (autocast + loss scaling)",
                         choices=("fp32", "bf16", "fp16"))
    channels_last: bool = opt(False, "channels_last memory format")
    compile: bool = opt(False, "torch.compile the model")
    workers: int = opt(2, "data-loading worker processes per training process", min=0)
    seed: int = opt(0, "seed of everything random: data order, augmentation, mixup, DropBlock", min=0,
                    max=MAX_SEED)
    sync_bn: bool = opt(False, "synchronised BatchNorm across processes (DDP)")
    group_size: int | None = opt(None, "samples per group in training: BatchNorm statistics, DropBlock masks and "
                                 "mixup partners are each group's own, as on one of the official GPUs (8 x 128 "
                                 "for batch 1024); must divide each process's micro-batch; null: the micro-batch",
                                 min=1)
    threads: int = opt(0, "CPU threads of the model's kernels (0: PyTorch's default, one per core). A seeded CPU "
                       "run repeats bit for bit on one machine at one thread count; another count sums in another "
                       "order, and the result moves", min=0)


@dataclass
class OutputSection:
    dir: str | None = opt(None, "run directory (default: runs/<stage>-<recipe>-<time>)")
    checkpoint_every_steps: int = opt(0, "also checkpoint every N optimizer steps (0: at epoch ends only)", min=0)
    log_every_steps: int = opt(10, "log a line every N steps when the output is not a terminal", min=1)
    tensorboard: bool = opt(True, "write TensorBoard event files")
    plots: bool = opt(True, "write PNG plots of loss, learning rate and accuracy")


@dataclass
class Recipe:
    stage: str = opt("pretrain", "which stage this recipe is for", choices=("pretrain", "finetune", "retrieval"))
    description: str = opt("", "one line about this recipe")
    model: ModelSection = section(ModelSection, "the network")
    data: DataSection = section(DataSection, "the dataset")
    augment: AugmentSection = section(AugmentSection, "input transforms")
    optim: OptimSection = section(OptimSection, "optimizer and batch")
    schedule: ScheduleSection = section(ScheduleSection, "epochs and learning-rate schedule")
    regularization: RegularizationSection = section(RegularizationSection, "label smoothing, mixup, DropBlock, KD")
    eval: EvalSection = section(EvalSection, "validation")
    retrieval: RetrievalSection = section(RetrievalSection, "retrieval stage: loss, metrics, search backend")
    runtime: RuntimeSection = section(RuntimeSection, "device, precision, workers, seed")
    output: OutputSection = section(OutputSection, "run directory, checkpoints, logs")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def hash(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------------------------- validation

_TYPE_WORDS = {int: "an integer", float: "a number", bool: "true or false", str: "a string", dict: "a mapping",
               list: "a list"}


def _check_value(value, tp, where: str):
    """Coerce/validate `value` against annotation `tp`; raise ConfigError(where: problem)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _check_value(value, inner[0], where)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        (item,) = typing.get_args(tp)
        return [_check_value(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, where)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is dict and value is None:
        return {}
    if not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
        raise ConfigError(f"{where}: expected {_TYPE_WORDS.get(tp, tp.__name__)}, got {value!r}")
    return value


def _build(cls, data, where: str):
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping of keys, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        path = f"{where}.{key}" if not where.endswith(":") else f"{where} {key}"
        if key not in fields:
            raise ConfigError(f"{path}: unknown key{suggest(str(key), fields)}")
        value = _check_value(value, hints[key], path)
        meta = fields[key].metadata
        if meta.get("choices") and value not in meta["choices"]:
            raise ConfigError(f"{path}: {value!r} is not one of {list(meta['choices'])}")
        for bound, ok in (("min", lambda v, b: v >= b), ("max", lambda v, b: v <= b)):
            b = meta.get(bound)
            if b is not None and isinstance(value, int | float) and not ok(value, b):
                word = "at least" if bound == "min" else "at most"
                raise ConfigError(f"{path}: {value} is out of range (must be {word} {b})")
        problem = meta["check"](value) if meta.get("check") else None
        if problem:
            raise ConfigError(f"{path}: {problem}")
        kwargs[key] = value
    return cls(**kwargs)


def merge_dicts(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = merge_dicts(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _read_yaml(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    if not path.is_file():
        raise ConfigError(f"recipe {path} does not exist")
    if path.resolve() in seen:
        raise ConfigError(f"recipe {path}: `base` chain loops back to itself")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError as e:
        raise ConfigError(f"recipe {path} is not UTF-8 text (byte {e.start}); save it as UTF-8") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"recipe {path}{at}: not valid YAML ({getattr(e, 'problem', e)})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"recipe {path}: expected a mapping of sections at the top level")
    base = data.pop("base", None)
    if base is not None and not isinstance(base, str):
        raise ConfigError(f"recipe {path}: base: {base!r} is not a file name; give the recipe this one builds on, "
                          f"e.g. base: _fgvc.yaml")
    if base is not None:
        data = merge_dicts(_read_yaml(path.parent / base, (*seen, path.resolve())), data)
    return data


def parse_set(items: typing.Iterable[str]) -> dict:
    """['optim.lr=0.1', 'runtime.compile=true'] -> nested dict of YAML-typed values."""
    out: dict = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key.path=value, e.g. --set optim.lr=0.05")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            value = raw
        node = out
        parts = key.strip().split(".")
        for i, p in enumerate(parts[:-1]):
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {item!r}: {'.'.join(parts[:i + 1])} is set to a value by another --set, "
                                  f"so it has no key {parts[i + 1]!r}")
        node[parts[-1]] = value
    return out


def load_recipe(path: str | Path | None = None, overrides: dict | None = None, *, source: str | None = None
                ) -> Recipe:
    """Read, merge `base` files, apply overrides, validate. Errors name the file and the key path."""
    data = _read_yaml(Path(path)) if path is not None else {}
    if overrides:
        data = merge_dicts(data, overrides)
    name = source or (str(path) if path is not None else "recipe")
    return _build(Recipe, data, f"{name}:")


def save_recipe(recipe: Recipe, path: Path) -> None:
    from .files import atomic_write_bytes

    text = yaml.safe_dump(recipe.to_dict(), sort_keys=False)
    atomic_write_bytes(path, f"# resolved recipe (hash {recipe.hash()})\n{text}".encode())


def _type_name(tp) -> str:
    """`int`, `list[float]`, `str | None`: the annotation as a reader of the reference would write it."""
    if isinstance(tp, type) and not typing.get_args(tp):
        return tp.__name__
    return str(tp).replace("typing.", "").replace("NoneType", "None")


def schema_reference() -> list[dict]:
    """Every key with its section, type, default, allowed values and help: the source of docs/recipe-reference.md."""
    rows: list[dict] = []

    def walk(cls, prefix: str, section: str):
        hints = typing.get_type_hints(cls)
        inst = cls()
        for f in dataclasses.fields(cls):
            key = f"{prefix}{f.name}"
            if dataclasses.is_dataclass(hints[f.name]):
                walk(hints[f.name], key + ".", section or f.name)
                continue
            rows.append({"key": key, "section": section, "type": _type_name(hints[f.name]),
                         "default": getattr(inst, f.name), "help": f.metadata.get("help", ""),
                         "choices": f.metadata.get("choices"), "min": f.metadata.get("min"),
                         "max": f.metadata.get("max")})

    walk(Recipe, "", "")
    return rows


def section_help() -> dict[str, str]:
    """The one-line help of each top-level section (`model`: the network, ...)."""
    return {f.name: f.metadata["help"] for f in dataclasses.fields(Recipe) if "help" in f.metadata
            and dataclasses.is_dataclass(typing.get_type_hints(Recipe)[f.name])}
