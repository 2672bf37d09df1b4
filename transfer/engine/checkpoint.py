"""Checkpoints: written atomically (a crash or kill never leaves a half-written last.pt), read weights-only."""

from __future__ import annotations

import io
from pathlib import Path

import torch

from ..errors import TransferError
from ..files import atomic_write_bytes


def save_checkpoint(path: Path, state: dict) -> None:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_checkpoint(path: Path) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a damaged or foreign file: one clear line
        raise TransferError(f"checkpoint {path} cannot be read ({type(e).__name__}); it may be damaged") from None


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
