"""The demo's summary and report: summary.json, report.md and report.html, with figures drawn from the runs.

The report opens with what was shown, in two sentences with the numbers, then the label-budget plot; the
curves of the two initialisations share one figure. Every figure is computed from this demo's own runs.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass, field
from pathlib import Path

from ..engine.observe import read_metrics
from ..files import atomic_savefig, atomic_write_bytes, make_dir, pyplot

INITS = {"pretrained": "fine-tuned from the pretrained backbone", "random": "fine-tuned from random init",
         "pixels": "logistic regression on the 8x8 pixels", "frozen": "linear probe on the frozen backbone"}
HEADER = ["stage", "metric", "labels per class", "pretrained", "random", "difference", "pixels (LR)",
          "frozen backbone (LR)"]


@dataclass
class DemoResult:
    out: Path
    rows: list[dict] = field(default_factory=list)  # {stage, init, metric, value, labels_per_class}
    seconds: dict[str, float] = field(default_factory=dict)


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.4f}" if isinstance(v, float) else str(v)


def _budget(b) -> str:
    return "all" if b is None else str(b)


def grouped(rows: list[dict]) -> dict[tuple, dict[str, float]]:
    """{(stage, metric, labels_per_class): {init: value}}, in the order the rows came."""
    seen: dict[tuple, dict[str, float]] = {}
    for row in rows:
        seen.setdefault((row["stage"], row["metric"], row.get("labels_per_class")), {})[row["init"]] = row["value"]
    return seen


def summary_table(res: DemoResult) -> list[list[str]]:
    """One line per (stage, metric, label budget): pretrained, random, their difference (for mCE lower is
    better), and the linear baselines where the stage has them."""
    table = []
    for (stage, metric, budget), by in grouped(res.rows).items():
        p, r = by.get("pretrained"), by.get("random")
        diff = "" if p is None or r is None else f"{p - r:+.4f}"
        cells = [stage, metric, _budget(budget) if stage.startswith("fine-tune") else ""]
        if stage.startswith("pretrain"):
            table.append([*cells, "", _fmt(r), "", "", ""])
            continue
        table.append([*cells, _fmt(p), _fmt(r), diff, *(_fmt(by[k]) if k in by else "" for k in ("pixels", "frozen"))])
    return table


def budget_curves(res: DemoResult) -> dict[str, list[tuple[int | None, float]]]:
    """{init: [(labels per class, top-1)]} of the fine-tuning stage."""
    curves: dict[str, list] = {}
    for row in res.rows:
        if row["stage"].startswith("fine-tune"):
            curves.setdefault(row["init"], []).append((row["labels_per_class"], row["value"]))
    return curves


def headline(res: DemoResult) -> list[str]:
    """The two sentences that open the report: what was shown, with the numbers."""
    by = grouped(res.rows)
    ft = {b: v for (stage, _, b), v in by.items() if stage.startswith("fine-tune")}
    small = min((b for b in ft if b is not None), default=None, key=lambda b: abs(b - 10))
    shown = [b for b in dict.fromkeys([small, None]) if b in ft]
    if not shown:
        return []
    said = [f"from {ft[b]['random']:.3f} (random init) to {ft[b]['pretrained']:.3f} top-1 "
            f"({ft[b]['pretrained'] - ft[b]['random']:+.3f}) "
            + (f"with {b} labelled digits per class" if b is not None else "with all the labels") for b in shown]
    s1 = "Pretrained on an invented alphabet, the backbone takes the digits classifier " + ", and ".join(said) + "."
    budgets = " and ".join("all labels" if b is None else f"{b} per class" for b in shown)
    parts = [f"at {budgets} a logistic regression on the pixels reaches "
             + " and ".join(f"{ft[b]['pixels']:.3f}" for b in shown) + ", a linear probe on the frozen backbone "
             + " and ".join(f"{ft[b]['frozen']:.3f}" for b in shown)]
    for (_, metric, _), v in by.items():
        if metric == "recall@1":
            parts.append(f"zero-shot retrieval of the unseen digits 5-9 reaches Recall@1 {v['pretrained']:.3f} "
                         f"from the backbone against {v['random']:.3f}")
        if metric.startswith("mCE"):
            parts.append(f"the unnormalised mCE under 15 corruptions is {v['pretrained']:.3f} against "
                         f"{v['random']:.3f} (lower is better)")
    s2 = "Beside it, " + "; ".join(parts) + "."
    return [s1, s2]


def budget_means(runs: list[DemoResult]) -> dict[str, list[tuple[int | None, float]]]:
    """{init: [(labels per class, top-1 averaged over the runs that have it)]}."""
    values: dict[str, dict] = {}
    for res in runs:
        for init, pts in budget_curves(res).items():
            for b, v in pts:
                values.setdefault(init, {}).setdefault(b, []).append(v)
    return {init: [(b, sum(v) / len(v)) for b, v in by.items()] for init, by in values.items()}


def budget_plot(runs: list[DemoResult], path: Path) -> Path:
    """Top-1 against labelled digits per class: the two fine-tunings and the two linear baselines. Over several
    seeds each seed's line is drawn faint and the mean over the seeds bold, so the spread is seen."""
    plt = pyplot()
    per_seed = [budget_curves(res) for res in runs]
    budgets = sorted({b for curves in per_seed for pts in curves.values() for b, _ in pts if b is not None})
    # "all" sits one step right of the largest budget, on the same log axis
    where = {b: b for b in budgets}
    where[None] = (budgets[-1] * 2.5) if budgets else 1.0
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=100)
    styles = {"pretrained": ("C0", "o", "-"), "random": ("C3", "s", "-"), "pixels": ("0.4", "^", "--"),
              "frozen": ("C2", "D", "--")}
    several = len(per_seed) > 1
    for init, mean in budget_means(runs).items():
        color, marker, line = styles.get(init, ("C7", "x", ":"))
        for curves in per_seed if several else []:
            pts = sorted(curves.get(init, []), key=lambda p: where[p[0]])
            ax.plot([where[b] for b, _ in pts], [v for _, v in pts], color=color, linestyle=line, alpha=0.25,
                    linewidth=1)
        mean = sorted(mean, key=lambda p: where[p[0]])
        ax.plot([where[b] for b, _ in mean], [v for _, v in mean], color=color, marker=marker, linestyle=line,
                linewidth=2 if several else 1.5, label=INITS.get(init, init))
    ax.set_xscale("log")
    ax.set_xticks([where[b] for b in [*budgets, None]], [*map(str, budgets), "all"])
    ax.minorticks_off()
    ax.set_xlabel("labelled training digits per class")
    ax.set_ylabel("top-1 on the held-out digits" + (f" (mean of {len(per_seed)} seeds; faint: each)" if several
                                                     else ""))
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    atomic_savefig(fig, path)
    plt.close(fig)
    return path


