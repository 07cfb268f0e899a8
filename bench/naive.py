"""The seq2seq users write by hand, after the classic PyTorch tutorials: a reference for bench.py.

Same sizes as ours, but the decoder is a GRUCell driven by a Python loop over target steps in
training, and inference translates one sentence at a time (beam search over a Python list of
hypotheses). Only its speed is measured; it is not part of the toolkit.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

BOS, EOS, PAD = 2, 3, 0


class NaiveSeq2Seq(nn.Module):
    """Bi-GRU encoder; GRUCell decoder fed [word; context] each step (Cho et al. 2014)."""

    def __init__(self, vocab: int, emb: int = 256, hidden: int = 512):
        super().__init__()
        self.src_embed = nn.Embedding(vocab, emb, padding_idx=PAD)
        self.encoder = nn.GRU(emb, hidden, batch_first=True, bidirectional=True)
        self.bridge = nn.Linear(2 * hidden, hidden)
        self.tgt_embed = nn.Embedding(vocab, emb, padding_idx=PAD)
        self.cell = nn.GRUCell(emb + 2 * hidden, hidden)
        self.out = nn.Linear(hidden + 2 * hidden + emb, vocab)

    def encode(self, src: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        packed = pack_padded_sequence(
            self.src_embed(src), lengths, batch_first=True, enforce_sorted=False
        )
        _, final = self.encoder(packed)
        return torch.cat([final[0], final[1]], dim=-1)  # (batch, 2*hidden)

    def step(self, token, hidden, context):
        embedded = self.tgt_embed(token)
        hidden = self.cell(torch.cat([embedded, context], dim=-1), hidden)
        return self.out(torch.cat([hidden, context, embedded], dim=-1)), hidden

    def forward(self, src, lengths, tgt_in):
        context = self.encode(src, lengths)
        hidden = torch.tanh(self.bridge(context))
        logits = []
        for t in range(tgt_in.size(1)):  # the Python loop over steps
            step_logits, hidden = self.step(tgt_in[:, t], hidden, context)
            logits.append(step_logits)
        return torch.stack(logits, dim=1)

    @torch.no_grad()
    def greedy(self, src_ids: list[int], max_len: int) -> list[int]:
        src = torch.tensor([src_ids])
        context = self.encode(src, torch.tensor([len(src_ids)]))
        hidden = torch.tanh(self.bridge(context))
        token, out = torch.tensor([BOS]), []
        for _ in range(max_len):
            logits, hidden = self.step(token, hidden, context)
            token = logits.argmax(-1)
            if token.item() == EOS:
                break
            out.append(token.item())
        return out

    @torch.no_grad()
    def beam(self, src_ids: list[int], max_len: int, size: int = 5) -> list[int]:
        src = torch.tensor([src_ids])
        context = self.encode(src, torch.tensor([len(src_ids)]))
        beams = [(0.0, [BOS], torch.tanh(self.bridge(context)))]
        done = []
        for _ in range(max_len):
            candidates = []
            for score, tokens, hidden in beams:  # one hypothesis at a time
                logits, new_hidden = self.step(torch.tensor([tokens[-1]]), hidden, context)
                top = logits.log_softmax(-1)[0].topk(size)
                for lp, token in zip(top.values.tolist(), top.indices.tolist()):
                    candidates.append((score + lp, tokens + [token], new_hidden))
            candidates.sort(key=lambda c: c[0], reverse=True)
            beams = []
            for candidate in candidates[:size]:
                (done if candidate[1][-1] == EOS else beams).append(candidate)
            if not beams or len(done) >= size:
                break
        best = max(done or beams, key=lambda c: c[0] / len(c[1]))
        return [t for t in best[1][1:] if t != EOS]
