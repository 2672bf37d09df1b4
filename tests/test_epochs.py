"""Epochs as the official fine-tuning runs them: which epochs validate (every N, then every epoch in the last
part: the official ratio_fine_eval), and how many optimizer steps an epoch has when its incomplete last batch is
kept (data.drop_last false) or dropped; against lists and counts worked out by hand, and a run that stops and
resumes around the short step."""

import json

import pytest
from click.testing import CliRunner

from transfer.cli import cli
from transfer.data.loader import EpochBatchSampler
from transfer.engine.trainer import validation_epochs

from .training_helpers import assert_same_artefacts, run_artefacts, tiny_recipe


@pytest.mark.parametrize(("epochs", "every", "fine_from", "want"), [
    # scripts/finetuning_assemble_on_food101.sh: 100 epochs, --epochs_between_evals=10 --ratio_fine_eval=0.9
    (100, 10, 0.9, [10, 20, 30, 40, 50, 60, 70, 80, 90, 91, 92, 93, 94, 95, 96, 97, 98, 99, 100]),
    # int(95 * 0.9) = 85 falls inside the block 81-90, which the official splits whole into single epochs
    (95, 10, 0.9, [10, 20, 30, 40, 50, 60, 70, 80, *range(81, 96)]),
    (7, 3, 1.0, [3, 6, 7]),  # no fine part: every 3 epochs and the last
    (5, 10, 0.0, [1, 2, 3, 4, 5]),
    (5, 2, 0.6, [2, 3, 4, 5]),  # int(3.0) = 3: the block 3-4 ends after it, the block 1-2 does not
])
def test_validation_epochs_as_the_official_schedule(epochs, every, fine_from, want):
    assert validation_epochs(epochs, every, fine_from) == want


def test_flowers_validates_190_times():
    """Flowers: 1000 epochs, every 10, fine part from epoch 900: 90 + 100 validations."""
    got = validation_epochs(1000, 10, 0.9)
    assert len(got) == 190 and got[89:91] == [900, 901]


@pytest.mark.parametrize(("n", "micro", "world", "accumulation", "floor", "ceil"), [
    (2040, 256, 1, 1, 7, 8),  # Flowers-102 at batch 256: 2040 = 7 x 256 + 248, 12.5% fewer steps when dropped
    (75750, 256, 1, 1, 295, 296),  # Food-101: 75750 = 295 x 256 + 230
    (2040, 64, 2, 2, 7, 8),  # the same global batch dealt to 2 processes x 2 accumulation steps
    (256 * 7 + 3, 128, 2, 1, 7, 7),  # a tail of 3 for 2 micro-batches: one would get a single sample, dropped
    (256 * 7 + 4, 128, 2, 1, 7, 8),  # a tail of 4: two each, kept
    (512, 256, 1, 1, 2, 2),  # no tail
])
def test_steps_per_epoch_with_and_without_the_last_batch(n, micro, world, accumulation, floor, ceil):
    for drop_last, want in ((True, floor), (False, ceil)):
        for rank in range(world):
            s = EpochBatchSampler(n, micro, world=world, rank=rank, accumulation=accumulation, drop_last=drop_last)
            assert s.steps_per_epoch == want and len(list(s)) == want * accumulation


