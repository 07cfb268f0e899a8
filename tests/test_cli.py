"""End to end through the command line, on a cut-down embedded corpus."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from translate.decoding import DecodeOptions
from translate.output import finished_lines

ROOT = Path(__file__).resolve().parent.parent


def cli(*args, stdin=None, cwd=ROOT):
    return subprocess.run(
        [sys.executable, "-m", "translate", *map(str, args)],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=600,
    )


def cut_corpus(folder: Path, split: str, n: int, max_words: int) -> None:
    """The first n pairs of the embedded corpus whose German side has at most max_words words."""
    de = (ROOT / f"data/toy/{split}.de").read_text(encoding="utf-8").splitlines()
    en = (ROOT / f"data/toy/{split}.en").read_text(encoding="utf-8").splitlines()
    pairs = [(d, e) for d, e in zip(de, en) if len(d.split()) <= max_words][:n]
    (folder / f"{split}.de").write_text("".join(d + "\n" for d, _ in pairs), encoding="utf-8")
    (folder / f"{split}.en").write_text("".join(e + "\n" for _, e in pairs), encoding="utf-8")


def test_train_translate_score_end_to_end(tmp_path):
    for split, n in (("train", 3000), ("dev", 100), ("test", 100)):
        cut_corpus(tmp_path, split, n, max_words=8)
    model = tmp_path / "model"
    done = cli(
        "train",
        ROOT / "recipes/toy/config.yaml",
        f"out_dir={model}",
        f"data.train={tmp_path / 'train'}",
        f"data.dev={tmp_path / 'dev'}",
        "train.max_minutes=0",
        "train.max_epochs=10",
        "train.threads=2",
    )
    assert done.returncode == 0, done.stderr
    assert "kept" in done.stderr and "dropped" in done.stderr
    assert {"config.yaml", "spm.model", "model.pt", "metrics.jsonl"} <= {
        p.name for p in model.iterdir()
    }
    log = [json.loads(line) for line in (model / "metrics.jsonl").read_text().splitlines()]
    assert any("dev_bleu" in entry for entry in log)
    assert all(0.0 <= entry["clipped"] <= 1.0 for entry in log if "clipped" in entry)

    hyp = tmp_path / "test.hyp"
    done = cli("translate", "-m", model, "-i", tmp_path / "test.de", "-o", hyp, "--beam", 4)
    assert done.returncode == 0, done.stderr
    assert len(hyp.read_text().splitlines()) == 100
    done = cli("score", "-r", tmp_path / "test.en", hyp, "--json")
    assert done.returncode == 0, done.stderr
    scores = json.loads(done.stdout)
    assert scores["bleu"] > 40, scores  # chance level is below 5
    assert "nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp" in scores["bleu_signature"]

    # stdin -> stdout keeps blank lines
    done = cli("translate", "-m", model, "--beam", 1, stdin="Der Hund schläft.\n\nDie Katze.\n")
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("\n") == 3 and done.stdout.split("\n")[1] == ""


def test_user_mistakes_are_one_line_errors(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("model: {hiden_dim: 3}\n")
    for args, message in [
        (("train", config), "Did you mean 'model.hidden_dim'?"),
        (("train", tmp_path / "none.yaml"), "config file not found"),
        (("translate", "-m", tmp_path / "nothing"), "model directory not found"),
        (("score", "-r", tmp_path / "r.txt", tmp_path / "h.txt"), "file not found"),
    ]:
        done = cli(*args)
        assert done.returncode == 1
        assert done.stderr.startswith("translate: error:") and message in done.stderr
        assert "Traceback" not in done.stderr


def test_help_explains_each_command():
    for command in ("prepare", "train", "translate", "score"):
        done = cli(command, "--help")
        assert done.returncode == 0 and "usage: translate " + command in done.stdout


def test_bad_utf8_in_translation_input(trained_dir, tmp_path):
    source = tmp_path / "in.txt"
    source.write_bytes(b"hund\nkatze \xff\xfe\nbaum\n")
    done = cli("translate", "-m", trained_dir, "-i", source, "--threads", 1)
    assert done.returncode == 1
    assert "line 2 is not valid UTF-8" in done.stderr and "Traceback" not in done.stderr
    done = cli("translate", "-m", trained_dir, "-i", source, "--replace-bad-utf8")
    assert done.returncode == 0 and done.stdout.splitlines()[0] == "dog"
    assert len(done.stdout.splitlines()) == 3


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
    assert "resuming after the 4 lines" in done.stderr
    assert out.read_text() == expected and not (tmp_path / "out.txt.tmp").exists()


def test_finished_lines_cuts_a_partial_line(tmp_path):
    path = tmp_path / "p"
    path.write_bytes(b"a\nb\nhalf")
    assert finished_lines(path) == 2 and path.read_bytes() == b"a\nb\n"


def test_an_output_folder_that_does_not_exist_is_a_one_line_error(trained_dir, tmp_path):
    source = tmp_path / "in.txt"
    source.write_text("hund\n")
    done = cli("translate", "-m", trained_dir, "-i", source, "-o", tmp_path / "nowhere/out.en")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert (
        done.stderr.startswith("translate: error: cannot write") and "does not exist" in done.stderr
    )


def test_scores_alignments_and_samples(attention_dir, tmp_path):
    from translate.translator import Translator

    source = tmp_path / "in.txt"
    source.write_text("hund katze\n\nbaum\n")
    translator = Translator.from_dir(attention_dir)
    options = DecodeOptions(beam=3, attention=True)
    best = translator.translate_batch(["hund katze", "", "baum"], options)
    done = cli(
        "translate", "-m", attention_dir, "-i", source, "--beam", 3, "--scores", "--alignment"
    )
    assert done.returncode == 0, done.stderr
    for line, translation in zip(done.stdout.splitlines(), best):
        text, score, pairs = line.split(" ||| ")
        candidate = translation.candidates[0]
        assert text == candidate.text and float(score) == pytest.approx(candidate.score, abs=1e-4)
        expected = [f"{s}-{t}" for t, s in enumerate((candidate.alignment or [])[:-1])]
        assert pairs.split() == expected
    assert done.stdout.splitlines()[1] == " ||| 0.0000 ||| "  # a blank line stays a line
    sample = ("translate", "-m", attention_dir, "-i", source, "--sample", "--n-best", 3)
    first, again = cli(*sample, "--seed", 7), cli(*sample, "--seed", 7)
    assert first.returncode == 0, first.stderr
    assert first.stdout == again.stdout and len(first.stdout.splitlines()) == 9
    assert cli(*sample, "--seed", 8, "--temperature", 5).stdout != first.stdout
