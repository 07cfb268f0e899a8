"""SentencePiece vocabularies: subword sampling from the n-best segmentations."""

import torch

from translate.data.corpus import read_lines


def test_subword_sampling_is_seeded_and_keeps_the_text(trained_dir, word_corpus):
    from translate.data.vocab import Vocab

    vocab = Vocab.load(trained_dir / "spm.model")
    lines = read_lines(word_corpus / "train.de")[:300] + [""]

    def draw(alpha, seed):
        return vocab.sample(lines, alpha, torch.Generator().manual_seed(seed))

    fixed = vocab.encode(lines)
    assert draw(0.5, 3) == draw(0.5, 3)  # same seed, same segmentation
    assert draw(0.5, 3) != draw(0.5, 4)
    assert draw(0.1, 3) != fixed  # sampling changes some segmentations...
    assert [vocab.processor.decode(ids) for ids in draw(0.1, 3)] == lines  # ...never the text
    assert draw(1000.0, 3) == fixed  # a large alpha always picks the best segmentation


def test_a_few_lines_are_encoded_as_many_are(trained_dir, word_corpus):
    """Below FEW_LINES lines each line is encoded alone, above as one threaded list: the same ids
    either way, for every line."""
    from translate.data.vocab import FEW_LINES, Vocab

    vocab = Vocab.load(trained_dir / "spm.model")
    lines = read_lines(word_corpus / "train.de")[:100] + ["", "Zürich?  ü"]
    many = vocab.encode(lines)
    assert len(lines) >= FEW_LINES and len(many) == len(lines)
    few = [
        ids for start in range(0, len(lines), 3) for ids in vocab.encode(lines[start : start + 3])
    ]
    assert few == many and [vocab.encode([line])[0] for line in lines] == many
    assert many[-2] == [] and all(isinstance(i, int) for ids in many for i in ids)
