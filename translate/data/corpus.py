"""Parallel text: reading corpora (files or the Hugging Face hub) and filtering pairs by length."""

from __future__ import annotations

import dataclasses
import gzip
import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import UserError


class DataError(UserError):
    """Parallel data that cannot be used as it is."""


BAD_UTF8_HINT = "data.replace_bad_utf8=true reads it with U+FFFD for the bad bytes"


def _open(path: Path):
    """A binary stream of a file, decompressed when it ends in ``.gz``."""
    if not path.is_file():
        raise DataError(f"file not found: {path}")
    return gzip.open(path) if path.suffix == ".gz" else open(path, "rb")


def read_lines(path: str | Path, replace_bad_utf8: bool = False) -> list[str]:
    """Lines of a UTF-8 text file (``.gz`` accepted), split on ``\\n`` only."""
    return list(_file_lines(Path(path), replace_bad_utf8))


def _file_lines(path: Path, replace_bad_utf8: bool) -> Iterator[str]:
    """The lines of a text file as they are read. Plain text is read here rather than with
    ``datasets``' text loader, which also breaks lines at a lone carriage return: one stray
    ``\\r`` would shift every later pair."""
    try:
        with _open(path) as stream:
            yield from utf8_lines(stream, str(path), replace_bad_utf8, BAD_UTF8_HINT)
    except (OSError, EOFError) as err:
        raise DataError(f"cannot read {path}: {err}") from None


def utf8_lines(
    stream: Iterable[bytes],
    name: str,
    replace_bad_utf8: bool,
    hint: str,
    skip: int = 0,
    first: int = 1,
) -> Iterator[str]:
    """The lines of a binary stream as they come: split on ``\\n`` only, a final ``\\r`` and
    a byte-order mark at the start dropped. A line that is not UTF-8 is a :class:`DataError`
    naming ``name``, the line number and ``hint``, or with ``replace_bad_utf8`` is read with
    U+FFFD for the bad bytes. The first ``skip`` lines are passed over; ``first`` is the number
    of the stream's first line (a chunk from the middle of a file)."""
    for number, raw in enumerate(stream, first):
        if number < first + skip:
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


def corpus_files(spec: str, src_lang: str, tgt_lang: str) -> list[Path]:
    """The local files a corpus is read from (none for a hub dataset)."""
    if spec.startswith("hub:"):
        return []
    if spec.removesuffix(".gz").endswith((".tsv", ".jsonl", ".json")):
        return [Path(spec)]
    return [_find_side(spec, src_lang), _find_side(spec, tgt_lang)]


def read_pairs(
    spec: str, src_lang: str, tgt_lang: str, replace_bad_utf8: bool = False
) -> Iterator[tuple[str, str]]:
    """The sentence pairs of a file prefix (PREFIX.src / PREFIX.tgt, gzip accepted), a TSV
    file, a JSONL file or ``hub:NAME[@CONFIG]:SPLIT``, read as they come."""
    if not spec:
        raise DataError("no data given (set data.train / data.dev)")
    if _is_prefix(spec):
        yield from _prefix_pairs(spec, src_lang, tgt_lang, replace_bad_utf8)
    elif spec.removesuffix(".gz").endswith(".tsv"):
        yield from _tsv_pairs(Path(spec), replace_bad_utf8)
    else:
        yield from _datasets_pairs(spec, src_lang, tgt_lang)


def _is_prefix(spec: str) -> bool:
    """Whether ``spec`` names a pair of files PREFIX.src / PREFIX.tgt (not TSV, JSONL, hub)."""
    name = spec.removesuffix(".gz")
    return not (name.endswith((".tsv", ".jsonl", ".json")) or spec.startswith("hub:"))


def read_parallel(
    spec: str, src_lang: str, tgt_lang: str, replace_bad_utf8: bool = False
) -> tuple[list[str], list[str]]:
    """All pairs of a (small) corpus, as :func:`read_pairs` reads them: sources, targets."""
    pairs = list(read_pairs(spec, src_lang, tgt_lang, replace_bad_utf8))
    return [s for s, _ in pairs], [t for _, t in pairs]


def _prefix_pairs(prefix: str, src_lang: str, tgt_lang: str, replace: bool):
    for chunk in _raw_chunks(prefix, src_lang, tgt_lang, replace, 10_000):
        yield from chunk.pairs()


