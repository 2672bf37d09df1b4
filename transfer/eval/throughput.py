"""Inference throughput of several models, measured side by side.

Models are timed round-robin (one batch of each per round), so a slow spell of a shared machine hits
every model alike and the ratios stay meaningful; each figure is the median over rounds.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from dataclasses import asdict, dataclass

import torch
from torch import nn

from ..errors import ConfigError
from ..runtime import DTYPES, resolve_device


@dataclass(frozen=True)
class BenchmarkSettings:
    batch_size: int = 16
    resolution: int = 224
    dtype: str = "fp32"  # fp32, or autocast to bf16 / fp16
    channels_last: bool = False
    compile: bool = False
    device: str = "auto"
    warmup: int = 2
    repeats: int = 5

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ConfigError(f"dtype {self.dtype!r} is not one of {list(DTYPES)}")
        if self.batch_size < 1 or self.resolution < 16 or self.repeats < 1 or self.warmup < 0:
            raise ConfigError("batch size >= 1, resolution >= 16, repeats >= 1 and warmup >= 0 are required")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def prepare(model: nn.Module, settings: BenchmarkSettings, device: torch.device) -> nn.Module:
    model = model.eval().to(device)
    if settings.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if settings.compile:
        model = torch.compile(model)
    return model


def measure_throughput(models: dict[str, nn.Module], settings: BenchmarkSettings) -> list[dict]:
    """Median images/s of each model (inference, no grad), and its ratio to the first model."""
    device = resolve_device(settings.device)
    dtype = DTYPES[settings.dtype]
    x = torch.randn(settings.batch_size, 3, settings.resolution, settings.resolution, device=device)
    if settings.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    autocast = (torch.autocast(device.type, dtype=dtype) if dtype != torch.float32
                else contextlib.nullcontext())
    prepared = {name: prepare(m, settings, device) for name, m in models.items()}
    peak: dict[str, float | None] = {}
    times: dict[str, list[float]] = {name: [] for name in prepared}
    with torch.inference_mode(), autocast:
        for name, model in prepared.items():  # warm-up (and compilation) one model at a time
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            for _ in range(max(settings.warmup, 1 if settings.compile else 0)):
                model(x)
            _sync(device)
            peak[name] = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
        for _ in range(settings.repeats):
            for name, model in prepared.items():
                _sync(device)
                start = time.perf_counter()
                model(x)
                _sync(device)
                times[name].append(time.perf_counter() - start)
    rows = []
    for name, ts in times.items():
        ips = settings.batch_size / statistics.median(ts)
        rows.append({"model": name, "images_per_second": ips, "peak_memory_mb": peak[name],
                     "seconds": ts})
    base = rows[0]["images_per_second"]
    for row in rows:
        row["ratio"] = row["images_per_second"] / base
    return rows


def describe_machine(device: torch.device) -> dict:
    """What the figures were measured on: the numbers mean little without it."""
    import os
    import platform

    info = {"device": str(device), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "cpus": os.cpu_count(), "processor": platform.processor() or platform.machine()}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def settings_dict(settings: BenchmarkSettings) -> dict:
    return asdict(settings)
