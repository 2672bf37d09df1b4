"""Each layer of the paper alone, against an independent reference or an invariant."""

import pytest
import torch
import torch.nn.functional as F

from transfer.models.layers import BlurPool, DropBlock, GeM, SelectiveKernel, SqueezeExcite, set_keep_prob


def blur_reference(x: torch.Tensor) -> torch.Tensor:
    """The definition: depthwise conv with [1,2,1]x[1,2,1]/16 on a reflect-padded input, stride 2."""
    c = x.shape[1]
    k = torch.tensor([1.0, 2.0, 1.0])
    k = (torch.outer(k, k) / 16).expand(c, 1, 3, 3)
    return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), k, stride=2, groups=c)


class TestBlurPool:
    def test_filter_is_normalised_binomial(self):
        f = BlurPool.filter()
        assert f.sum().item() == pytest.approx(1.0)
        assert torch.equal(f, f.T)
        assert f[1, 1] == 4 / 16 and f[0, 0] == 1 / 16

    @pytest.mark.parametrize("size", [(8, 8), (7, 9), (14, 5)])
    def test_matches_depthwise_convolution(self, size):
        x = torch.randn(2, 5, *size)
        out = BlurPool(5)(x)
        ref = blur_reference(x)
        assert out.shape == ref.shape
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)

    def test_constant_image_stays_constant(self):
        x = torch.full((1, 3, 10, 10), 0.7)
        torch.testing.assert_close(BlurPool(3)(x), torch.full((1, 3, 5, 5), 0.7))

    def test_channels_last(self):
        x = torch.randn(2, 4, 8, 8)
        out = BlurPool(4)(x.contiguous(memory_format=torch.channels_last))
        torch.testing.assert_close(out, blur_reference(x))


class TestSelectiveKernel:
    @pytest.mark.parametrize("kind", ["sk", "sk_dagger"])
    def test_attention_sums_to_one_per_channel(self, kind):
        sk = SelectiveKernel(16, 24, kind=kind, reduction=2, min_dim=4)
        paths, weights = sk.attention(torch.randn(3, 16, 9, 9))
        assert paths.shape == (3, 2, 24, 9, 9)
        assert weights.shape == (3, 2, 24, 1, 1)
        torch.testing.assert_close(weights.sum(1), torch.ones(3, 24, 1, 1))
        assert (weights > 0).all()

    def test_zero_selection_averages_the_paths(self):
        sk = SelectiveKernel(8, 8, kind="sk_dagger", min_dim=4).eval()
        torch.nn.init.zeros_(sk.select.weight)
        x = torch.randn(2, 8, 6, 6)
        paths, _ = sk.attention(x)
        torch.testing.assert_close(sk(x), paths.mean(1))

    def test_dagger_is_one_conv_to_twice_the_channels(self):
        sk = SelectiveKernel(16, 32, kind="sk_dagger")
        convs = [m for m in sk.paths.modules() if isinstance(m, torch.nn.Conv2d)]
        assert len(convs) == 1 and convs[0].weight.shape == (64, 16, 3, 3)
        assert sk.fuse[0].out_channels == 32  # d = max(C / r, L) = max(16, 32)
        sk2 = SelectiveKernel(16, 32, kind="sk")
        dil = [m.dilation for m in sk2.paths.modules() if isinstance(m, torch.nn.Conv2d)]
        assert dil == [(1, 1), (2, 2)]

    def test_stride(self):
        assert SelectiveKernel(4, 4, 2, min_dim=4)(torch.randn(2, 4, 8, 8)).shape == (2, 4, 4, 4)


def test_squeeze_excite_gates_channels():
    se = SqueezeExcite(32, reduction=16)
    assert se.reduce.out_channels == 2
    x = torch.randn(2, 32, 5, 5)
    torch.nn.init.zeros_(se.expand.weight)  # sigmoid(0) = 1/2 for every channel
    torch.testing.assert_close(se(x), x / 2)


