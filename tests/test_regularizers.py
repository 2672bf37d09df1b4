"""Each regulariser and schedule against a hand-written reference."""

import math

import pytest
import torch
import torch.nn.functional as F

from transfer import create_model
from transfer.data.mixing import sample_lambda
from transfer.engine.losses import distillation_loss, one_hot_smoothed, soft_cross_entropy
from transfer.engine.objective import Objective
from transfer.engine.optim import Schedules, bn_momentum_for, linear, param_groups, warmup_cosine
from transfer.models.layers import DropBlock


def test_label_smoothing_loss_matches_the_formula():
    logits = torch.tensor([[2.0, 0.5, -1.0], [0.0, 1.0, 3.0]])
    labels = torch.tensor([0, 2])
    eps, k = 0.1, 3
    expected = 0.0
    for row, y in zip(logits.tolist(), labels.tolist(), strict=True):
        logz = math.log(sum(math.exp(v) for v in row))
        for j, v in enumerate(row):
            q = (1 - eps) + eps / k if j == y else eps / k
            expected -= q * (v - logz)
    expected /= 2
    got = soft_cross_entropy(logits, one_hot_smoothed(labels, k, eps))
    assert got.item() == pytest.approx(expected, rel=1e-6)
    assert F.cross_entropy(logits, labels, label_smoothing=eps).item() == pytest.approx(expected, rel=1e-6)


def test_lambda_distribution():
    torch.manual_seed(0)
    per = sample_lambda(20000, 0.2, "per_sample")
    assert per.std() > 0.3 and abs(per.mean() - 0.5) < 0.02  # Beta(.2,.2): U-shaped, mean 1/2, var 0.179
    assert abs(per.var().item() - 0.25 / 1.4) < 0.01
    batch = sample_lambda(8, 0.2, "batch")
    assert torch.all(batch == batch[0])


def test_distillation_loss_at_known_logits():
    s = torch.tensor([[1.0, 2.0, 0.0]])
    t = torch.tensor([[0.0, 3.0, 1.0]])
    T = 2.0
    p = [math.exp(v / T) for v in t[0].tolist()]
    p = [v / sum(p) for v in p]
    q = [v / T for v in s[0].tolist()]
    logz = math.log(sum(math.exp(v) for v in q))
    expected = T * T * -sum(pi * (qi - logz) for pi, qi in zip(p, q, strict=True))
    got = distillation_loss(s, torch.softmax(t / T, 1), T)
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_objective_mixes_precomputed_teacher_logits_with_the_same_lambda():
    torch.manual_seed(1)
    logits_table = torch.randn(10, 3)
    obj = Objective(3, label_smoothing=0.1, mixup_alpha=0.2, teacher_logits=logits_table, temperature=1.0)
    x = torch.randn(4, 3, 2, 2)
    idx = torch.tensor([7, 2, 5, 0])
    torch.manual_seed(5)
    mixed, (y, t) = obj.prepare(x, torch.tensor([0, 1, 2, 0]), idx)
    torch.manual_seed(5)
    lam = sample_lambda(4, 0.2, "per_sample")
    ref_t = torch.softmax(logits_table[idx], 1)
    for i, j in enumerate([2, 3, 3, 2]):  # in_batch (the official type 2): halves, then the reversed second half
        a = i % 2
        torch.testing.assert_close(t[i], lam[i] * ref_t[a] + (1 - lam[i]) * ref_t[j])
        torch.testing.assert_close(mixed[i], lam[i] * x[a] + (1 - lam[i]) * x[j])
    loss, parts = obj.loss(torch.randn(4, 3), [y, t])
    assert set(parts) == {"ce", "kd"} and torch.isclose(loss, parts["ce"] + parts["kd"])


def test_objective_runs_a_teacher_model_on_the_mixed_batch():
    teacher = create_model("resnet_tiny", num_classes=3, width=0.125).eval()
    obj = Objective(3, mixup_alpha=0.2, teacher=teacher, temperature=2.0)
    mixed, (_, t) = obj.prepare(torch.randn(2, 3, 32, 32), torch.tensor([0, 1]), torch.tensor([0, 1]))
    with torch.no_grad():
        torch.testing.assert_close(t, torch.softmax(teacher(mixed) / 2.0, 1))


def test_warmup_then_cosine_curve():
    base, total, warm = 0.4, 100, 10
    got = [warmup_cosine(s, total, warm, base) for s in range(total)]
    for s in range(warm):
        assert got[s] == pytest.approx(base * (s + 1) / warm)
    for s in range(warm, total):
        assert got[s] == pytest.approx(0.5 * base * (1 + math.cos(math.pi * (s - warm) / (total - warm))))
    assert max(got) == pytest.approx(base) and got[-1] < 0.001
    assert warmup_cosine(50, 100, 10, 0.4, schedule="constant") == 0.4


