"""Weights files: safetensors + sidecar round-trips, torchvision files, mismatches and their messages."""

import json
import logging

import pytest
import torch

from transfer import create_model
from transfer.errors import WeightsError
from transfer.models import load_model
from transfer.models.weights import load_weights, read_metadata, save_weights, sidecar_path

from .conftest import randomize_bn


def outputs(model, x):
    with torch.no_grad():
        return model.eval()(x)


@pytest.fixture
def saved(tmp_path):
    model = randomize_bn(create_model("assemble_resnet_tiny", num_classes=10, embedding_dim=16, pool="gem"))
    path = save_weights(model, tmp_path / "w.safetensors", class_names=[str(i) for i in range(10)])
    return model, path


def test_round_trip_rebuilds_the_model_from_the_file_alone(saved):
    model, path = saved
    meta = json.loads(sidecar_path(path).read_text())
    assert meta["architecture"] == "assemble_resnet_tiny"
    assert meta["overrides"] == {"num_classes": 10, "embedding_dim": 16, "pool": "gem"}
    assert meta["input"]["mean"] == [0.485, 0.456, 0.406] and meta["input"]["train_resolution"] == 64
    assert meta["class_names"][3] == "3"
    loaded = load_model(path)
    x = torch.randn(2, 3, 64, 64)
    assert torch.equal(outputs(loaded, x), outputs(model, x))
    for (k, a), (k2, b) in zip(model.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert k == k2 and torch.equal(a, b)


def test_header_copy_replaces_a_lost_sidecar(saved):
    model, path = saved
    sidecar_path(path).unlink()
    assert read_metadata(path)["architecture"] == "assemble_resnet_tiny"
    x = torch.randn(1, 3, 64, 64)
    assert torch.equal(outputs(load_model(path), x), outputs(model, x))


def test_other_class_count_loads_backbone_and_reinitialises_head(saved, caplog):
    model, path = saved
    with caplog.at_level(logging.WARNING, logger="transfer"):
        other = create_model("assemble_resnet_tiny", num_classes=5, embedding_dim=16, pool="gem", weights=path)
    assert "classifier does not fit the model (10 classes in the file)" in caplog.text and "re-initialised" in \
        caplog.text
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(other.eval().pool_features(x), model.eval().pool_features(x))
    assert other.fc.weight.shape == (5, 16)
    assert not torch.equal(other.fc.weight[:5], model.fc.weight[:5])


def test_retrieval_model_from_a_classification_backbone(tmp_path, caplog):
    """A pretrained classifier (no embedding layer, linear head) into a retrieval model (a new embedding layer
    and a cosine head): the backbone loads, both new layers stay fresh."""
    backbone = create_model("assemble_resnet_tiny", num_classes=7)
    path = tmp_path / "b.safetensors"
    save_weights(backbone, path)
    fresh = create_model("assemble_resnet_tiny", num_classes=3, embedding_dim=24, head="cosine")
    before = {k: v.clone() for k, v in fresh.state_dict().items() if k.startswith(("fc.", "embedding."))}
    with caplog.at_level(logging.WARNING, logger="transfer"):
        load_weights(fresh, path)
    assert "classifier does not fit" in caplog.text
    for k, v in fresh.state_dict().items():
        if k in before:
            assert torch.equal(v, before[k]), k
        elif not k.startswith(("fc.", "embedding.")):
            assert torch.equal(v, backbone.state_dict()[k]), k


def test_bn_statistics_can_be_left_unrestored(saved):
    _, path = saved
    fresh = create_model("assemble_resnet_tiny", num_classes=10, embedding_dim=16, pool="gem")
    loaded = create_model("assemble_resnet_tiny", num_classes=10, embedding_dim=16, pool="gem", weights=path,
                          restore_bn_stats=False)
    theirs = load_model(path)
    for (k, a), b, c in zip(loaded.state_dict().items(), fresh.state_dict().values(),
                            theirs.state_dict().values(), strict=True):
        if k.endswith(("running_mean", "running_var")):
            assert torch.equal(a, b), k
        elif k.endswith("weight"):
            assert torch.equal(a, c), k


def test_other_architecture_names_first_missing_and_unexpected_keys(tmp_path):
    path = save_weights(create_model("resnet_tiny"), tmp_path / "plain.safetensors")
    with pytest.raises(WeightsError) as err:
        create_model("assemble_resnet_tiny", weights=path)
    msg = str(err.value)
    assert "does not fit model assemble_resnet_tiny" in msg
    assert "missing keys (first: stem.big" in msg and "unexpected keys (first: stages.0.0" in msg
    assert "\n" not in msg


def test_torchvision_file_in_a_checkpoint_wrapper_with_ddp_prefix(tmp_path):
    import torchvision

    tv = randomize_bn(torchvision.models.resnet18())
    path = tmp_path / "ckpt.pt"
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in tv.state_dict().items()}}, path)
    ours = create_model("resnet18", weights=path)
    x = torch.randn(1, 3, 64, 64)
    torch.testing.assert_close(outputs(ours, x), outputs(tv, x), rtol=0, atol=1e-5)


