"""The initialisation of every layer against the authors' TensorFlow graph's own initialisers.

tests/fixtures/official/init/ holds, per variable of the official graph at full width (clovaai/assembled-cnn,
master; made by tools/official_init_stats.py under TensorFlow 2.15, whose compat.v1 initialisers are TF 1.14's):
the initialiser the graph draws with (its op and constants) and the statistics of TensorFlow's draw. Each of our
tensors is matched to its official variable by the converter's name map, and must have the same shape and the
same distribution: a constant equal to the official one; inside the truncated normal's +-2 stddev with the
truncated std (computed here from the unit normal, not taken from the code under test) within sampling error,
and within sampling error of TensorFlow's own draw; inside a uniform's bounds, reaching them, with their std.
"""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from transfer.convert.official import official_names
from transfer.models import create_model

FIXTURES = Path(__file__).parent / "fixtures" / "official" / "init"
# fixture -> the zoo model it is (full width) and the head options
CASES = {
    "resnet50d_se": ("resnet50d_se", {"num_classes": 1001}),
    "assemble_resnet50": ("assemble_resnet50", {"num_classes": 1001}),
    # the head alone is recorded: a shallower backbone of the same width makes it in a third of the time
    "assemble_resnet50_retrieval": ("assemble_resnet50", {"num_classes": 100, "embedding_dim": 1536, "pool": "gem",
                                                          "layers": (2, 2, 2, 1)}),
}
# A sample std is within a few standard errors of the distribution's; 6 of them: no false alarm over ~1,500
# tensors, and still a tenth of the gap to He's sqrt(2 / fan_in) on the smallest tensor (2,048 elements).
SIGMAS = 6.0


def truncated_std(bound: float) -> float:
    """The std of a unit normal truncated at +-bound: sqrt(1 - 2 b phi(b) / (2 Phi(b) - 1))."""
    phi = math.exp(-bound * bound / 2) / math.sqrt(2 * math.pi)
    mass = math.erf(bound / math.sqrt(2))
    return math.sqrt(1 - 2 * bound * phi / mass)


def std_error(std: float, n: int, kurtosis: float) -> float:
    """The standard error of a sample std of n draws: sqrt((kurtosis - 1) / (4 n)) * std."""
    return std * math.sqrt((kurtosis - 1) / (4 * n))


def distribution_problems(init: dict, official_sample: dict, x: torch.Tensor) -> list[str]:
    """What is wrong with `x` as a draw from the official initialiser `init` (empty: nothing)."""
    x = x.detach().double().flatten()
    n, mean, std = x.numel(), float(x.mean()), float(x.std(unbiased=False))
    lo, hi = float(x.min()), float(x.max())
    kind = init["kind"]
    problems = []
    if kind == "constant":
        if not (lo == hi == init["value"]):
            problems.append(f"values in [{lo:.4g}, {hi:.4g}], not all {init['value']}")
        return problems
    if kind == "truncated_normal":
        bound = init["truncation"] * init["stddev"]
        expected = init["stddev"] * truncated_std(init["truncation"])
        kurtosis = 3.0  # the truncated normal's is lower: a bound on the error
        if hi > bound * (1 + 1e-6) or lo < -bound * (1 + 1e-6):
            problems.append(f"values in [{lo:.4g}, {hi:.4g}] outside the truncation +-{bound:.4g}")
    elif kind == "uniform":
        a, b = init["min"], init["max"]
        expected = (b - a) / math.sqrt(12)
        kurtosis = 1.8
        if lo < a or hi > b:
            problems.append(f"values in [{lo:.4g}, {hi:.4g}] outside U({a:.4g}, {b:.4g})")
        # n uniform draws leave a gap of (b - a) / n at each end on average
        if lo > a + 20 * (b - a) / n or hi < b - 20 * (b - a) / n:
            problems.append(f"values in [{lo:.4g}, {hi:.4g}] do not fill U({a:.4g}, {b:.4g})")
    else:
        return [f"unknown initialiser {kind}"]
    err = std_error(expected, n, kurtosis)
    if abs(std - expected) > SIGMAS * err:
        problems.append(f"std {std:.5g}, the official initialiser's {expected:.5g} (+-{SIGMAS * err:.2g})")
    if abs(std - official_sample["std"]) > SIGMAS * math.sqrt(2) * err:
        problems.append(f"std {std:.5g}, TensorFlow's draw {official_sample['std']:.5g}")
    if abs(mean) > SIGMAS * expected / math.sqrt(n):
        problems.append(f"mean {mean:.3g}, not 0")
    return problems


