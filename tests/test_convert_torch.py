"""`transfer convert timm|torchvision`: logits equal the library's own model with the same weights."""

import json

import pytest
import torch
import torchvision
from click.testing import CliRunner
from safetensors.torch import save_file

from transfer import load_model
from transfer.cli import cli
from transfer.convert import convert

from .conftest import randomize_bn

timm = pytest.importorskip("timm")


def assert_same_function(reference, ours, sizes=(77,)):
    """Same logits; 77 px gives odd maps (39 px before the max-pool, 5 px into stage 4's shortcut pool),
    where the paddings of the pools differ between conventions."""
    for size in sizes:
        x = torch.randn(2, 3, size, size)
        with torch.no_grad():
            ref, out = reference.eval()(x), ours.eval()(x)
        assert out.shape == ref.shape
        assert (out - ref).abs().max().item() <= 1e-5 * max(1.0, ref.abs().max().item())


# timm name -> the zoo architecture it is. seresnet50's SE has biases (ours, as the official, has none):
# the conversion records se_bias=True.
# timm's resnet50 has torchvision's names and function (tested through torchvision in test_models).
TIMM = {"resnet26d": "resnet26d", "resnet50d": "resnet50d", "resnet101d": "resnet101d", "resnet152d": "resnet152d",
        "seresnet50": "resnet50_se"}


@pytest.mark.parametrize("timm_name", list(TIMM))
def test_timm_state_dict_converts_to_timms_function(timm_name, tmp_path):
    reference = randomize_bn(timm.create_model(timm_name, pretrained=False))
    src = tmp_path / f"{timm_name}.safetensors"  # the hub's format; .pth below
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, str(src))
    out = convert("timm", src, tmp_path / "converted.safetensors")
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["architecture"] == TIMM[timm_name]
    assert meta["overrides"]["pooling"] == "torch"
    assert meta["source"]["format"] == "timm" and len(meta["source"]["files"][0]["sha256"]) == 64
    assert meta["class_names"][:2] == ["n01440764", "n01443537"] and len(meta["class_names"]) == 1000
    model = load_model(out)
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in reference.parameters())
    assert_same_function(reference, model)
    if timm_name == "resnet50d":  # the check could not pass by accident: the official pooling differs here
        tf_model = load_model(out, pooling="tf").eval()
        x = torch.randn(2, 3, 77, 77)
        with torch.no_grad():
            assert (tf_model(x) - reference.eval()(x)).abs().max() > 1e-3


def test_torchvision_state_dict_through_the_same_command(tmp_path):
    reference = randomize_bn(torchvision.models.resnet50(weights=None))
    torch.save(reference.state_dict(), tmp_path / "tv.pth")
    res = CliRunner().invoke(cli, ["convert", "torchvision", str(tmp_path / "tv.pth"), "--out",
                                   str(tmp_path / "r50.safetensors")])
    assert res.exit_code == 0, res.output
    assert "resnet50" in res.output and "25,557,032 parameters" in res.output
    assert_same_function(reference, load_model(tmp_path / "r50.safetensors"))


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_mistakes_are_one_line_and_leave_no_output(tmp_path):
    reference = timm.create_model("resnet50d", pretrained=False)
    torch.save(reference.state_dict(), tmp_path / "r50d.pth")
    out = tmp_path / "out.safetensors"
    cases = {
        "is not a resnet50": ["timm", tmp_path / "r50d.pth", "--arch", "resnet50"],
        "unknown model": ["timm", tmp_path / "r50d.pth", "--arch", "resnet55"],
        "not a readable safetensors": ["timm", (tmp_path / "junk.safetensors"), ],
        "is not a file": ["timm", tmp_path],
    }
    (tmp_path / "junk.safetensors").write_bytes(b"\x00garbage" * 100)
    for expected, args in cases.items():
        res = run("convert", *args, "--out", out)
        assert res.exit_code == 2, (expected, res.output)
        assert res.output.startswith("error: ") and expected in res.output and res.output.count("\n") == 1
        assert not out.exists() and not out.with_suffix(".json").exists()
    res = run("convert", "timm", tmp_path / "r50d.pth", "--out", tmp_path / "out.pth")
    assert res.exit_code == 2 and "must end in .safetensors" in res.output
    blocked = tmp_path / "junk.safetensors" / "w.safetensors"  # a folder that cannot be made: a file is there
    res = run("convert", "timm", tmp_path / "r50d.pth", "--out", blocked)
    assert res.exit_code == 2 and "cannot write" in res.output and res.output.count("\n") == 1


def test_an_existing_output_is_not_replaced_without_force(tmp_path):
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), tmp_path / "r18.pth")
    out = tmp_path / "r18.safetensors"
    assert run("convert", "torchvision", tmp_path / "r18.pth", "--out", out).exit_code == 0
    before = out.read_bytes()
    res = run("convert", "torchvision", tmp_path / "r18.pth", "--out", out)
    assert res.exit_code == 2 and "--force" in res.output and out.read_bytes() == before
    res = run("convert", "torchvision", tmp_path / "r18.pth", "--out", out, "--force", "--eval-resize", "300")
    assert res.exit_code == 0 and load_model(out).input_spec.eval_resize == 300
