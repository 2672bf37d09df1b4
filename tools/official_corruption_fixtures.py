"""Reference outputs of the authors' corruption generator, for tests/test_robustness.py.

clovaai/assembled-cnn makes its mCE evaluation sets with datasets/CE_dataset/CE_validation_generator.py (Hendrycks'
ImageNet-C code with the paper's four extra corruptions). That script parses its command line and generates the
whole set when imported, so this reads it with ``ast`` and runs only its imports and function definitions, with the
crop size it would have parsed; nothing of it is copied here. Then it applies each corruption it can run, at
severities 1-5, to one small real photo (sklearn's sample ``china.jpg``, resized and centre-cropped by the official
``resize_and_center_crop``), and writes tests/fixtures/official/corruptions/:

- ``corruptions.npz``: ``input`` (the photo, uint8), ``NAME_SEVERITY`` (uint8, as the generator hands it to its JPEG
  writer: ``np.uint8(output)``), and ``crop_RESIZE_CROP`` (the official resize and centre crop of the whole photo);
- ``fixture.json``: the commit, library versions, the seeds, each corruption's parameter table read from its
  function (``c = [...][severity - 1]``), the resize / crop pairs of the official mCE scripts, what could not run
  and why, and the command that regenerates the folder.

The random corruptions are seeded so that an implementation drawing the same numbers in the same order can be
compared pixel for pixel: numpy's global RNG is seeded before each call (``np.random.seed(seed)``), and
scikit-image's ``random_noise`` (impulse noise), which makes its own Generator, gets ``seed`` too. Glass blur is
left out: its per-pixel loop of draws cannot be shared by a vectorised implementation. Motion blur and snow need
ImageMagick (wand); without its library they are reported as not run, and ``--only motion_blur,snow`` adds them
later to the fixtures already made (those two need neither scikit-image 0.19 nor Python 3.10; Debian's
``libmagickwand-6.q16-6`` gives the library).

    python tools/official_corruption_fixtures.py --official /path/to/assembled-cnn \\
        --out tests/fixtures/official/corruptions

It needs numpy<2, scipy, scikit-image 0.19 (the generator passes ``multichannel=True``, which 0.20 removed; 0.19.3's
wheels need Python <= 3.10), opencv-python-headless, Pillow, wand and scikit-learn (for the photo); TensorFlow is
not needed. The fixtures here were made in a Python 3.10 venv with the versions fixture.json records.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import functools
import hashlib
import importlib
import json
import platform
import re
import subprocess
import sys
import types
from pathlib import Path

import numpy as np

GENERATOR = "datasets/CE_dataset/CE_validation_generator.py"
# The generator's own order (its `d` dictionary): ImageNet-C's 15, then the paper's 4.
NAMES = ("gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur", "zoom_blur",
         "snow", "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate", "jpeg_compression",
         "speckle_noise", "gaussian_blur", "spatter", "saturate")
NOT_SHAREABLE = {"glass_blur": "one np.random.randint per pixel in a reverse raster loop; a vectorised "
                               "implementation cannot draw the same numbers in the same order"}
SIZE = 48  # the crop; small, so that the fixture stays a few hundred KB
RESIZE = 54  # int(48 / 0.875): the same ratio as the official 256 -> 224 and 292 -> 256
# The official 292 -> 256 pair at a size a fixture can hold (73 / 64 = 292 / 256), and the fixture's own pair.
CROPS = ((73, 64), (RESIZE, SIZE))
SEED = 2020


def load_generator(checkout: Path, crop_size: int, resize_size: int) -> tuple[dict, dict[str, str]]:
    """The generator's namespace (imports and functions only) and {statement: why it failed} for what would not run.

    `args` is what the script's argparse would give for --CROP_SIZE / --RESIZE_SIZE (its functions read it)."""
    path = checkout / GENERATOR
    tree = ast.parse(path.read_text(), filename=str(path))
    ns = {"__name__": "ce_validation_generator", "__file__": str(path),
          "args": types.SimpleNamespace(CROP_SIZE=crop_size, RESIZE_SIZE=resize_size,
                                        frost_dir=str(path.parent / "frost"), output_dir=None, num_workers=1)}
    failed = {}
    for node in tree.body:
        # Imports, definitions, and the ctypes signature of ImageMagick's motion blur; not the argparse set-up
        # nor the generation run at the bottom.
        keep = isinstance(node, ast.Import | ast.ImportFrom | ast.FunctionDef | ast.ClassDef) or (
            isinstance(node, ast.Assign) and "wandlibrary" in ast.unparse(node))
        if not keep:
            continue
        code = compile(ast.Module([node], type_ignores=[]), str(path), "exec")
        try:
            exec(code, ns)
        except Exception as e:  # e.g. wand without the ImageMagick library: recorded, not fatal
            failed[ast.unparse(node).splitlines()[0]] = f"{type(e).__name__}: {str(e).splitlines()[0]}"
    return ns, failed


