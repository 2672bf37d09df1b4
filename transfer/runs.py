"""Run directories: where a stage writes, how the next stage finds it.

    RUN/recipe.yaml            the resolved recipe
    RUN/run.json               stage, status, recipe hash, best metric
    RUN/checkpoints/last.pt    everything needed to resume
    RUN/weights/{best,final}.safetensors (+ .json sidecars)
    RUN/metrics.jsonl          one JSON object per log line and per validation
    RUN/tb/                    TensorBoard event files
    RUN/plots/*.png            loss, learning rate, accuracy
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from .errors import TransferError
from .models.weights import atomic_write_bytes


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
            return json.loads(self.info_file.read_text())
        except (OSError, json.JSONDecodeError):
            return {}

    def update_info(self, **fields) -> None:
        info = {**self.info(), **fields, "updated": time.time()}
        atomic_write_bytes(self.info_file, (json.dumps(info, indent=2) + "\n").encode())


def new_run_dir(stage: str, recipe_name: str, out: str | None, resume: bool) -> RunDir:
    """The run directory for a new run (--out or runs/STAGE-RECIPE-TIME), or the existing one to resume."""
    if resume:
        if out is None:
            raise RunError("--resume needs --out RUN_DIR: the run to continue")
        run = RunDir(Path(out))
        if not run.checkpoint.is_file():
            raise RunError(f"nothing to resume in {out}: {run.checkpoint} does not exist; start without --resume")
        return run
    if out is None:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        path = runs_root() / f"{stage}-{recipe_name}-{stamp}"
        n = 1
        while path.exists():
            n += 1
            path = runs_root() / f"{stage}-{recipe_name}-{stamp}-{n}"
    else:
        path = Path(out)
        if (path / "checkpoints" / "last.pt").exists():
            raise RunError(f"{path} already holds a run; continue it with --resume or choose another --out")
    path.mkdir(parents=True, exist_ok=True)
    return RunDir(path)


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


def resolve_weights(path: str | Path) -> Path:
    """A weights file, or a run directory (its best weights, else its final ones)."""
    path = Path(path)
    if path.is_dir():
        run = RunDir(path)
        for which in ("best", "final"):
            if run.weights(which).is_file():
                return run.weights(which)
        raise RunError(f"run {path} has no weights yet (looked for weights/best.safetensors and final)")
    if not path.is_file():
        raise RunError(f"{path} is neither a weights file nor a run directory")
    return path
