"""Run directories: where a stage writes, how the next stage finds it.

    RUN/recipe.yaml            the resolved recipe
    RUN/run.json               stage, status (running, preempted, failed, reporting, finished), best metric
    RUN/checkpoints/last.pt    everything needed to resume
    RUN/weights/{best,final}.safetensors (+ .json sidecars)
    RUN/metrics.jsonl          one JSON object per log line and per validation
    RUN/tb/                    TensorBoard event files
    RUN/plots/*.png            loss, learning rate, accuracy
    RUN/report/ or retrieval/  the evaluation of the best weights (classification or retrieval)

Every file is published whole (files.py); metrics.jsonl is appended to, and readers drop a torn last line.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from .errors import TransferError
from .files import TEMP_SUFFIX, atomic_write_bytes, make_dir, remove_temporaries


class RunError(TransferError):
    """A run directory that is missing or not what was expected."""


def runs_root() -> Path:
    return Path(os.environ.get("TRANSFER_RUNS", "runs"))


@dataclass
class RunDir:
    path: Path

    @property
    def checkpoint(self) -> Path:
        return self.path / "checkpoints" / "last.pt"

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def recipe(self) -> Path:
        return self.path / "recipe.yaml"

    def weights(self, which: str = "best") -> Path:
        return self.path / "weights" / f"{which}.safetensors"

    @property
    def info_file(self) -> Path:
        return self.path / "run.json"

    def info(self) -> dict:
        try:
            info = json.loads(self.info_file.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            return {}
        return info if isinstance(info, dict) else {}

    def update_info(self, **fields) -> None:
        info = {**self.info(), **fields, "updated": time.time()}
        atomic_write_bytes(self.info_file, (json.dumps(info, indent=2) + "\n").encode())


# What a run directory's status says (run.json), and what `--resume` then does.
#   running / preempted / failed: training stopped before the end; resume from the checkpoint (or, killed before
#       the first checkpoint, start the run over in the same folder: it holds nothing of value yet)
#   reporting: training finished and the final weights are written; resume writes the plots and the report
#   finished: everything is written; resume changes nothing and says so
RESUME_MODES = ("resume", "restart", "report", "done")
# What a training run writes into its folder; a restart removes these (and keeps recipe.yaml and run.json).
RUN_PRODUCTS = ("checkpoints", "weights", "metrics.jsonl", "tb", "plots", "report", "retrieval", "split.csv")


def _contents(path: Path) -> list[Path]:
    """What a folder holds, leaving out the temporary files of interrupted writes."""
    return [p for p in path.iterdir() if not (p.name.startswith(".") and p.name.endswith(TEMP_SUFFIX))]


def new_run_dir(recipe, recipe_name: str, out: str | None, resume: bool) -> tuple[RunDir, str]:
    """(run directory, mode): a new folder (mode "new": its recipe.yaml and run.json written first), or the run
    in --out to continue (a RESUME_MODES mode).

    A folder is never reused by accident: --out must be new or empty unless --resume continues the run in it.
    """
    stage = recipe.stage
    if resume:
        if out is None:
            raise RunError("--resume needs --out RUN_DIR: the run to continue")
        run = RunDir(Path(out))
        info = run.info()
        if not run.recipe.is_file():
            raise RunError(f"nothing to resume in {out}: it holds no run (no recipe.yaml); start without --resume")
        if info.get("stage") not in (None, stage):
            raise RunError(f"{out} is a {info['stage']} run, not a {stage} run; resume it with "
                           f"`transfer {'pretrain' if info['stage'] == 'pretrain' else 'finetune'} --resume`")
        remove_temporaries(run.path)
        status = info.get("status")
        if status == "finished":
            return run, "done"
        if status == "reporting":
            return run, "report"
        if run.checkpoint.is_file():
            return run, "resume"
        for name in RUN_PRODUCTS:
            p = run.path / name
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
        # a kill between recipe.yaml and run.json leaves a run without its record: write it as a new run does
        fields = {"stage": stage, "created": time.time(), "recipe_hash": recipe.hash()}
        run.update_info(**{k: v for k, v in fields.items() if k not in info}, status="running")
        return run, "restart"
    if out is None:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        path = runs_root() / f"{stage}-{recipe_name}-{stamp}"
        n = 1
        while path.exists():
            n += 1
            path = runs_root() / f"{stage}-{recipe_name}-{stamp}-{n}"
    else:
        path = Path(out)
        if path.exists() and not path.is_dir():
            raise RunError(f"--out {path} is a file; give a folder for the run")
        if path.is_dir() and _contents(path):
            run = RunDir(path)
            if run.recipe.is_file() or run.info_file.is_file():
                info = run.info()
                status = info.get("status", "not started")
                raise RunError(f"{path} already holds a {info.get('stage', stage)} run ({status}); continue it with "
                               f"--resume --out {path}, or choose another --out")
            raise RunError(f"{path} exists and is not empty; choose another --out (a new or empty folder)")
    from .recipe import save_recipe

    if path.is_dir():
        remove_temporaries(path)  # all an empty folder can hold: what a run killed at its first write left
    run = RunDir(make_dir(path))
    save_recipe(recipe, run.recipe)
    run.update_info(stage=stage, created=time.time(), recipe_hash=recipe.hash(), status="running")
    return run, "new"


def latest_run(stage: str | None = None, root: Path | None = None) -> RunDir:
    """The most recently created run (of `stage`) under the runs folder."""
    root = root or runs_root()
    candidates = []
    if root.is_dir():
        for d in root.iterdir():
            info = RunDir(d).info()
            if info and (stage is None or info.get("stage") == stage):
                candidates.append((info.get("created", 0), d))
    if not candidates:
        what = f"{stage} run" if stage else "run"
        raise RunError(f"no {what} found under {root}/; run `transfer {stage or 'pretrain'}` first or name one")
    return RunDir(max(candidates)[1])


def run_holding(path: str | Path) -> RunDir | None:
    """The run a path names: a run directory, or a weights file in a run's weights/ folder; else None."""
    path = Path(path)
    folder = path if path.is_dir() else path.parent.parent if path.parent.name == "weights" else None
    if folder is not None and RunDir(folder).recipe.is_file():
        return RunDir(folder)
    return None


def resolve_weights(path: str | Path, prefer: str = "best") -> Path:
    """A weights file, or a run directory (its `prefer` weights, best or final, else the other)."""
    path = Path(path)
    if path.is_dir():
        run = RunDir(path)
        for which in (prefer, *({"best", "final"} - {prefer})):
            if run.weights(which).is_file():
                return run.weights(which)
        raise RunError(f"run {path} has no weights yet (looked for weights/best.safetensors and final)")
    if not path.is_file():
        raise RunError(f"{path} is neither a weights file nor a run directory")
    return path
