"""How ``translate translate`` reads its lines (:func:`input_lines`), translates them in chunks
with either engine (:func:`translate_stream`) and writes them. The format: plain text, one line
per input line, unless rows are asked for; then rows ``LINE ||| TEXT ||| SCORE``
(``||| ALIGNMENT`` added with attention), ``n_best`` rows per input line and one for a blank
line. Where: stdout; a
regular file (or a new one) written as OUT.tmp beside it and renamed when complete, so that it is
never half-written and an interrupted run can resume it; a device or FIFO (``/dev/null``, a
pipe) written in place, never replaced. A symlink is followed: its target is written as above
and the link is kept. A directory is refused. A failed write is one line naming what could not
be written, and leaves no OUT.tmp behind (only an interruption keeps it, for ``--resume``)."""

from __future__ import annotations

import dataclasses
import itertools
import os
import re
import shutil
import stat
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

import numpy as np

from .data.corpus import utf8_lines
from .errors import UserError

if TYPE_CHECKING:
    from .decoding import DecodeOptions, Translation
    from .export.engine import OnnxTranslator
    from .translator import Translator

    Engine = Translator | OnnxTranslator  # what translates: PyTorch's model or the ONNX graphs

CHUNK_LINES = 2000  # lines of a stream translated (and, sampling, drawn for) at once
SEPARATOR = " ||| "  # between the columns of a row
_ROW = re.compile(rb"(\d+) \|\|\| ")  # a row's start: LINE and the first separator


class OutputError(UserError):
    """The output cannot be written (a directory, a missing folder, a full disk ...)."""


@dataclass(frozen=True)
class Output:
    """An output file as the user named it (``path``, for messages) and as it is written:
    ``in_place`` when it is no regular file (a character or block device, a FIFO, a pipe
    such as /dev/stdout's): then ``target`` is ``path``, opened and written, never replaced;
    else ``target`` is the file with symlinks followed, replaced whole."""

    path: Path
    target: Path
    in_place: bool

    @property
    def tmp(self) -> Path:
        """Where a regular file is written until it is complete: TARGET.tmp, beside it."""
        return self.target.with_name(self.target.name + ".tmp")


def check_output(path: Path | None) -> Output | None:
    """What ``path`` is (None: stdout), refused before any work is done where it cannot be
    written: a directory, a folder that does not exist, a closed stdout."""
    if path is None:
        if sys.stdout is None:
            raise OutputError("cannot write stdout: it is closed")
        return None
    path = Path(path)
    try:  # what it is with symlinks followed, by the kernel (/dev/stdout's magic link too)
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        mode = None
    except OSError as err:  # a parent that is a file, a symlink loop, no permission ...
        raise OutputError(f"cannot write {path}: {err.strerror}") from None
    if mode is not None and stat.S_ISDIR(mode):
        raise OutputError(f"cannot write {path}: it is a directory")
    if mode is not None and not stat.S_ISREG(mode):
        return Output(path, path, in_place=True)  # opened by its name: the kernel follows it
    target = Path(os.path.realpath(path))  # a file replaced where it is, its links kept
    if not target.parent.is_dir():
        raise OutputError(f"cannot write {path}: the folder {target.parent} does not exist")
    if not os.access(target.parent, os.W_OK | os.X_OK):  # OUT.tmp is created beside it
        raise OutputError(f"cannot write {path}: the folder {target.parent} is not writable")
    return Output(path, target, in_place=False)


def wants_rows(options: DecodeOptions) -> bool:
    """Whether ``options`` ask for more than plain text holds: several candidates a line, or
    alignments."""
    return options.n_best > 1 or options.attention


