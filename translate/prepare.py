"""Preparing an experiment directory: the SentencePiece model(s), and the training corpora
encoded into Arrow shards that training memory-maps, streamed so that no corpus is ever held
in memory.

Each corpus is read twice: once to draw a bounded random sample for SentencePiece (skipped
when the models exist), once to encode. This process cuts the files into chunks of raw lines
and writes the shards; worker processes decode, encode and filter the chunks, with only a few
in flight. Shards are written into
``prepared.tmp/`` and renamed to ``prepared/`` once complete, after the manifest that says what
they hold: a failed or interrupted run leaves nothing a rerun could take for finished.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import multiprocessing
import os
import random
import shutil
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from .config import Config, DataConfig
from .data import (
    DataError,
    FilterReport,
    RawLines,
    corpus_files,
    filter_lengths,
    pair_chunks,
    read_pairs,
)
from .modeldir import CACHE, PREPARED, atomic_write, vocab_paths
from .trainset import MANIFEST, TrainSet
from .vocab import Vocab, train_vocab

FORMAT = 1  # of prepared/; a manifest of another format is prepared again
CHUNK_PAIRS = 20_000  # pairs a worker encodes at a time
SHARD_ROWS = 1_000_000  # rows per Arrow file


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


def prepare(cfg: Config, log=print, workers: int = 0, chunk_pairs: int = CHUNK_PAIRS) -> Prepared:
    """Train (or reuse) the SentencePiece model(s), and encode and filter the training corpora
    into ``out_dir/prepared`` (or reuse it when it was made from the same files and settings).
    ``workers`` encoding processes (0: one per core)."""
    d = cfg.data
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if not d.train:
        raise DataError("no training data given (set data.train)")
    src_vocab, tgt_vocab = _vocabularies(cfg, log)
    key = _key(d, src_vocab, tgt_vocab)
    folder = out / PREPARED
    if _manifest(folder).get("key") != key:
        if (out / CACHE).is_file():
            log(
                f"{out / CACHE} was written by an older translate; the training data is encoded "
                f"again into {folder} with the same SentencePiece model(s) (cache.pt can go)"
            )
        workers = workers or len(os.sched_getaffinity(0))
        _encode_corpora(d, src_vocab, tgt_vocab, folder, key, workers, chunk_pairs, log)
    train = TrainSet(folder)
    for corpus in train.corpora if len(train.corpora) > 1 else []:
        log(f"{corpus['path']}: {FilterReport(**corpus['report']).summary()}")
    log(f"training data in {folder}: {train.report.summary()}")
    dev_src, dev_tgt = [], []
    if d.dev:
        pairs = list(read_pairs(d.dev, d.src_lang, d.tgt_lang, d.replace_bad_utf8))
        dev_src, dev_tgt = [s for s, _ in pairs], [t for _, t in pairs]
    return Prepared(
        src_vocab,
        tgt_vocab,
        train,
        dev_src,
        dev_tgt,
        src_vocab.encode(dev_src),
        tgt_vocab.encode(dev_tgt),
    )


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


def _vocabularies(cfg: Config, log) -> tuple[Vocab, Vocab]:
    """The SentencePiece model(s) in ``out_dir``, trained first on a random sample of the
    corpora when they are not there yet."""
    d = cfg.data
    src_path, tgt_path = vocab_paths(cfg.out_dir, d.joint_vocab)
    if src_path.is_file() and tgt_path.is_file():
        log(f"using SentencePiece model(s) in {cfg.out_dir}")
        return Vocab.load(src_path), Vocab.load(tgt_path)
    pairs = d.spm_sample_size // 2 if d.joint_vocab else d.spm_sample_size
    sample, total = _sample_pairs(_chunks(d, CHUNK_PAIRS), pairs, seed=cfg.train.seed)
    if not total:
        raise DataError("the training data is empty")
    which = "all" if len(sample) == total else f"a random sample of {len(sample)} of the"
    options = dict(
        vocab_size=d.vocab_size,
        model_type=d.spm_type,
        character_coverage=d.character_coverage,
        sample_size=d.spm_sample_size,
    )
    src = [s for _, s, _ in sample]
    tgt = [t for _, _, t in sample]
    if d.joint_vocab:
        log(
            f"training a joint {d.spm_type} SentencePiece model ({d.vocab_size} pieces) on "
            f"{which} {total} training pairs"
        )
        vocab = train_vocab(src + tgt, **options)
        atomic_write(src_path, vocab.model_proto)
        return vocab, vocab
    log(
        f"training {d.spm_type} SentencePiece models ({d.vocab_size} pieces each) on {which} "
        f"{total} training pairs"
    )
    src_vocab, tgt_vocab = train_vocab(src, **options), train_vocab(tgt, **options)
    atomic_write(src_path, src_vocab.model_proto)
    atomic_write(tgt_path, tgt_vocab.model_proto)
    return src_vocab, tgt_vocab


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


# --- encoding ---------------------------------------------------------------------------------


def _encode_corpora(
    d: DataConfig,
    src_vocab: Vocab,
    tgt_vocab: Vocab,
    folder: Path,
    key: str,
    workers: int,
    chunk_pairs: int,
    log,
) -> None:
    """Encode and filter every corpus into Arrow shards in ``folder``, atomically."""
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(folder, ignore_errors=True)
    tmp.mkdir()
    settings = (src_vocab.model_proto, tgt_vocab.model_proto, d.max_len, d.max_ratio)
    keep_text = bool(d.sampling_alpha)
    log(f"encoding the training data with {workers} worker process(es) into {folder}")
    writer = _ShardWriter(tmp, keep_text)
    reports = [FilterReport() for _ in d.train]
    lines = [0] * len(d.train)
    try:
        with _pool(workers, settings) as pool:
            pending: deque = deque()
            for corpus, chunk in _chunks(d, chunk_pairs):
                first = lines[corpus] + 1
                lines[corpus] += len(chunk)
                pending.append((corpus, pool.apply_async(_encode_chunk, (chunk, first, keep_text))))
                if len(pending) > 2 * workers:  # a bounded number of chunks in flight
                    _write_chunk(writer, reports, *pending.popleft())
            while pending:
                _write_chunk(writer, reports, *pending.popleft())
        corpora = writer.close(len(d.train))
        for number, corpus in enumerate(d.train):
            if not lines[number]:
                raise DataError(f"training corpus '{corpus.path}' is empty")
            if not reports[number].kept:
                raise DataError(
                    f"no pair of '{corpus.path}' is left after filtering "
                    f"({reports[number].summary()}); check data.max_len and data.max_ratio"
                )
            corpora[number].update(
                path=corpus.path, lines=lines[number], report=vars(reports[number])
            )
        manifest = {"format": FORMAT, "key": key, "corpora": corpora, "shards": writer.shards}
        atomic_write(tmp / MANIFEST, json.dumps(manifest, indent=1).encode())
        os.replace(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _chunks(d: DataConfig, size: int) -> Iterator[tuple[int, RawLines | list[tuple[str, str]]]]:
    """(corpus, chunk) for chunks of at most ``size`` pairs of each training corpus in turn."""
    for number, corpus in enumerate(d.train):
        for chunk in pair_chunks(corpus.path, d.src_lang, d.tgt_lang, d.replace_bad_utf8, size):
            yield number, chunk


def _write_chunk(writer: _ShardWriter, reports: list[FilterReport], corpus: int, result) -> None:
    batch, report = result.get()  # re-raises a worker's error here
    writer.write(corpus, batch)
    total = reports[corpus]
    for name, count in vars(report).items():
        setattr(total, name, getattr(total, name) + count)


_worker_vocabs: tuple[Vocab, Vocab] | None = None
_worker_limits: tuple[int, float] = (0, 0.0)


def _start_worker(
    src_proto: bytes, tgt_proto: bytes, max_len: int, max_ratio: float, threads: int = 1
) -> None:
    """Each worker process encodes on one core; with no workers, SentencePiece uses them all."""
    global _worker_vocabs, _worker_limits
    _worker_vocabs = (Vocab(src_proto, threads), Vocab(tgt_proto, threads))
    _worker_limits = (max_len, max_ratio)


class _pool:
    """A process pool whose workers hold the vocabularies (fork where the system has it, so
    they start at once), closed and joined on exit; with one worker, this process encodes."""

    def __init__(self, workers: int, settings: tuple):
        self.pool = None
        if workers == 1:
            _start_worker(*settings, threads=-1)
            return
        methods = multiprocessing.get_all_start_methods()
        context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
        self.pool = context.Pool(workers, initializer=_start_worker, initargs=settings)

    def __enter__(self):
        return self.pool or self

    def apply_async(self, function, args: tuple):
        """Runs at once in this process; ``get()`` returns the result."""
        result = function(*args)
        return _Done(result)

    def __exit__(self, *error):
        if self.pool is None:
            return
        if error[0] is None:
            self.pool.close()
        else:
            self.pool.terminate()
        self.pool.join()


@dataclass
class _Done:
    """A result computed already, read as a pool's pending results are."""

    value: object

    def get(self):
        return self.value


