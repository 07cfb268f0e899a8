"""Where ``translate translate`` writes, respecting what it writes to: stdout; a regular file (or
a new one) written as OUT.tmp beside it and renamed when complete, so that it is never
half-written and an interrupted run can resume it; a device or FIFO (``/dev/null``, a pipe)
written in place, never replaced. A symlink is followed: its target is written as above and the
link is kept. A directory is refused. A failed write is one line naming what could not be
written, and leaves no OUT.tmp behind (only an interruption keeps it, for ``--resume``)."""

from __future__ import annotations

import itertools
import os
import shutil
import stat
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from .errors import UserError

if TYPE_CHECKING:
    from .decoding import DecodeOptions
    from .translator import Translator


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
    formatted as :meth:`Translator.translate_stream` says and written as :func:`opened` says;
    with ``resume``, the OUT.tmp an interrupted run left is continued after its whole lines.
    Returns how many lines were translated and how many cut."""
    from tqdm import tqdm

    from .translator import input_lines

    if resume and (output is None or numbered or options.sampling is not None):
        raise UserError("--resume continues an output file: give -o, without --n-best or --sample")
    checked = check_output(output)
    if resume and checked is not None and checked.in_place:
        raise UserError(f"--resume continues a regular file; {output} is not one")
    lines = input_lines(source, replace_bad_utf8)  # refused now if it cannot be read
    if checked is None:
        count, truncated = translator.translate_stream(
            lines, Writer(sys.stdout, "stdout"), options, numbered=numbered, scores=scores
        )
    else:
        with opened(checked, resume, log) as (out, done):
            lines = itertools.islice(lines, done, None)  # those an interrupted run translated
            with tqdm(  # on a terminal only: a log file gets the lines below, not a bar
                desc="translate", unit="line", mininterval=1.0, initial=done, disable=None
            ) as progress:
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
def opened(output: Output, resume: bool = False, log=print) -> Iterator[tuple[Writer, int]]:
    """``output`` opened for writing, with how many whole lines it already holds. A device or
    FIFO is written in place (0 lines). A regular file is written as OUT.tmp, synced and
    renamed over it when the block ends without an error, so it is never half-written; with
    ``resume``, OUT.tmp is continued after the whole lines an interrupted run left in it. An
    error removes OUT.tmp; an interruption (Ctrl-C) keeps it for ``--resume``."""
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
    done = finished_lines(tmp) if resume and tmp.is_file() else 0
    if done:
        log(f"resuming after the {done} lines already in {tmp}")
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


def finished_lines(partial: Path) -> int:
    """How many whole lines a partly written output holds; a cut-off last line is removed."""
    data = partial.read_bytes()
    whole = data[: data.rfind(b"\n") + 1]
    if len(whole) != len(data):
        with open(partial, "r+b") as f:
            f.truncate(len(whole))
    return whole.count(b"\n")
