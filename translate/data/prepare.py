"""Preparing an experiment directory: the SentencePiece model(s), and the training corpora
encoded into Arrow shards that training memory-maps, streamed so that no corpus is ever held
in memory.

Each corpus is read twice: once to draw a bounded random sample for SentencePiece (skipped
when the models exist), once to encode (:mod:`translate.data.shards`).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
from collections.abc import Iterable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

from ..config import Config, DataConfig
from ..modeldir import CACHE, PREPARED, atomic_write, vocab_paths
from . import outdir
from .corpus import (
    DataError,
    FilterReport,
    RawLines,
    corpus_files,
    pair_chunks,
    read_pairs,
)
from .shards import encode_corpora
from .trainset import MANIFEST, TrainSet
from .vocab import Vocab, train_vocab

FORMAT = 1  # of prepared/; a manifest of another format is prepared again
CHUNK_PAIRS = 20_000  # pairs a worker encodes at a time


@dataclass
class Prepared:
    """What training needs: vocabularies, the memory-mapped training set and the dev set."""

    src_vocab: Vocab
    tgt_vocab: Vocab
    train: TrainSet
    dev_src: list[str]
    dev_tgt: list[str]
    dev_src_ids: list[list[int]]  # encoded once, for every validation
    dev_tgt_ids: list[list[int]]


def prepare(
    cfg: Config,
    log=print,
    workers: int = 0,
    chunk_pairs: int = CHUNK_PAIRS,
    lock: bool = True,
) -> Prepared:
    """Train (or reuse) the SentencePiece model(s), and encode and filter the training corpora
    into ``out_dir/prepared`` (or reuse it when it was made from the same files and settings).
    ``workers`` encoding processes (0: one per core).

    With ``train.init_from`` the SentencePiece model(s) are the parent's, copied.

    It holds out_dir's lock (``lock=False``: the caller holds it) and writes nothing before
    every check that can refuse has passed: a directory in use, a checkpoint of another
    experiment, a parent that cannot serve, data that cannot be used."""
    if not cfg.data.train:
        raise DataError("no training data given (set data.train)")
    with outdir.hold(cfg.out_dir) if lock else nullcontext():
        outdir.check_same_experiment(cfg)
        outdir.check_parent(cfg)
        return _prepare(cfg, log, workers, chunk_pairs)


def _prepare(cfg: Config, log, workers: int, chunk_pairs: int) -> Prepared:
    d = cfg.data
    out = Path(cfg.out_dir)
    dev_src, dev_tgt = [], []
    if d.dev:  # read first: a dev set that cannot be read refuses the run before any write
        pairs = list(read_pairs(d.dev, d.src_lang, d.tgt_lang, d.replace_bad_utf8))
        dev_src, dev_tgt = [s for s, _ in pairs], [t for _, t in pairs]
    src_vocab, tgt_vocab, trained = _vocabularies(cfg, log)
    key = _key(d, src_vocab, tgt_vocab)
    folder = out / PREPARED
    if _manifest(folder).get("key") != key:
        if (out / CACHE).is_file():
            log(
                f"{out / CACHE} was written by an older translate; the training data is encoded "
                f"again into {folder} with the same SentencePiece model(s) (cache.pt can go)"
            )
        workers = workers or len(os.sched_getaffinity(0))
        chunks = _chunks(d, chunk_pairs)
        encode_corpora(
            d, chunks, src_vocab, tgt_vocab, folder, {"format": FORMAT, "key": key}, workers, log
        )
    if trained:  # saved once the data they encode has passed its checks
        paths = vocab_paths(out, d.joint_vocab)
        for path, vocab in dict(zip(paths, (src_vocab, tgt_vocab))).items():  # joint: once
            atomic_write(path, vocab.model_proto)
    train = TrainSet(folder)
    for corpus in train.corpora if len(train.corpora) > 1 else []:
        log(f"{corpus['path']}: {FilterReport(**corpus['report']).summary()}")
    log(f"training data in {folder}: {train.report.summary()}")
    if cfg.train.init_from:  # the parent's pieces may not cover the new text
        (src_unk, src_all), (tgt_unk, tgt_all) = train.unknown_pieces()
        log(
            f"unknown pieces (<unk>) in the training data with {cfg.train.init_from}'s "
            f"SentencePiece model(s): {_share(tgt_unk, tgt_all)} of the target pieces, "
            f"{_share(src_unk, src_all)} of the source pieces"
        )
    return Prepared(
        src_vocab,
        tgt_vocab,
        train,
        dev_src,
        dev_tgt,
        src_vocab.encode(dev_src),
        tgt_vocab.encode(dev_tgt),
    )


def _share(part: int, whole: int) -> str:
    return f"{part} of {whole} ({100 * part / max(whole, 1):.2f}%)"


def _manifest(folder: Path) -> dict:
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return manifest if manifest.get("format") == FORMAT else {}


def _key(d: DataConfig, src_vocab: Vocab, tgt_vocab: Vocab) -> str:
    """What the prepared data depends on: the corpora's bytes (or hub names), the vocabularies
    and the filter settings; the corpora's weights only matter when drawing epochs."""
    digest = hashlib.sha256()
    settings = [d.src_lang, d.tgt_lang, d.max_len, d.max_ratio, d.replace_bad_utf8]
    settings.append(bool(d.sampling_alpha))  # the text is kept for sampling
    digest.update(json.dumps(settings).encode())
    digest.update(src_vocab.model_proto + tgt_vocab.model_proto)
    for corpus in d.train:
        digest.update(corpus.path.encode())
        for path in corpus_files(corpus.path, d.src_lang, d.tgt_lang):
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 22), b""):
                    digest.update(block)
    return digest.hexdigest()


