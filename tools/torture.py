"""Kill real training runs again and again, resume each until it finishes, and compare every artefact with an
uninterrupted run of the same recipe.

    uv run --extra test python tools/torture.py --kills 100 --out /tmp/torture

Stages: a tiny pretrain, a fine-tuning on scikit-learn's digits from a pretrained backbone, a zero-shot
retrieval run, and the pretrain under torchrun with 2 processes. Each kill is one of: SIGKILL at a random
moment of the run, SIGKILL at a publish point (TRANSFER_TEST_FAULT: before or after a file's rename, a torn
metrics line, the validation), or SIGTERM / SIGINT at a random moment (a preemption). A run gets 1-3 kills,
then a resume without one; a kill that came too late (the process had finished) does not count.
Writes OUT/torture.json and OUT/torture.md (per stage: kills delivered by kind, runs finished, and per
artefact how many runs matched the uninterrupted one).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HANG_S = 600  # a run (or a stop) that takes longer than this has hung: it is killed and counted as a failure
sys.path.insert(0, str(ROOT))

from tests.training_helpers import TINY, run_artefacts  # noqa: E402  (the tests' tiny recipe and comparison)
from transfer.recipe import merge_dicts  # noqa: E402

DIGITS = {"source": "digits", "val_fraction": 0.3, "embedded": {"resolution": 32}}
STAGES = {
    "pretrain": {"output": {"plots": True}},
    "finetune": {"stage": "finetune", "data": DIGITS, "augment": {"hflip": False},
                 "optim": {"lr": 0.2, "batch_size": 32}, "schedule": {"epochs": 2},
                 "output": {"checkpoint_every_steps": 10, "log_every_steps": 5, "plots": True}},
    "retrieval": {"stage": "retrieval",
                  "model": {"options": {"pool": "gem", "embedding_dim": 0}},
                  "data": {**DIGITS, "split_by": "class", "val_fraction": 0.5},
                  "augment": {"train_crop": "resize_random_crop", "eval_crop": "none", "hflip": False},
                  "optim": {"lr": 0.1, "batch_size": 32}, "schedule": {"epochs": 2},
                  "regularization": {"label_smoothing": 0.0, "mixup": {"alpha": 0.0}},
                  "retrieval": {"loss": "arcface", "scale": 16.0, "margin": 0.3,
                                "metrics": ["recall@1", "map@r"], "select": "recall@1"},
                  "output": {"checkpoint_every_steps": 10, "log_every_steps": 5}},
    # two processes: no mixup or DropBlock (their draws are per process), one thread each
    "ddp": {"regularization": {"mixup": {"alpha": 0.0}, "drop_block": {"keep_prob_end": 1.0}},
            "output": {"plots": True}},
}
# publish points: (file name, how many times it is published in a run at most, actions)
POINTS = [("last.pt", 6, ("before", "after")), ("best.safetensors", 3, ("before", "after")),
          ("best.json", 3, ("before", "after")), ("final.safetensors", 1, ("before", "after")),
          ("final.json", 1, ("before", "after")), ("run.json", 3, ("before", "after")),
          ("metrics.jsonl", 20, ("torn",)), ("metrics.jsonl", 1, ("before",)), ("validation", 3, ("before",)),
          ("report", 1, ("before", "after")), ("retrieval", 1, ("before", "after")), ("loss.png", 1, ("before",)),
          ("recipe.yaml", 1, ("before", "after"))]


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (from /proc): torchrun starts its workers in sessions of their own, so a
    signal to the launcher's process group does not reach them."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def kill_tree(pid: int) -> None:
    """SIGKILL to a process and all its descendants, found before any of them dies (an orphan would be
    re-parented and lost)."""
    for p in [pid, *descendants(pid)]:
        with contextlib.suppress(ProcessLookupError):  # it ended on its own meanwhile
            os.kill(p, signal.SIGKILL)


def command(stage: str, recipe: Path, out: Path, resume: bool) -> list[str]:
    cli = "finetune" if stage in ("finetune", "retrieval") else "pretrain"
    args = [cli, "--resume", "--out", str(out)] if resume else [cli, str(recipe), "--out", str(out)]
    if stage == "ddp":
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                "-m", "transfer", *args]
    return [sys.executable, "-m", "transfer", *args]


def started(out: Path) -> bool:
    """The folder holds a run to --resume (its recipe was saved)."""
    return (out / "recipe.yaml").is_file()


def status(out: Path) -> str | None:
    try:
        return json.loads((out / "run.json").read_text()).get("status")
    except (OSError, json.JSONDecodeError):
        return None


class Torture:
    def __init__(self, out: Path, seed: int):
        self.out = out
        self.rng = random.Random(seed)
        self.env = dict(os.environ, TRANSFER_CACHE=str(out / "cache"), PYTHONUNBUFFERED="1")
        self.env.pop("TRANSFER_TEST_FAULT", None)

    def run(self, cmd: list[str], *, fault: str | None = None, kill_after: float | None = None,
            sig: int = signal.SIGKILL) -> tuple[int, float, str]:
        """(exit status, seconds, stderr tail); the process group gets `sig` after `kill_after` seconds."""
        env = dict(self.env, **({"TRANSFER_TEST_FAULT": fault} if fault else {}))
        if "torch.distributed.run" in cmd:
            env["OMP_NUM_THREADS"] = "1"
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)
        try:
            _, err = proc.communicate(timeout=kill_after if kill_after is not None else HANG_S)
        except subprocess.TimeoutExpired:
            if kill_after is None:
                return self.hung(proc, t0)
            # the launcher alone for a graceful stop (torchrun forwards it); every process of the run for
            # SIGKILL, as a preemption kills the whole job
            if sig == signal.SIGKILL:
                kill_tree(proc.pid)
            else:
                proc.send_signal(sig)
            try:
                _, err = proc.communicate(timeout=HANG_S)
            except subprocess.TimeoutExpired:
                return self.hung(proc, t0)
        return proc.returncode, time.perf_counter() - t0, err[-1500:]

    @staticmethod
    def hung(proc: subprocess.Popen, t0: float) -> tuple[str, float, str]:
        """A run that did not end within HANG_S: a failure of its own kind, its whole group killed so that
        the torture goes on."""
        kill_tree(proc.pid)
        _, err = proc.communicate()
        return "hung", time.perf_counter() - t0, err[-1500:]

    def recipe(self, stage: str, backbone: Path | None) -> Path:
        sections = merge_dicts(TINY, STAGES[stage])
        if backbone is not None:
            sections = merge_dicts(sections, {"model": {"backbone": str(backbone)}})
        path = self.out / f"{stage}.yaml"
        import yaml

        path.write_text(yaml.safe_dump(sections))
        return path

    def choose_kill(self, stage: str, seconds: float) -> dict:
        """A kill: a fault at a publish point, SIGKILL at a random moment, or SIGTERM / SIGINT."""
        kind = self.rng.choices(["point", "random", "graceful"], weights=[0.5, 0.3, 0.2])[0]
        if kind == "point":
            name, most, actions = self.rng.choice([p for p in POINTS if stage == "retrieval" or p[0] != "retrieval"])
            return {"kind": f"{name}:{self.rng.choice(actions)}",
                    "fault": f"{name}:{self.rng.randint(1, most)}:{self.rng.choice(actions)}"}
        sig = signal.SIGKILL if kind == "random" else self.rng.choice([signal.SIGTERM, signal.SIGINT])
        # the first seconds are the interpreter and torch starting: kill in the part that writes
        return {"kind": signal.Signals(sig).name, "sig": sig, "after": self.rng.uniform(0.5, 1.0) * seconds}

    def stage(self, stage: str, kills: int, backbone: Path | None) -> dict:
        recipe = self.recipe(stage, backbone)
        ref = self.out / stage / "reference"
        code, seconds, err = self.run(command(stage, recipe, ref, False))
        if code != 0:
            raise SystemExit(f"the uninterrupted {stage} run failed ({code}):\n{err}")
        want = run_artefacts(ref)
        delivered, finished, resumes, matched, failures = Counter(), 0, 0, Counter(), []
        trial = 0
        while sum(delivered.values()) < kills:
            trial += 1
            out = self.out / stage / f"run{trial:03d}"
            for _ in range(self.rng.randint(1, 3)):
                if sum(delivered.values()) >= kills:
                    break
                k = self.choose_kill(stage, seconds)
                resume = started(out)
                code, _, err = self.run(command(stage, recipe, out, resume), fault=k.get("fault"),
                                        kill_after=k.get("after"), sig=k.get("sig", signal.SIGKILL))
                resumes += resume
                if code == 0:  # the kill came too late (or the fault point did not occur): not a kill
                    break
                # torchrun reports a worker's death as its own exit status 1
                expected = (-signal.SIGKILL, 128 + signal.SIGTERM, 128 + signal.SIGINT, *([1] * (stage == "ddp")))
                if code not in expected:
                    failures.append(f"{out.name} {k['kind']}: exit {code}: {err[-400:]}")
                delivered[k["kind"]] += 1
            for _ in range(3):  # finish (a graceful stop may need a second resume)
                if status(out) == "finished":
                    break
                # killed before its recipe was saved, the folder holds no run: start it again, as a user would
                resume = started(out)
                code, _, err = self.run(command(stage, recipe, out, resume))
                resumes += resume
                if code != 0:
                    failures.append(f"{out.name} final resume: exit {code}: {err[-400:]}")
                    break
            if status(out) != "finished":
                failures.append(f"{out.name}: not finished after the resumes ({status(out)})")
                continue
            got = run_artefacts(out)
            if status(out) == "finished":
                finished += 1
            for key in (k for k in want if k != "temporaries"):
                group = key.split("/")[0] if key.startswith(("plots", "report", "retrieval")) else key
                matched[group] += got.get(key) == want[key]
            matched["no temporaries"] += not got["temporaries"]
            steps = [(tag, step) for tag, step, _ in got["tb"]]
            matched["tb no duplicated step"] += len(steps) == len(set(steps))
            matched["runs compared"] += 1
            shutil.rmtree(out / "checkpoints", ignore_errors=True)  # keep the disk small
        # a folder's files count once per run: the share of its files that matched
        files = Counter(key.split("/")[0] for key in want if key.startswith(("plots", "report", "retrieval")))
        for group, n in files.items():
            matched[group] = matched[group] / n
        return {"kills": dict(delivered), "kills_total": sum(delivered.values()), "runs": trial,
                "finished": finished, "resumes": resumes, "matched": dict(matched), "failures": failures,
                "seconds_per_uninterrupted_run": round(seconds, 1)}


def table(results: dict) -> str:
    keys = sorted({k for r in results.values() for k in r["matched"] if k != "runs compared"})
    lines = ["| stage | kills | runs | finished | resumes | failures | " + " | ".join(keys) + " |",
             "|---|" + "---|" * (5 + len(keys))]
    for stage, r in results.items():
        n = r["matched"]["runs compared"]
        lines.append(f"| {stage} | {r['kills_total']} | {r['runs']} | {r['finished']} | {r['resumes']} | "
                     f"{len(r['failures'])} | " + " | ".join(f"{r['matched'].get(k, 0):g}/{n}" for k in keys) + " |")
    kinds = Counter()
    for r in results.values():
        kinds.update(r["kills"])
    lines += ["", "kills by kind: " + ", ".join(f"{k} {v}" for k, v in sorted(kinds.items()))]
    # a failure is a kill that ended with an unexpected status, a hang, or a run that did not finish
    lines += [f"- {stage}: {f}" for stage, r in results.items() for f in r["failures"]]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=100, help="Kills in all, shared evenly by the stages.")
    ap.add_argument("--out", type=Path, required=True, help="A new folder for the runs and the results.")
    ap.add_argument("--stages", default="pretrain,finetune,retrieval,ddp")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.out.exists() and any(args.out.iterdir()):
        raise SystemExit(f"error: {args.out} is not empty; give a new folder")
    args.out.mkdir(parents=True, exist_ok=True)
    t = Torture(args.out, args.seed)
    stages = args.stages.split(",")
    backbone = None
    if {"finetune", "retrieval"} & set(stages):
        code, _, err = t.run(command("pretrain", t.recipe("pretrain", None), args.out / "backbone", False))
        if code != 0:
            raise SystemExit(f"the backbone run failed:\n{err}")
        backbone = args.out / "backbone"
    results = {}
    for i, stage in enumerate(stages):
        share = args.kills // len(stages) + (i < args.kills % len(stages))
        t0 = time.perf_counter()
        results[stage] = t.stage(stage, share, backbone if stage in ("finetune", "retrieval") else None)
        results[stage]["minutes"] = round((time.perf_counter() - t0) / 60, 1)
        print(f"{stage}: {json.dumps(results[stage])}", flush=True)
    (args.out / "torture.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.out / "torture.md").write_text(table(results) + "\n")
    print(table(results))


if __name__ == "__main__":
    main()
