"""Reference checkpoints and logits from the authors' TensorFlow Assemble-ResNet (clovaai/assembled-cnn).

For each configuration in ``CONFIGS`` this builds the *official* graph (``nets.resnet_model.Model`` with the
constructor values that ``functions.model_fns.Model`` passes, only ``num_filters`` and ``num_classes`` changed),
gives it seeded random weights, and writes into ``<out>/<name>/``:

* a TensorFlow V2 checkpoint as ``tf.compat.v1.train.Saver`` writes it (``checkpoint``, ``model.ckpt-0.index``,
  ``model.ckpt-0.data-00000-of-00001``) holding what a released Estimator + Momentum-SGD checkpoint holds: the model
  variables, ``global_step`` and one ``<var>/Momentum`` slot per trainable variable;
* ``expected.npz`` with ``input_<H>`` (float32, NHWC, already mean-subtracted) and ``logits_<H>`` (float32, as
  TensorFlow computed them) for every input size;
* ``fixture.json`` with the constructor and call arguments, sizes, seed, versions, the official commit, the
  parameter count and the command that regenerates it.

The official code is imported from the checkout given with ``--official``; nothing of it is copied here.
Run it with an interpreter that has TensorFlow (made with tensorflow-cpu 2.15.1). From the repository root:

    /path/to/tf-venv/bin/python tools/official_fixtures.py --official /path/to/assembled-cnn \\
        --out tests/fixtures/official

``--only resnet50,assemble_resnet50`` limits it to some configurations (each has its own seed, so a subset comes
out the same as in a full run). ``--full-width`` builds the same configurations at the official width
(``num_filters=64``, 1001 classes, 224x224 inputs for ResNet, 256x256 for Big-Little) and must be given an ``--out``
outside ``tests/``; those checkpoints are hundreds of MB and not committed:

    /path/to/tf-venv/bin/python tools/official_fixtures.py --official /path/to/assembled-cnn --full-width \\
        --out /tmp/official_full --only assemble_resnet50

``--count-only`` builds the graphs and only prints their trainable parameter counts; with ``--full-width`` it also
records the ImageNet classifiers' counts (1001 classes) in ``<out>/full_width_params.json``, which the tests compare
our models with:

    /path/to/tf-venv/bin/python tools/official_fixtures.py --official /path/to/assembled-cnn --full-width --count-only

Full width takes about 1 minute per ResNet-50 and 6 for Assemble-ResNet-152 on 2 CPU cores; the checkpoints are
196 MB (ResNet-50) to 895 MB (Assemble-ResNet-152), Momentum slots included.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import struct
import subprocess
import sys
import types
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "tests" / "fixtures" / "official"

# imagenet_preprocessing.CHANNEL_MEANS of the official code: its inputs are RGB 0-255 minus these.
MEANS = [123.68, 116.78, 103.94]
CHANNEL_MEANS = np.array(MEANS, np.float32)
BATCH = 2
EXTRA_CALIBRATION = 6  # calibration images besides the fixture ones


@dataclass(frozen=True)
class Config:
    """One official configuration: the main_classification.py flags it corresponds to, and fixture sizes."""

    resnet_version: int  # 1: ResNet(-D), 2: Big-Little (the official flag's meaning, not ResNet v2)
    resnet_size: int
    num_classes: int
    num_filters: int  # fixture width; the official one is 64
    sizes: tuple[int, ...]  # fixture input sizes (square)
    use_resnet_d: bool = False  # a Model.__call__ argument in the official code, not a constructor one
    flags: dict = field(default_factory=dict)  # further functions.model_fns.Model keyword arguments


SK_AA = {"use_sk_block": True, "anti_alias_type": "sconv", "anti_alias_filter_size": 3}

# Widths: the checkpoints hold every trainable variable twice (value and Momentum slot), and the 1001-class dense
# layer alone is 32 * num_filters * 1001 floats, so width 2 (all layers still have >= 2 channels except the
# alpha=2 little branches and the ResNet-D stem's first convs, which get 1); SE needs 4 (it squeezes by 16).
# 72: the 9x9 / 5x5 / 3x3 maps of the last stages are odd; 70: the 35x35 map before the stem max-pool is odd.
# Big-Little adds an upsampled big branch to the little one, which only lines up when every halving is exact: 64.
CONFIGS: dict[str, Config] = {
    "resnet50": Config(1, 50, 1001, 2, (72, 70)),
    "resnet50d_sk": Config(1, 50, 10, 2, (72, 70), use_resnet_d=True, flags={"use_sk_block": True}),
    "resnet50d_se": Config(1, 50, 10, 4, (72, 70), use_resnet_d=True, flags={"use_se_block": True}),
    "assemble_resnet50": Config(2, 50, 1001, 2, (64,), flags={**SK_AA, "bl_alpha": 2, "bl_beta": 4}),
    "assemble_resnet152": Config(2, 152, 10, 2, (64,), flags={**SK_AA, "bl_alpha": 1, "bl_beta": 2}),
    "assemble_resnet50_retrieval": Config(
        2, 50, 10, 2, (64,), flags={**SK_AA, "bl_alpha": 2, "bl_beta": 4, "embedding_size": 16, "pool_type": "gem"}
    ),
    # A network the official code builds and the zoo does not have (SK-dagger and SE together, no ResNet-D):
    # converting it must fail in one line.
    "unknown_architecture": Config(1, 50, 10, 4, (72,), flags={"use_sk_block": True, "use_se_block": True}),
}
FULL_WIDTH = 64
FULL_CLASSES = 1001
FULL_SIZE = {1: 224, 2: 256}


def load_official(path: Path):
    """Import the official model code from the user's checkout, with ``tensorflow`` meaning tf.compat.v1."""
    import tensorflow as tf

    tf1 = tf.compat.v1
    tf1.disable_eager_execution()
    sys.path.insert(0, str(path))
    saved = {name: sys.modules.get(name) for name in ("tensorflow", "nets.run_loop_classification")}
    # The official modules do `import tensorflow as tf` and use TF1 names (tf.layers, tf.logging, ...), which in
    # TF 2 only exist under compat.v1; they bind `tf` at import time, so the alias is only needed while importing.
    sys.modules["tensorflow"] = tf1
    # functions.model_fns imports the Estimator training loop, which needs TF-1.x-only internals
    # (tensorflow.python.distribute.distribution_strategy_context) and is not used by Model or get_block_sizes.
    sys.modules["nets.run_loop_classification"] = types.ModuleType("nets.run_loop_classification")
    try:
        from functions import model_fns
        from nets import resnet_model
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module
    return tf, resnet_model, model_fns