def parameter_tables(checkout: Path) -> dict[str, list]:
    """Each distortion's `c = [...][severity - 1]` table, evaluated (the elastic one is written as 244 * k)."""
    tree = ast.parse((checkout / GENERATOR).read_text())
    tables = {}
    for fn in tree.body:
        if not (isinstance(fn, ast.FunctionDef) and fn.name in NAMES):
            continue
        for stmt in fn.body:
            if isinstance(stmt, ast.Assign) and ast.unparse(stmt.targets[0]) == "c" \
                    and isinstance(stmt.value, ast.Subscript):
                value = eval(compile(ast.Expression(stmt.value.value), "c", "eval"), {"__builtins__": {}, "np": np})
                tables[fn.name] = [np.asarray(v).tolist() for v in value]
                break
    return tables


def mce_preprocessing(checkout: Path) -> dict[str, dict]:
    """The resize / crop of the set each official mCE script evaluates (DATA_DIR=..._RESIZE_CROP) and its model."""
    out = {}
    for script in sorted((checkout / "scripts").glob("eval_*mCE*.sh")):
        text = script.read_text()
        data = re.search(r"DATA_DIR=\S*_(\d+)_(\d+)\b", text)
        flags = dict(re.findall(r"--(\w+)=(\S+)", text))
        out[script.name] = {"resize": int(data.group(1)), "crop": int(data.group(2)),
                            "image_size": int(flags["image_size"]), "resnet_size": int(flags["resnet_size"]),
                            "resnet_version": int(flags["resnet_version"])}
    return out


@contextlib.contextmanager
def seeded_random_noise(seed: int):
    """scikit-image's random_noise (impulse noise) with its Generator seeded, for the call's duration."""
    util = importlib.import_module("skimage.util")
    original = util.random_noise
    util.random_noise = functools.partial(original, seed=seed)
    try:
        yield
    finally:
        util.random_noise = original


def photo() -> np.ndarray:
    from sklearn.datasets import load_sample_images

    return load_sample_images().images[0]  # china.jpg, 427 x 640


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in ("numpy", "scipy", "skimage", "cv2", "PIL", "wand", "sklearn"):
        try:
            out[name] = importlib.import_module(name).__version__
        except Exception as e:
            out[name] = f"unavailable ({type(e).__name__})"
    return out


def checkout(path: str) -> Path:
    """--official: a clovaai/assembled-cnn checkout, told by the generator it holds (argparse reports the error)."""
    if not (Path(path) / GENERATOR).is_file():
        raise argparse.ArgumentTypeError(f"{Path(path) / GENERATOR} not found; is it a clovaai/assembled-cnn checkout?")
    return Path(path)


