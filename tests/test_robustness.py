"""Robustness: the corruptions, the mCE / mFR arithmetic, the AlexNet constants, and `evaluate --robustness`."""

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from sklearn.datasets import load_sample_images

from transfer.cli import cli
from transfer.data.corrupted import CorruptedImages, corrupted_set_resize, official_resize, resize_and_centre_crop
from transfer.data.sources import ArrayRecords
from transfer.errors import ConfigError
from transfer.eval import corruptions as C
from transfer.eval.perturbations import FRAMES, PERTURBATIONS, sequence
from transfer.eval.robustness import (
    ALEXNET_ERRORS,
    DEFAULT_CORRUPTIONS,
    PAPER_CORRUPTIONS,
    corruption_set,
    flip_probability,
    is_imagenet,
    mean_corruption_error,
    mean_flip_rate,
    pooled_error,
    select_corruptions,
    select_severities,
)
from transfer.models.zoo import get_spec

from .training_helpers import tiny_recipe

OFFICIAL = Path(__file__).parent / "fixtures" / "official" / "corruptions"

SIZE = 64
# Corruptions whose output depends on the random draw (the others must not).
RANDOM = {"gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise", "glass_blur", "motion_blur", "snow",
          "frost", "fog", "elastic_transform", "spatter"}


@pytest.fixture(scope="module")
def photos():
    """Three real 64 px crops (the two sklearn sample photos), uint8."""
    a, b = load_sample_images().images
    return [np.ascontiguousarray(im[y:y + 4 * SIZE:4, x:x + 4 * SIZE:4]) for im, y, x in
            ((a, 100, 200), (b, 50, 300), (a, 150, 380))]


def corrupted(img, name, severity, seed=0, index=0):
    return C.corrupt(img, name, severity, C.corruption_rng(seed, index, name, severity))


def distance(a, b):
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).mean())


def test_the_registry_is_imagenet_c_plus_the_papers_four():
    assert len(C.IMAGENET_C) == 15 and len(C.EXTRA) == 4
    assert set(C.EXTRA) == {"speckle_noise", "gaussian_blur", "spatter", "saturate"}
    assert select_corruptions("15") == C.IMAGENET_C and select_corruptions("19") == C.IMAGENET_C + C.EXTRA
    assert select_corruptions("fog, snow,fog") == ("fog", "snow")
    assert select_severities("5,1") == (1, 5)
    for bad in ("7", "fogg", ""):
        with pytest.raises(ConfigError):
            select_corruptions(bad)
    with pytest.raises(ConfigError):
        select_severities("0,6")


@pytest.mark.parametrize("name", list(C.CORRUPTIONS))
def test_corruption_keeps_shape_dtype_and_is_seeded(photos, name):
    img = photos[0]
    for severity in (1, 5):
        out = corrupted(img, name, severity)
        assert out.shape == img.shape and out.dtype == np.uint8
        assert distance(out, img) > 0, "a corruption must change the image"
        assert np.array_equal(out, corrupted(img, name, severity)), "same seed, same image"
    other_seed = corrupted(img, name, 5, seed=1)
    if name in RANDOM:
        assert not np.array_equal(corrupted(img, name, 5), other_seed)
    else:
        assert np.array_equal(corrupted(img, name, 5), other_seed)
    # non-square images and the Big-Little evaluation size work too
    assert C.corrupt(img[:, :48], name, 3, np.random.default_rng(0)).shape == (SIZE, 48, 3)


# The mean distance from the clean image (3 photos x 2 seeds, 8 for fog and frost) grows with severity (a step
# may dip by 3%: snow's severity 3 has fewer, larger flakes than 2) and severity 5 is further than 1,
# except where the published parameters say otherwise:
# - elastic_transform: severities 1-2 are large smooth warps, 3-5 small local ones (ImageNet-C's table);
# - saturate: severities 1-2 desaturate (x0.3, x0.1), 3-5 oversaturate (x2, x5, x20): compared within each run;
# - frost: the texture weight rises while its random crop and texture change; checked from 1 to 5 only.
@pytest.mark.parametrize("name", list(C.CORRUPTIONS))
def test_severity_moves_the_image_further(photos, name):
    seeds = range(8) if name in ("fog", "frost") else range(2)  # a random fractal / texture each: more draws
    d = np.array([[np.mean([distance(corrupted(im, name, s, seed, i), im) for seed in seeds])
                   for s in C.SEVERITIES] for i, im in enumerate(photos)]).mean(0)
    if name == "elastic_transform":
        assert d[1] > d[2] and d[2] <= d[3] <= d[4]
    elif name == "saturate":
        assert d[0] < d[1] and d[2] < d[3] < d[4]
    elif name == "frost":
        assert d[0] < d[4]
    else:
        assert all(d[i + 1] >= 0.97 * d[i] for i in range(4)), d
        assert d[4] > d[0], d


