"""Robustness: the corruptions, the mCE / mFR arithmetic, the AlexNet constants, and `evaluate --robustness`."""

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from sklearn.datasets import load_sample_images

from transfer.cli import cli
from transfer.errors import ConfigError
from transfer.eval import corruptions as C
from transfer.eval.perturbations import FRAMES, PERTURBATIONS, sequence
from transfer.eval.robustness import (
    ALEXNET_ERRORS,
    flip_probability,
    is_imagenet,
    mean_corruption_error,
    mean_flip_rate,
    pooled_error,
    select_corruptions,
    select_severities,
)

from .training_helpers import tiny_recipe

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
    # the cache gives the same errors; --imagenet forces the AlexNet normalisation
    res = CliRunner().invoke(cli, [*args[:-2], "--cache", str(cache), "--imagenet", "--format", "json"])
    again = json.loads(res.output.strip().splitlines()[-1])
    assert again["corruptions"] == out["corruptions"]
    assert again["mce"] == pytest.approx(np.mean([e / ALEXNET_ERRORS[n] for n, e in out["corruptions"].items()]))
    # the table says which corruption set it used
    res = CliRunner().invoke(cli, ["evaluate", str(run), "--robustness", "--corruptions", "contrast", "--severities",
                                   "2", "--limit", "4", "--workers", "0"])
    assert res.exit_code == 0 and "corruptions: custom (1)" in res.output
    for bad, words in ((["--robustness", "--corruptions", "7"], "--corruptions 7"),
                       (["--corruptions", "19"], "add --robustness")):
        res = CliRunner().invoke(cli, ["evaluate", str(run), *bad])
        assert res.exit_code == 2 and len(res.output.strip().splitlines()) == 1 and words in res.output
