"""The network and the named zoo: every model walked, torchvision equivalence, the paper's layouts."""

import pytest
import torch
import torchvision

from transfer import create_model, list_models
from transfer.errors import ConfigError, UnknownNameError
from transfer.models.layers import DropBlock, set_keep_prob
from transfer.models.resnet import BasicBlock, BigLittleStage, BlockOptions, Bottleneck, PlainStage, ResNet
from transfer.models.zoo import MODELS, model_stats, resolve_config, tweaks

from .conftest import randomize_bn

# Every named model keeps its structure (blocks, tweaks) at an eighth of the width, so the walk is fast.
SMALL = {"width": 0.125, "sk_min_dim": 4}


def small_model(name: str, **kw):
    return create_model(name, **{**SMALL, **kw})


@pytest.mark.parametrize("name", list_models())
def test_every_model_shapes_gradients_determinism(name):
    model = small_model(name, num_classes=7, zero_gamma=False)
    set_keep_prob(model, 0.9)
    x = torch.randn(2, 3, 64, 64)
    out = model.train()(x)
    assert out.shape == (2, 7)
    (out * torch.randn_like(out)).sum().backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not no_grad, f"parameters without gradient: {no_grad[:5]}"
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), model(x))


@pytest.mark.parametrize("name", ["resnet18", "resnet50", "resnet101", "resnet152"])
def test_equivalent_to_torchvision_with_the_same_weights(name, tmp_path):
    tv = getattr(torchvision.models, name)(weights=None)
    randomize_bn(tv)
    path = tmp_path / f"{name}.pth"
    torch.save(tv.state_dict(), path)
    ours = create_model(name, weights=path).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref, out = tv.eval()(x), ours(x)
    assert (out - ref).abs().max().item() < 1e-5


def test_resnet50_counts_match_torchvision():
    meta = torchvision.models.ResNet50_Weights.IMAGENET1K_V1.meta
    stats = model_stats("resnet50")
    assert stats["params"] == meta["num_params"]
    assert stats["macs"] / 1e9 == pytest.approx(meta["_ops"], rel=1e-3)


def count_blocks(module):
    return sum(isinstance(m, Bottleneck | BasicBlock) for m in module.modules())


def test_assemble_resnet50_layout_matches_the_paper():
    # Reference layout of R50-BL at 224 px: stages at 28, 14, 14, 7 px; 19 bottlenecks instead of 16.
    # on the meta device: shapes are propagated, no weights are initialised and no arithmetic runs
    with torch.device("meta"):
        model = ResNet(resolve_config("assemble_resnet50"), init_weights=False).eval()
        plain = ResNet(resolve_config("resnet50"), init_weights=False)
        shapes = [tuple(f.shape[1:]) for f in model.stage_features(torch.empty(1, 3, 224, 224))]
    assert shapes == [(256, 28, 28), (512, 14, 14), (1024, 14, 14), (2048, 7, 7)]
    assert count_blocks(model) == 19 and count_blocks(plain) == 16
    stage = model.stages[0]
    assert (len(stage.big), len(stage.little)) == (2, 1)
    assert stage.little[0].conv1.out_channels == 32  # little branch at half width (alpha = 2)


def test_assemble_resnet152_block_counts():
    model = small_model("assemble_resnet152")
    counts = [(len(s.big), len(s.little)) for s in model.stages[:3]]
    assert counts == [(4, 1), (11, 5), (29, 14)]  # reference: S1 4/1/1, S2 11/5/1, S3 29/14/1
    assert len(model.stages[3]) == 3
    assert model.stages[0].little[0].conv1.out_channels == model.stages[0].big[0].conv1.out_channels  # a=1


@pytest.mark.parametrize("stride,size", [(1, 16), (2, 16), (2, 15)])
def test_big_little_stage_matches_plain_stage_shapes(stride, size):
    opts = BlockOptions(bn={}, selective_kernel="sk_dagger", sk_min_dim=4, anti_alias=True, shortcut="avg3")
    x = torch.randn(2, 32, size, size)
    bl = BigLittleStage(32, 16, 4, stride, opts, alpha=2, beta=4).eval()
    plain = PlainStage(Bottleneck, 32, 16, 4, stride, opts).eval()
    assert bl(x).shape == plain(x).shape


def residual_outputs(model):
    """Each residual block's branch output on the input the block received in one forward pass."""
    inputs = {}
    blocks = [m for m in model.modules() if isinstance(m, Bottleneck | BasicBlock)]
    for b in blocks:
        b.register_forward_hook(lambda m, i, o: inputs.__setitem__(m, i[0].clone()))
    with torch.no_grad():
        model.eval()(torch.randn(2, 3, 64, 64))
        return [b.residual(inputs[b]) for b in blocks]