def test_pickled_files_are_read_weights_only(tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ("arbitrary code ran",))

    path = tmp_path / "evil.pth"
    torch.save({"conv1.weight": Payload()}, path)
    with pytest.raises(WeightsError, match="not a readable PyTorch state_dict"):
        create_model("resnet18", weights=path)


def test_missing_and_foreign_files(tmp_path):
    with pytest.raises(WeightsError, match="does not exist"):
        create_model("resnet18", weights=tmp_path / "nope.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not safetensors")
    with pytest.raises(WeightsError, match="not a readable safetensors file"):
        create_model("resnet18", weights=bad)
    with pytest.raises(WeightsError, match=r"must end in \.safetensors"):
        save_weights(create_model("resnet_tiny"), tmp_path / "w.pt")


def test_save_is_atomic_and_leaves_no_temporaries(saved):
    _, path = saved
    assert sorted(p.name for p in path.parent.iterdir()) == ["w.json", "w.safetensors"]


@pytest.mark.parametrize("failing_write", [1, 2])  # the weights file's write, or the sidecar's after it
def test_a_save_that_fails_midway_keeps_the_previous_files_and_leaves_nothing(saved, monkeypatch, failing_write):
    """The disk fills while a new save (other weights, other class names) is written over an old one: the
    data is in the temporary file but not yet synced. No partial file is left; where the weights' write
    failed, both old files are intact byte for byte; where the sidecar's failed after the new weights had
    landed, no stale sidecar describes them (their header's copy does)."""
    import errno

    from transfer import files
    from transfer.files import OutputError

    model, path = saved
    before = {p.name: p.read_bytes() for p in path.parent.iterdir()}
    calls = []
    real_fsync = files.os.fsync

    def fsync(fd):
        calls.append(fd)
        if len(calls) == failing_write:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(files.os, "fsync", fsync)
    other = randomize_bn(create_model("assemble_resnet_tiny", num_classes=10, embedding_dim=16, pool="gem"))
    new_names = [f"class {i}" for i in range(10)]
    with pytest.raises(OutputError, match=r"no space left on the device writing .*previous version .* intact"):
        save_weights(other, path, class_names=new_names)
    monkeypatch.undo()
    x = torch.randn(2, 3, 64, 64)
    left = sorted(p.name for p in path.parent.iterdir())
    if failing_write == 1:
        assert left == ["w.json", "w.safetensors"]  # no temporary file
        assert {p.name: p.read_bytes() for p in path.parent.iterdir()} == before
        assert torch.equal(outputs(load_model(path), x), outputs(model, x))
    else:
        assert left == ["w.safetensors"]
        assert read_metadata(path)["class_names"] == new_names
        assert torch.equal(outputs(load_model(path), x), outputs(other, x))
