"""The training loop's parts: schedule, loss, skipped steps, logging and progress."""

import dataclasses
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

import translate.train.loop as train_module
from tests.conftest import tiny_config, write_word_corpus
from tests.conftest import tiny_model as tiny
from translate.config import Config, TrainConfig, config_to_dict
from translate.data import outdir
from translate.data.batches import pair_batch
from translate.data.prepare import prepare
from translate.data.vocab import PAD
from translate.errors import UserError
from translate.model.seq2seq import build_model
from translate.modeldir import WEIGHTS, load_weights
from translate.train import log as trainlog
from translate.train.checkpoint import TrainState
from translate.train.limits import schedule, used
from translate.train.loop import Interrupted, batch_loss

VOCAB = 20
SRC = [[5, 6, 7], [8, 9], [10, 11, 12, 13, 14]]
TGT = [[6, 7], [9, 10, 11], [12]]


def factor(step, total=100, elapsed=0.0, **changes):
    return schedule(TrainConfig(**changes), step, total, elapsed)


def test_constant_schedule_is_one_after_warmup():
    assert factor(1, warmup_steps=4) == pytest.approx(0.25)
    assert factor(4, warmup_steps=4) == 1.0
    assert factor(90) == 1.0


def test_cosine_anneals_to_zero_over_the_steps():
    values = [factor(step, lr_schedule="cosine") for step in (1, 50, 100)]
    assert values == pytest.approx([0.5 * (1 + math.cos(math.pi / 100)), 0.5, 0.0])


def test_cosine_follows_the_clock_when_the_clock_ends_first():
    # step 10 of 100, but 45 of 60 seconds gone: three quarters of the way
    value = factor(10, elapsed=45.0, lr_schedule="cosine", max_minutes=1.0)
    assert value == pytest.approx(0.5 * (1 + math.cos(0.75 * math.pi)))
    assert factor(10, elapsed=99.0, lr_schedule="cosine", max_minutes=1.0) == 0.0


def test_warmup_scales_the_cosine():
    assert factor(2, warmup_steps=4, lr_schedule="cosine") == pytest.approx(
        0.5 * 0.5 * (1 + math.cos(math.pi * 2 / 100))
    )


@torch.no_grad()  # the loss's value only: no graph, and no warning converting it to a float
def test_label_smoothing_zero_is_plain_cross_entropy():
    cfg = Config()
    cfg.model.emb_dim, cfg.model.hidden_dim = 8, 16
    torch.manual_seed(0)
    model = build_model(cfg.model, 20, 20).eval()
    batch = pair_batch([[5, 6, 7], [8]], [[9, 10], [11, 12, 13]])
    logits = model(batch.src_tokens, batch.src_lengths, batch.tgt_in)
    log_probs = logits.log_softmax(-1)
    target = batch.tgt_out
    manual = -log_probs.gather(2, target.unsqueeze(2)).squeeze(2)[target != PAD].sum()
    loss = batch_loss(model, batch, torch.device("cpu"), "fp32", smoothing=0.0)
    assert float(loss) == pytest.approx(float(manual), rel=1e-5)
    # with smoothing e: (1 - e) * nll + e * the mean of -log p over the vocabulary
    smoothed = batch_loss(model, batch, torch.device("cpu"), "fp32", smoothing=0.1)
    uniform = -log_probs.mean(-1)[target != PAD].sum()
    assert float(smoothed) == pytest.approx(float(0.9 * manual + 0.1 * uniform), rel=1e-5)


def test_clipping_keeps_the_norm_at_the_threshold():
    model = tiny()
    batch = pair_batch(SRC, TGT)
    logits = model(batch.src_tokens, batch.src_lengths, batch.tgt_in)
    loss = 1000 * torch.nn.functional.cross_entropy(logits.view(-1, VOCAB), batch.tgt_out.view(-1))
    loss.backward()
    before = torch.nn.utils.clip_grad_norm_(model.parameters(), 0.5)
    after = torch.norm(torch.stack([p.grad.norm() for p in model.parameters()]))
    assert before > 0.5
    assert after == pytest.approx(0.5, rel=1e-4)


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
    weights = load_weights(tmp_path / "m" / WEIGHTS)
    assert all(torch.isfinite(w).all() for w in weights.values())


def test_many_non_finite_losses_in_a_row_stop_training(word_corpus, tmp_path, monkeypatch):
    monkeypatch.setattr(
        train_module, "batch_loss", lambda *a, **k: torch.tensor(float("inf"), requires_grad=True)
    )
    cfg = tiny_config(word_corpus, f"out_dir={tmp_path / 'm'}", "train.max_steps=50")
    with pytest.raises(UserError, match="20 non-finite losses in a row"):
        train_module.train(cfg, log=lambda message: None)
    assert not (tmp_path / "m" / WEIGHTS).exists()  # nothing non-finite saved as best


