"""Preparing the training data: streamed into memory-mapped Arrow shards, chunk by chunk in
worker processes, atomically, and read back as batches; several corpora by weight."""

import json
import os
import signal
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest
import torch

from tests.conftest import tiny_config, write_word_corpus
from translate.data import outdir
from translate.data.batches import bucket_batches
from translate.data.corpus import filter_pairs, read_pairs, read_parallel
from translate.data.prepare import _chunks, _sample_pairs, prepare
from translate.errors import UserError
from translate.train.loop import train

QUIET = {"log": lambda message: None}


def rows_of(train_set) -> list:
    """Every row as (line, source ids, target ids)."""
    rows = np.arange(len(train_set))
    src, tgt = train_set.ids(rows)
    lines = train_set.table.column("line").to_pylist()
    return [(line, s.tolist(), t.tolist()) for line, s, t in zip(lines, src, tgt)]


def test_many_chunks_in_two_workers_equal_one_chunk_in_this_process(word_corpus, tmp_path):
    one = prepare(tiny_config(word_corpus, f"out_dir={tmp_path / 'one'}"), workers=1, **QUIET)
    many = prepare(
        tiny_config(word_corpus, f"out_dir={tmp_path / 'many'}"), workers=2, chunk_pairs=37, **QUIET
    )
    assert len(one.train) == len(many.train) > 1900
    assert rows_of(one.train) == rows_of(many.train)
    assert one.train.report == many.train.report
    assert len(many.train.table.column("src").chunks) > 50  # one record batch per chunk


def test_batches_from_the_mapped_files_equal_those_of_the_corpus_in_memory(word_corpus, tmp_path):
    cfg = tiny_config(word_corpus, f"out_dir={tmp_path}", "data.max_len=4")
    data = prepare(cfg, **QUIET)
    # the same corpus read, encoded and filtered in memory
    src, tgt = read_parallel(str(word_corpus / "train"), "de", "en")
    src_ids, tgt_ids = data.src_vocab.encode(src), data.tgt_vocab.encode(tgt)
    keep, report = filter_pairs(src_ids, tgt_ids, 4, cfg.data.max_ratio)
    assert report.too_long > 0 and report == data.train.report
    src_ids, tgt_ids = [src_ids[i] for i in keep], [tgt_ids[i] for i in keep]
    rng = np.random.default_rng([7, 2])  # seed 7, epoch 2
    lengths = [len(s) for s in src_ids], [len(t) for t in tgt_ids]
    expected = bucket_batches(*lengths, 300, rng)
    got = data.train.epoch(2, 7, [1.0], 300)
    assert [b.tolist() for b in got] == [b.tolist() for b in expected]
    for rows in got[:20]:
        src_got, tgt_got = data.train.ids(rows)
        assert [s.tolist() for s in src_got] == [src_ids[i] for i in rows]
        assert [t.tolist() for t in tgt_got] == [tgt_ids[i] for i in rows]
    assert [b.tolist() for b in data.train.epoch(2, 7, [1.0], 300)] == [b.tolist() for b in got]
    assert [b.tolist() for b in data.train.epoch(3, 7, [1.0], 300)] != [b.tolist() for b in got]


def test_corpus_weights_decide_how_often_their_pairs_are_seen(tmp_path):
    for name, n, seed in (("big", 600, 1), ("small", 200, 2)):
        (tmp_path / name).mkdir()
        write_word_corpus(tmp_path / name, n_train=n, n_dev=20, seed=seed)
    big, small = tmp_path / "big" / "train", tmp_path / "small" / "train"
    cfg = tiny_config(
        tmp_path,
        f"out_dir={tmp_path / 'model'}",
        f"data.train=[{{path: {big}, weight: 0.5}}, {{path: {small}, weight: 3}}]",
        f"data.dev={tmp_path / 'big' / 'dev'}",
        "train.max_epochs=1",
        "train.log_every=1",
        "train.valid_bleu_sentences=0",
    )
    data = prepare(cfg, **QUIET)
    rows = np.concatenate(data.train.epoch(1, 1, [0.5, 3.0], 400))
    corpus = data.train.corpus_of(rows)
    n_big, n_small = (data.train.corpora[i]["rows"] for i in (0, 1))
    assert (corpus == 0).sum() == round(0.5 * n_big) and len(set(rows[corpus == 0])) == round(
        0.5 * n_big
    )
    assert np.all(np.bincount(rows[corpus == 1])[data.train.corpora[1]["first_row"] :] == 3)
    # a whole epoch of training says the same in metrics.jsonl
    train(cfg, **QUIET)
    log = [
        json.loads(line) for line in (tmp_path / "model" / "metrics.jsonl").read_text().splitlines()
    ]
    seen = [entry["pairs_seen"] for entry in log if "pairs_seen" in entry][-1]
    assert seen == {str(big): round(0.5 * n_big), str(small): 3 * n_small}