def curves_plot(runs: dict[str, Path], path: Path) -> Path:
    """Training loss and validation top-1 of the runs on all labels, both initialisations in each panel."""
    plt = pyplot()
    fig, (loss, acc) = plt.subplots(1, 2, figsize=(10, 4), dpi=100)
    for (init, run), color in zip(runs.items(), ("C0", "C3"), strict=False):
        rows = read_metrics(run / "metrics.jsonl")
        train = [(r["step"], r["loss"]) for r in rows if r["kind"] == "train" and "loss" in r]
        val = [(r["step"], r["top1"]) for r in rows if r["kind"] == "val" and "top1" in r]
        if train:
            loss.plot([s for s, _ in train], [v for _, v in train], color=color, label=f"{init} init")
        if val:
            acc.plot([s for s, _ in val], [v for _, v in val], color=color, marker="o", label=f"{init} init")
    for ax, name in ((loss, "training loss"), (acc, "top-1 on the held-out digits")):
        ax.set_xlabel("optimizer step")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    atomic_savefig(fig, path)
    plt.close(fig)
    return path


# Tables scroll inside themselves and images shrink to the page: nothing overflows a narrow window.
_STYLE = ("body{font-family:sans-serif;max-width:1000px;margin:auto;padding:0 12px}table{border-collapse:collapse;"
          "display:block;overflow-x:auto}td,th{padding:4px 8px;border-bottom:1px solid #ddd;text-align:left}"
          "img{max-width:100%;height:auto}figure{margin:16px 0}")


