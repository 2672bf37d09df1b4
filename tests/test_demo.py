"""`transfer demo`, as the README's quickstart and docs/commands/demo.md run it, with --quick: every stage
really runs, and every figure in its summary and report is the one its own run directory holds.

tests/test_docs.py skips those two blocks (their markers say so): this module runs them, once."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.doc_blocks import sh_blocks
from tests.training_helpers import run_cli

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
                  "--quick", "--workers", "0")
    return out, res


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
