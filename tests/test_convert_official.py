"""`transfer convert official`: the authors' TensorFlow checkpoints give the official graph's logits.

The fixtures in tests/fixtures/official were made by the official code itself (clovaai/assembled-cnn, master,
built by tools/official_fixtures.py under TensorFlow 2.15 at reduced width with seeded weights): real
tf.train.Saver checkpoints (with global_step and Momentum slots, as the released ones) and the logits
TensorFlow computed for fixed inputs. See tests/fixtures/official/README.md to regenerate them.
"""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from transfer import load_model
from transfer.cli import cli
from transfer.convert import convert
from transfer.convert.tf_bundle import Checkpoint
from transfer.data.transforms import PAPER_MEAN, PAPER_STD
from transfer.models.resnet import ResNet
from transfer.models.zoo import resolve_config

FIXTURES = Path(__file__).parent / "fixtures" / "official"
# fixture -> (the zoo architecture it is, the convert options it needs, the relative tolerance)
# Tolerances: 1e-4 of the largest logit, except where TensorFlow's own float32 logits are further than that
# from a float64 evaluation of the same function (measured): the retrieval net's GeM + embedding BN (8.1e-4),
# and the 152-layer net at width 2 (2.4e-2: 150 layers, many of one or two channels, amplify rounding). With
# torchvision's pooling instead that network is off by 1.4e3, so its tolerance still tells right from wrong;
# at full width it matches to 5.8e-5 (the check by hand in the README).
CASES = {
    "resnet50": ("resnet50", {}, 1e-4),
    "resnet50d_se": ("resnet50d_se", {}, 1e-4),
    "resnet50d_sk": ("resnet50d_sk", {}, 1e-4),
    "assemble_resnet50": ("assemble_resnet50", {}, 1e-4),
    "assemble_resnet152": ("assemble_resnet152", {}, 5e-2),
    # a fine-tuned retrieval network: embedding layer, GeM pooling (weight-free: given with --pool)
    "assemble_resnet50_retrieval": ("assemble_resnet50", {"pool": "gem"}, 1.5e-3),
}


def fixture(name):
    path = FIXTURES / name
    if not path.is_dir():
        pytest.fail(f"fixture {path} is missing; see tests/fixtures/official/README.md")
    return path, json.loads((path / "fixture.json").read_text())


def official_logits(path: Path):
    """(input NCHW, TensorFlow's logits) per input size."""
    expected = np.load(path / "expected.npz")
    for key in expected.files:
        if key.startswith("input_"):
            size = key.removeprefix("input_")
            yield torch.from_numpy(expected[key]).permute(0, 3, 1, 2).contiguous(), expected[f"logits_{size}"]


def assert_matches(model, path, rel=1e-4):
    for x, ref in official_logits(path):
        if ref.shape[1] == 1001:
            ref = ref[:, 1:]  # the background class is dropped: ImageNet's 1000 remain
        with torch.no_grad():
            out = model(x).numpy()
        assert out.shape == ref.shape
        assert np.abs(out - ref).max() <= rel * np.abs(ref).max(), (path.name, x.shape, np.abs(out - ref).max())


@pytest.mark.parametrize("name", list(CASES))
def test_converted_checkpoint_gives_the_official_logits(name, tmp_path):
    path, meta = fixture(name)
    arch, options, rel = CASES[name]
    out = convert("official", path, tmp_path / f"{name}.safetensors", **options)
    model = load_model(out).eval()
    assert model.arch == arch  # inferred from the variables
    assert_matches(model, path, rel)
    # parameters: the official graph's count, less the background class's row where it was dropped
    classes = meta["model_kwargs"]["num_classes"]
    background = model.num_features + 1 if classes == 1001 else 0
    assert sum(p.numel() for p in model.parameters()) == meta["trainable_params"] - background


