"""Bad input and bad files: one clear error, or a documented and counted recovery."""

import io
import json
import shutil
import subprocess
import sys

import pytest
import torch
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

import translate.train as train_module
from tests.conftest import tiny_config
from translate.config import UserError
from translate.translate import ModelDirError, Translator, finished_lines


def cli(*args, stdin=None):
    return subprocess.run(
        [sys.executable, "-m", "translate", *map(str, args)],
        input=stdin,
        capture_output=True,
        timeout=300,
    )


def test_newer_model_directory_format_is_refused(trained_dir, tmp_path):
    newer = tmp_path / "newer"
    shutil.copytree(trained_dir, newer)
    values = yaml.safe_load((newer / "config.yaml").read_text())
    values["format_version"] = 99
    (newer / "config.yaml").write_text(yaml.safe_dump(values))
    with pytest.raises(ModelDirError, match="format 99.*upgrade translate"):
        Translator.from_dir(newer)


def test_sentencepiece_model_from_another_training_is_named(trained_dir, tmp_path):
    from translate.vocab import train_vocab

    other = tmp_path / "other"
    shutil.copytree(trained_dir, other)
    vocab = train_vocab(["ganz andere Wörter hier und dort"] * 50, vocab_size=30)
    vocab.save(other / "spm.model")
    with pytest.raises(ModelDirError, match=r"spm.model has \d+ pieces but .*model.pt was"):
        Translator.from_dir(other)


def test_bad_utf8_in_translation_input(trained_dir, tmp_path):
    source = tmp_path / "in.txt"
    source.write_bytes(b"hund\nkatze \xff\xfe\nbaum\n")
    done = cli("translate", "-m", trained_dir, "-i", source, "--threads", 1)
    assert done.returncode == 1
    assert b"line 2 is not valid UTF-8" in done.stderr and b"Traceback" not in done.stderr
    done = cli("translate", "-m", trained_dir, "-i", source, "--replace-bad-utf8")
    assert done.returncode == 0 and done.stdout.decode().splitlines()[0] == "dog"
    assert len(done.stdout.decode().splitlines()) == 3


def test_resume_a_partly_written_output(trained_dir, tmp_path):
    source = tmp_path / "in.txt"
    source.write_text("".join(f"{w}\n" for w in ["hund", "katze", "baum", "auto", "haus"] * 3))
    out = tmp_path / "out.txt"
    full = cli("translate", "-m", trained_dir, "-i", source, "-o", tmp_path / "full.txt")
    assert full.returncode == 0, full.stderr
    expected = (tmp_path / "full.txt").read_text()
    # an interrupted run left 4 whole lines and half of the fifth
    lines = expected.splitlines(keepends=True)
    (tmp_path / "out.txt.tmp").write_text("".join(lines[:4]) + lines[4][:2])
    done = cli("translate", "-m", trained_dir, "-i", source, "-o", out, "--resume")
    assert done.returncode == 0, done.stderr
    assert b"resuming after the 4 lines" in done.stderr
    assert out.read_text() == expected and not (tmp_path / "out.txt.tmp").exists()


def test_finished_lines_cuts_a_partial_line(tmp_path):
    path = tmp_path / "p"
    path.write_bytes(b"a\nb\nhalf")
    assert finished_lines(path) == 2 and path.read_bytes() == b"a\nb\n"


def test_non_finite_losses_are_skipped_and_counted(word_corpus, tmp_path, monkeypatch):
    real = train_module.batch_loss
    calls = {"n": 0}

    def sometimes_nan(*args, **kwargs):
        calls["n"] += 1
        loss = real(*args, **kwargs)
        return loss * float("nan") if calls["n"] in (3, 4, 9) else loss

    monkeypatch.setattr(train_module, "batch_loss", sometimes_nan)
    cfg = tiny_config(
        word_corpus,
        f"out_dir={tmp_path / 'm'}",
        "train.max_steps=20",
        "train.log_every=5",
        "train.valid_bleu_sentences=0",
    )
    train_module.train(cfg, log=lambda message: None)
    log = [json.loads(line) for line in (tmp_path / "m" / "metrics.jsonl").read_text().splitlines()]
    assert max(e.get("skipped", 0) for e in log) == 3
    weights = torch.load(tmp_path / "m" / "model.pt", weights_only=True)
    assert all(torch.isfinite(w).all() for w in weights.values())


