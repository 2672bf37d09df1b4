"""Mixup paired as the official code pairs it (two batches: --mixup_type=1; in batch: type 2) and groups of
samples (runtime.group_size): each checked against a loop written out by hand from the official definitions."""

import json
import logging

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file
from torch import nn

from transfer.cli import cli
from transfer.data.loader import EpochBatchSampler
from transfer.data.mixing import BatchLayout, pair_up
from transfer.engine.checkpoint import load_checkpoint
from transfer.engine.losses import one_hot_smoothed
from transfer.engine.objective import Objective
from transfer.models.layers import DropBlock, GhostBatchNorm, set_group_size

from .test_nothing_lost import invoke
from .training_helpers import tiny_recipe

K, ALPHA, EPS = 5, 0.2, 0.1


def beta_draws(count: int, seed: int) -> torch.Tensor:
    """`count` Beta(ALPHA, ALPHA) draws after torch.manual_seed(seed), as the trainer's step seed leaves the RNG."""
    torch.manual_seed(seed)
    return torch.distributions.Beta(torch.tensor([ALPHA]), torch.tensor([ALPHA])).sample((count,)).view(count)


def images_of(items, table):
    idx = torch.tensor([i for i, _ in items])
    return table[idx], idx


# ---------------------------------------------------------------------------------------------- two batches
def test_two_batches_reads_2n_images_in_n_over_b_steps_each_round_a_shuffle_of_its_own():
    n, b = 40, 8
    s = EpochBatchSampler(n, b, seed=4, reads=2)
    assert s.steps_per_epoch == n // b  # the steps of an epoch stay N/B ...
    s.set_epoch(3)
    batches = list(s)
    assert len(batches) == n // b and all(len(mb) == 2 * b for mb in batches)  # ... and each reads 2B images
    items = [it for mb in batches for it in mb]
    assert sorted(i for i, _ in items) == sorted(list(range(n)) * 2)  # 2N images: every image twice
    # two rounds one after the other (the official repeats its shuffled dataset), keyed 6 and 7: an image's two
    # reads are augmented differently
    assert [key for _, key in items] == [6] * n + [7] * n
    assert sorted(i for i, _ in items[:n]) == list(range(n)) and items[:n] != items[n:]
    # the same epoch on one read per sample is the first round's order, B at a time (the old sampler)
    one = EpochBatchSampler(n, b, seed=4)
    one.set_epoch(3)
    assert [i for mb in one for i, _ in mb] == [i for i, _ in items[:n]]


