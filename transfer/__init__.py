"""transfer: Assemble-ResNet (arXiv 2001.06268) in PyTorch, as a transfer-learning toolkit."""

from .errors import TransferError
from .models import ResNet, ResNetConfig, create_model, list_models, load_model
from .preprocessing import preprocessing

__all__ = ["ResNet", "ResNetConfig", "TransferError", "create_model", "list_models", "load_model", "preprocessing"]
__version__ = "0.1.0"
