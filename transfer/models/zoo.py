"""Named variants: the architecture column of the paper's Tables 2, 6 and 7, each a few settings of ResNet.

`transfer.create_model(name, **overrides)` (models/factory.py) builds them.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field

import torch

from ..data.transforms import InputSpec
from ..errors import ConfigError, UnknownNameError, suggest
from .resnet import ResNet, ResNetConfig

# The paper evaluates Big-Little models at 256 px (292 -> 256) while training them at 224 (row E9).
BIG_LITTLE_INPUT = InputSpec(eval_resolution=256, eval_resize=292)


@dataclass(frozen=True)
class ModelSpec:
    name: str
    config: dict
    paper: str  # rows of arXiv 2001.06268 this model is
    description: str
    input: InputSpec = field(default_factory=InputSpec)


_D = {"stem": "deep", "shortcut": "avg2"}  # ResNet-D (row E1/M1)
_SK = {"selective_kernel": "sk_dagger", "sk_reduction": 2}  # SK-dagger, r=2 (Table 2, C3)
# Final models: no deep stem (Big-Little training was unstable with it); the bL 3x3 avg-pool shortcut
# supplies the "D" (section 3.1).
_BL = {"big_little": True, "bl_alpha": 2, "bl_beta": 4, "stem": "classic", "shortcut": "avg3"}
_DB = {"drop_block": True}  # DropBlock in stages 3-4 (rows E5+); identity until keep_prob < 1
# The networks whose only trained weights are the authors' pool as the official TF graph does (see
# ResNetConfig.pooling and docs/architecture.md); names shared with torchvision and timm pool as they do,
# so that their weights keep their function.
_TF = {"pooling": "tf"}

_SPECS = [
    ModelSpec("resnet18", {"depth": 18}, "-", "ResNet-18"),
    ModelSpec("resnet26", {"depth": 26}, "-", "ResNet-26 (bottleneck, [2,2,2,2])"),
    ModelSpec("resnet34", {"depth": 34}, "-", "ResNet-34"),
    ModelSpec("resnet50", {"depth": 50}, "E0 M0 C0", "ResNet-50 v1.5, the baseline"),
    ModelSpec("resnet101", {"depth": 101}, "-", "ResNet-101"),
    ModelSpec("resnet152", {"depth": 152}, "-", "ResNet-152"),
    ModelSpec("resnet50_se", {"depth": 50, "se": True}, "C1", "ResNet-50 + SE (r=16)"),
    ModelSpec("resnet50_sk", {"depth": 50, "selective_kernel": "sk", "sk_reduction": 2}, "C2",
              "ResNet-50 + SK (3x3 + dilated 3x3, r=2)"),
    ModelSpec("resnet50_sk_dagger", {"depth": 50, **_SK}, "C3", "ResNet-50 + SK-dagger (r=2)"),
    ModelSpec("resnet50_sk_dagger_r16", {"depth": 50, **_SK, "sk_reduction": 16}, "C4",
              "ResNet-50 + SK-dagger (r=16)"),
    ModelSpec("resnet50_sk_se", {"depth": 50, "selective_kernel": "sk", "sk_reduction": 2, "se": True}, "C5",
              "ResNet-50 + SK + SE"),
    ModelSpec("resnet26d", {"depth": 26, **_D}, "-", "ResNet-26-D"),
    ModelSpec("resnet50d", {"depth": 50, **_D}, "E1-E3 M1", "ResNet-50-D"),
    ModelSpec("resnet101d", {"depth": 101, **_D}, "-", "ResNet-101-D"),
    ModelSpec("resnet152d", {"depth": 152, **_D}, "-", "ResNet-152-D"),
    ModelSpec("resnet50d_se", {"depth": 50, **_D, "se": True, **_DB, **_TF}, "E4 E5", "ResNet-50-D + SE"),
    ModelSpec("resnet50d_sk", {"depth": 50, **_D, **_SK, **_DB, **_TF}, "E6-E8 M2", "ResNet-50-D + SK"),
    ModelSpec("resnet50d_sk_bl", {"depth": 50, **_BL, **_SK, **_DB, **_TF}, "E9 M3",
              "ResNet-50-D + SK + Big-Little", BIG_LITTLE_INPUT),
    ModelSpec("assemble_resnet50", {"depth": 50, **_BL, **_SK, **_DB, **_TF, "anti_alias": True}, "E10 E11 M4",
              "Assemble-ResNet-50: D + SK + Big-Little + anti-alias", BIG_LITTLE_INPUT),
    # R152: alpha=1, beta=2 (section 3.1); evaluated 257 -> 256 in the official README.
    ModelSpec("assemble_resnet152", {"depth": 152, **_BL, "bl_alpha": 1, "bl_beta": 2, **_SK, **_DB, **_TF,
                                     "anti_alias": True}, "E12",
              "Assemble-ResNet-152: D + SK + Big-Little (a=1, b=2) + anti-alias",
              InputSpec(eval_resolution=256, eval_resize=257)),
    # Small models for CPU demos and tests: a quarter of the width, two blocks per stage, 64 px inputs.
    ModelSpec("resnet_tiny", {"depth": 26, "width": 0.25}, "-", "plain ResNet-26 at 1/4 width (CPU demos)",
              InputSpec(64, 64, 73)),
    ModelSpec("assemble_resnet_tiny", {"depth": 26, "width": 0.25, **_BL, **_SK, **_DB, "anti_alias": True,
                                       "sk_min_dim": 8}, "-",
              "Assemble-ResNet-26 at 1/4 width (CPU demos)", InputSpec(64, 64, 73)),
]
MODELS: dict[str, ModelSpec] = {s.name: s for s in _SPECS}
CONFIG_KEYS = tuple(f.name for f in dataclasses.fields(ResNetConfig))


def list_models() -> list[str]:
    return list(MODELS)


def get_spec(name: str) -> ModelSpec:
    try:
        return MODELS[name]
    except KeyError:
        raise UnknownNameError(
            f"unknown model {name!r}{suggest(name, MODELS)}; `transfer models` lists them all") from None


def resolve_config(name: str, **overrides) -> ResNetConfig:
    spec = get_spec(name)
    for key in overrides:
        if key not in CONFIG_KEYS:
            raise ConfigError(f"unknown model option {key!r} for {name}{suggest(key, CONFIG_KEYS)}")
    return ResNetConfig(**{**spec.config, **overrides})


def smallest_input(config: ResNetConfig, resolutions: dict[str, int]) -> str | None:
    """What is wrong with running `config` at these input sizes ({"augment.train_resolution": 16, ...}), or None.

    Shapes only: the model is built on the meta device (no memory, no arithmetic) and run once per size.
    """
    with torch.device("meta"):
        model = ResNet(config, init_weights=False).eval()

    def runs(r: int) -> bool:
        try:
            with torch.no_grad():
                model(torch.empty(1, 3, r, r, device="meta"))
        except RuntimeError:
            return False
        return True

    for key, r in resolutions.items():
        if r is not None and not runs(r):
            least = next((s for s in range(r + 8, 1025, 8) if runs(s)), None)
            fix = f"use at least {least}" if least else "use a larger size"
            return f"{key}={r}: the network's feature maps become too small at {r} px; {fix}"
    return None


def tweaks(config: ResNetConfig) -> list[str]:
    """The paper's tweaks a configuration uses, in the vocabulary of `transfer models --format json`."""
    out = []
    if config.stem == "deep" or config.shortcut != "conv":
        out.append("resnet_d")
    if config.se:
        out.append("se")
    if config.selective_kernel:
        out.append(config.selective_kernel)
    if config.big_little:
        out.append("big_little")
    if config.anti_alias:
        out.append("anti_alias")
    return out


@functools.lru_cache(maxsize=256)
def model_stats(name: str, resolution: int = 224, **overrides) -> dict:
    """Parameters and multiply-accumulates (convolutions and linear layers) at `resolution` px.

    Built on the meta device, so no memory is allocated and no arithmetic runs; still, tracing a forward pass
    takes a while for the deep models, so a process counts each (name, resolution, overrides) once.
    The dict is shared: copy it before changing it.
    """
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        model = ResNet(resolve_config(name, **overrides), init_weights=False).eval()
        x = torch.empty(1, model.config.in_chans, resolution, resolution)
    params = sum(p.numel() for p in model.parameters())
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(x)
    return {"params": params, "macs": counter.get_total_flops() // 2}


def describe(name: str) -> dict:
    """One row of `transfer models`."""
    spec = get_spec(name)
    cfg = resolve_config(name)
    stats = model_stats(name)
    return {
        "name": name,
        "depth": cfg.depth,
        "tweaks": tweaks(cfg),
        "params": stats["params"],
        "macs": stats["macs"],
        "resolution": {"train": spec.input.train_resolution, "eval": spec.input.eval_resolution},
        "paper": spec.paper,
        "description": spec.description,
    }
