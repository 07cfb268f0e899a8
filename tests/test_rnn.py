"""The written-out first decoder layer against PyTorch's RNNs, and the state layout."""

import pytest
import torch

from translate.model.rnn import (
    ContextRNN,
    join_layers,
    layer_slice,
    pack_state,
    tanh,
    unpack_state,
)


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_context_rnn_equals_torch_rnn_over_word_and_context(cell):
    """ContextRNN with W_c c + b precomputed per sentence computes what nn.RNN/GRU/LSTM does
    over [x_t; c] with the same weights (float32, to 1e-5), also with two rows (beams) per
    sentence reading one context."""
    torch.manual_seed(0)
    layer = ContextRNN(cell, input_dim=8, context_dim=6, hidden_dim=16)
    reference = getattr(torch.nn, cell.upper())(8 + 6, 16, batch_first=True)
    with torch.no_grad():
        reference.weight_ih_l0.copy_(torch.cat([layer.input.weight, layer.context.weight], 1))
        reference.bias_ih_l0.copy_(layer.context.bias)
        reference.weight_hh_l0.copy_(layer.hidden.weight)
        reference.bias_hh_l0.copy_(layer.hidden.bias)
    sentences, beams, steps = 2, 2, 5
    context = torch.randn(sentences, 6)
    inputs = torch.randn(sentences * beams, steps, 8)
    h0 = torch.randn(1, sentences * beams, 16)
    hx = (h0, torch.randn(1, sentences * beams, 16)) if cell == "lstm" else h0
    per_row = context.repeat_interleave(beams, dim=0).unsqueeze(1).expand(-1, steps, -1)
    expected, expected_hx = reference(torch.cat([inputs, per_row], dim=-1), hx)
    outputs, final = layer(inputs, layer.precompute(context), hx)
    assert torch.allclose(outputs, expected, atol=1e-5)
    for got, want in zip(pack_state(final), pack_state(expected_hx)):
        assert torch.allclose(got, want, atol=1e-5)


@pytest.mark.parametrize("cell, rows", [("gru", 3), ("lstm", 6)])
def test_state_packing_round_trips(cell, rows):
    state = torch.randn(4, rows, 16)  # (batch, rows, hidden): 3 layers
    hx = unpack_state(state, cell)
    if cell == "lstm":
        assert [part.shape for part in hx] == [(3, 4, 16), (3, 4, 16)]
        assert torch.equal(hx[1][0], state[:, 3])  # c of the first layer follows every h
    else:
        assert hx.shape == (3, 4, 16)
    assert torch.equal(pack_state(hx), state)
    rejoined = join_layers(layer_slice(hx, 0, 1), layer_slice(hx, 1))
    assert torch.equal(pack_state(rejoined), state)


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_the_whole_sequence_kernel_equals_the_written_out_steps(cell):
    """The GPU path (one call of PyTorch's RNN kernel, cuDNN there) and the CPU path (the
    equations step by step) give the same outputs and gradients; checked here on the CPU."""
    torch.manual_seed(0)
    layer = ContextRNN(cell, input_dim=8, context_dim=6, hidden_dim=16)
    context, inputs = torch.randn(2, 6), torch.randn(4, 5, 8)
    h0 = torch.randn(1, 4, 16)
    hx = (h0, torch.randn(1, 4, 16)) if cell == "lstm" else h0
    results = []
    for whole in (False, True):
        layer.whole_sequence = whole
        layer.zero_grad()
        outputs, final = layer(inputs, layer.precompute(context), hx)
        (outputs.square().sum() + pack_state(final).sum()).backward()
        results.append((outputs, pack_state(final), [p.grad.clone() for p in layer.parameters()]))
    (out_a, final_a, grads_a), (out_b, final_b, grads_b) = results
    assert torch.allclose(out_a, out_b, atol=1e-6) and torch.allclose(final_a, final_b, atol=1e-6)
    for grad_a, grad_b in zip(grads_a, grads_b):
        assert torch.allclose(grad_a, grad_b, atol=1e-5)


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_the_kernel_gets_one_dtype_of_weights_and_state_under_autocast(cell, monkeypatch):
    """Under bf16 autocast the gates are bf16 and the weights fp32; cuDNN refuses weights of
    two dtypes ("Weight scalar types do not match") and a state unlike its input, so the
    kernel's nn.RNN parameters all take the layer's dtype and the state the gates'. (CPU
    kernels accept the mix, so the call is inspected here rather than left to fail.)"""
    calls = []
    real = torch.func.functional_call

    def spy(module, params, args):
        calls.append(({name: p.dtype for name, p in params.items()}, args))
        return real(module, params, args)

    monkeypatch.setattr(torch.func, "functional_call", spy)
    torch.manual_seed(0)
    layer = ContextRNN(cell, input_dim=8, context_dim=6, hidden_dim=16)
    layer.whole_sequence = True
    h0 = torch.randn(1, 4, 16)
    hx = (h0, torch.randn(1, 4, 16)) if cell == "lstm" else h0
    with torch.autocast("cpu", dtype=torch.bfloat16):
        outputs, _ = layer(torch.randn(4, 5, 8), layer.precompute(torch.randn(2, 6)), hx)
    (dtypes, (gates, state)) = calls[0]
    assert set(dtypes.values()) == {torch.float32} and gates.dtype == torch.bfloat16
    states = state if isinstance(state, tuple) else (state,)
    assert all(part.dtype == torch.bfloat16 for part in states)
    assert outputs.shape == (4, 5, 16)


@pytest.mark.parametrize("shape", [(3, 7), (64, 512), (2, 40, 1536)])
def test_tanh_equals_torch_tanh_in_value_and_gradient(shape):
    """The model's tanh (a sigmoid on large fp32 tensors without gradients, for speed) is
    torch.tanh to 1e-6, in value and in gradient, from small inputs to saturated ones, and leaves
    its input as it was; in bf16 it is torch.tanh."""
    torch.manual_seed(0)
    x = (torch.randn(shape) * 4).requires_grad_()
    with torch.no_grad():
        before = x.clone()
        assert (tanh(x) - torch.tanh(x)).abs().max() < 1e-6
        assert torch.equal(x, before)
    ours, reference = tanh(x), torch.tanh(x)
    assert (ours - reference).abs().max() < 1e-6
    (grad,) = torch.autograd.grad(ours.sum(), x)
    (expected,) = torch.autograd.grad(reference.sum(), x)
    assert (grad - expected).abs().max() < 1e-6
    half = x.detach().bfloat16()
    assert torch.equal(tanh(half), torch.tanh(half))
