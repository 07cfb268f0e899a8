"""Batches: padded tensors of id sequences, and length-bucketed grouping of pairs into batches
of a token budget."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .vocab import BOS, EOS, PAD


@dataclass
class Batch:
    """Padded tensors for one training or translation batch (batch-first)."""

    src_tokens: torch.Tensor  # (batch, src_len), EOS-terminated
    src_lengths: torch.Tensor  # (batch,)
    tgt_in: torch.Tensor | None = None  # (batch, tgt_len): BOS + target
    tgt_out: torch.Tensor | None = None  # (batch, tgt_len): target + EOS
    n_tgt_tokens: int = 0  # non-pad target tokens
    n_src_tokens: int = 0


def pad(
    seqs: Sequence[Sequence[int]], prefix: list[int] = (), suffix: list[int] = ()
) -> torch.Tensor:
    """Right-pad id sequences (lists or arrays, each wrapped in prefix/suffix) into a (batch,
    max_len) tensor."""
    lengths = np.array([len(s) for s in seqs], dtype=np.int64)
    width = int(lengths.max()) + len(prefix) + len(suffix)
    out = np.full((len(seqs), width), PAD, dtype=np.int64)
    if lengths.sum():
        values = np.concatenate([np.asarray(s, dtype=np.int64).reshape(-1) for s in seqs])
        rows = np.repeat(np.arange(len(seqs)), lengths)
        starts = np.cumsum(lengths) - lengths
        out[rows, np.arange(len(values)) - np.repeat(starts, lengths) + len(prefix)] = values
    out[:, : len(prefix)] = prefix
    for offset, token in enumerate(suffix):
        out[np.arange(len(seqs)), len(prefix) + lengths + offset] = token
    return torch.from_numpy(out)


def source_batch(src_ids: Sequence[Sequence[int]]) -> Batch:
    """A batch of sources only, for translation."""
    tokens = pad(src_ids, suffix=[EOS])
    lengths = torch.tensor([len(s) + 1 for s in src_ids])
    return Batch(tokens, lengths, n_src_tokens=int(lengths.sum()))


def pair_batch(src_ids: Sequence[Sequence[int]], tgt_ids: Sequence[Sequence[int]]) -> Batch:
    """A batch of pairs for teacher-forced training and validation."""
    batch = source_batch(src_ids)
    batch.tgt_in = pad(tgt_ids, prefix=[BOS])
    batch.tgt_out = pad(tgt_ids, suffix=[EOS])
    batch.n_tgt_tokens = sum(len(t) + 1 for t in tgt_ids)
    return batch


def bucket_batches(
    src_lengths: np.ndarray,
    tgt_lengths: np.ndarray,
    batch_tokens: int,
    rng: np.random.Generator | None = None,
    items: np.ndarray | None = None,
) -> list[np.ndarray]:
    """Group positions of the length arrays (or the ``items`` at those positions) into batches
    of similar length whose padded size (the longer side plus EOS, times the rows) stays
    within ``batch_tokens``. With ``rng``, ties are broken randomly and the batch order is
    shuffled. The batches are views of one array, and the working memory is a few bytes a
    pair: an epoch of tens of millions of pairs is sorted without copies of its lengths."""
    src_lengths, tgt_lengths = np.asarray(src_lengths), np.asarray(tgt_lengths)
    n = len(src_lengths)
    order = np.arange(n, dtype=np.int32 if n < 1 << 31 else np.int64)
    if rng is not None:
        rng.shuffle(order)  # the same draws as rng.permutation(n)
    order = _sort_by_lengths(order, src_lengths, tgt_lengths)
    cuts, size, width = [], 0, 0
    for start in range(0, n, 65536):  # plain ints in slices: little memory at a time
        block = order[start : start + 65536]
        widths = np.maximum(src_lengths[block], tgt_lengths[block]).astype(np.int64) + 1
        for position, item in enumerate(widths.tolist(), start):
            if size and max(width, item) * (size + 1) > batch_tokens:
                cuts.append(position)
                size, width = 0, 0
            size += 1
            width = max(width, item)
    if items is not None:
        order = items[order]
    batches = np.split(order, cuts) if n else []
    if rng is not None:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return batches


def _sort_by_lengths(order: np.ndarray, src_lengths: np.ndarray, tgt_lengths: np.ndarray):
    """``order`` stably sorted by (target length, source length): one in-place sort of the
    two lengths and the position packed into 64 bits, where they fit (lengths under 65,536,
    fewer than 2**32 pairs); else numpy's lexsort."""
    n = len(order)
    longest = max(int(src_lengths.max(initial=0)), int(tgt_lengths.max(initial=0)))
    if longest >= 1 << 16 or n >= 1 << 32:
        return order[np.lexsort((src_lengths[order], tgt_lengths[order]))]
    keys = tgt_lengths[order].astype(np.uint64)
    keys <<= np.uint64(16)
    keys |= src_lengths[order].astype(np.uint64)
    keys <<= np.uint64(32)
    step = 1 << 20
    for start in range(0, n, step):
        keys[start : start + step] |= np.arange(start, min(n, start + step), dtype=np.uint64)
    keys.sort()  # the positions make every key distinct: any sort is a stable one
    keys &= np.uint64(0xFFFFFFFF)
    for start in range(0, n, step):  # reuse the keys' memory for the sorted order
        keys[start : start + step] = order[keys[start : start + step]]
    return keys.astype(order.dtype)