def test_the_budget_used_is_the_further_of_steps_and_minutes():
    assert used(100, 4140, 20.0, 600.0) == 0.5  # half the 20 minutes, 2% of the steps
    assert used(2070, 4140, 20.0, 60.0) == 0.5  # half the steps, 5% of the minutes
    assert used(100, 1000, 0.0, 6000.0) == 0.1  # no time limit: the steps alone
    assert used(100, 1000, 1.0, 75.0) == 1.0  # never past the end


def test_skipped_steps_do_not_lower_the_logged_loss():
    window = trainlog.Window()
    tokens = 4, 3  # target tokens (EOS included) and source tokens of each step
    window.add(8.0, 1.0, False, *tokens)
    window.add(float("nan"), float("nan"), False, *tokens)  # skipped: no loss, no norm
    window.add(4.0, 3.0, True, *tokens)
    entry = window.flush(TrainState(step=3), torch.optim.SGD([torch.zeros(1)], 0.1), 1.0)
    assert entry["train_loss"] == pytest.approx(12.0 / 8)  # per token of the finite steps
    assert entry["grad_norm"] == pytest.approx(2.0)
    assert entry["clipped"] == pytest.approx(1 / 3, abs=1e-3)


def test_with_a_time_limit_the_bar_shows_the_budget_used_and_its_end_stays_put(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(trainlog.time, "time", lambda: now[0])
    # resumed at step 100 after 50 s of a 20-minute budget that allows 4140 steps
    progress = trainlog.Progress(100, 50.0, 4140, 20.0, show=False)
    shares = [progress.share]
    for step, seconds in ((101, 0.5), (102, 30.0), (103, 0.5)):  # one slow step among fast ones
        now[0] += seconds
        progress.step(step)
        shares.append(progress.share)
    assert progress.elapsed() == 81.0
    assert shares == pytest.approx([50 / 1200, 50.5 / 1200, 80.5 / 1200, 81 / 1200])
    assert progress.bar.total == 100  # a percentage: no end re-estimated from the pace
    # further along in steps than in minutes: the steps' share
    assert trainlog.Progress(4000, 60.0, 4140, 20.0, show=False).share == 4000 / 4140
    steps = trainlog.Progress(5, 60.0, 30, 0.0, show=False)  # no time limit: steps of 30
    assert steps.bar.total == 30 and steps.share == 5 / 30


def counting_saves(monkeypatch) -> list[int]:
    """The step of every checkpoint the loop saves from now on."""
    steps = []
    real = train_module.save_checkpoint

    def save(out, ranks, device, model, optimizer, scaler, state, elapsed):
        steps.append(state.step)
        real(out, ranks, device, model, optimizer, scaler, state, elapsed)

    monkeypatch.setattr(train_module, "save_checkpoint", save)
    return steps


def validated_steps(out) -> list[int]:
    log = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [entry["step"] for entry in log if "dev_loss" in entry]


def test_a_signal_on_a_validation_step_saves_one_checkpoint(word_corpus, tmp_path, monkeypatch):
    saves = counting_saves(monkeypatch)
    real = train_module.train_step

    def signal_in_step_6(run, state, rows, elapsed):
        result = real(run, state, rows, elapsed)
        if state.step == 6:
            os.kill(os.getpid(), signal.SIGINT)  # caught: it only sets the loop's flag
        return result

    monkeypatch.setattr(train_module, "train_step", signal_in_step_6)
    out = tmp_path / "m"
    cfg = tiny_config(
        word_corpus,
        f"out_dir={out}",
        "train.max_steps=20",
        "train.valid_every=3",
        "train.valid_bleu_sentences=0",
    )
    with pytest.raises(Interrupted, match="at step 6"):
        train_module.train(cfg, log=lambda message: None)
    assert saves == [3, 6]  # step 6 validated, then saved once for both reasons
    assert validated_steps(out) == [3, 6]
    saved = torch.load(out / "checkpoint.pt", weights_only=True)
    assert saved["loop"]["step"] == 6 and not saved["loop"]["finished"]


def test_the_last_batch_ends_the_run_with_one_validation_and_one_save(
    word_corpus, tmp_path, monkeypatch
):
    saves = counting_saves(monkeypatch)
    real = train_module.setup

    def more_steps_than_batches(*args):  # the epochs run out before the step limit
        run = real(*args)
        return dataclasses.replace(run, total_steps=run.total_steps + 10)

    monkeypatch.setattr(train_module, "setup", more_steps_than_batches)
    out = tmp_path / "m"
    cfg = tiny_config(
        word_corpus, f"out_dir={out}", "train.max_epochs=1", "train.valid_bleu_sentences=0"
    )
    train_module.train(cfg, log=lambda message: None)
    saved = torch.load(out / "checkpoint.pt", weights_only=True)["loop"]
    assert saved["finished"] and saves == [saved["step"]]
    assert validated_steps(out) == [saved["step"]]
    train_module.train(cfg, log=lambda message: None)  # finished: nothing more to do
    assert saves == [saved["step"]]


# --- one trainer per out_dir, refusals before any write -----------------------------------------


def files_of(out) -> dict:
    """Every file under ``out`` but the lock: its bytes, inode and modification time."""
    return {
        str(path.relative_to(out)): (path.read_bytes(), path.stat().st_ino, path.stat().st_mtime_ns)
        for path in sorted(out.rglob("*"))
        if path.is_file() and path.name != outdir.LOCK
    }


def train_command(tmp_path, word_corpus, *overrides: str) -> list[str]:
    """``translate train`` of the tiny config in ``tmp_path/m``, as a command line."""
    config = tiny_config(word_corpus, f"out_dir={tmp_path / 'm'}", *overrides)
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config_to_dict(config)))
    return [sys.executable, "-m", "translate", "train", str(tmp_path / "c.yaml")]


