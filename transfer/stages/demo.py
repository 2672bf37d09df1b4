"""`transfer demo`: the whole pipeline, real and small, on a CPU in minutes.

    DEMO/pretrain/                         the embedded-shapes backbone (recipes/demo/pretrain.yaml)
    DEMO/finetune-{pretrained,random}/     digits classification from that backbone and from scratch
    DEMO/retrieval-{pretrained,random}/    zero-shot digit retrieval (train 0-4, search 5-9), both ways
    DEMO/finetune-*/robustness/            corruption errors and unnormalised mCE of both classifiers
    DEMO/summary.json, DEMO/report.md, DEMO/report.html

Every figure in the report is computed by this run; nothing is copied in.
"""

from __future__ import annotations

import html
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..files import OutputError, atomic_write_bytes, make_dir
from ..recipe import load_recipe, merge_dicts
from ..recipes import find_recipe

log = logging.getLogger("transfer")

# `quick` shrinks every stage to seconds: for tests and smoke checks, not for reading the numbers.
_SMALL = {"model": {"options": {"width": 0.125, "sk_min_dim": 4}}, "schedule": {"epochs": 1},
          "augment": {"train_resolution": 32, "eval_resolution": 32, "eval_resize": 32}}
QUICK = {
    "pretrain": {**_SMALL, "data": {"embedded": {"classes": 6, "train_per_class": 24, "val_per_class": 8,
                                                 "resolution": 32}}},
    "finetune": {**_SMALL, "data": {"embedded": {"resolution": 32}, "val_fraction": 0.5}},
    "retrieval": {**_SMALL, "data": {"embedded": {"resolution": 32}}},
}
ROBUSTNESS = {"full": {"limit": 300, "severities": "1,3,5"}, "quick": {"limit": 24, "severities": "3"}}


@dataclass
class DemoResult:
    out: Path
    rows: list[dict] = field(default_factory=list)  # one per summary line
    seconds: dict[str, float] = field(default_factory=dict)
    figures: list[tuple[str, Path]] = field(default_factory=list)


def _train(recipe_name: str, out: Path, overrides: dict) -> dict:
    from .train import run_training

    recipe = load_recipe(find_recipe(recipe_name), overrides, source=recipe_name)
    return run_training(recipe, recipe_name=Path(recipe_name).stem, out=str(out))


def run_demo(out: str | Path, *, seed: int = 0, quick: bool = False, workers: int = 2) -> DemoResult:
    from .robustness import evaluate_robustness

    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise OutputError(f"--out {out} exists and is not an empty folder; the demo writes a new folder: choose "
                          f"another --out")
    make_dir(out)
    res = DemoResult(out)
    shrink = QUICK if quick else {}
    base = {"runtime": {"seed": seed, "workers": workers}}

    def timed(name: str, fn):
        t = time.perf_counter()
        log.info("demo: %s", name)
        value = fn()
        res.seconds[name] = time.perf_counter() - t
        return value

    pre = timed("pretrain", lambda: _train("demo/pretrain.yaml", out / "pretrain",
                                           merge_dicts(base, shrink.get("pretrain", {}))))
    res.rows.append({"stage": "pretrain (embedded shapes)", "init": "random", "metric": "top-1",
                     "value": pre.get("best_top1")})
    res.figures.append(("pretraining curves", out / "pretrain" / "plots" / "accuracy.png"))
    backbones = {"pretrained": str(out / "pretrain"), "random": None}
    for task, recipe, metric in (("finetune", "demo/finetune.yaml", "best_top1"),
                                 ("retrieval", "demo/retrieval.yaml", "best_recall@1")):
        for init, backbone in backbones.items():
            name = f"{task}-{init}"
            over = merge_dicts(merge_dicts(base, shrink.get(task, {})), {"model": {"backbone": backbone}})
            summary = timed(name, lambda recipe=recipe, name=name, over=over: _train(recipe, out / name, over))
            if task == "finetune":
                res.rows.append({"stage": "fine-tune (digits)", "init": init, "metric": "top-1",
                                 "value": summary.get(metric)})
            else:
                metrics = json.loads((out / name / "retrieval" / "metrics.json").read_text())
                for m in ("recall@1", "recall@2", "recall@4", "recall@8", "map@r"):
                    res.rows.append({"stage": "retrieval (digits 5-9, unseen)", "init": init, "metric": m,
                                     "value": metrics.get(m)})
    for init in backbones:
        name = f"finetune-{init}"
        settings = ROBUSTNESS["quick" if quick else "full"]
        r = timed(f"robustness-{init}", lambda name=name, settings=settings: evaluate_robustness(
            str(out / name), corruptions="15", seed=seed, workers=workers, **settings))
        res.rows.append({"stage": "robustness (digits, 15 corruptions)", "init": init,
                         "metric": "mCE (unnormalised)", "value": r["mce_unnormalized"]})
    for init in backbones:
        res.figures += [(f"fine-tuning curves ({init} init)", out / f"finetune-{init}" / "plots" / "accuracy.png"),
                        (f"confusion matrix ({init} init)", out / f"finetune-{init}" / "report" / "confusion.png"),
                        (f"retrieval: queries and nearest neighbours ({init} init)",
                         out / f"retrieval-{init}" / "retrieval" / "grid.png"),
                        (f"corruption errors ({init} init)",
                         out / f"finetune-{init}" / "robustness" / "corruption_errors.png")]
    write_report(res, seed=seed, quick=quick)
    return res


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.4f}" if isinstance(v, float) else str(v)


