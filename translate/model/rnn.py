"""The decoder's first RNN layer written out, and the layout of the decoder state.

The decoder's RNN reads [x_t; c] at every step, and the context c is the same at every step of a
sentence. Written out, the layer adds the context's share of the input gates, W_c c + b, from a
once-per-sentence precomputation instead of multiplying the whole [x_t; c] again at each step as
nn.GRU would (with the mean-pooled context, c is most of the input).
"""

from __future__ import annotations

import functools

import torch
from torch import nn

GATES = {"rnn": 1, "gru": 3, "lstm": 4}  # gate blocks in an input projection

# nn.RNN/GRU's hidden state (layers, batch, hidden), or nn.LSTM's pair of them (h, c)
HiddenState = torch.Tensor | tuple[torch.Tensor, torch.Tensor]


def tanh(x: torch.Tensor) -> torch.Tensor:
    """tanh(x); without gradients, on fp32 tensors of 8192 elements or more, as 2 sigmoid(2x) - 1
    in one buffer (the same to 1e-6): PyTorch's CPU tanh is several times slower than its sigmoid
    there. With gradients, in bf16 and in an ONNX graph, torch.tanh itself."""
    if (
        x.dtype != torch.float32
        or x.numel() < 8192
        or (x.requires_grad and torch.is_grad_enabled())
        or torch.onnx.is_in_onnx_export()
    ):
        return torch.tanh(x)
    return (x * 2).sigmoid_().mul_(2).sub_(1)


