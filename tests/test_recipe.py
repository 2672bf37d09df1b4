"""Recipes: validation messages, overrides, base files, and every shipped recipe."""

from pathlib import Path

import pytest

from transfer.errors import ConfigError
from transfer.recipe import Recipe, load_recipe, parse_set, schema_reference

ROOT = Path(__file__).resolve().parents[1]


def write(tmp_path, text, name="r.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return p


@pytest.mark.parametrize("text,expected", [
    ("optim:\n  lrr: 0.1\n", "r.yaml: optim.lrr: unknown key (did you mean: lr?)"),
    ("optim:\n  lr: fast\n", "r.yaml: optim.lr: expected a number, got 'fast'"),
    ("optim:\n  momentum: 1.5\n", "r.yaml: optim.momentum: 1.5 is out of range (must be at most 1)"),
    ("schedule:\n  epochs: 0\n", "r.yaml: schedule.epochs: 0 is out of range (must be at least 1)"),
    ("runtime:\n  precision: fp8\n", "r.yaml: runtime.precision: 'fp8' is not one of ['fp32', 'bf16', 'fp16']"),
    ("regularisation:\n  label_smoothing: 0.1\n", "r.yaml: regularisation: unknown key (did you mean: regularization"),
    ("augment:\n  crop_area: [0.1, big]\n", "r.yaml: augment.crop_area[1]: expected a number, got 'big'"),
    ("runtime:\n  workers: true\n", "r.yaml: runtime.workers: expected an integer, got True"),
    ("optim: 3\n", "r.yaml: optim: expected a mapping of keys, got 3"),
])
def test_validation_names_file_key_and_problem(tmp_path, text, expected):
    with pytest.raises(ConfigError) as err:
        load_recipe(write(tmp_path, text))
    assert str(err.value).startswith(f"{tmp_path / 'r.yaml'}: ") and expected[len("r.yaml"):] in str(err.value)


def test_yaml_syntax_error_gives_the_line(tmp_path):
    with pytest.raises(ConfigError, match=r"r\.yaml line 3: not valid YAML"):
        load_recipe(write(tmp_path, "optim:\n  lr: 0.1\nruntime: seed: 3\n"))


def test_defaults_live_in_the_schema():
    r = load_recipe(None)
    assert r == Recipe()
    assert r.optim.momentum == 0.9 and r.augment.crop_area == [0.05, 1.0]
    keys = {row["key"] for row in schema_reference()}
    assert {"optim.lr", "regularization.mixup.alpha", "data.embedded.seed", "runtime.compile"} <= keys
    assert all(row["help"] for row in schema_reference())


def test_set_overrides_are_typed_and_validated(tmp_path):
    r = load_recipe(write(tmp_path, "optim: {lr: 0.1}\n"),
                    parse_set(["optim.lr=0.05", "runtime.channels_last=true", "augment.crop_area=[0.2, 1]",
                               "model.options.width=0.5"]))
    assert r.optim.lr == 0.05 and r.runtime.channels_last is True and r.augment.crop_area == [0.2, 1.0]
    assert r.model.options == {"width": 0.5}
    with pytest.raises(ConfigError, match=r"expected key\.path=value"):
        parse_set(["optim.lr"])
    with pytest.raises(ConfigError, match=r"optim\.batch: unknown key \(did you mean: batch_size"):
        load_recipe(None, parse_set(["optim.batch=3"]))


def test_base_files_merge_deeply(tmp_path):
    write(tmp_path, "optim: {lr: 0.3, batch_size: 64}\nregularization: {mixup: {alpha: 0.2}}\n", "base.yaml")
    r = load_recipe(write(tmp_path, "base: base.yaml\noptim: {lr: 0.1}\n"))
    assert (r.optim.lr, r.optim.batch_size, r.regularization.mixup.alpha) == (0.1, 64, 0.2)
    write(tmp_path, "base: loop2.yaml\n", "loop1.yaml")
    write(tmp_path, "base: loop1.yaml\n", "loop2.yaml")
    with pytest.raises(ConfigError, match="loops back"):
        load_recipe(tmp_path / "loop1.yaml")


@pytest.mark.parametrize("path", sorted((ROOT / "recipes").rglob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_recipe_validates(path):
    from transfer.models.zoo import resolve_config

    r = load_recipe(path)
    resolve_config(r.model.name, **r.model.options)


def test_ablation_rows_accumulate_to_the_final_recipe():
    final = load_recipe(ROOT / "recipes" / "pretrain.yaml").to_dict()
    e11 = load_recipe(ROOT / "recipes" / "ablation" / "e11.yaml").to_dict()
    final.pop("description")
    e11.pop("description")
    assert final == e11
    e0 = load_recipe(ROOT / "recipes" / "ablation" / "e0.yaml")
    assert e0.model.name == "resnet50" and e0.schedule.epochs == 120 and e0.regularization.label_smoothing == 0
    names = [load_recipe(ROOT / "recipes" / "ablation" / f"e{i}.yaml").model.name for i in range(13)]
    assert names[9:] == ["resnet50d_sk_bl", "assemble_resnet50", "assemble_resnet50", "assemble_resnet152"]