def load(name: str) -> dict:
    path = FIXTURES / f"{name}.json"
    if not path.is_file():
        pytest.fail(f"fixture {path} is missing; regenerate it with tools/official_init_stats.py")
    return json.loads(path.read_text())


@pytest.mark.parametrize("name", CASES)
def test_every_layer_initialised_as_the_official_graph(name):
    fixture = load(name)
    arch, options = CASES[name]
    torch.manual_seed(0)
    model = create_model(arch, **options)
    state = model.state_dict()
    theirs = fixture["variables"]
    ours = {t.variable: (key, t.layout) for key, t in official_names(model).items()}
    head_only = name.endswith("_retrieval")  # the fixture keeps the head only: its backbone is assemble_resnet50's
    assert not set(theirs) - set(ours), "official variables without a counterpart"
    if not head_only:
        assert not set(ours) - set(theirs), "tensors without an official variable"
    problems = {}
    for variable, official in theirs.items():
        key, layout = ours[variable]
        shape = tuple(layout(np.empty(official["shape"], np.float32)).shape)
        assert tuple(state[key].shape) == shape, key
        found = distribution_problems(official["initializer"], official["sample"], state[key])
        if found:
            problems[key] = found
    assert not problems, problems
    kinds = {v["initializer"]["kind"] for v in theirs.values()}
    assert kinds == {"constant", "truncated_normal", "uniform"}


def test_the_official_initialisers_are_lecun_and_glorot():
    """What the fixture says the official graph draws, against the formulas by hand: truncated normal with
    variance 1 / fan_in (the shape's every axis but the last), Glorot's U(+-sqrt(6 / (in + out))), zero-gamma on
    each block's last BN only (with the pre-training flag)."""
    variables = load("assemble_resnet50")["variables"]
    for name, v in variables.items():
        init, shape = v["initializer"], v["shape"]
        if init["kind"] == "truncated_normal":
            fan_in = math.prod(shape[:-1])
            assert init["stddev"] * truncated_std(2.0) == pytest.approx(math.sqrt(1 / fan_in), rel=1e-6), name
        elif init["kind"] == "uniform":
            assert name.endswith("dense/kernel")
            assert init["max"] == -init["min"] == pytest.approx(math.sqrt(6 / sum(shape)), rel=1e-6)
    zero = [n for n, v in variables.items() if n.endswith("/gamma") and v["initializer"]["value"] == 0]
    with torch.device("meta"):
        model = create_model("assemble_resnet50", num_classes=1001, init_weights=False)
    blocks = sum(1 for m in model.modules() if hasattr(m, "zero_init_last"))
    assert len(zero) == blocks


def test_the_check_tells_he_from_lecun():
    """The distribution check has the power to fail: He's sqrt(2 / fan_in), the previous init, is caught on the
    smallest official conv tensor, and torch's default conv init on the classifier's Glorot range."""
    variables = load("assemble_resnet50")["variables"]
    conv = min((v for v in variables.values() if v["initializer"]["kind"] == "truncated_normal"),
               key=lambda v: v["sample"]["n"])
    init = conv["initializer"]
    torch.manual_seed(0)
    fan_in = math.prod(conv["shape"][:-1])
    he = torch.nn.init.trunc_normal_(torch.empty(conv["sample"]["n"]), std=math.sqrt(2 / fan_in) / truncated_std(2),
                                     a=-2 * math.sqrt(2 / fan_in) / truncated_std(2),
                                     b=2 * math.sqrt(2 / fan_in) / truncated_std(2))
    lecun = torch.nn.init.trunc_normal_(torch.empty(conv["sample"]["n"]), std=init["stddev"],
                                        a=-2 * init["stddev"], b=2 * init["stddev"])
    assert distribution_problems(init, conv["sample"], he)
    assert not distribution_problems(init, conv["sample"], lecun)
    dense = variables["resnet_model/dense/kernel"]
    default = torch.nn.Linear(*dense["shape"]).weight  # torch's kaiming_uniform(a=sqrt(5)): U(+-1/sqrt(in))
    assert distribution_problems(dense["initializer"], dense["sample"], default)