@pytest.mark.parametrize("name", ["resnet50", "resnet50d_se", "resnet18", "assemble_resnet_tiny"])
def test_zero_gamma_makes_every_residual_branch_zero(name):
    assert all(r.abs().max() == 0 for r in residual_outputs(small_model(name)))
    assert all(r.abs().max() > 0 for r in residual_outputs(small_model(name, zero_gamma=False)))


def test_anti_alias_moves_the_stride_to_the_blur():
    model = small_model("assemble_resnet50")
    first = model.stages[0].big[0]
    assert first.sk.paths[0][0].stride == (1, 1)
    assert type(first.blur).__name__ == "BlurPool"
    assert model.stages[3][1].blur.__class__.__name__ == "Identity"  # stride-1 blocks are not blurred
    assert isinstance(first.shortcut.pool, torch.nn.AvgPool2d) and first.shortcut.conv.stride == (1, 1)


def test_drop_block_only_in_stages_3_and_4_with_the_papers_scales():
    model = small_model("assemble_resnet50")
    per_stage = [[m.gamma_scale for m in s.modules() if isinstance(m, DropBlock)] for s in model.stages]
    assert per_stage[0] == [] and per_stage[1] == []
    assert set(per_stage[2]) == {0.25} and set(per_stage[3]) == {1.0}
    assert len(per_stage[3]) == 3 * 3 + 1  # after each BN of 3 blocks (SK counts as one) + the shortcut BN


def test_features_api_and_heads():
    model = small_model("resnet50d_sk", num_classes=0, embedding_dim=24, pool="gem").eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        feats = model.stage_features(x)
        assert [f.shape[1] for f in feats] == [i["num_chs"] for i in model.feature_info]
        assert torch.equal(model.forward_features(x), feats[-1])
        pooled = model.pool_features(x)
        assert pooled.shape == (2, 24) and model.num_features == 24
        assert torch.equal(model(x), pooled)  # num_classes=0: no classifier
        model.reset_classifier(5)
        assert torch.equal(model(x), model.forward_head(pooled))
    assert model.num_classes == 5


@pytest.mark.parametrize("name", ["resnet18", "resnet50d_sk", "assemble_resnet50"])
def test_feature_info_describes_the_maps_the_named_modules_yield(name):
    """Channels and reduction from the forward pass itself, read at the module feature_info names (a hook), so
    a wrong stride bookkeeping (Big-Little's stride-1 third stage) or a wrong module name fails."""
    model = small_model(name).eval()
    seen = {}
    for info in model.feature_info:
        model.get_submodule(info["module"]).register_forward_hook(
            lambda _m, _i, out, key=info["module"]: seen.__setitem__(key, out))
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        maps = model.stage_features(x)
    assert len(model.feature_info) == len(maps) == 4
    for info, m in zip(model.feature_info, maps, strict=True):
        assert torch.equal(seen[info["module"]], m)
        assert (info["num_chs"], info["reduction"]) == (m.shape[1], 96 // m.shape[-1])


def test_feature_info_agrees_with_timms_resnet50():
    timm = pytest.importorskip("timm")
    with torch.device("meta"):
        ours = create_model("resnet50", init_weights=False)
        theirs = timm.create_model("resnet50", pretrained=False)
    # timm also lists the stem's activation at reduction 2 (before the max-pool); the stages agree.
    assert [(i["num_chs"], i["reduction"]) for i in ours.feature_info] == \
        [(i["num_chs"], i["reduction"]) for i in theirs.feature_info[1:]]


def test_deep_stem_and_resnet_d_shortcut():
    model = small_model("resnet50d")
    convs = [m for m in model.stem.deep.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.kernel_size for c in convs] == [(3, 3)] * 3 and convs[0].stride == (2, 2)
    sc = model.stages[1][0].shortcut
    assert sc.pool.kernel_size == 2 and sc.conv.stride == (1, 1)


def test_tweaks_use_the_vocabulary():
    vocab = {"resnet_d", "se", "sk", "sk_dagger", "big_little", "anti_alias"}
    # the architecture's config alone (describe() also counts each model's FLOPs, which this does not need)
    for name in MODELS:
        assert set(tweaks(resolve_config(name))) <= vocab
    assert tweaks(resolve_config("assemble_resnet50")) == ["resnet_d", "sk_dagger", "big_little", "anti_alias"]
    assert tweaks(resolve_config("resnet50")) == []


def test_errors_name_the_problem():
    with pytest.raises(UnknownNameError, match="did you mean: assemble_resnet50"):
        create_model("assemble_resnet_50")
    with pytest.raises(ConfigError, match="did you mean: num_classes"):
        create_model("resnet50", num_class=3)
    with pytest.raises(ConfigError, match="depth=42"):
        create_model("resnet50", depth=42)
    with pytest.raises(ConfigError, match="selective_kernel"):
        create_model("resnet50", selective_kernel="sk3")
    with pytest.raises(ConfigError, match="depth=18 is not available with big_little=True"):
        create_model("resnet18", big_little=True)
