"""transfer: Assemble-ResNet (arXiv 2001.06268) in PyTorch, as a transfer-learning toolkit.

The names below are imported on first use (PEP 562), so that `import transfer.errors`, `transfer --help` and
a one-line error for a mistyped recipe do not wait seconds for torch.
"""

from __future__ import annotations

import importlib

from .errors import TransferError

_LAZY = {"ResNet": ".models", "ResNetConfig": ".models", "create_model": ".models", "list_models": ".models",
         "load_model": ".models", "preprocessing": ".models"}

__all__ = ["ResNet", "ResNetConfig", "TransferError", "create_model", "list_models", "load_model", "preprocessing"]
__version__ = "0.1.0"


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'transfer' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
