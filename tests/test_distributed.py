"""Training with torchrun: 2 gloo processes equal 1 process accumulating 2 parts, only rank 0
writes, a signal to either rank stops both with a checkpoint that resumes exactly, and an
out_dir another process holds is refused by both ranks at once."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from translate.data import outdir

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


def command(out: Path, processes: int, *overrides: str) -> list[str]:
    train = ["-m", "translate", "train", str(ROOT / "recipes/toy/config.yaml"), f"out_dir={out}"]
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
    saved = torch.load(path, weights_only=True)
    return saved.get("model", saved)


def same_weights(a: dict, b: dict) -> bool:
    """Equal to float32 rounding (1e-6); on 2 processes the sums are in fact bit-exact."""
    return a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


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
    assert same_weights(weights(two_processes / "model.pt"), weights(one / "model.pt"))
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
        "model.pt",
        "prepared",
        "spm.model",
    ]
    log = [json.loads(line) for line in (two_processes / "metrics.jsonl").read_text().splitlines()]
    steps = [entry["step"] for entry in log if "train_loss" in entry]
    assert steps == list(range(1, 31))  # once each: one writer
    assert [entry["step"] for entry in log if "dev_loss" in entry] == [10, 20, 30]


def children(parent: int) -> dict[int, int]:
    """{rank: pid} of the training processes torchrun started."""
    ranks = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            environ = (entry / "environ").read_bytes().split(b"\0")
        except (OSError, IndexError):
            continue
        rank = [v for v in environ if v.startswith(b"RANK=")]
        if ppid == parent and rank:
            ranks[int(rank[0][5:])] = int(entry.name)
    return ranks


def test_a_signal_to_one_rank_stops_both_and_they_resume_exactly(two_processes, tmp_path):
    out = tmp_path / "stopped"
    process = subprocess.Popen(
        command(out, 2, "train.max_steps=30"), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    deadline = time.time() + 120
    while True:
        log = out / "metrics.jsonl"
        if log.is_file() and len(log.read_text().splitlines()) >= 14:  # past step 12
            break
        assert process.poll() is None and time.time() < deadline, process.communicate()
        time.sleep(0.05)
    os.kill(children(process.pid)[1], signal.SIGTERM)  # rank 1, not the one that writes
    _, err = process.communicate(timeout=120)
    assert process.returncode != 0 and b"Run the same command again to resume" in err
    saved = torch.load(out / "checkpoint.pt", weights_only=True)
    assert 12 <= saved["loop"]["step"] < 30 and not saved["loop"]["finished"]
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
