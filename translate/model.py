"""The context-vector encoder-decoder (Sutskever et al. 2014; Cho et al. 2014).

The encoder reads the whole source into one context vector. The decoder starts from it (through
a learned bridge), sees it at every step next to the previous word, and so does the output layer.

Interface used by search (batch-first everywhere, reordered only with ``index_select(0, idx)``):
  ``encode(src_tokens, src_lengths) -> memory``  a dict of (batch, ...) tensors
  ``init_state(memory) -> state``                  (batch, layers[*2 for LSTM], hidden)
  ``decode_step(prev_tokens, state, memory) -> (log_probs, state)``
The state may have k rows per sentence of memory, each sentence's rows adjacent (the beams of
beam search): memory is read by all k and is never copied per beam.
"""

from __future__ import annotations

import torch
from torch import nn

from .attention import Attention
from .config import ModelConfig
from .dropout import Dropout
from .vocab import PAD

CELLS = {"rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}
GATES = {"rnn": 1, "gru": 3, "lstm": 4}  # gate blocks in an input projection

Memory = dict[str, torch.Tensor]


class Encoder(nn.Module):
    """Embeds the source and runs a (bidirectional, multi-layer) RNN over it.

    Each layer and direction is its own one-layer RNN over the padded batch; the backward one
    reads each sentence reversed in place (padding stays at the end). This equals a packed
    bidirectional nn.RNN but skips packing, whose backward pass zero-fills per time step and
    cost a third of the encoder's time on CPU.
    """

    def __init__(self, cfg: ModelConfig, vocab_size: int):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(vocab_size, cfg.emb_dim, padding_idx=PAD)
        self.embed_scale = 1.0  # set by Seq2Seq when this table is the tied one
        self.dropout = Dropout(cfg.dropout)
        directions = 2 if cfg.bidirectional else 1
        self.out_dim = cfg.hidden_dim * directions
        self.context_dim = self.out_dim * (1 if cfg.context_pool == "none" else 2)
        self.layers = nn.ModuleList()
        for layer in range(cfg.enc_layers):
            size = cfg.emb_dim if layer == 0 else self.out_dim
            self.layers.append(
                nn.ModuleList(
                    CELLS[cfg.cell](size, cfg.hidden_dim, batch_first=True)
                    for _ in range(directions)
                )
            )

    def forward(
        self, src_tokens: torch.Tensor, src_lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-position outputs (batch, src_len, out_dim) and the context (batch, context_dim):
        the top layer's states after reading the whole sentence, in each direction, and with
        ``context_pool`` their max or mean over all real positions beside them."""
        lengths = src_lengths.to(src_tokens.device)
        last = (lengths - 1).view(-1, 1, 1)  # index of each sentence's last real position
        outputs = self.dropout(self.embed(src_tokens) * self.embed_scale)  # (batch, src_len, emb)
        device = outputs.device.type
        if torch.is_autocast_enabled(device):  # in its dtype the RNNs' state is not cast per step
            outputs = outputs.to(torch.get_autocast_dtype(device))
        for number, rnns in enumerate(self.layers):
            if number > 0:
                outputs = self.dropout(outputs)
            forward_out, _ = rnns[0](outputs)  # padding comes after the last real token
            finals = [forward_out.gather(1, last.expand(-1, 1, forward_out.size(2)))]
            per_direction = [forward_out]
            if len(rnns) == 2:
                backward_out, _ = rnns[1](reverse_padded(outputs, lengths))
                finals.append(backward_out.gather(1, last.expand(-1, 1, backward_out.size(2))))
                per_direction.append(reverse_padded(backward_out, lengths))
            outputs = torch.cat(per_direction, dim=-1)  # (batch, src_len, out_dim)
        context = torch.cat(finals, dim=-1).squeeze(1)  # (batch, out_dim)
        if self.cfg.context_pool != "none":
            real = torch.arange(outputs.size(1), device=outputs.device) < lengths.unsqueeze(1)
            real = real.unsqueeze(-1)  # (batch, src_len, 1)
            if self.cfg.context_pool == "max":
                pooled = outputs.masked_fill(~real, float("-inf")).amax(dim=1)
            else:
                pooled = (outputs * real).sum(dim=1) / lengths.unsqueeze(1).to(outputs.dtype)
            context = torch.cat([context, pooled], dim=-1)  # (batch, 2 * out_dim)
        return outputs, context


class Decoder(nn.Module):
    """An RNN over [previous word; context] with a readout over [state; context; previous word].

    The context's share of both is computed once per sentence (in ``Seq2Seq.encode``). With
    attention, the readout also sees the attended encoder outputs: computed after the RNN from
    its output (Luong; the RNN still runs over all steps at once, its input projection one
    matrix product), or before it from the previous state and fed to the RNN input (Bahdanau;
    one step at a time).
    """

    def __init__(self, cfg: ModelConfig, vocab_size: int, context_dim: int, memory_dim: int):
        super().__init__()
        self.cfg = cfg
        self.state_rows = cfg.dec_layers * (2 if cfg.cell == "lstm" else 1)  # LSTM: h and c
        self.embed = nn.Embedding(vocab_size, cfg.emb_dim, padding_idx=PAD)
        self.dropout = Dropout(cfg.dropout)
        self.bridge = nn.Linear(context_dim, self.state_rows * cfg.hidden_dim)
        self.attention = None
        if cfg.attention != "none":
            self.attention = Attention(cfg.attention, cfg.hidden_dim, memory_dim)
        self.feed_attention = self.attention is not None and cfg.attention_step == "before"
        # The first RNN layer written out: its input gates are W_x [word; attended] + (W_c c + b),
        # and the bracket is computed once per sentence, not at every step as nn.GRU would.
        gates = GATES[cfg.cell] * cfg.hidden_dim
        word_dim = cfg.emb_dim + (memory_dim if self.feed_attention else 0)
        self.rnn_input = nn.Linear(word_dim, gates, bias=False)
        self.rnn_context = nn.Linear(context_dim, gates)
        self.rnn_hidden = nn.Linear(cfg.hidden_dim, gates)
        for linear in (self.rnn_input, self.rnn_context, self.rnn_hidden):
            for weight in linear.parameters():  # nn.GRU's initialisation, as the recipes had
                nn.init.uniform_(weight, -(cfg.hidden_dim**-0.5), cfg.hidden_dim**-0.5)
        self.rnn_upper = None  # layers 2.. read only the layer below: a plain nn.RNN
        if cfg.dec_layers > 1:
            self.rnn_upper = CELLS[cfg.cell](
                cfg.hidden_dim,
                cfg.hidden_dim,
                num_layers=cfg.dec_layers - 1,
                dropout=cfg.dropout if cfg.dec_layers > 2 else 0.0,
                batch_first=True,
            )
        # readout = W_h h + W_e e + W_a a + (W_c c + b); the bracket is computed once per sentence
        self.readout_state = nn.Linear(cfg.hidden_dim, cfg.emb_dim, bias=False)
        self.readout_embed = nn.Linear(cfg.emb_dim, cfg.emb_dim, bias=False)
        self.readout_context = nn.Linear(context_dim, cfg.emb_dim)
        self.readout_attention = None
        if self.attention is not None:
            self.readout_attention = nn.Linear(memory_dim, cfg.emb_dim, bias=False)
        self.output = nn.Linear(cfg.emb_dim, vocab_size)
        self.embed_scale = 1.0
        if cfg.tie_embeddings:
            # N(0, 1) rows would give logits of std sqrt(emb_dim): start near uniform instead,
            # and read the table times sqrt(emb_dim) so the RNN's input is not 16x too small
            nn.init.normal_(self.embed.weight, std=cfg.emb_dim**-0.5)
            self.output.weight = self.embed.weight
            if cfg.scale_embeddings:
                self.embed_scale = cfg.emb_dim**0.5

    def init_state(self, memory: Memory) -> torch.Tensor:
        """The decoder's first state, from the context vector: (batch, state_rows, hidden)."""
        state = torch.tanh(self.bridge(memory["context"]))
        return state.view(-1, self.state_rows, self.cfg.hidden_dim)

    def _run_rnn(
        self, words: torch.Tensor, state: torch.Tensor, memory: Memory
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Outputs (batch, steps, hidden) and the new state from (batch, steps, word_dim)."""
        layers = self.cfg.dec_layers
        rows = [0, layers] if self.cfg.cell == "lstm" else [0]  # the first layer's h (and c)
        gates = add_per_sentence(self.rnn_input(words), memory["rnn_context"])
        outputs, first = recur(self.cfg.cell, gates, state[:, rows], self.rnn_hidden)
        if self.rnn_upper is None:
            return outputs, first
        upper = [r for r in range(state.size(1)) if r not in rows]
        hx = state[:, upper].transpose(0, 1).contiguous()  # (rows, batch, hidden) for nn.RNN
        if self.cfg.cell == "lstm":
            hx = tuple(hx.chunk(2, dim=0))
        outputs, final = self.rnn_upper(self.dropout(outputs), hx)
        if self.cfg.cell == "lstm":  # state rows: h of every layer, then c of every layer
            h, c = final
            h, c = h.transpose(0, 1), c.transpose(0, 1)
            return outputs, torch.cat([first[:, :1], h, first[:, 1:], c], dim=1)
        return outputs, torch.cat([first, final.transpose(0, 1)], dim=1)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        """Reads checkpoints from before the first layer was written out, whose one nn.RNN
        ``rnn`` read [word; context; attended] at every step."""
        old = prefix + "rnn."
        if old + "weight_ih_l0" in state_dict:
            w_ih = state_dict.pop(old + "weight_ih_l0")
            words, context = self.cfg.emb_dim, self.rnn_context.in_features
            state_dict[prefix + "rnn_input.weight"] = torch.cat(
                [w_ih[:, :words], w_ih[:, words + context :]], dim=1
            )
            state_dict[prefix + "rnn_context.weight"] = w_ih[:, words : words + context]
            state_dict[prefix + "rnn_context.bias"] = state_dict.pop(old + "bias_ih_l0")
            state_dict[prefix + "rnn_hidden.weight"] = state_dict.pop(old + "weight_hh_l0")
            state_dict[prefix + "rnn_hidden.bias"] = state_dict.pop(old + "bias_hh_l0")
            for key in [k for k in state_dict if k.startswith(old)]:
                name, layer = key[len(old) :].rsplit("_l", 1)
                state_dict[f"{prefix}rnn_upper.{name}_l{int(layer) - 1}"] = state_dict.pop(key)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _attend(self, query: torch.Tensor, memory: Memory) -> tuple[torch.Tensor, torch.Tensor]:
        return self.attention(query, memory["keys"], memory["values"], memory["mask"])

    def _logits(self, rnn_out, embedded, memory: Memory, attended=None) -> torch.Tensor:
        """Logits (batch, steps, vocab) from the readout of (batch, steps, ...) inputs."""
        readout = self.readout_state(rnn_out) + self.readout_embed(embedded)
        readout = add_per_sentence(readout, memory["readout_context"])
        if attended is not None:
            readout = readout + self.readout_attention(attended)
        return self.output(self.dropout(torch.tanh(readout)))

    def _step(self, embedded, state, memory: Memory):
        """One or more steps from (batch, steps, emb) inputs: rnn output, attention, state."""
        weights = attended = None
        words = embedded
        if self.feed_attention:  # query: the top layer's previous hidden state
            top = state[:, self.cfg.dec_layers - 1].unsqueeze(1)  # (batch, 1, hidden)
            attended, weights = self._attend(top, memory)
            words = torch.cat([embedded, attended], dim=-1)
        rnn_out, state = self._run_rnn(words, state, memory)
        if self.attention is not None and not self.feed_attention:
            attended, weights = self._attend(rnn_out, memory)
        return rnn_out, attended, weights, state

    def teacher_forced(
        self, tgt_in: torch.Tensor, state: torch.Tensor, memory: Memory
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits (batch, tgt_len, vocab) and attention weights (batch, tgt_len, src_len)."""
        embedded = self.dropout(self.embed(tgt_in) * self.embed_scale)  # (batch, tgt_len, emb)
        if not self.feed_attention:  # every input is known: all steps in one pass
            rnn_out, attended, weights, _ = self._step(embedded, state, memory)
        else:
            outs = []
            for t in range(tgt_in.size(1)):
                out_t, att_t, w_t, state = self._step(embedded[:, t : t + 1], state, memory)
                outs.append((out_t, att_t, w_t))
            rnn_out, attended, weights = (torch.cat(parts, dim=1) for parts in zip(*outs))
        logits = self._logits(self.dropout(rnn_out), embedded, memory, attended)
        return logits, weights

    def forward(self, tgt_in: torch.Tensor, state: torch.Tensor, memory: Memory) -> torch.Tensor:
        """Teacher-forced logits (batch, tgt_len, vocab)."""
        return self.teacher_forced(tgt_in, state, memory)[0]

    def step(
        self, prev_tokens: torch.Tensor, state: torch.Tensor, memory: Memory
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One step: logits (batch, vocab) for the next token and the new state."""
        embedded = (self.embed(prev_tokens) * self.embed_scale).unsqueeze(1)  # (batch, 1, emb)
        rnn_out, attended, _, state = self._step(embedded, state, memory)
        return self._logits(rnn_out, embedded, memory, attended).squeeze(1), state


class Seq2Seq(nn.Module):
    """Encoder and decoder joined by the context vector."""

    def __init__(self, cfg: ModelConfig, src_vocab_size: int, tgt_vocab_size: int):
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg, src_vocab_size)
        self.decoder = Decoder(
            cfg, tgt_vocab_size, self.encoder.context_dim, memory_dim=self.encoder.out_dim
        )
        if cfg.tie_source_embedding:  # one joint vocabulary: one table for all three uses
            self.encoder.embed.weight = self.decoder.embed.weight
            self.encoder.embed_scale = self.decoder.embed_scale

    def encode(self, src_tokens: torch.Tensor, src_lengths: torch.Tensor) -> Memory:
        """Everything the decoder needs from the source, computed once per sentence."""
        if self.cfg.reverse_source:
            src_tokens = reverse_padded(src_tokens, src_lengths)
        outputs, context = self.encoder(src_tokens, src_lengths)
        memory = {
            "context": context,
            "rnn_context": self.decoder.rnn_context(context),  # (batch, gates)
            "readout_context": self.decoder.readout_context(context),
        }
        if self.decoder.attention is not None:
            memory["values"] = outputs  # (batch, src_len, out_dim)
            memory["keys"] = self.decoder.attention.precompute(outputs)
            memory["mask"] = src_tokens[:, : outputs.size(1)] != PAD  # (batch, src_len)
        return memory

    def init_state(self, memory: Memory) -> torch.Tensor:
        return self.decoder.init_state(memory)

    def decode_step(
        self, prev_tokens: torch.Tensor, state: torch.Tensor, memory: Memory
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-probabilities (batch, vocab) of the next token, and the new state."""
        logits, state = self.decoder.step(prev_tokens, state, memory)
        return torch.log_softmax(logits.float(), dim=-1), state

    def forward(
        self, src_tokens: torch.Tensor, src_lengths: torch.Tensor, tgt_in: torch.Tensor
    ) -> torch.Tensor:
        """Teacher-forced logits (batch, tgt_len, vocab)."""
        memory = self.encode(src_tokens, src_lengths)
        return self.decoder(tgt_in, self.init_state(memory), memory)


def reverse_padded(values: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Each row's first ``length`` entries (batch, len, ...) in reverse; padding stays put."""
    positions = torch.arange(values.size(1), device=values.device).unsqueeze(0)  # (1, len)
    lengths = lengths.to(values.device).unsqueeze(1)  # (batch, 1)
    source = torch.where(positions < lengths, lengths - 1 - positions, positions)
    source = source.view(*source.shape, *([1] * (values.dim() - 2))).expand_as(values)
    return values.gather(1, source)


def build_model(cfg: ModelConfig, src_vocab_size: int, tgt_vocab_size: int) -> Seq2Seq:
    """The model described by ``cfg``, with PyTorch's default initialisation."""
    return Seq2Seq(cfg, src_vocab_size, tgt_vocab_size)


def add_per_sentence(rows: torch.Tensor, per_sentence: torch.Tensor) -> torch.Tensor:
    """``rows`` (rows, steps, dim) plus ``per_sentence`` (sentences, dim) broadcast over the
    steps and over each sentence's adjacent rows."""
    grouped = rows.view(per_sentence.size(0), -1, rows.size(-1))
    return (grouped + per_sentence.unsqueeze(1)).view(rows.shape)


def recur(
    cell: str, gates: torch.Tensor, state: torch.Tensor, hidden: nn.Module
) -> tuple[torch.Tensor, torch.Tensor]:
    """One RNN layer over precomputed input gates (batch, steps, gates), from ``state``
    (batch, 1, hidden), or (batch, 2, hidden) for an LSTM's h and c: the outputs (batch, steps,
    hidden) and the final state. ``hidden`` is W_h h + b_h. Same equations and gate order as
    nn.RNN (tanh), nn.GRU and nn.LSTM."""
    h, c = state[:, 0], state[:, -1]
    outputs = []
    for x in gates.unbind(1):  # backward: one stack, where indexing would zero-fill per step
        recurrent = hidden(h)
        if cell == "gru":  # gates r, z, n
            size = h.size(-1)
            x_rz, x_n = x.split([2 * size, size], dim=-1)
            h_rz, h_n = recurrent.split([2 * size, size], dim=-1)
            reset, update = torch.sigmoid(x_rz + h_rz).chunk(2, dim=-1)
            new = torch.tanh(x_n + reset * h_n)
            h = new + update * (h - new)
        elif cell == "lstm":  # gates i, f, g, o
            i, f, g, o = (x + recurrent).chunk(4, dim=-1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
        else:
            h = torch.tanh(x + recurrent)
        outputs.append(h)
    final = torch.stack([h, c], dim=1) if cell == "lstm" else h.unsqueeze(1)
    return torch.stack(outputs, dim=1), final
