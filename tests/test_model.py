import pytest
import torch

from translate.config import ModelConfig
from translate.data import pair_batch, source_batch
from translate.model import build_model, recur
from translate.search import beam_search, max_lengths
from translate.vocab import BOS, EOS, PAD

VOCAB = 20
SRC = [[5, 6, 7], [8, 9], [10, 11, 12, 13, 14]]
TGT = [[6, 7], [9, 10, 11], [12]]


def tiny(cell="gru", **changes) -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = ModelConfig(cell=cell, emb_dim=8, hidden_dim=16, dropout=0.0, **changes)
    return build_model(cfg, VOCAB, VOCAB)


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


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_written_out_layer_equals_torch_rnn(cell):
    """The decoder's first layer, written out over precomputed input gates, computes what
    nn.RNN/GRU/LSTM does with the same weights (float32, to 1e-5)."""
    torch.manual_seed(0)
    reference = getattr(torch.nn, cell.upper())(8, 16, batch_first=True)
    hidden = torch.nn.Linear(16, reference.weight_hh_l0.size(0))
    with torch.no_grad():
        hidden.weight.copy_(reference.weight_hh_l0)
        hidden.bias.copy_(reference.bias_hh_l0)
    inputs, h0 = torch.randn(3, 5, 8), torch.randn(1, 3, 16)
    gates = inputs @ reference.weight_ih_l0.T + reference.bias_ih_l0
    if cell == "lstm":
        c0 = torch.randn(1, 3, 16)
        expected, (h, c) = reference(inputs, (h0, c0))
        outputs, final = recur(cell, gates, torch.cat([h0, c0]).transpose(0, 1), hidden)
        assert torch.allclose(final, torch.cat([h, c]).transpose(0, 1), atol=1e-5)
    else:
        expected, h = reference(inputs, h0)
        outputs, final = recur(cell, gates, h0.transpose(0, 1), hidden)
        assert torch.allclose(final, h.transpose(0, 1), atol=1e-5)
    assert torch.allclose(outputs, expected, atol=1e-5)


@pytest.mark.parametrize("cell, layers, step", [("gru", 1, "after"), ("lstm", 3, "before")])
def test_checkpoints_of_one_decoder_rnn_still_load(cell, layers, step):
    """Weights saved when the decoder was one nn.RNN over [word; context; attended] load into
    the written-out first layer and give the same logits."""
    model = tiny(cell, dec_layers=layers, attention="general", attention_step=step).eval()
    state = model.state_dict()
    old = {k: v for k, v in state.items() if not k.startswith("decoder.rnn")}
    words = model.decoder.rnn_input.weight
    old["decoder.rnn.weight_ih_l0"] = torch.cat(
        [words[:, :8], model.decoder.rnn_context.weight, words[:, 8:]], dim=1
    )
    old["decoder.rnn.bias_ih_l0"] = model.decoder.rnn_context.bias
    old["decoder.rnn.weight_hh_l0"] = model.decoder.rnn_hidden.weight
    old["decoder.rnn.bias_hh_l0"] = model.decoder.rnn_hidden.bias
    for key, value in state.items():
        if key.startswith("decoder.rnn_upper."):
            name, layer = key.removeprefix("decoder.rnn_upper.").rsplit("_l", 1)
            old[f"decoder.rnn.{name}_l{int(layer) + 1}"] = value
    torch.manual_seed(1)
    loaded = build_model(model.cfg, VOCAB, VOCAB).eval()
    loaded.load_state_dict(old)
    batch = pair_batch(SRC, TGT)
    expected = model(batch.src_tokens, batch.src_lengths, batch.tgt_in)
    assert torch.equal(loaded(batch.src_tokens, batch.src_lengths, batch.tgt_in), expected)


def test_targets_are_shifted_by_one():
    batch = pair_batch(SRC, TGT)
    assert batch.tgt_in[0].tolist() == [BOS, 6, 7, PAD]
    assert batch.tgt_out[0].tolist() == [6, 7, EOS, PAD]
    assert batch.n_tgt_tokens == 2 + 3 + 1 + 3


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
def test_fused_decoder_equals_step_by_step(cell, attention, step):
    """Teacher-forced logits (all steps in one pass where possible) match the search's step
    function to 1e-5, the float32 rounding of a different summation order."""
    model = tiny(cell, dec_layers=2, attention=attention, attention_step=step).eval()
    batch = pair_batch(SRC, TGT)
    fused = model(batch.src_tokens, batch.src_lengths, batch.tgt_in).log_softmax(-1)
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


