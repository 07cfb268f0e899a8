"""Encoding the training corpora into Arrow shards: worker processes decode, encode and filter
chunks of raw lines (only a few in flight), this process writes their record batches into
``prepared.tmp/`` and renames it to ``prepared/`` after the manifest, so a failed or
interrupted run leaves nothing a rerun could take for finished."""

from __future__ import annotations

import itertools
import json
import multiprocessing
import os
import shutil
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from ..config import DataConfig
from ..modeldir import atomic_write
from .corpus import DataError, FilterReport, RawLines, filter_lengths
from .trainset import MANIFEST
from .vocab import Vocab

SHARD_ROWS = 1_000_000  # rows per Arrow file


def encode_corpora(
    d: DataConfig,
    chunks: Iterable[tuple[int, RawLines | list[tuple[str, str]]]],
    src_vocab: Vocab,
    tgt_vocab: Vocab,
    folder: Path,
    manifest: dict,
    workers: int,
    log,
) -> None:
    """Encode and filter the (corpus, chunk) pairs of ``chunks`` into Arrow shards in
    ``folder``, atomically; ``manifest`` (what the shards were made from) is written with
    their list."""
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
        with _Encoders(workers, settings) as pool:
            pending: deque = deque()
            for corpus, chunk in chunks:
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
        manifest = {**manifest, "corpora": corpora, "shards": writer.shards}
        atomic_write(tmp / MANIFEST, json.dumps(manifest, indent=1).encode())
        os.replace(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


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


class _Encoders:
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
