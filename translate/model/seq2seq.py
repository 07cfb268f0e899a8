"""The context-vector encoder-decoder (Sutskever et al. 2014; Cho et al. 2014).

The encoder reads the whole source into one context vector. The decoder starts from it (through
a learned bridge), sees it at every step next to the previous word, and so does the output layer.

Interface used by search (batch-first everywhere, reordered only with ``index_select(0, idx)``):
  ``encode(src_tokens, src_lengths) -> memory``  a dict of (batch, ...) tensors
  ``init_state(memory) -> state``                  (batch, layers[*2 for LSTM], hidden)
  ``decode_step(prev_tokens, state, memory) -> (log_probs, state)``
     = ``decode_features(...) -> (features, state)``, then ``log_probs(features)``, which beam
     search calls on slices of rows
The state may have k rows per sentence of memory, each sentence's rows adjacent (the beams of
beam search): memory is read by all k and is never copied per beam.
"""

from __future__ import annotations

import torch
from torch import nn

from ..config import ModelConfig
from ..data.vocab import PAD
from .attention import Attention
from .dropout import Dropout
from .rnn import (
    ContextRNN,
    add_per_sentence,
    join_layers,
    layer_slice,
    pack_state,
    tanh,
    unpack_state,
)

CELLS = {"rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}

Memory = dict[str, torch.Tensor]


class Encoder(nn.Module):
    """Embeds the source and runs a (bidirectional, multi-layer) RNN over it.

    Each layer and direction is its own one-layer RNN over the padded batch; the backward one
    reads each sentence reversed in place (padding stays at the end). This equals a packed
    bidirectional nn.RNN but skips packing, whose backward pass zero-fills per time step.
    """

    def __init__(self, cfg: ModelConfig, vocab_size: int):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(vocab_size, cfg.emb_dim, padding_idx=PAD)
        self.embed_scale = 1.0  # set by Seq2Seq when this table is the tied one
        self.dropout = Dropout(cfg.dropout)
        directions = 2 if cfg.bidirectional else 1
        hidden = cfg.enc_hidden_dim or cfg.hidden_dim
        self.out_dim = hidden * directions
        self.context_dim = self.out_dim * (1 if cfg.context_pool == "none" else 2)
        self.layers = nn.ModuleList()
        for layer in range(cfg.enc_layers):
            size = cfg.emb_dim if layer == 0 else self.out_dim
            self.layers.append(
                nn.ModuleList(
                    CELLS[cfg.cell](size, hidden, batch_first=True) for _ in range(directions)
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
    """An RNN over [previous word; context] and a readout over [state; previous word; context]
    (Cho et al. 2014), with e the previous word's embedding and c the context vector:

        h_t = RNN(h_{t-1}, [e_{t-1}; c])                     h_0 = tanh(W_b c + b_b)
        p(y_t) = softmax(W_o tanh(W_h h_t + W_e e_{t-1} + W_c c + b  [+ W_a a_t]))

    With attention, a_t is the attended encoder output: computed from h_t after the RNN (Luong;
    the RNN still runs over all steps of teacher forcing at once), or from h_{t-1} before it and
    then also part of the RNN's input (Bahdanau; one step at a time). The terms in c are the same
    at every step, so :meth:`precompute` computes them once per sentence.
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
        word_dim = cfg.emb_dim + (memory_dim if self.feed_attention else 0)
        self.rnn = ContextRNN(cfg.cell, word_dim, context_dim, cfg.hidden_dim)  # the first layer
        self.upper = None  # layers 2.. read only the layer below: a plain nn.RNN
        if cfg.dec_layers > 1:
            self.upper = CELLS[cfg.cell](
                cfg.hidden_dim,
                cfg.hidden_dim,
                num_layers=cfg.dec_layers - 1,
                dropout=cfg.dropout if cfg.dec_layers > 2 else 0.0,
                batch_first=True,
            )
        self.readout_state = nn.Linear(cfg.hidden_dim, cfg.emb_dim, bias=False)  # W_h
        self.readout_embed = nn.Linear(cfg.emb_dim, cfg.emb_dim, bias=False)  # W_e
        self.readout_context = nn.Linear(context_dim, cfg.emb_dim)  # W_c and b
        self.readout_attention = None
        if self.attention is not None:
            self.readout_attention = nn.Linear(memory_dim, cfg.emb_dim, bias=False)  # W_a
        self.output = nn.Linear(cfg.emb_dim, vocab_size)
        self.embed_scale = 1.0
        if cfg.tie_embeddings:
            # N(0, 1) rows would give logits of std sqrt(emb_dim): start near uniform instead,
            # and read the table times sqrt(emb_dim) so that the RNN's input is not that small
            nn.init.normal_(self.embed.weight, std=cfg.emb_dim**-0.5)
            self.output.weight = self.embed.weight
            if cfg.scale_embeddings:
                self.embed_scale = cfg.emb_dim**0.5

    def precompute(
        self, context: torch.Tensor, outputs: torch.Tensor, mask: torch.Tensor
    ) -> Memory:
        """What every step reads from the source, computed once per sentence: the context
        (batch, context_dim), its shares of the RNN's input gates and of the readout and, with
        attention, the encoder outputs (batch, src_len, memory_dim), their keys and ``mask``
        (batch, src_len), True on real tokens."""
        memory = {
            "context": context,
            "rnn_context": self.rnn.precompute(context),  # (batch, gates)
            "readout_context": self.readout_context(context),  # (batch, emb)
        }
        if self.attention is not None:
            memory["values"] = outputs
            memory["keys"] = self.attention.precompute(outputs)
            memory["mask"] = mask
        return memory

    def init_state(self, memory: Memory) -> torch.Tensor:
        """The first state, from the context vector: (batch, state_rows, hidden)."""
        state = tanh(self.bridge(memory["context"]))
        return state.view(-1, self.state_rows, self.cfg.hidden_dim)

    def forward(
        self, tgt_in: torch.Tensor, state: torch.Tensor, memory: Memory
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Teacher-forced logits (batch, tgt_len, vocab) and the attention weights (batch,
        tgt_len, src_len), or None without attention."""
        embedded = self.dropout(self.embed(tgt_in) * self.embed_scale)  # (batch, tgt_len, emb)
        if not self.feed_attention:  # every input is known: all steps in one pass
            rnn_out, attended, weights, _ = self._steps(embedded, state, memory)
        else:
            outs = []
            for t in range(tgt_in.size(1)):
                out_t, att_t, w_t, state = self._steps(embedded[:, t : t + 1], state, memory)
                outs.append((out_t, att_t, w_t))
            rnn_out, attended, weights = (torch.cat(parts, dim=1) for parts in zip(*outs))
        return self._readout(self.dropout(rnn_out), embedded, memory, attended), weights

    def step(
        self, prev_tokens: torch.Tensor, state: torch.Tensor, memory: Memory
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One step of search: the output layer's input (batch, emb) for the next token, and
        the new state."""
        embedded = (self.embed(prev_tokens) * self.embed_scale).unsqueeze(1)  # (batch, 1, emb)
        rnn_out, attended, _, state = self._steps(embedded, state, memory)
        return self._readout_input(rnn_out, embedded, memory, attended).squeeze(1), state

    def _steps(self, embedded: torch.Tensor, state: torch.Tensor, memory: Memory):
        """RNN outputs, attended outputs, attention weights and the new state for (batch,
        steps, emb) inputs."""
        weights = attended = None
        words = embedded
        if self.feed_attention:  # query: the top layer's previous hidden state
            top = state[:, self.cfg.dec_layers - 1].unsqueeze(1)  # (batch, 1, hidden)
            attended, weights = self._attend(top, memory)
            words = torch.cat([embedded, attended], dim=-1)
        rnn_out, state = self._rnn(words, state, memory)
        if self.attention is not None and not self.feed_attention:
            attended, weights = self._attend(rnn_out, memory)
        return rnn_out, attended, weights, state

    def _rnn(self, words: torch.Tensor, state: torch.Tensor, memory: Memory):
        """The top layer's outputs (batch, steps, hidden) and the new state."""
        hx = unpack_state(state, self.cfg.cell)
        outputs, first = self.rnn(words, memory["rnn_context"], layer_slice(hx, 0, 1))
        if self.upper is None:
            return outputs, pack_state(first)
        outputs, upper = self.upper(self.dropout(outputs), layer_slice(hx, 1))
        return outputs, pack_state(join_layers(first, upper))

    def _attend(self, query: torch.Tensor, memory: Memory) -> tuple[torch.Tensor, torch.Tensor]:
        return self.attention(query, memory["keys"], memory["values"], memory["mask"])

    def _readout(self, rnn_out, embedded, memory: Memory, attended=None) -> torch.Tensor:
        """Logits (batch, steps, vocab) from (batch, steps, ...) inputs."""
        return self.output(self.dropout(self._readout_input(rnn_out, embedded, memory, attended)))

    def _readout_input(self, rnn_out, embedded, memory: Memory, attended=None) -> torch.Tensor:
        """The output layer's input (batch, steps, emb) from (batch, steps, ...) inputs."""
        readout = self.readout_state(rnn_out) + self.readout_embed(embedded)
        readout = add_per_sentence(readout, memory["readout_context"])
        if attended is not None:
            readout = readout + self.readout_attention(attended)
        return tanh(readout)


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
        """Everything the decoder reads from the source, computed once per sentence."""
        if self.cfg.reverse_source:
            src_tokens = reverse_padded(src_tokens, src_lengths)
        outputs, context = self.encoder(src_tokens, src_lengths)
        mask = src_tokens[:, : outputs.size(1)] != PAD  # (batch, src_len)
        return self.decoder.precompute(context, outputs, mask)

    def init_state(self, memory: Memory) -> torch.Tensor:
        return self.decoder.init_state(memory)

    def decode_step(
        self, prev_tokens: torch.Tensor, state: torch.Tensor, memory: Memory
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-probabilities (batch, vocab) of the next token, and the new state."""
        features, state = self.decode_features(prev_tokens, state, memory)
        return self.log_probs(features), state

    def decode_features(
        self, prev_tokens: torch.Tensor, state: torch.Tensor, memory: Memory
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`decode_step` up to its output layer: that layer's input (batch, emb), and
        the new state."""
        return self.decoder.step(prev_tokens, state, memory)

    def log_probs(self, features: torch.Tensor) -> torch.Tensor:
        """The rest of :meth:`decode_step`: log-probabilities (rows, vocab) from any rows of its
        features."""
        return torch.log_softmax(self.decoder.output(features).float(), dim=-1)

    def forward(
        self, src_tokens: torch.Tensor, src_lengths: torch.Tensor, tgt_in: torch.Tensor
    ) -> torch.Tensor:
        """Teacher-forced logits (batch, tgt_len, vocab)."""
        memory = self.encode(src_tokens, src_lengths)
        return self.decoder(tgt_in, self.init_state(memory), memory)[0]


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