def test_deterministic_corruptions_match_the_reference_package(photos):
    """Where no random draw is involved, our code gives the reference implementation's pixels."""
    ref = pytest.importorskip("imagecorruptions")
    img = photos[1]
    for name in ("contrast", "brightness", "saturate", "pixelate", "jpeg_compression", "defocus_blur",
                 "gaussian_blur"):
        for s in (1, 3, 5):
            assert distance(ref.corrupt(img, corruption_name=name, severity=s), corrupted(img, name, s)) < 0.5


@pytest.fixture(scope="module")
def official():
    """The authors' generator's outputs (tools/official_corruption_fixtures.py; see its fixture.json)."""
    with np.load(OFFICIAL / "corruptions.npz") as z:
        arrays = dict(z)
    return json.loads((OFFICIAL / "fixture.json").read_text()), arrays


class SharedDraws(np.random.RandomState):
    """numpy's legacy generator, which the official generator draws from (np.random.seed, then np.random.*), with
    the one Generator method name it lacks: seeded alike, our corruptions draw the same numbers in the same order."""

    def integers(self, low, high=None, size=None):
        return self.randint(low, high, size)


def official_draws(meta: dict, name: str, severity: int):
    """Our generator for (name, severity), seeded as the fixture tool seeded the official call."""
    seed = meta["base_seed"] + 10 * meta["names"].index(name) + severity
    # impulse noise draws through scikit-image's random_noise, which makes np.random.default_rng(seed)
    return np.random.default_rng(seed) if name == "impulse_noise" else SharedDraws(seed)


OFFICIAL_RAN = json.loads((OFFICIAL / "fixture.json").read_text())["ran"]


@pytest.mark.parametrize("name", OFFICIAL_RAN)
def test_corruption_matches_the_official_generator(official, name):
    """Each corruption at severities 1-5, on the official crop of a real photo, against the authors' generator's
    own output with the same draws: at most 1 grey level apart (float32 against float64, then truncation)."""
    meta, arrays = official
    image = arrays["input"]
    diffs = []
    for severity in C.SEVERITIES:
        ours = C.corrupt(image, name, severity, official_draws(meta, name, severity))
        diff = np.abs(ours.astype(np.int16) - arrays[f"{name}_{severity}"].astype(np.int16))
        diffs.append((int(diff.max()), float((diff > 0).mean())))
    assert all(d <= 1 for d, _ in diffs), f"{name}: (max difference, share of values off) by severity {diffs}"
    # Off by one only where the exact value is a whole grey level, which truncation sends either way (defocus
    # blur's severity 1 averages 29 pixels: 1 in 29 sums lands there, 2.2% of values differ).
    assert all(share < 0.05 for _, share in diffs), diffs


def test_the_fixture_covers_every_corruption_it_can(official):
    meta, _ = official
    # glass blur's per-pixel loop of draws cannot be shared (fixture.json says why); motion blur and snow, which
    # need ImageMagick, were added with it (fixture.json's "added")
    assert set(meta["ran"]) | set(meta["not_run"]) == set(C.CORRUPTIONS) == set(meta["names"])
    assert set(meta["not_run"]) == {"glass_blur"}
    assert {"motion_blur", "snow"} <= {n for a in meta.get("added", []) for n in a["names"]}
    assert meta["commit"] and meta["regenerate"].startswith("python tools/official_corruption_fixtures.py")


# Our parameter table of each corruption, as the official functions name their `c` table.
TABLES = {"gaussian_noise": C.GAUSSIAN_NOISE, "shot_noise": C.SHOT_NOISE, "impulse_noise": C.IMPULSE_NOISE,
          "speckle_noise": C.SPECKLE_NOISE, "gaussian_blur": C.GAUSSIAN_BLUR, "glass_blur": C.GLASS_BLUR,
          "defocus_blur": C.DEFOCUS_BLUR, "motion_blur": C.MOTION_BLUR, "zoom_blur": C.ZOOM_BLUR, "snow": C.SNOW,
          "frost": C.FROST, "fog": C.FOG, "brightness": C.BRIGHTNESS, "contrast": C.CONTRAST,
          "elastic_transform": C.ELASTIC, "pixelate": C.PIXELATE, "jpeg_compression": C.JPEG_QUALITY,
          "spatter": C.SPATTER, "saturate": C.SATURATE}