class TestDropBlock:
    def test_identity_in_eval_and_at_keep_prob_one(self):
        x = torch.randn(2, 4, 14, 14)
        db = DropBlock(7, keep_prob=0.5).eval()
        assert torch.equal(db(x), x)
        db.train()
        db.keep_prob = 1.0
        assert torch.equal(db(x), x)

    @pytest.mark.parametrize("shared", [True, False])
    def test_drops_about_one_minus_keep_prob(self, shared):
        db = DropBlock(7, keep_prob=0.9, shared_mask=shared).train()
        x = torch.ones(16, 64, 56, 56)
        out = db(x)
        dropped = (out == 0).float().mean().item()
        assert abs(dropped - 0.1) < 0.02, dropped
        # survivors are rescaled so the expected activation is unchanged
        assert out.mean().item() == pytest.approx(1.0, rel=1e-4)

    def test_gamma_scale(self):
        x = torch.ones(4, 64, 28, 28)
        full = (DropBlock(7, 1.0, keep_prob=0.8).train()(x) == 0).float().mean().item()
        quarter = (DropBlock(7, 0.25, keep_prob=0.8).train()(x) == 0).float().mean().item()
        assert 0.15 < full < 0.25 and quarter < full / 2.5

    def test_dropped_region_is_union_of_square_blocks(self):
        # The morphological opening with a b x b square leaves a union of b x b squares unchanged.
        torch.manual_seed(3)
        b = 5
        db = DropBlock(b, keep_prob=0.8, shared_mask=False).train()
        dropped = (db(torch.ones(2, 8, 30, 30)) == 0).float()
        assert dropped.sum() > 0
        eroded = -F.max_pool2d(-dropped, b, stride=1)  # 1 where a whole b x b square is dropped
        opened = F.max_pool2d(F.pad(eroded, (b - 1,) * 4), b, stride=1)
        assert torch.equal(opened, dropped)

    def test_shared_mask_is_the_same_for_every_sample(self):
        out = DropBlock(3, keep_prob=0.7).train()(torch.ones(4, 2, 12, 12))
        assert all(torch.equal(out[0], out[i]) for i in range(4))

    def test_set_keep_prob(self):
        m = torch.nn.Sequential(DropBlock(), torch.nn.ReLU(), DropBlock())
        assert set_keep_prob(m, 0.75) == 2
        assert all(d.keep_prob == 0.75 for d in m if isinstance(d, DropBlock))
        with pytest.raises(ValueError):
            set_keep_prob(m, 0.0)


class TestGeM:
    def test_p_one_is_average_pooling(self):
        x = torch.rand(2, 3, 4, 5)
        torch.testing.assert_close(GeM(p=1.0)(x), x.mean((2, 3)))

    def test_matches_formula(self):
        x = torch.rand(2, 3, 4, 5) + 0.1
        torch.testing.assert_close(GeM(p=3.0)(x), (x**3).mean((2, 3)) ** (1 / 3))

    def test_large_p_approaches_max(self):
        x = torch.rand(2, 3, 4, 5) + 0.1
        torch.testing.assert_close(GeM(p=200.0)(x.double()), x.double().amax((2, 3)), rtol=0.02, atol=0)

    def test_learnable_p_gets_gradient(self):
        gem = GeM(learnable=True)
        gem(torch.rand(2, 3, 4, 4)).sum().backward()
        assert gem.p.grad is not None and gem.p.grad.abs() > 0
        assert "p" not in GeM(learnable=False).state_dict()


def test_drop_block_schedule_does_not_recompile_a_compiled_model():
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), DropBlock(3, keep_prob=1.0)).train()
    compiled = torch.compile(model, backend="eager")  # the graph capture is what recompiles; no codegen needed
    x = torch.ones(2, 3, 12, 12)
    for kp in torch.linspace(1.0, 0.7, 12).tolist():
        set_keep_prob(model, kp)
        out = compiled(x)
    assert counters["stats"]["unique_graphs"] == 1
    assert (out == 0).any()  # the last keep_prob (0.7) does drop