def test_many_non_finite_losses_in_a_row_stop_training(word_corpus, tmp_path, monkeypatch):
    monkeypatch.setattr(
        train_module, "batch_loss", lambda *a, **k: torch.tensor(float("inf"), requires_grad=True)
    )
    cfg = tiny_config(word_corpus, f"out_dir={tmp_path / 'm'}", "train.max_steps=50")
    with pytest.raises(UserError, match="20 non-finite losses in a row"):
        train_module.train(cfg, log=lambda message: None)
    assert not (tmp_path / "m" / "model.pt").exists()  # nothing non-finite saved as best


def test_empty_corpus_after_filtering(tmp_path):
    (tmp_path / "t.de").write_text("a b c d e f g h\n" * 30)
    (tmp_path / "t.en").write_text("x\n" * 30)
    cfg = tiny_config(
        tmp_path,
        f"data.train={tmp_path / 't'}",
        "data.dev=",
        "data.max_ratio=1.5",
        "data.vocab_size=20",
    )
    with pytest.raises(UserError, match="no training pair is left after filtering"):
        train_module.train(cfg, log=lambda message: None)


@pytest.fixture(scope="module")
def translator(trained_dir):
    return Translator.from_dir(trained_dir)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.text(max_size=40), max_size=12))
def test_any_unicode_keeps_line_count_and_order(translator, lines):
    # a line of the file format cannot hold a newline: the stream splits on it
    lines = [line.replace("\n", " ") for line in lines]
    out = io.StringIO()
    count = translator.translate_stream(
        iter(f"{line}\n" for line in lines), out, beam=2, chunk_size=5
    )
    produced = out.getvalue().split("\n")
    assert count == len(lines) and produced[-1] == "" and len(produced) == len(lines) + 1
    for line, result in zip(lines, produced):
        if not line.strip():
            assert result == ""


@settings(max_examples=15, deadline=None)
@given(st.permutations(["hund", "katze baum", "auto auto buch", "", "tisch", "stuhl hund"]))
def test_batching_is_invariant_to_input_order(translator, lines):
    reference = dict(zip(lines, translator.translate(lines, beam=3)))
    again = translator.translate(sorted(lines), beam=3)
    assert [reference[line] for line in sorted(lines)] == again


def test_a_failed_save_keeps_the_previous_file(tmp_path, monkeypatch):
    import errno
    import os

    from translate.prepare import save_state

    target = tmp_path / "model.pt"
    save_state({"w": torch.ones(3)}, target)

    def disk_full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(UserError, match="cannot write .*model.pt .*No space left.*intact"):
        save_state({"w": torch.zeros(3)}, target)
    monkeypatch.undo()
    assert torch.equal(torch.load(target, weights_only=True)["w"], torch.ones(3))
    assert not (tmp_path / "model.pt.tmp").exists()


def test_bad_utf8_in_training_data_can_be_replaced(tmp_path):
    from translate.data import DataError, read_parallel

    (tmp_path / "t.de").write_bytes(b"gut\nschlecht \xff\n")
    (tmp_path / "t.en").write_bytes(b"good\nbad\n")
    with pytest.raises(DataError, match="t.de: line 2 is not valid UTF-8.*replace_bad_utf8"):
        read_parallel(str(tmp_path / "t"), "de", "en")
    src, tgt = read_parallel(str(tmp_path / "t"), "de", "en", replace_bad_utf8=True)
    assert src == ["gut", "schlecht \ufffd"] and tgt == ["good", "bad"]


def test_resuming_with_another_model_is_refused(word_corpus, tmp_path):
    cfg = tiny_config(
        word_corpus,
        f"out_dir={tmp_path / 'm'}",
        "train.max_steps=5",
        "train.valid_bleu_sentences=0",
    )
    train_module.train(cfg, log=lambda message: None)
    changed = tiny_config(word_corpus, f"out_dir={tmp_path / 'm'}", "model.hidden_dim=48")
    with pytest.raises(UserError, match=r"other model settings \(model.hidden_dim\)"):
        train_module.train(changed, log=lambda message: None)
