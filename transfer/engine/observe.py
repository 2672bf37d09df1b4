"""What the user sees of a run: a live progress display (or plain log lines when not on a terminal),
metrics.jsonl, TensorBoard event files, PNG plots and a closing summary. Only rank 0 observes."""

from __future__ import annotations

import json
import logging
import shutil
import sys
import time
from pathlib import Path

from ..files import append_line, atomic_savefig, atomic_write_text, pyplot

log = logging.getLogger("transfer")


def _fmt_eta(seconds: float) -> str:
    seconds = max(int(seconds), 0)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class Observer:
    def __init__(self, run_path: Path, *, total_steps: int, steps_per_epoch: int, epochs: int, log_every: int,
                 tensorboard: bool, start_step: int = 0, keep_rows: int | None = None,
                 interactive: bool | None = None):
        """`keep_rows` (on resume): metrics.jsonl keeps its first rows, as many as the checkpoint counted, and
        the TensorBoard events are written anew from them, so that neither holds a step twice."""
        self.run_path = run_path
        self.metrics_file = run_path / "metrics.jsonl"
        self.total_steps, self.steps_per_epoch, self.epochs = total_steps, steps_per_epoch, epochs
        self.log_every = log_every
        self.interactive = sys.stderr.isatty() if interactive is None else interactive
        self.start_step = start_step
        self._t0 = time.perf_counter()
        self._window = (time.perf_counter(), start_step)  # (time, step) of the last report
        self.rows = 0  # records in metrics.jsonl: a checkpoint stores it, a resume truncates to it
        kept = truncate_metrics(self.metrics_file, keep_rows) if keep_rows is not None else []
        self.rows = len(kept)
        self._tb = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            # TensorBoard's purge_step drops events at and after a step for every tag, which loses the records
            # the checkpoint kept at that step; writing the kept history anew is exact (and cheap: scalars).
            shutil.rmtree(run_path / "tb", ignore_errors=True)
            self._tb = SummaryWriter(str(run_path / "tb"))
            for row in kept:
                self._scalars(row)
        self._progress = None
        if self.interactive:
            from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

            self._progress = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[info]}"),
                                      TimeRemainingColumn(), transient=False)
            self._task = self._progress.add_task("train", total=total_steps, completed=start_step, info="")
            self._progress.start()

    def _scalars(self, row: dict) -> None:
        skip = ("kind", "step", "epoch", "time")
        for k, v in row.items():
            if k not in skip and isinstance(v, int | float) and not isinstance(v, bool):
                self._tb.add_scalar(f"{row['kind']}/{k}", v, row["step"], walltime=row.get("time"))

    def record(self, kind: str, step: int, epoch: int, values: dict) -> None:
        row = {"kind": kind, "step": step, "epoch": epoch, "time": round(time.time(), 3), **values}
        append_line(self.metrics_file, json.dumps(row))
        self.rows += 1
        if self._tb is not None:
            self._scalars(row)

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

    def close(self) -> None:
        """Stop the progress display and flush TensorBoard (plots and the summary belong to the stage's end)."""
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
        if self._tb is not None:
            self._tb.flush()
            self._tb.close()
            self._tb = None


def print_summary(summary: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="run summary", show_header=False)
    table.add_column("what")
    table.add_column("value", justify="right")
    for k, v in summary.items():
        table.add_row(str(k), f"{v:.4f}" if isinstance(v, float) else str(v))
    Console(stderr=True).print(table)


def _rows(text: str) -> list[dict]:
    """The records of metrics.jsonl text, leaving out lines that are not (a torn last line)."""
    rows = []
    for line in text.splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def read_metrics(path: Path) -> list[dict]:
    """The records of a metrics.jsonl; a line cut short by a kill or a full disk is left out."""
    return _rows(path.read_text(errors="replace"))


def truncate_metrics(path: Path, keep: int) -> list[dict]:
    """Keep the first `keep` records of metrics.jsonl (those a checkpoint counted), published whole."""
    if not path.is_file():
        if keep:
            log.warning("%s is missing: the history before the checkpoint is lost", path)
        return []
    text = path.read_text(errors="replace")
    rows = _rows(text)
    if len(rows) < keep:
        log.warning("%s holds %d of the %d records the checkpoint counted: the history is incomplete", path,
                    len(rows), keep)
    rows = rows[:keep]
    new = "".join(json.dumps(r) + "\n" for r in rows)
    if new != text:
        atomic_write_text(path, new)
    return rows


_SCORES = ("top", "recall@", "precision@", "map@")  # validation metrics drawn on the accuracy plot


def write_plots(metrics_file: Path, out: Path) -> list[Path]:
    """loss.png, lr.png and accuracy.png from metrics.jsonl."""
    plt = pyplot()

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
        path = atomic_savefig(fig, out / f"{name}.png")
        plt.close(fig)
        written.append(path)
    return written