def summary_table(res: DemoResult) -> list[list[str]]:
    """Rows: stage, metric, pretrained, random, gain (pretrained minus random; for mCE lower is better)."""
    table, seen = [], {}
    for row in res.rows:
        seen.setdefault((row["stage"], row["metric"]), {})[row["init"]] = row["value"]
    for (stage, metric), by_init in seen.items():
        p, r = by_init.get("pretrained"), by_init.get("random")
        if stage.startswith("pretrain"):
            table.append([stage, metric, "", _fmt(r), ""])
            continue
        gain = None if p is None or r is None else p - r
        table.append([stage, metric, _fmt(p), _fmt(r), "-" if gain is None else f"{gain:+.4f}"])
    return table


HEADER = ["stage", "metric", "from the pretrained backbone", "from random init", "difference"]


def write_report(res: DemoResult, *, seed: int, quick: bool) -> None:
    rows = summary_table(res)
    total = sum(res.seconds.values())
    data = {"seed": seed, "quick": quick, "seconds": res.seconds, "total_seconds": total,
            "rows": res.rows}
    atomic_write_bytes(res.out / "summary.json", (json.dumps(data, indent=2) + "\n").encode())
    figures = [(title, path.relative_to(res.out)) for title, path in res.figures if path.is_file()]
    md = [f"# transfer demo (seed {seed}{', quick settings' if quick else ''})", "",
          f"Total {total / 60:.1f} min: " + ", ".join(f"{k} {v:.0f} s" for k, v in res.seconds.items()) + ".", "",
          "Pretraining on procedurally generated shapes, then scikit-learn's digits: classification (seeded 70/30 "
          "split) and zero-shot retrieval (trained on digits 0-4, searched on 5-9, leave-one-out), each from the "
          "pretrained backbone and from random initialisation; robustness is the classifiers' error under the 15 "
          "ImageNet-C corruptions (unnormalised mCE, lower is better; {limit} validation digits, severities "
          "{severities}).".format(**ROBUSTNESS["quick" if quick else "full"]), "",
          "| " + " | ".join(HEADER) + " |", "|" + " --- |" * len(HEADER)]
    md += ["| " + " | ".join(r) + " |" for r in rows]
    md += [""] + [f"## {title}\n\n![{title}]({path.as_posix()})\n" for title, path in figures]
    atomic_write_bytes(res.out / "report.md", "\n".join(md).encode())
    cells = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    body = "".join(f"<h2>{html.escape(t)}</h2><img src='{html.escape(p.as_posix())}' alt='{html.escape(t)}'>"
                   for t, p in figures)
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>transfer demo</title><style>"
            f"body{{font-family:sans-serif;max-width:960px;margin:auto}}td,th{{padding:4px 10px;border-bottom:1px "
            f"solid #ddd}}img{{max-width:100%}}</style></head><body><h1>transfer demo (seed {seed})</h1>"
            f"<p>{html.escape(md[2])}</p><p>{html.escape(md[4])}</p><table><tr>"
            + "".join(f"<th>{h}</th>" for h in HEADER) + f"</tr>{cells}</table>{body}</body></html>")
    atomic_write_bytes(res.out / "report.html", page.encode())
