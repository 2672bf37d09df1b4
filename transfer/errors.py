"""Errors a user can cause. The CLI prints them as one line and exits 2."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class TransferError(Exception):
    """Base class: a mistake the user can fix. The message names what is wrong and how to fix it."""


class UnknownNameError(TransferError):
    """A name (model, dataset, metric, ...) that is not one of the known ones."""


class WeightsError(TransferError):
    """A weights file that cannot be read or does not fit the model."""


class ConfigError(TransferError):
    """A bad value in a recipe, an override or a command-line option."""


class RetrievalError(TransferError):
    """A retrieval input that cannot be used (no embedding model, empty gallery, malformed embeddings)."""


def suggest(name: str, choices: Iterable[str], n: int = 3) -> str:
    """' (did you mean: a, b?)' for the closest choices, or '' when none is close."""
    close = difflib.get_close_matches(name, list(choices), n=n, cutoff=0.5)
    return f" (did you mean: {', '.join(close)}?)" if close else ""