@pytest.mark.parametrize("kind", ["bad UTF-8", "no tab"])
def test_a_bad_line_in_chunk_3_is_named_and_leaves_no_prepared_data(tmp_path, kind):
    if kind == "bad UTF-8":  # a prefix corpus with a bad source line
        src = [b"hund katze\n"] * 40
        src[24] = b"kaputt \xff\n"
        (tmp_path / "train.de").write_bytes(b"".join(src))
        (tmp_path / "train.en").write_bytes(b"dog cat\n" * 40)
        corpus, message = tmp_path / "train", r"train\.de: line 25 is not valid UTF-8"
    else:  # a TSV corpus with a line that has no tab
        lines = [b"hund katze\tdog cat\n"] * 40
        lines[24] = b"ohne tab\n"
        (tmp_path / "train.tsv").write_bytes(b"".join(lines))
        corpus, message = tmp_path / "train.tsv", "line 25 has no tab"
    cfg = tiny_config(tmp_path, f"data.train={corpus}", "data.dev=", "data.vocab_size=25")
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "spm.model").write_bytes(_vocab_for(["hund katze", "dog cat"]))
    with pytest.raises(UserError, match=message):
        prepare(cfg, workers=2, chunk_pairs=10, **QUIET)
    assert sorted(p.name for p in (tmp_path / "model").iterdir()) == [".lock", "spm.model"]


def _vocab_for(lines: list[str]) -> bytes:
    from translate.data.vocab import train_vocab

    return train_vocab(lines * 20, vocab_size=25).model_proto


# ``translate prepare`` that kills itself (SIGKILL: no clean-up) once it has written the
# second of its chunks into prepared.tmp/, whatever the machine's speed
KILLED_AFTER_TWO_CHUNKS = """
import os, signal, sys
from translate.data import shards
from translate.cli import main

real, written = shards._write_chunk, []
def write_chunk(*args):
    real(*args)
    written.append(1)
    if len(written) == 2:
        os.kill(os.getpid(), signal.SIGKILL)
shards._write_chunk = write_chunk
sys.exit(main(sys.argv[1:]))
"""


