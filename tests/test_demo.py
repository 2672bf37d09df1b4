"""`transfer demo --quick`: every stage really runs, and every figure in its summary and report is the one
its own run directory holds."""

from __future__ import annotations

import json
import re

import pytest

from tests.training_helpers import run_cli


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("demo")
    res = run_cli(tmp, "demo", "--quick", "--out", tmp / "d", "--workers", "0")
    return tmp / "d", res


def test_summary_matches_the_runs(demo):
    out, res = demo
    summary = json.loads((out / "summary.json").read_text())
    rows = {(r["stage"].split(" ")[0], r["init"], r["metric"]): r["value"] for r in summary["rows"]}
    for init in ("pretrained", "random"):
        info = json.loads((out / f"finetune-{init}" / "run.json").read_text())
        assert rows[("fine-tune", init, "top-1")] == pytest.approx(info["best"])
        metrics = json.loads((out / f"retrieval-{init}" / "retrieval" / "metrics.json").read_text())
        for m in ("recall@1", "recall@2", "recall@4", "recall@8", "map@r"):
            assert rows[("retrieval", init, m)] == pytest.approx(metrics[m])
        robust = json.loads((out / f"finetune-{init}" / "robustness" / "robustness.json").read_text())
        assert rows[("robustness", init, "mCE (unnormalised)")] == pytest.approx(robust["mce_unnormalized"])
        assert robust["mce_unnormalized"] == pytest.approx(
            sum(robust["corruptions"].values()) / len(robust["corruptions"]))
        assert len(robust["corruptions"]) == 15
    # the pretrained runs started from the demo's own backbone; the random ones from nothing
    for task in ("finetune", "retrieval"):
        side = json.loads((out / f"{task}-pretrained" / "weights" / "best.json").read_text())
        assert side["backbone"].startswith(str(out / "pretrain"))
        assert "backbone" not in json.loads((out / f"{task}-random" / "weights" / "best.json").read_text())
    assert set(summary["seconds"]) == {"pretrain", "finetune-pretrained", "finetune-random", "retrieval-pretrained",
                                       "retrieval-random", "robustness-pretrained", "robustness-random"}
    assert "difference" in res.stdout and "report:" in res.stdout


def test_report_shows_only_figures_the_run_made(demo):
    out, _ = demo
    html = (out / "report.html").read_text()
    md = (out / "report.md").read_text()
    images = re.findall(r"<img src='([^']+)'", html)
    assert len(images) == 9  # pretraining curves + 4 per initialisation
    assert images == re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    for rel in images:
        assert (out / rel).is_file() and (out / rel).stat().st_size > 1000, rel
    assert any("grid.png" in i for i in images) and any("corruption_errors.png" in i for i in images)
