"""The authors' TensorFlow checkpoints (clovaai/assembled-cnn, master) as this package's state_dicts.

The official graph names its variables by creation order, not by role: in each variable scope the N-th
`conv2d_N` pairs with the N-th `batch_normalization_N`. So the mapping is made by walking our model in the
order the official code creates its layers, numbering per scope as TensorFlow does:
- every variable lives under `resnet_model/`; plain networks put all blocks in that one scope;
- Big-Little networks use `stage0` (stem conv; its BN lands in `stage0_1`, a second scope of that name),
  `stage0/pool` (the bL stem), `stageI/bigI`, `stageI/littleI` (blocks, then the 1x1 conv to the stage
  width), `stageI/mergeI`, and `stage4`;
- a block creates its projection shortcut first, then conv1, the 3x3 or SK conv (the SK attention layers
  in a scope `sk_block_N` of their own: `sk_fc_1`, its BN, `sk_fc_2`), conv3, and SE (`se_block_N`);
- `embedding_dense` (a 1x1 conv) + `embedding_dense_batch_normalization`, then `dense`.
Kernels are HWIO (dense: in x out). `global_step` and the `/Momentum` slots are training state, skipped.
A 1001-way ImageNet head (index 0: background) becomes the 1000 ILSVRC classes.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources

import numpy as np
import torch
from torch import nn

from ..data.transforms import PAPER_MEAN, PAPER_STD
from ..errors import WeightsError
from ..models.layers import SqueezeExcite
from ..models.resnet import BigLittleStage, Bottleneck, ResNet
from ..models.zoo import get_spec, resolve_config

ROOT = "resnet_model"
# The zoo names the official code can build, most specific first: when two give the same variables
# (anti-aliasing has no weights), the first wins and `--arch` picks the other.
ARCHITECTURES = ("assemble_resnet50", "assemble_resnet152", "resnet50d_sk_bl", "resnet50d_sk", "resnet50d_se",
                 "resnet50d", "resnet101d", "resnet152d", "resnet50_sk_dagger", "resnet50_se", "resnet50",
                 "resnet101", "resnet152")
IMAGENET_CLASSES = 1000


def imagenet_synsets() -> list[str]:
    """The 1000 ILSVRC-2012 synset ids in sorted order: the official labels 1..1000."""
    text = resources.files("transfer.convert").joinpath("imagenet_synsets.txt").read_text()
    return text.split()


@dataclass(frozen=True)
class Tensor:
    """One of our state_dict entries: the official variable it comes from and how to lay it out."""

    variable: str
    layout: Callable[[np.ndarray], np.ndarray]


def _conv(k: np.ndarray) -> np.ndarray:
    return k.transpose(3, 2, 0, 1)  # HWIO -> OIHW


def _dense(k: np.ndarray) -> np.ndarray:
    return k.reshape(-1, k.shape[-1]).T  # (in, out) or a 1x1 conv's (1, 1, in, out) -> (out, in)


def _same(v: np.ndarray) -> np.ndarray:
    return v


class _Scope:
    """A TF variable scope: layers of one kind are numbered in creation order (conv2d, conv2d_1, ...)."""

    def __init__(self, path: str):
        self.path = path
        self.counts: Counter[str] = Counter()

    def child(self, name: str) -> _Scope:
        return _Scope(f"{self.path}/{name}")

    def layer(self, kind: str) -> str:
        n = self.counts[kind]
        self.counts[kind] += 1
        return f"{self.path}/{kind}" + (f"_{n}" if n else "")


class _Walk:
    def __init__(self):
        self.names: dict[str, Tensor] = {}

    def conv(self, key: str, variable: str) -> None:
        self.names[f"{key}.weight"] = Tensor(f"{variable}/kernel", _conv)

    def bn(self, key: str, variable: str) -> None:
        for ours, theirs in (("weight", "gamma"), ("bias", "beta"), ("running_mean", "moving_mean"),
                             ("running_var", "moving_variance")):
            self.names[f"{key}.{ours}"] = Tensor(f"{variable}/{theirs}", _same)

    def conv_bn(self, key: str, scope: _Scope) -> None:
        """Our conv_bn Sequential (.0 conv, .1 BN)."""
        self.conv(f"{key}.0", scope.layer("conv2d"))
        self.bn(f"{key}.1", scope.layer("batch_normalization"))

    def block(self, key: str, block: Bottleneck, scope: _Scope) -> None:
        if isinstance(block.shortcut, nn.Sequential):
            self.conv(f"{key}.shortcut.conv", scope.layer("conv2d"))
            self.bn(f"{key}.shortcut.bn", scope.layer("batch_normalization"))
        self.conv(f"{key}.conv1", scope.layer("conv2d"))
        self.bn(f"{key}.bn1", scope.layer("batch_normalization"))
        if block.sk is not None:
            if block.sk.kind != "sk_dagger":
                raise WeightsError("the official code has SK-dagger only (one 3x3 conv to 2C); this model uses "
                                   f"{block.sk.kind!r}")
            self.conv_bn(f"{key}.sk.paths.0", scope)
            sk = scope.child(scope.layer("sk_block").rsplit("/", 1)[1])
            self.conv(f"{key}.sk.fuse.0", f"{sk.path}/sk_fc_1")
            self.bn(f"{key}.sk.fuse.1", sk.layer("batch_normalization"))
            self.conv(f"{key}.sk.select", f"{sk.path}/sk_fc_2")
        else:
            self.conv(f"{key}.conv2", scope.layer("conv2d"))
            self.bn(f"{key}.bn2", scope.layer("batch_normalization"))
        self.conv(f"{key}.conv3", scope.layer("conv2d"))
        self.bn(f"{key}.bn3", scope.layer("batch_normalization"))
        if isinstance(block.se, SqueezeExcite):
            se = scope.layer("se_block")
            self.conv(f"{key}.se.reduce", f"{se}/seblock_dense_1")
            self.conv(f"{key}.se.expand", f"{se}/seblock_dense_2")

    def blocks(self, key: str, blocks: nn.Sequential, scope: _Scope) -> None:
        for i, b in enumerate(blocks):
            self.block(f"{key}.{i}", b, scope)


def official_names(model: ResNet) -> dict[str, Tensor]:
    """Our state_dict key -> the official variable, for every parameter and BN statistic of `model`."""
    cfg = model.config
    if cfg.block != "bottleneck":
        raise WeightsError("the official code builds bottleneck ResNets only (depth 50 and up)")
    walk = _Walk()
    root = _Scope(ROOT)
    stem = model.stem
    if cfg.big_little:
        if stem.deep is not None:
            raise WeightsError("no zoo model has a deep stem with Big-Little (the official final models do not)")
        # The stem conv and its BN sit in two scopes both opened as "stage0" (TF names the second stage0_1).
        walk.conv("stem.conv1", root.child("stage0").layer("conv2d"))
        walk.bn("stem.bn1", root.child("stage0_1").layer("batch_normalization"))
        pool = root.child("stage0/pool")
        walk.conv_bn("stem.big", pool)
        for i in range(3):
            walk.conv_bn(f"stem.little.{i}", pool)
        walk.conv_bn("stem.merge", pool)
    elif stem.deep is not None:
        for i in range(3):
            walk.conv_bn(f"stem.deep.{i}", root)
    else:
        walk.conv("stem.conv1", root.layer("conv2d"))
        walk.bn("stem.bn1", root.layer("batch_normalization"))
    for i, stage in enumerate(model.stages):
        key = f"stages.{i}"
        if isinstance(stage, BigLittleStage):
            scope = root.child(f"stage{i + 1}")
            walk.blocks(f"{key}.big", stage.big, scope.child(f"big{i + 1}"))
            little = scope.child(f"little{i + 1}")
            walk.blocks(f"{key}.little", stage.little, little)
            walk.conv_bn(f"{key}.little_proj", little)
            walk.block(f"{key}.merge", stage.merge, scope.child(f"merge{i + 1}"))
        elif cfg.big_little:
            walk.blocks(key, stage, root.child(f"stage{i + 1}"))
        else:
            walk.blocks(key, stage, root)
    if cfg.embedding_dim:
        walk.names["embedding.0.weight"] = Tensor(f"{ROOT}/embedding_dense/kernel", _dense)
        walk.bn("embedding.1", f"{ROOT}/embedding_dense_batch_normalization")
    if cfg.num_classes:
        if cfg.head != "linear":
            raise WeightsError("the official classifier is a linear layer; use head=linear")
        walk.names["fc.weight"] = Tensor(f"{ROOT}/dense/kernel", _dense)
        walk.names["fc.bias"] = Tensor(f"{ROOT}/dense/bias", _same)
    return walk.names


def _model_variables(shapes: dict[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
    """The variables that make the network (not the optimizer's slots or the step counter)."""
    return {n: s for n, s in shapes.items()
            if n.startswith(f"{ROOT}/") and not n.endswith(("/Momentum", "/ExponentialMovingAverage"))
            and "/Adam" not in n}


def read_head(shapes: dict[str, tuple[int, ...]]) -> dict:
    """What the variables show beyond the architecture: width, classes, embedding size."""
    stem = shapes.get(f"{ROOT}/conv2d/kernel") or shapes.get(f"{ROOT}/stage0/conv2d/kernel")
    if stem is None:
        raise WeightsError(f"the checkpoint has no {ROOT}/conv2d/kernel or {ROOT}/stage0/conv2d/kernel: it is not "
                           f"a clovaai/assembled-cnn ResNet")
    deep = stem[0] == 3 and f"{ROOT}/stage0/conv2d/kernel" not in shapes
    # the stem's width: the last deep-stem conv's output (the third conv), or the 7x7 conv's
    width = shapes[f"{ROOT}/conv2d_2/kernel"][3] if deep else stem[3]
    dense = shapes.get(f"{ROOT}/dense/kernel")
    emb = shapes.get(f"{ROOT}/embedding_dense/kernel")
    return {"width": width / 64, "num_classes": dense[1] if dense else 0, "embedding_dim": emb[3] if emb else 0}


def build(arch: str, head: dict, *, pool: str | None = None) -> ResNet:
    """The zoo model the official variables describe, on the meta device (no memory, no init)."""
    overrides = official_overrides(arch, head, pool)
    with torch.device("meta"):
        return ResNet(resolve_config(arch, **overrides), init_weights=False)


def official_overrides(arch: str, head: dict, pool: str | None) -> dict:
    overrides: dict = {"num_classes": head["num_classes"], "pooling": "tf"}
    if head["width"] != 1:
        overrides["width"] = head["width"]
    if head["embedding_dim"]:
        # The official graph puts a ReLU between the embedding BN and the classifier (and embeds the BN output).
        overrides.update(embedding_dim=head["embedding_dim"], embedding_relu=True)
    if pool:
        overrides["pool"] = pool
    base = resolve_config(arch)
    return {k: v for k, v in overrides.items() if getattr(base, k) != v or k == "pooling"}


def differences(names: dict[str, Tensor], shapes: dict[str, tuple[int, ...]],
                own: dict[str, torch.Tensor]) -> tuple[list[str], list[str], list[str]]:
    """The official variables `names` wants that are missing, those it does not want, and misshapen ones."""
    wanted = {t.variable: k for k, t in names.items()}
    wrong = [f"{v} {shapes[v]} vs {tuple(own[k].shape)}" for v, k in wanted.items() if v in shapes
             and tuple(names[k].layout(np.empty(shapes[v], np.float32)).shape) != tuple(own[k].shape)]
    return [v for v in wanted if v not in shapes], sorted(shapes.keys() - wanted.keys()), wrong


def infer_architecture(shapes: dict[str, tuple[int, ...]], *, pool: str | None = None) -> str:
    """The first zoo architecture whose official layout has exactly these variables and shapes."""
    head = read_head(shapes)
    for arch in ARCHITECTURES:
        try:
            model = build(arch, head, pool=pool)
            if not any(differences(official_names(model), shapes, model.state_dict())):
                return arch
        except WeightsError:
            continue
    raise WeightsError(f"the checkpoint's {len(shapes)} variables match no zoo architecture the official code "
                       f"builds ({', '.join(ARCHITECTURES)}); pass --arch NAME to see the first difference")


def convert(checkpoint, arch: str | None = None, *, pool: str | None = None) -> tuple[ResNet, dict]:
    """Read an official checkpoint into a zoo model; returns the model (eval mode) and sidecar extras."""
    from ..models import create_model
    from . import mismatch

    shapes = _model_variables(checkpoint.shapes())
    head = read_head(shapes)
    if arch is None:
        arch = infer_architecture(shapes, pool=pool)
    elif arch not in ARCHITECTURES:
        get_spec(arch)  # an unknown name fails with suggestions
        raise WeightsError(f"the official code cannot build {arch}; it builds {', '.join(ARCHITECTURES)}")
    model = create_model(arch, init_weights=False, **official_overrides(arch, head, pool))
    names = official_names(model)
    own = model.state_dict()
    mismatch(f"{checkpoint.prefix.name} is not an official {arch}", *differences(names, shapes, own))
    state = {k: own[k] for k in own if k.endswith("num_batches_tracked")}  # not in TF, unused in evaluation
    for key, t in names.items():
        state[key] = torch.from_numpy(np.ascontiguousarray(t.layout(checkpoint.read(t.variable)), np.float32))
    model.load_state_dict(state, strict=True)
    imagenet = head["num_classes"] == IMAGENET_CLASSES + 1
    if imagenet:  # 1001 outputs: index 0 is the unused background class, 1..1000 the sorted synsets
        weight, bias = model.fc.weight.data[1:].clone(), model.fc.bias.data[1:].clone()
        model.reset_classifier(IMAGENET_CLASSES)
        model.fc.weight.data.copy_(weight)
        model.fc.bias.data.copy_(bias)
        model.overrides["num_classes"] = IMAGENET_CLASSES
    spec = get_spec(arch).input
    # The official preprocessing: RGB in 0-255 minus the ImageNet mean, no division; the zoo's sizes.
    model.input_spec = dataclasses.replace(spec, mean=PAPER_MEAN, std=PAPER_STD)
    step = None
    if "global_step" in checkpoint.entries:
        step = int(checkpoint.read("global_step").reshape(-1)[0])
    return model.eval(), {"input": model.input_spec, "class_names": imagenet_synsets() if imagenet else None,
                          "step": step}