def format_lines(
    sources: Sequence[str],
    translations: Sequence[Translation],
    first: int,
    rows: bool,
    alignment: bool,
) -> str:
    """The output of consecutive input lines (``first``: the number of the first, from 0):
    plain text, one line each; or with ``rows``, each line's candidates as rows ``LINE ||| TEXT
    ||| SCORE``, with ``||| ALIGNMENT`` (SRC-TGT pairs of pieces, from 0) if ``alignment``; a
    blank input line gives one row, of empty text and score 0."""
    out = []
    for number, (source, translation) in enumerate(zip(sources, translations), first):
        candidates = translation.candidates if source.strip() else translation.candidates[:1]
        if not rows:
            out.append(" ".join(candidates[0].text.split()) + "\n")  # a newline would shift lines
            continue
        for candidate in candidates:
            fields = [str(number), " ".join(candidate.text.split()), f"{candidate.score:.4f}"]
            if alignment:
                pairs = enumerate((candidate.alignment or [])[:-1])  # EOS has no piece
                fields.append(" ".join(f"{src}-{tgt}" for tgt, src in pairs))
            out.append(SEPARATOR.join(fields) + "\n")
    return "".join(out)


def translate_file(
    translator: Engine,
    source: str | None,
    output: Path | None,
    options: DecodeOptions,
    rows: bool = False,
    resume: bool = False,
    replace_bad_utf8: bool = False,
    log=print,
) -> tuple[int, int]:
    """Translate the lines of ``source`` (None or '-': stdin) into ``output`` (None: stdout),
    formatted as :func:`format_lines` says (rows with ``rows`` or when :func:`wants_rows`)
    and written as :func:`opened` says; with ``resume``, the OUT.tmp an interrupted run left is
    continued after its whole lines. Returns how many lines were translated and how many cut."""
    from tqdm import tqdm

    rows = rows or wants_rows(options)
    if resume and output is None:
        raise UserError("--resume continues an output file: give -o")
    checked = check_output(output)
    if resume and checked is not None and checked.in_place:
        raise UserError(f"--resume continues a regular file; {output} is not one")
    lines = input_lines(source, replace_bad_utf8)  # refused now if it cannot be read
    if checked is None:
        count, truncated = translate_stream(
            translator, lines, Writer(sys.stdout, "stdout"), options, CHUNK_LINES, rows=rows
        )
    else:
        # sampling draws for a chunk of lines at once: a resumed run starts at a chunk, so that
        # it draws what the uninterrupted run would have drawn
        multiple = CHUNK_LINES if options.sampling is not None else 1

        def point(tmp: Path) -> int:
            return resume_point(tmp, rows, options.attention, multiple)

        with opened(checked, point if resume else None, log) as (out, done):
            lines = itertools.islice(lines, done, None)  # those an interrupted run translated
            with tqdm(  # on a terminal only: a log file gets the lines below, not a bar
                desc="translate", unit="line", mininterval=1.0, initial=done, disable=None
            ) as progress:
                count, truncated = translate_stream(
                    translator, lines, out, options, CHUNK_LINES, progress, rows, done
                )
        what = f"the rows of {done + count} input lines" if rows else f"{done + count} lines"
        log(f"wrote {what} to {output}")
    if truncated:
        log(
            f"translate: warning: {truncated} input line(s) longer than "
            f"{translator.max_source_len} subwords were truncated to that length"
        )
    return count, truncated


def translate_stream(
    engine: Engine,
    lines: Iterable[str],
    out: TextIO,
    options: DecodeOptions | None = None,
    chunk_size: int = CHUNK_LINES,
    progress=None,
    rows: bool = False,
    first_line: int = 0,
) -> tuple[int, int]:
    """Translate an iterable of lines in chunks with ``engine`` (a Translator or an
    OnnxTranslator), writing them as :func:`format_lines` does: plain text, one line out per
    line in; or with ``rows`` (implied by n-best or attention in the options) rows ``LINE |||
    TEXT ||| SCORE [||| ALIGNMENT]``, LINE counted from ``first_line`` (where a resumed run
    starts). Returns how many lines were translated and how many were cut to the length
    limit."""
    options = options if options is not None else engine.defaults
    rows = rows or wants_rows(options)
    count, truncated, chunk = 0, 0, []
    for line in itertools.chain(lines, [None]):  # None: the end, to flush the last chunk
        if line is not None:
            chunk.append(line.rstrip("\n").removesuffix("\r"))
        if len(chunk) == chunk_size or (line is None and chunk):
            first = first_line + count
            translations = engine.translate_batch(chunk, _chunk_seeded(options, first, chunk_size))
            out.write(format_lines(chunk, translations, first, rows, options.attention))
            out.flush()
            if progress is not None:
                progress.update(len(chunk))
            count += len(chunk)
            truncated += sum(t.truncated for t in translations)
            chunk = []
    return count, truncated


