"""Nothing is lost: faults injected at every publish point (TRANSFER_TEST_FAULT, transfer/files.py), each
resumed, give every artefact of an uninterrupted run; no run directory is reused by accident; a full disk,
a read-only file system and stop signals in every phase leave a run that `--resume` finishes.

The reference is one uninterrupted run of the tiny recipe, made in this process; the faulted runs are real
processes killed with SIGKILL (the chain test) or in-process faults (OSErrors, SIGTERM to this process).
"""

import json
import logging
import os
import signal
import subprocess
import sys

import pytest
from click.testing import CliRunner

from transfer.cli import cli
from transfer.engine.checkpoint import load_checkpoint

from .training_helpers import assert_same_artefacts, cli_env, run_artefacts, tiny_recipe, transfer_cmd

# 3 epochs of 4 steps, a checkpoint every 2 steps, plots on: every publish point occurs.
SECTIONS = {"output": {"plots": True}}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """(recipe, artefacts) of the uninterrupted run."""
    tmp = tmp_path_factory.mktemp("reference")
    os.environ["TRANSFER_CACHE"] = str(tmp / "cache")
    recipe = tiny_recipe(tmp, **SECTIONS)
    res = CliRunner().invoke(cli, ["pretrain", str(recipe), "--out", str(tmp / "run")])
    assert res.exit_code == 0, res.output
    return recipe, run_artefacts(tmp / "run")


def invoke(*args, fault: str | None = None, monkeypatch=None):
    if fault:
        monkeypatch.setenv("TRANSFER_TEST_FAULT", fault)
    try:
        return CliRunner().invoke(cli, [str(a) for a in args])
    finally:
        if fault:
            monkeypatch.delenv("TRANSFER_TEST_FAULT")


