"""Continuing a finished run: the same limits do nothing and say so in one line, a larger limit
trains on past the old one with the cosine stretched over the new limits, and an interrupted
continuation resumes to the weights and log of an uninterrupted one."""

import json
import math
import os
import shutil
import signal
from pathlib import Path

import pytest
import torch
import yaml

import translate.train.loop as train_module
from tests.conftest import tiny_config
from tests.test_train import files_of
from translate.cli import main
from translate.config import TrainConfig, config_to_dict
from translate.modeldir import WEIGHTS, load_weights
from translate.train.checkpoint import TrainState
from translate.train.limits import already_finished, continuing
from translate.train.loop import Interrupted, train

SETTINGS = [
    "train.lr_schedule=cosine",
    "train.log_every=1",
    "train.valid_every=5",
    "train.valid_bleu_sentences=0",
]
CLOCK = ("elapsed", "tgt_tok_s", "src_tok_s")


def config(word_corpus, out: Path, *overrides: str):
    return tiny_config(word_corpus, f"out_dir={out}", *SETTINGS, *overrides)


@pytest.fixture(scope="module")
def finished(word_corpus, tmp_path_factory) -> tuple[Path, list[str]]:
    """A run that reached its step limit, 12, and what it logged."""
    out = tmp_path_factory.mktemp("continue") / "m"
    logged = []
    train(config(word_corpus, out, "train.max_steps=12"), log=logged.append)
    return out, logged


@pytest.fixture(scope="module")
def continued(word_corpus, finished, tmp_path_factory) -> tuple[Path, list[str]]:
    """The finished run given 24 steps, uninterrupted, and what it logged."""
    out = tmp_path_factory.mktemp("continued") / "m"
    shutil.copytree(finished[0], out)
    logged = []
    train(config(word_corpus, out, "train.max_steps=24"), log=logged.append)
    return out, logged