def model_kwargs(model_fns, cfg: Config, num_filters: int, num_classes: int) -> dict:
    """The nets.resnet_model.Model arguments that functions.model_fns.Model passes, at another width."""
    kwargs = {
        "resnet_size": cfg.resnet_size,
        "bottleneck": True,
        "num_classes": num_classes,
        "num_filters": num_filters,
        "kernel_size": 7,
        "conv_stride": 2,
        "first_pool_size": 3,
        "first_pool_stride": 2,
        "block_sizes": model_fns.get_block_sizes(cfg.resnet_size, cfg.resnet_version),
        "block_strides": [2, 2, 1, 2] if cfg.resnet_version == 2 else [1, 2, 2, 2],
        "zero_gamma": False,
        "resnet_version": cfg.resnet_version,
        "data_format": "channels_last",
        "use_se_block": False,
        "use_sk_block": False,
        "bn_momentum": 0.997,
        "embedding_size": 0,
        "anti_alias_filter_size": 0,
        "anti_alias_type": "",
        "pool_type": "gap",
        "bl_alpha": 2,
        "bl_beta": 4,
        "loss_type": "softmax",
    }
    kwargs.update(cfg.flags)
    return kwargs


def check_against_model_fns(resnet_model, model_fns, kwargs: dict, cfg: Config) -> None:
    """Fail if our copy of the constructor values differs from what the checkout's model_fns.Model sets."""
    ours = vars(resnet_model.Model(**kwargs))
    theirs = vars(
        model_fns.Model(
            cfg.resnet_size, "channels_last", num_classes=kwargs["num_classes"], resnet_version=cfg.resnet_version,
            **cfg.flags,
        )
    )
    for key in sorted(set(ours) | set(theirs)):
        a, b = ours.get(key), theirs.get(key)
        if key == "num_filters":
            continue
        if key == "dense_bias_initializer":  # a fresh initializer object each time
            a, b = type(a), type(b)
        if a != b:
            raise SystemExit(f"official model_fns.Model sets {key}={b!r}, this script {a!r}: update model_kwargs")


