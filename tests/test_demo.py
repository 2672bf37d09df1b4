"""`transfer demo`, as the README's quickstart and docs/commands/demo.md run it, with --quick: every stage
really runs, and every figure in its summary and report is the one its own run directory holds.

tests/test_docs.py skips those two blocks (their markers say so): this module runs them, once."""

from __future__ import annotations

import csv
import json
import re
import shutil
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.doc_blocks import sh_blocks
from tests.training_helpers import cli_env, run_cli, transfer_cmd
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


def test_over_seeds_says_which_gains_held_on_every_seed(tmp_path):
    """Hand-made results of three seeds: a gain on all three holds, one lost on a seed does not, and for the
    corruption error a gain is a lower value."""
    from transfer.stages.demo_report import DemoResult, budget_means, over_seeds, write_seeds_report

    def result(seed, top1_pre, top1_rnd, mce_pre, mce_rnd, r1_pre, r1_rnd):
        res = DemoResult(tmp_path / f"seed-{seed}")
        res.rows = [{"stage": "pretrain (invented alphabet)", "init": "random", "metric": "top-1", "value": 0.9,
                     "labels_per_class": None}]
        for init, top1, mce, r1 in (("pretrained", top1_pre, mce_pre, r1_pre), ("random", top1_rnd, mce_rnd, r1_rnd)):
            res.rows += [{"stage": "fine-tune (digits)", "init": init, "metric": "top-1", "value": top1,
                          "labels_per_class": 10},
                         {"stage": "retrieval (digits 5-9, unseen)", "init": init, "metric": "recall@1", "value": r1,
                          "labels_per_class": None},
                         {"stage": "robustness", "init": init, "metric": "mCE (unnormalised)", "value": mce,
                          "labels_per_class": None}]
        res.rows.append({"stage": "fine-tune (digits)", "init": "pixels", "metric": "top-1", "value": 0.8,
                         "labels_per_class": 10})
        res.seconds = {"pretrain": 10.0 + seed}
        return res

    per_seed = {0: result(0, 0.95, 0.85, 0.30, 0.40, 0.9, 0.8), 1: result(1, 0.93, 0.86, 0.35, 0.33, 0.9, 0.7),
                2: result(2, 0.96, 0.80, 0.20, 0.45, 0.7, 0.8)}
    rows = {r["metric"]: r for r in over_seeds(per_seed)}
    assert set(rows) == {"top-1", "recall@1", "mCE (unnormalised)"}  # the pretraining row compares nothing
    top1 = rows["top-1"]
    assert top1["difference"] == pytest.approx({0: 0.10, 1: 0.07, 2: 0.16})
    assert top1["holds"] and top1["smallest_gain"] == pytest.approx(0.07) and top1["labels_per_class"] == 10
    assert not rows["recall@1"]["holds"] and rows["recall@1"]["smallest_gain"] == pytest.approx(-0.1)
    # mCE: lower is better; seed 1 made it worse by 0.02
    assert not rows["mCE (unnormalised)"]["holds"]
    assert rows["mCE (unnormalised)"]["smallest_gain"] == pytest.approx(-0.02)
    write_seeds_report(tmp_path, per_seed)
    saved = json.loads((tmp_path / "seeds.json").read_text())
    assert saved["seeds"] == [0, 1, 2] and len(saved["comparisons"]) == 3
    page = (tmp_path / "report.html").read_text()
    assert "in 1 of 3 comparisons" in page and "by at least 0.070" in page
    assert re.findall(r"href='([^']+)'", page) == ["seed-0/report.html", "seed-1/report.html", "seed-2/report.html"]
    # the label-budget plot over the seeds leads the page, drawn from the seeds' means
    assert re.findall(r"<img src='([^']+)'", page) == ["figures/label_budget.png"]
    assert (tmp_path / "figures" / "label_budget.png").stat().st_size > 0
    means = dict(budget_means(list(per_seed.values()))["pretrained"])
    assert means == {10: pytest.approx((0.95 + 0.93 + 0.96) / 3)}
    assert dict(budget_means(list(per_seed.values()))["pixels"]) == {10: pytest.approx(0.8)}


@pytest.mark.parametrize("seeds, said", [("0,x", "not a comma-separated list of integers"),
                                         ("1,1", "each seed once")])
def test_bad_seeds_are_one_line(tmp_path, seeds, said):
    from click.testing import CliRunner

    from transfer.cli import cli

    res = CliRunner().invoke(cli, ["demo", "--seeds", seeds, "--out", str(tmp_path / "d")])
    assert res.exit_code == 2 and said in res.output and not (tmp_path / "d").exists()


def _without_timing(report: str) -> str:
    return "\n".join(line for line in report.splitlines() if not line.startswith("Total "))