# --- SentencePiece ----------------------------------------------------------------------------


def _vocabularies(cfg: Config, log) -> tuple[Vocab, Vocab, bool]:
    """The SentencePiece model(s) in ``out_dir``, else those of ``train.init_from``, else
    trained on a random sample of the corpora; and whether they are new to ``out_dir`` (then
    saved once the data they encode has passed its checks)."""
    d = cfg.data
    src_path, tgt_path = vocab_paths(cfg.out_dir, d.joint_vocab)
    if src_path.is_file() and tgt_path.is_file():
        log(f"using SentencePiece model(s) in {cfg.out_dir}")
        return Vocab.load(src_path), Vocab.load(tgt_path), False
    if cfg.train.init_from:
        src_path, tgt_path = vocab_paths(cfg.train.init_from, d.joint_vocab)
        src_vocab = Vocab.load(src_path)
        tgt_vocab = src_vocab if d.joint_vocab else Vocab.load(tgt_path)
        sizes = _sizes(src_vocab, tgt_vocab)
        log(f"using the SentencePiece model(s) of {cfg.train.init_from} ({sizes})")
        return src_vocab, tgt_vocab, True
    pairs = d.spm_sample_size // 2 if d.joint_vocab else d.spm_sample_size
    sample, total = _sample_pairs(_chunks(d, CHUNK_PAIRS), pairs, seed=cfg.train.seed)
    if not total:
        raise DataError("the training data is empty")
    which = "all" if len(sample) == total else f"a random sample of {len(sample)} of the"
    src = [s for _, s, _ in sample]
    tgt = [t for _, _, t in sample]
    for side, lines in (("source", src), ("target", tgt)):
        if not any(line.strip() for line in lines):  # SentencePiece would fail on no text
            raise DataError(
                f"the training data has no {side} text: {which} {total} pairs are blank there"
            )
    options = dict(
        vocab_size=d.vocab_size,
        model_type=d.spm_type,
        character_coverage=d.character_coverage,
        sample_size=d.spm_sample_size,
    )
    if d.joint_vocab:
        log(f"training a joint {d.spm_type} SentencePiece model on {which} {total} training pairs")
        src_vocab = tgt_vocab = train_vocab(src + tgt, **options)
    else:
        log(f"training {d.spm_type} SentencePiece models on {which} {total} training pairs")
        src_vocab, tgt_vocab = train_vocab(src, **options), train_vocab(tgt, **options)
    built = _sizes(src_vocab, tgt_vocab)
    fewer = len(src_vocab) < d.vocab_size or len(tgt_vocab) < d.vocab_size
    # hard_vocab_limit is off: a small corpus gives fewer pieces than data.vocab_size asks
    log(f"SentencePiece built {built}" + (f" (data.vocab_size {d.vocab_size})" if fewer else ""))
    return src_vocab, tgt_vocab, True


def _sizes(src_vocab: Vocab, tgt_vocab: Vocab) -> str:
    """The vocabulary size(s), as a log says them."""
    if src_vocab is tgt_vocab:
        return f"{len(src_vocab)} pieces"
    return f"{len(src_vocab)} source and {len(tgt_vocab)} target pieces"


def _sample_pairs(
    chunks: Iterable[tuple[int, RawLines | list[tuple[str, str]]]], size: int, seed: int
) -> tuple[list[tuple[int, str, str]], int]:
    """A uniform random sample of at most ``size`` (corpus, source, target) of the chunks' pairs,
    in their original order, and how many pairs there were. It jumps from one chosen pair to
    the next (Li's reservoir "Algorithm L"), so that only chosen pairs are decoded, and chunk
    boundaries do not change the sample: memory and work beyond reading bounded by ``size``."""
    rng = random.Random(seed)
    reservoir: list[tuple[int, tuple[int, str, str]]] = []  # (position, pair)
    total, weight, pick = 0, 1.0, size  # pick: the position to take next once it is full

    def draw() -> float:  # the largest of ``size`` uniform draws (taken in (0, 1])
        return math.exp(math.log(1.0 - rng.random()) / size)

    def jump() -> int:  # positions to the next pair taken
        return int(math.log(1.0 - rng.random()) / math.log1p(-weight)) + 1 if weight < 1 else 1

    for corpus, chunk in chunks:
        first, total = total, total + len(chunk)
        for index in range(min(size - len(reservoir), len(chunk))):
            reservoir.append((first + index, (corpus, *_pair(chunk, index))))
            if len(reservoir) == size:
                weight = draw()
                pick = size - 1 + jump()
        while len(reservoir) == size and pick < total:
            reservoir[rng.randrange(size)] = (pick, (corpus, *_pair(chunk, pick - first)))
            weight *= draw()
            pick += jump()
    reservoir.sort(key=lambda entry: entry[0])
    return [pair for _, pair in reservoir], total


def _pair(chunk: RawLines | list[tuple[str, str]], index: int) -> tuple[str, str]:
    """The ``index``-th pair of a chunk, decoded alone when the chunk holds raw lines."""
    return chunk[index] if isinstance(chunk, list) else chunk.pair(index)


def _chunks(d: DataConfig, size: int) -> Iterator[tuple[int, RawLines | list[tuple[str, str]]]]:
    """(corpus, chunk) for chunks of at most ``size`` pairs of each training corpus in turn."""
    for number, corpus in enumerate(d.train):
        for chunk in pair_chunks(corpus.path, d.src_lang, d.tgt_lang, d.replace_bad_utf8, size):
            yield number, chunk
