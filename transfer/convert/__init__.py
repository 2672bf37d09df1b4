"""`transfer convert`: weights people can start from, as weights files of this package.

Three sources, one output (safetensors + sidecar, loadable by `transfer.load_model`):
- `official`: a TensorFlow checkpoint of clovaai/assembled-cnn (convert/official.py, read by
  convert/tf_bundle.py);
- `timm` and `torchvision`: a ResNet state_dict (.pth or .safetensors) in their module names.
The architecture is inferred from the file's variables, or given and checked.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from pathlib import Path

import torch

from ..errors import ConfigError, WeightsError
from ..models import create_model
from ..models.resnet import BASIC_LAYERS, BOTTLENECK_LAYERS
from ..models.weights import from_torchvision, is_torchvision_layout, read_state_dict, save_weights
from ..models.zoo import MODELS, get_spec

FORMATS = ("official", "timm", "torchvision")


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


_BLOCK = re.compile(r"^stages\.(\d)\.(\d+)\.")


def torch_overrides(state: dict[str, torch.Tensor]) -> dict:
    """What a torchvision / timm state_dict (in our names) fixes beyond the architecture."""
    overrides: dict = {"num_classes": state["fc.weight"].shape[0] if "fc.weight" in state else 0,
                       "pooling": "torch"}  # torchvision's and timm's pooling, whatever the zoo's default
    if any(k.endswith(".se.reduce.bias") for k in state):
        overrides["se_bias"] = True  # timm's SE convs have biases
    return overrides


def infer_torch_architecture(state: dict[str, torch.Tensor]) -> str:
    """The zoo name of a torchvision / timm ResNet state_dict (in our names), from its keys."""
    blocks = [0, 0, 0, 0]
    for key in state:
        if m := _BLOCK.match(key):
            stage = int(m.group(1))
            blocks[stage] = max(blocks[stage], int(m.group(2)) + 1)
    bottleneck = "stages.0.0.conv3.weight" in state
    table = BOTTLENECK_LAYERS if bottleneck else BASIC_LAYERS
    depth = next((d for d, layers in table.items() if list(layers) == blocks), None)
    deep = "stem.deep.0.0.weight" in state
    se = any(".se.reduce." in k for k in state)
    name = f"resnet{depth}" + ("d" if deep else "") + ("_se" if se else "")
    if depth is None or name not in MODELS:
        raise WeightsError(f"the file holds a {'bottleneck' if bottleneck else 'basic-block'} ResNet with blocks "
                           f"{blocks}{', a deep stem' if deep else ''}{', SE' if se else ''}, which no zoo "
                           f"architecture is; `transfer models` lists them")
    return name


def _load_torch(path: Path, arch: str | None) -> tuple[torch.nn.Module, dict]:
    state = read_state_dict(path)
    if not is_torchvision_layout(state):
        raise WeightsError(f"{path} does not hold a torchvision or timm ResNet state_dict (no conv1 and layer1 "
                           f"keys)")
    state = from_torchvision(state)
    arch = arch or infer_torch_architecture(state)
    overrides = torch_overrides(state)
    model = create_model(arch, init_weights=False, **overrides)
    own = model.state_dict()
    for k, v in own.items():
        if k.endswith("num_batches_tracked"):
            state.setdefault(k, v)
    check_keys(state, own, f"{path.name} is not a {arch}")
    model.load_state_dict(state, strict=True)
    classes = None
    if overrides["num_classes"] == 1000:
        from .official import imagenet_synsets

        classes = imagenet_synsets()  # torchvision's and timm's ImageNet classes are the sorted synsets
    return model.eval(), {"input": get_spec(arch).input, "class_names": classes}


def check_keys(state: dict, own: dict, what: str) -> None:
    """Fail in one line naming the first missing, unexpected and misshapen entry."""
    mismatch(what, [k for k in own if k not in state], [k for k in state if k not in own],
             [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in own
              if k in state and tuple(state[k].shape) != tuple(own[k].shape)])


def mismatch(what: str, missing: list[str], unexpected: list[str], shapes: list[str]) -> None:
    if missing or unexpected or shapes:
        parts = [f"{len(v)} {kind} (first: {v[0]})" for kind, v in
                 (("missing", missing), ("unexpected", unexpected), ("shape mismatches", shapes)) if v]
        raise WeightsError(f"{what}: {'; '.join(parts)}; leave out --arch to infer the architecture")


def convert(fmt: str, source: str | Path, out: str | Path, *, arch: str | None = None, pool: str | None = None,
            input_overrides: dict | None = None, force: bool = False) -> Path:
    """Convert `source` (a checkpoint of format `fmt`) into the weights file `out` (.safetensors + .json).

    >>> convert("official", "Assemble-ResNet50/checkpoint", "assemble_resnet50.safetensors")  # doctest: +SKIP
    """
    if fmt not in FORMATS:
        raise ConfigError(f"unknown source format {fmt!r}; choose one of {', '.join(FORMATS)}")
    out = Path(out)
    if out.suffix != ".safetensors":
        raise ConfigError(f"--out {out} must end in .safetensors (a sidecar {out.with_suffix('.json').name} goes "
                          f"beside it)")
    if not force and (out.exists() or out.with_suffix(".json").exists()):
        raise ConfigError(f"{out} already exists; pass --force to replace it, or choose another --out")
    if pool is not None and fmt != "official":
        raise ConfigError("--pool applies to official checkpoints only (a torchvision or timm file pools as its "
                          "library does)")
    source = Path(source)
    if fmt == "official":
        from . import official
        from .tf_bundle import Checkpoint

        checkpoint = Checkpoint(source)
        model, extra = official.convert(checkpoint, arch, pool=pool)
        files = checkpoint.files()
    else:
        if not source.is_file():
            raise WeightsError(f"{source} is not a file; pass a {fmt} state_dict (.pth or .safetensors)")
        model, extra = _load_torch(source, arch)
        files = [source]
    model.input_spec = dataclasses.replace(extra["input"], **(input_overrides or {}))
    provenance = {"format": fmt, "files": [{"name": f.name, "sha256": sha256(f)} for f in files]}
    if extra.get("step") is not None:
        provenance["step"] = extra["step"]
    sidecar = {"source": provenance}
    if extra.get("class_names"):
        sidecar["class_names"] = extra["class_names"]
    made = [p for p in (out, out.with_suffix(".json")) if not p.exists()]
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        save_weights(model, out, **sidecar)
    except BaseException as e:
        for p in made:  # the weights without their sidecar would be half an output
            if p.is_file():
                p.unlink()
        if isinstance(e, OSError):
            raise WeightsError(f"cannot write {out}: {e.strerror or e}; choose another --out") from None
        raise
    return out