def test_clipping_keeps_the_norm_at_the_threshold():
    model = tiny()
    batch = pair_batch(SRC, TGT)
    logits = model(batch.src_tokens, batch.src_lengths, batch.tgt_in)
    loss = 1000 * torch.nn.functional.cross_entropy(logits.view(-1, VOCAB), batch.tgt_out.view(-1))
    loss.backward()
    before = torch.nn.utils.clip_grad_norm_(model.parameters(), 0.5)
    after = torch.norm(torch.stack([p.grad.norm() for p in model.parameters()]))
    assert before > 0.5
    assert after == pytest.approx(0.5, rel=1e-4)


def test_search_score_is_the_models_score(trained_dir):
    """Re-scoring the beam's output with teacher forcing gives the log-prob the search reported."""
    from translate.translate import Translator

    translator = Translator.from_dir(trained_dir, device="cpu")  # CPU tensors below
    model = translator.model
    sources = translator.src_vocab.encode(["hund katze", "haus baum baum", "stuhl"])
    src = source_batch(sources)
    hyps = beam_search(
        model,
        src.src_tokens,
        src.src_lengths,
        max_lengths(src.src_lengths, 2.0, 10),
        beam=3,
        alpha=0.0,
    )
    for source, (best, *_) in zip(sources, hyps):
        pair = pair_batch([source], [best.tokens])
        log_probs = model(pair.src_tokens, pair.src_lengths, pair.tgt_in).log_softmax(-1)[0]
        rescored = log_probs.gather(1, pair.tgt_out[0].unsqueeze(1)).sum()
        assert float(rescored) == pytest.approx(best.log_prob, abs=1e-4)


def test_tied_embeddings_share_one_tensor():
    model = tiny(tie_embeddings=True)
    assert model.decoder.output.weight is model.decoder.embed.weight


@pytest.mark.parametrize("score", ["dot", "general", "additive"])
@pytest.mark.parametrize("step", ["after", "before"])
def test_attention_weights_sum_to_one_and_skip_padding(score, step):
    model = tiny(attention=score, attention_step=step, bidirectional=(score != "dot")).eval()
    batch = pair_batch(SRC, TGT)
    memory = model.encode(batch.src_tokens, batch.src_lengths)
    logits, weights = model.decoder.teacher_forced(batch.tgt_in, model.init_state(memory), memory)
    assert weights.shape == (3, 4, 6)  # (batch, tgt_len, src_len)
    assert torch.allclose(weights.sum(-1), torch.ones(3, 4), atol=1e-5)
    padding = batch.src_tokens == PAD
    assert torch.all(weights.masked_select(padding.unsqueeze(1).expand_as(weights)) == 0)
    # the padded sentence gets the same logits as when it is alone in its batch
    alone = pair_batch([SRC[1]], [TGT[1]])
    memory1 = model.encode(alone.src_tokens, alone.src_lengths)
    logits1 = model.decoder(alone.tgt_in, model.init_state(memory1), memory1)
    assert torch.allclose(logits1[0], logits[1, : logits1.size(1)], atol=1e-5)


def test_dot_attention_needs_equal_sizes():
    from translate.config import ConfigError, config_from_dict

    with pytest.raises(ConfigError, match="'general' or a unidirectional encoder"):
        config_from_dict({"model": {"attention": "dot", "bidirectional": True}})


def test_all_three_embeddings_can_share_one_tensor():
    model = tiny(tie_embeddings=True, tie_source_embedding=True)
    assert model.encoder.embed.weight is model.decoder.output.weight
    vocab_sized = [p for p in model.parameters() if p.shape == (VOCAB, 8)]
    assert len(vocab_sized) == 1  # parameters() lists a shared tensor once


def test_source_tying_needs_a_joint_vocabulary():
    from translate.config import ConfigError, config_from_dict

    with pytest.raises(ConfigError, match="needs 'model.tie_embeddings' and 'data.joint_vocab'"):
        config_from_dict(
            {
                "model": {"tie_embeddings": True, "tie_source_embedding": True},
                "data": {"joint_vocab": False},
            }
        )


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
