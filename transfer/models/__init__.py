"""The backbone: layers, the ResNet, the named zoo, weights I/O and the factory that joins them."""

from .factory import create_model, load_model, preprocessing
from .resnet import ResNet, ResNetConfig
from .zoo import MODELS, list_models

__all__ = ["MODELS", "ResNet", "ResNetConfig", "create_model", "list_models", "load_model", "preprocessing"]
