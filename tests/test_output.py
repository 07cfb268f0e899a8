"""Where translate translate writes: regular files replaced whole, devices, FIFOs and symlinks
written through, directories refused, nothing left beside the output after an error, and what
an interrupted output resumes after."""

from __future__ import annotations

import errno
import os
import stat
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest

from translate.decoding import DecodeOptions
from translate.errors import UserError
from translate.output import (
    Output,
    OutputError,
    Writer,
    check_output,
    opened,
    resume_point,
    translate_file,
)
from translate.translator import Translator

LINES = ["hund katze", "", "baum", "auto buch tisch"]
GREEDY = DecodeOptions(beam=1)


@pytest.fixture(scope="module")
def translator(trained_dir) -> Translator:
    return Translator.from_dir(trained_dir, device="cpu")


@pytest.fixture(scope="module")
def expected(translator) -> str:
    """What the lines translate to, one a line."""
    return "".join(text + "\n" for text in translator.translate(LINES, beam=1))


@pytest.fixture
def source(tmp_path) -> Path:
    path = tmp_path / "in.de"
    path.write_text("".join(line + "\n" for line in LINES), encoding="utf-8")
    return path


def write(translator, source, output, **flags):
    return translate_file(translator, str(source), output, GREEDY, log=lambda m: None, **flags)


def beside(path: Path) -> list[str]:
    """What is in the folder of ``path`` besides the input file."""
    return sorted(p.name for p in path.parent.iterdir() if p.name != "in.de")


@contextmanager
def fifo_reader(path: Path):
    """A FIFO at ``path`` with its read end open (so a writer's open does not wait), yielding
    a function that returns what was written to it."""
    os.mkfifo(path)
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)

    def read() -> bytes:
        data = b""
        while True:
            try:
                chunk = os.read(fd, 65536)
            except BlockingIOError:  # nothing more now: the writer wrote all before returning
                return data
            if not chunk:
                return data
            data += chunk

    try:
        yield read
    finally:
        os.close(fd)


def test_a_regular_file_is_replaced_whole_and_keeps_its_mode(translator, source, expected):
    out = source.parent / "out.en"
    out.write_text("the old translation\n")
    out.chmod(0o640)
    checked = check_output(out)
    assert checked == Output(out, out.resolve(), in_place=False)
    with opened(checked) as (stream, done):
        stream.write("half\n")
        # until the end, the old file is whole and the new one grows beside it
        assert out.read_text() == "the old translation\n" and done == 0
        assert checked.tmp == out.with_name("out.en.tmp") and checked.tmp.is_file()
    assert out.read_text() == "half\n" and stat.S_IMODE(out.stat().st_mode) == 0o640
    assert write(translator, source, out) == (len(LINES), 0)
    assert out.read_text() == expected and beside(out) == ["out.en"]


def test_a_new_file_is_created(translator, source, expected):
    out = source.parent / "new.en"
    write(translator, source, out)
    assert out.read_text() == expected and beside(out) == ["new.en"]


def test_a_symlink_is_kept_and_its_target_written(translator, source, expected, tmp_path):
    (tmp_path / "real").mkdir()
    target = tmp_path / "real" / "out.en"
    target.write_text("old\n")
    link = tmp_path / "link.en"
    link.symlink_to(target)
    write(translator, source, link)
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert target.read_text() == expected
    assert beside(link) == ["link.en", "real"] and beside(target) == ["out.en"]
    dangling = tmp_path / "dangling.en"
    dangling.symlink_to(tmp_path / "real" / "later.en")
    write(translator, source, dangling)
    assert dangling.is_symlink() and (tmp_path / "real" / "later.en").read_text() == expected


@pytest.mark.parametrize("through_link", [False, True])
def test_a_fifo_is_written_in_place(translator, source, expected, tmp_path, through_link):
    fifo = tmp_path / "fifo"
    with fifo_reader(fifo) as read:
        target = fifo
        if through_link:
            target = tmp_path / "link"
            target.symlink_to(fifo)
        assert check_output(target).in_place
        assert write(translator, source, target) == (len(LINES), 0)
        assert read().decode() == expected
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)  # still a FIFO, not a file put in its place
    assert not (tmp_path / "fifo.tmp").exists() and not (tmp_path / "link.tmp").exists()
    assert target.is_symlink() == through_link


