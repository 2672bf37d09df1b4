"""Weights files: safetensors + a JSON sidecar that says what the weights are and how to feed them.

A file `NAME.safetensors` comes with `NAME.json` (architecture, overrides, input normalisation, classes).
The same JSON is stored in the safetensors header too, so the weights file alone rebuilds its model.
Pickled files (torchvision state_dicts, training checkpoints) are only read with weights_only=True.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes
from torch import nn

from ..errors import WeightsError
from ..files import OutputError, atomic_write_bytes

log = logging.getLogger("transfer")

SIDECAR_FORMAT = "transfer.weights/1"
# Layers a fine-tuning model adds on top of a backbone: they load only when the file has the very same layer.
_NEW_LAYERS = (("fc.", "classifier"), ("embedding.", "embedding layer"))


def _describe(state: dict, keys: set[str], prefix: str) -> str:
    weight = state.get(f"{prefix}weight", state.get(f"{prefix}0.weight"))
    if prefix == "fc." and weight is not None:
        return f"{weight.shape[0]} classes in the file"
    return f"{weight.shape[0]}-d in the file" if weight is not None else f"{len(keys)} tensors in the file"
_BN_STATS = ("running_mean", "running_var", "num_batches_tracked")


def sidecar_path(path: str | Path) -> Path:
    return Path(path).with_suffix(".json")


def model_metadata(model: nn.Module, **extra) -> dict:
    """The sidecar's content for a model made by create_model."""
    arch = getattr(model, "arch", None)  # a ResNet declares it; any other module has no zoo name
    if arch is None:
        raise WeightsError("this model was not made by create_model, so its weights cannot describe it; "
                           "build it with transfer.create_model(name, ...)")
    meta = {
        "format": SIDECAR_FORMAT,
        "architecture": arch,
        "overrides": _jsonable(model.overrides),
        "num_classes": model.num_classes,
        "num_features": model.num_features,
        "params": sum(p.numel() for p in model.parameters()),
        "input": model.input_spec.to_dict(),
    }
    meta.update(_jsonable(extra))
    return meta


def save_weights(model: nn.Module, path: str | Path, **extra) -> Path:
    """Save `model`'s state as safetensors with its sidecar; `extra` (class names, recipe hash) joins the sidecar.

    Both files are written atomically, the weights first. A sidecar that cannot be written after them is
    removed, so that the copy of it in the weights' header (which read_metadata falls back to) describes
    them: a failed save never leaves an old sidecar beside new weights.
    """
    path = Path(path)
    if path.suffix != ".safetensors":
        raise WeightsError(f"weights path {path} must end in .safetensors")
    meta = model_metadata(model, **extra)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    atomic_write_bytes(path, safetensors_bytes(state, metadata={"transfer": json.dumps(meta)}))
    try:
        atomic_write_bytes(sidecar_path(path), (json.dumps(meta, indent=2) + "\n").encode())
    except OutputError:
        sidecar_path(path).unlink(missing_ok=True)
        raise
    return path


def read_metadata(path: str | Path) -> dict:
    """The sidecar of a weights file (or the copy in its safetensors header when the sidecar is gone)."""
    path = Path(path)
    side = sidecar_path(path)
    if side.is_file():
        try:
            return json.loads(side.read_text())
        except json.JSONDecodeError as e:
            raise WeightsError(f"sidecar {side} is not valid JSON ({e}); delete it to use the copy in "
                               f"{path.name}'s header") from None
    if path.suffix == ".safetensors" and path.is_file():
        from safetensors import safe_open

        try:
            with safe_open(str(path), "pt") as f:
                header = (f.metadata() or {}).get("transfer")
        except (SafetensorError, OSError) as e:
            raise WeightsError(f"{path} is not a readable safetensors file ({e})") from None
        if header:
            return json.loads(header)
    raise WeightsError(f"{path} has no sidecar {side.name} and no description in its header, so its "
                       f"architecture is unknown; use create_model(NAME, weights='{path}')")


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors from a .safetensors file or a pickled state_dict / checkpoint (read with weights_only)."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file {path} does not exist")
    if path.suffix == ".safetensors":
        try:
            return load_file(str(path))
        except (SafetensorError, OSError) as e:
            raise WeightsError(f"{path} is not a readable safetensors file ({e})") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle, zip and weights_only errors all mean the same thing to the user
        raise WeightsError(f"{path} is not a readable PyTorch state_dict ({type(e).__name__}: "
                           f"{str(e).splitlines()[0] if str(e) else ''}); save weights with "
                           f"torch.save(model.state_dict(), path)") from None
    for key in ("state_dict", "model", "model_state"):  # common checkpoint wrappers
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"{path} does not hold a state_dict (a dict of tensors)")
    return {k.removeprefix("module.").removeprefix("_orig_mod."): v for k, v in obj.items()}