def recur(
    cell: str, gates: torch.Tensor, h: torch.Tensor, c: torch.Tensor | None, hidden: nn.Module
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """One layer over input gates (batch, steps, gates) from h (and c), each (batch, hidden):
    the outputs (batch, steps, hidden) and the final h and c. With W_h h + b_h = ``hidden(h)``,
    the equations and gate order of nn.RNN, nn.GRU and nn.LSTM:

      rnn:  h' = tanh(x + W_h h + b_h)
      gru:  r, z = sigmoid(x_rz + (W_h h + b_h)_rz);  n = tanh(x_n + r * (W_h h + b_h)_n)
            h' = (1 - z) n + z h
      lstm: i, f, g, o = x + W_h h + b_h
            c' = sigmoid(f) c + sigmoid(i) tanh(g);  h' = sigmoid(o) tanh(c')
    """
    outputs = []
    for x in gates.unbind(1):  # backward: one stack, where indexing would zero-fill per step
        recurrent = hidden(h)
        if cell == "gru":
            size = h.size(-1)
            x_rz, x_n = x.split([2 * size, size], dim=-1)
            h_rz, h_n = recurrent.split([2 * size, size], dim=-1)
            reset, update = torch.sigmoid(x_rz + h_rz).chunk(2, dim=-1)
            new = tanh(x_n + reset * h_n)
            h = new + update * (h - new)
        elif cell == "lstm":
            i, f, g, o = (x + recurrent).chunk(4, dim=-1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * tanh(g)
            h = torch.sigmoid(o) * tanh(c)
        else:
            h = tanh(x + recurrent)
        outputs.append(h)
    return torch.stack(outputs, dim=1), h, c


class ContextRNN(nn.Module):
    """One RNN layer over [x_t; c], where c is the same at every step of a sentence: called
    with W_c c + b from :meth:`precompute`, it multiplies only x_t at each step.

    The recurrence runs as the written-out equations (small steps suit a CPU) or, on a GPU
    and over whole sequences, as one call of PyTorch's RNN kernel (cuDNN): ``whole_sequence``
    chooses (None: by device), and both compute the same.
    """

    def __init__(self, cell: str, input_dim: int, context_dim: int, hidden_dim: int):
        super().__init__()
        self.cell = cell
        self.whole_sequence: bool | None = None
        gates = GATES[cell] * hidden_dim
        self.input = nn.Linear(input_dim, gates, bias=False)  # W_x
        self.context = nn.Linear(context_dim, gates)  # W_c and the input bias
        self.hidden = nn.Linear(hidden_dim, gates)  # W_h and the hidden bias
        for linear in (self.input, self.context, self.hidden):
            for weight in linear.parameters():  # nn.GRU's initialisation
                nn.init.uniform_(weight, -(hidden_dim**-0.5), hidden_dim**-0.5)

    def precompute(self, context: torch.Tensor) -> torch.Tensor:
        """The context's share of the input gates, W_c c + b: (sentences, gates)."""
        return self.context(context)

    def forward(
        self, inputs: torch.Tensor, context_gates: torch.Tensor, hx: HiddenState
    ) -> tuple[torch.Tensor, HiddenState]:
        """Outputs (rows, steps, hidden) and the final hx (one layer) from inputs (rows, steps,
        input_dim); rows are sentences times k, each sentence's k rows adjacent (its beams)."""
        gates = add_per_sentence(self.input(inputs), context_gates)
        whole = self.whole_sequence
        if whole or (whole is None and gates.is_cuda and gates.size(1) > 1):
            return self.kernel(gates, hx)
        if self.cell == "lstm":
            outputs, h, c = recur(self.cell, gates, hx[0][0], hx[1][0], self.hidden)
            return outputs, (h.unsqueeze(0), c.unsqueeze(0))
        outputs, h, _ = recur(self.cell, gates, hx[0], None, self.hidden)
        return outputs, h.unsqueeze(0)

    def kernel(self, gates: torch.Tensor, hx: HiddenState) -> tuple[torch.Tensor, HiddenState]:
        """The recurrence as one call of PyTorch's RNN kernel over the gates: an nn.RNN
        whose input projection is the identity adds exactly the precomputed gates. Its
        parameters all take the layer's dtype (cuDNN refuses a mix; under autocast, which gives
        bf16 gates, it casts them together) and the state takes the gates' dtype."""
        torch_rnn = _torch_rnn(self.cell, gates.size(-1), self.hidden.in_features)
        if isinstance(hx, tuple):
            hx = tuple(part.to(gates.dtype) for part in hx)
        else:
            hx = hx.to(gates.dtype)
        return torch.func.functional_call(torch_rnn, self.kernel_parameters(), (gates, hx))

    def kernel_parameters(self) -> dict[str, torch.Tensor]:
        """:meth:`kernel`'s nn.RNN parameters: W_h and b_h, an identity W_i and a zero b_i."""
        weight, bias = self.hidden.weight, self.hidden.bias
        size = weight.size(0)
        return {
            "weight_ih_l0": torch.eye(size, dtype=weight.dtype, device=weight.device),
            "weight_hh_l0": weight,
            "bias_ih_l0": bias.new_zeros(size),
            "bias_hh_l0": bias,
        }


@functools.cache
def _torch_rnn(cell: str, input_size: int, hidden_size: int) -> nn.Module:
    """An nn.RNN/GRU/LSTM of these sizes whose parameters :meth:`ContextRNN.kernel` replaces."""
    torch_rnn = {"rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}[cell]
    return torch_rnn(input_size, hidden_size, batch_first=True)


def add_per_sentence(rows: torch.Tensor, per_sentence: torch.Tensor) -> torch.Tensor:
    """``rows`` (rows, steps, dim) plus ``per_sentence`` (sentences, dim), broadcast over the
    steps and over each sentence's adjacent rows."""
    grouped = rows.view(per_sentence.size(0), -1, rows.size(-1))
    return (grouped + per_sentence.unsqueeze(1)).view(rows.shape)


# The search keeps the decoder state as one tensor (batch, rows, hidden) that it can reorder
# with index_select(0, ...): the rows are h of each layer, then (LSTM) c of each layer.


def unpack_state(state: torch.Tensor, cell: str) -> HiddenState:
    """The search's state (batch, rows, hidden) as nn.RNN's hx, or nn.LSTM's (h, c)."""
    hx = state.transpose(0, 1)  # (rows, batch, hidden)
    return tuple(hx.chunk(2)) if cell == "lstm" else hx


def pack_state(hx: HiddenState) -> torch.Tensor:
    """The inverse of :func:`unpack_state`."""
    if isinstance(hx, tuple):
        hx = torch.cat(hx)
    return hx.transpose(0, 1)


def layer_slice(hx: HiddenState, start: int, stop: int | None = None) -> HiddenState:
    """Layers ``start:stop`` of hx (contiguous, as nn.RNN modules want them)."""
    if isinstance(hx, tuple):
        return tuple(part[start:stop].contiguous() for part in hx)
    return hx[start:stop].contiguous()


def join_layers(lower: HiddenState, upper: HiddenState) -> HiddenState:
    """hx of the layers of ``lower`` followed by those of ``upper``."""
    if isinstance(lower, tuple):
        return tuple(torch.cat(parts) for parts in zip(lower, upper))
    return torch.cat([lower, upper])
