"""Dropout whose CPU masks are cut from random bytes.

PyTorch's CPU dropout draws one Bernoulli variable per element; filling random 32-bit words
and comparing their bytes with a threshold gives the same kind of mask for a fraction of the
work. The drop probability is rounded to a multiple of 1/256 (0.2 -> 51/256 = 0.199).
"""

from __future__ import annotations

import torch
from torch import nn


class _ByteDropout(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, threshold: int) -> torch.Tensor:
        n = x.numel()
        words = torch.empty((n + 3) // 4, dtype=torch.int32, device=x.device)
        words.random_(-(2**31), 2**31 - 1)  # the full range: every byte uniform
        keep = words.view(torch.uint8)[:n].view(x.shape) >= threshold
        ctx.save_for_backward(keep)
        ctx.scale = 256 / (256 - threshold)
        return torch.where(keep, x, 0.0).mul_(ctx.scale)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (keep,) = ctx.saved_tensors
        return torch.where(keep, grad, 0.0).mul_(ctx.scale), None


class Dropout(nn.Dropout):
    """``nn.Dropout``; in training on a CPU the masks come from random bytes (see above)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        threshold = round(self.p * 256)
        if not self.training or x.device.type != "cpu" or not 0 < threshold < 256:
            return super().forward(x)
        return _ByteDropout.apply(x, threshold)