def killed_at(tmp_path, fault: str, *args) -> None:
    """Run `transfer ARGS` in a process that the fault kills (SIGKILL)."""
    env = {**cli_env(tmp_path), "TRANSFER_TEST_FAULT": fault}
    res = subprocess.run(transfer_cmd(*args), env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == -signal.SIGKILL, f"{fault}: exit {res.returncode}\n{res.stderr[-2000:]}"


@pytest.fixture(autouse=True)
def _log(caplog):
    caplog.set_level(logging.INFO, logger="transfer")


def test_a_kill_at_every_publish_point_then_resume_gives_every_artefact(tmp_path, reference, monkeypatch, caplog):
    recipe, want = reference
    run = tmp_path / "run"
    # killed before its first checkpoint is in place: the folder holds a run that a plain start must not reuse
    killed_at(tmp_path, "last.pt:1:before", "pretrain", recipe, "--out", run)
    assert not (run / "checkpoints" / "last.pt").exists() and list(run.rglob(".last.pt.*.tmp"))
    res = invoke("pretrain", recipe, "--out", run)
    assert res.exit_code == 2 and "already holds a pretrain run (running)" in res.output and "--resume" in res.output
    # one kill per process, at each point where a file (or the validation) is in progress, each resumed
    for fault in ("metrics.jsonl:4:torn",  # an append cut half-way (and the restart of a run without checkpoint)
                  "metrics.jsonl:1:before",  # the resume's rewrite of metrics.jsonl (dropping the torn line)
                  "validation:1:before",  # end-of-epoch validation
                  "best.safetensors:1:after",  # best weights written, the checkpoint that counts them not yet
                  "final.safetensors:1:before",
                  "final.json:1:after",  # the final sidecar written, run.json not yet "reporting"
                  "run.json:2:after",  # status "reporting" written, the plots and report not yet
                  "report:1:before"):  # the report built, not yet in place
        killed_at(tmp_path, fault, "pretrain", "--resume", "--out", run)
    res = invoke("pretrain", "--resume", "--out", run)
    assert res.exit_code == 0, res.output
    got = run_artefacts(run)
    assert_same_artefacts(got, want)
    # --resume on the finished run changes nothing, and says so
    mtimes = {p: p.stat().st_mtime_ns for p in run.rglob("*")}
    res = invoke("pretrain", "--resume", "--out", run)
    assert res.exit_code == 0 and "finished already; nothing to do" in caplog.text
    assert {p: p.stat().st_mtime_ns for p in run.rglob("*")} == mtimes


def test_a_kill_between_the_recipe_and_the_run_record_is_resumed_whole(tmp_path, reference, monkeypatch):
    """recipe.yaml in place, run.json not yet: --resume starts the run over in its folder and writes the record
    a new run has (stage, created, recipe hash; the torture found one without them)."""
    recipe, want = reference
    run = tmp_path / "run"
    killed_at(tmp_path, "recipe.yaml:1:after", "pretrain", recipe, "--out", run)
    assert (run / "recipe.yaml").is_file() and not (run / "run.json").exists()
    res = invoke("pretrain", "--resume", "--out", run)
    assert res.exit_code == 0, res.output
    assert_same_artefacts(run_artefacts(run), want)
    assert {"stage", "created", "recipe_hash"} <= set(json.loads((run / "run.json").read_text()))


@pytest.mark.parametrize("fault", ["validation:1:sigterm", "final.safetensors:1:sigterm", "report:1:sigterm",
                                   "loss.png:1:sigterm"])
def test_a_stop_signal_in_any_phase_leaves_a_run_that_resume_finishes(tmp_path, reference, monkeypatch, fault,
                                                                       caplog):
    recipe, want = reference
    run = tmp_path / "run"
    res = invoke("pretrain", recipe, "--out", run, fault=fault, monkeypatch=monkeypatch)
    assert res.exit_code == 128 + signal.SIGTERM, res.output
    assert "stopped by SIGTERM" in caplog.text and f"--resume --out {run}" in caplog.text
    status = json.loads((run / "run.json").read_text())["status"]
    assert status == ("preempted" if fault.startswith("validation") else "reporting")
    assert not list(run.rglob("*.tmp"))  # a graceful stop leaves no temporary file
    res = invoke("pretrain", "--resume", "--out", run)
    assert res.exit_code == 0, res.output
    assert_same_artefacts(run_artefacts(run), want)


def test_a_full_disk_at_a_checkpoint_is_one_line_and_keeps_the_last_good_one(tmp_path, reference, monkeypatch):
    recipe, want = reference
    run = tmp_path / "run"
    res = invoke("pretrain", recipe, "--out", run, fault="last.pt:3:enospc", monkeypatch=monkeypatch)
    assert res.exit_code == 2, res.output
    lines = [line for line in res.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and f"no space left on the device writing {run / 'checkpoints' / 'last.pt'}" in lines[0]
    assert "MiB needed" in lines[0] and "Traceback" not in res.output
    assert load_checkpoint(run / "checkpoints" / "last.pt")["train"]["step"] == 4  # the 2nd checkpoint, intact
    assert not list(run.rglob("*.tmp"))
    res = invoke("pretrain", "--resume", "--out", run)
    assert res.exit_code == 0, res.output
    assert_same_artefacts(run_artefacts(run), want)


def test_a_read_only_output_is_one_line(tmp_path, reference, monkeypatch):
    recipe, _ = reference
    res = invoke("pretrain", recipe, "--out", tmp_path / "run", fault="recipe.yaml:1:erofs", monkeypatch=monkeypatch)
    assert res.exit_code == 2
    assert res.output.strip().splitlines()[-1] == (f"error: cannot write {tmp_path / 'run' / 'recipe.yaml'}: "
                                                   f"read-only file system; choose another --out on a writable "
                                                   f"file system")


def test_no_run_folder_is_reused_by_accident(tmp_path, reference, caplog):
    recipe, _ = reference
    busy = tmp_path / "notes"
    busy.mkdir()
    (busy / "todo.txt").write_text("mine")
    res = invoke("pretrain", recipe, "--out", busy)
    assert res.exit_code == 2 and "exists and is not empty; choose another --out" in res.output
    assert (busy / "todo.txt").read_text() == "mine" and len(list(busy.iterdir())) == 1
    res = invoke("pretrain", "--resume", "--out", busy)
    assert res.exit_code == 2 and "nothing to resume" in res.output
    a_file = tmp_path / "file"
    a_file.write_text("x")
    res = invoke("pretrain", recipe, "--out", a_file)
    assert res.exit_code == 2 and "error:" in res.output
    empty = tmp_path / "empty"
    empty.mkdir()  # an empty folder (made for the run) is fine
    res = invoke("pretrain", recipe, "--out", empty, "--epochs", "1")
    assert res.exit_code == 0, res.output
    # a finished run whose checkpoint was deleted to save space: a plain start is refused, resume does nothing
    (empty / "checkpoints" / "last.pt").unlink()
    weights = (empty / "weights" / "final.safetensors").read_bytes()
    res = invoke("pretrain", recipe, "--out", empty)
    assert res.exit_code == 2 and "already holds a pretrain run (finished)" in res.output
    res = invoke("pretrain", "--resume", "--out", empty)
    assert res.exit_code == 0 and "nothing to do" in caplog.text
    assert (empty / "weights" / "final.safetensors").read_bytes() == weights
    # a pretrain run is not resumed as a fine-tuning run
    res = invoke("finetune", "--resume", "--out", empty)
    assert res.exit_code == 2 and "error:" in res.output


def test_published_files_are_readable_by_the_group(tmp_path, reference):
    recipe, _ = reference
    old = os.umask(0o022)
    try:
        res = invoke("pretrain", recipe, "--out", tmp_path / "run", "--epochs", "1")
    finally:
        os.umask(old)
    assert res.exit_code == 0, res.output
    for name in ("run.json", "recipe.yaml", "checkpoints/last.pt", "weights/final.safetensors", "report/summary.json"):
        assert (tmp_path / "run" / name).stat().st_mode & 0o777 == 0o644, name


def test_a_torn_metrics_file_is_read_without_its_torn_line(tmp_path):
    from transfer.engine.observe import read_metrics, truncate_metrics

    path = tmp_path / "metrics.jsonl"
    path.write_text('{"kind": "train", "step": 1}\n{"kind": "train", "step": 2}\n{"kind": "tr')
    assert [r["step"] for r in read_metrics(path)] == [1, 2]
    assert [r["step"] for r in truncate_metrics(path, 1)] == [1]
    assert path.read_text() == '{"kind": "train", "step": 1}\n'


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_while_the_interpreter_exits_after_a_finished_command_keeps_its_status(tmp_path, sig):
    """A signal that arrives once the command is done (the torture saw them while torch's interpreter shut
    down) has nothing to stop: the exit status stays the command's, with no "stopped by" line. The signal is
    sent from an exit hook, which runs after the command returned, as the interpreter finalises."""
    code = ("import atexit, os, signal, sys, time\n"
            f"atexit.register(lambda: (os.kill(os.getpid(), {int(sig)}), time.sleep(0.2)))\n"
            "from transfer.cli import main\n"
            "sys.argv = ['transfer', '--help']\n"
            "main()\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=cli_env(tmp_path),
                         timeout=120)
    assert res.returncode == 0, (res.returncode, res.stderr[-2000:])
    assert "stopped by" not in res.stderr and "Traceback" not in res.stderr