_TV_BLOCK = re.compile(r"^layer(\d)\.(\d+)\.(.*)$")
# timm's deep stem (resnet50d & co.): conv1 is a Sequential of conv, BN, ReLU, conv, BN, ReLU, conv; bn1 follows.
_TIMM_DEEP_STEM = {"conv1.0.": "stem.deep.0.0.", "conv1.1.": "stem.deep.0.1.", "conv1.3.": "stem.deep.1.0.",
                   "conv1.4.": "stem.deep.1.1.", "conv1.6.": "stem.deep.2.0.", "bn1.": "stem.deep.2.1."}


def from_torchvision(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a torchvision or timm ResNet state_dict to this package's module names.

    timm adds to torchvision's names the deep stem (`conv1.N`), the avg-pool shortcut (`downsample.0` is
    the pool, so the conv and BN are `.1` and `.2`) and SE (`se.fc1`, `se.fc2`).
    """
    deep = "conv1.0.weight" in state
    out = {}
    for key, value in state.items():
        new = key
        if deep and (prefix := next((p for p in _TIMM_DEEP_STEM if key.startswith(p)), None)):
            new = _TIMM_DEEP_STEM[prefix] + key[len(prefix):]
        elif key.startswith(("conv1.", "bn1.")):
            new = "stem." + key
        elif m := _TV_BLOCK.match(key):
            stage, block, rest = int(m.group(1)) - 1, m.group(2), m.group(3)
            avg_down = f"layer{stage + 1}.{block}.downsample.2.weight" in state
            conv, bn = ("downsample.1.", "downsample.2.") if avg_down else ("downsample.0.", "downsample.1.")
            rest = rest.replace(conv, "shortcut.conv.").replace(bn, "shortcut.bn.")
            rest = rest.replace("se.fc1.", "se.reduce.").replace("se.fc2.", "se.expand.")
            new = f"stages.{stage}.{block}.{rest}"
        out[new] = value
    return out


def is_torchvision_layout(state: dict) -> bool:
    """torchvision's ResNet names, or timm's (the same names plus a deep stem, avg-pool shortcuts, SE)."""
    return ("conv1.weight" in state or "conv1.0.weight" in state) and any(k.startswith("layer1.") for k in state)


def load_weights(model: nn.Module, path: str | Path, *, restore_bn_stats: bool = True,
                 new_head: bool = False) -> nn.Module:
    """Load a weights file into `model`, in place.

    A classifier for another number of classes is skipped (the model keeps its fresh head, and says so: a
    warning, or with `new_head` (a fine-tuning run, which expects it) one line of information).
    `restore_bn_stats=False` keeps the model's BN running statistics, as the paper's warm start did.
    Any other mismatch fails, naming the first missing and unexpected keys.
    """
    state = read_state_dict(path)
    if is_torchvision_layout(state):
        state = from_torchvision(state)
    own = model.state_dict()
    for prefix, what in _NEW_LAYERS:
        theirs = {k for k in state if k.startswith(prefix)}
        mine = {k for k in own if k.startswith(prefix)}
        if theirs == mine and all(state[k].shape == own[k].shape for k in mine):
            continue  # the same layer: load it
        # another classifier (class count, cosine vs linear) or another embedding: keep the model's fresh one
        if theirs and new_head:
            size = own[f"{prefix}weight"].shape[0] if f"{prefix}weight" in own else len(mine)
            log.info("new %s (%s) on the backbone from %s (%s)", what, f"{size} classes" if prefix == "fc." else
                     f"{size}-d", path, _describe(state, theirs, prefix))
        elif theirs:
            log.warning("%s: its %s does not fit the model (%s): loaded the rest and re-initialised it",
                        Path(path).name, what, _describe(state, theirs, prefix))
        for k in theirs:
            state.pop(k)
        state.update({k: own[k] for k in mine})
    if not restore_bn_stats:
        state = {k: v for k, v in state.items() if not k.endswith(_BN_STATS)}
        state.update({k: v for k, v in own.items() if k.endswith(_BN_STATS)})
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shape = [k for k in own if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or shape:
        arch = getattr(model, "arch", type(model).__name__)
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys (first: {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys (first: {', '.join(unexpected[:3])})")
        if shape:
            k = shape[0]
            parts.append(f"{len(shape)} shape mismatches (first: {k} {tuple(state[k].shape)} in file vs "
                         f"{tuple(own[k].shape)} in model)")
        raise WeightsError(f"{path} does not fit model {arch}: {'; '.join(parts)}; check the architecture "
                           f"the weights were saved from (their .json sidecar names it)")
    model.load_state_dict(state, strict=True)
    return model


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    return obj
