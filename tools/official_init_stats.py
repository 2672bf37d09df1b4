"""How the authors' TensorFlow Assemble-ResNet initialises every variable (clovaai/assembled-cnn, master).

For each configuration in ``CONFIGS`` this builds the *official* graph at the official width (``num_filters=64``,
1001 classes) with ``tools/official_fixtures.py``'s builder, runs TensorFlow's own initialisers once with a fixed
seed and writes ``<out>/<name>.json``: per model variable its shape, the initialiser as the graph holds it (the
op it draws with and its constants: the truncated normal's stddev, the uniform's bounds, a constant's value),
and the statistics of the drawn tensor (element count, mean, std, min, max). ``tests/test_init.py`` checks that our
models initialise every layer with the same shape and distribution; it needs no TensorFlow.

``zero_gamma=True`` is the official pre-training scripts' flag (scripts/train_assemble_from_scratch.sh); its
default is False (nets/hparams_config.py), which the fine-tuning scripts keep, but there every BN gamma is
restored from the pre-trained checkpoint.

The official code is imported from the checkout given with ``--official``; nothing of it is copied here. Run it
with an interpreter that has TensorFlow (made with tensorflow-cpu 2.15.1, whose ``tf.compat.v1`` initialisers
are TF 1.14's, the version the official README names). From the repository root:

    /path/to/tf-venv/bin/python tools/official_init_stats.py --official /path/to/assembled-cnn \\
        --out tests/fixtures/official/init

About a minute on 2 CPU cores; ``--only NAME[,NAME]`` limits it to some configurations.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from official_fixtures import (  # a sibling script, not a package
    FULL_CLASSES,
    FULL_SIZE,
    FULL_WIDTH,
    REPO,
    SK_AA,
    Config,
    build,
    check_against_model_fns,
    load_official,
    model_kwargs,
    official_commit,
    provenance,
    selected,
)

DEFAULT_OUT = REPO / "tests" / "fixtures" / "official" / "init"
PRETRAIN = {"zero_gamma": True}  # scripts/train_assemble_from_scratch.sh: --zero_gamma=True

# Full width; `sizes` only matters for GeM (static map size). One configuration per kind of layer the zoo has:
# ResNet-D with SE, Big-Little (with the classic stem) with SK and anti-aliasing, and the retrieval head.
CONFIGS: dict[str, Config] = {
    "resnet50d_se": Config(1, 50, FULL_CLASSES, FULL_WIDTH, (FULL_SIZE[1],), use_resnet_d=True,
                           flags={**PRETRAIN, "use_se_block": True}),
    "assemble_resnet50": Config(2, 50, FULL_CLASSES, FULL_WIDTH, (FULL_SIZE[2],),
                                flags={**PRETRAIN, **SK_AA, "bl_alpha": 2, "bl_beta": 4}),
    # the paper's retrieval head: a 1536-d embedding (1x1 conv + BN) before the classifier, GeM pooling
    "assemble_resnet50_retrieval": Config(2, 50, 100, FULL_WIDTH, (FULL_SIZE[2],),
                                          flags={**PRETRAIN, **SK_AA, "bl_alpha": 2, "bl_beta": 4,
                                                 "embedding_size": 1536, "pool_type": "gem"}),
}
ROOT = "resnet_model"
# The retrieval configuration's backbone is assemble_resnet50's: only its head is recorded.
HEAD_ONLY = {"assemble_resnet50_retrieval": ("/embedding_dense", "/dense/")}


def initializer_of(variable) -> dict:
    """The initialiser a variable's initial value comes from, read off the graph: the random op and its constants
    (TF names them <var>/Initializer/<op>/<constant>)."""
    ops, stack = {}, [variable.initial_value.op]
    while stack:
        op = stack.pop()
        if "/Initializer/" not in op.name or op.name in ops:
            continue
        ops[op.name] = op
        stack += [t.op for t in op.inputs]
    by_type = {op.type: op for op in ops.values()}

    def const(suffix: str) -> float:
        (op,) = [o for name, o in ops.items() if name.endswith(suffix)]
        return float(op.get_attr("value").float_val[0])

    if "TruncatedNormal" in by_type:
        return {"kind": "truncated_normal", "mean": const("/mean"), "stddev": const("/stddev"), "truncation": 2.0}
    # Keras' GlorotUniform (tf.layers.dense's default kernel initialiser) draws with the stateless op in TF 2;
    # TF 1.14's glorot_uniform_initializer drew from the same U(min, max) with RandomUniform.
    if "RandomUniform" in by_type or "StatelessRandomUniformV2" in by_type:
        return {"kind": "uniform", "min": const("/min"), "max": const("/max")}
    if any("Random" in t for t in by_type):
        raise SystemExit(f"{variable.op.name}: an initialiser this script does not know ({sorted(by_type)})")
    return {"kind": "constant"}  # zeros or ones (Fill / Const); the value is read from the drawn tensor


def sample_stats(x: np.ndarray) -> dict:
    x = x.astype(np.float64)
    return {"n": int(x.size), "mean": _short(x.mean()), "std": _short(x.std()), "min": _short(x.min()),
            "max": _short(x.max())}


def _short(v) -> float:
    return float(f"{float(v):.7g}")  # float32 precision: keeps the JSON small


def dump(meta: dict) -> str:
    """JSON with one line per variable (a few hundred lines, not thousands)."""
    variables = meta.pop("variables")
    head = json.dumps(meta, indent=1)[:-2]
    lines = [f" {json.dumps(k)}: {json.dumps(v)}" for k, v in variables.items()]
    return head + ',\n "variables": {\n' + ",\n".join(lines) + "\n }\n}\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--official", type=Path, required=True, help="checkout of clovaai/assembled-cnn")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help=f"output folder (default {DEFAULT_OUT.relative_to(REPO)})")
    parser.add_argument("--only", help="comma-separated configuration names: " + ", ".join(CONFIGS))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    names = selected(parser, args, CONFIGS)

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    tf, resnet_model, model_fns = load_official(args.official.resolve())
    tf.compat.v1.logging.set_verbosity(tf.compat.v1.logging.ERROR)
    commit, dirty = official_commit(args.official)
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out.resolve()
    shown = out.relative_to(REPO) if out.is_relative_to(REPO) else out
    for name in names:
        cfg = CONFIGS[name]
        seed = args.seed * 1000 + list(CONFIGS).index(name)
        kwargs = model_kwargs(model_fns, cfg, cfg.num_filters, cfg.num_classes)
        check_against_model_fns(resnet_model, model_fns, kwargs, cfg)
        static = cfg.sizes[0] if kwargs["pool_type"] == "gem" else None
        built = build(tf, resnet_model, cfg, kwargs, static, seed)
        with built.graph.as_default(), tf.compat.v1.Session(graph=built.graph) as sess:
            model_vars = [v for v in tf.compat.v1.global_variables()
                          if v.op.name.startswith(f"{ROOT}/") and not v.op.name.endswith("/Momentum")]
            sess.run(tf.compat.v1.variables_initializer(model_vars))
            values = sess.run({v.op.name: v for v in model_vars})
            variables = {}
            keep = HEAD_ONLY.get(name)
            for v in model_vars:
                if keep and not any(part in v.op.name for part in keep):
                    continue
                x = values[v.op.name]
                init = initializer_of(v)
                if init["kind"] == "constant":
                    if not np.all(x == x.flat[0]):
                        raise SystemExit(f"{v.op.name}: a constant initialiser drew different values")
                    init["value"] = float(x.flat[0])
                variables[v.op.name] = {"shape": list(x.shape), "initializer": init, "sample": sample_stats(x)}
        meta = {
            "name": name,
            "model_class": "nets.resnet_model.Model",
            "model_kwargs": kwargs,
            "use_resnet_d": cfg.use_resnet_d,
            "seed": seed,
            "trainable_params": built.trainable_params,
            **provenance(tf, commit, dirty),
            "command": "/path/to/tf-venv/bin/python tools/official_init_stats.py --official /path/to/assembled-cnn "
                       f"--out {shown} --only {name} --seed {args.seed}",
            "variables": variables,
        }
        path = args.out / f"{name}.json"
        path.write_text(dump(meta))
        json.loads(path.read_text())
        kinds = sorted({str(v["initializer"]["kind"]) for v in variables.values()})
        print(f"{name}: {len(variables)} variables ({', '.join(kinds)}), wrote {path} "
              f"({path.stat().st_size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