def official_commit(path: Path) -> tuple[str | None, bool | None]:
    try:
        commit = subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True,
                                check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(path), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None, None
    return commit, bool(dirty)


def make_inputs(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    """Image-like uint8 pixels minus the channel means: smooth colour fields plus noise, different per image.

    Pure per-pixel noise would make the globally pooled features of two images nearly equal; integer pixels
    keep expected.npz small (few distinct float values compress well).
    """
    yy, xx = np.meshgrid(np.linspace(0, 1, size), np.linspace(0, 1, size), indexing="ij")
    images = np.empty((n, size, size, 3), np.float32)
    for i in range(n):
        for c in range(3):
            fy, fx = rng.uniform(0.5, 3, 2)
            wave = np.sin(2 * np.pi * (fy * yy + fx * xx) + rng.uniform(0, 2 * np.pi))
            plane = rng.uniform(60, 200) + rng.uniform(20, 60) * wave + rng.normal(0, 25, (size, size))
            images[i, :, :, c] = np.clip(np.rint(plane), 0, 255)
    return images - CHANNEL_MEANS


@dataclass
class Built:
    graph: object
    images: object  # input placeholder
    logits: object
    trainable_params: int


def build(tf, resnet_model, cfg: Config, kwargs: dict, size: int | None, seed: int) -> Built:
    """The official inference graph plus global_step and Momentum slots, as a released checkpoint has them."""
    tf1 = tf.compat.v1
    graph = tf1.Graph()
    with graph.as_default():
        tf1.set_random_seed(seed)
        # tf.layers.dense's default initialiser is Keras' GlorotUniform, which, unseeded, draws its seed from
        # Python's `random` rather than from the graph seed.
        random.seed(seed)
        # resnet_model_fn creates global_step before the model, so it comes first as in the official graph.
        global_step = tf1.train.get_or_create_global_step()
        # blocks.generalized_mean_pooling reads the map size from the static shape, so GeM needs a fixed size.
        images = tf1.placeholder(tf.float32, [None, size, size, 3], name="images")
        model = resnet_model.Model(**kwargs)
        logits = model(images, training=False, use_resnet_d=cfg.use_resnet_d, keep_prob=1.0)
        trainable = tf1.trainable_variables()
        # The slots through the optimizer the official get_train_op uses, so they get its names (<var>/Momentum);
        # the update op is never run.
        opt = tf1.train.MomentumOptimizer(learning_rate=0.1, momentum=0.9)
        opt.apply_gradients([(tf.zeros_like(v), v) for v in trainable], global_step=global_step)
        count = sum(int(np.prod(v.shape.as_list())) for v in trainable)
    return Built(graph, images, logits, count)


def batch_norms(graph) -> dict[str, object]:
    """Layer scope -> its FusedBatchNorm op (one per layer in inference mode), in creation order."""
    return {op.name.rsplit("/", 1)[0]: op for op in graph.get_operations() if op.type.startswith("FusedBatchNorm")}


def randomise(tf, sess, built: Built, rng: np.random.Generator, calibration: np.ndarray) -> int:
    """Random BatchNorm parameters and dense bias on top of TF's seeded initialisers; returns calibration rounds.

    Inference-mode BN is a fixed per-channel affine map, so with arbitrary moving statistics the activations drift
    by a random factor per layer and vanish or explode over ~150 layers; and a deep random network amplifies any
    mismatch between a BN's moving statistics and its actual input exponentially with depth (statistics taken from
    a training-mode pass, then perturbed, still blew Assemble-ResNet-152's logits up to ~1e4). So each BN's moving
    statistics are its actual input statistics on a calibration batch *in this inference graph*, perturbed by a
    fixed random amount per channel (so that every mean and variance matters and a BN run in training mode by
    mistake is caught). The BNs depend on each other, so this is a fixed point: one pass settles the first BN
    level, the next the second, ...; it is reached when the statistics stop changing.
    """
    tf1 = tf.compat.v1
    variables = {v.op.name: v for v in tf1.global_variables()}
    layers = batch_norms(built.graph)
    new = {}
    for scope, op in layers.items():
        channels = op.inputs[1].shape.as_list()[0]
        new[f"{scope}/gamma"] = rng.uniform(0.5, 1.5, channels)
        new[f"{scope}/beta"] = rng.normal(0.0, 0.2, channels)
    new["resnet_model/dense/bias"] = rng.normal(0.0, 0.5, variables["resnet_model/dense/bias"].shape.as_list())
    assign(sess, {variables[name]: value for name, value in new.items()})

    shift = {scope: rng.normal(0.0, 0.2, op.inputs[1].shape.as_list()) for scope, op in layers.items()}
    scale = {scope: np.exp(rng.uniform(-0.5, 0.5, op.inputs[1].shape.as_list())) for scope, op in layers.items()}
    moments = bn_input_moments(tf, built)
    previous = None
    for rounds in range(1, len(layers) + 2):
        stats = sess.run(moments, {built.images: calibration})
        new = {}
        # Until the layers before it have settled, a deep BN's input can overflow to inf (and its statistics to
        # nan); those are overwritten in later passes, and nan never compares close, so it cannot end the loop.
        with np.errstate(invalid="ignore", over="ignore"):
            for scope, (mean, var) in stats.items():
                new[f"{scope}/moving_mean"] = mean + shift[scope] * np.sqrt(var + 1e-5)
                new[f"{scope}/moving_variance"] = var * scale[scope] + 1e-6
        assign(sess, {variables[name]: value for name, value in new.items()})
        if previous is not None and all(np.allclose(new[k], previous[k], rtol=1e-4, atol=1e-6) for k in new):
            return rounds
        previous = new
    raise SystemExit("BatchNorm calibration did not settle")


def bn_input_moments(tf, built: Built) -> dict:
    """Per-channel mean and variance of every BN's input, computed in the graph (the activations themselves would
    be GBs at full width). Adds no variables, so the checkpoint is unchanged."""
    with built.graph.as_default(), tf.compat.v1.name_scope("fixture_moments"):
        return {scope: tf.nn.moments(op.inputs[0], axes=[0, 1, 2]) for scope, op in batch_norms(built.graph).items()}


def check_alive(tf, sess, built: Built, name: str, images: np.ndarray) -> None:
    """Fail if some BN's input barely varies over the fixture images compared with its moving variance (averaged
    over channels): the layers before it would then hardly affect the logits, and a converter bug there could go
    unnoticed."""
    variables = {v.op.name: v for v in tf.compat.v1.global_variables()}
    stats = sess.run(bn_input_moments(tf, built), {built.images: images})
    moving = sess.run({scope: variables[f"{scope}/moving_variance"] for scope in stats})
    ratios = {scope: float(np.sqrt(var.mean() / moving[scope].mean())) for scope, (_, var) in stats.items()}
    weakest = min(ratios, key=ratios.get)
    print(f"  BN inputs: smallest std / sqrt(moving variance) {ratios[weakest]:.3f} ({weakest})")
    if ratios[weakest] < 0.02:
        raise SystemExit(f"{name}: {weakest} sees a nearly constant input")


def assign(sess, values: dict) -> None:
    """Set many variables in one run (Variable.load does one run each, which takes minutes over a deep graph)."""
    sess.run([v.initializer for v in values],
             {v.initializer.inputs[1]: np.asarray(x, v.dtype.base_dtype.as_numpy_dtype) for v, x in values.items()})


def check_logits(name: str, size: int, logits: np.ndarray) -> None:
    spread = logits.std(axis=1)
    gap = np.abs(logits[0] - logits[1]).max()
    print(f"  {name} {size}x{size}: logits std per image {np.round(spread, 3)}, max |a-b| {gap:.3f}, "
          f"max |logit| {np.abs(logits).max():.2f}")
    if not np.isfinite(logits).all() or spread.min() < 1e-2 or gap < 1e-2 * spread.min() or np.abs(logits).max() > 1e4:
        raise SystemExit(f"{name}: degenerate logits at {size}x{size}")


def index_blocks_uncompressed(index_file: Path) -> bool:
    """True when every block of a checkpoint .index (a LevelDB-style SSTable) has trailer type 0 (no compression)."""
    data = index_file.read_bytes()

    def varint(buf: bytes, pos: int) -> tuple[int, int]:
        result = shift = 0
        while True:
            byte = buf[pos]
            result |= (byte & 0x7F) << shift
            pos += 1
            if byte < 0x80:
                return result, pos
            shift += 7

    def handle(buf: bytes, pos: int) -> tuple[int, int, int]:
        offset, pos = varint(buf, pos)
        size, pos = varint(buf, pos)
        return offset, size, pos

    footer = data[-48:]
    if struct.unpack("<Q", footer[-8:])[0] != 0xDB4775248B80FB57:
        raise ValueError(f"{index_file}: not an SSTable")
    meta_off, meta_size, pos = handle(footer, 0)
    index_off, index_size, _ = handle(footer, pos)
    blocks = [(meta_off, meta_size), (index_off, index_size)]
    if data[index_off + index_size] == 0:
        # The index block maps each data block's last key to its handle; entries are prefix-compressed
        # (shared, non_shared, value_length varints), and a restart array closes the block.
        block = data[index_off:index_off + index_size]
        restarts = struct.unpack("<I", block[-4:])[0]
        end, pos = len(block) - 4 * (restarts + 1), 0
        while pos < end:
            _, pos = varint(block, pos)
            non_shared, pos = varint(block, pos)
            value_len, pos = varint(block, pos)
            pos += non_shared
            offset, size, _ = handle(block, pos)
            blocks.append((offset, size))
            pos += value_len
    return all(data[offset + size] == 0 for offset, size in blocks)


def save(tf, sess, built: Built, out: Path) -> None:
    tf1 = tf.compat.v1
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob("model.ckpt-*"):
        stale.unlink()
    # No .meta (a graph dump is MBs and not part of the fixture); the `checkpoint` state file is written below with
    # a relative path and no timestamps, so it is machine-independent and identical on every regeneration.
    saver = tf1.train.Saver(tf1.global_variables(), write_version=tf1.train.SaverDef.V2)
    prefix = saver.save(sess, str(out / "model.ckpt"), global_step=0, write_meta_graph=False, write_state=False)
    name = Path(prefix).name
    # With a relative save_dir TF would store the path relative to the working directory; absolute dir, bare name.
    tf1.train.update_checkpoint_state(str(out.resolve()), name, [name])
    found = tf1.train.latest_checkpoint(str(out))
    if found is None or Path(found).name != name:
        raise SystemExit(f"{out}/checkpoint does not point at {name}")
    if not index_blocks_uncompressed(out / f"{name}.index"):
        raise SystemExit(f"{out}: the checkpoint index has compressed blocks")


def regenerate_command(args, name: str) -> str:
    out = Path(args.out).resolve()
    shown = out.relative_to(REPO) if out.is_relative_to(REPO) else out
    parts = ["/path/to/tf-venv/bin/python", "tools/official_fixtures.py", "--official", "/path/to/assembled-cnn"]
    if args.full_width:
        parts.append("--full-width")
    parts += ["--out", str(shown), "--only", name, "--seed", str(args.seed)]
    return " ".join(parts)


def selected(parser: argparse.ArgumentParser, args, configs: dict) -> list[str]:
    """The configurations --only names (all without it), after checking them and the --official checkout."""
    names = args.only.split(",") if args.only else list(configs)
    unknown = sorted(set(names) - set(configs))
    if unknown:
        parser.error(f"unknown configurations {unknown}; known: {', '.join(configs)}")
    if not (args.official / "nets" / "resnet_model.py").is_file():
        parser.error(f"{args.official} is not an assembled-cnn checkout (no nets/resnet_model.py)")
    return names


def provenance(tf, commit: str | None, dirty: bool | None) -> dict:
    """What a fixture records of the software and the official code that made it."""
    return {"tensorflow_version": tf.__version__, "numpy_version": np.__version__,
            "official_repo": "https://github.com/clovaai/assembled-cnn", "official_commit": commit,
            "official_checkout_modified": dirty}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--official", type=Path, required=True, help="checkout of clovaai/assembled-cnn")
    parser.add_argument("--out", type=Path, help=f"output folder (default {DEFAULT_OUT.relative_to(REPO)})")
    parser.add_argument("--only", help="comma-separated configuration names: " + ", ".join(CONFIGS))
    parser.add_argument("--full-width", action="store_true", help="official width and 1001 classes, not committed")
    parser.add_argument("--count-only", action="store_true", help="only count trainable parameters (see above)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    names = selected(parser, args, CONFIGS)
    if args.out is None:
        if args.full_width and not args.count_only:
            parser.error("--full-width needs an --out outside the repository's tests/")
        args.out = DEFAULT_OUT
    if args.full_width and not args.count_only and args.out.resolve().is_relative_to(REPO / "tests"):
        parser.error("full-width checkpoints are hundreds of MB: give an --out outside tests/")

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    tf, resnet_model, model_fns = load_official(args.official.resolve())
    tf.compat.v1.logging.set_verbosity(tf.compat.v1.logging.ERROR)
    commit, dirty = official_commit(args.official)

    counts = {}
    for name in names:
        cfg = CONFIGS[name]
        seed = args.seed * 1000 + list(CONFIGS).index(name)
        width, classes = (FULL_WIDTH, FULL_CLASSES) if args.full_width else (cfg.num_filters, cfg.num_classes)
        sizes = (FULL_SIZE[cfg.resnet_version],) if args.full_width else cfg.sizes
        kwargs = model_kwargs(model_fns, cfg, width, classes)
        check_against_model_fns(resnet_model, model_fns, kwargs, cfg)
        static = sizes[0] if kwargs["pool_type"] == "gem" else None
        if static is not None and len(sizes) > 1:
            raise SystemExit(f"{name}: GeM needs one graph per input size")
        built = build(tf, resnet_model, cfg, kwargs, static, seed)
        print(f"{name}: {built.trainable_params:,} trainable parameters (num_filters={width}, {classes} classes)")
        if args.count_only:
            # The retrieval configuration is a fine-tuned head on assemble_resnet50, not an ImageNet architecture.
            if args.full_width and kwargs["embedding_size"] == 0:
                counts[name] = built.trainable_params
            continue

        rng = np.random.default_rng(seed)
        inputs = {size: make_inputs(rng, BATCH, size) for size in sizes}
        # The fixture images themselves are in the calibration batch, so they are typical inputs for the weights.
        extra = make_inputs(rng, EXTRA_CALIBRATION, sizes[0])
        calibration = np.concatenate([inputs[sizes[0]], extra])
        with built.graph.as_default(), tf.compat.v1.Session(graph=built.graph) as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            rounds = randomise(tf, sess, built, rng, calibration)
            print(f"  BatchNorm statistics settled after {rounds} passes")
            check_alive(tf, sess, built, name, inputs[sizes[0]])
            arrays = {}
            for size, x in inputs.items():
                logits = sess.run(built.logits, {built.images: x})
                check_logits(name, size, logits)
                arrays[f"input_{size}"], arrays[f"logits_{size}"] = x, logits.astype(np.float32)
            folder = args.out / name
            save(tf, sess, built, folder)
        np.savez_compressed(folder / "expected.npz", **arrays)
        meta = {
            "name": name,
            "model_class": "nets.resnet_model.Model",
            "model_kwargs": kwargs,
            "call_kwargs": {"training": False, "use_resnet_d": cfg.use_resnet_d, "keep_prob": 1.0},
            "input_sizes": list(sizes),
            "batch": BATCH,
            "input_layout": f"NHWC float32, integer RGB 0-255 minus the official CHANNEL_MEANS {MEANS}",
            "checkpoint": "model.ckpt-0",
            "seed": seed,
            "trainable_params": built.trainable_params,
            **provenance(tf, commit, dirty),
            "command": regenerate_command(args, name),
        }
        (folder / "fixture.json").write_text(json.dumps(meta, indent=2) + "\n")
        size_kb = sum(p.stat().st_size for p in folder.iterdir()) / 1024
        print(f"  wrote {folder} ({size_kb:.0f} KiB)")

    if counts:
        path = args.out / "full_width_params.json"
        recorded = json.loads(path.read_text()) if path.exists() else {}
        recorded.update(counts)
        ordered = {name: recorded[name] for name in CONFIGS if name in recorded}
        path.write_text(json.dumps(ordered, indent=2) + "\n")
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
