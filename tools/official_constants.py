"""The constants the official robustness evaluation divides by, read from the authors' own script.

clovaai/assembled-cnn's mce/eval_robustness.py holds AlexNet's pooled corruption errors (``ALEXNET_CE``, the mCE
denominators, 19 corruptions) and flip probabilities (``ALEXNET_FP``). This reads them from a checkout with ``ast``
(the script imports TensorFlow at its top, so it is parsed, not imported; nothing of it is copied here) and
writes them, in the script's order, with the commit they came from, to the fixture tests/test_robustness.py
checks our constants against. From the repository root:

    python tools/official_constants.py --official /path/to/assembled-cnn \\
        --out tests/fixtures/official/robustness_constants.json
"""

from __future__ import annotations

import argparse
import ast
import json
import subprocess
from pathlib import Path

SCRIPT = "mce/eval_robustness.py"
NAMES = ("ALEXNET_CE", "ALEXNET_FP")


def read_constants(checkout: Path) -> dict[str, dict[str, float]]:
    tree = ast.parse((checkout / SCRIPT).read_text(), filename=SCRIPT)
    found = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name) \
                and node.targets[0].id in NAMES:
            found[node.targets[0].id] = ast.literal_eval(node.value)  # a dict literal, in the script's order
    missing = [n for n in NAMES if n not in found]
    if missing:
        raise SystemExit(f"error: {checkout / SCRIPT} defines no {', '.join(missing)}; is it clovaai/assembled-cnn?")
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--official", type=Path, required=True, help="checkout of clovaai/assembled-cnn")
    parser.add_argument("--out", type=Path, required=True, help="the JSON file to write")
    args = parser.parse_args()
    constants = read_constants(args.official)
    commit = subprocess.run(["git", "-C", str(args.official), "rev-parse", "HEAD"], capture_output=True,
                            text=True).stdout.strip() or None
    doc = {"source": f"clovaai/assembled-cnn {SCRIPT}", "commit": commit,
           "regenerate": "python tools/official_constants.py --official CHECKOUT --out " + str(args.out),
           **constants}
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {args.out}: " + ", ".join(f"{k} ({len(v)} values)" for k, v in constants.items()))


if __name__ == "__main__":
    main()
