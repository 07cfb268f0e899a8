"""Where and how tensors run: device, threads, dtype checks and autocast.

Training and translation both take their runtime from here, so neither imports the other.
"""

from __future__ import annotations

import functools
import os
import time

import torch

from .errors import UserError

HALF_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def pick_device(name: str | None = None) -> torch.device:
    """The device asked for (None: CUDA when present, else the CPU), refused in one line where
    torch would not know it or has no such GPU, before anything is moved to it."""
    if not name:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"device {name!r} is not a torch device (cpu, cuda, cuda:1 ...)") from None
    gpus = torch.cuda.device_count()
    if device.type == "cuda" and (device.index or 0) >= gpus:
        raise UserError(f"device {name!r}: this machine has {gpus} CUDA GPU(s) torch can use")
    return device


def set_threads(threads: int = 0) -> None:
    """Use ``threads`` intra-op threads (0 = every core this process may run on)."""
    torch.set_num_threads(threads or len(os.sched_getaffinity(0)))


def check_dtype(dtype: str, device: torch.device) -> None:
    """fp16 needs a GPU (it needs loss scaling, and CPUs have no fast fp16 matrix units)."""
    if dtype not in ("fp32", "auto", *HALF_DTYPES):
        raise UserError(f"dtype must be fp32, bf16, fp16 or auto, got {dtype!r}")
    if dtype == "fp16" and device.type == "cpu":
        raise UserError("fp16 runs on a GPU only; on a CPU use bf16 (fast with AMX)")


def resolve_dtype(dtype: str, device: torch.device, log=None) -> str:
    """``dtype``, with "auto" made bf16 where bf16 matrix products are fast (GPUs with bf16,
    CPUs with AMX or AVX-512 BF16) and fp32 elsewhere. Logs a warning when bf16 was asked
    for on a CPU that runs it slower than fp32 (without bf16 units it is emulated)."""
    check_dtype(dtype, device)
    if device.type != "cpu":
        bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
        return ("bf16" if bf16 else "fp32") if dtype == "auto" else dtype
    speedup = cpu_bf16_speedup()
    if dtype == "bf16" and speedup < 0.8 and log is not None:
        log(
            f"warning: bf16 matrix products run {1 / speedup:.0f}x slower than fp32 on this CPU "
            "(it has no bf16 units); dtype auto (or fp32) would be faster"
        )
    if dtype == "auto":
        return "bf16" if speedup >= 1.3 else "fp32"
    return dtype


@functools.cache
def cpu_bf16_speedup() -> float:
    """How many times faster a bf16 matrix product runs than an fp32 one on this CPU, timed
    once on a small product (a fraction of a second even where bf16 is emulated)."""

    def seconds(dtype: torch.dtype) -> float:
        a, b = torch.randn(64, 512, dtype=dtype), torch.randn(512, 512, dtype=dtype)
        a @ b
        start = time.perf_counter()
        for _ in range(3):
            a @ b
        return time.perf_counter() - start

    return seconds(torch.float32) / seconds(torch.bfloat16)


def autocast(device: torch.device, dtype: str):
    """bf16 or fp16 autocast (weights stay fp32) for ``dtype`` "bf16"/"fp16", else nothing."""
    half = HALF_DTYPES.get(dtype, torch.bfloat16)
    return torch.autocast(device.type, dtype=half, enabled=dtype in HALF_DTYPES)
