"""Published weights by name, read from the caches where torchvision and timm keep them: the torch hub cache
(`create_model("resnet50", weights="IMAGENET1K_V2")`, torchvision's weight names) and the HuggingFace hub cache
(`create_model("resnet50d", pretrained=True)`, timm's default tag). Nothing is downloaded: a file that is not
in its cache is one line that says what to download and where to put it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import urlparse

from ..errors import WeightsError

TAG = re.compile(r"^[A-Z][A-Z0-9_]*$")  # torchvision's weight names: IMAGENET1K_V1, IMAGENET1K_V2, DEFAULT


def is_tag(weights) -> bool:
    return isinstance(weights, str) and bool(TAG.match(weights)) and not Path(weights).exists()


def torchvision_file(name: str, tag: str) -> tuple[Path, dict] | None:
    """(the cached file, its preprocessing) of torchvision's weights `tag` of `name`; None: torchvision has no
    weights for `name`."""
    import torch
    from torchvision.models import get_model_weights

    try:
        enum = get_model_weights(name)
    except ValueError:
        return None
    if tag not in enum.__members__:
        raise WeightsError(f"torchvision has no weights {tag!r} for {name} (it has {', '.join(enum.__members__)})")
    w = enum[tag]
    path = Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(w.url).path).name
    if not path.is_file():
        raise WeightsError(f"{name} weights {tag} are not in the torch hub cache: download {w.url} to {path} "
                           f"(torch.hub.download_url_to_file does it; this package downloads nothing)")
    kw = getattr(w.transforms, "keywords", {})
    return path, {"eval_resolution": kw.get("crop_size", 224), "eval_resize": kw.get("resize_size", 256)}


def timm_file(name: str) -> tuple[Path, dict] | None:
    """(the cached file, its preprocessing) of timm's default pretrained weights of `name`; None: timm (or
    its entry for `name`) is not there."""
    try:
        import timm
    except ImportError:
        return None
    cfg = timm.models.get_pretrained_cfg(name)
    if cfg is None or not cfg.hf_hub_id:
        return None
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(cfg.hf_hub_id, "model.safetensors", cache_dir=os.environ.get("HF_HUB_CACHE"))
    if not isinstance(found, str):
        raise WeightsError(f"timm's {name} weights ({cfg.hf_hub_id}) are not in the HuggingFace cache: download "
                           f"them with `huggingface-cli download {cfg.hf_hub_id} model.safetensors` (this "
                           f"package downloads nothing)")
    crop = cfg.input_size[-1]
    return Path(found), {"eval_resolution": crop, "eval_resize": int(crop / cfg.crop_pct),
                         "interpolation": cfg.interpolation, "mean": tuple(cfg.mean), "std": tuple(cfg.std)}


def published(name: str, tag: str | None) -> tuple[Path, dict]:
    """The file of torchvision's `tag` (or, with tag None, the default published weights: torchvision's, else
    timm's) of `name`, and its preprocessing."""
    found = torchvision_file(name, tag or "DEFAULT")
    if found is None and tag is None:
        found = timm_file(name)
    if found is None:
        where = f"torchvision weights {tag!r}" if tag else "published weights (torchvision or timm)"
        raise WeightsError(f"no {where} are known for {name}; pass a weights file (the authors' checkpoints: "
                           f"`transfer convert official`)")
    return found
