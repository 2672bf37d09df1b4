"""The docs cannot drift: the README's and docs' shell blocks run (with tiny settings), every command and
option has help text and a line on its page, and the recipe reference is the schema's."""

import functools
import importlib
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from transfer.cli import cli
from transfer.docs import DOCS, command_problems, documented_options, reference_problems, render_reference
from transfer.recipe import schema_reference

from .doc_blocks import MarkerError, parse_commands, sh_blocks

ROOT = Path(__file__).resolve().parents[1]
DOC_FILES = [p for p in [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))] if "```sh" in p.read_text()]

# Appended to each `transfer CMD` of a block: a 1-epoch run of a 1/8-width model on 32 px images, a single
# timed pass. Later flags override earlier ones, so the documented command itself stays as written. Groups of
# 64 or 128 (runtime.group_size: the paper's per-GPU BN) cannot divide that batch of 32, so they are off.
TRAINING = ["--epochs", "1", "--batch-size", "32", *[a for kv in (
    "runtime.workers=0", "runtime.group_size=null", "runtime.channels_last=false", "model.options.width=0.125",
    "model.options.sk_min_dim=4",
    "data.embedded.classes=4", "data.embedded.train_per_class=16", "data.embedded.val_per_class=4",
    "data.embedded.resolution=32", "augment.train_resolution=32",
    "augment.eval_resolution=32", "augment.eval_resize=32") for a in ("--set", kv)]]
# Keyed by the command, or by the command and a flag it must carry ("evaluate --robustness").
TINY = {
    "benchmark": ["--batch-size", "1", "--resolution", "32", "--warmup", "0", "--repeats", "1"],
    "pretrain": TRAINING,
    "finetune": TRAINING,
    "evaluate": ["--workers", "0"],
    "evaluate --robustness": ["--limit", "20", "--severities", "1"],
    "retrieve": ["--workers", "0"],
    "demo": ["--quick", "--workers", "0"],
}


def tiny_flags(args: list[str]) -> list[str]:
    command = next((a for a in args if not a.startswith("-")), None)
    return [flag for key, flags in TINY.items() if key.split()[0] == command and set(key.split()[1:]) <= set(args)
            for flag in flags]


def run_transfer(args: list[str]) -> str:
    """Runs in this process, as the tests of the CLI do: a fresh interpreter per command would cost seconds.

    On one thread: tiny models run up to 100x slower with two intra-op threads on a busy 2-core machine.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        res = CliRunner().invoke(cli, [*args, *tiny_flags(args)], prog_name="transfer")
    finally:
        torch.set_num_threads(threads)
    if res.exit_code != 0:
        raise AssertionError(f"transfer {' '.join(args)} exited {res.exit_code}:\n{res.output[-3000:]}") \
            from res.exception
    return res.stdout


# ----------------------------------------------------------------------------------------------- fixtures

@functools.cache
def _digits():
    from sklearn.datasets import load_digits

    return load_digits()  # real 8x8 scans, bundled with scikit-learn


def _digit(i: int) -> Image.Image:
    return Image.fromarray((_digits().images[i] * 15).astype(np.uint8)).resize((32, 32))


def make_images(dest: Path, _runs) -> None:
    """Eight of scikit-learn's digits (0 to 7) as PNG files: real images for `transfer predict`."""
    dest.mkdir(parents=True, exist_ok=True)
    for i in range(8):
        _digit(i).save(dest / f"digit{i}_{i}.png")


