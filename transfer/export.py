"""`transfer export`: a trained model as TorchScript or ONNX, for serving without this package.

The exported graph is the evaluation model (BatchNorm with running statistics, DropBlock an identity), traced
or exported at the weights' evaluation resolution; a JSON beside it repeats the sidecar (classes, input
resolution, normalisation) as FILE.pt.json / FILE.onnx.json, since neither format carries the preprocessing.
"""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path

import torch

from .errors import ConfigError, TransferError
from .files import atomic_write_bytes, atomic_write_text
from .models import load_model
from .runs import resolve_weights

FORMATS = {"torchscript": ".pt", "onnx": ".onnx"}


def sidecar_of(out: Path) -> Path:
    """FILE.pt -> FILE.pt.json (FILE.json may be the sidecar of the weights it came from)."""
    return out.with_name(out.name + ".json")


def export_model(weights_or_run: str, out: str | Path, fmt: str, *, dynamic_batch: bool = True,
                 resolution: int | None = None, force: bool = False) -> Path:
    """Write `out` (and `out`.json): the model of a weights file or run, as `fmt`."""
    out = Path(out)
    if out.suffix != FORMATS[fmt]:
        raise ConfigError(f"--out {out}: a {fmt} file ends in {FORMATS[fmt]}")
    side = sidecar_of(out)
    for path in (out, side):
        if path.exists() and not force:
            raise TransferError(f"{path} exists; choose another --out, or --force to replace it")
    weights = resolve_weights(weights_or_run)
    model = load_model(weights).eval()
    res = resolution or model.input_spec.eval_resolution
    example = torch.zeros(2, 3, res, res)
    if fmt == "torchscript":
        with torch.no_grad(), warnings.catch_warnings():
            # tracing warns about constants that are constants here, and that TorchScript is deprecated
            warnings.simplefilter("ignore")
            traced = torch.jit.trace(model, example)
            buf = io.BytesIO()
            torch.jit.save(traced, buf)
        data = buf.getvalue()
    else:
        try:
            import onnxscript  # noqa: F401  (torch's ONNX exporter needs it)
        except ImportError:
            raise TransferError("ONNX export needs the onnx and onnxscript packages: pip install "
                                "'transfer[export]'") from None
        dims = {"x": {0: torch.export.Dim("batch", min=1)}} if dynamic_batch else None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(model, (example,), dynamo=True, dynamic_shapes=dims, verbose=False,
                                        input_names=["images"], output_names=["logits"])
        data = program.model_proto.SerializeToString()
    atomic_write_bytes(out, data)
    meta = {**model.weights_metadata, "export": {"format": fmt, "resolution": res, "dynamic_batch": dynamic_batch
                                                 if fmt == "onnx" else True, "weights": str(weights)}}
    atomic_write_text(side, json.dumps(meta, indent=2) + "\n")
    return out