@pytest.mark.parametrize("reads", [1, 2])
def test_the_kept_tail_deals_every_sample_once_as_one_process_would(reads):
    """n = 2 x 32 + 14: the third step holds the last 14 samples, dealt contiguously to 4 micro-batches of 3, 4, 3, 4
    (boundaries k * 14 // 4 = 0, 3, 7, 10, 14); 2 processes x 2 accumulation see one process x 4's micro-batches."""
    n, micro = 78, 8
    one = EpochBatchSampler(n, micro, accumulation=4, reads=reads, drop_last=False, seed=3)
    one.set_epoch(1)
    batches = list(one)
    assert len(batches) == 12 and [len(b) // reads for b in batches[8:]] == [3, 4, 3, 4]
    assert all(len(b) == micro * reads for b in batches[:8])
    keys = [k for b in batches for k in b]
    assert len(keys) == len(set(keys)) == n * reads  # every image key once (two rounds with two_batches)
    assert sorted({i for i, _ in keys}) == list(range(n))
    shards = []
    for rank in range(2):
        s = EpochBatchSampler(n, micro * 2, world=2, rank=rank, accumulation=2, reads=reads, drop_last=False,
                              seed=3)
        s.micro = micro  # the same micro-batch of 8: global batch 32 either way
        s.set_epoch(1)
        shards.append(list(s))
    assert [b for step in range(3) for r in range(2) for b in shards[r][2 * step:2 * step + 2]] == batches
    resumed = EpochBatchSampler(n, micro, accumulation=4, reads=reads, drop_last=False, seed=3)
    resumed.set_epoch(1, start_micro_batch=9)  # inside the short step
    assert list(resumed) == batches[9:]


TAIL = {"data": {"embedded": {"train_per_class": 6, "val_per_class": 3}, "drop_last": False},
        "optim": {"batch_size": 10}, "schedule": {"epochs": 3},
        "eval": {"every_epochs": 2, "fine_from": 0.5}, "output": {"checkpoint_every_steps": 2, "tensorboard": False}}


def test_a_run_keeps_the_short_step_validates_on_schedule_and_resumes_exactly(tmp_path, monkeypatch):
    """24 training images at batch 10: 3 steps an epoch (10, 10, 4), 9 in 3 epochs (6 if dropped); validation
    after epochs 1, 2, 3 (the block 1-2 ends after int(3 x 0.5) = 1; every 2 epochs alone: 2, 3). A stop inside
    epoch 2, before its short step, resumed, gives the same run."""
    monkeypatch.setenv("TRANSFER_CACHE", str(tmp_path / "cache"))
    recipe = tiny_recipe(tmp_path, **TAIL)
    res = CliRunner().invoke(cli, ["pretrain", str(recipe), "--out", str(tmp_path / "ref")])
    assert res.exit_code == 0, res.output
    rows = [json.loads(line) for line in (tmp_path / "ref" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r["kind"] == "train"] == list(range(1, 10))
    assert [r["epoch"] + 1 for r in rows if r["kind"] == "val"] == [1, 2, 3]
    run = tmp_path / "run"
    # checkpoints after steps 2, 3 (epoch 1's end) and 4; SIGTERM once the third is written: the run stops after
    # step 5, the second of epoch 2, and resumes with its short step
    monkeypatch.setenv("TRANSFER_TEST_FAULT", "last.pt:3:sigterm")
    res = CliRunner().invoke(cli, ["pretrain", str(recipe), "--out", str(run)])
    monkeypatch.delenv("TRANSFER_TEST_FAULT")
    assert res.exit_code == 143, res.output
    assert json.loads((run / "run.json").read_text())["steps"] == 5
    res = CliRunner().invoke(cli, ["pretrain", "--resume", "--out", str(run)])
    assert res.exit_code == 0, res.output
    assert_same_artefacts(run_artefacts(run), run_artefacts(tmp_path / "ref"))


@pytest.mark.parametrize(("name", "validations"), [
    # 100 / 10 blocks, the last one split: 9 + 10; 1000: 90 + 100; 800: 72 + 80; 1300: 117 + 130
    ("food101", 19), ("flowers", 190), ("cars", 190), ("aircraft", 152), ("pets", 247),
])
def test_the_fgvc_recipes_validate_and_batch_as_the_official_fine_tuning(name, validations):
    from transfer.recipe import load_recipe
    from transfer.recipes import find_recipe

    r = load_recipe(find_recipe(f"{name}.yaml"))
    assert r.stage == "finetune" and not r.data.drop_last
    assert len(validation_epochs(r.schedule.epochs, r.eval.every_epochs, r.eval.fine_from)) == validations