def test_a_pipe_behind_a_magic_link_is_written_in_place(translator, source, expected, tmp_path):
    """-o /dev/stdout with stdout a pipe: /proc's link names no file that could be replaced."""
    read_end, write_end = os.pipe()
    link = tmp_path / "stdout"
    link.symlink_to(f"/proc/self/fd/{write_end}")  # as /dev/stdout -> /proc/self/fd/1
    try:
        assert check_output(link) == Output(link, link, in_place=True)
        write(translator, source, link)
        os.close(write_end)
        with open(read_end, "rb") as pipe:
            assert pipe.read().decode() == expected
    finally:
        with suppress(OSError):
            os.close(write_end)
    assert link.is_symlink() and beside(link) == ["stdout"]


def _restore_dev_null() -> None:
    """Put /dev/null back as the character device 1,3 if a regression replaced it (as root)."""
    if not stat.S_ISCHR(os.lstat("/dev/null").st_mode):
        os.unlink("/dev/null")
        os.mknod("/dev/null", stat.S_IFCHR | 0o666, os.makedev(1, 3))


def test_dev_null_is_written_in_place_and_stays_a_device(translator, source, tmp_path):
    # the FIFO case above proves the in-place path; here the device must be seen as one first
    assert stat.S_ISCHR(os.lstat("/dev/null").st_mode)
    checked = check_output(Path("/dev/null"))
    assert checked is not None and checked.in_place, "would replace /dev/null: not run"
    link = tmp_path / "null"
    link.symlink_to("/dev/null")
    assert check_output(link).in_place
    try:
        assert write(translator, source, Path("/dev/null")) == (len(LINES), 0)
        assert write(translator, source, link) == (len(LINES), 0)
    finally:
        _restore_dev_null()
    assert stat.S_ISCHR(os.lstat("/dev/null").st_mode) and not os.path.exists("/dev/null.tmp")
    assert link.is_symlink()
    with pytest.raises(UserError, match="--resume continues a regular file; /dev/null is not one"):
        write(translator, source, Path("/dev/null"), resume=True)


def test_a_full_device_is_a_one_line_error(translator, source):
    assert check_output(Path("/dev/full")).in_place, "would replace /dev/full: not run"
    with pytest.raises(OutputError) as refused:
        write(translator, source, Path("/dev/full"))
    assert str(refused.value) == "cannot write /dev/full: No space left on device"
    assert stat.S_ISCHR(os.lstat("/dev/full").st_mode) and not os.path.exists("/dev/full.tmp")


def test_a_directory_or_a_missing_folder_is_refused_before_anything_is_written(
    translator, source, tmp_path
):
    (tmp_path / "folder").mkdir()
    for output, message in [
        (tmp_path / "folder", f"cannot write {tmp_path}/folder: it is a directory"),
        (tmp_path / "none/out.en", f"the folder {tmp_path}/none does not exist"),
        (source / "out.en", f"cannot write {source}/out.en: Not a directory"),
    ]:
        with pytest.raises(OutputError) as refused:
            write(translator, source, output)
        assert message in str(refused.value) and "\n" not in str(refused.value)
    assert beside(source) == ["folder"] and not list((tmp_path / "folder").iterdir())


def test_an_error_midway_leaves_the_old_file_and_no_tmp(translator, tmp_path):
    source = tmp_path / "in.de"
    source.write_bytes(b"hund\nkatze\nbaum \xff\n")
    out = tmp_path / "out.en"
    out.write_text("the old translation\n")
    with pytest.raises(UserError, match="line 3 is not valid UTF-8"):
        write(translator, source, out)
    assert out.read_text() == "the old translation\n" and beside(out) == ["out.en"]
    with pytest.raises(RuntimeError), opened(check_output(out)) as (stream, _):
        stream.write("a line\n")
        raise RuntimeError("a failure in the middle")
    assert out.read_text() == "the old translation\n" and beside(out) == ["out.en"]


