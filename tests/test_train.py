import math

import pytest
import torch

from translate.config import TrainConfig
from translate.train import schedule


def factor(step, total=100, elapsed=0.0, **changes):
    return schedule(TrainConfig(**changes), {"step": step - 1}, total, elapsed)


def test_constant_schedule_is_one_after_warmup():
    assert factor(1, warmup_steps=4) == pytest.approx(0.25)
    assert factor(4, warmup_steps=4) == 1.0
    assert factor(90) == 1.0


def test_cosine_anneals_to_zero_over_the_steps():
    values = [factor(step, lr_schedule="cosine") for step in (1, 50, 100)]
    assert values == pytest.approx([0.5 * (1 + math.cos(math.pi / 100)), 0.5, 0.0])


def test_cosine_follows_the_clock_when_the_clock_ends_first():
    # step 10 of 100, but 45 of 60 seconds gone: three quarters of the way
    value = factor(10, elapsed=45.0, lr_schedule="cosine", max_minutes=1.0)
    assert value == pytest.approx(0.5 * (1 + math.cos(0.75 * math.pi)))
    assert factor(10, elapsed=99.0, lr_schedule="cosine", max_minutes=1.0) == 0.0


def test_warmup_scales_the_cosine():
    assert factor(2, warmup_steps=4, lr_schedule="cosine") == pytest.approx(
        0.5 * 0.5 * (1 + math.cos(math.pi * 2 / 100))
    )


def test_subword_sampling_is_seeded_and_keeps_the_text(word_corpus, tmp_path):
    from tests.conftest import tiny_config
    from translate.prepare import Segmentations, prepare

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


def test_sampling_alpha_is_checked():
    from translate.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="sampling_alpha"):
        load_config(None, ["data.sampling_alpha=-1"])
    with pytest.raises(ConfigError, match="unigram"):
        load_config(None, ["data.spm_type=bpe", "data.sampling_alpha=0.1"])
