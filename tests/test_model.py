"""The encoder-decoder: shapes, padding, equivalence to PyTorch's RNNs, tied tables."""

import pytest
import torch

from tests.conftest import tiny_model as tiny
from translate.data.batches import pair_batch, source_batch
from translate.data.vocab import EOS, PAD
from translate.model.seq2seq import reverse_padded

VOCAB = 20
SRC = [[5, 6, 7], [8, 9], [10, 11, 12, 13, 14]]
TGT = [[6, 7], [9, 10, 11], [12]]


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
@pytest.mark.parametrize("layers, bidirectional", [(1, True), (2, False)])
def test_shapes(cell, layers, bidirectional):
    model = tiny(cell, enc_layers=layers, dec_layers=layers, bidirectional=bidirectional)
    batch = pair_batch(SRC, TGT)
    logits = model(batch.src_tokens, batch.src_lengths, batch.tgt_in)
    assert logits.shape == (3, 4, VOCAB)  # longest target + EOS
    memory = model.encode(batch.src_tokens, batch.src_lengths)
    state = model.init_state(memory)
    assert state.shape == (3, layers * (2 if cell == "lstm" else 1), 16)
    log_probs, new_state = model.decode_step(batch.tgt_in[:, 0], state, memory)
    assert log_probs.shape == (3, VOCAB) and new_state.shape == state.shape
    assert torch.allclose(log_probs.exp().sum(-1), torch.ones(3), atol=1e-5)


@pytest.mark.parametrize("pool", ["none", "max", "mean"])
def test_padding_does_not_change_the_encoding(pool):
    model = tiny(context_pool=pool).eval()
    alone = source_batch([SRC[1]])
    padded = source_batch(SRC)  # SRC[1] is padded by three positions here
    assert padded.src_tokens[1].tolist() == [8, 9, EOS, PAD, PAD, PAD]
    context_alone = model.encode(alone.src_tokens, alone.src_lengths)["context"]
    context_padded = model.encode(padded.src_tokens, padded.src_lengths)["context"][1:2]
    assert torch.allclose(context_alone, context_padded, atol=1e-6)
    outputs_alone, _ = model.encoder(alone.src_tokens, alone.src_lengths)
    outputs_padded, _ = model.encoder(padded.src_tokens, padded.src_lengths)
    assert torch.allclose(outputs_alone[0], outputs_padded[1, :3], atol=1e-6)


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_encoder_equals_a_packed_bidirectional_rnn(cell):
    """The per-direction encoder computes what nn.GRU/LSTM(bidirectional) does on packed input."""
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    model = tiny(cell, enc_layers=2).eval()
    reference = getattr(torch.nn, cell.upper())(
        8, 16, num_layers=2, bidirectional=True, batch_first=True
    )
    with torch.no_grad():
        for layer, rnns in enumerate(model.encoder.layers):
            for direction, rnn in enumerate(rnns):
                suffix = f"_l{layer}" + ("_reverse" if direction else "")
                for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                    getattr(reference, name + suffix).copy_(getattr(rnn, name + "_l0"))
    batch = source_batch(SRC)
    embedded = model.encoder.embed(batch.src_tokens)
    packed = pack_padded_sequence(
        embedded, batch.src_lengths, batch_first=True, enforce_sorted=False
    )
    expected, _ = pad_packed_sequence(reference(packed)[0], batch_first=True)
    outputs, _ = model.encoder(batch.src_tokens, batch.src_lengths)
    real = (batch.src_tokens != PAD).unsqueeze(-1)
    assert torch.allclose(outputs * real, expected * real, atol=1e-5)