def make_image(dest: Path, _runs) -> None:
    """One scanned digit, a 7 (digit 7 is in the zero-shot retrieval gallery, 5-9), as a PNG file."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    _digit(7).save(dest)


def make_class_folder(dest: Path, _runs) -> None:
    """Your own images as `CLASS/IMAGE` folders, no split given: 5 scans of each digit, in folders 0 to 9."""
    targets = _digits().target
    for label in range(10):
        (dest / str(label)).mkdir(parents=True)
        for n, i in enumerate(np.flatnonzero(targets == label)[:5]):
            _digit(int(i)).convert("RGB").save(dest / str(label) / f"{n}.jpg")


def make_pets_archive(dest: Path, _runs) -> None:
    """A miniature Oxford-IIIT Pets archive in the official layout: 2 breeds, 16 images of each a split."""
    (dest / "annotations").mkdir(parents=True)
    (dest / "images").mkdir()
    for split, first in (("trainval", 1), ("test", 101)):
        lines = []
        for label, breed in enumerate(("Abyssinian", "beagle"), 1):
            for n in range(first, first + 16):
                Image.new("RGB", (40, 30), (90 * label, 90, 2 * n)).save(dest / "images" / f"{breed}_{n}.jpg")
                lines.append(f"{breed}_{n} {label} {label} 1")
        (dest / "annotations" / f"{split}.txt").write_text("\n".join(lines) + "\n")


def make_official_checkpoint(dest: Path, _runs) -> None:
    """A TensorFlow checkpoint of Assemble-ResNet-50 that the official code wrote (at 1/32 width; see
    tests/fixtures/official/README.md), laid out as the released ones: a folder with its `checkpoint` file."""
    shutil.copytree(ROOT / "tests" / "fixtures" / "official" / "assemble_resnet50", dest)


def make_timm_weights(dest: Path, _runs) -> None:
    """A timm resnet50d state_dict (random weights: no download), as `torch.save(model.state_dict())` writes it."""
    import timm
    import torch

    dest.parent.mkdir(parents=True, exist_ok=True)
    torch.save(timm.create_model("resnet50d", pretrained=False).state_dict(), dest)


class BuiltRuns:
    """A tiny pretraining run and a fine-tuning run from it, built once and copied where a page wants one."""

    def __init__(self, root: Path):
        self.root = root

    def get(self, name: str) -> Path:
        path = self.root / name
        if not path.exists():
            if name == "pretrain-run":
                run_transfer(["pretrain", str(ROOT / "recipes/demo/pretrain.yaml"), "--out", str(path)])
            elif name == "finetune-run":
                run_transfer(["finetune", str(ROOT / "recipes/demo/finetune.yaml"), "--backbone",
                              str(self.get("pretrain-run")), "--out", str(path)])
            else:
                run_transfer(["finetune", str(ROOT / "recipes/demo/retrieval.yaml"), "--backbone",
                              str(self.get("pretrain-run")), "--out", str(path)])
        return path


FIXTURES = {
    "image": make_image,
    "images": make_images,
    "class-folder": make_class_folder,
    "pets-archive": make_pets_archive,
    "official-checkpoint": make_official_checkpoint,
    "timm-weights": make_timm_weights,
    "pretrain-run": lambda dest, runs: shutil.copytree(runs.get("pretrain-run"), dest),
    "finetune-run": lambda dest, runs: shutil.copytree(runs.get("finetune-run"), dest),
    "retrieval-run": lambda dest, runs: shutil.copytree(runs.get("retrieval-run"), dest),
}


@pytest.fixture(scope="module")
def built_runs(tmp_path_factory):
    return BuiltRuns(tmp_path_factory.mktemp("built-runs"))


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("transfer-cache")  # the embedded dataset is generated once for all files


# ---------------------------------------------------------------------------------------- code blocks run

@pytest.mark.parametrize("path", DOC_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_code_blocks_run(path, tmp_path, monkeypatch, built_runs, shared_cache):
    work = tmp_path / "work"
    work.mkdir()
    (work / "recipes").symlink_to(ROOT / "recipes")  # the docs' commands run from a checkout
    monkeypatch.chdir(work)
    monkeypatch.setenv("TRANSFER_CACHE", str(shared_cache))
    monkeypatch.setenv("TRANSFER_RUNS", str(work / "runs"))
    for block in sh_blocks(path):
        if block.skip_reason:
            continue
        for spec in block.marker("fixture"):
            name, dest = spec.split()
            assert name in FIXTURES, f"{block.where()}: unknown fixture {name!r} (one of {', '.join(FIXTURES)})"
            if not (work / dest).exists():  # an earlier block of the file made it
                FIXTURES[name](work / dest, built_runs)
        for command in block.commands():
            if command.program == "transfer":
                output = run_transfer(command.args)
                if command.stdout:
                    (work / command.stdout).write_text(output)
            elif command.program.startswith("data_prep."):
                code = importlib.import_module(command.program).main(command.args)
                assert code == 0, f"{block.where()}: `{command.text}` exited {code}"
            elif not block.marker("only-transfer"):
                pytest.fail(f"{block.where()}: `{command.text}` is not a transfer command this test can run; "
                            f"mark the block `<!-- test: skip: REASON -->` or `<!-- test: only-transfer: REASON -->`")
        for spec in block.marker("expect"):
            missing = [p for p in spec.split() if not (work / p).exists()]
            assert not missing, f"{block.where()}: the block did not write {missing}"


# Pages whose example another test module runs (it says so in the block's skip marker).
RUN_ELSEWHERE = {"demo": "tests/test_demo.py"}


def test_every_command_page_has_an_example_that_runs():
    for page in sorted((DOCS / "commands").glob("*.md")):
        ran = [c for b in sh_blocks(page) if not b.skip_reason or RUN_ELSEWHERE.get(page.stem, "?") in b.skip_reason
               for c in b.commands() if c.program == "transfer" and page.stem in c.args]
        assert ran, f"{page.name}: no ```sh block that runs `transfer {page.stem}`"


def test_blocks_markers_and_launchers_are_read_as_documented(tmp_path):
    md = tmp_path / "x.md"
    md.write_text("text\n\n<!-- test: skip: needs ImageNet -->\n```sh\ntransfer pretrain\n```\n\n"
                  "<!-- test: fixture: images a/b -->\n<!-- test: expect: out.csv -->\n\n```sh\n"
                  "uv run --extra test transfer predict r a/b --out out.csv   # a comment\n"
                  "pip install uv && python -m data_prep.pets --raw x \\\n  --out y\n```\n\n```python\nx = 1\n```\n")
    skipped, used = sh_blocks(md)
    assert skipped.skip_reason == "needs ImageNet" and skipped.line == 4
    assert used.skip_reason is None
    assert used.marker("fixture") == ["images a/b"] and used.marker("expect") == ["out.csv"]
    assert [(c.program, c.args) for c in used.commands()] == [
        ("transfer", ["predict", "r", "a/b", "--out", "out.csv"]), ("pip", ["install", "uv"]),
        ("data_prep.pets", ["--raw", "x", "--out", "y"])]
    assert parse_commands("uv run --extra test pytest -q")[0].program == "pytest"
    assert parse_commands("transfer models --format json > m.json")[0].stdout == "m.json"
    for bad in ("<!-- test: skip -->\n```sh\nls\n```\n", "<!-- test: maybe: x -->\n```sh\nls\n```\n",
                "<!-- test: skip: why -->\nprose\n```sh\nls\n```\n"):
        md.write_text(bad)
        with pytest.raises(MarkerError):
            sh_blocks(md)


# ------------------------------------------------------------------------- help text and command pages

def test_every_command_and_option_has_help_and_a_consistent_page():
    problems = command_problems(cli)
    assert not problems, "\n".join(problems)


def test_each_help_screen_lists_its_options():
    ctx = cli.make_context("transfer", ["models"], resilient_parsing=True)
    for name in [None, *cli.list_commands(ctx)]:
        args = [name, "--help"] if name else ["--help"]
        res = CliRunner().invoke(cli, args, prog_name="transfer")
        assert res.exit_code == 0, res.output
        cmd = cli.get_command(ctx, name) if name else cli
        for p in cmd.params:
            for opt in getattr(p, "opts", []):
                if opt.startswith("--"):
                    assert opt in res.output, f"transfer {name or ''} --help does not show {opt}"


def test_the_page_check_catches_missing_invented_and_wrong_options(tmp_path):
    import click

    @click.group(help="A group.")
    def group():
        pass

    @group.command(help="Frobs.")
    @click.option("--speed", default=3, show_default=True, help="How fast.")
    @click.option("--colour")
    def frob(speed, colour):
        pass

    (tmp_path / "commands").mkdir()
    (tmp_path / "commands" / "frob.md").write_text(
        "# frob\n\n## Options\n\n| option | default | what |\n| --- | --- | --- |\n"
        "| `--speed N` | `4` | how fast |\n| `--bogus` | | gone |\n\n## Example\n\n`--unrelated` is fine here\n")
    (tmp_path / "commands" / "gone.md").write_text("# gone\n")
    problems = "\n".join(command_problems(group, tmp_path))
    assert "transfer: no page" in problems  # the group's own page, index.md
    assert "transfer frob --colour: no help text" in problems
    assert "option --colour is not in the Options table" in problems
    assert "documents --bogus, which transfer frob does not have" in problems
    assert "--speed defaults to 3, the page says '`4`'" in problems
    assert "documents `transfer gone`, which does not exist" in problems
    assert "--unrelated" not in problems and "--speed is not in" not in problems
    assert documented_options((tmp_path / "commands" / "frob.md").read_text()) == {"--speed": "`4`", "--bogus": ""}


def test_index_links_every_page_and_the_readme_links_the_index():
    index = (DOCS / "index.md").read_text()
    pages = [p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md") if p.name != "index.md"]
    assert {"commands/pretrain.md", "data_prep.md", "recipe-reference.md", "architecture.md"} <= set(pages)
    for page in pages:
        assert f"]({page})" in index, f"docs/index.md does not link {page}"
    assert "](docs/index.md)" in (ROOT / "README.md").read_text()


# --------------------------------------------------------------------------------------- recipe reference

def test_the_recipe_reference_is_current():
    problems = reference_problems()
    assert not problems, problems[0]


def test_the_reference_shows_every_key_with_its_default_and_allowed_values(tmp_path):
    text = render_reference()
    rows = {line.split(" | ")[0].strip("| `"): line for line in text.splitlines() if line.startswith("| `")}
    assert set(rows) == {r["key"] for r in schema_reference()}
    assert "`0.9`" in rows["optim.momentum"] and "0 to 1" in rows["optim.momentum"]
    assert "`none`, `official_imagenet`, `official_good`, `imagenet`, `cifar`" in rows["augment.autoaugment"]
    assert "`[0.05, 1.0]`" in rows["augment.crop_area"] and "`null`" in rows["optim.grad_clip"]
    assert r"`str \| None`" in rows["model.backbone"]  # escaped, or GitHub splits the cell
    (tmp_path / "recipe-reference.md").write_text(text.replace("`0.9`", "`0.8`", 1))
    assert "python -m transfer.docs --write" in reference_problems(tmp_path)[0]
