"""Ensemble decoding: several trained models searched as one, through the same small interface
as one model (``encode``, ``init_state``, ``decode_step`` and its two halves), so that greedy,
beam and sampled search run on it unchanged; and the check that the models share their
vocabularies.

At each step the ensemble's log-probabilities are the mean of its members' (a product of
experts, renormalised only where sampling draws from it). fairseq's ``EnsembleModel`` averages
probabilities instead (log-mean-exp, a mixture); we follow what was asked for: the mean of the
log-probabilities, with which a hypothesis's score is the mean of the members' scores of it and
the ensemble of a model with itself decodes exactly as the model alone.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..data.vocab import Vocab
from .seq2seq import Memory, Seq2Seq

SPECIAL_IDS = ("pad_id", "unk_id", "bos_id", "eos_id")


class Ensemble(nn.Module):
    """Two or more models sharing their vocabularies, decoding together. Each member keeps its
    own encoder outputs and decoder state; the search sees one memory dict (each member's keys
    prefixed by its number) and one state tensor (the members' states side by side, flattened),
    which it reorders with ``index_select(0, ...)`` as it would one model's. A step is one
    batched call per member."""

    def __init__(self, members: Sequence[Seq2Seq]):
        super().__init__()
        if len(members) < 2:
            raise ValueError("an ensemble has at least two members; use the model itself")
        self.members = nn.ModuleList(members)
        # each member's state (rows, state_rows, hidden), flattened to this many columns
        self.state_shapes = [(m.decoder.state_rows, m.decoder.cfg.hidden_dim) for m in members]

    def encode(self, src_tokens: torch.Tensor, src_lengths: torch.Tensor) -> Memory:
        """Every member's memory, its keys prefixed ``N/`` for member N."""
        memory = {}
        for number, member in enumerate(self.members):
            for key, value in member.encode(src_tokens, src_lengths).items():
                memory[f"{number}/{key}"] = value
        return memory

    def init_state(self, memory: Memory) -> torch.Tensor:
        """The members' first states side by side: (batch, sum of state_rows x hidden)."""
        states = [m.init_state(self._memory_of(memory, n)) for n, m in enumerate(self.members)]
        return self._join(states)

    def decode_step(
        self, prev_tokens: torch.Tensor, state: torch.Tensor, memory: Memory
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The mean of the members' log-probabilities (rows, vocab) and the new joined state."""
        features, state = self.decode_features(prev_tokens, state, memory)
        return self.log_probs(features), state

    def decode_features(
        self, prev_tokens: torch.Tensor, state: torch.Tensor, memory: Memory
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The members' output-layer inputs side by side (rows, sum of emb_dim), and the new
        joined state."""
        features, states = [], []
        for number, (member, member_state) in enumerate(zip(self.members, self._split(state))):
            member_features, member_state = member.decode_features(
                prev_tokens, member_state, self._memory_of(memory, number)
            )
            features.append(member_features)
            states.append(member_state)
        return torch.cat(features, dim=1), self._join(states)

    def log_probs(self, features: torch.Tensor) -> torch.Tensor:
        """The mean of the members' log-probabilities (rows, vocab) from any rows of the
        features of :meth:`decode_features`."""
        parts = features.split([m.cfg.emb_dim for m in self.members], dim=1)
        log_probs = [member.log_probs(part) for member, part in zip(self.members, parts)]
        return torch.stack(log_probs).mean(dim=0)

    def _memory_of(self, memory: Memory, number: int) -> Memory:
        """Member ``number``'s part of the joined memory, under its own keys."""
        prefix = f"{number}/"
        return {k[len(prefix) :]: v for k, v in memory.items() if k.startswith(prefix)}

    def _join(self, states: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat([state.reshape(state.size(0), -1) for state in states], dim=1)

    def _split(self, state: torch.Tensor) -> list[torch.Tensor]:
        """The inverse of :meth:`_join`: each member's (rows, state_rows, hidden) state."""
        widths = [rows * hidden for rows, hidden in self.state_shapes]
        parts = state.split(widths, dim=1)  # (rows, width) each
        return [part.view(-1, *shape) for part, shape in zip(parts, self.state_shapes)]


def members(model: nn.Module) -> list[Seq2Seq]:
    """The models an ensemble is made of, or the model itself in a list."""
    return list(model.members) if isinstance(model, Ensemble) else [model]


def vocabulary_difference(first: Vocab, other: Vocab) -> str | None:
    """How two SentencePiece models differ in what their ids mean (their number, special ids,
    or first piece that differs), or None when every id is the same piece in both."""
    if first.model_proto == other.model_proto:
        return None
    if len(first) != len(other):
        return f"{len(first)} pieces against {len(other)}"
    for name in SPECIAL_IDS:
        mine, theirs = getattr(first.processor, name)(), getattr(other.processor, name)()
        if mine != theirs:
            return f"{name} {mine} against {theirs}"
    for index in range(len(first)):
        if first.piece(index) != other.piece(index):
            return f"piece {index} is {first.piece(index)!r} against {other.piece(index)!r}"
    return None  # the same pieces, other scores: each id means the same piece
