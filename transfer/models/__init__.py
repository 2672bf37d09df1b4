"""The backbone: layers, the ResNet, the named zoo and weights I/O."""

from .resnet import ResNet, ResNetConfig
from .weights import load_model
from .zoo import MODELS, create_model, list_models

__all__ = ["MODELS", "ResNet", "ResNetConfig", "create_model", "list_models", "load_model"]
