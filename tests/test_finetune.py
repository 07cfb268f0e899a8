"""Fine-tuning (train.init_from): a run starts from another model directory's weights with its
SentencePiece model and settings, records its parent, resumes from its own checkpoint, trains
in two processes as in one, and refuses what cannot work in one line, writing nothing."""

import dataclasses
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

import translate.train.loop as train_module
from tests.conftest import tiny_config, write_word_corpus
from tests.test_train import files_of
from translate.config import ConfigError, config_to_dict, load_config
from translate.data.vocab import UNK, Vocab
from translate.errors import UserError
from translate.modeldir import WEIGHTS, load_weights, read_config
from translate.train.loop import Interrupted, train

QUIET = {"log": lambda message: None}
SETTINGS = ["train.log_every=1", "train.valid_every=1000", "train.valid_bleu_sentences=0"]


def first_loss(out: Path) -> float:
    lines = (out / "metrics.jsonl").read_text().splitlines()
    return next(json.loads(line)["train_loss"] for line in lines if "train_loss" in line)


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def checkpoint(out: Path) -> dict:
    return torch.load(out / "checkpoint.pt", weights_only=True)


@pytest.fixture(scope="module")
def parent(trained_dir, tmp_path_factory) -> Path:
    """A copy of the trained word model, to move and cut down at will."""
    copy = tmp_path_factory.mktemp("parent") / "model"
    shutil.copytree(trained_dir, copy, ignore=shutil.ignore_patterns("prepared", ".lock"))
    return copy


def test_fine_tuning_starts_lower_than_scratch_and_keeps_the_parents_pieces(
    word_corpus, parent, tmp_path
):
    logged = []
    tuned = train(
        tiny_config(
            word_corpus,
            f"out_dir={tmp_path / 'tuned'}",
            f"train.init_from={parent}",
            "train.max_steps=3",
            *SETTINGS,
        ),
        log=logged.append,
    )
    scratch = train(
        tiny_config(word_corpus, f"out_dir={tmp_path / 'scratch'}", "train.max_steps=3", *SETTINGS),
        **QUIET,
    )
    # the parent learnt this corpus: its weights start far below a fresh model's
    assert first_loss(tuned) < first_loss(scratch) / 2
    assert (tuned / "spm.model").read_bytes() == (parent / "spm.model").read_bytes()
    record = json.loads((tuned / "parent.json").read_text())
    assert record == {
        "init_from": str(parent.resolve()),
        "weights": WEIGHTS,
        "sha256": hashlib.sha256((parent / WEIGHTS).read_bytes()).hexdigest(),
        "init_optimizer": False,
    }
    assert read_config(tuned / "config.yaml")[0].train.init_from == str(parent.resolve())
    assert checkpoint(tuned)["loop"]["step"] == 3  # the step count starts at 0
    assert any(line.startswith(f"starting from the weights of {parent}") for line in logged)


def test_the_unknown_pieces_of_the_new_corpus_are_counted(parent, tmp_path):
    """A corpus with letters the parent never saw ('w', 'f', 'v'): its pieces map to <unk>."""
    write_word_corpus(tmp_path, n_train=300, n_dev=10, seed=3)
    lines = {}
    for side in ("de", "en"):
        text = (tmp_path / f"train.{side}").read_text().splitlines()
        new = {"de": " wolf", "en": " wolf vogel"}[side]  # more unknown letters in the target
        lines[side] = [line + new if n % 3 == 0 else line for n, line in enumerate(text)]
        (tmp_path / f"train.{side}").write_text("\n".join(lines[side]) + "\n")
    logged = []
    cfg = tiny_config(
        tmp_path, f"out_dir={tmp_path / 'm'}", f"train.init_from={parent}", "train.max_steps=1"
    )
    train(cfg, log=logged.append)
    # encoded with the parent's pieces: a model trained on this corpus would have others
    assert (tmp_path / "m" / "spm.model").read_bytes() == (parent / "spm.model").read_bytes()
    vocab = Vocab.load(parent / "spm.model")
    counts = {}
    for side, ids in ((side, vocab.encode(lines[side])) for side in ("de", "en")):
        counts[side] = (sum(row.count(UNK) for row in ids), sum(len(row) for row in ids))
    assert 0 < counts["de"][0] < counts["en"][0] < counts["en"][1]
    share = {side: f"{u} of {n} ({100 * u / n:.2f}%)" for side, (u, n) in counts.items()}
    assert (
        f"unknown pieces (<unk>) in the training data with {parent}'s SentencePiece model(s): "
        f"{share['en']} of the target pieces, {share['de']} of the source pieces"
    ) in logged


