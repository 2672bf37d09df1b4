"""The command line: output formats, one-line errors with exit status 2, --debug, python -m transfer."""

import json
import subprocess
import sys

import pytest
import torchvision
from click.testing import CliRunner

from transfer.cli import cli
from transfer.errors import UnknownNameError
from transfer.models import list_models


def run(*args):
    return CliRunner().invoke(cli, list(args))


def test_models_json_lists_every_model_with_its_facts():
    res = run("models", "--format", "json")
    assert res.exit_code == 0, res.output
    rows = json.loads(res.output)
    assert [r["name"] for r in rows] == list_models()
    for r in rows:
        assert {"name", "depth", "tweaks", "params", "macs", "resolution"} <= set(r)
    by_name = {r["name"]: r for r in rows}
    assert by_name["resnet152"]["params"] == sum(p.numel() for p in torchvision.models.resnet152().parameters())
    assert by_name["assemble_resnet50"]["resolution"] == {"train": 224, "eval": 256}


def test_models_table():
    res = run("models")
    assert res.exit_code == 0 and "assemble_resnet152" in res.output and "GMACs" in res.output


def test_benchmark_json_ratios_are_relative_to_the_first_model():
    res = run("benchmark", "resnet_tiny", "assemble_resnet_tiny", "--resolution", "32", "--batch-size", "2",
              "--repeats", "2", "--warmup", "0", "--format", "json")
    assert res.exit_code == 0, res.output
    rows = json.loads(res.output)
    assert [r["model"] for r in rows] == ["resnet_tiny", "assemble_resnet_tiny"]
    assert rows[0]["ratio"] == 1.0
    assert rows[1]["ratio"] == pytest.approx(rows[1]["images_per_second"] / rows[0]["images_per_second"])
    assert all(r["images_per_second"] > 0 for r in rows)


def test_benchmark_table_with_torchvision_reference_and_bf16():
    res = run("benchmark", "resnet_tiny", "torchvision:resnet18", "--resolution", "32", "--batch-size", "2",
              "--repeats", "1", "--warmup", "0", "--dtype", "bf16", "--channels-last")
    assert res.exit_code == 0, res.output
    assert "torchvision:resnet18" in res.output and "bf16, channels_last" in res.output


@pytest.mark.parametrize("args,expected", [
    (["benchmark", "resnet5"], "error: unknown model 'resnet5' (did you mean: resnet50"),
    (["benchmark", "torchvision:resnet5"], "error: unknown torchvision model 'resnet5'"),
    (["benchmark", "resnet_tiny", "--batch-size", "0"], "error: batch size >= 1"),
    (["models", "--format", "json", "--bogus"], "error: No such option '--bogus'"),
])
def test_user_errors_are_one_line_with_exit_status_2(args, expected):
    res = run(*args)
    assert res.exit_code == 2
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(expected), res.output


def test_cuda_asked_for_without_cuda_is_one_line():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    res = run("benchmark", "resnet_tiny", "--device", "cuda:0")
    assert res.exit_code == 2 and res.output.strip() == (
        "error: device 'cuda:0' asked for, but CUDA is not available here; use --device cpu")


def test_debug_shows_the_exception():
    res = CliRunner().invoke(cli, ["--debug", "benchmark", "resnet5"])
    assert isinstance(res.exception, UnknownNameError)


def test_python_dash_m_transfer_and_error_exit_status():
    ok = subprocess.run([sys.executable, "-m", "transfer", "--help"], capture_output=True, text=True)
    assert ok.returncode == 0 and "benchmark" in ok.stdout and "models" in ok.stdout
    bad = subprocess.run([sys.executable, "-m", "transfer", "benchmark", "nosuchmodel"], capture_output=True,
                         text=True)
    assert bad.returncode == 2
    assert bad.stderr.strip().startswith("error: unknown model") and "Traceback" not in bad.stderr


@pytest.mark.parametrize("args", [["--help"], ["pretrain", "no-such-recipe.yaml"], ["finetune", "--help"]])
def test_help_and_a_bad_recipe_path_never_import_torch(args, tmp_path):
    """The fast paths stay fast by construction: torch (seconds to import) is not loaded at all for them."""
    probe = ("import atexit, sys\n"
             "atexit.register(lambda: sys.stderr.write('TORCH LOADED\\n' if 'torch' in sys.modules else ''))\n"
             f"sys.argv = ['transfer', *{args!r}]\n"
             "from transfer.cli import main\n"
             "main()\n")
    res = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=tmp_path)
    assert res.returncode == (2 if "no-such-recipe.yaml" in args else 0), res.stderr
    assert "TORCH LOADED" not in res.stderr, f"transfer {' '.join(args)} imported torch"
    if res.returncode == 2:
        assert res.stderr.startswith("error: recipe 'no-such-recipe.yaml' not found")
