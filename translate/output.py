"""Where ``translate translate`` writes: stdout, or a file that is never half-written (OUT.tmp,
renamed when complete) and that an interrupted run can resume."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from .errors import UserError

if TYPE_CHECKING:
    from .decoding import DecodeOptions
    from .translator import Translator


def check_output(path: Path | None) -> None:
    """Refuse an output file whose folder does not exist (before any work is done)."""
    if path is not None and not path.parent.is_dir():
        raise UserError(f"cannot write {path}: the folder {path.parent} does not exist")


def translate_file(
    translator: Translator,
    source: str | None,
    output: Path | None,
    options: DecodeOptions,
    numbered: bool = False,
    scores: bool = False,
    resume: bool = False,
    replace_bad_utf8: bool = False,
    log=print,
) -> tuple[int, int]:
    """Translate the lines of ``source`` (None or '-': stdin) into ``output`` (None: stdout),
    formatted as :meth:`Translator.translate_stream` says. A file is written as OUT.tmp and
    renamed when complete; with ``resume``, the OUT.tmp an interrupted run left is continued
    after its whole lines. Returns how many lines were translated and how many cut."""
    from tqdm import tqdm

    from .translator import input_lines

    if resume and (output is None or numbered or options.sampling is not None):
        raise UserError("--resume continues an output file: give -o, without --n-best or --sample")
    check_output(output)
    if output is None:
        lines = input_lines(source, replace_bad_utf8)
        count, truncated = translator.translate_stream(
            lines, sys.stdout, options, numbered=numbered, scores=scores
        )
    else:
        with resumable(output, resume, log) as (out, done):
            lines = input_lines(source, replace_bad_utf8, skip=done)
            with tqdm(desc="translate", unit="line", mininterval=1.0, initial=done) as progress:
                count, truncated = translator.translate_stream(
                    lines, out, options, progress=progress, numbered=numbered, scores=scores
                )
        log(f"translated {done + count} lines into {output}")
    if truncated:
        log(
            f"translate: warning: {truncated} input line(s) longer than "
            f"{translator.max_source_len} subwords were truncated to that length"
        )
    return count, truncated


@contextmanager
def resumable(path: Path, resume: bool = False, log=print) -> Iterator[tuple[TextIO, int]]:
    """PATH.tmp opened for writing, with how many whole lines it holds: with ``resume``, those
    an interrupted run left (a cut-off last line removed), else 0 (started afresh). Synced and
    renamed to PATH when the block ends without an error, so PATH is never half-written."""
    tmp = path.with_name(path.name + ".tmp")
    done = finished_lines(tmp) if resume and tmp.is_file() else 0
    if done:
        log(f"resuming after the {done} lines already in {tmp}")
    with open(tmp, "a" if done else "w", encoding="utf-8", newline="\n") as out:
        yield out, done
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)


def finished_lines(partial: Path) -> int:
    """How many whole lines a partly written output holds; a cut-off last line is removed."""
    data = partial.read_bytes()
    whole = data[: data.rfind(b"\n") + 1]
    if len(whole) != len(data):
        with open(partial, "r+b") as f:
            f.truncate(len(whole))
    return whole.count(b"\n")