def test_model_settings_come_from_the_parent_and_a_conflict_is_refused(
    word_corpus, parent, tmp_path
):
    # a recipe config that repeats the parent's model section, as most do: accepted
    parent_cfg = read_config(parent / "config.yaml")[0]
    yaml_path = tmp_path / "repeat.yaml"
    yaml_path.write_text(yaml.safe_dump({"model": config_to_dict(parent_cfg)["model"]}))
    repeated = load_config(yaml_path, [f"train.init_from={parent}"])
    assert repeated.model == parent_cfg.model
    # keys left out are the parent's, not the defaults (emb_dim 256, vocab_size 8000)
    inherited = load_config(None, [f"train.init_from={parent}"])
    assert inherited.model == parent_cfg.model and inherited.model.emb_dim == 32
    assert inherited.data.vocab_size == 40
    given = [f"train.init_from={parent}", "model.hidden_dim=48", "model.cell=gru"]
    with pytest.raises(ConfigError) as refused:
        load_config(None, given)
    assert str(refused.value) == (
        f"train.init_from {parent} fixes the model and vocabulary settings, and this config "
        "gives others: model.hidden_dim 48 (the parent's: 64); leave them out to take the "
        "parent's"
    )
    with pytest.raises(ConfigError, match=r"data.src_lang 'en' \(the parent's: 'de'\)"):
        load_config(None, [f"train.init_from={parent}", "data.src_lang=en", "data.tgt_lang=de"])
    # a config built in Python, past load_config, is checked before anything is written
    other_pair = tiny_config(word_corpus, f"out_dir={tmp_path / 'm'}", f"train.init_from={parent}")
    other_pair.data = dataclasses.replace(other_pair.data, src_lang="en", tgt_lang="de")
    with pytest.raises(UserError, match=r"data.src_lang 'en' \(the parent's: 'de'\)"):
        train(other_pair, **QUIET)
    assert files_of(tmp_path / "m") == {}


def refusal_case(case: str, parent: Path, tmp_path: Path, word_corpus: Path) -> tuple[Path, Path]:
    """(parent, out_dir) set up for one of the refusals."""
    out = tmp_path / "out"
    if case == "missing":
        return tmp_path / "nowhere", out
    if case == "not a model":
        (tmp_path / "empty").mkdir()
        return tmp_path / "empty", out
    if case == "out_dir itself":
        return parent, parent
    if case in ("no checkpoint to take Adam from", "a model there"):
        cut = tmp_path / "averaged"
        shutil.copytree(parent, cut, ignore=shutil.ignore_patterns("checkpoint.pt"))
        if case == "a model there":
            return parent, cut
        return cut, out
    if case == "a scratch run there":
        train(tiny_config(word_corpus, f"out_dir={out}", "train.max_steps=2"), **QUIET)
        return parent, out
    if case == "other pieces there":
        out.mkdir()
        (out / "spm.model").write_bytes((parent / "spm.model").read_bytes() + b"x")
        return parent, out
    raise AssertionError(case)


REFUSALS = {
    "missing": "train.init_from: {parent} does not exist; it must be a model directory",
    "not a model": "train.init_from: {parent} is not a model directory (config.yaml is missing)",
    "out_dir itself": "train.init_from is out_dir itself ({out}): fine-tune into a new out_dir",
    "no checkpoint to take Adam from": "train.init_optimizer: {parent} has no checkpoint.pt",
    "a model there": f"{{out}} already holds a model ({WEIGHTS}) and no checkpoint",
    "a scratch run there": "{out} holds a checkpoint of a run started from scratch; this one "
    "starts from {parent} (train.init_from)",
    "other pieces there": "{out}/spm.model is not the SentencePiece model of {parent}",
}