def test_a_second_trainer_is_refused_at_once_naming_the_first(word_corpus, tmp_path):
    out, command = tmp_path / "m", train_command(tmp_path, word_corpus, "train.max_steps=5")
    with outdir.hold(out):  # this process is "the first trainer"
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
        assert done.returncode == 1
        assert done.stderr == (
            f"translate: error: {out} is in use by another translate process (PID {os.getpid()}); "
            "wait for it to end or stop it (a stopped train resumes), or use another out_dir\n"
        )
        assert files_of(out) == {}  # refused before writing anything
    second = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, err = second.communicate(timeout=300)
    assert second.returncode == 0, err  # the lock went with its holder
    assert (out / WEIGHTS).is_file()
    assert (out / outdir.LOCK).read_text() == f"{second.pid}\n"  # the holder's PID, for the next


def test_the_kernel_releases_the_lock_of_a_killed_trainer(tmp_path):
    out = tmp_path / "m"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_FOREVER, str(out)])
    try:
        deadline = time.monotonic() + 60
        while not (out / "workers-started").is_file():
            assert holder.poll() is None and time.monotonic() < deadline
            time.sleep(0.02)
        with pytest.raises(outdir.Busy, match=rf"\(PID {holder.pid}\)"):
            with outdir.hold(out):
                pass
    finally:
        holder.kill()
        holder.wait(timeout=30)
    with outdir.hold(out):  # SIGKILL ran no clean-up: the kernel let the lock go at once
        assert (out / outdir.LOCK).read_text() == f"{os.getpid()}\n"


# holds the lock with forked workers alive, as prepare's encoding does: a worker outlives a
# killed parent for a while, and must not hold the lock for it
HOLD_FOREVER = """
import multiprocessing, time, sys
from translate.data import outdir
with outdir.hold(sys.argv[1]) as out:
    workers = multiprocessing.get_context("fork").Pool(2)
    workers.map(abs, range(2))  # both started
    (out / "workers-started").touch()
    time.sleep(60)  # killed long before
"""


@pytest.mark.parametrize("where", ["a file", "under a file", "not writable"])
def test_an_out_dir_that_cannot_be_written_is_one_error(word_corpus, tmp_path, where):
    (tmp_path / "file").write_text("not a directory")
    out = {"a file": tmp_path / "file", "under a file": tmp_path / "file" / "m"}.get(where)
    if where == "not writable":
        out = unwritable_folder(tmp_path)
    cfg = tiny_config(word_corpus, f"out_dir={out}")
    message = {
        "a file": f"out_dir {out} is a file, not a directory",
        "under a file": f"cannot use {out} as out_dir: Not a directory",
        "not writable": f"cannot use {out} as out_dir: Permission denied",
    }[where]
    with pytest.raises(UserError) as refused:
        train_module.train(cfg, log=lambda message: None)
    assert str(refused.value) == message