def _page(title: str, body: str) -> str:
    return (f"<!doctype html><html><head><meta charset='utf-8'><meta name='viewport' content='width=device-width'>"
            f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>{body}</body></html>")


def _figure(title: str, path: Path) -> str:
    return (f"<figure><img src='{html.escape(path.as_posix())}' alt='{html.escape(title)}'><figcaption>"
            f"{html.escape(title)}</figcaption></figure>")


def write_report(res: DemoResult, *, seed: int, quick: bool, robustness: dict) -> None:
    out = res.out
    rows = summary_table(res)
    total = sum(res.seconds.values())
    data = {"seed": seed, "quick": quick, "seconds": res.seconds, "total_seconds": total, "rows": res.rows}
    atomic_write_bytes(out / "summary.json", (json.dumps(data, indent=2) + "\n").encode())
    figures_dir = make_dir(out / "figures")
    # the corruption chart's clean top-1 is the table's when it is computed on every held-out digit
    limit = ("every held-out digit" if robustness["limit"] is None
             else f"{robustness['limit']} held-out digits, spread over the classes")
    all_labels = {init: out / f"finetune-{init}" for init in ("pretrained", "random")}
    figures = [("Top-1 against the label budget", budget_plot([res], figures_dir / "label_budget.png")),
               ("Fine-tuning on all labels: both initialisations", curves_plot(all_labels, figures_dir / "curves.png")),
               ("Pretraining on the invented alphabet", out / "pretrain" / "plots" / "accuracy.png")]
    for init in all_labels:
        figures += [(f"Confusion matrix ({init} init, all labels)",
                     out / f"finetune-{init}" / "report" / "confusion.png"),
                    (f"Retrieval: queries and nearest neighbours ({init} init)",
                     out / f"retrieval-{init}" / "retrieval" / "grid.png"),
                    (f"Corruption errors ({init} init, all labels; {limit})",
                     out / f"finetune-{init}" / "robustness" / "corruption_errors.png")]
    figures = [(title, path.relative_to(out)) for title, path in figures if path.is_file()]
    method = ("The backbone is pretrained on procedurally drawn glyphs of an invented alphabet, then fine-tuned on "
              "scikit-learn's digits (seeded 70/30 split) with 5, 10, 25 or all labelled training digits per class, "
              "from the backbone and from random initialisation, with the same number of steps; every figure is "
              "the last validation, nothing is chosen on the held-out digits. Retrieval trains on digits 0-4 and "
              f"searches 5-9 (leave-one-out). Robustness: the 15 ImageNet-C corruptions on {limit}, severities "
              f"{robustness['severities']}.")
    timing = f"Total {total / 60:.1f} min: " + ", ".join(f"{k} {v:.0f} s" for k, v in res.seconds.items()) + "."
    intro = headline(res)
    md = [f"# transfer demo (seed {seed}{', quick settings' if quick else ''})", "", *intro, ""]
    first, rest = figures[:1], figures[1:]
    md += [f"![{t}]({p.as_posix()})\n" for t, p in first]
    md += [method, "", "| " + " | ".join(HEADER) + " |", "|" + " --- |" * len(HEADER)]
    md += ["| " + " | ".join(r) + " |" for r in rows]
    md += ["", timing, ""] + [f"## {t}\n\n![{t}]({p.as_posix()})\n" for t, p in rest]
    atomic_write_bytes(out / "report.md", "\n".join(md).encode())

    cells = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    page = _page("transfer demo", f"<h1>transfer demo (seed {seed}{', quick settings' if quick else ''})</h1>"
            + "".join(f"<p>{html.escape(s)}</p>" for s in intro)
            + "".join(_figure(t, p) for t, p in first)
            + f"<p>{html.escape(method)}</p><table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in HEADER)
            + f"</tr>{cells}</table><p>{html.escape(timing)}</p>"
            + "".join(f"<h2>{html.escape(t)}</h2>" + _figure(t, p) for t, p in rest))
    atomic_write_bytes(out / "report.html", page.encode())


# Which way a metric's gain goes: lower is better for the corruption error, higher for everything else.
def _better_lower(metric: str) -> bool:
    return metric.startswith("mCE")


def over_seeds(per_seed: dict[int, DemoResult]) -> list[dict]:
    """Per (stage, metric, labels per class) compared in every seed: each seed's pretrained and random value,
    their differences, and whether the pretrained backbone was better on every one of the seeds."""
    tables = {seed: grouped(res.rows) for seed, res in per_seed.items()}
    keys = [k for k in next(iter(tables.values())) if all(k in t for t in tables.values())]
    out = []
    for stage, metric, budget in keys:
        vals = {s: t[(stage, metric, budget)] for s, t in tables.items()}
        if any(v.get("pretrained") is None or v.get("random") is None for v in vals.values()):
            continue  # the pretraining row: one model, nothing to compare
        diffs = {s: v["pretrained"] - v["random"] for s, v in vals.items()}
        sign = -1.0 if _better_lower(metric) else 1.0
        out.append({"stage": stage, "metric": metric, "labels_per_class": budget,
                    "pretrained": {s: v["pretrained"] for s, v in vals.items()},
                    "random": {s: v["random"] for s, v in vals.items()}, "difference": diffs,
                    "smallest_gain": min(sign * d for d in diffs.values()),
                    "holds": all(sign * d > 0 for d in diffs.values())})
    return out


def _held(r: dict) -> str:
    budget = f" at {_budget(r['labels_per_class'])} labels per class" if r["stage"].startswith("fine-tune") else ""
    return f"{r['stage']} {r['metric']}{budget} (by at least {r['smallest_gain']:.3f})"


def write_seeds_report(out: Path, per_seed: dict[int, DemoResult]) -> list[dict]:
    """seeds.json and report.md / report.html of a demo run once per seed: for every comparison, each seed's
    difference and whether the gain held on all of them; each seed's own report is linked."""
    rows = over_seeds(per_seed)
    seeds = sorted(per_seed)
    data = {"seeds": seeds, "seconds": {s: sum(per_seed[s].seconds.values()) for s in seeds}, "comparisons": rows}
    atomic_write_bytes(out / "seeds.json", (json.dumps(data, indent=2) + "\n").encode())
    header = ["stage", "metric", "labels per class", *(f"seed {s}: pretrained - random" for s in seeds),
              "smallest gain", "held on every seed"]
    table = [[r["stage"], r["metric"], _budget(r["labels_per_class"]) if r["stage"].startswith("fine-tune") else "",
              *(f"{r['difference'][s]:+.4f}" for s in seeds), f"{r['smallest_gain']:+.4f}",
              "yes" if r["holds"] else "no"] for r in rows]
    held = [r for r in rows if r["holds"]]
    said = (f"Over seeds {', '.join(map(str, seeds))}, the pretrained backbone beat random initialisation on every "
            f"seed in {len(held)} of {len(rows)} comparisons" + (": " + "; ".join(map(_held, held)) if held else "")
            + ".")
    links = [(f"seed {s}", f"seed-{s}/report.html") for s in seeds]
    plot = budget_plot(list(per_seed.values()), make_dir(out / "figures") / "label_budget.png").relative_to(out)
    title = f"Top-1 against the label budget over seeds {', '.join(map(str, seeds))}"
    md = [f"# transfer demo over seeds {', '.join(map(str, seeds))}", "", said, "", f"![{title}]({plot.as_posix()})",
          "", "| " + " | ".join(header) + " |", "|" + " --- |" * len(header),
          *("| " + " | ".join(r) + " |" for r in table),
          "", "Each seed's report: " + ", ".join(f"[{t}]({p.replace('.html', '.md')})" for t, p in links), ""]
    atomic_write_bytes(out / "report.md", "\n".join(md).encode())
    cells = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in table)
    page = _page("transfer demo over seeds",
                 f"<h1>transfer demo over seeds {html.escape(', '.join(map(str, seeds)))}</h1><p>{html.escape(said)}"
                 "</p>" + _figure(title, plot) + "<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header)
                 + f"</tr>{cells}</table>"
                 "<p>" + ", ".join(f"<a href='{html.escape(p)}'>{html.escape(t)}</a>" for t, p in links) + "</p>")
    atomic_write_bytes(out / "report.html", page.encode())
    return rows