def test_both_classifiers_are_scored_on_one_set_of_corrupted_digits(demo):
    """The second robustness evaluation reads the JPEGs the first one made (DEMO/corrupted/): one cache key (the
    same records, crop and seed), one file per image, corruption and severity, and equal clean images."""
    out, _ = demo
    sets = list((out / "corrupted").iterdir())
    assert len(sets) == 1, sets
    results = [json.loads((out / f"finetune-{init}" / "robustness" / "robustness.json").read_text())
               for init in ("pretrained", "random")]
    assert results[0]["corruptions"].keys() == results[1]["corruptions"].keys()
    assert results[0]["preprocessing"] == results[1]["preprocessing"] and results[0]["images"] == results[1]["images"]
    files = list(sets[0].rglob("*.jpg"))
    assert len(files) == results[0]["images"] * len(results[0]["corruptions"]) * len(results[0]["severities"])


def test_a_stopped_demo_resumes_to_the_results_of_one_never_stopped(demo, tmp_path):
    """The demo as a kill during its last training stage (retrieval from random init) leaves it, a SIGTERM
    inside that stage again while resuming, then --resume once more: the summary, the report and every redone
    stage's outputs are those of the demo that was never stopped."""
    out, _ = demo
    demo_dir = tmp_path / "demo"
    shutil.copytree(out, demo_dir)
    for rel in ("retrieval-random", "finetune-pretrained/robustness", "finetune-random/robustness", "corrupted",
                "figures", "summary.json", "report.md", "report.html"):  # not yet written when retrieval-random began
        shutil.rmtree(demo_dir / rel) if (demo_dir / rel).is_dir() else (demo_dir / rel).unlink()
    record = json.loads((demo_dir / "demo.json").read_text())
    redone = ("retrieval-random", "robustness-pretrained", "robustness-random")
    record["seconds"] = {k: v for k, v in record["seconds"].items() if k not in redone}
    (demo_dir / "demo.json").write_text(json.dumps(record))

    stage = demo_dir / "retrieval-random"
    proc = subprocess.Popen(transfer_cmd("demo", "--resume", "--out", demo_dir), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=cli_env(tmp_path))
    deadline = time.monotonic() + 300
    while not (stage / "recipe.yaml").is_file() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 128 + signal.SIGTERM, err[-2000:]
    assert f"transfer demo --resume --out {demo_dir}" in err
    assert json.loads((stage / "run.json").read_text())["status"] != "finished"
    assert not (demo_dir / "summary.json").exists()  # nothing claims the demo is done

    res = run_cli(tmp_path, "demo", "--resume", "--out", demo_dir, timeout=600)
    assert "finished before the resume" in res.stderr  # the kept stages are read back, not trained again
    got, want = (json.loads((d / "summary.json").read_text()) for d in (demo_dir, out))
    assert got["rows"] == want["rows"] and got["seconds"].keys() == want["seconds"].keys()
    kept = set(record["seconds"]) - {"baselines"}  # the linear baselines take seconds: they are always redone
    assert {k: got["seconds"][k] for k in kept} == {k: record["seconds"][k] for k in kept}
    assert _without_timing((demo_dir / "report.md").read_text()) == _without_timing((out / "report.md").read_text())
    figures = [sorted(p.name for p in (d / "figures").iterdir()) for d in (demo_dir, out)]
    assert figures[0] == figures[1]
    for rel in ("retrieval-random/weights/final.safetensors", "retrieval-random/retrieval/embeddings.npz"):
        if (out / rel).is_file():
            assert (demo_dir / rel).read_bytes() == (out / rel).read_bytes(), rel
    for init in ("pretrained", "random"):
        got_r, want_r = (json.loads((d / f"finetune-{init}" / "robustness" / "robustness.json").read_text())
                         for d in (demo_dir, out))
        assert got_r["corruptions"] == want_r["corruptions"] and got_r["top1"] == want_r["top1"]


def test_resume_is_only_for_a_demo_with_its_own_settings(demo, tmp_path):
    from click.testing import CliRunner

    from transfer.cli import cli

    out, _ = demo
    runner = CliRunner()
    cases = [(["--resume"], "--resume needs --out DEMO"),
             (["--resume", "--out", str(tmp_path)], f"nothing to resume in {tmp_path}: it holds no demo"),
             (["--resume", "--out", str(out), "--seed", "3"], "resume it with its own settings"),
             (["--resume", "--out", str(out), "--seeds", "0,1"], "resume it with its own settings"),
             (["--out", str(out)], "or continue the demo in it with --resume")]
    for args, said in cases:
        res = runner.invoke(cli, ["demo", *args])
        assert res.exit_code == 2 and said in res.output, (args, res.output)
        assert len(res.output.strip().splitlines()) == 1, res.output
