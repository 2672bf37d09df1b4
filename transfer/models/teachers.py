"""Distillation teachers from timm: `timm:NAME` with a local weights file, fed as timm feeds NAME.

The paper's teachers (AmoebaNet-A for Assemble-ResNet-50, EfficientNet-B7 at 600 px for Assemble-ResNet-152)
are no networks of this package; timm has EfficientNet-B7 (`tf_efficientnet_b7`, ported from the TensorFlow
release) and most other ImageNet classifiers people distil from. The model is built with `pretrained=False`
(nothing is downloaded) and its weights come from the file given, a state_dict as timm publishes them
(`model.safetensors`, `pytorch_model.bin`, a `.pth`), read with weights_only. Its preprocessing is timm's own
evaluation transform for NAME (`resolve_model_data_config` + `create_transform`: resize by the crop_pct,
centre crop, normalise), as the paper's teacher logits were computed on evaluation-preprocessed images.

timm is an optional dependency (the `timm` extra), imported only here, only when a timm model is asked for.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from ..errors import ConfigError, UnknownNameError, WeightsError, suggest
from .weights import read_state_dict

PREFIX = "timm:"


def is_timm_name(name: str) -> bool:
    """Whether a model argument names a timm model (`timm:NAME`) rather than a weights file or a run."""
    return isinstance(name, str) and name.startswith(PREFIX)


@dataclass
class TimmTeacher:
    name: str  # timm's model name, with its pretrained tag if one was given (tf_efficientnet_b7.aa_in1k)
    model: nn.Module
    transform: Callable  # timm's evaluation transform: PIL image -> normalised tensor
    data_config: dict  # what the transform was made from (input_size, crop_pct, interpolation, mean, std)
    weights: Path

    @property
    def num_classes(self) -> int:
        return self.model.num_classes

    @property
    def class_names(self) -> list[str] | None:
        """The classes of the outputs as timm names them (ImageNet-1k: the sorted WordNet ids, n01440764 first),
        told from the class count as timm's own inference script does; None for another head."""
        import timm.data

        subset = timm.data.infer_imagenet_subset(self.model)
        names = list(timm.data.ImageNetInfo(subset).label_names()) if subset else None
        return names if names and len(names) == self.num_classes else None

    def describe(self) -> str:
        c = self.data_config
        return (f"timm {self.name}: {c['input_size'][-1]} px, crop_pct {c['crop_pct']}, {c['interpolation']}, "
                f"mean {tuple(round(v, 4) for v in c['mean'])}, std {tuple(round(v, 4) for v in c['std'])}")


def _timm():
    try:
        import timm
    except ImportError:
        raise ConfigError("timm:NAME models need timm: install the timm extra (uv run --extra timm transfer ..., "
                          "or pip install 'transfer[timm]')") from None
    return timm


def _pretrained_cfg(timm, name: str):
    """timm's configuration of NAME (its default tag's, or the tag named), after checking the name."""
    arch, _, tag = name.partition(".")
    if not arch or not timm.is_model(arch):
        raise UnknownNameError(f"timm has no model {name!r}{suggest(arch, timm.list_models())}; "
                               f"timm.list_models('*PATTERN*') lists its names")
    try:
        return timm.models.get_pretrained_cfg(name)
    except RuntimeError:  # timm's one answer for a tag it does not know
        tags = timm.list_pretrained(f"{arch}.*")
        raise UnknownNameError(f"timm's {arch} has no weights tag {tag!r} (it has: {', '.join(tags) or 'none'})"
                               ) from None


def _classifier_outputs(state: dict, cfg) -> int | None:
    """How many classes the file's classifier predicts (timm's pretrained_cfg names the classifier module)."""
    classifier = getattr(cfg, "classifier", None)
    if isinstance(classifier, list | tuple):
        classifier = classifier[0]
    weight = state.get(f"{classifier}.weight") if classifier else None
    return int(weight.shape[0]) if weight is not None else None


def _check_fits(model: nn.Module, state: dict, name: str, path: Path) -> dict:
    """`state` completed with the BN batch counters old files leave out, or one line saying how it differs."""
    own = model.state_dict()
    state = {**{k: v for k, v in own.items() if k.endswith("num_batches_tracked")}, **state}
    shape = {k: tuple(v.shape) for k, v in state.items()}
    problems = {
        "of the model's tensors missing": [k for k in own if k not in state],
        "tensors the model does not have": [k for k in state if k not in own],
        "of other shapes": [f"{k}, {shape[k]} in the file, {tuple(v.shape)} in the model" for k, v in own.items()
                            if k in state and shape[k] != tuple(v.shape)],
    }
    found = [f"{len(keys)} {what} (first: {keys[0]})" for what, keys in problems.items() if keys]
    if found:
        raise WeightsError(f"{path} does not hold timm's {name}: {'; '.join(found)}; give the weights file of "
                           f"this very model")
    return state


def load_timm_teacher(name: str, weights: str | Path | None) -> TimmTeacher:
    """timm's model NAME (`timm:` prefix optional) with the weights of the file `weights`, in eval mode, and
    timm's evaluation transform for it. The classifier is sized from the file (a teacher fine-tuned on other
    classes loads too)."""
    name = name.removeprefix(PREFIX)
    timm = _timm()
    cfg = _pretrained_cfg(timm, name)
    if weights is None:
        where = f" (timm publishes it as model.safetensors of huggingface.co/{cfg.hf_hub_id})" if getattr(
            cfg, "hf_hub_id", None) else ""
        raise ConfigError(f"timm:{name} needs its weights file: --checkpoint PATH{where}; nothing is downloaded")
    path = Path(weights)
    state = read_state_dict(path)
    classes = _classifier_outputs(state, cfg)
    model = timm.create_model(name, pretrained=False, **({"num_classes": classes} if classes else {}))
    model.load_state_dict(_check_fits(model, state, name, path))
    model.eval()
    config = timm.data.resolve_model_data_config(model)
    transform = timm.data.create_transform(**config, is_training=False)
    return TimmTeacher(name, model, transform, config, path)
