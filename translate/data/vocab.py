"""SentencePiece subword vocabularies: training, loading, encoding and decoding.

The special ids live here and nowhere else: every model and search uses these constants.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from pathlib import Path

import sentencepiece as spm
import torch

from ..errors import UserError

PAD, UNK, BOS, EOS = 0, 1, 2, 3
FEW_LINES = 16  # fewer lines than this are encoded without SentencePiece's threads


class Vocab:
    """A loaded SentencePiece model that maps text to ids and back."""

    def __init__(self, model_proto: bytes, threads: int = -1):
        """``threads``: how many threads encode a list of lines (-1: one per core)."""
        self.processor = spm.SentencePieceProcessor(model_proto=model_proto, num_threads=threads)
        self.model_proto = model_proto
        self._scores: torch.Tensor | None = None  # piece log-probabilities, for sampling

    @classmethod
    def load(cls, path: str | Path) -> Vocab:
        """Load a ``.model`` file written by :func:`train_vocab`."""
        path = Path(path)
        data = path.read_bytes()
        try:
            return cls(data)
        except RuntimeError as err:
            raise ValueError(f"{path} is not a SentencePiece model ({err})") from None

    def __len__(self) -> int:
        return self.processor.get_piece_size()

    def encode(self, lines: list[str]) -> list[list[int]]:
        """Subword ids of each line, without BOS/EOS. Fewer than ``FEW_LINES`` lines are encoded
        one by one: the threads SentencePiece starts for a list cost more than they save there
        (translating one sentence at a time, about 5% of the time)."""
        if len(lines) < FEW_LINES:
            return [self.processor.encode(line, out_type=int) for line in lines]
        return self.processor.encode(lines, out_type=int)

    def nbest(self, lines: list[str], n: int) -> list[list[list[int]]]:
        """Up to ``n`` best segmentations of each line, best first (unigram models only)."""
        return self.processor.nbest_encode(lines, out_type=int, nbest_size=n)

    def piece_scores(self) -> list[float]:
        """Each piece's log-probability under the unigram model."""
        return [self.processor.get_score(i) for i in range(len(self))]

    def sample(
        self, lines: list[str], alpha: float, generator: torch.Generator, n: int = 16
    ) -> list[list[int]]:
        """One segmentation of each line, drawn from its ``n`` best with probability
        ~ P(segmentation) ** alpha (subword regularisation, Kudo 2018; unigram models).

        SentencePiece's own sampler cannot be re-seeded across processes, so a resumed run
        could not redraw what it drew before; here the n-best lists are deterministic and the
        draw (Gumbel-max) uses the seeded ``generator``."""
        if self._scores is None:
            self._scores = torch.tensor(self.piece_scores())
        nbest = [candidates or [[]] for candidates in self.nbest(lines, n)]  # "": no pieces
        flat = [ids for candidates in nbest for ids in candidates]
        lengths = torch.tensor([len(ids) for ids in flat])
        owner = torch.repeat_interleave(torch.arange(len(flat)), lengths)
        pieces = torch.tensor([i for ids in flat for i in ids], dtype=torch.long)
        scores = torch.zeros(len(flat)).index_add_(0, owner, self._scores[pieces])
        gumbel = -torch.log(-torch.log(torch.rand(len(flat), generator=generator)))
        keys = (alpha * scores + gumbel).split([len(candidates) for candidates in nbest])
        return [candidates[int(k.argmax())] for candidates, k in zip(nbest, keys)]

    def decode(self, ids: list[int]) -> str:
        """Detokenized text of ids; special ids are ignored."""
        return self.processor.decode([i for i in ids if i > EOS])

    def piece(self, id: int) -> str:
        """The piece an id stands for, as SentencePiece writes it (``▁word``, ``</s>``)."""
        return self.processor.id_to_piece(id)


def train_vocab(
    sentences: Iterable[str],
    vocab_size: int,
    model_type: str = "unigram",
    character_coverage: float = 1.0,
    sample_size: int = 1_000_000,
) -> Vocab:
    """Train a SentencePiece model in memory on ``sentences`` (empty lines are skipped)."""
    proto = io.BytesIO()
    try:
        _train(proto, sentences, vocab_size, model_type, character_coverage, sample_size)
    except RuntimeError as err:
        raise UserError(f"SentencePiece training failed: {err}") from None
    return Vocab(proto.getvalue())


def _train(proto, sentences, vocab_size, model_type, character_coverage, sample_size) -> None:
    spm.SentencePieceTrainer.train(
        sentence_iterator=(s for s in sentences if s.strip()),
        model_writer=proto,
        vocab_size=vocab_size,
        model_type=model_type,
        character_coverage=character_coverage,
        input_sentence_size=sample_size,
        shuffle_input_sentence=True,
        hard_vocab_limit=False,  # a small corpus may not support the requested size
        pad_id=PAD,
        unk_id=UNK,
        bos_id=BOS,
        eos_id=EOS,
        num_threads=1,
        minloglevel=2,
    )
