"""Attention over the encoder outputs, an option on top of the context-vector model.

Three score functions: ``dot`` (Luong: q·k) and ``general`` (Luong: q·Wk), both divided by
sqrt(dim), and ``additive`` (Bahdanau: v·tanh(Wq + Uk)). The key projection is computed once per sentence by
:meth:`Attention.precompute`; padded source positions get zero weight.
"""

from __future__ import annotations

import torch
from torch import nn

from .rnn import tanh


class Attention(nn.Module):
    """Scores encoder outputs against decoder queries and returns their weighted sum."""

    def __init__(self, score: str, query_dim: int, value_dim: int):
        super().__init__()
        self.score = score
        if score == "dot" and query_dim != value_dim:
            raise ValueError(f"dot attention needs equal sizes, got {query_dim} and {value_dim}")
        if score == "general":
            self.key_proj = nn.Linear(value_dim, query_dim, bias=False)
        elif score == "additive":
            self.key_proj = nn.Linear(value_dim, query_dim, bias=False)
            self.query_proj = nn.Linear(query_dim, query_dim)
            self.v = nn.Linear(query_dim, 1, bias=False)

    def precompute(self, values: torch.Tensor) -> torch.Tensor:
        """Keys for the score function, from encoder outputs (batch, src_len, value_dim)."""
        return values if self.score == "dot" else self.key_proj(values)

    def forward(
        self, query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Context (rows, steps, value_dim) and weights (rows, steps, src_len).

        ``query`` is (rows, steps, query_dim); ``keys``, ``values`` and ``mask`` (True on real
        tokens) are per sentence: (batch, src_len, ...), with rows = batch * k and each
        sentence's k rows adjacent (its beams, which then score in one matrix product).
        """
        rows, steps = query.shape[:2]
        query = query.reshape(keys.size(0), -1, query.size(-1))  # (batch, k * steps, query_dim)
        if self.score == "additive":
            # (batch, steps, 1, dim) + (batch, 1, src_len, dim) -> (batch, steps, src_len)
            hidden = tanh(self.query_proj(query).unsqueeze(2) + keys.unsqueeze(1))
            scores = self.v(hidden).squeeze(-1)
        else:
            # scaled by 1/sqrt(dim): unscaled, the scores of wide states saturate the softmax
            # to one-hot weights, and attention stops learning
            scores = torch.bmm(query, keys.transpose(1, 2)) * query.size(-1) ** -0.5
        scores = scores.float().masked_fill(~mask.unsqueeze(1), float("-inf"))
        weights = torch.softmax(scores, dim=-1)
        context = torch.bmm(weights.to(values.dtype), values)  # (batch, k * steps, value_dim)
        return context.view(rows, steps, -1), weights.view(rows, steps, -1)