def test_keep_prob_schedule_is_linear_over_all_steps_and_reaches_the_model():
    assert [round(linear(s, 5, 1.0, 0.9), 6) for s in range(5)] == [1.0, 0.975, 0.95, 0.925, 0.9]
    from transfer.recipe import OptimSection, RegularizationSection, ScheduleSection

    reg = RegularizationSection()
    reg.drop_block.keep_prob_start, reg.drop_block.keep_prob_end = 1.0, 0.7
    sched = Schedules.from_recipe(OptimSection(lr=0.1, batch_size=512), ScheduleSection(epochs=2, warmup_epochs=1),
                                  reg, steps_per_epoch=10)
    assert sched.base_lr == pytest.approx(0.2)  # linear scaling: 0.1 per 256 images
    model = create_model("assemble_resnet_tiny", width=0.125, sk_min_dim=4)
    opt = torch.optim.SGD(param_groups(model, 1e-4), lr=0.0)
    values = sched.apply(19, opt, model)
    assert values["keep_prob"] == pytest.approx(0.7)
    assert all(m.keep_prob == pytest.approx(0.7) for m in model.modules() if isinstance(m, DropBlock))
    assert all(g["lr"] == pytest.approx(sched.lr(19)) for g in opt.param_groups)


def assembled(**kw):
    """Assemble-ResNet-50 at 1/8 width with a GeM pool and an embedding layer: every kind of layer the zoo
    has (deep stem, SK, Big-Little, anti-aliasing, the embedding's BatchNorm1d, a learnable GeM p)."""
    return create_model("assemble_resnet50", width=0.125, sk_min_dim=4, num_classes=3, embedding_dim=16,
                        pool="gem", gem_learnable=True, **kw)


def decayed_ids(groups):
    return {id(p) for g in groups if g["weight_decay"] > 0 for p in g["params"]}


def test_weight_decay_groups_by_module_type_on_the_assembled_network():
    """Walk the modules by type, not by name: every norm's weight and bias is undecayed, every conv and linear
    weight decayed, the classifier's bias decayed (the paper) unless decay_bias=False, a scalar undecayed, and
    each parameter is in exactly one group."""
    model = assembled()
    groups = param_groups(model, 1e-4)
    decayed = decayed_ids(groups)
    everything = [id(p) for g in groups for p in g["params"]]
    assert sorted(everything) == sorted(id(p) for p in model.parameters())  # each once
    kinds = {"norm": 0, "weight": 0, "bias": 0, "scalar": 0}
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                assert id(p) not in decayed, (type(module).__name__, name)
                kinds["norm"] += 1
            elif p.ndim == 0:
                assert id(p) not in decayed, (type(module).__name__, name)
                kinds["scalar"] += 1
            elif isinstance(module, torch.nn.Conv2d | torch.nn.Linear) and name == "weight":
                assert id(p) in decayed, type(module).__name__
                kinds["weight"] += 1
            elif name == "bias":
                assert id(p) in decayed, type(module).__name__
                kinds["bias"] += 1
            else:
                raise AssertionError(f"a parameter of an unexpected kind: {type(module).__name__}.{name}")
    bns = sum(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())
    assert kinds["norm"] == 2 * bns and kinds["scalar"] == 1 and kinds["bias"] >= 1 and kinds["weight"] > 50
    assert id(model.fc.bias) not in decayed_ids(param_groups(model, 1e-4, decay_bias=False))
    assert decayed_ids(param_groups(model, 1e-4, decay_norm=True)) >= \
        {id(p) for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d) for p in m.parameters(False)}
    scaled = param_groups(model, 1e-4, lr_scale={"stages.": 0.1})
    assert {g["lr_scale"] for g in scaled} == {1.0, 0.1}


def test_the_bn_momentum_rule_reaches_every_batchnorm(tmp_path):
    """The trainer's set-up with optim.bn_momentum_rule gives the rule's momentum to every BatchNorm of the
    assembled network (SK, deep stem, Big-Little, shortcut, embedding), counted independently from the
    running statistics in its state dict."""
    from transfer.engine.trainer import Trainer
    from transfer.recipe import Recipe
    from transfer.runtime import Dist
    from transfer.stages.train import trainer_settings

    recipe = Recipe()
    recipe.optim.bn_momentum_rule = True
    recipe.regularization.ema.decay = 0.0
    model = assembled()
    trainer = Trainer(model, torch.nn.Identity(), None, None, trainer_settings(recipe), None, Dist(),
                      validate=None, select="top1")
    trainer._build(steps_per_epoch=200)  # TF decay max(1 - 10/200, 0.9) = 0.95: momentum 0.05, not the default
    momenta = [m.momentum for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    running = [k for k in model.state_dict() if k.endswith("running_mean")]
    assert len(momenta) == len(running) > 90
    assert bn_momentum_for(200) == pytest.approx(0.05)
    assert all(m == pytest.approx(0.05) for m in momenta), sorted(set(momenta))


def test_bn_momentum_rule():
    # TF decay max(1 - 10/s, 0.9), as PyTorch momentum 1 - decay
    assert bn_momentum_for(20) == pytest.approx(0.1)
    assert bn_momentum_for(1000) == pytest.approx(0.01)
    assert bn_momentum_for(50) == pytest.approx(0.1)