def test_imagenet_head_preprocessing_and_provenance(tmp_path):
    path, _ = fixture("assemble_resnet50")
    out = convert("official", path, tmp_path / "a.safetensors")
    side = json.loads(out.with_suffix(".json").read_text())
    assert side["num_classes"] == 1000 and len(side["class_names"]) == 1000
    assert side["class_names"][0] == "n01440764" and side["class_names"][-1] == "n15075141"
    assert side["class_names"] == sorted(side["class_names"])
    # the official input: RGB 0-255 minus (123.68, 116.78, 103.94), no division; 292 -> 256 for BL R50
    assert np.allclose(np.array(side["input"]["mean"]) * 255, [123.68, 116.78, 103.94])
    assert np.allclose(np.array(side["input"]["std"]) * 255, 1.0)
    assert (side["input"]["eval_resize"], side["input"]["eval_resolution"]) == (292, 256)
    assert side["overrides"]["pooling"] == "tf"
    files = {f["name"]: f["sha256"] for f in side["source"]["files"]}
    assert set(files) == {"model.ckpt-0.index", "model.ckpt-0.data-00000-of-00001"}
    assert side["source"]["format"] == "official" and side["source"]["step"] == 0
    import hashlib

    assert files["model.ckpt-0.index"] == hashlib.sha256((path / "model.ckpt-0.index").read_bytes()).hexdigest()


def test_the_pooling_conventions_are_what_makes_the_match(tmp_path):
    """With torchvision's pooling the same weights give other logits: the tests above could not pass by luck."""
    for name in ("resnet50", "assemble_resnet50", "assemble_resnet152"):
        path, _ = fixture(name)
        out = convert("official", path, tmp_path / f"{name}.safetensors")
        torch_pooling = load_model(out, pooling="torch").eval()
        with pytest.raises(AssertionError):
            assert_matches(torch_pooling, path, CASES[name][2])


def test_retrieval_checkpoint_needs_its_pooling_and_keeps_the_embedding(tmp_path):
    path, meta = fixture("assemble_resnet50_retrieval")
    out = convert("official", path, tmp_path / "avg.safetensors")  # GeM is not in the file
    with pytest.raises(AssertionError):
        assert_matches(load_model(out).eval(), path, CASES["assemble_resnet50_retrieval"][2])
    model = load_model(convert("official", path, tmp_path / "gem.safetensors", pool="gem")).eval()
    assert model.config.embedding_dim == meta["model_kwargs"]["embedding_size"] and model.config.embedding_relu
    x, _ = next(official_logits(path))
    with torch.no_grad():
        emb = model.pool_features(x)
    assert emb.shape == (x.shape[0], meta["model_kwargs"]["embedding_size"]) and (emb < 0).any()  # BN output


def test_full_width_parameter_counts_are_the_official_graphs():
    """Counted from the official graphs at full width with 1001 classes (tools/official_fixtures.py
    --full-width; the same numbers in ../shared/reference/assembled-cnn.md)."""
    official = json.loads((FIXTURES / "full_width_params.json").read_text())
    for arch, count in official.items():
        with torch.device("meta"):
            model = ResNet(resolve_config(arch, num_classes=1001), init_weights=False)
        assert sum(p.numel() for p in model.parameters()) == count, arch


def test_the_reader_reads_what_tensorflow_wrote():
    path, _ = fixture("resnet50")
    ck = Checkpoint(path)  # the folder: its `checkpoint` file names the prefix
    assert ck.prefix.name == "model.ckpt-0"
    assert "global_step" in ck.entries and any(n.endswith("/Momentum") for n in ck.entries)
    kernel = ck.read("resnet_model/conv2d/kernel")
    assert kernel.dtype == np.float32 and kernel.shape[:3] == (7, 7, 3)
    assert Checkpoint(path / "model.ckpt-0").entries.keys() == ck.entries.keys()
    assert Checkpoint(path / "model.ckpt-0.index").prefix == ck.prefix


def run(*args):
    return CliRunner().invoke(cli, ["convert", "official", *[str(a) for a in args]])


def assert_one_line(res, *expected):
    assert res.exit_code == 2, res.output
    assert res.output.startswith("error: ") and res.output.count("\n") == 1, res.output
    for text in expected:
        assert text in res.output, res.output


