"""Where and how tensors run: device, threads, dtype checks and autocast.

Training and translation both take their runtime from here, so neither imports the other.
"""

from __future__ import annotations

import os

import torch

from .config import UserError

HALF_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def pick_device(device: str | None = None) -> torch.device:
    """The requested device, or CUDA when present, else the CPU."""
    if device:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def set_threads(threads: int = 0) -> None:
    """Use ``threads`` intra-op threads (0 = every core this process may run on)."""
    torch.set_num_threads(threads or len(os.sched_getaffinity(0)))


def check_dtype(dtype: str, device: torch.device) -> None:
    """fp16 needs a GPU (it needs loss scaling, and CPUs have no fast fp16 matrix units)."""
    if dtype not in ("fp32", *HALF_DTYPES):
        raise UserError(f"dtype must be fp32, bf16 or fp16, got {dtype!r}")
    if dtype == "fp16" and device.type == "cpu":
        raise UserError("fp16 runs on a GPU only; on a CPU use bf16 (fast with AMX)")


def autocast(device: torch.device, dtype: str):
    """bf16 or fp16 autocast (weights stay fp32) for ``dtype`` "bf16"/"fp16", else nothing."""
    half = HALF_DTYPES.get(dtype, torch.bfloat16)
    return torch.autocast(device.type, dtype=half, enabled=dtype in HALF_DTYPES)
