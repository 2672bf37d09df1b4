"""Where a benchmark's figures go: a JSON file with the machine described, and a Markdown table printed."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path


def save_and_print(out: Path, payload: dict, header: list[str], lines: list[list[str]]) -> None:
    import torch

    from transfer.eval.throughput import describe_machine

    payload = {"date": dt.date.today().isoformat(), "machine": describe_machine(torch.device("cpu")), **payload}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(payload, indent=2) + "\n")
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for line in lines:
        print("| " + " | ".join(line) + " |")
