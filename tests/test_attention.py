"""Attention on top of the context vector: weights that skip padding, and what it buys."""

import random

import pytest
import torch

from tests.conftest import tiny_model as tiny
from translate.data.batches import pair_batch
from translate.data.vocab import PAD

SRC = [[5, 6, 7], [8, 9], [10, 11, 12, 13, 14]]
TGT = [[6, 7], [9, 10, 11], [12]]


@pytest.mark.parametrize("score", ["dot", "general", "additive"])
@pytest.mark.parametrize("step", ["after", "before"])
def test_attention_weights_sum_to_one_and_skip_padding(score, step):
    model = tiny(attention=score, attention_step=step, bidirectional=(score != "dot")).eval()
    batch = pair_batch(SRC, TGT)
    memory = model.encode(batch.src_tokens, batch.src_lengths)
    logits, weights = model.decoder(batch.tgt_in, model.init_state(memory), memory)
    assert weights.shape == (3, 4, 6)  # (batch, tgt_len, src_len)
    assert torch.allclose(weights.sum(-1), torch.ones(3, 4), atol=1e-5)
    padding = batch.src_tokens == PAD
    assert torch.all(weights.masked_select(padding.unsqueeze(1).expand_as(weights)) == 0)
    # the padded sentence gets the same logits as when it is alone in its batch
    alone = pair_batch([SRC[1]], [TGT[1]])
    memory1 = model.encode(alone.src_tokens, alone.src_lengths)
    logits1, _ = model.decoder(alone.tgt_in, model.init_state(memory1), memory1)
    assert torch.allclose(logits1[0], logits[1, : logits1.size(1)], atol=1e-5)


def reversal_corpus(folder, n, seed):
    """Sequences of 6-9 letters and their reversal: every output word depends on one input word
    far away, which a single context vector carries badly and attention finds directly."""
    rng = random.Random(seed)
    letters = "a b c d e f g h i j k l".split()
    for split, count in (("train", n), ("dev", 60)):
        src, tgt = [], []
        for _ in range(count):
            words = [rng.choice(letters) for _ in range(rng.randint(6, 9))]
            src.append(" ".join(words))
            tgt.append(" ".join(reversed(words)))
        (folder / f"{split}.de").write_text("\n".join(src) + "\n")
        (folder / f"{split}.en").write_text("\n".join(tgt) + "\n")


def test_attention_beats_the_context_vector_on_reversal(tmp_path):
    from tests.conftest import tiny_config
    from translate.score import score
    from translate.train.loop import train
    from translate.translator import Translator

    reversal_corpus(tmp_path, 3000, seed=5)
    dev_src = (tmp_path / "dev.de").read_text().splitlines()
    dev_ref = (tmp_path / "dev.en").read_text().splitlines()
    bleu = {}
    for attention in ("none", "general"):
        cfg = tiny_config(
            tmp_path,
            f"out_dir={tmp_path / attention}",
            f"model.attention={attention}",
            "train.max_epochs=6",
            "train.batch_tokens=600",
            "model.bidirectional=true",
            "train.valid_bleu_sentences=0",
        )
        train(cfg, log=lambda message: None)
        hyps = Translator.from_dir(tmp_path / attention).translate(dev_src, beam=1)
        bleu[attention] = score(hyps, dev_ref)["bleu"]
    assert bleu["general"] > 80, bleu
    assert bleu["general"] - bleu["none"] > 20, bleu
