"""Two CPU processes under torchrun (gloo) train like one process with the same global batch."""

import json
import subprocess
import sys

import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from transfer.cli import cli

from .training_helpers import cli_env, tiny_recipe

BN_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


def relative_l1(a: dict, b: dict, buffers: bool = False) -> float:
    keys = [k for k in a if (buffers and not k.endswith("num_batches_tracked")) or not k.endswith(BN_BUFFERS)]
    return sum((a[k] - b[k]).abs().sum().item() for k in keys) / sum(b[k].abs().sum().item() for k in keys)


def test_torchrun_two_processes_match_one_process(tmp_path):
    # No mixup and no DropBlock: their random draws are per process by design. Without SyncBN (CUDA only)
    # BN normalises each process's half of the batch, so the one process takes the same halves as two
    # accumulation steps of the same global batch; a one-process run without accumulation is the control.
    recipe = tiny_recipe(tmp_path, regularization={"mixup": {"alpha": 0.0}, "drop_block": {"keep_prob_end": 1.0}},
                         schedule={"epochs": 1}, output={"checkpoint_every_steps": 0})
    env = dict(cli_env(tmp_path), OMP_NUM_THREADS="1")

    ddp, single, control, groups = tmp_path / "ddp", tmp_path / "single", tmp_path / "control", tmp_path / "groups"
    res = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                          "-m", "transfer", "pretrain", str(recipe), "--out", str(ddp)],
                         capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    # The one-process runs in this process, on one thread like each torchrun worker.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for out, extra in ((single, ["--set", "optim.accumulation=2"]), (control, []),
                           (groups, ["--set", "runtime.group_size=8"])):
            res = CliRunner().invoke(cli, ["pretrain", str(recipe), "--out", str(out), *extra],
                                     env={"TRANSFER_CACHE": env["TRANSFER_CACHE"]})
            assert res.exit_code == 0, res.output[-3000:]
    finally:
        torch.set_num_threads(threads)
    weights = {name: load_file(str(tmp_path / name / "weights" / "final.safetensors"))
               for name in ("ddp", "single", "control", "groups")}
    same = relative_l1(weights["ddp"], weights["single"])
    other = relative_l1(weights["control"], weights["single"])
    print(f"relative L1: 2 processes vs 1 process x 2 accumulation {same:.2e}; vs the control {other:.2e}")
    assert same < 1e-5 and other > 100 * same, (same, other)
    # BN running statistics: each process's moving averages, then their mean (the official 8 GPUs' on read), are
    # one process's in groups of the per-process batch (GhostBatchNorm), buffers and all; rank 0's alone are not
    grouped = relative_l1(weights["ddp"], weights["groups"], buffers=True)
    stats = [k for k in weights["ddp"] if k.endswith(("running_mean", "running_var"))]
    assert stats and grouped < 1e-5, grouped
    # and accumulation moves them once a step, by the mean over its micro-batches: the same again
    assert relative_l1(weights["single"], weights["groups"], buffers=True) < 1e-5
    assert relative_l1(weights["control"], weights["groups"], buffers=True) > 100 * grouped  # they are seen
    info = json.loads((ddp / "run.json").read_text())
    assert info["status"] == "finished" and info["steps"] == 4
    # only rank 0 wrote: one metrics line per step, one event file; the logged loss is the global mean
    rows = [json.loads(line) for line in (ddp / "metrics.jsonl").read_text().splitlines()]
    single_rows = [json.loads(line) for line in (single / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r["kind"] == "train"] == [1, 2, 3, 4]
    assert len(list((ddp / "tb").iterdir())) == 1
    first = next(r for r in rows if r["kind"] == "train")["loss"]
    assert abs(first - next(r for r in single_rows if r["kind"] == "train")["loss"]) < 1e-5
    val = [r for r in rows if r["kind"] == "val"][-1]
    assert val["count"] == 24  # every validation image counted once across the two processes