def _encode_chunk(chunk: RawLines | list[tuple[str, str]], first_line: int, keep_text: bool):
    """Decode (if needed), encode and filter one chunk: an Arrow record batch of the kept pairs
    and the filter report."""
    src_vocab, tgt_vocab = _worker_vocabs
    if isinstance(chunk, RawLines):
        src_text, tgt_text = chunk.sides()
    else:
        src_text, tgt_text = [s for s, _ in chunk], [t for _, t in chunk]
    src_ids, tgt_ids = src_vocab.encode(src_text), tgt_vocab.encode(tgt_text)
    src_len = np.fromiter(map(len, src_ids), dtype=np.int64, count=len(src_ids))
    tgt_len = np.fromiter(map(len, tgt_ids), dtype=np.int64, count=len(tgt_ids))
    keep, report = filter_lengths(src_len, tgt_len, *_worker_limits)
    wide = max(len(src_vocab), len(tgt_vocab)) > 1 << 16
    columns = {
        "line": pa.array(keep + first_line),
        "src": _id_lists(src_ids, src_len, keep, wide),
        "tgt": _id_lists(tgt_ids, tgt_len, keep, wide),
        "src_len": pa.array(src_len[keep].astype(np.uint16)),
        "tgt_len": pa.array(tgt_len[keep].astype(np.uint16)),
    }
    if keep_text:
        columns["src_text"] = pa.array([src_text[i] for i in keep], type=pa.string())
        columns["tgt_text"] = pa.array([tgt_text[i] for i in keep], type=pa.string())
    return pa.record_batch(columns), report


