import gzip
import json
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from translate.data.batches import bucket_batches, pair_batch
from translate.data.corpus import (
    BAD_UTF8_HINT,
    DataError,
    RawLines,
    filter_pairs,
    pair_chunks,
    read_lines,
    read_parallel,
    utf8_lines,
)
from translate.data.vocab import BOS, EOS, PAD


def test_lines_split_on_newline_only(tmp_path):
    path = tmp_path / "x.txt"
    path.write_bytes("a\u2028b\r\n\x0cc\n\ne\rf\nd".encode())
    assert read_lines(path) == ["a\u2028b", "\x0cc", "", "e\rf", "d"]


def test_gzip_and_prefix_pairs(tmp_path):
    with gzip.open(tmp_path / "train.de.gz", "wt", encoding="utf-8") as f:
        f.write("eins\nzwei\n")
    (tmp_path / "train.en").write_text("one\ntwo\n", encoding="utf-8")
    assert read_parallel(str(tmp_path / "train"), "de", "en") == (["eins", "zwei"], ["one", "two"])


def test_length_mismatch_names_both_counts(tmp_path):
    (tmp_path / "t.de").write_text("a\nb\nc\n")
    (tmp_path / "t.en").write_text("a\nb\n")
    with pytest.raises(DataError, match=r"t\.de has 3 lines, .*t\.en has 2"):
        read_parallel(str(tmp_path / "t"), "de", "en")