@pytest.mark.parametrize("name", list(TABLES))
def test_parameters_are_the_official_generators(official, name):
    """Every severity's parameters against the table read from the official function (saturate's severity 5 is
    (20, 0.2); elastic's are 244 * k pixels at every crop size), the motion blur and snow ones included."""
    meta, _ = official
    theirs = meta["parameters"][name]
    assert len(TABLES[name]) == len(theirs) == 5
    for ours, ref in zip(TABLES[name], theirs, strict=True):
        assert np.allclose(np.asarray(ours, dtype=np.float64), np.asarray(ref, dtype=np.float64), rtol=1e-12), name


class ConstantDraws:
    """No affine jitter and a constant displacement draw: elastic_transform becomes a shift by 0.01 * alpha px."""

    def uniform(self, low, high, size):
        return np.zeros(size) if size == (3, 2) else np.full(size, 0.01)


def test_elastic_constants_do_not_scale_with_the_crop(official):
    """The official generator's elastic constants are pixels whatever --CROP_SIZE (the fixture, at 48 px, pins their
    values); here the same draws shift a line by the same pixels at 48 and at 128 px."""
    meta, _ = official
    alpha = meta["parameters"]["elastic_transform"][0][0]  # severity 1
    for size in (48, 128):
        line = np.zeros((size, size, 3), np.uint8)
        line[:, size // 2] = 255
        out = C.corrupt(line, "elastic_transform", 1, ConstantDraws())
        moved = int(np.argmax(out[size // 2, :, 0])) - size // 2
        assert moved == -round(0.01 * alpha), (size, moved)  # output(x) samples input(x + 4.88)


def test_the_official_resize_and_crop(official):
    """Our preparation of the corrupted sets against the official resize_and_center_crop of the same photo (the
    292 -> 256 ratio at 73 -> 64, and the fixture's 54 -> 48): identical pixels. The resize rule gives the pairs the
    official mCE scripts evaluate: 292 -> 256 for both Assemble-ResNets, 256 -> 224 for ResNet-50."""
    meta, arrays = official
    photo = load_sample_images().images[0]
    import hashlib

    assert hashlib.sha256(photo.tobytes()).hexdigest() == meta["photo"]["sha256"]
    from PIL import Image

    for crop in meta["crops"]:
        ours = resize_and_centre_crop(Image.fromarray(photo), crop["resize"], crop["crop"])
        assert np.array_equal(ours, arrays[crop["key"]]), crop
    scripts = meta["mce_scripts"]
    assert {(s["resnet_size"], s["resnet_version"]) for s in scripts.values() if s["resize"] == 292} == {(50, 2),
                                                                                                         (152, 2)}
    for s in scripts.values():
        assert official_resize(s["crop"]) == s["resize"] and s["crop"] == s["image_size"]
    # the paper's models on ImageNet: R50 (224), Assemble-ResNet-50 (256 from 292) and -152 (its top-1 crop is
    # 257 -> 256; its corrupted set is 292 -> 256 as the official script's); on other data the model's own resize
    records = ArrayRecords(np.zeros(1, dtype=np.int64), ["0"], ["a"], images=photo[None])
    for model, script in (("resnet50", "eval_vanila_mCE_on_imagenet.sh"),
                          ("assemble_resnet50", "eval_assemble_mCE_on_imagenet.sh"),
                          ("assemble_resnet152", "eval_assemble152_mCE_on_imagenet.sh")):
        prep, expected = get_spec(model).input, scripts[script]
        ds = CorruptedImages(records, np.arange(1), prep, [(None, 0), ("fog", 1)],
                             resize=corrupted_set_resize(prep, imagenet=True))
        assert (ds.preprocessing()["resize"], ds.preprocessing()["crop"]) == (expected["resize"], expected["crop"])
        assert ds.preprocessing()["official_sets"]
        clean = resize_and_centre_crop(Image.fromarray(photo), expected["resize"], expected["crop"])
        assert np.array_equal(ds.make((None, 0), 0), clean), model
        assert corrupted_set_resize(prep, imagenet=False) == prep.eval_resize
    assert get_spec("assemble_resnet152").input.eval_resize == 257


def test_the_default_set_is_the_official_19():
    assert DEFAULT_CORRUPTIONS == "19" and select_corruptions(DEFAULT_CORRUPTIONS) == PAPER_CORRUPTIONS
    official = json.loads((Path(__file__).parent / "fixtures" / "official" / "robustness_constants.json").read_text())
    assert tuple(official["ALEXNET_CE"]) == PAPER_CORRUPTIONS, "the official mCE averages every key of ALEXNET_CE"
    assert corruption_set(select_corruptions("19")) == "paper-19"
    assert corruption_set(select_corruptions("15")) == "imagenet-c-15"
    assert corruption_set(select_corruptions(",".join(C.IMAGENET_C))) == "imagenet-c-15"
    assert corruption_set(("fog",)) == "custom"


def test_vectorised_glass_blur_swaps_like_the_loop(monkeypatch):
    """The lattice swaps permute the pixels (nothing is lost or duplicated) and move most of them."""
    h = w = 40
    ident = np.zeros((h, w, 3), np.float32)
    ident[..., 0] = np.arange(h)[:, None] / 255  # encode each pixel's position in the image itself
    ident[..., 1] = np.arange(w)[None, :] / 255
    _, shift, iterations = C.GLASS_BLUR[4]
    monkeypatch.setattr(C, "GLASS_BLUR", ((1e-6, shift, iterations),) * 5)  # no blur: only the swaps
    out = C.to_uint8(C.glass_blur(ident, 5, np.random.default_rng(0)))
    rows, cols = out[..., 0].astype(int), out[..., 1].astype(int)
    positions = sorted(zip(rows.ravel(), cols.ravel(), strict=True))
    assert positions == sorted((r, c) for r in range(h) for c in range(w)), "a permutation"
    moved = np.maximum(np.abs(rows - np.arange(h)[:, None]), np.abs(cols - np.arange(w)[None, :]))
    # as in the reference's loop, a pixel can be carried on by a later swap, but most move a little
    assert (moved > 0).mean() > 0.5 and moved.mean() <= shift * iterations


def test_mce_arithmetic_by_hand():
    # pooled over severities: (3 + 5) wrong of (10 + 10)
    assert pooled_error({1: 3, 5: 5}, {1: 10, 5: 10}) == pytest.approx(0.4)
    errors = {"gaussian_noise": 0.5, "fog": 0.4}
    # (0.5 / 0.8864 + 0.4 / 0.8193) / 2
    assert mean_corruption_error(errors, ALEXNET_ERRORS) == pytest.approx((0.5640794224 + 0.4882216526) / 2)
    assert mean_corruption_error(errors) == pytest.approx(0.45)


def test_flip_probability_by_hand():
    preds = np.array([[1, 1, 2, 2],
                      [0, 3, 0, 0]])
    # consecutive: row 0 flips once (1->2), row 1 twice (0->3->0): 3 of 6 transitions
    assert flip_probability(preds, noise=False) == pytest.approx(3 / 6)
    # against the first frame: row 0 frames 2,3 differ from 1; row 1 frame 1 differs from 0: 3 of 6
    preds2 = np.array([[1, 1, 2, 1],
                       [0, 3, 0, 0]])
    assert flip_probability(preds2, noise=True) == pytest.approx(2 / 6)
    assert flip_probability(preds2, noise=False) == pytest.approx(4 / 6)
    assert mean_flip_rate({"a": 0.1, "b": 0.3}) == pytest.approx(0.2)
    assert mean_flip_rate({"a": 0.1, "b": 0.3}, {"a": 0.2, "b": 0.6}) == pytest.approx(0.5)


def test_alexnet_constants_are_the_official_scripts():
    """The mCE denominators against the values the authors' mce/eval_robustness.py divides by, read from that
    script by tools/official_constants.py (regenerate: see the fixture's "regenerate")."""
    official = json.loads((Path(__file__).parent / "fixtures" / "official" / "robustness_constants.json").read_text())
    assert len(official["ALEXNET_CE"]) == 19
    assert official["ALEXNET_CE"] == ALEXNET_ERRORS
    assert list(ALEXNET_ERRORS) == list(official["ALEXNET_CE"])  # the official order, the report's too
    assert is_imagenet(1000) and not is_imagenet(10)


@pytest.mark.parametrize("name", PERTURBATIONS)
def test_perturbation_sequences_start_clean_and_are_seeded(photos, name):
    seq = sequence(name, photos[2], 48, np.random.default_rng(3))
    assert seq.shape == (FRAMES, 48, 48, 3) and seq.dtype == np.uint8
    assert np.array_equal(seq[0], photos[2][8:56, 8:56]), "frame 1 is the clean centre crop"
    assert np.array_equal(seq, sequence(name, photos[2], 48, np.random.default_rng(3)))
    steps = [distance(seq[t], seq[0]) for t in range(FRAMES)]
    assert steps[-1] > 0
    if name not in ("gaussian_noise", "shot_noise"):  # gradual ones drift away from the clean frame
        assert steps[-1] >= steps[1]


def test_evaluate_robustness_json_chart_and_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("TRANSFER_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TRANSFER_RUNS", str(tmp_path / "runs"))
    run = tmp_path / "run"
    res = CliRunner().invoke(cli, ["pretrain", str(tiny_recipe(tmp_path, schedule={"epochs": 1})), "--out", str(run)])
    assert res.exit_code == 0, res.output
    cache = tmp_path / "jpegs"
    args = ["evaluate", str(run), "--robustness", "--corruptions", "glass_blur,zoom_blur,frost", "--severities",
            "1,5", "--limit", "8", "--perturbations", "--workers", "0", "--batch-size", "8", "--cache", str(cache)]
    res = CliRunner().invoke(cli, [*args, "--format", "json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output.strip().splitlines()[-1])
    assert {"top1", "mce", "mce_unnormalized", "images_per_second", "corruptions", "mfr_unnormalized",
            "flip_probabilities"} <= set(out)
    assert set(out["corruptions"]) == {"glass_blur", "zoom_blur", "frost"}
    assert out["mce"] is None, "4 classes: not ImageNet, no AlexNet normalisation"
    assert out["mce_unnormalized"] == pytest.approx(np.mean(list(out["corruptions"].values())))
    assert set(out["flip_probabilities"]) == set(PERTURBATIONS)
    assert 0 <= out["top1"] <= 1 and out["images_per_second"] > 0
    png = run / "robustness" / "corruption_errors.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = json.loads((run / "robustness" / "robustness.json").read_text())
    assert saved["images"] == 8 and saved["severities"] == [1, 5]
    assert len(list(cache.rglob("*.jpg"))) == 3 * 2 * 8, "one JPEG per corruption, severity and image"
    # the cache gives the same errors (the perturbations aside, the same evaluation)
    res = CliRunner().invoke(cli, [a for a in args if a != "--perturbations"] + ["--format", "json"])
    again = json.loads(res.output.strip().splitlines()[-1])
    assert again["corruptions"] == out["corruptions"]
    assert len(list(cache.rglob("*.jpg"))) == 3 * 2 * 8, "read back, not made again"
    # not ImageNet: the images are prepared at the model's own evaluation sizes (32 -> 32 here)
    assert out["corruption_set"] == "custom"
    assert (out["preprocessing"]["resize"], out["preprocessing"]["crop"]) == (32, 32)
    # by default the official mCE's 19; the table and robustness.json say which set it used; --imagenet forces
    # the AlexNet normalisation and the official sets' resize (crop / 0.875: 36 -> 32 here)
    res = CliRunner().invoke(cli, ["evaluate", str(run), "--robustness", "--severities", "2", "--limit", "2",
                                   "--workers", "0", "--imagenet", "--out", str(tmp_path / "default")])
    assert res.exit_code == 0 and "corruptions: paper-19 (19)" in res.output, res.output
    assert "paper-19 (19 corruptions)" in res.output, "the summary names the set"
    saved = json.loads((tmp_path / "default" / "robustness.json").read_text())
    assert saved["corruption_set"] == "paper-19" and tuple(saved["corruptions"]) == PAPER_CORRUPTIONS
    assert saved["mce"] == pytest.approx(np.mean([e / ALEXNET_ERRORS[n] for n, e in saved["corruptions"].items()]))
    assert saved["preprocessing"]["resize"] == official_resize(32) and saved["preprocessing"]["official_sets"]
    for bad, words in ((["--robustness", "--corruptions", "7"], "--corruptions 7"),
                       (["--corruptions", "19"], "add --robustness")):
        res = CliRunner().invoke(cli, ["evaluate", str(run), *bad])
        assert res.exit_code == 2 and len(res.output.strip().splitlines()) == 1 and words in res.output
