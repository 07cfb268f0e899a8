"""The byte-mask dropout against the rate, scale and gradient of nn.Dropout."""

import torch

from translate.model.dropout import Dropout


def test_byte_dropout_rate_scale_and_gradient():
    torch.manual_seed(0)
    dropout = Dropout(0.2).train()
    x = torch.rand(1000, 1000) + 1.0  # no zeros of its own
    y = dropout(x)
    dropped = y == 0
    assert abs(dropped.float().mean().item() - 51 / 256) < 0.002  # 0.2 rounded to 51/256
    assert torch.allclose(y[~dropped], x[~dropped] * 256 / 205)
    x.requires_grad_()
    torch.manual_seed(1)
    y = dropout(x)
    (grad,) = torch.autograd.grad(y.sum(), x)
    assert torch.equal(grad == 0, y == 0)
    torch.manual_seed(1)
    assert torch.equal(dropout(x), y)  # the global seed decides the mask
    assert torch.equal(dropout.eval()(x), x)
