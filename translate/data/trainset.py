"""The prepared training set: Arrow shards memory-mapped through Hugging Face ``datasets``,
epochs drawn from several corpora by weight, and batches gathered from the mapped columns.

Only the two length columns are read into memory (two bytes a pair each): the ids stay in the
mapped files until a batch needs them, so memory does not grow with the corpus.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .batches import bucket_batches
from .corpus import DataError, FilterReport
from .vocab import UNK

MANIFEST = "manifest.json"  # written last: a folder without it is not a finished preparation


class TrainSet:
    """The rows of ``prepared/``: for each kept pair its line number in its corpus, source and
    target ids and their lengths (and, for subword sampling, the text); corpora are
    consecutive ranges of rows."""

    def __init__(self, folder: Path):
        import datasets  # slow to import; only needed here

        try:
            manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
            shards = [datasets.Dataset.from_file(str(folder / name)) for name in manifest["shards"]]
        except (OSError, ValueError, KeyError) as err:
            raise DataError(
                f"{folder} is not readable prepared data ({err}); delete it to prepare again"
            ) from None
        self.corpora: list[dict] = manifest["corpora"]  # path, first_row, rows, lines, report
        self.dataset = datasets.concatenate_datasets(shards)
        table = self.dataset.data.table  # memory-mapped: reading a column reads no rows yet
        self.src_len = table.column("src_len").to_numpy()  # (rows,) uint16, in memory
        self.tgt_len = table.column("tgt_len").to_numpy()
        # per record batch, the flat ids and their offsets: views of the mapped files
        self.chunk_starts = np.cumsum([0] + [len(c) for c in table.column("src").chunks])
        self.src = [(c.offsets.to_numpy(), c.values.to_numpy()) for c in table.column("src").chunks]
        self.tgt = [(c.offsets.to_numpy(), c.values.to_numpy()) for c in table.column("tgt").chunks]
        self.table = table

    def __len__(self) -> int:
        return len(self.src_len)

    @property
    def report(self) -> FilterReport:
        """The filter report of all corpora together."""
        total = FilterReport()
        for corpus in self.corpora:
            for name, count in corpus["report"].items():
                setattr(total, name, getattr(total, name) + count)
        return total

    def epoch(
        self, epoch: int, seed: int, weights: list[float], batch_tokens: int
    ) -> list[np.ndarray]:
        """The batches of one epoch, each an array of row numbers. Every corpus gives each of
        its rows ``weight`` times (a fraction: a seeded random subset), bucketed by length in
        a seeded order: the same arguments give the same batches."""
        rng = np.random.default_rng([seed, epoch])
        parts = []
        for corpus, weight in zip(self.corpora, weights):
            rows = np.arange(
                corpus["first_row"], corpus["first_row"] + corpus["rows"], dtype=np.int32
            )
            whole, fraction = divmod(weight, 1.0)
            parts += [rows] * int(whole)
            if fraction:
                parts.append(rng.choice(rows, round(fraction * len(rows)), replace=False))
        rows = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int32)
        return bucket_batches(self.src_len[rows], self.tgt_len[rows], batch_tokens, rng, rows)

    def corpus_of(self, rows: np.ndarray) -> np.ndarray:
        """The corpus number of each row."""
        firsts = np.array([corpus["first_row"] for corpus in self.corpora])
        return np.searchsorted(firsts, rows, side="right") - 1

    def unknown_pieces(self) -> tuple[tuple[int, int], tuple[int, int]]:
        """(unknown, all) pieces of the source side and of the target side: how many ids are
        <unk>, read column by column from the mapped files."""
        return _count_unknown(self.src), _count_unknown(self.tgt)

    def ids(self, rows: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """The source and target ids of the given rows, read from the mapped files."""
        chunks = np.searchsorted(self.chunk_starts, rows, side="right") - 1
        local = rows - self.chunk_starts[chunks]
        places = list(zip(chunks.tolist(), local.tolist()))
        return [_row(self.src, c, i) for c, i in places], [_row(self.tgt, c, i) for c, i in places]

    def texts(self, rows: np.ndarray) -> tuple[list[str], list[str]]:
        """The source and target text of the given rows (prepared with subword sampling)."""
        chunks = np.searchsorted(self.chunk_starts, rows, side="right") - 1
        local = rows - self.chunk_starts[chunks]
        places = list(zip(chunks.tolist(), local.tolist()))
        src, tgt = self.table.column("src_text").chunks, self.table.column("tgt_text").chunks
        return [src[c][i].as_py() for c, i in places], [tgt[c][i].as_py() for c, i in places]


def _row(columns: list[tuple[np.ndarray, np.ndarray]], chunk: int, index: int) -> np.ndarray:
    offsets, values = columns[chunk]
    return values[offsets[index] : offsets[index + 1]]


def _count_unknown(columns: list[tuple[np.ndarray, np.ndarray]]) -> tuple[int, int]:
    unknown = total = 0
    for offsets, values in columns:
        ids = values[offsets[0] : offsets[-1]]  # a chunk's values may reach past its rows
        unknown += int(np.count_nonzero(ids == UNK))
        total += len(ids)
    return unknown, total