def _chunk_seeded(options: DecodeOptions, first: int, chunk_size: int) -> DecodeOptions:
    """With sampling, each chunk of a stream draws from its own stream of the seed."""
    if options.sampling is None:
        return options
    key = np.random.SeedSequence([options.sampling.seed, first // chunk_size])
    sampling = dataclasses.replace(options.sampling, seed=int(key.generate_state(1)[0]))
    return dataclasses.replace(options, sampling=sampling)


def input_lines(path: str | None, replace_bad_utf8: bool = False, skip: int = 0) -> Iterator[str]:
    """Lines of a file (or stdin for None / '-'), split on ``\\n`` only, read as they come.

    An input that cannot be read (missing, a directory, a closed stdin) is refused at once; a
    line that is not UTF-8 is an error naming its number when it is reached, or with
    ``replace_bad_utf8`` is decoded with U+FFFD for the bad bytes. The first ``skip`` lines are
    passed over.
    """
    hint = "--replace-bad-utf8 translates it with U+FFFD for the bad bytes"
    if path in (None, "-"):
        if sys.stdin is None:
            raise UserError("cannot read stdin: it is closed")
        return _read(
            None, "stdin", utf8_lines(sys.stdin.buffer, "stdin", replace_bad_utf8, hint, skip)
        )
    if Path(path).is_dir():
        raise UserError(f"cannot read {path}: it is a directory")
    if not Path(path).exists():
        raise UserError(f"input file not found: {path}")
    try:
        stream = open(path, "rb")
    except OSError as err:
        raise UserError(f"cannot read {path}: {err.strerror or err}") from None
    return _read(stream, path, utf8_lines(stream, path, replace_bad_utf8, hint, skip))


def _read(stream, name: str, lines: Iterator[str]) -> Iterator[str]:
    """``lines``, with a failed read a one-line error naming ``name``, and ``stream`` (if any)
    closed when they end or are abandoned."""
    try:
        yield from lines
    except OSError as err:
        raise UserError(f"cannot read {name}: {err.strerror or err}") from None
    finally:
        if stream is not None:
            stream.close()


class Writer:
    """A text stream whose failed writes are one-line errors naming it (a full disk, a device
    that refuses). A closed pipe stays a BrokenPipeError: the command line ends quietly."""

    def __init__(self, stream: TextIO, name: str | Path):
        self.stream, self.name = stream, name

    def write(self, text: str) -> int:
        return self._checked(self.stream.write, text)

    def flush(self) -> None:
        self._checked(self.stream.flush)

    def _checked(self, call, *args):
        try:
            return call(*args)
        except BrokenPipeError:
            raise
        except OSError as err:
            raise OutputError(f"cannot write {self.name}: {err.strerror or err}") from None


@contextmanager
def opened(
    output: Output, resume: Callable[[Path], int] | None = None, log=print
) -> Iterator[tuple[Writer, int]]:
    """``output`` opened for writing, with how many input lines it already holds. A device or
    FIFO is written in place (0 lines). A regular file is written as OUT.tmp, synced and
    renamed over it when the block ends without an error, so it is never half-written; with
    ``resume`` (e.g. :func:`resume_point`: how many input lines an OUT.tmp holds whole, the
    rest cut), the OUT.tmp an interrupted run left is continued. An error removes OUT.tmp; an
    interruption (Ctrl-C) keeps it for ``--resume``."""
    if output.in_place:
        stream = _open(output.path, output.target, "w")
        try:
            yield Writer(stream, output.path), 0
        except BaseException:
            _close(stream, output.path, quietly=True)  # the error on its way says it
            raise
        _close(stream, output.path)
        return
    tmp = output.tmp
    done = resume(tmp) if resume is not None and tmp.is_file() else 0
    if done:
        log(f"resuming after the {done} input line(s) already translated in {tmp}")
    stream = _open(output.path, tmp, "a" if done else "w")
    try:
        if output.target.is_file():
            shutil.copymode(output.target, tmp)  # a replaced file keeps its permissions
        yield Writer(stream, output.path), done
    except KeyboardInterrupt:
        _close(stream, output.path, quietly=True)
        log(f"the lines translated so far are kept in {tmp}: --resume continues them")
        raise
    except BaseException:
        _close(stream, output.path, quietly=True)
        tmp.unlink(missing_ok=True)
        raise
    try:
        stream.flush()
        os.fsync(stream.fileno())
        _close(stream, output.path)
        os.replace(tmp, output.target)
    except (OSError, OutputError) as err:
        _close(stream, output.path, quietly=True)
        tmp.unlink(missing_ok=True)
        if isinstance(err, OutputError):
            raise
        raise OutputError(f"cannot write {output.path}: {err.strerror or err}") from None


def _open(path: Path, file: Path, mode: str) -> TextIO:
    try:
        return open(file, mode, encoding="utf-8", newline="\n")
    except OSError as err:
        raise OutputError(f"cannot write {path}: {err.strerror or err}") from None


def _close(stream: TextIO, path: Path, quietly: bool = False) -> None:
    """Close ``stream``; data it could not write is an error (or, ``quietly``, dropped, when
    an error is already on its way)."""
    try:
        stream.close()
    except OSError as err:
        if not quietly and not isinstance(err, BrokenPipeError):
            raise OutputError(f"cannot write {path}: {err.strerror or err}") from None
        try:  # the buffer still holds what failed; closing again drops it
            stream.close()
        except OSError:
            pass


def resume_point(partial: Path, rows: bool, alignment: bool, multiple: int = 1) -> int:
    """How many input lines the output an interrupted run left holds whole (as
    :func:`format_lines` wrote them), rounded down to a ``multiple``; the file is cut after
    them: a cut-off last line goes, and of rows, those of the last line (some may be missing).
    A file in another format than the one asked for is refused."""
    data = partial.read_bytes()
    lines = [line + b"\n" for line in data.split(b"\n")[:-1]]  # whole lines, \n alone ends one
    numbers = [int(m.group(1)) if (m := _ROW.match(line)) else None for line in lines]
    if lines:
        fields = len(lines[0].split(SEPARATOR.encode())) if numbers[0] == 0 else 1
        found = _format_name(fields >= 3, fields >= 4)
        if found != _format_name(rows, alignment):
            raise UserError(
                f"cannot resume {partial}: it holds {found}, but this run writes "
                f"{_format_name(rows, alignment)}; give the interrupted run's flags, or leave "
                "out --resume to start over"
            )
        if rows and not all(
            n is not None and n - m in (0, 1) for m, n in zip([0, *numbers], numbers)
        ):
            raise UserError(
                f"cannot resume {partial}: its rows are not numbered 0, 1, 2 ... in order"
            )
    done = (numbers[-1] if lines else 0) if rows else len(lines)
    done -= done % multiple
    kept = sum(1 for n in numbers if n < done) if rows else done  # rows are in order
    with open(partial, "r+b") as f:
        f.truncate(sum(len(line) for line in lines[:kept]))
    return done


def _format_name(rows: bool, alignment: bool) -> str:
    if not rows:
        return "plain text"
    return "rows LINE ||| TEXT ||| SCORE" + (" ||| ALIGNMENT" if alignment else "")