def test_an_interrupted_prepare_is_not_taken_for_finished(tmp_path):
    write_word_corpus(tmp_path, n_train=50_000, n_dev=10)  # 3 chunks of 20,000 pairs
    config = tmp_path / "c.yaml"
    config.write_text(f"data: {{train: {tmp_path / 'train'}, vocab_size: 40}}\n")
    out = tmp_path / "model"
    arguments = ["prepare", str(config), f"out_dir={out}"]
    killed = subprocess.run(
        [sys.executable, "-c", KILLED_AFTER_TWO_CHUNKS, *arguments],
        capture_output=True,
        timeout=300,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert not (out / "prepared").exists() and list(out.glob("prepared.tmp/*.arrow"))
    command = [sys.executable, "-m", "translate", *arguments]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    manifest = json.loads((out / "prepared" / "manifest.json").read_text())
    assert manifest["corpora"][0]["lines"] == 50_000
    assert not (out / "prepared.tmp").exists()


def test_a_corpus_emptied_by_the_filter_is_named(tmp_path):
    (tmp_path / "t.de").write_text("a b c d e f g h\n" * 30)
    (tmp_path / "t.en").write_text("x\n" * 30)
    cfg = tiny_config(
        tmp_path,
        f"data.train={tmp_path / 't'}",
        "data.dev=",
        "data.max_ratio=1.5",
        "data.vocab_size=20",
    )
    with pytest.raises(UserError, match=r"no pair of '.*t' is left after filtering"):
        train(cfg, **QUIET)
    # the SentencePiece model trained on it is saved only with data it encoded: a rerun on
    # a corrected corpus trains its own
    assert sorted(p.name for p in (tmp_path / "model").iterdir()) == [".lock"]


@pytest.mark.parametrize("blank", ["de", "en", "both"])
def test_a_corpus_of_blank_lines_is_one_error_before_anything_is_written(tmp_path, blank):
    for side in ("de", "en"):
        text = "  \n\n\t\n" * 10 if blank in (side, "both") else "hund\nkatze\nbaum\n" * 10
        (tmp_path / f"t.{side}").write_text(text)
    cfg = tiny_config(tmp_path, f"data.train={tmp_path / 't'}", "data.dev=")
    side = "target" if blank == "en" else "source"
    with pytest.raises(UserError) as refused:
        prepare(cfg, **QUIET)
    message = str(refused.value)
    assert message == f"the training data has no {side} text: all 30 pairs are blank there"
    assert sorted(p.name for p in (tmp_path / "model").iterdir()) == [".lock"]


def test_prepare_is_refused_while_another_process_holds_the_out_dir(word_corpus, tmp_path):
    cfg = tiny_config(word_corpus, f"out_dir={tmp_path / 'model'}")
    with outdir.hold(tmp_path / "model"):
        with pytest.raises(
            outdir.Busy, match=rf"in use by another translate process \(PID {os.getpid()}\)"
        ):
            prepare(cfg, **QUIET)
        assert sorted(p.name for p in (tmp_path / "model").iterdir()) == [".lock"]
    prepare(cfg, **QUIET)  # free again once the holder lets go
    assert (tmp_path / "model" / "prepared" / "manifest.json").is_file()


def test_an_experiment_prepared_by_an_older_version_is_prepared_again(word_corpus, tmp_path):
    cfg = tiny_config(word_corpus, f"out_dir={tmp_path}")
    first = prepare(cfg, **QUIET)
    torch.save({"key": "old"}, tmp_path / "cache.pt")  # what older versions left
    (tmp_path / "prepared" / "manifest.json").unlink()
    messages = []
    again = prepare(cfg, log=messages.append)
    assert any("written by an older translate" in m for m in messages)
    assert rows_of(again.train) == rows_of(first.train)


def test_sentencepiece_sample_is_bounded_uniform_and_blind_to_chunk_boundaries(tmp_path):
    pairs = [(f"s{i}", f"t{i}") for i in range(50)]

    def chunked(size: int) -> list:
        return [(0, pairs[i : i + size]) for i in range(0, len(pairs), size)]

    sample, total = _sample_pairs(chunked(7), 10, seed=3)
    positions = [int(src[1:]) for _, src, _ in sample]
    assert total == 50 and len(sample) == 10 and positions == sorted(set(positions))
    assert all(pairs[i] == (src, tgt) for i, (_, src, tgt) in zip(positions, sample))
    for size in (1, 13, 50):
        assert _sample_pairs(chunked(size), 10, seed=3) == (sample, 50)
    assert _sample_pairs(chunked(7), 100, seed=3) == ([(0, *pair) for pair in pairs], 50)
    # each position is drawn 10 times in 50: 400 of 2000 seeds (sd 18)
    drawn = Counter(
        src for seed in range(2000) for _, src, _ in _sample_pairs(chunked(7), 10, seed)[0]
    )
    assert all(abs(drawn[src] - 400) < 80 for src, _ in pairs), drawn

    # raw-line chunks of files decode only what they draw: the same sample as decoded pairs
    write_word_corpus(tmp_path, n_train=300, n_dev=1)
    data = tiny_config(tmp_path).data
    decoded = list(read_pairs(str(tmp_path / "train"), "de", "en", False))
    raw = _sample_pairs(_chunks(data, 64), 40, seed=5)
    assert raw == _sample_pairs([(0, decoded)], 40, seed=5) and raw[1] == 300


@pytest.mark.parametrize("joint", [True, False])
def test_the_log_gives_the_vocabulary_size_sentencepiece_built(word_corpus, tmp_path, joint):
    logged = []
    cfg = tiny_config(
        word_corpus, f"out_dir={tmp_path}", "data.vocab_size=60", f"data.joint_vocab={joint}"
    )
    data = prepare(cfg, log=logged.append)
    src, tgt = len(data.src_vocab), len(data.tgt_vocab)
    assert src < 60 and tgt < 60  # the tiny corpus does not hold 60 pieces
    built = f"{src} pieces" if joint else f"{src} source and {tgt} target pieces"
    assert f"SentencePiece built {built} (data.vocab_size 60)" in logged
