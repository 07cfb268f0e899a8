"""Parallel text: reading (files or the Hugging Face hub), filtering, and length-bucketed batches."""

from __future__ import annotations

import gzip
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from .config import UserError
from .vocab import BOS, EOS, PAD


class DataError(UserError):
    """Parallel data that cannot be used as it is."""


def read_lines(path: str | Path, replace_bad_utf8: bool = False) -> list[str]:
    """Lines of a UTF-8 text file (``.gz`` accepted), split on ``\\n`` only.

    Plain-text pairs are read here rather than with ``datasets``' text loader, which also breaks
    lines at a lone carriage return: one stray ``\\r`` would shift every later pair.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"file not found: {path}")
    hint = "data.replace_bad_utf8=true reads it with U+FFFD for the bad bytes"
    try:
        with gzip.open(path) if path.suffix == ".gz" else open(path, "rb") as stream:
            return list(utf8_lines(stream, str(path), replace_bad_utf8, hint))
    except (OSError, EOFError) as err:
        raise DataError(f"cannot read {path}: {err}") from None


def utf8_lines(
    stream: Iterable[bytes], name: str, replace_bad_utf8: bool, hint: str, skip: int = 0
) -> Iterator[str]:
    """The lines of a binary stream as they come: split on ``\\n`` only, a final ``\\r`` and
    a byte-order mark at the start dropped. A line that is not UTF-8 is a :class:`DataError`
    naming ``name``, the line number and ``hint``, or with ``replace_bad_utf8`` is read with
    U+FFFD for the bad bytes. The first ``skip`` lines are passed over."""
    for number, raw in enumerate(stream, 1):
        if number <= skip:
            continue
        raw = raw.removesuffix(b"\n").removesuffix(b"\r")
        if number == 1:
            raw = raw.removeprefix(b"\xef\xbb\xbf")
        try:
            yield raw.decode("utf-8")
        except UnicodeDecodeError:
            if not replace_bad_utf8:
                raise DataError(f"{name}: line {number} is not valid UTF-8 ({hint})") from None
            yield raw.decode("utf-8", errors="replace")


def _find_side(prefix: str, lang: str) -> Path:
    for candidate in (Path(f"{prefix}.{lang}"), Path(f"{prefix}.{lang}.gz")):
        if candidate.is_file():
            return candidate
    raise DataError(f"no file {prefix}.{lang} or {prefix}.{lang}.gz")


def _read_tsv(path: Path, replace_bad_utf8: bool) -> tuple[list[str], list[str]]:
    src, tgt = [], []
    for number, line in enumerate(read_lines(path, replace_bad_utf8), 1):
        fields = line.split("\t")
        if len(fields) < 2:
            raise DataError(f"{path}: line {number} has no tab between source and target")
        src.append(fields[0])
        tgt.append(fields[1])
    return src, tgt


def _read_with_datasets(spec: str, src_lang: str, tgt_lang: str) -> tuple[list[str], list[str]]:
    """JSONL files and hub datasets, through Hugging Face ``datasets``."""
    import datasets  # slow to import; only needed here

    datasets.disable_progress_bars()
    try:
        if spec.startswith("hub:"):
            # hub:NAME[@CONFIG]:SPLIT, e.g. hub:bentrevett/multi30k:train
            name, _, split = spec[4:].rpartition(":")
            if not name:
                raise DataError(f"'{spec}': write hub datasets as hub:NAME[@CONFIG]:SPLIT")
            name, _, subset = name.partition("@")
            table = datasets.load_dataset(name, subset or None, split=split)
        else:
            if not Path(spec).is_file():
                raise DataError(f"file not found: {spec}")
            table = datasets.load_dataset("json", data_files=spec, split="train")
    except DataError:
        raise
    except Exception as err:  # network, missing split, malformed JSON: all user-facing
        raise DataError(
            f"cannot load '{spec}' with datasets ({type(err).__name__}: {err}). "
            "Offline? Download it elsewhere and point the config at local files."
        ) from None
    columns = table.column_names
    if "translation" in columns:
        pairs = table["translation"]
        return [p[src_lang] for p in pairs], [p[tgt_lang] for p in pairs]
    if src_lang in columns and tgt_lang in columns:
        return list(table[src_lang]), list(table[tgt_lang])
    raise DataError(
        f"'{spec}' has columns {columns}; expected '{src_lang}' and '{tgt_lang}' or 'translation'"
    )


def read_parallel(
    spec: str, src_lang: str, tgt_lang: str, replace_bad_utf8: bool = False
) -> tuple[list[str], list[str]]:
    """Read sentence pairs from a file prefix (PREFIX.src / PREFIX.tgt, gzip accepted),
    a TSV file, a JSONL file, or ``hub:NAME[@CONFIG]:SPLIT``."""
    if not spec:
        raise DataError("no data given (set data.train / data.dev)")
    name = spec.removesuffix(".gz")
    if name.endswith(".tsv"):
        return _read_tsv(Path(spec), replace_bad_utf8)
    if name.endswith((".jsonl", ".json")) or spec.startswith("hub:"):
        return _read_with_datasets(spec, src_lang, tgt_lang)
    src_path, tgt_path = _find_side(spec, src_lang), _find_side(spec, tgt_lang)
    src, tgt = read_lines(src_path, replace_bad_utf8), read_lines(tgt_path, replace_bad_utf8)
    if len(src) != len(tgt):
        raise DataError(
            f"parallel files differ in length: {src_path} has {len(src)} lines, "
            f"{tgt_path} has {len(tgt)}"
        )
    return src, tgt


@dataclass
class FilterReport:
    """How many pairs were kept, and how many were dropped for which reason."""

    kept: int = 0
    empty: int = 0
    too_long: int = 0
    bad_ratio: int = 0

    def summary(self) -> str:
        dropped = self.empty + self.too_long + self.bad_ratio
        return (
            f"kept {self.kept} pairs, dropped {dropped} "
            f"(empty {self.empty}, longer than max_len {self.too_long}, "
            f"length ratio {self.bad_ratio})"
        )


def filter_pairs(
    src_ids: list[list[int]], tgt_ids: list[list[int]], max_len: int, max_ratio: float
) -> tuple[list[int], FilterReport]:
    """Indices of the pairs fit for training, with the reasons others were dropped."""
    keep, report = [], FilterReport()
    for index, (s, t) in enumerate(zip(src_ids, tgt_ids)):
        if not s or not t:
            report.empty += 1
        elif len(s) > max_len or len(t) > max_len:
            report.too_long += 1
        elif max(len(s), len(t)) > max_ratio * min(len(s), len(t)) and max(len(s), len(t)) > 5:
            report.bad_ratio += 1  # very short pairs are exempt: 1 word vs 4 pieces is normal
        else:
            keep.append(index)
    report.kept = len(keep)
    return keep, report


@dataclass
class Batch:
    """Padded tensors for one training or translation batch (batch-first)."""

    src_tokens: torch.Tensor  # (batch, src_len), EOS-terminated
    src_lengths: torch.Tensor  # (batch,)
    tgt_in: torch.Tensor | None = None  # (batch, tgt_len): BOS + target
    tgt_out: torch.Tensor | None = None  # (batch, tgt_len): target + EOS
    n_tgt_tokens: int = 0  # non-pad target tokens
    n_src_tokens: int = 0


def pad(seqs: list[list[int]], prefix: list[int] = (), suffix: list[int] = ()) -> torch.Tensor:
    """Right-pad id lists (each wrapped in prefix/suffix) into a (batch, max_len) tensor."""
    width = max(len(s) for s in seqs) + len(prefix) + len(suffix)
    out = torch.full((len(seqs), width), PAD, dtype=torch.long)
    for row, seq in enumerate(seqs):
        full = [*prefix, *seq, *suffix]
        out[row, : len(full)] = torch.tensor(full, dtype=torch.long)
    return out


def source_batch(src_ids: list[list[int]]) -> Batch:
    """A batch of sources only, for translation."""
    tokens = pad(src_ids, suffix=[EOS])
    lengths = torch.tensor([len(s) + 1 for s in src_ids])
    return Batch(tokens, lengths, n_src_tokens=int(lengths.sum()))


def pair_batch(src_ids: list[list[int]], tgt_ids: list[list[int]]) -> Batch:
    """A batch of pairs for teacher-forced training and validation."""
    batch = source_batch(src_ids)
    batch.tgt_in = pad(tgt_ids, prefix=[BOS])
    batch.tgt_out = pad(tgt_ids, suffix=[EOS])
    batch.n_tgt_tokens = sum(len(t) + 1 for t in tgt_ids)
    return batch


def bucket_batches(
    src_ids: list[list[int]],
    tgt_ids: list[list[int]],
    batch_tokens: int,
    seed: int | None = None,
) -> list[list[int]]:
    """Group pair indices into batches of similar length whose padded target size stays within
    ``batch_tokens``; with a seed, ties are broken randomly and the batch order is shuffled."""
    order = list(range(len(src_ids)))
    rng = random.Random(seed)
    if seed is not None:
        rng.shuffle(order)  # sorted() is stable: equal lengths keep this random order
    order.sort(key=lambda i: (len(tgt_ids[i]), len(src_ids[i])))
    batches, current, width = [], [], 0
    for index in order:
        item_width = max(len(tgt_ids[index]), len(src_ids[index])) + 1
        if current and max(width, item_width) * (len(current) + 1) > batch_tokens:
            batches.append(current)
            current, width = [], 0
        current.append(index)
        width = max(width, item_width)
    if current:
        batches.append(current)
    if seed is not None:
        rng.shuffle(batches)
    return batches