def test_bad_checkpoints_are_one_line_errors_and_leave_no_output(tmp_path):
    out = tmp_path / "out.safetensors"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert_one_line(run(empty, "--out", out), "holds no TensorFlow checkpoint")
    assert_one_line(run(tmp_path / "nowhere", "--out", out), "no TensorFlow checkpoint at")
    truncated = tmp_path / "truncated"
    shutil.copytree(FIXTURES / "resnet50", truncated)
    data = truncated / "model.ckpt-0.data-00000-of-00001"
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])
    assert_one_line(run(truncated, "--out", out), "is truncated", "copy the checkpoint again")
    (truncated / "model.ckpt-0.index").write_bytes(b"not a table" * 10)
    assert_one_line(run(truncated, "--out", out), "not a TensorFlow checkpoint index")
    assert_one_line(run(FIXTURES / "assemble_resnet50", "--arch", "resnet50d_sk", "--out", out),
                    "is not an official resnet50d_sk", "missing", "first: resnet_model/")
    assert_one_line(run(FIXTURES / "resnet50", "--arch", "resnet_tiny", "--out", out), "cannot build resnet_tiny")
    assert_one_line(run(FIXTURES / "unknown_architecture", "--out", out), "match no zoo architecture")
    assert not out.exists() and not out.with_suffix(".json").exists()


def test_predict_uses_the_official_preprocessing_the_file_records(tmp_path):
    """`transfer predict` on a converted file equals the official recipe by hand: RGB 0-255 minus the mean."""
    from PIL import Image

    out = tmp_path / "a.safetensors"
    # sizes that make the eval transform the identity on 64-px images, so only the normalisation is left
    res = run(FIXTURES / "assemble_resnet50", "--out", out, "--eval-resize", 64, "--eval-resolution", 64)
    assert res.exit_code == 0, res.output
    rng = np.random.default_rng(0)
    images = tmp_path / "images"
    images.mkdir()
    pixels = [rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for _ in range(3)]
    for i, p in enumerate(pixels):
        Image.fromarray(p).save(images / f"{i}.png")
    csv_file = tmp_path / "p.csv"
    res = CliRunner().invoke(cli, ["predict", str(out), str(images), "--topk", "2", "--out", str(csv_file)])
    assert res.exit_code == 0, res.output
    model = load_model(out).eval()
    synsets = json.loads(out.with_suffix(".json").read_text())["class_names"]
    mean = torch.tensor([123.68, 116.78, 103.94])[:, None, None]
    x = torch.from_numpy(np.stack(pixels)).permute(0, 3, 1, 2).float() - mean
    with torch.no_grad():
        expected = model(x).argmax(1).tolist()
    import csv

    with csv_file.open() as f:
        rows = sorted(csv.reader(f))[:-1]  # the header sorts last ("path" > digits)
    assert [r[1] for r in rows] == [synsets[i] for i in expected]


def test_finetune_from_a_converted_checkpoint_keeps_its_pooling_and_preprocessing(tmp_path, monkeypatch):
    from .test_data import jpeg

    monkeypatch.setenv("TRANSFER_CACHE", str(tmp_path / "cache"))
    backbone = tmp_path / "r50.safetensors"
    convert("official", FIXTURES / "resnet50", backbone)  # plain ResNet-50: torch pooling by default, tf here
    data = tmp_path / "data"
    for label in ("a", "b"):
        (data / label).mkdir(parents=True)
        for i in range(4):
            (data / label / f"{i}.jpg").write_bytes(jpeg(color=(60 * i, 200 * (label == "b"), 90), size=(40, 40)))
    run_dir = tmp_path / "ft"
    width = json.loads(backbone.with_suffix(".json").read_text())["overrides"]["width"]
    res = CliRunner().invoke(cli, [
        "finetune", "recipes/custom.yaml", "--backbone", str(backbone), "--data", str(data), "--out", str(run_dir),
        "--epochs", "1", "--batch-size", "4", "--set", "model.name=resnet50", "--set", f"model.options.width={width}",
        "--set", "augment.train_resolution=32", "--set", "augment.eval_resolution=32", "--set",
        "augment.eval_resize=32", "--set", "augment.autoaugment=none", "--set", "optim.lr=0", "--set",
        "runtime.workers=0", "--set", "output.plots=false"])
    assert res.exit_code == 0, res.output
    side = json.loads((run_dir / "weights" / "final.json").read_text())
    assert side["overrides"]["pooling"] == "tf"  # inherited from the backbone, not the zoo's torch default
    assert side["input"]["mean"] == pytest.approx(list(PAPER_MEAN)) and side["input"]["std"] == pytest.approx(
        list(PAPER_STD))
    tuned, source = load_model(run_dir / "weights" / "final.safetensors"), load_model(backbone)
    assert torch.equal(tuned.stem.conv1.weight, source.stem.conv1.weight)  # lr 0: the backbone's weights