@pytest.mark.parametrize(
    "cell, attention, step",
    [
        ("rnn", "none", "after"),
        ("gru", "none", "after"),
        ("lstm", "none", "after"),
        ("gru", "general", "after"),
        ("lstm", "additive", "after"),
        ("gru", "additive", "before"),
        ("lstm", "general", "before"),
    ],
)
@pytest.mark.parametrize("whole_sequence", [False, True], ids=["written-out", "rnn-kernel"])
def test_fused_decoder_equals_step_by_step(cell, attention, step, whole_sequence):
    """Teacher-forced logits (all steps in one pass where possible, with the first layer's
    recurrence written out as on a CPU or in PyTorch's RNN kernel as on a GPU) match the
    search's step function to 1e-5, the float32 rounding of a different summation order."""
    model = tiny(cell, dec_layers=2, attention=attention, attention_step=step).eval()
    model.decoder.rnn.whole_sequence = whole_sequence
    batch = pair_batch(SRC, TGT)
    fused = model(batch.src_tokens, batch.src_lengths, batch.tgt_in).log_softmax(-1)
    model.decoder.rnn.whole_sequence = None  # search: one step at a time
    memory = model.encode(batch.src_tokens, batch.src_lengths)
    state = model.init_state(memory)
    for t in range(batch.tgt_in.size(1)):
        log_probs, state = model.decode_step(batch.tgt_in[:, t], state, memory)
        assert torch.allclose(log_probs, fused[:, t], atol=1e-5)


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_each_cell_learns(cell):
    model = tiny(cell)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    batch = pair_batch(SRC, TGT)
    losses = []
    for _ in range(30):
        logits = model(batch.src_tokens, batch.src_lengths, batch.tgt_in)
        loss = torch.nn.functional.cross_entropy(
            logits.view(-1, VOCAB), batch.tgt_out.view(-1), ignore_index=PAD
        )
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    assert losses[-1] < 0.3 * losses[0]


def test_tied_embeddings_share_one_tensor():
    model = tiny(tie_embeddings=True)
    assert model.decoder.output.weight is model.decoder.embed.weight


def test_all_three_embeddings_can_share_one_tensor():
    model = tiny(tie_embeddings=True, tie_source_embedding=True)
    assert model.encoder.embed.weight is model.decoder.output.weight
    vocab_sized = [p for p in model.parameters() if p.shape == (VOCAB, 8)]
    assert len(vocab_sized) == 1  # parameters() lists a shared tensor once


@pytest.mark.parametrize("pool", ["max", "mean"])
def test_pooled_context_sits_beside_the_final_states(pool):
    """The pooled half of the context is the max or mean of the real positions only."""
    model = tiny(context_pool=pool, attention="general").eval()
    batch = source_batch(SRC)
    outputs, context = model.encoder(batch.src_tokens, batch.src_lengths)
    assert context.shape == (3, 4 * 16)  # final states of both directions, then the pool
    final = tiny().eval().encoder(batch.src_tokens, batch.src_lengths)[1]
    assert torch.allclose(context[:, :32], final, atol=1e-6)  # same seed, same final states
    for row, length in enumerate(batch.src_lengths.tolist()):
        real = outputs[row, :length]
        expected = real.max(dim=0).values if pool == "max" else real.mean(dim=0)
        assert torch.allclose(context[row, 32:], expected, atol=1e-6)
    logits = model(batch.src_tokens, batch.src_lengths, pair_batch(SRC, TGT).tgt_in)
    assert logits.shape == (3, 4, VOCAB)


def test_tied_tables_are_read_scaled_by_sqrt_dim():
    model = tiny(tie_embeddings=True, tie_source_embedding=True).eval()
    assert model.decoder.embed_scale == model.encoder.embed_scale == 8**0.5
    unscaled = tiny(tie_embeddings=True, scale_embeddings=False)
    assert unscaled.decoder.embed_scale == 1.0 and tiny().decoder.embed_scale == 1.0


def test_reverse_padded_keeps_padding_in_place():
    tokens = torch.tensor([[5, 6, 7, 3], [8, 3, 0, 0]])
    assert reverse_padded(tokens, torch.tensor([4, 2])).tolist() == [[3, 7, 6, 5], [3, 8, 0, 0]]


def test_the_encoder_can_be_narrower_than_the_decoder():
    """enc_hidden_dim sets the encoder's state per direction (OpenNMT-py's 2 x 256 under a
    512-wide decoder); the context and the attended outputs follow its width."""
    model = tiny(enc_hidden_dim=8, attention="general", context_pool="mean").eval()
    assert model.encoder.layers[0][0].hidden_size == 8 and model.encoder.out_dim == 16
    batch = pair_batch(SRC, TGT)
    outputs, context = model.encoder(batch.src_tokens, batch.src_lengths)
    assert outputs.shape == (3, 6, 16) and context.shape == (3, 32)
    assert model.decoder.init_state(model.encode(batch.src_tokens, batch.src_lengths)).shape == (
        3,
        1,
        16,
    )
    assert model(batch.src_tokens, batch.src_lengths, batch.tgt_in).shape == (3, 4, VOCAB)
