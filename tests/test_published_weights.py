"""Published weights by name from the local caches, laid out here as torch hub and the HuggingFace hub lay
them out (nothing is downloaded): the logits equal torchvision's and timm's models with the same files."""

import pytest
import torch
from safetensors.torch import save_file

from transfer import create_model
from transfer.errors import WeightsError


def test_torchvision_weight_names_read_the_torch_hub_cache(tmp_path, monkeypatch):
    import torchvision

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(WeightsError, match=r"resnet18 weights IMAGENET1K_V1 are not in the torch hub cache: "
                                           r"download https://\S+/resnet18-f37072fd\.pth to .*hub/checkpoints"):
        create_model("resnet18", weights="IMAGENET1K_V1")
    reference = torchvision.models.resnet18().eval()
    path = tmp_path / "torch" / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    path.parent.mkdir(parents=True)
    torch.save(reference.state_dict(), path)
    model = create_model("resnet18", weights="IMAGENET1K_V1").eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(model(x), reference(x), atol=1e-5)
    assert (model.input_spec.eval_resolution, model.input_spec.eval_resize) == (224, 256)
    with pytest.raises(WeightsError, match="torchvision has no weights 'IMAGENET1K_V9' for resnet18 "
                                           r"\(it has IMAGENET1K_V1, DEFAULT\)"):
        create_model("resnet18", weights="IMAGENET1K_V9")
    # resnet50's V2 weights were made for 232 -> 224
    v2 = tmp_path / "torch" / "hub" / "checkpoints" / "resnet50-11ad3fa6.pth"
    torch.save(torchvision.models.resnet50().state_dict(), v2)
    assert create_model("resnet50", weights="IMAGENET1K_V2").input_spec.eval_resize == 232


def test_pretrained_reads_timms_weights_from_the_huggingface_cache(tmp_path, monkeypatch):
    import timm

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    with pytest.raises(WeightsError, match=r"timm/resnet26d\.bt_in1k\) are not in the HuggingFace cache: "
                                           r"download them with `huggingface-cli download"):
        create_model("resnet26d", pretrained=True)
    reference = timm.create_model("resnet26d", pretrained=False).eval()
    repo = tmp_path / "hf" / "models--timm--resnet26d.bt_in1k"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0123abcd")
    snapshot = repo / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, str(snapshot / "model.safetensors"))
    model = create_model("resnet26d", pretrained=True).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(model(x), reference(x), atol=1e-4)
    cfg = reference.pretrained_cfg
    assert model.input_spec.interpolation == cfg["interpolation"]
    assert model.input_spec.eval_resize == int(cfg["input_size"][-1] / cfg["crop_pct"])


def test_no_published_weights_is_one_line():
    with pytest.raises(WeightsError, match=r"no published weights .* are known for assemble_resnet50; pass a "
                                           r"weights file .*transfer convert official"):
        create_model("assemble_resnet50", pretrained=True)
