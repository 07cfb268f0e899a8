"""The recipes' run.sh end to end on a tiny corpus: their arguments, data checks, every step's
output, and a rerun that skips what is finished."""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sacrebleu
import torch

from tests.conftest import write_word_corpus

ROOT = Path(__file__).resolve().parent.parent
TINY = [  # a model that trains in seconds on the word corpus
    "data.vocab_size=40",
    "data.max_len=20",
    "model.emb_dim=16",
    "model.hidden_dim=32",
    "train.batch_tokens=400",
    "train.max_steps=30",
    "train.lr=0.01",
    "train.valid_every=1000",
    "train.valid_bleu_sentences=0",
    "train.threads=1",
]


def run(recipe: str, *args: str) -> subprocess.CompletedProcess:
    """``bash recipes/RECIPE/run.sh ARGS`` with this interpreter's ``translate`` on the PATH."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env.pop("TATOEBA_DIR", None)
    env.pop("MULTI30K_DIR", None)
    return subprocess.run(
        ["bash", str(ROOT / "recipes" / recipe / "run.sh"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.fixture(scope="module")
def tatoeba_like(tmp_path_factory) -> Path:
    """train and valid of the word corpus, valid gzipped (the recipes read .gz and plain)."""
    folder = tmp_path_factory.mktemp("tatoeba_like")
    write_word_corpus(folder, n_train=1000, n_dev=40)
    for side in ("de", "en"):
        with gzip.open(folder / f"valid.{side}.gz", "wt", encoding="utf-8") as out:
            out.write((folder / f"dev.{side}").read_text(encoding="utf-8"))
    return folder


def test_tatoeba_recipe_runs_every_step_then_skips_them(tatoeba_like, tmp_path):
    out = tmp_path / "exp"
    started = time.monotonic()
    first = run("tatoeba", "--data-dir", str(tatoeba_like), "--out", str(out), *TINY)
    took = time.monotonic() - started
    assert first.returncode == 0, first.stderr
    assert "is not the split the README's figures come from" in first.stderr
    references = gzip.open(tatoeba_like / "valid.en.gz", "rt", encoding="utf-8").read()
    assert (out / "valid.ref.en").read_text(encoding="utf-8") == references
    for beam in (5, 1):
        hypotheses = (out / f"valid.beam{beam}.en").read_text(encoding="utf-8").splitlines()
        assert len(hypotheses) == 40
        bleu = sacrebleu.corpus_bleu(hypotheses, [references.splitlines()]).score
        score = (out / f"valid.beam{beam}.score").read_text()
        assert score.startswith(f"BLEU = {bleu:6.2f}")
    assert "best: beam 5, length_penalty" in first.stdout
    # train.done marks a finished training (all its 30 steps) and holds the seconds it took
    saved = torch.load(out / "checkpoint.pt", weights_only=True)["loop"]
    assert saved["finished"] and saved["step"] == 30
    seconds = int((out / "train.done").read_text())
    # (whole seconds of `date +%s`: one more than the time measured here at most)
    assert 0 <= seconds <= took + 1 and f"training took {seconds}s" in first.stdout

    again = run("tatoeba", "--data-dir", str(tatoeba_like), "--out", str(out), *TINY)
    assert again.returncode == 0, again.stderr
    assert f"already trained: {out}" in again.stdout
    assert "== 3/5" in again.stdout and "best: beam 5" not in again.stdout


def test_the_recipe_trains_the_other_direction(tatoeba_like, tmp_path):
    out = tmp_path / "exp"
    done = run(
        "tatoeba",
        "--data-dir",
        str(tatoeba_like),
        "--out",
        str(out),
        "--src",
        "en",
        "--tgt",
        "de",
        *TINY,
    )
    assert done.returncode == 0, done.stderr
    assert "training (en->de)" in done.stdout
    config = (out / "config.yaml").read_text()
    assert "src_lang: en" in config and "tgt_lang: de" in config
    references = (tatoeba_like / "dev.de").read_text(encoding="utf-8")
    assert (out / "valid.ref.de").read_text(encoding="utf-8") == references
    assert (out / "valid.en").read_text(encoding="utf-8") == (tatoeba_like / "dev.en").read_text(
        encoding="utf-8"
    )
    for beam in (5, 1):
        hypotheses = (out / f"valid.beam{beam}.de").read_text(encoding="utf-8").splitlines()
        bleu = sacrebleu.corpus_bleu(hypotheses, [references.splitlines()]).score
        assert (out / f"valid.beam{beam}.score").read_text().startswith(f"BLEU = {bleu:6.2f}")
    assert not list(out.glob("*.en.*")) and not (out / "valid.ref.en").exists()


def test_a_failed_training_is_not_marked_done(tatoeba_like, tmp_path):
    out = tmp_path / "exp"
    failed = run(
        "tatoeba", "--data-dir", str(tatoeba_like), "--out", str(out), *TINY, "model.cell=x"
    )
    assert failed.returncode == 1 and "model.cell" in failed.stderr
    assert not (out / "train.done").exists()  # a rerun trains instead of skipping


def test_multi30k_recipe_refuses_other_data_before_training(tatoeba_like, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for split, source in (("train", "train"), ("val", "dev"), ("test_2016_flickr", "dev")):
        for side in ("de", "en"):
            shutil.copy(tatoeba_like / f"{source}.{side}", data / f"{split}.{side}")
    done = run("multi30k", "--data-dir", str(data), "--out", str(tmp_path / "exp"), *TINY)
    assert done.returncode == 1
    assert "is not the published Multi30k" in done.stderr
    assert "differs from the file of record" in done.stderr
    assert not (tmp_path / "exp" / "model.safetensors").exists()
    assert not (tmp_path / "exp" / "checkpoint.pt").exists()

    (data / "val.en").unlink()
    missing = run("multi30k", "--data-dir", str(data), "--out", str(tmp_path / "exp"))
    assert missing.returncode == 1 and f"{data} has no val.en or val.en.gz" in missing.stderr


@pytest.mark.parametrize("recipe", ["multi30k", "tatoeba"])
@pytest.mark.parametrize(
    "args, message",
    [
        (["--epochs", "3"], "unknown argument '--epochs'"),
        (["--out"], "--out needs a value"),
        (["--src", "fr"], "this recipe's data has the languages: de en (got 'fr')"),
        (["--src", "en"], "--src and --tgt are both 'en'"),
        (["data.src_lang=en"], "give the direction with --src/--tgt, not data.src_lang"),
    ],
)
def test_bad_arguments_exit_2_with_the_usage(recipe, args, message, tmp_path):
    done = run(recipe, *args)
    assert done.returncode == 2
    assert message in done.stderr and f"usage: bash recipes/{recipe}/run.sh" in done.stderr


def test_help_prints_the_usage(tmp_path):
    done = run("tatoeba", "--help")
    assert done.returncode == 0 and "--data-dir DIR" in done.stdout


def test_the_toy_recipe_answers_help_and_never_deletes_what_is_not_a_model(tmp_path):
    helped = run("toy", "--help")
    assert helped.returncode == 0 and "usage: bash recipes/toy/run.sh [OUT]" in helped.stdout
    assert not (ROOT / "--help").exists()
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.tex").write_text("years of work")
    refused = run("toy", str(precious))
    assert (
        refused.returncode == 2 and "is not a model directory; not replacing it" in refused.stderr
    )
    assert (precious / "thesis.tex").read_text() == "years of work"
    assert run("toy", "--out").returncode == 2
