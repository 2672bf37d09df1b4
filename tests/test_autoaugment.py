"""The official AutoAugment (transfer/data/autoaugment.py) against the official TensorFlow code's own outputs.

tests/fixtures/official/autoaugment/ holds what clovaai/assembled-cnn's preprocessing/autoaugment.py returned for
every operation at several levels and both signs, on two small images (and, as SHA-256 digests, the geometric
operations at 224 px on an image of its own coordinates), with the policy lists the official file returns
(tools/official_autoaugment_fixtures.py made them; README there). No TensorFlow is needed here.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from transfer.data.autoaugment import (
    CUTOUT_CONST,
    FILL,
    MAX_LEVEL,
    OPERATIONS,
    POLICIES,
    TRANSLATE_CONST,
    OfficialAutoAugment,
    apply_operation,
)

FIXTURE = Path(__file__).parent / "fixtures" / "official" / "autoaugment"
DOC = json.loads((FIXTURE / "fixture.json").read_text())
ARRAYS = np.load(FIXTURE / "autoaugment.npz")
# Every operation reproduces the official output exactly: TensorFlow's are integer arithmetic, float32 blends
# and filters truncated to uint8, and nearest-neighbour sampling, each done here in the same float32 order.
TOLERANCE = 0


def _chw(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1).contiguous()


def _apply(case: dict, image: torch.Tensor) -> np.ndarray:
    out = apply_operation(image, case["op"], case["level"], negate=case["sign"] == "neg",
                          centre=tuple(case["centre"]) if "centre" in case else None)
    assert out.dtype == torch.uint8 and out.shape == image.shape
    return out.permute(1, 2, 0).contiguous().numpy()


def _key(case: dict) -> str:
    return f"{case['image']}__{case['op']}__{case['level']}__{case['sign']}"


SMALL = [c for c in DOC["cases"] if "sha256" not in c]
DIGESTS = [c for c in DOC["cases"] if "sha256" in c]


def test_constants_are_the_official_ones():
    assert DOC["max_level"] == MAX_LEVEL
    assert DOC["replace_value"] == [FILL] * 3
    assert DOC["hparams"]["translate_const"] == TRANSLATE_CONST
    assert DOC["hparams"]["cutout_const"] == CUTOUT_CONST
    assert sorted(DOC["operations"]) == sorted(OPERATIONS)


@pytest.mark.parametrize("op", sorted(OPERATIONS))
def test_operation_matches_the_official_output(op):
    cases = [c for c in SMALL if c["op"] == op]
    assert cases, f"the fixture has no case of {op}"
    worst = 0
    for case in cases:
        expected = ARRAYS[_key(case)]
        got = _apply(case, _chw(ARRAYS["input__" + case["image"]]))
        diff = np.abs(got.astype(int) - expected.astype(int))
        worst = max(worst, int(diff.max()))
        assert diff.max() <= TOLERANCE, (f"{_key(case)}: {int((diff > 0).sum())} values differ, by up to "
                                         f"{int(diff.max())}")
    # An operation whose every case leaves the images unchanged would test nothing.
    assert any(not np.array_equal(ARRAYS[_key(c)], ARRAYS["input__" + c["image"]]) for c in cases)


def test_geometric_operations_at_224_px_match_the_official_digests():
    size = DOC["coords"]["size"]
    y, x = np.mgrid[0:size, 0:size]
    image = _chw(np.stack([x, y, (x + y) % 256], axis=-1).astype(np.uint8))
    wrong = [_key(c) for c in DIGESTS if hashlib.sha256(_apply(c, image).tobytes()).hexdigest() != c["sha256"]]
    assert len(DIGESTS) == 5 * 11 * 2 and not wrong, wrong


def test_signs_and_levels_are_the_officials():
    """The official level-to-argument table, through the fixture: a signed operation at -L is its mirror at L
    (Translate reads x + 25 L), and the two signs differ."""
    photo = ARRAYS["input__photo"]
    pos, neg = ARRAYS["photo__TranslateX__1__pos"], ARRAYS["photo__TranslateX__1__neg"]
    assert np.array_equal(pos[:, :48 - 25], photo[:, 25:]) and (pos[:, 48 - 25:] == FILL).all()
    assert np.array_equal(neg[:, 25:], photo[:, :48 - 25]) and (neg[:, :25] == FILL).all()
    for op in ("Rotate", "ShearX", "ShearY"):
        assert not np.array_equal(ARRAYS[f"photo__{op}__7__pos"], ARRAYS[f"photo__{op}__7__neg"])


@pytest.mark.parametrize("name, official", [("official_imagenet", "imagenet"), ("official_good", "good")])
def test_policies_are_the_official_lists(name, official):
    expected = DOC["policies"][official]
    assert len(POLICIES[name]) == len(expected) == {"imagenet": 25, "good": 95}[official]
    assert [[list(op) for op in sub] for sub in POLICIES[name]] == expected
    assert all(op in OPERATIONS for sub in expected for op, _, _ in sub)


def _tiny() -> torch.Tensor:
    return ARRAYS["input__photo"][:8, :8].transpose(2, 0, 1).copy()


def test_seeded_application_is_reproducible():
    aa = OfficialAutoAugment("official_good")
    image = _chw(ARRAYS["input__photo"])
    runs = [[aa(image, torch.Generator().manual_seed(s)) for s in range(40)] for _ in range(2)]
    assert all(torch.equal(a, b) for a, b in zip(*runs, strict=True))
    assert len({r.numpy().tobytes() for r in runs[0]}) > 10  # the seed matters
    # The loader seeds torch's default generator per sample; the same seed gives the same image.
    outs = []
    for _ in range(2):
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(123)
            outs.append(aa(image))
    assert torch.equal(*outs)


def test_probability_and_sign_follow_the_official_draws():
    """Each operation applies with its probability, a signed one with either sign half the time
    (binomial bounds at 5 standard deviations, 1000 draws)."""
    image = torch.from_numpy(_tiny())
    aa = OfficialAutoAugment("official_imagenet")
    aa.subpolicies = [[("Invert", 0.3, 0), ("Rotate", 1.0, 10)]]
    inverted = apply_operation(image, "Invert", 0)
    outcomes = {(state, sign): apply_operation(start, "Rotate", 10, negate=sign == "neg").numpy().tobytes()
                for state, start in (("plain", image), ("inverted", inverted)) for sign in ("pos", "neg")}
    assert len(set(outcomes.values())) == 4
    which = {v: k for k, v in outcomes.items()}
    g = torch.Generator().manual_seed(0)
    seen = [which[aa(image, g).numpy().tobytes()] for _ in range(1000)]
    assert abs(sum(state == "inverted" for state, _ in seen) - 300) < 5 * (1000 * 0.3 * 0.7) ** 0.5
    assert abs(sum(sign == "pos" for _, sign in seen) - 500) < 5 * (1000 * 0.25) ** 0.5


def test_rounding_is_half_away_from_zero_as_std_round():
    """The warps' rounding against float64 floor(|v| + 0.5), exact for float32 v: ties, their neighbours, signs."""
    from transfer.data.autoaugment import _round_half_away

    ties = torch.arange(-20, 21, dtype=torch.float32) + 0.5
    v = torch.cat([ties, torch.nextafter(ties, ties + 1), torch.nextafter(ties, ties - 1),
                   torch.randn(1000, generator=torch.Generator().manual_seed(0)) * 300])
    expected = [int(math.copysign(math.floor(abs(x) + 0.5), x)) for x in v.double().tolist()]
    assert _round_half_away(v).tolist() == expected
