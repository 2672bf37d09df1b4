"""What the user sees of a run: a live progress display (or plain log lines when not on a terminal),
metrics.jsonl, TensorBoard event files, PNG plots and a closing summary. Only rank 0 observes."""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path

log = logging.getLogger("transfer")


def _fmt_eta(seconds: float) -> str:
    seconds = max(int(seconds), 0)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class Observer:
    def __init__(self, run_path: Path, *, total_steps: int, steps_per_epoch: int, epochs: int, log_every: int,
                 tensorboard: bool, start_step: int = 0, interactive: bool | None = None):
        self.run_path = run_path
        self.metrics_file = run_path / "metrics.jsonl"
        self.total_steps, self.steps_per_epoch, self.epochs = total_steps, steps_per_epoch, epochs
        self.log_every = log_every
        self.interactive = sys.stderr.isatty() if interactive is None else interactive
        self.start_step = start_step
        self._t0 = time.perf_counter()
        self._window = (time.perf_counter(), start_step)  # (time, step) of the last report
        self._tb = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(run_path / "tb"), purge_step=start_step or None)
        self._progress = None
        if self.interactive:
            from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

            self._progress = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[info]}"),
                                      TimeRemainingColumn(), transient=False)
            self._task = self._progress.add_task("train", total=total_steps, completed=start_step, info="")
            self._progress.start()

    def truncate_after(self, step: int) -> None:
        """On resume: drop records written after the checkpoint, so history has no duplicates."""
        if not self.metrics_file.is_file():
            return
        keep = [line for line in self.metrics_file.read_text().splitlines()
                if line.strip() and json.loads(line).get("step", 0) <= step]
        self.metrics_file.write_text("".join(line + "\n" for line in keep))

    def record(self, kind: str, step: int, epoch: int, values: dict) -> None:
        row = {"kind": kind, "step": step, "epoch": epoch, "time": round(time.time(), 3), **values}
        with self.metrics_file.open("a") as f:
            f.write(json.dumps(row) + "\n")
        if self._tb is not None:
            for k, v in values.items():
                if isinstance(v, int | float):
                    self._tb.add_scalar(f"{kind}/{k}", v, step)

    def train_step(self, step: int, epoch: int, images_per_step: int, values: dict) -> None:
        """Called at the logging steps; throughput covers the steps since the previous call."""
        t, last_step = self._window
        now = time.perf_counter()
        ips = (step - last_step) * images_per_step / max(now - t, 1e-9)
        self._window = (now, step)
        values = {**values, "images_per_second": ips}
        self.record("train", step, epoch, values)
        done = step - self.start_step
        eta = (now - self._t0) / max(done, 1) * (self.total_steps - step)
        info = f"loss {values['loss']:.4f}  lr {values['lr']:.4g}  {ips:.0f} img/s"
        if self._progress is not None:
            self._progress.update(self._task, completed=step,
                                  description=f"epoch {epoch + 1}/{self.epochs}", info=info)
        else:
            log.info("epoch %d/%d  step %d/%d  %s  eta %s", epoch + 1, self.epochs, step, self.total_steps, info,
                     _fmt_eta(eta))

    def message(self, text: str, *args, warning: bool = False) -> None:
        if self._progress is not None:
            self._progress.console.print(text % args if args else text)
        else:
            (log.warning if warning else log.info)(text, *args)

    def evaluation(self, step: int, epoch: int, values: dict) -> None:
        self.record("val", step, epoch, values)
        shown = "  ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in values.items())
        self.message("validation after epoch %d: %s", epoch + 1, shown)

    def close(self, summary: dict | None = None, plots: bool = True) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
        if self._tb is not None:
            self._tb.flush()
            self._tb.close()
            self._tb = None
        if plots and self.metrics_file.is_file():
            write_plots(self.metrics_file, self.run_path / "plots")
        if summary:
            print_summary(summary)


def print_summary(summary: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="run summary", show_header=False)
    table.add_column("what")
    table.add_column("value", justify="right")
    for k, v in summary.items():
        table.add_row(str(k), f"{v:.4f}" if isinstance(v, float) else str(v))
    Console(stderr=True).print(table)


def read_metrics(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


_SCORES = ("top", "recall@", "precision@", "map@")  # validation metrics drawn on the accuracy plot


def write_plots(metrics_file: Path, out: Path) -> list[Path]:
    """loss.png, lr.png and accuracy.png from metrics.jsonl."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_metrics(metrics_file)
    train = [r for r in rows if r["kind"] == "train"]
    val = [r for r in rows if r["kind"] == "val"]
    out.mkdir(parents=True, exist_ok=True)
    written = []
    specs = [("loss", [("train", train, "loss"), ("validation", val, "loss")]),
             ("lr", [("learning rate", train, "lr")]),
             ("accuracy", [(f"validation {k}", val, k)
                           for k in sorted({k for r in val for k in r if k.startswith(_SCORES)})])]
    for name, series in specs:
        series = [(label, rs, key) for label, rs, key in series if any(key in r for r in rs)]
        if not series:
            continue
        fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
        for label, rs, key in series:
            pts = [(r["step"], r[key]) for r in rs if key in r]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o" if len(pts) < 30 else None, label=label)
        ax.set_xlabel("optimizer step")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        path = out / f"{name}.png"
        fig.savefig(path)
        plt.close(fig)
        written.append(path)
    return written