def test_an_interruption_keeps_the_tmp_for_resume(translator, source, expected):
    out = source.parent / "out.en"
    said = []
    with pytest.raises(KeyboardInterrupt), opened(check_output(out), log=said.append) as (s, _):
        s.write(expected.splitlines(keepends=True)[0] + "cut off")
        raise KeyboardInterrupt
    assert not out.exists() and said == [
        f"the lines translated so far are kept in {out}.tmp: --resume continues them"
    ]
    assert write(translator, source, out, resume=True) == (len(LINES) - 1, 0)
    assert out.read_text() == expected and beside(out) == ["out.en"]


ROWS = b"0 ||| a ||| -1.0000\n0 ||| b ||| -2.0000\n1 |||  ||| 0.0000\n2 ||| c ||| -1.0000\n2 ||| d"


def test_resume_point_keeps_whole_lines_and_cuts_the_rest(tmp_path):
    path = tmp_path / "out.tmp"
    for data, rows, multiple, done, kept in [
        (b"a\nb\nhalf", False, 1, 2, b"a\nb\n"),
        (b"a\n\nc\n", False, 2, 2, b"a\n\n"),  # sampling resumes where a chunk starts
        (b"", False, 1, 0, b""),
        (b"", True, 1, 0, b""),
        # the rows of the last line may lack some (here one of 2, cut short): they go too
        (ROWS, True, 1, 2, ROWS[: ROWS.index(b"2 |||")]),
        (ROWS + b" ||| -3.0000\n", True, 1, 2, ROWS[: ROWS.index(b"2 |||")]),
        (ROWS, True, 2, 2, ROWS[: ROWS.index(b"2 |||")]),
        (ROWS, True, 3, 0, b""),
    ]:
        path.write_bytes(data)
        assert resume_point(path, rows, alignment=False, multiple=multiple) == done, data
        assert path.read_bytes() == kept


def test_resume_point_refuses_another_format(tmp_path):
    path = tmp_path / "out.tmp"
    with_alignment = b"0 ||| a ||| -1.0000 ||| 0-0\n1 ||| b ||| -1.0000 ||| 0-0\n"
    for data, rows, alignment, message in [
        (ROWS, False, False, "it holds rows LINE ||| TEXT ||| SCORE, but this run writes plain"),
        (b"a\nb\n", True, False, "it holds plain text, but this run writes rows LINE ||| TEXT"),
        (ROWS, True, True, "but this run writes rows LINE ||| TEXT ||| SCORE ||| ALIGNMENT;"),
        (with_alignment, True, False, "holds rows LINE ||| TEXT ||| SCORE ||| ALIGNMENT, but"),
        (b"0 ||| a ||| 1\n2 ||| b ||| 1\n", True, False, "rows are not numbered 0, 1, 2 ..."),
        (b"0 ||| a ||| 1\nb\n", True, False, "rows are not numbered 0, 1, 2 ..."),
    ]:
        path.write_bytes(data)
        with pytest.raises(UserError) as refused:
            resume_point(path, rows, alignment)
        assert str(refused.value).startswith(f"cannot resume {path}: ")
        assert message in str(refused.value) and "\n" not in str(refused.value)
        assert path.read_bytes() == data  # left as it was, for a run with the right flags


def test_the_writer_names_what_it_cannot_write_and_lets_a_closed_pipe_through():
    class Full:
        def write(self, text):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        flush = write

    with pytest.raises(OutputError, match=r"^cannot write out\.en: No space left on device$"):
        Writer(Full(), "out.en").write("x")
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader has gone, as head does after its lines
    pipe = open(write_end, "w")
    with pytest.raises(BrokenPipeError):
        writer = Writer(pipe, "stdout")
        writer.write("x\n")
        writer.flush()
    with suppress(BrokenPipeError):  # what could not be written is still in its buffer
        pipe.close()
