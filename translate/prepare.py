"""Preparing an experiment directory: SentencePiece model(s) and cached, filtered subword ids."""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

import torch

from .config import Config
from .data import DataError, FilterReport, filter_pairs, read_parallel
from .modeldir import CACHE, atomic_save, atomic_write, load_tensors, vocab_paths
from .vocab import Vocab, train_vocab

CACHE_VERSION = 2  # 2: the kept pairs' line numbers are cached too


@dataclass
class Prepared:
    """What training needs: vocabularies, filtered training ids and the dev set."""

    src_vocab: Vocab
    tgt_vocab: Vocab
    train_src: list[list[int]]
    train_tgt: list[list[int]]
    train_src_text: list[str]  # the kept pairs' text, for a sampled segmentation per epoch
    train_tgt_text: list[str]
    dev_src: list[str]
    dev_tgt: list[str]
    dev_src_ids: list[list[int]]  # encoded once, for every validation
    dev_tgt_ids: list[list[int]]
    report: FilterReport


def _vocabularies(cfg: Config, src: list[str], tgt: list[str], log) -> tuple[Vocab, Vocab]:
    src_path, tgt_path = vocab_paths(cfg.out_dir, cfg.data.joint_vocab)
    if src_path.is_file() and tgt_path.is_file():
        log(f"using SentencePiece model(s) in {cfg.out_dir}")
        return Vocab.load(src_path), Vocab.load(tgt_path)
    d = cfg.data
    options = dict(
        vocab_size=d.vocab_size,
        model_type=d.spm_type,
        character_coverage=d.character_coverage,
        sample_size=d.spm_sample_size,
    )
    if d.joint_vocab:
        log(f"training a joint {d.spm_type} SentencePiece model ({d.vocab_size} pieces)")
        vocab = train_vocab(src + tgt, **options)
        atomic_write(src_path, vocab.model_proto)
        return vocab, vocab
    log(f"training {d.spm_type} SentencePiece models ({d.vocab_size} pieces each)")
    src_vocab, tgt_vocab = train_vocab(src, **options), train_vocab(tgt, **options)
    atomic_write(src_path, src_vocab.model_proto)
    atomic_write(tgt_path, tgt_vocab.model_proto)
    return src_vocab, tgt_vocab


