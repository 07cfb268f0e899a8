"""Training with torchrun: 2 gloo processes equal 1 process accumulating 2 parts bit for bit,
only rank 0 writes, a signal to either rank stops both with a checkpoint that resumes exactly,
and an out_dir another process holds is refused by both ranks at once."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from translate.data import outdir
from translate.modeldir import load_weights

ROOT = Path(__file__).resolve().parent.parent
TINY = [
    f"data.train={ROOT / 'data/toy/train'}",
    f"data.dev={ROOT / 'data/toy/dev'}",
    "model.emb_dim=32",
    "model.hidden_dim=64",
    "model.dropout=0",  # each rank draws its own masks: off, for the equality with 1 process
    "train.max_minutes=0",
    "train.valid_every=10",
    "train.log_every=1",
    "train.valid_bleu_sentences=50",
]


# ``translate`` whose rank 1 sends itself SIGTERM once step STEP is taken: the signal comes
# at the same step on every machine, however fast
SIGNAL_RANK_1_AT_STEP = """
import os, signal, sys
import translate.train.loop as loop
from translate.cli import main

step, real = int(os.environ["SIGNAL_AT_STEP"]), loop.train_step
def train_step(run, state, rows, elapsed):
    result = real(run, state, rows, elapsed)
    if state.step == step and os.environ["RANK"] == "1":
        os.kill(os.getpid(), signal.SIGTERM)
    return result
loop.train_step = train_step
sys.exit(main(sys.argv[1:]))
"""


def command(out: Path, processes: int, *overrides: str, script: Path | None = None) -> list[str]:
    """``translate train`` of the toy recipe, tiny, in one process or under torchrun (running
    ``script`` in place of ``-m translate`` when given)."""
    program = [str(script)] if script else ["-m", "translate"]
    train = [*program, "train", str(ROOT / "recipes/toy/config.yaml"), f"out_dir={out}"]
    train += [*TINY, *overrides]
    if processes == 1:
        return [sys.executable, *train, "train.threads=1"]
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    return [*launcher, f"--nproc_per_node={processes}", *train]


def run(out: Path, processes: int, *overrides: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        command(out, processes, *overrides), capture_output=True, text=True, timeout=300
    )


def weights(path: Path) -> dict:
    if path.suffix == ".safetensors":
        return load_weights(path)
    saved = torch.load(path, weights_only=True)
    return saved.get("model", saved)


def same_weights(a: dict, b: dict) -> bool:
    """Bit for bit. Each of 2 ranks scales its part's loss by 2 / tokens where 1 process
    scales by 1 / tokens, and DDP halves the summed gradients: scaling by 2 is exact in
    floating point, and a sum of two terms is the same in either order."""
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ddp") / "two"
    done = run(out, 2, "train.max_steps=30")
    assert done.returncode == 0, done.stderr
    return out


def test_two_processes_equal_one_process_with_two_accumulation_steps(two_processes, tmp_path):
    one = tmp_path / "one"
    done = run(one, 1, "train.max_steps=30", "train.accum_steps=2")
    assert done.returncode == 0, done.stderr
    assert same_weights(
        weights(two_processes / "model.safetensors"), weights(one / "model.safetensors")
    )
    assert same_weights(weights(two_processes / "checkpoint.pt"), weights(one / "checkpoint.pt"))
    log_two = (two_processes / "metrics.jsonl").read_text().splitlines()
    log_one = (one / "metrics.jsonl").read_text().splitlines()
    loss = [json.loads(line).get("train_loss") for line in log_two]
    assert loss == [json.loads(line).get("train_loss") for line in log_one]


def test_only_rank_0_writes(two_processes):
    names = sorted(p.name for p in two_processes.iterdir())
    assert names == [
        ".lock",
        "checkpoint.pt",
        "config.yaml",
        "metrics.jsonl",
        "model.safetensors",
        "prepared",
        "spm.model",
    ]
    log = [json.loads(line) for line in (two_processes / "metrics.jsonl").read_text().splitlines()]
    steps = [entry["step"] for entry in log if "train_loss" in entry]
    assert steps == list(range(1, 31))  # once each: one writer
    assert [entry["step"] for entry in log if "dev_loss" in entry] == [10, 20, 30]


def test_a_signal_to_one_rank_stops_both_and_they_resume_exactly(two_processes, tmp_path):
    out, script = tmp_path / "stopped", tmp_path / "signal_rank_1.py"
    script.write_text(SIGNAL_RANK_1_AT_STEP)
    env = {**os.environ, "SIGNAL_AT_STEP": "12"}  # rank 1, not the one that writes
    done = subprocess.run(
        command(out, 2, "train.max_steps=30", script=script),
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode != 0 and "Run the same command again to resume" in done.stderr
    # rank 0, which writes, stopped at the step rank 1 was signalled in
    assert "stopped by signal on another rank at step 12" in done.stderr
    saved = torch.load(out / "checkpoint.pt", weights_only=True)
    assert saved["loop"]["step"] == 12 and not saved["loop"]["finished"]
    assert len(saved["rng"]) == 2  # each rank's random state
    elsewhere = tmp_path / "one"  # the same checkpoint, resumed by one process
    shutil.copytree(out, elsewhere)
    done = run(out, 2, "train.max_steps=30")
    assert done.returncode == 0, done.stderr
    assert "resuming from" in done.stderr
    assert same_weights(weights(out / "checkpoint.pt"), weights(two_processes / "checkpoint.pt"))
    done = run(elsewhere, 1, "train.max_steps=30", "train.accum_steps=2")
    assert done.returncode == 0, done.stderr
    assert "written by 2 process(es) and this run has 1" in done.stderr


def test_an_out_dir_in_use_is_refused_by_every_rank_at_once(tmp_path):
    out = tmp_path / "busy"
    with outdir.hold(out):  # this process is "the first trainer"
        done = run(out, 2, "train.max_steps=30")
    assert done.returncode != 0
    # rank 0 names the holder; rank 1 stops with it instead of waiting for it
    assert (
        f"translate: error: {out} is in use by another translate process (PID {os.getpid()})"
        in done.stderr
    )
    assert "translate: error: rank 0 stopped the run; its message says why" in done.stderr
    assert sorted(p.name for p in out.iterdir()) == [".lock"]
