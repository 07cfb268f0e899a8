"""Shared fixtures: a tiny word-substitution corpus, a model trained on it in seconds, and
seeded untrained models."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

from translate.config import ModelConfig, load_config
from translate.model.seq2seq import Seq2Seq, build_model
from translate.train.loop import train

GERMAN = "haus hund katze baum auto buch tisch stuhl".split()
ENGLISH = dict(zip(GERMAN, "house dog cat tree car book table chair".split()))


def write_word_corpus(folder: Path, n_train: int = 2000, n_dev: int = 60, seed: int = 0) -> None:
    """Sentences of 1-6 German nouns and their English words: learnable in a few seconds."""
    rng = random.Random(seed)
    for split, n in (("train", n_train), ("dev", n_dev)):
        de, en = [], []
        for _ in range(n):
            words = [rng.choice(GERMAN) for _ in range(rng.randint(1, 6))]
            de.append(" ".join(words))
            en.append(" ".join(ENGLISH[w] for w in words))
        (folder / f"{split}.de").write_text("\n".join(de) + "\n", encoding="utf-8")
        (folder / f"{split}.en").write_text("\n".join(en) + "\n", encoding="utf-8")


def tiny_config(folder: Path, *overrides: str):
    """A config for a model with 32-64 dims on the word corpus in ``folder``."""
    return load_config(
        None,
        [
            f"out_dir={folder / 'model'}",
            f"data.train={folder / 'train'}",
            f"data.dev={folder / 'dev'}",
            "data.vocab_size=40",
            "model.emb_dim=32",
            "model.hidden_dim=64",
            "model.dropout=0.0",
            "train.batch_tokens=400",
            "train.lr=0.005",
            "train.max_epochs=8",
            "train.valid_every=1000",
            "train.threads=1",
            "decode.batch_size=16",
            *overrides,
        ],
    )


def tiny_model(cell: str = "gru", vocab: int = 20, **changes) -> Seq2Seq:
    """A seeded model with 8-wide embeddings and a 16-wide state."""
    torch.manual_seed(0)
    cfg = ModelConfig(cell=cell, emb_dim=8, hidden_dim=16, dropout=0.0, **changes)
    return build_model(cfg, vocab, vocab)


@pytest.fixture(scope="session")
def word_corpus(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("words")
    write_word_corpus(folder)
    return folder


@pytest.fixture(scope="session")
def trained_dir(word_corpus) -> Path:
    """A model directory trained on the word corpus (a few seconds on one thread)."""
    torch.manual_seed(0)
    return train(tiny_config(word_corpus), log=lambda message: None)


@pytest.fixture(scope="session")
def attention_dir(word_corpus, tmp_path_factory) -> Path:
    """A model directory with general attention, trained on the word corpus."""
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("attention") / "model"
    return train(
        tiny_config(word_corpus, f"out_dir={out}", "model.attention=general"), log=lambda m: None
    )
