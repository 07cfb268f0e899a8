"""Preparing an experiment: filtering reports and subword sampling."""

import pytest
import torch

from tests.conftest import tiny_config
from translate.config import UserError
from translate.prepare import Segmentations, prepare
from translate.train import train


def test_subword_sampling_is_seeded_and_keeps_the_text(word_corpus, tmp_path):
    from tests.conftest import tiny_config

    data = prepare(tiny_config(word_corpus, f"out_dir={tmp_path}"), log=lambda message: None)
    lines = data.train_src_text[:300] + [""]
    sampler = Segmentations(data.src_vocab, lines)

    def draw(alpha, seed):
        return sampler.draw(alpha, torch.Generator().manual_seed(seed))

    fixed = data.src_vocab.encode(lines)
    assert draw(0.5, 3) == draw(0.5, 3)  # same seed, same segmentation
    assert draw(0.5, 3) != draw(0.5, 4)
    assert draw(0.1, 3) != fixed  # sampling changes some segmentations...
    decode = data.src_vocab.processor.decode
    assert [decode(ids) for ids in draw(0.1, 3)] == lines  # ...never the text
    assert draw(1000.0, 3) == fixed  # a large alpha always picks the best segmentation


def test_empty_corpus_after_filtering(tmp_path):
    (tmp_path / "t.de").write_text("a b c d e f g h\n" * 30)
    (tmp_path / "t.en").write_text("x\n" * 30)
    cfg = tiny_config(
        tmp_path,
        f"data.train={tmp_path / 't'}",
        "data.dev=",
        "data.max_ratio=1.5",
        "data.vocab_size=20",
    )
    with pytest.raises(UserError, match="no training pair is left after filtering"):
        train(cfg, log=lambda message: None)
