"""`transfer export`: TorchScript and ONNX files whose outputs equal the PyTorch model's (onnxruntime runs the
ONNX one), for the assembled network with Selective Kernel, anti-aliasing, Big-Little and DropBlock."""

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from transfer import create_model, load_model
from transfer.cli import cli
from transfer.models.weights import save_weights

from .conftest import randomize_bn


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("export")
    model = create_model("assemble_resnet_tiny", num_classes=4, width=0.125, sk_min_dim=4, drop_block=True)
    cfg = model.config
    assert cfg.selective_kernel and cfg.big_little and cfg.anti_alias and cfg.drop_block
    randomize_bn(model)
    return save_weights(model, tmp / "tiny.safetensors", class_names=["a", "b", "c", "d"])


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def batches(res):
    g = torch.Generator().manual_seed(0)
    return [torch.randn(b, 3, res, res, generator=g) for b in (1, 3)]


def test_torchscript_equals_the_model(weights, tmp_path):
    out = tmp_path / "m.pt"
    res = run("export", weights, "--format", "torchscript", "--out", out)
    assert res.exit_code == 0, res.output
    model, scripted = load_model(weights).eval(), torch.jit.load(str(out))
    for x in batches(model.input_spec.eval_resolution):
        with torch.no_grad():
            assert torch.allclose(scripted(x), model(x), atol=1e-5, rtol=1e-5)
    side = json.loads((tmp_path / "m.pt.json").read_text())
    assert side["class_names"] == ["a", "b", "c", "d"] and side["input"] == model.input_spec.to_dict()
    assert side["export"]["format"] == "torchscript"


def test_onnx_equals_the_model_in_onnxruntime(weights, tmp_path):
    import onnx
    import onnxruntime

    out = tmp_path / "m.onnx"
    res = run("export", weights, "--format", "onnx", "--out", out)
    assert res.exit_code == 0, res.output
    model = load_model(weights).eval()
    session = onnxruntime.InferenceSession(str(out))
    assert [i.name for i in session.get_inputs()] == ["images"]
    for x in batches(model.input_spec.eval_resolution):
        got = session.run(None, {"images": x.numpy()})[0]
        with torch.no_grad():
            want = model(x).numpy()
        assert got.shape == want.shape and np.allclose(got, want, atol=1e-5, rtol=1e-5)
    static = tmp_path / "s.onnx"
    assert run("export", weights, "--format", "onnx", "--out", static, "--static-batch").exit_code == 0
    dims = onnx.load(str(static)).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims] == [2, 3, model.input_spec.eval_resolution, model.input_spec.eval_resolution]


def test_export_refusals_are_one_line(weights, tmp_path):
    res = run("export", weights, "--format", "onnx", "--out", tmp_path / "m.pt")
    assert res.exit_code == 2 and "a onnx file ends in .onnx" in res.output
    (tmp_path / "x.pt").write_text("mine")
    res = run("export", weights, "--format", "torchscript", "--out", tmp_path / "x.pt")
    assert res.exit_code == 2 and "exists; choose another --out, or --force" in res.output
    assert (tmp_path / "x.pt").read_text() == "mine"
