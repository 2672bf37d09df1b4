"""Making a model: `create_model` from a zoo name, `load_model` from a weights file, and `preprocessing`, the
evaluation transform a model, a weights file or a run records.

    model = transfer.create_model("assemble_resnet50", num_classes=196)
    model = transfer.load_model("runs/finetune-cars/weights/best.safetensors")
    prep = transfer.preprocessing("runs/finetune-cars")    # a run, a weights file or a model
    logits = model(prep(Image.open("car.jpg"))[None])       # or model(model.preprocess(image)[None])

The paper's recipes (and the official checkpoints) normalise by subtracting the mean on a 0-255 scale, and
Big-Little evaluates at 256 from 292: a hand-written torchvision pipeline is silently wrong for them, this
one is not.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
from torch import nn

from ..data.transforms import InputSpec
from ..errors import UnknownNameError, WeightsError, suggest
from . import hub
from .resnet import ResNet
from .weights import SIDECAR_FORMAT, load_weights, read_metadata, sidecar_path
from .zoo import get_spec, resolve_config


def create_model(name: str, *, weights: str | Path | None = None, pretrained: bool = False,
                 restore_bn_stats: bool = True, init_weights: bool | None = None, **overrides) -> ResNet:
    """Build a named model, with any ResNetConfig field overridden; optionally load weights.

    `weights`: a weights file, or torchvision's name of its weights for this model ("IMAGENET1K_V2",
    "DEFAULT"); `pretrained=True`: the default published weights (torchvision's, else timm's). Named weights
    are read from the torch hub / HuggingFace cache (models/hub.py), with the preprocessing they were made
    for. The official initialisation is skipped when weights are given (they supply every conv and BN; a new
    classifier or embedding layer is initialised as usual), or when `init_weights=False`.

    >>> m = create_model("assemble_resnet_tiny", num_classes=10)
    >>> m(torch.zeros(2, 3, 64, 64)).shape
    torch.Size([2, 10])
    """
    spec = get_spec(name).input
    if pretrained or hub.is_tag(weights):
        weights, prep = hub.published(name, weights if hub.is_tag(weights) else None)
        spec = dataclasses.replace(spec, **prep)
    init = weights is None if init_weights is None else init_weights
    model = ResNet(resolve_config(name, **overrides), init_weights=init)
    model.arch, model.overrides, model.input_spec = name, dict(overrides), spec
    if weights is not None:
        load_weights(model, weights, restore_bn_stats=restore_bn_stats)
    return model


def load_model(path: str | Path, **overrides) -> ResNet:
    """Rebuild a model from a weights file alone (its sidecar or header names the architecture), with the
    preprocessing the weights were trained with, which may differ from the zoo's."""
    meta = read_metadata(path)
    if meta.get("format") != SIDECAR_FORMAT:
        raise WeightsError(f"{sidecar_path(path)} is not a transfer weights sidecar (format "
                           f"{meta.get('format')!r}, expected {SIDECAR_FORMAT!r})")
    kwargs = {**meta.get("overrides", {}), "num_classes": meta["num_classes"], **overrides}
    model = create_model(meta["architecture"], init_weights=False, **kwargs)
    load_weights(model, path)
    model.weights_metadata = meta
    if "input" in meta:
        model.input_spec = InputSpec.from_dict(meta["input"])
    return model


def preprocessing(source: nn.Module | str | Path):
    """A callable: a PIL image or a uint8 (3, H, W) tensor -> the float (3, h, w) tensor the model takes."""
    if isinstance(source, ResNet):
        return source.input_spec.eval_transform()
    if isinstance(source, nn.Module):
        raise TypeError("this model is not a transfer ResNet: build it with transfer.create_model or load_model")
    from ..runs import resolve_weights

    return InputSpec.from_dict(read_metadata(resolve_weights(source))["input"]).eval_transform()


def build_for_benchmark(name: str) -> torch.nn.Module:
    """A zoo model, or `torchvision:NAME` for torchvision's own model as a reference point."""
    if name.startswith("torchvision:"):
        import torchvision

        tv_name = name.split(":", 1)[1]
        builders = [n for n in torchvision.models.list_models(module=torchvision.models)]
        if tv_name not in builders:
            raise UnknownNameError(f"unknown torchvision model {tv_name!r}{suggest(tv_name, builders)}")
        return torchvision.models.get_model(tv_name, weights=None)
    return create_model(name)
