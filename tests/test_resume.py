"""A killed or interrupted training run resumes to exactly the weights, and the log, of an
uninterrupted one."""

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from tests.conftest import write_word_corpus
from translate.modeldir import WEIGHTS, load_weights

TRAIN = {
    # subword sampling on: a resumed epoch must redraw the segmentation it started with
    "data": {"vocab_size": 40, "sampling_alpha": 0.1},
    "model": {"emb_dim": 16, "hidden_dim": 32, "dropout": 0.2},
    "train": {
        "batch_tokens": 100,
        "lr": 0.005,
        "max_epochs": 3,
        "valid_every": 25,
        "log_every": 1,
        "threads": 1,
        "valid_bleu_sentences": 20,
    },
}
# what differs between two runs of the same steps: the clock
CLOCK = ("elapsed", "tgt_tok_s", "src_tok_s")

# ``translate train`` that sends itself SIGTERM once step STEP is taken: the signal comes at
# the same step on every machine, however fast
SIGNAL_AT_STEP = """
import os, signal, sys
import translate.train.loop as loop
from translate.cli import main

step, real = int(sys.argv.pop(1)), loop.train_step
def train_step(run, state, rows, elapsed):
    result = real(run, state, rows, elapsed)
    if state.step == step:
        os.kill(os.getpid(), signal.SIGTERM)
    return result
loop.train_step = train_step
sys.exit(main(sys.argv[1:]))
"""


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    folder = tmp_path_factory.mktemp("resume")
    write_word_corpus(folder, n_train=1500, n_dev=20)
    config = dict(
        TRAIN, data=dict(TRAIN["data"], train=str(folder / "train"), dev=str(folder / "dev"))
    )
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    return folder


@pytest.fixture(scope="module")
def reference(setup) -> Path:
    """The uninterrupted run, which every resumed one must equal."""
    out = setup / "reference"
    done = start(setup, out)
    _, err = done.communicate(timeout=300)
    assert done.returncode == 0, err
    return out


def start(folder: Path, out: Path, signal_at: int = 0) -> subprocess.Popen:
    train = ["train", str(folder / "config.yaml"), f"out_dir={out}"]
    launch = ["-c", SIGNAL_AT_STEP, str(signal_at)] if signal_at else ["-m", "translate"]
    return subprocess.Popen(
        [sys.executable, *launch, *train], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def wait_for_step(out: Path, step: int, process: subprocess.Popen) -> None:
    """Block until the metrics log shows ``step`` (the run is then between two checkpoints)."""
    deadline = time.time() + 120
    while time.time() < deadline:
        log = out / "metrics.jsonl"
        if log.is_file():
            # whole lines only: a line being written can be read in part
            lines = log.read_text().splitlines(keepends=True)
            steps = [json.loads(line)["step"] for line in lines if line.endswith("\n")]
            if steps and max(steps) >= step:
                return
        assert process.poll() is None, process.communicate(timeout=30)
        time.sleep(0.02)
    raise AssertionError(f"step {step} never came")


def weights(out: Path) -> dict:
    return torch.load(out / "checkpoint.pt", weights_only=True)["model"]


def same_weights(a: Path, b: Path) -> bool:
    """The checkpoint's and the best model's weights, bit for bit."""
    best_a, best_b = load_weights(a / WEIGHTS), load_weights(b / WEIGHTS)
    last_a, last_b = weights(a), weights(b)
    return (
        last_a.keys() == last_b.keys()
        and all(torch.equal(last_a[k], last_b[k]) for k in last_a)
        and best_a.keys() == best_b.keys()
        and all(torch.equal(best_a[k], best_b[k]) for k in best_a)
    )


def records(out: Path) -> list[dict]:
    """metrics.jsonl without the clock's fields."""
    lines = (out / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k not in CLOCK} for line in lines]


def test_sigkill_and_resume_give_the_same_weights_and_log(setup, reference):
    resumed = setup / "killed"
    for kill_at in (7, 60, 150):  # before the first checkpoint, then between checkpoints
        run = start(setup, resumed)
        wait_for_step(resumed, kill_at, run)
        run.kill()
        run.communicate(timeout=30)
    run = start(setup, resumed)
    _, err = run.communicate(timeout=300)
    assert run.returncode == 0, err
    assert "resuming from" in err
    assert same_weights(reference, resumed)
    # the steps logged after each checkpoint are logged once: the log reads as one run's
    expected = records(reference)
    assert [r["step"] for r in expected] == sorted(r["step"] for r in expected)
    assert records(resumed) == expected


def test_sigterm_saves_a_checkpoint_and_says_how_to_resume(setup, reference):
    out = setup / "terminated"
    run = start(setup, out, signal_at=40)
    _, err = run.communicate(timeout=300)
    assert run.returncode == 130, err
    assert "stopped by signal 15 at step 40" in err and "Traceback" not in err
    assert "Run the same command again to resume" in err
    saved = torch.load(out / "checkpoint.pt", weights_only=True)
    assert saved["loop"]["step"] == 40 and not saved["loop"]["finished"]
    rerun = start(setup, out)
    _, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err
    assert "resuming from" in err
    assert same_weights(reference, out)
    assert records(out) == records(reference)


def test_a_finished_run_is_not_trained_again(setup, reference, tmp_path):
    out = tmp_path / "finished"
    shutil.copytree(reference, out)
    run = start(setup, out)
    _, err = run.communicate(timeout=300)
    assert run.returncode == 0, err
    assert err.startswith(f"{out} has already finished: at step ") and err.count("\n") == 1
    assert "it reached the epoch limit (train.max_epochs=3)" in err
    assert same_weights(reference, out)
    assert records(out) == records(reference)
