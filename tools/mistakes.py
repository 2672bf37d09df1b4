"""The bad-input table: every mistake of tests/test_mistakes.py, run, with its exit status and its one line.

    uv run --extra test python tools/mistakes.py > mistakes.md

Each row is a real `transfer` invocation (in this process, through click's test runner) against a tiny
finished run and files made for the purpose in a temporary folder.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from click.testing import CliRunner

from tests.test_mistakes import MISTAKES, Ctx, attempt
from tests.training_helpers import tiny_recipe
from transfer.cli import cli


def main() -> None:
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        os.environ["TRANSFER_CACHE"] = str(tmp / "cache")
        os.environ["TRANSFER_RUNS"] = str(tmp / "runs")
        run = tmp / "run"
        res = CliRunner().invoke(cli, ["pretrain", str(tiny_recipe(tmp, schedule={"epochs": 1})), "--out", str(run)])
        if res.exit_code:
            raise SystemExit(res.output)
        ctx = Ctx(tmp, run)
        rows, tracebacks, wrong = [], 0, 0
        for what, make, _ in MISTAKES:
            code, output, unexpected = attempt(ctx, make)
            errors = [line for line in output.splitlines() if line.startswith("error: ")]
            tracebacks += unexpected is not None
            wrong += code != 2 or len(errors) != 1
            line = (f"{type(unexpected).__name__}: {unexpected}" if unexpected else errors[0] if errors else "-")
            rows.append(f"| {what} | {code} | {line.replace(d, 'TMP').replace('|', '/')} |")
    print(f"{len(MISTAKES)} mistakes: {tracebacks} tracebacks, {wrong} not a single `error:` line with exit 2\n")
    print("| mistake | exit | what the user reads |\n|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