def unwritable_folder(tmp_path):
    """A folder this process cannot create files in. root writes through file modes, so as
    root it is sysfs's root, which refuses new files to anyone."""
    if os.geteuid() != 0:
        folder = tmp_path / "read-only"
        folder.mkdir(mode=0o500)
        return folder
    mounts = open("/proc/mounts").read().split("\n")
    if not any(line.split()[1:3] == ["/sys", "sysfs"] for line in mounts if line):
        pytest.skip("running as root without sysfs at /sys: no folder root cannot write")
    return Path("/sys")


@pytest.mark.parametrize("change", ["data", "model"])
def test_a_run_refused_for_other_settings_writes_nothing(word_corpus, tmp_path, change):
    out = tmp_path / "m"
    quiet = {"log": lambda message: None}
    cfg = tiny_config(word_corpus, f"out_dir={out}", "train.max_steps=5", "train.log_every=1")
    train_module.train(cfg, **quiet)
    before = files_of(out)
    assert {"prepared/manifest.json", "spm.model", "config.yaml", "checkpoint.pt"} <= set(before)
    if change == "data":  # another corpus: it used to be encoded over prepared/ first
        (tmp_path / "other").mkdir()
        write_word_corpus(tmp_path / "other", n_train=300, n_dev=10, seed=1)
        changed = [f"data.train={tmp_path / 'other' / 'train'}", "data.max_len=20"]
        refusal = r"other data settings \(data.train, data.max_len\)"
    else:
        changed, refusal = ["model.hidden_dim=48"], r"other model settings \(model.hidden_dim\)"
    other = tiny_config(word_corpus, f"out_dir={out}", "train.max_steps=5", *changed)
    with pytest.raises(UserError, match=refusal):
        train_module.train(other, **quiet)
    assert files_of(out) == before  # not one byte, not one file replaced
    with pytest.raises(UserError, match=refusal):  # translate prepare refuses alike
        prepare(other, **quiet)
    assert files_of(out) == before


def test_resuming_drops_what_the_killed_run_logged_after_its_checkpoint(tmp_path):
    path = tmp_path / "metrics.jsonl"
    records = [{"step": 5}, {"step": 10, "dev_loss": 1.0}, {"step": 10}, {"step": 15}]
    text = "".join(json.dumps(r) + "\n" for r in records)
    path.write_text(text + '{"step": 20, "train_lo')  # killed in the middle of a line
    with trainlog.open_metrics(path, 10) as metrics:  # the checkpoint is of step 10
        trainlog.record(metrics, {"step": 11})
    kept = "".join(json.dumps(r) + "\n" for r in records[:3])
    assert path.read_text() == kept + '{"step": 11}\n'
    with trainlog.open_metrics(path, 11):  # nothing to drop: the file is left alone
        pass
    assert path.read_text() == kept + '{"step": 11}\n'
    trainlog.open_metrics(path, 0).close()  # a fresh start: nothing of an older run stays
    assert path.read_text() == ""
    trainlog.open_metrics(tmp_path / "new.jsonl", 0).close()
    assert (tmp_path / "new.jsonl").read_text() == ""


@pytest.mark.parametrize("lowered", ["train.max_steps=4", "train.max_epochs=1"])
def test_a_checkpoint_with_nothing_left_to_train_ends_with_one_validation_and_save(
    word_corpus, tmp_path, monkeypatch, lowered
):
    """Resumed with a limit it has passed: no step taken, validated and saved once, finished."""
    real = train_module.train_step

    def signal_at_step_2_of_epoch_2(run, state, rows, elapsed):
        result = real(run, state, rows, elapsed)
        if state.epoch == 2 and state.position == 2:
            os.kill(os.getpid(), signal.SIGINT)  # caught: it only sets the loop's flag
        return result

    monkeypatch.setattr(train_module, "train_step", signal_at_step_2_of_epoch_2)
    out = tmp_path / "m"
    settings = ["train.valid_every=1000", "train.valid_bleu_sentences=0", "train.log_every=1"]
    with pytest.raises(Interrupted):
        train_module.train(
            tiny_config(word_corpus, f"out_dir={out}", *settings), log=lambda m: None
        )
    stopped = torch.load(out / "checkpoint.pt", weights_only=True)["loop"]
    assert stopped["epoch"] == 2 and not stopped["finished"] and validated_steps(out) == []
    monkeypatch.setattr(train_module, "train_step", real)
    saves = counting_saves(monkeypatch)
    train_module.train(
        tiny_config(word_corpus, f"out_dir={out}", *settings, lowered), log=lambda m: None
    )
    saved = torch.load(out / "checkpoint.pt", weights_only=True)["loop"]
    assert saved["finished"] and saved["step"] == stopped["step"]  # no step taken
    assert saves == [stopped["step"]] and validated_steps(out) == [stopped["step"]]
    assert (out / WEIGHTS).is_file()
