"""The sliced label-smoothed cross-entropy against PyTorch's own."""

import pytest
import torch

from translate.model import loss


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("smoothing", [0.0, 0.2])
def test_smoothed_cross_entropy_matches_pytorch(monkeypatch, dtype, smoothing):
    monkeypatch.setattr(loss, "CPU_ROWS", 7)  # several slices, the last one short
    torch.manual_seed(0)
    logits = (torch.randn(50, 300) * 3).to(dtype).requires_grad_()
    target = torch.randint(1, 300, (50,))
    target[::6] = 0  # ignored rows
    expected = torch.nn.functional.cross_entropy(
        logits.float(), target, ignore_index=0, reduction="sum", label_smoothing=smoothing
    )
    (expected_grad,) = torch.autograd.grad(expected * 0.5, logits)
    got = loss.smoothed_cross_entropy(logits, target, smoothing, ignore_index=0)
    (grad,) = torch.autograd.grad(got * 0.5, logits)
    assert got.dtype == torch.float32
    assert torch.allclose(got, expected, rtol=1e-6)
    assert grad.dtype == dtype
    # Both gradients are the same fp32 numbers to fp32 rounding, stored once in the logits'
    # dtype: in bf16 they may land one step of its 8-bit significand apart, 2**-7 of the value
    # at most, never more. The smoothing term alone is 0.5 * 0.2 / 300 = 3e-4 in every entry,
    # the size of the median entry: dropping it fails here, as it did not under atol=4e-3.
    rtol = 2**-7 if dtype == torch.bfloat16 else 1e-5
    assert torch.allclose(grad.float(), expected_grad.float(), rtol=rtol, atol=1e-7)
    assert grad[::6].abs().sum() == 0  # ignored rows get no gradient