def _flatten(seqs: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.tensor([len(s) for s in seqs], dtype=torch.long)
    flat = torch.tensor([i for s in seqs for i in s], dtype=torch.int32)
    return flat, lengths


def _unflatten(flat: torch.Tensor, lengths: torch.Tensor) -> list[list[int]]:
    return [chunk.tolist() for chunk in flat.split(lengths.tolist())]


def prepare(cfg: Config, log=print) -> Prepared:
    """Train (or reuse) the SentencePiece model(s) and encode and filter the training data.

    Encoded ids are cached in ``out_dir/cache.pt``, keyed by the text, the vocabularies and the
    filter settings, so a second run (or a resumed one) skips the encoding.
    """
    d = cfg.data
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    src, tgt = read_parallel(d.train, d.src_lang, d.tgt_lang, d.replace_bad_utf8)
    if not src:
        raise DataError(f"training data '{d.train}' is empty")
    dev_src, dev_tgt = (
        read_parallel(d.dev, d.src_lang, d.tgt_lang, d.replace_bad_utf8) if d.dev else ([], [])
    )
    src_vocab, tgt_vocab = _vocabularies(cfg, src, tgt, log)
    dev = (dev_src, dev_tgt, src_vocab.encode(dev_src), tgt_vocab.encode(dev_tgt))

    digest = hashlib.sha256()
    for part in (
        src_vocab.model_proto,
        tgt_vocab.model_proto,
        "\n".join(src),
        "\x00",
        "\n".join(tgt),
        f"{d.max_len} {d.max_ratio} {CACHE_VERSION}",
    ):
        digest.update(part.encode("utf-8") if isinstance(part, str) else part)
    key = digest.hexdigest()
    cache_path = out / CACHE
    if cache_path.is_file():
        cache = load_tensors(cache_path)
        if cache.get("key") == key:
            report = FilterReport(**cache["report"])
            log(f"using cached ids in {cache_path}: {report.summary()}")
            keep = cache["keep"].tolist()
            return Prepared(
                src_vocab,
                tgt_vocab,
                _unflatten(*cache["src"]),
                _unflatten(*cache["tgt"]),
                [src[i] for i in keep],
                [tgt[i] for i in keep],
                *dev,
                report,
            )

    src_ids, tgt_ids = src_vocab.encode(src), tgt_vocab.encode(tgt)
    keep, report = filter_pairs(src_ids, tgt_ids, d.max_len, d.max_ratio)
    log(f"training data: {report.summary()}")
    if not keep:
        raise DataError(
            f"no training pair is left after filtering ({report.summary()}); "
            "check data.max_len and data.max_ratio"
        )
    src_ids, tgt_ids = [src_ids[i] for i in keep], [tgt_ids[i] for i in keep]
    cache = {
        "key": key,
        "src": _flatten(src_ids),
        "tgt": _flatten(tgt_ids),
        "keep": torch.tensor(keep, dtype=torch.int32),
        "report": vars(report),
    }
    atomic_save(cache, cache_path)
    src_text, tgt_text = [src[i] for i in keep], [tgt[i] for i in keep]
    return Prepared(src_vocab, tgt_vocab, src_ids, tgt_ids, src_text, tgt_text, *dev, report)


class Segmentations:
    """The ``n`` best segmentations of each training line, from which an epoch draws one
    (subword regularisation, Kudo 2018: P(segmentation) ~ P_unigram(segmentation) ** alpha).

    SentencePiece's own sampler cannot be re-seeded across processes, so a resumed run could
    not see the epoch it would have seen; here the n-best lists are deterministic and the draw
    uses a seeded torch generator. Kept flat in tensors: the nested lists would be ~10x larger.
    """

    def __init__(self, vocab: Vocab, lines: list[str], n: int = 16):
        scores = torch.tensor(vocab.piece_scores())
        flat, lengths, counts = [], [], []
        for start in range(0, len(lines), 2000):  # chunks: the nested lists are large
            for candidates in vocab.nbest(lines[start : start + 2000], n):
                candidates = candidates or [[]]  # an empty line has no segmentation
                counts.append(len(candidates))
                for ids in candidates:
                    lengths.append(len(ids))
                    flat.extend(ids)
        self.flat = torch.tensor(flat, dtype=torch.long)
        self.lengths = torch.tensor(lengths)
        self.starts = torch.cumsum(self.lengths, 0) - self.lengths
        owner = torch.repeat_interleave(torch.arange(len(lengths)), self.lengths)
        self.scores = torch.zeros(len(lengths)).index_add_(0, owner, scores[self.flat])
        counts = torch.tensor(counts)
        first = torch.cumsum(counts, 0) - counts
        width = int(counts.max())
        slot = torch.arange(width).unsqueeze(0)
        self.valid = slot < counts.unsqueeze(1)  # (lines, width): which slots hold a candidate
        self.index = (first.unsqueeze(1) + slot).clamp(max=len(lengths) - 1)

    def draw(self, alpha: float, generator: torch.Generator) -> list[list[int]]:
        """One segmentation per line, drawn with probability ~ exp(alpha * log P)."""
        gumbel = -torch.log(-torch.log(torch.rand(self.index.shape, generator=generator)))
        keys = (alpha * self.scores[self.index] + gumbel).masked_fill(~self.valid, -math.inf)
        chosen = self.index.gather(1, keys.argmax(1, keepdim=True)).squeeze(1)
        lengths = self.lengths[chosen]
        # output position i of a chosen segmentation reads flat[start + i - its output offset]
        shift = self.starts[chosen] - (torch.cumsum(lengths, 0) - lengths)
        index = torch.arange(int(lengths.sum())) + torch.repeat_interleave(shift, lengths)
        return _unflatten(self.flat[index], lengths)
