"""The runnable examples in the pure modules' docstrings run, and say what they print: each is a small,
checked statement of a function's definition (a wrong metric or a changed transform fails here)."""

from __future__ import annotations

import doctest
import importlib

import pytest

# The modules whose functions carry examples; every one of them must have some (a module that loses its
# examples is caught, not silently skipped).
MODULES = ["transfer.eval.retrieval", "transfer.eval.classify", "transfer.eval.robustness",
           "transfer.data.transforms", "transfer.data.autoaugment", "transfer.data.mixing", "transfer.models.factory",
           "transfer.runtime"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.attempted > 0, f"{name} has no examples"
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples in {name} failed (output above)"