def main() -> None:
    cli = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cli.add_argument("--official", type=checkout, required=True, help="checkout of clovaai/assembled-cnn")
    cli.add_argument("--out", type=Path, default=Path("tests/fixtures/official/corruptions"), help="folder to write")
    cli.add_argument("--only", type=lambda v: v.split(","), default=None, metavar="NAMES",
                     help="run only these corruptions (comma-separated) and add them to the fixtures already in --out, "
                          "keeping the rest (e.g. motion_blur,snow where ImageMagick was missing the first time)")
    args = cli.parse_args()
    unknown = sorted(set(args.only or []) - set(NAMES))
    if unknown:
        cli.error(f"--only: unknown corruptions {unknown}; choose from {list(NAMES)}")
    if args.only and not (args.out / "fixture.json").is_file():
        cli.error(f"--only adds to fixtures in --out, and {args.out} has none; make them first without --only")
    ns, failed = load_generator(args.official, SIZE, RESIZE)
    from PIL import Image

    source = photo()
    arrays = {}
    for resize, crop in CROPS:
        arrays[f"crop_{resize}_{crop}"] = np.asarray(ns["resize_and_center_crop"](Image.fromarray(source), resize,
                                                                                    crop))
    image = arrays[f"crop_{RESIZE}_{SIZE}"]
    arrays["input"] = image
    ran, not_run = [], {}
    for k, name in enumerate(NAMES):
        if args.only and name not in args.only:
            continue
        if name in NOT_SHAREABLE:
            not_run[name] = NOT_SHAREABLE[name]
            continue
        if name not in ns:
            not_run[name] = "not defined"
            continue
        try:
            for severity in range(1, 6):
                seed = SEED + 10 * k + severity
                np.random.seed(seed)
                with seeded_random_noise(seed):
                    out = ns[name](Image.fromarray(image), severity)
                arrays[f"{name}_{severity}"] = np.uint8(np.asarray(out))  # what the generator saves, as it saves it
        except Exception as e:  # e.g. ImageMagick absent: recorded
            not_run[name] = f"{type(e).__name__}: {str(e).splitlines()[0]}"
            if isinstance(e, NameError) and failed:  # a name whose defining statement failed: say why that did
                statement, why = next(iter(failed.items()))
                not_run[name] += f", because `{statement}` failed ({why})"
            continue
        ran.append(name)
    commit = subprocess.run(["git", "-C", str(args.official), "rev-parse", "HEAD"], capture_output=True,
                            text=True).stdout.strip() or None
    args.out.mkdir(parents=True, exist_ok=True)
    if args.only:
        add(cli, args, arrays, ran, not_run, commit)
        return
    np.savez_compressed(args.out / "corruptions.npz", **arrays)
    doc = {
        "source": f"clovaai/assembled-cnn {GENERATOR}",
        "commit": commit,
        "regenerate": f"python tools/official_corruption_fixtures.py --official CHECKOUT --out {args.out}",
        "versions": versions(),
        "photo": {"name": "sklearn.datasets.load_sample_images().images[0] (china.jpg)", "shape": list(source.shape),
                  "sha256": hashlib.sha256(source.tobytes()).hexdigest()},
        "crop_size": SIZE, "resize_size": RESIZE,
        "crops": [{"resize": r, "crop": c, "key": f"crop_{r}_{c}"} for r, c in CROPS],
        "seeding": "before severity s of the k-th corruption in `names` (0-based): np.random.seed(seed) and "
                   "skimage.util.random_noise(..., seed=seed), seed = base_seed + 10 * k + s",
        "base_seed": SEED,
        "names": list(NAMES),
        "ran": ran,
        "not_run": not_run,
        "generator_statements_failed": failed,
        "parameters": parameter_tables(args.official),
        "mce_scripts": mce_preprocessing(args.official),
    }
    (args.out / "fixture.json").write_text(json.dumps(doc, indent=2) + "\n")
    size = (args.out / "corruptions.npz").stat().st_size
    print(f"wrote {args.out}: {len(ran)} corruptions x 5 severities ({size / 1024:.0f} KB); not run: "
          + (", ".join(f"{k} ({v})" for k, v in not_run.items()) or "none"), file=sys.stderr)


def add(cli: argparse.ArgumentParser, args, arrays: dict, ran: list[str], not_run: dict,
        commit: str | None) -> None:
    """--only: these corruptions' outputs into the existing fixtures; fixture.json says what was added, when
    and with which library versions (the inputs must be the same photo and crop)."""
    old = dict(np.load(args.out / "corruptions.npz"))
    if not np.array_equal(old["input"], arrays["input"]):
        cli.error(f"the photo's crop differs from the one in {args.out}; regenerate everything without --only")
    doc = json.loads((args.out / "fixture.json").read_text())
    if doc.get("commit") != commit:
        cli.error(f"{args.out} was made from commit {doc.get('commit')}, this checkout is {commit}; check out that "
                  "commit or regenerate everything without --only")
    np.savez_compressed(args.out / "corruptions.npz", **{**old, **{k: v for k, v in arrays.items()
                                                                   if not k.startswith(("input", "crop_"))}})
    doc["ran"] = [n for n in NAMES if n in set(doc["ran"]) | set(ran)]
    doc["not_run"] = {**{k: v for k, v in doc["not_run"].items() if k not in ran}, **not_run}
    doc.setdefault("added", []).append({"names": ran, "versions": versions(),
                                        "regenerate": f"python tools/official_corruption_fixtures.py --official "
                                                      f"CHECKOUT --out {args.out} --only {','.join(args.only)}"})
    (args.out / "fixture.json").write_text(json.dumps(doc, indent=2) + "\n")
    print(f"added to {args.out}: {', '.join(ran) or 'nothing'}; not run: "
          + (", ".join(f"{k} ({v})" for k, v in not_run.items()) or "none"), file=sys.stderr)


if __name__ == "__main__":
    main()