@dataclass
class RawLines:
    """Lines ``first``... of a prefix corpus's two files, not yet decoded: what a reader
    process hands to a worker, which decodes them as :func:`read_pairs` would."""

    src_name: str
    tgt_name: str
    first: int
    src: list[bytes]
    tgt: list[bytes]
    replace_bad_utf8: bool

    def __len__(self) -> int:
        return len(self.src)

    def pair(self, index: int) -> tuple[str, str]:
        """The ``index``-th pair alone, decoded with its own line number."""
        line = dataclasses.replace(
            self,
            first=self.first + index,
            src=self.src[index : index + 1],
            tgt=self.tgt[index : index + 1],
        )
        return line.pairs()[0]

    def pairs(self) -> list[tuple[str, str]]:
        return list(zip(*self.sides()))

    def sides(self) -> tuple[list[str], list[str]]:
        """The decoded source lines and target lines."""
        return self._decode(self.src, self.src_name), self._decode(self.tgt, self.tgt_name)

    def _decode(self, lines: list[bytes], name: str) -> list[str]:
        """The lines decoded as :func:`utf8_lines` does, but the whole chunk in one call (line
        by line took over a quarter of prepare's time); a chunk that is not valid UTF-8 is
        decoded again line by line, for the error's line number or the replacement."""
        try:
            text = b"".join(lines).decode("utf-8")
        except UnicodeDecodeError:
            hint = BAD_UTF8_HINT
            return list(utf8_lines(lines, name, self.replace_bad_utf8, hint, first=self.first))
        if not text:
            return []
        decoded = text.split("\n")
        if text.endswith("\n"):
            decoded.pop()  # every line but perhaps the file's last ends in a newline
        if "\r" in text:
            decoded = [line.removesuffix("\r") for line in decoded]
        if self.first == 1:
            decoded[0] = decoded[0].removeprefix("\ufeff")
        return decoded


def pair_chunks(
    spec: str, src_lang: str, tgt_lang: str, replace_bad_utf8: bool, size: int
) -> Iterator[RawLines | list[tuple[str, str]]]:
    """The pairs of a corpus in chunks of at most ``size``: a file prefix's as undecoded
    :class:`RawLines` (read at the speed of the disk: the decoding is left to the worker
    processes), other corpora's as decoded pairs."""
    if _is_prefix(spec):
        yield from _raw_chunks(spec, src_lang, tgt_lang, replace_bad_utf8, size)
        return
    pairs = read_pairs(spec, src_lang, tgt_lang, replace_bad_utf8)
    while chunk := list(itertools.islice(pairs, size)):
        yield chunk


def _raw_chunks(
    prefix: str, src_lang: str, tgt_lang: str, replace_bad_utf8: bool, size: int
) -> Iterator[RawLines]:
    """A prefix corpus's two files in chunks of ``size`` undecoded lines; files of different
    lengths are an error naming both counts."""
    src_path, tgt_path = _find_side(prefix, src_lang), _find_side(prefix, tgt_lang)
    try:
        with _open(src_path) as src, _open(tgt_path) as tgt:
            first = 1
            while True:
                src_lines = list(itertools.islice(src, size))
                tgt_lines = list(itertools.islice(tgt, size))
                if len(src_lines) != len(tgt_lines):
                    counts = [first - 1 + len(src_lines), first - 1 + len(tgt_lines)]
                    counts[len(src_lines) < len(tgt_lines)] += sum(1 for _ in src) + sum(
                        1 for _ in tgt
                    )
                    raise DataError(
                        f"parallel files differ in length: {src_path} has {counts[0]} lines, "
                        f"{tgt_path} has {counts[1]}"
                    )
                if not src_lines:
                    return
                yield RawLines(
                    str(src_path), str(tgt_path), first, src_lines, tgt_lines, replace_bad_utf8
                )
                first += len(src_lines)
    except (OSError, EOFError) as err:
        raise DataError(f"cannot read {src_path} / {tgt_path}: {err}") from None


def _tsv_pairs(path: Path, replace_bad_utf8: bool) -> Iterator[tuple[str, str]]:
    for number, line in enumerate(_file_lines(path, replace_bad_utf8), 1):
        fields = line.split("\t")
        if len(fields) < 2:
            raise DataError(f"{path}: line {number} has no tab between source and target")
        yield fields[0], fields[1]


def _datasets_pairs(spec: str, src_lang: str, tgt_lang: str) -> Iterator[tuple[str, str]]:
    """JSONL files and hub datasets, through Hugging Face ``datasets`` (memory-mapped)."""
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
        for pair in table["translation"]:
            yield pair[src_lang], pair[tgt_lang]
    elif src_lang in columns and tgt_lang in columns:
        yield from zip(table[src_lang], table[tgt_lang])
    else:
        raise DataError(
            f"'{spec}' has columns {columns}; expected '{src_lang}' and '{tgt_lang}' "
            "or 'translation'"
        )


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
    src_len = np.fromiter(map(len, src_ids), dtype=np.int64, count=len(src_ids))
    tgt_len = np.fromiter(map(len, tgt_ids), dtype=np.int64, count=len(tgt_ids))
    keep, report = filter_lengths(src_len, tgt_len, max_len, max_ratio)
    return keep.tolist(), report


def filter_lengths(
    src_len: np.ndarray, tgt_len: np.ndarray, max_len: int, max_ratio: float
) -> tuple[np.ndarray, FilterReport]:
    """:func:`filter_pairs` on the pairs' lengths: the kept positions, and the report."""
    longer, shorter = np.maximum(src_len, tgt_len), np.minimum(src_len, tgt_len)
    empty = shorter == 0
    too_long = ~empty & (longer > max_len)
    # very short pairs are exempt from the ratio: 1 word vs 4 pieces is normal
    bad_ratio = ~empty & ~too_long & (longer > max_ratio * shorter) & (longer > 5)
    keep = np.flatnonzero(~(empty | too_long | bad_ratio))
    report = FilterReport(len(keep), int(empty.sum()), int(too_long.sum()), int(bad_ratio.sum()))
    return keep, report