def test_chunks_of_raw_lines_read_as_the_pairs_do(tmp_path):
    """prepare's reader hands undecoded chunks to its workers: decoded, they are the pairs
    read_pairs gives (BOM, carriage returns, line numbers of bad lines), and files of
    different lengths fail with both counts, whichever is longer and wherever it ends."""
    (tmp_path / "t.de").write_bytes(b"\xef\xbb\xbfeins\r\nzwei\ndrei\nvier\nf\xfcnf\n")
    (tmp_path / "t.en").write_bytes(b"one\ntwo\nthree\nfour\nfive\n")
    chunks = list(pair_chunks(str(tmp_path / "t"), "de", "en", False, 2))
    assert [(c.first, len(c.src)) for c in chunks] == [(1, 2), (3, 2), (5, 1)]
    assert chunks[0].pairs() + chunks[1].pairs() == [
        ("eins", "one"),
        ("zwei", "two"),
        ("drei", "three"),
        ("vier", "four"),
    ]
    with pytest.raises(DataError, match=r"t\.de: line 5 is not valid UTF-8"):
        chunks[2].pairs()
    for lines in (2, 3, 4, 6, 7):
        (tmp_path / "t.en").write_text("x\n" * lines)
        with pytest.raises(DataError, match=rf"t\.de has 5 lines, .*t\.en has {lines}\b"):
            list(pair_chunks(str(tmp_path / "t"), "de", "en", False, 2))
        with pytest.raises(DataError, match=rf"t\.en has {lines} lines, .*t\.de has 5\b"):
            list(pair_chunks(str(tmp_path / "t"), "en", "de", False, 2))


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.text(alphabet="ab\r\u00fc\u20ac\ufeff ", max_size=5), min_size=1, max_size=6),
    st.booleans(),
    st.sampled_from([1, 7]),
    st.booleans(),
)
def test_a_chunk_decodes_at_once_as_line_by_line(lines, final_newline, first, bad_byte):
    """Workers decode a chunk in one call: the same strings (final carriage return, BOM on a
    file's first line, no newline at the end) and the same errors as decoding line by line."""
    raw = [line.encode() + b"\n" for line in lines]
    if bad_byte:
        raw[len(raw) // 2] = b"x\xff" + raw[len(raw) // 2]
    if not final_newline:
        raw[-1] = raw[-1].removesuffix(b"\n") or b"z"
    for replace in (False, True):
        chunk = RawLines("s", "t", first, raw, raw, replace)
        try:
            expected = list(utf8_lines(raw, "s", replace, BAD_UTF8_HINT, first=first))
        except DataError as error:
            with pytest.raises(DataError, match=re.escape(str(error))):
                chunk.sides()
        else:
            assert chunk.sides() == (expected, expected)


def test_bad_utf8_gives_the_line_number(tmp_path):
    (tmp_path / "t.de").write_bytes(b"ok\nalso ok\nbad \xff\n")
    with pytest.raises(DataError, match="line 3 is not valid UTF-8"):
        read_lines(tmp_path / "t.de")


def test_bad_utf8_in_training_data_can_be_replaced(tmp_path):
    from translate.data.corpus import DataError, read_parallel

    (tmp_path / "t.de").write_bytes(b"gut\nschlecht \xff\n")
    (tmp_path / "t.en").write_bytes(b"good\nbad\n")
    with pytest.raises(DataError, match="t.de: line 2 is not valid UTF-8.*replace_bad_utf8"):
        read_parallel(str(tmp_path / "t"), "de", "en")
    src, tgt = read_parallel(str(tmp_path / "t"), "de", "en", replace_bad_utf8=True)
    assert src == ["gut", "schlecht \ufffd"] and tgt == ["good", "bad"]


def test_missing_files(tmp_path):
    with pytest.raises(DataError, match="no file .*t.de or .*t.de.gz"):
        read_parallel(str(tmp_path / "t"), "de", "en")


def test_tsv_and_jsonl(tmp_path):
    (tmp_path / "p.tsv").write_text("Hallo\tHello\nJa\tYes\n", encoding="utf-8")
    assert read_parallel(str(tmp_path / "p.tsv"), "de", "en") == (["Hallo", "Ja"], ["Hello", "Yes"])
    rows = [{"translation": {"de": "Hallo", "en": "Hello"}}, {"translation": {"de": "", "en": ""}}]
    (tmp_path / "p.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    assert read_parallel(str(tmp_path / "p.jsonl"), "de", "en") == (["Hallo", ""], ["Hello", ""])


def test_filter_reports_each_reason():
    src = [[5], [], [5] * 30, [5] * 20, [5, 6]]
    tgt = [[6], [6], [6] * 2, [6] * 4, [7]]
    keep, report = filter_pairs(src, tgt, max_len=25, max_ratio=3.0)
    assert keep == [0, 4]
    assert (report.empty, report.too_long, report.bad_ratio, report.kept) == (1, 1, 1, 2)


def test_buckets_cover_every_pair_within_budget():
    src = np.array([i % 17 + 1 for i in range(500)])
    tgt = np.array([i % 13 + 1 for i in range(500)])
    batches = bucket_batches(src, tgt, 120, np.random.default_rng(3))
    assert sorted(i for b in batches for i in b.tolist()) == list(range(500))
    for b in batches:
        width = max(max(src[i], tgt[i]) + 1 for i in b)
        assert width * len(b) <= 120 or len(b) == 1
    again = bucket_batches(src, tgt, 120, np.random.default_rng(3))  # seeded: reproducible
    assert [b.tolist() for b in again] == [b.tolist() for b in batches]
    other = bucket_batches(src, tgt, 120, np.random.default_rng(4))
    assert [b.tolist() for b in other] != [b.tolist() for b in batches]


def test_packed_sort_gives_the_batches_of_a_plain_lexsort():
    """The in-place packed sort must give exactly the order of the straightforward one
    (shuffle, then lexsort by target and source length), so that epochs and resumed runs
    keep their batches; and long lines (over 65,535 pieces) take the lexsort path."""

    def plain(src, tgt, budget, rng):
        order = rng.permutation(len(src))
        order = order[np.lexsort((src[order], tgt[order]))]
        cuts, size, width = [], 0, 0
        for position, item in enumerate((np.maximum(src[order], tgt[order]) + 1).tolist()):
            if size and max(width, item) * (size + 1) > budget:
                cuts.append(position)
                size, width = 0, 0
            size, width = size + 1, max(width, item)
        batches = np.split(order, cuts)
        return [batches[i].tolist() for i in rng.permutation(len(batches))]

    draw = np.random.default_rng(0)
    for n, longest in [(1, 3), (1000, 5), (3000, 80), (200, 70000)]:
        src = draw.integers(1, longest + 1, n).astype(np.uint16 if longest < 65536 else np.int64)
        tgt = draw.integers(1, longest + 1, n).astype(src.dtype)
        expected = plain(src, tgt, 400, np.random.default_rng([5, n]))
        got = bucket_batches(src, tgt, 400, np.random.default_rng([5, n]))
        assert [b.tolist() for b in got] == expected
        items = np.arange(n) * 7
        with_items = bucket_batches(src, tgt, 400, np.random.default_rng([5, n]), items)
        assert [b.tolist() for b in with_items] == [[7 * i for i in b] for b in expected]


def test_pair_batch_pads_on_the_right():
    batch = pair_batch([[5, 6], [7]], [[8], [9, 10, 11]])
    assert batch.src_tokens.tolist() == [[5, 6, 3], [7, 3, 0]]
    assert batch.src_lengths.tolist() == [3, 2]
    assert batch.tgt_in.tolist() == [[2, 8, 0, 0], [2, 9, 10, 11]]


def test_targets_are_shifted_by_one():
    batch = pair_batch([[5, 6, 7], [8, 9], [10, 11, 12, 13, 14]], [[6, 7], [9, 10, 11], [12]])
    assert batch.tgt_in[0].tolist() == [BOS, 6, 7, PAD]
    assert batch.tgt_out[0].tolist() == [6, 7, EOS, PAD]
    assert batch.n_tgt_tokens == 2 + 3 + 1 + 3


def test_utf8_lines_drop_a_byte_order_mark_and_carriage_returns():
    from translate.data.corpus import utf8_lines

    stream = [b"\xef\xbb\xbfeins\r\n", b"zwei\n", b"\xef\xbb\xbfdrei"]
    assert list(utf8_lines(stream, "x", False, "")) == ["eins", "zwei", "\ufeffdrei"]
    assert list(utf8_lines(stream, "x", False, "", skip=2)) == ["\ufeffdrei"]