@pytest.mark.parametrize("case", REFUSALS)
def test_what_cannot_be_fine_tuned_is_one_line_and_writes_nothing(
    case, word_corpus, parent, tmp_path
):
    source, out = refusal_case(case, parent, tmp_path, word_corpus)
    before = files_of(out) if out.exists() else None
    parent_before = files_of(parent)
    overrides = [f"out_dir={out}", f"train.init_from={source}", "train.max_steps=2"]
    if case == "no checkpoint to take Adam from":
        overrides.append("train.init_optimizer=true")
    with pytest.raises(UserError) as refused:
        train(tiny_config(word_corpus, *overrides), **QUIET)
    message = str(refused.value)
    assert message.startswith(REFUSALS[case].format(parent=source, out=out)), message
    assert "\n" not in message
    assert (files_of(out) if out.exists() else None) in (before, {})
    assert files_of(parent) == parent_before


def test_an_interrupted_fine_tune_resumes_from_its_own_checkpoint(
    word_corpus, parent, tmp_path, monkeypatch
):
    moving = tmp_path / "parent"
    shutil.copytree(parent, moving)
    settings = [f"train.init_from={moving}", "train.max_steps=8", "train.valid_every=3"]
    whole = train(tiny_config(word_corpus, f"out_dir={tmp_path / 'whole'}", *settings), **QUIET)
    real = train_module.train_step

    def signal_at_step_5(run, state, rows, elapsed):
        result = real(run, state, rows, elapsed)
        if state.step == 5:
            os.kill(os.getpid(), signal.SIGINT)  # caught: it only sets the loop's flag
        return result

    monkeypatch.setattr(train_module, "train_step", signal_at_step_5)
    out = tmp_path / "stopped"
    with pytest.raises(Interrupted, match="at step 5"):
        train(tiny_config(word_corpus, f"out_dir={out}", *settings), **QUIET)
    monkeypatch.setattr(train_module, "train_step", real)
    moving.rename(tmp_path / "moved")  # the parent is gone: resuming must not need it
    logged = []
    train(tiny_config(word_corpus, f"out_dir={out}", *settings), log=logged.append)
    assert f"resuming from {out / 'checkpoint.pt'} at step 5" in logged  # saved at the signal
    assert not any("starting from the weights" in line for line in logged)
    assert same(checkpoint(out)["model"], checkpoint(whole)["model"])
    assert same(load_weights(out / WEIGHTS), load_weights(whole / WEIGHTS))


def test_init_optimizer_takes_the_parents_adam_state(word_corpus, parent, tmp_path):
    steps = {}
    for take in (False, True):
        out = tmp_path / str(take)
        cfg = tiny_config(
            word_corpus,
            f"out_dir={out}",
            f"train.init_from={parent}",
            f"train.init_optimizer={str(take).lower()}",
            "train.max_steps=1",
        )
        train(cfg, **QUIET)
        steps[take] = float(checkpoint(out)["optimizer"]["state"][0]["step"])
    parents = float(checkpoint(parent)["optimizer"]["state"][0]["step"])
    assert parents > 100
    assert steps == {False: 1.0, True: parents + 1}


def test_two_processes_fine_tune_as_one_process_with_two_accumulation_steps(parent, tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    write_word_corpus(corpus, n_train=400, n_dev=20, seed=5)
    config = {
        "data": {"train": str(corpus / "train"), "dev": str(corpus / "dev")},
        "train": {
            "init_from": str(parent),
            "max_steps": 6,
            "valid_every": 3,
            "log_every": 1,
            "batch_tokens": 400,
            "valid_bleu_sentences": 10,
        },
    }
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    train_cmd = ["-m", "translate", "train", str(tmp_path / "c.yaml")]
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    one = [sys.executable, *train_cmd, "train.accum_steps=2", "train.threads=1"]
    for command, out in (([*launcher, "--nproc_per_node=2", *train_cmd], "two"), (one, "one")):
        done = subprocess.run(
            [*command, f"out_dir={tmp_path / out}"], capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, done.stderr
    two, one = tmp_path / "two", tmp_path / "one"
    assert same(checkpoint(two)["model"], checkpoint(one)["model"])
    assert same(load_weights(two / WEIGHTS), load_weights(one / WEIGHTS))
    assert (two / "parent.json").read_text() == (one / "parent.json").read_text()
    assert (two / "spm.model").read_bytes() == (parent / "spm.model").read_bytes()
    first = [json.loads(line) for line in (two / "metrics.jsonl").read_text().splitlines()][0]
    assert first["step"] == 1  # written once, by rank 0
