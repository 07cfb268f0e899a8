"""A killed or interrupted training run resumes to exactly the weights of an uninterrupted one."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from tests.conftest import write_word_corpus

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


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    folder = tmp_path_factory.mktemp("resume")
    write_word_corpus(folder, n_train=1500, n_dev=20)
    config = dict(
        TRAIN, data=dict(TRAIN["data"], train=str(folder / "train"), dev=str(folder / "dev"))
    )
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    return folder


def start(folder: Path, out: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "translate", "train", str(folder / "config.yaml"), f"out_dir={out}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_step(out: Path, step: int, process: subprocess.Popen) -> None:
    """Block until the metrics log shows ``step`` (the run is then between two checkpoints)."""
    deadline = time.time() + 120
    while time.time() < deadline:
        log = out / "metrics.jsonl"
        if log.is_file():
            steps = [json.loads(line)["step"] for line in log.read_text().splitlines() if line]
            if steps and max(steps) >= step:
                return
        assert process.poll() is None, process.communicate()
        time.sleep(0.02)
    raise AssertionError(f"step {step} never came")


def weights(out: Path) -> dict:
    return torch.load(out / "checkpoint.pt", weights_only=True)["model"]


def test_sigkill_and_resume_give_the_same_weights(setup):
    reference = setup / "reference"
    done = start(setup, reference)
    assert done.wait() == 0, done.communicate()

    resumed = setup / "killed"
    for kill_at in (7, 60, 150):  # before the first checkpoint, then between checkpoints
        run = start(setup, resumed)
        wait_for_step(resumed, kill_at, run)
        run.kill()
        run.wait()
    run = start(setup, resumed)
    _, err = run.communicate()
    assert run.returncode == 0, err
    assert "resuming from" in err

    expected, actual = weights(reference), weights(resumed)
    assert expected.keys() == actual.keys()
    for name in expected:
        assert torch.equal(expected[name], actual[name]), name  # bit for bit
    best_ref = torch.load(reference / "model.pt", weights_only=True)
    best_res = torch.load(resumed / "model.pt", weights_only=True)
    assert all(torch.equal(best_ref[k], best_res[k]) for k in best_ref)


def test_sigterm_saves_a_checkpoint_and_says_how_to_resume(setup):
    out = setup / "terminated"
    run = start(setup, out)
    wait_for_step(out, 40, run)
    run.send_signal(signal.SIGTERM)
    _, err = run.communicate()
    assert run.returncode == 130
    assert "Run the same command again to resume" in err and "Traceback" not in err
    saved = torch.load(out / "checkpoint.pt", weights_only=True)
    assert saved["loop"]["step"] >= 40 and not saved["loop"]["finished"]
    rerun = start(setup, out)
    _, err = rerun.communicate()
    assert rerun.returncode == 0, err
    reference = setup / "reference"
    if (reference / "checkpoint.pt").is_file():  # the first test made it
        assert all(torch.equal(weights(reference)[k], weights(out)[k]) for k in weights(out))


def test_a_finished_run_is_not_trained_again(setup):
    reference = setup / "reference"
    if not (reference / "checkpoint.pt").is_file():
        assert start(setup, reference).wait() == 0
    before = weights(reference)
    run = start(setup, reference)
    _, err = run.communicate()
    assert run.returncode == 0, err
    after = weights(reference)
    assert all(torch.equal(before[k], after[k]) for k in before)
