"""`transfer demo`, as the README's quickstart and docs/commands/demo.md run it, with --quick: every stage
really runs, and every figure in its summary and report is the one its own run directory holds.

tests/test_docs.py skips those two blocks (their markers say so): this module runs them, once."""

from __future__ import annotations

import csv
import json
import re
from collections import Counter
from pathlib import Path

import pytest

from tests.doc_blocks import sh_blocks
from tests.training_helpers import run_cli
from transfer.stages.demo import ROBUSTNESS
from transfer.stages.robustness import spread_indices

ROOT = Path(__file__).resolve().parents[1]


def documented_demo_commands() -> list[list[str]]:
    """The `transfer demo` commands of the README's quickstart and of the demo page, as written."""
    found = []
    for page in (ROOT / "README.md", ROOT / "docs" / "commands" / "demo.md"):
        found += [c.args for b in sh_blocks(page) for c in b.commands() if c.program == "transfer"
                  and c.args[:1] == ["demo"]]
    return found


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    commands = documented_demo_commands()
    assert [c[:1] for c in commands] == [["demo"], ["demo"]]  # the quickstart's and the page's
    args = max(commands, key=len)  # the page's example: --out runs/demo --seed 1
    tmp = tmp_path_factory.mktemp("demo")
    out = tmp / args[args.index("--out") + 1]
    res = run_cli(tmp, *[str(out) if a == str(out.relative_to(tmp)) else a for a in args],
                  "--quick", "--workers", "0", timeout=900)  # about a minute and a half on 2 idle cores
    return out, res


def test_summary_matches_the_runs(demo):
    out, res = demo
    summary = json.loads((out / "summary.json").read_text())
    rows = {(r["stage"].split(" ")[0], r["init"], r["metric"], r["labels_per_class"]): r["value"]
            for r in summary["rows"]}
    budgets = sorted({b for (stage, _, _, b) in rows if stage == "fine-tune"}, key=lambda b: b or 10**9)
    assert budgets == [5, None]  # --quick: one small budget and all labels
    for init in ("pretrained", "random"):
        for b in budgets:
            run = out / (f"finetune-{init}" if b is None else f"finetune-{init}-{b}")
            # the figure is the last validation (weights/final), not the best: nothing chosen on the test digits
            final = json.loads((run / "weights" / "final.json").read_text())["metrics"]["top1"]
            assert rows[("fine-tune", init, "top-1", b)] == pytest.approx(final)
            if b is None:  # its report (confusion matrix) is of the same final weights
                assert json.loads((run / "report" / "summary.json").read_text())["top1"] == pytest.approx(final)
            if b is not None:  # the label budget's draw is recorded: b training digits of each class
                trained = [r for r in csv.DictReader((run / "split.csv").open()) if r["split"] == "train"]
                assert sorted(Counter(r["label"] for r in trained).values()) == [b] * 10
        metrics = json.loads((out / f"retrieval-{init}" / "retrieval" / "metrics.json").read_text())
        for m in ("recall@1", "recall@2", "recall@4", "recall@8", "map@r"):
            assert rows[("retrieval", init, m, None)] == pytest.approx(metrics[m])
        robust = json.loads((out / f"finetune-{init}" / "robustness" / "robustness.json").read_text())
        assert rows[("robustness", init, "mCE (unnormalised)", None)] == pytest.approx(robust["mce_unnormalized"])
        assert robust["mce_unnormalized"] == pytest.approx(
            sum(robust["corruptions"].values()) / len(robust["corruptions"]))
        assert len(robust["corruptions"]) == 15
        # the corruption chart's clean top-1 is the same weights' on the same held-out digits: --quick takes 150
        # of them spread over the split, so it is checked against the run's own predictions of exactly those
        with (out / f"finetune-{init}" / "report" / "predictions.csv").open() as f:
            predictions = list(csv.DictReader(f))
        subset = [predictions[i] for i in spread_indices(len(predictions), ROBUSTNESS["quick"]["limit"])]
        assert robust["images"] == len(subset) == 150
        assert robust["top1"] == pytest.approx(sum(r["label"] == r["prediction"] for r in subset) / len(subset),
                                               abs=1.5 / robust["images"])
    # the pretrained runs started from the demo's own backbone; the random ones from nothing
    for task in ("finetune", "retrieval"):
        side = json.loads((out / f"{task}-pretrained" / "weights" / "final.json").read_text())
        assert side["backbone"].startswith(str(out / "pretrain"))
        assert "backbone" not in json.loads((out / f"{task}-random" / "weights" / "final.json").read_text())
    assert set(summary["seconds"]) == {"pretrain", "finetune-pretrained", "finetune-random", "finetune-pretrained-5",
                                       "finetune-random-5", "baselines", "retrieval-pretrained", "retrieval-random",
                                       "robustness-pretrained", "robustness-random"}
    assert "difference" in res.stdout and "report:" in res.stdout


def test_the_pixel_baseline_is_scikit_learns_logistic_regression_on_the_same_split(demo):
    """Recomputed here from scikit-learn alone: the demo's quick split is digits' 50/50 stratified split."""
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    out, _ = demo
    rows = json.loads((out / "summary.json").read_text())["rows"]
    pixels = {r["labels_per_class"]: r["value"] for r in rows if r["init"] == "pixels"}
    digits = load_digits()
    xtr, xva, ytr, yva = train_test_split(digits.data, digits.target, test_size=0.5, stratify=digits.target,
                                          random_state=0)
    fit = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000)).fit(xtr, ytr)
    assert pixels[None] == pytest.approx(fit.score(xva, yva))
    assert 0.0 < pixels[5] < pixels[None]  # 50 labelled digits do worse than 898
    frozen = {r["labels_per_class"]: r["value"] for r in rows if r["init"] == "frozen"}
    assert set(frozen) == {5, None} and all(0.0 < v <= 1.0 for v in frozen.values())


def test_report_opens_with_the_numbers_and_shows_only_figures_the_run_made(demo):
    out, _ = demo
    html = (out / "report.html").read_text()
    md = (out / "report.md").read_text()
    summary = json.loads((out / "summary.json").read_text())
    images = re.findall(r"<img src='([^']+)'", html)
    # the label-budget plot first, the shared curves, the pretraining curves, then 3 per initialisation
    assert len(images) == 9 and images[:2] == ["figures/label_budget.png", "figures/curves.png"]
    assert images == re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    for rel in images:
        assert (out / rel).is_file() and (out / rel).stat().st_size > 1000, rel
    assert any("grid.png" in i for i in images) and any("corruption_errors.png" in i for i in images)
    # two sentences before the first figure, carrying the table's numbers
    opening = html[html.index("</h1>"):html.index("<figure>")]
    assert opening.count("<p>") == 2
    ft = {(r["init"], r["labels_per_class"]): r["value"] for r in summary["rows"] if r["stage"].startswith("fine")}
    for key in (("pretrained", 5), ("random", 5), ("pretrained", None), ("random", None), ("pixels", 5)):
        assert f"{ft[key]:.3f}" in opening, key
