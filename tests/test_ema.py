"""The weight EMA (regularization.ema): the average a hand-written loop computes, validated and saved beside
the raw weights, and exact across a stop and a resume."""

import json
import logging
import signal

import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from transfer.cli import cli
from transfer.engine.ema import WeightEma

from .training_helpers import tiny_recipe


def test_the_average_of_a_hand_written_loop():
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    ema, decay = WeightEma(model, 0.9), 0.9
    want = {k: v.clone().double() for k, v in model.state_dict().items()}
    g = torch.Generator().manual_seed(0)
    for _ in range(5):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn(p.shape, generator=g))
            model(torch.randn(8, 3, generator=g))  # moves the BN statistics and its batch counter
        ema.update(model)
        for k, v in model.state_dict().items():
            want[k] = decay * want[k] + (1 - decay) * v.double() if v.is_floating_point() else v.double()
    for k, v in ema.state_dict().items():
        assert torch.allclose(v.double(), want[k], atol=1e-6), k
    assert ema.state_dict()["1.num_batches_tracked"] == 5
    assert not any(p.requires_grad for p in ema.module.parameters())


def test_validated_saved_and_exact_across_a_stop(tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger="transfer")
    monkeypatch.setenv("TRANSFER_CACHE", str(tmp_path / "cache"))
    recipe = tiny_recipe(tmp_path, regularization={"ema": {"decay": 0.7}}, schedule={"epochs": 2})
    a, b = tmp_path / "a", tmp_path / "b"
    assert CliRunner().invoke(cli, ["pretrain", str(recipe), "--out", str(a)]).exit_code == 0
    monkeypatch.setenv("TRANSFER_TEST_FAULT", "validation:1:sigterm")
    res = CliRunner().invoke(cli, ["pretrain", str(recipe), "--out", str(b)])
    monkeypatch.delenv("TRANSFER_TEST_FAULT")
    assert res.exit_code == 128 + signal.SIGTERM
    assert CliRunner().invoke(cli, ["pretrain", "--resume", "--out", str(b)]).exit_code == 0
    for name in ("final", "ema_final", "ema_best"):
        wa, wb = load_file(str(a / "weights" / f"{name}.safetensors")), load_file(str(b / "weights" /
                                                                                       f"{name}.safetensors"))
        assert all(torch.equal(wa[k], wb[k]) for k in wa), name
    final, ema = load_file(str(a / "weights" / "final.safetensors")), load_file(str(a / "weights" /
                                                                                     "ema_final.safetensors"))
    assert any(not torch.equal(final[k], ema[k]) for k in final if k.endswith("weight"))
    rows = [json.loads(line) for line in (a / "metrics.jsonl").read_text().splitlines()]
    val = [r for r in rows if r["kind"] == "val"]
    assert len(val) == 2 and all("ema_top1" in r and "top1" in r for r in val)
    best_ema = max(r["ema_top1"] for r in val)
    assert json.loads((a / "weights" / "ema_best.json").read_text())["metrics"]["top1"] == best_ema