def steps(out: Path) -> list[dict]:
    """metrics.jsonl's training records (not validations), without the clock's fields."""
    lines = (out / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    return [{k: v for k, v in r.items() if k not in CLOCK} for r in records if "train_loss" in r]


def loop_state(out: Path) -> dict:
    return torch.load(out / "checkpoint.pt", weights_only=True)["loop"]


def test_the_last_line_says_which_limit_ended_the_run_and_how_to_go_on(finished):
    out, logged = finished
    assert logged[-1].startswith("finished after 12 steps in ")
    assert logged[-1].endswith(
        f": reached the step limit (train.max_steps=12); best model in {out / WEIGHTS}; "
        "to train further, run it again with a larger train.max_steps"
    )
    assert loop_state(out)["stopped_by"] == ["max_steps"]


def test_the_same_limits_do_nothing_and_say_so_in_one_line(word_corpus, finished, tmp_path, capsys):
    out = tmp_path / "m"
    shutil.copytree(finished[0], out)
    before = files_of(out)
    (tmp_path / "c.yaml").write_text(
        yaml.safe_dump(config_to_dict(config(word_corpus, out, "train.max_steps=12")))
    )
    assert main(["train", str(tmp_path / "c.yaml")]) == 0
    captured = capsys.readouterr()
    assert captured.err == (
        f"{out} has already finished: at step 12 it reached the step limit "
        "(train.max_steps=12); to train further, run it again with a larger train.max_steps\n"
    )
    assert captured.out == ""
    assert files_of(out) == before  # not a byte, not a file rewritten


def test_a_larger_step_limit_trains_past_the_old_one_on_a_stretched_cosine(finished, continued):
    out, logged = continued
    assert [r["step"] for r in steps(out)] == list(range(1, 25))
    assert steps(out)[:12] == steps(finished[0])  # the first 12 steps' log is kept as it was
    # step 13 of 24 on the cosine of 24 steps, times the plateau decay the run had reached
    scale = loop_state(finished[0])["lr_scale"]
    rate = 0.005 * scale * 0.5 * (1 + math.cos(math.pi * 13 / 24))
    assert steps(out)[12]["lr"] == pytest.approx(rate, rel=1e-9)
    line = "continuing the finished run from step 12 (12 more steps at most); the cosine is "
    line += f"stretched over the new limits: the rate comes back to {rate:.3g} "
    assert any(message.startswith(line) for message in logged), logged
    saved = loop_state(out)
    assert saved["step"] == 24 and saved["finished"] and saved["stopped_by"] == ["max_steps"]


def test_an_interrupted_continuation_resumes_to_the_uninterrupted_one(
    word_corpus, finished, continued, tmp_path, monkeypatch
):
    out = tmp_path / "m"
    shutil.copytree(finished[0], out)
    real = train_module.train_step

    def signal_at_step_18(run, state, rows, elapsed):
        result = real(run, state, rows, elapsed)
        if state.step == 18:
            os.kill(os.getpid(), signal.SIGINT)  # caught: it only sets the loop's flag
        return result

    monkeypatch.setattr(train_module, "train_step", signal_at_step_18)
    cfg = config(word_corpus, out, "train.max_steps=24")
    with pytest.raises(Interrupted, match="at step 18"):
        train(cfg, log=lambda message: None)
    assert loop_state(out)["step"] == 18 and not loop_state(out)["finished"]
    monkeypatch.setattr(train_module, "train_step", real)
    train(cfg, log=lambda message: None)
    best, want_best = load_weights(out / WEIGHTS), load_weights(continued[0] / WEIGHTS)
    assert best.keys() == want_best.keys()
    assert all(torch.equal(best[k], want_best[k]) for k in best)
    last = torch.load(out / "checkpoint.pt", weights_only=True)["model"]
    want = torch.load(continued[0] / "checkpoint.pt", weights_only=True)["model"]
    assert all(torch.equal(last[k], want[k]) for k in want)
    assert steps(out) == steps(continued[0])


def test_a_run_ended_by_its_epochs_goes_on_with_more_epochs(word_corpus, tmp_path):
    out, logged = tmp_path / "m", []
    train(config(word_corpus, out, "train.max_epochs=1"), log=logged.append)
    one_epoch = loop_state(out)
    assert one_epoch["stopped_by"] == ["max_epochs"] and "the epoch limit" in logged[-1]
    logged.clear()
    train(config(word_corpus, out, "train.max_epochs=1"), log=logged.append)
    assert logged == [
        f"{out} has already finished: at step {one_epoch['step']} it reached the epoch limit "
        "(train.max_epochs=1); to train further, run it again with a larger train.max_epochs"
    ]
    train(config(word_corpus, out, "train.max_epochs=2"), log=lambda message: None)
    two_epochs = loop_state(out)
    assert two_epochs["epoch"] == 2 and two_epochs["step"] > one_epoch["step"] + 10
    assert steps(out)[-1]["epoch"] == 2 and two_epochs["stopped_by"] == ["max_epochs"]


def test_the_time_limit_counts_every_process_and_a_larger_one_gives_the_difference():
    state = TrainState(step=500, epoch=3, elapsed=1200.0, finished=True)
    state.stopped_by = ["max_minutes"]
    assert already_finished("m", TrainConfig(max_minutes=20), state) == (
        "m has already finished: at step 500 it reached the time limit (train.max_minutes=20); "
        "to train further, run it again with a larger train.max_minutes"
    )
    larger = TrainConfig(max_minutes=30, lr_schedule="cosine", lr=0.001)
    assert already_finished("m", larger, state) is None
    # 20 of 30 minutes gone: two thirds of the stretched cosine, whose factor there is 1/4
    assert continuing(larger, state, 4000) == (
        "continuing the finished run from step 500 (3500 more steps at most, 10.0 more "
        "minutes); the cosine is stretched over the new limits: the rate comes back to "
        "0.00025 (train.lr x 0.25) and anneals to 0 at their end"
    )
    constant = TrainConfig(max_minutes=30, lr=0.001)
    assert continuing(constant, state, 4000).endswith("; the rate stays 0.001")


def test_patience_and_checkpoints_from_before_the_reason_was_kept():
    state = TrainState(step=40, epoch=2, bad_validations=3, finished=True)
    state.stopped_by = ["patience"]
    assert "it reached the patience limit (train.patience=3)" in already_finished(
        "m", TrainConfig(patience=3), state
    )
    assert already_finished("m", TrainConfig(patience=5), state) is None
    # an older checkpoint that does not say why it finished: its epochs, if it is in its last
    old = TrainState(step=40, epoch=10, finished=True)
    assert "the epoch limit (train.max_epochs=10)" in already_finished("m", TrainConfig(), old)
    assert already_finished("m", TrainConfig(max_epochs=12), old) is None
    # a run stopped by its steps in its last epoch still has batches of that epoch to take
    by_steps = TrainState(step=40, epoch=10, finished=True, stopped_by=["max_steps"])
    assert already_finished("m", TrainConfig(max_steps=80), by_steps) is None
    assert already_finished("m", TrainConfig(), TrainState(step=40)) is None  # not finished