def _id_lists(ids: list[list[int]], lengths: np.ndarray, keep: np.ndarray, wide: bool):
    """The kept rows of ``ids`` as an Arrow list array of uint16 (int32 for vocabularies
    beyond 65,536 pieces), built from flat numpy arrays: all rows are flattened once and the
    dropped rows' ids masked out (5x faster than gathering the kept rows in Python)."""
    flat = np.fromiter(
        itertools.chain.from_iterable(ids),
        np.int32 if wide else np.uint16,
        count=int(lengths.sum()),
    )
    kept = np.zeros(len(ids), dtype=bool)
    kept[keep] = True
    offsets = np.zeros(len(keep) + 1, dtype=np.int32)
    np.cumsum(lengths[keep], out=offsets[1:])
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat[np.repeat(kept, lengths)]))


class _ShardWriter:
    """Writes record batches into Arrow stream files of at most SHARD_ROWS rows, noting which
    rows each corpus holds."""

    def __init__(self, folder: Path, keep_text: bool):
        self.folder, self.keep_text = folder, keep_text
        self.shards: list[str] = []
        self.corpora: dict[int, dict] = {}
        self.stream, self.rows_in_shard, self.rows = None, 0, 0

    def write(self, corpus: int, batch: pa.RecordBatch) -> None:
        if self.stream is None or self.rows_in_shard >= SHARD_ROWS:
            self._next_shard(batch.schema)
        self.stream.write_batch(batch)
        entry = self.corpora.setdefault(corpus, {"first_row": self.rows, "rows": 0})
        entry["rows"] += batch.num_rows
        self.rows_in_shard += batch.num_rows
        self.rows += batch.num_rows

    def _next_shard(self, schema: pa.Schema) -> None:
        if self.stream is not None:
            self.stream.close()
        name = f"train-{len(self.shards):05d}.arrow"
        self.shards.append(name)
        self.stream = pa.ipc.new_stream(str(self.folder / name), schema)
        self.rows_in_shard = 0

    def close(self, corpora: int) -> list[dict]:
        """The rows of each of the ``corpora``: ``first_row`` and ``rows``."""
        if self.stream is not None:
            self.stream.close()
        return [self.corpora.get(n, {"first_row": self.rows, "rows": 0}) for n in range(corpora)]
