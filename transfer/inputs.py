"""The exact evaluation preprocessing of a model, a weights file or a run: what its sidecar records.

    prep = transfer.preprocessing("runs/finetune-cars")   # a run, a weights file or a model
    logits = model(prep(Image.open("car.jpg"))[None])      # or model(model.preprocess(image)[None])

The paper's recipes (and the official checkpoints) normalise by subtracting the mean on a 0-255 scale, and
Big-Little evaluates at 256 from 292: a hand-written torchvision pipeline is silently wrong for them, this
one is not.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .data.transforms import eval_transform, from_spec


def preprocessing(source: nn.Module | str | Path):
    """A callable: a PIL image or a uint8 (3, H, W) tensor -> the float (3, h, w) tensor the model takes."""
    if isinstance(source, nn.Module):
        spec = getattr(source, "input_spec", None)
        if spec is None:
            raise TypeError("this model has no input_spec: build it with transfer.create_model or load_model")
    else:
        from .models.weights import read_metadata
        from .models.zoo import InputSpec
        from .runs import resolve_weights

        meta = read_metadata(resolve_weights(source))
        spec = InputSpec(**{k: tuple(v) if isinstance(v, list) else v for k, v in meta["input"].items()})
    return eval_transform(from_spec(spec))


def preprocess(model: nn.Module, images) -> torch.Tensor:
    """One image -> (3, h, w); a list of images -> a batch (N, 3, h, w)."""
    t = preprocessing(model)
    if isinstance(images, list | tuple):
        return torch.stack([t(i) for i in images])
    return t(images)