@pytest.mark.parametrize("group", [None, 2])
def test_two_batches_mixes_each_groups_first_half_with_its_second_as_a_hand_loop(group):
    n, micro = 24, 4
    table = torch.randn(n, 3, 4, 4)
    labels = torch.randint(0, K, (n,))
    logits = torch.randn(n, K)
    s = EpochBatchSampler(n, micro, seed=1, reads=2)
    s.set_epoch(0)
    items = next(iter(s))
    x, idx = images_of(items, table)
    obj = Objective(K, label_smoothing=EPS, mixup_alpha=ALPHA, teacher_logits=logits)
    torch.manual_seed(9)
    mixed, (y, t) = obj.prepare(x, labels[idx], idx, BatchLayout(reads=2, group=group))
    lam = beta_draws(micro, 9)
    g = group or micro
    assert mixed.shape[0] == micro == y.shape[0] == t.shape[0]
    for k in range(micro // g):  # the official per GPU: x1, x2 = split(x, 2); lam x1 + (1 - lam) x2
        for i in range(g):
            s_, a, b = k * g + i, idx[2 * g * k + i], idx[2 * g * k + g + i]
            torch.testing.assert_close(mixed[s_], lam[s_] * table[a] + (1 - lam[s_]) * table[b])
            ya, yb = (torch.eye(K)[labels[j]] * (1 - EPS) + EPS / K for j in (a, b))  # smoothed one-hot
            torch.testing.assert_close(y[s_], lam[s_] * ya + (1 - lam[s_]) * yb)
            ta, tb = torch.softmax(logits[a], 0), torch.softmax(logits[b], 0)  # teacher probabilities, T = 1
            torch.testing.assert_close(t[s_], lam[s_] * ta + (1 - lam[s_]) * tb)


def test_in_batch_is_the_official_type_2_halves_then_the_reversed_second_half():
    b = 8
    x = torch.randn(b, 3, 2, 2)
    labels = torch.randint(0, K, (b,))
    logits = torch.randn(20, K)
    idx = torch.randperm(20)[:b]
    obj = Objective(K, label_smoothing=EPS, mixup_alpha=ALPHA, teacher_logits=logits, temperature=2.0)
    torch.manual_seed(3)
    mixed, (y, t) = obj.prepare(x, labels, idx)
    lam = beta_draws(b, 3)
    lam1, lam2 = lam[:b // 2], lam[b // 2:]  # data_util.py: lam1 for mixed_sx1, lam2 for mixed_sx2
    x1, x2 = x[:b // 2], x[b // 2:]
    y_all = one_hot_smoothed(labels, K, EPS)
    t_all = torch.softmax(logits[idx] / 2.0, 1)
    for j in range(b // 2):
        r = b // 2 - 1 - j  # x3 = reverse(x2)
        torch.testing.assert_close(mixed[j], lam1[j] * x1[j] + (1 - lam1[j]) * x2[j])
        torch.testing.assert_close(mixed[b // 2 + j], lam2[j] * x1[j] + (1 - lam2[j]) * x2[r])
        torch.testing.assert_close(y[b // 2 + j], lam2[j] * y_all[j] + (1 - lam2[j]) * y_all[b // 2 + r])
        # the teacher's targets mixed with the same pairing (the official's type 2 mixes one-hot y1 there)
        torch.testing.assert_close(t[b // 2 + j], lam2[j] * t_all[j] + (1 - lam2[j]) * t_all[b // 2 + r])
        torch.testing.assert_close(t[j], lam1[j] * t_all[j] + (1 - lam1[j]) * t_all[b // 2 + j])


def test_a_lambda_per_group_in_batch_mode_and_partners_never_cross_a_group():
    p = pair_up(24, BatchLayout(reads=2, group=4))
    assert torch.equal(p.first // 8, p.group) and torch.equal(p.second // 8, p.group)
    obj = Objective(K, mixup_alpha=ALPHA, mixup_mode="batch")
    x = torch.arange(24.0).view(24, 1)
    torch.manual_seed(0)
    mixed, _ = obj.prepare(x, torch.zeros(24, dtype=torch.long), torch.arange(24), BatchLayout(reads=2, group=4))
    lam = (mixed.view(-1) - x[p.second].view(-1)) / (x[p.first] - x[p.second]).view(-1)
    per_group = lam.view(3, 4)
    assert torch.allclose(per_group, per_group[:, :1].expand(3, 4), atol=1e-5)
    assert len({round(v, 4) for v in per_group[:, 0].tolist()}) == 3


def test_rank_shards_with_two_batches_are_one_process_with_groups():
    """Two processes of micro-batch g are one process of micro-batch 2g in groups of g: the same images, the
    same partners (each rank's shard is the next stretch of the stream, as each official GPU's batch is)."""
    n, g = 48, 4
    ranks = [EpochBatchSampler(n, g, seed=5, rank=r, world=2, reads=2) for r in range(2)]
    acc = EpochBatchSampler(n, g, seed=5, accumulation=2, reads=2)
    one = EpochBatchSampler(n, 2 * g, seed=5, reads=2)
    for s in (*ranks, acc, one):
        s.set_epoch(1)
    per_rank, accumulated, single = [list(s) for s in ranks], list(acc), list(one)
    assert len(single) == one.steps_per_epoch == ranks[0].steps_per_epoch == n // (2 * g)
    for step, mb in enumerate(single):
        assert mb == per_rank[0][step] + per_rank[1][step]
        assert accumulated[2 * step:2 * step + 2] == [per_rank[0][step], per_rank[1][step]]
        grouped, alone = pair_up(4 * g, BatchLayout(reads=2, group=g)), pair_up(2 * g, BatchLayout(reads=2))
        pairs = [(mb[a][0], mb[b][0]) for a, b in zip(grouped.first.tolist(), grouped.second.tolist(), strict=True)]
        assert pairs == [(shard[a][0], shard[b][0]) for shard in (per_rank[0][step], per_rank[1][step])
                         for a, b in zip(alone.first.tolist(), alone.second.tolist(), strict=True)]


# ---------------------------------------------------------------------------------------------- groups
@pytest.mark.parametrize("dims", [(3, 5, 4), ()])
def test_ghost_batch_norm_is_plain_batch_norm_on_each_group(dims):
    n, g, c, m = 12, 4, 3, 0.1
    bn_cls = nn.BatchNorm2d if dims else nn.BatchNorm1d
    shape = (n, c, *dims[1:]) if dims else (n, c)
    x = (torch.randn(shape) * 2 + 1).double()
    ghost = bn_cls(c, momentum=m).double()
    with torch.no_grad():
        ghost.weight.copy_(torch.rand(c) + 0.5)
        ghost.bias.copy_(torch.randn(c))
        ghost.running_mean.copy_(torch.randn(c))
        ghost.running_var.copy_(torch.rand(c) + 0.5)
    r_mean, r_var = ghost.running_mean.clone(), ghost.running_var.clone()
    plain = [bn_cls(c, momentum=m).double() for _ in range(n // g)]
    for p in plain:
        p.load_state_dict(ghost.state_dict())
    holder = nn.Sequential(ghost)
    assert set_group_size(holder, g) == 1 and isinstance(holder[0], GhostBatchNorm)
    ghost = holder[0].train()
    xg = x.clone().requires_grad_(True)
    out = ghost(xg)
    out.pow(2).sum().backward()
    parts = [x[k * g:(k + 1) * g].clone().requires_grad_(True) for k in range(n // g)]
    ref = [p.train()(part) for p, part in zip(plain, parts, strict=True)]
    sum(r.pow(2).sum() for r in ref).backward()
    torch.testing.assert_close(out, torch.cat(ref))
    torch.testing.assert_close(xg.grad, torch.cat([p.grad for p in parts]))
    torch.testing.assert_close(ghost.weight.grad, sum(p.weight.grad for p in plain))
    # by hand: (x - group mean) / sqrt(group biased var + eps) * w + b
    axes = (0, *range(2, x.dim()))
    view = (1, c, *([1] * (x.dim() - 2)))
    for k in range(n // g):
        part = x[k * g:(k + 1) * g]
        mu, var = part.mean(axes), part.var(axes, unbiased=False)
        want = (part - mu.view(view)) / (var.view(view) + ghost.eps).sqrt() * ghost.weight.view(view) + \
            ghost.bias.view(view)
        torch.testing.assert_close(out[k * g:(k + 1) * g], want)
    # running statistics: the mean over groups (GPUs) of each group's mean and unbiased variance, averaged in
    groups = x.view(n // g, g, *x.shape[1:]).transpose(1, 2).reshape(n // g, c, -1)
    torch.testing.assert_close(ghost.running_mean, (1 - m) * r_mean + m * groups.mean(2).mean(0))
    torch.testing.assert_close(ghost.running_var, (1 - m) * r_var + m * groups.var(2, unbiased=True).mean(0))
    assert int(ghost.num_batches_tracked) == 1
    same = bn_cls(c).double().eval()  # outside training it is plain BN on the running statistics
    same.load_state_dict(ghost.state_dict())
    torch.testing.assert_close(ghost.eval()(x), same(x))


@pytest.mark.parametrize("group", [None, 2])
def test_deferred_statistics_move_once_a_step_by_the_mean_over_micro_batches(group):
    """Gradient accumulation: three micro-batches (each in groups, or whole) normalise as plain BN on each, and
    the running statistics move once, at the commit, by the mean of every group's mean and unbiased variance:
    one step over that many GPUs, not three moves."""
    from transfer.models.layers import commit_statistics, defer_statistics

    c, m = 3, 0.1
    micro = [torch.randn(4, c, 5, 5).double() * 2 + k for k in range(3)]
    bn = nn.BatchNorm2d(c, momentum=m).double()
    with torch.no_grad():
        bn.running_mean.copy_(torch.randn(c))
        bn.running_var.copy_(torch.rand(c) + 0.5)
    r_mean, r_var = bn.running_mean.clone(), bn.running_var.clone()
    holder = nn.Sequential(bn)
    set_group_size(holder, group)
    assert defer_statistics(holder) == 1 and holder[0].deferred
    layer = holder[0].train()
    size = group or 4
    for x in micro:
        out = layer(x)
        want = torch.cat([nn.functional.batch_norm(p, None, None, layer.weight, layer.bias, True, 0.0, layer.eps)
                          for p in x.split(size)])
        torch.testing.assert_close(out, want)
    torch.testing.assert_close(layer.running_mean, r_mean)  # nothing moved before the commit
    commit_statistics(holder)
    groups = [p for x in micro for p in x.split(size)]
    flat = torch.stack([p.transpose(0, 1).reshape(c, -1) for p in groups])
    torch.testing.assert_close(layer.running_mean, (1 - m) * r_mean + m * flat.mean(2).mean(0))
    torch.testing.assert_close(layer.running_var, (1 - m) * r_var + m * flat.var(2, unbiased=True).mean(0))
    assert int(layer.num_batches_tracked) == 1
    commit_statistics(holder)  # a second commit with nothing pending moves nothing
    assert int(layer.num_batches_tracked) == 1


def test_group_size_keeps_the_weights_and_the_state_dict_of_a_model():
    from transfer import create_model

    model = create_model("assemble_resnet_tiny", width=0.125, sk_min_dim=4)
    before = dict(model.state_dict())
    params = list(model.parameters())
    bns = sum(isinstance(mod, nn.BatchNorm1d | nn.BatchNorm2d) for mod in model.modules())
    drops = sum(isinstance(mod, DropBlock) for mod in model.modules())
    assert set_group_size(model, 4) == bns + drops and drops > 0
    assert all(isinstance(mod, GhostBatchNorm) for mod in model.modules() if isinstance(mod, nn.BatchNorm2d))
    assert list(model.parameters()) == params  # the same tensors: an optimizer made before still holds them
    after = model.state_dict()
    assert after.keys() == before.keys() and all(after[k].data_ptr() == v.data_ptr() for k, v in before.items())


@pytest.mark.parametrize("shared", [True, False])
def test_drop_block_normalises_each_group_as_a_loop_over_groups(shared):
    n, g, c, h = 6, 2, 4, 9
    x = torch.rand(n, c, h, h) + 0.5
    torch.manual_seed(0)  # the premise: one draw of k rows is k draws of one row (the CPU generator is serial)
    whole = torch.rand(3, 5)
    torch.manual_seed(0)
    assert torch.equal(whole, torch.cat([torch.rand(1, 5) for _ in range(3)]))
    grouped = DropBlock(3, keep_prob=0.7, shared_mask=shared).train()
    grouped.group_size = g
    torch.manual_seed(1)
    got = grouped(x)
    alone = DropBlock(3, keep_prob=0.7, shared_mask=shared).train()
    torch.manual_seed(1)
    want = torch.cat([alone(x[k * g:(k + 1) * g]) for k in range(n // g)])
    torch.testing.assert_close(got, want)
    # each group rescaled by its own kept count: the rescaling differs between groups
    kept = [(want[k * g:(k + 1) * g] > 0).double().mean().item() for k in range(n // g)]
    assert len({round(v, 6) for v in kept}) > 1
    scales = [(want[k * g:(k + 1) * g] / x[k * g:(k + 1) * g])[want[k * g:(k + 1) * g] > 0].mean().item()
              for k in range(n // g)]
    for kp, sc in zip(kept, scales, strict=True):
        assert sc == pytest.approx(1 / kp, rel=1e-5)


def test_drop_block_in_half_precision_keeps_its_scale():
    # stage 3's 1024 x 14 x 14 values: a half-precision count overflows (inf), which zeroed the activations
    x = torch.ones(1, 1024, 14, 14, dtype=torch.half)
    out = DropBlock(7, keep_prob=0.9).train()(x)
    assert out.dtype == torch.half and float(out.float().mean()) == pytest.approx(1.0, abs=2e-3)


# ---------------------------------------------------------------------------------------------- a run
def test_two_batches_in_groups_resumed_mid_epoch_is_the_uninterrupted_run(tmp_path, caplog, monkeypatch):
    # one epoch of 32 images in 4 steps of 8 samples (16 images read each, 2 groups of 4), checkpoints every 2.
    # The run dies at its second checkpoint (a full disk, test_nothing_lost's in-process fault: a SIGKILL costs a
    # command's import), leaving the one of step 2, mid-epoch; --resume continues from there.
    monkeypatch.setenv("TRANSFER_CACHE", str(tmp_path / "cache"))
    sections = {"data": {"embedded": {"train_per_class": 8, "val_per_class": 2}}, "optim": {"batch_size": 8},
                "regularization": {"mixup": {"alpha": 0.2, "pairing": "two_batches"}},
                "runtime": {"group_size": 4}, "schedule": {"epochs": 1}, "output": {"tensorboard": False}}
    recipe = tiny_recipe(tmp_path, **sections)
    cut, whole = tmp_path / "cut", tmp_path / "whole"
    res = invoke("pretrain", recipe, "--out", cut, fault="last.pt:2:enospc", monkeypatch=monkeypatch)
    assert res.exit_code == 2 and "no space left" in res.output, res.output
    train = load_checkpoint(cut / "checkpoints" / "last.pt")["train"]
    assert (train["step"], train["epoch"], train["micro_batch"]) == (2, 0, 2)
    caplog.set_level(logging.INFO, logger="transfer")
    for args in (["--resume", "--out", cut], [recipe, "--out", whole]):
        res = invoke("pretrain", *args)
        assert res.exit_code == 0, res.output
    assert "each step of 8 samples reads 16 images" in caplog.text
    a, b = (load_file(str(run / "weights" / "final.safetensors")) for run in (cut, whole))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((whole / "run.json").read_text())["steps"] == 4  # N/B steps, though 2N images are read


def test_a_group_size_that_does_not_divide_the_micro_batch_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("TRANSFER_CACHE", str(tmp_path / "cache"))
    res = CliRunner().invoke(cli, ["pretrain", str(tiny_recipe(tmp_path)), "--out", str(tmp_path / "run"),
                                   "--set", "runtime.group_size=5"])
    assert res.exit_code == 2 and "error: runtime.group_size=5 must divide" in res.output
