"""Training's log: running sums between log lines, the lines of metrics.jsonl, and the progress
bar with the run's clock."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import TextIO

import torch
from tqdm import tqdm

from ..config import CorpusConfig
from ..modeldir import atomic_write
from .checkpoint import TrainState
from .limits import used


class Progress:
    """The run's clock and progress bar. Without a time limit the bar counts steps up to the
    step limit. With one, it shows the share of the budget used (steps or minutes, whichever
    is further along: :func:`~translate.train.limits.used`, what the cosine anneals by), which
    only grows and is full at whichever limit ends the run; a step total re-estimated from the
    pace would jump about."""

    def __init__(self, step: int, elapsed: float, total_steps: int, max_minutes: float, show: bool):
        self.started = time.time() - elapsed  # the time at which the run's clock reads 0
        self.total_steps, self.max_minutes = total_steps, max_minutes
        self.share = used(step, total_steps, max_minutes, elapsed)
        common = dict(dynamic_ncols=True, mininterval=1.0, disable=not show)
        if not max_minutes:
            self.bar = tqdm(total=total_steps, initial=step, desc="train", unit="step", **common)
            return
        budget = f"{max_minutes:g} min or {total_steps} steps"
        shape = (
            "{desc}: {percentage:3.0f}% of " + budget + "|{bar}| [{elapsed}<{remaining}{postfix}]"
        )
        self.bar = tqdm(
            total=100.0,
            initial=100 * self.share,
            desc=f"train step {step}",
            bar_format=shape,
            **common,
        )

    def elapsed(self) -> float:
        """Seconds of training so far, earlier processes' included."""
        return time.time() - self.started

    def step(self, step: int) -> None:
        """Count the step that made ``step`` steps."""
        share = used(step, self.total_steps, self.max_minutes, self.elapsed())
        if not self.max_minutes:
            self.bar.update(1)
        else:
            self.bar.set_description_str(f"train step {step}", refresh=False)
            self.bar.update(100 * share - self.bar.n)  # no drift from summed increments
        self.share = share

    def show(self, entry: dict) -> None:
        """A log entry's loss, speed, rate and clipping beside the bar."""
        self.bar.set_postfix(
            loss=entry["train_loss"],
            tok_s=entry["tgt_tok_s"],
            lr=f"{entry['lr']:.2g}",
            clip=entry["clipped"],
        )

    def write(self, line: str) -> None:
        """Print a line above the bar."""
        self.bar.write(line)

    def close(self) -> None:
        self.bar.close()


def log_window(
    window: Window,
    state: TrainState,
    optimizer: torch.optim.Optimizer,
    corpora: list[CorpusConfig],
    metrics: TextIO,
    progress: Progress,
) -> None:
    """Write the window's averages to metrics.jsonl and beside the progress bar."""
    entry = window.flush(state, optimizer, progress.elapsed())
    entry["pairs_seen"] = pairs_seen(corpora, state.pairs_seen)
    record(metrics, entry)
    progress.show(entry)


def pairs_seen(corpora: list[CorpusConfig], counts: list[int]) -> dict[str, int]:
    """How many training pairs of each corpus the run has taken so far, by corpus path."""
    return {corpus.path: n for corpus, n in zip(corpora, counts)}


def open_metrics(path: Path, step: int) -> TextIO:
    """metrics.jsonl opened for appending, with only the records up to ``step`` (the step the
    run starts from) kept: a run killed after its checkpoint logged steps that the resumed run
    logs again, and perhaps half a line. The file then reads as the uninterrupted run's."""
    try:
        lines = path.read_bytes().splitlines(keepends=True)
    except FileNotFoundError:
        lines = []
    kept = 0
    for line in lines:  # records are in step order: keep the whole ones up to ``step``
        try:
            if not line.endswith(b"\n") or json.loads(line)["step"] > step:
                break
        except (ValueError, KeyError, TypeError):
            break
        kept += 1
    if kept < len(lines):
        atomic_write(path, b"".join(lines[:kept]))
    return open(path, "a", encoding="utf-8")


def record(metrics: TextIO, entry: dict) -> None:
    """Append one JSON line to metrics.jsonl, flushed so that a crash loses nothing logged."""
    if metrics is None:  # not rank 0
        return
    metrics.write(json.dumps(entry) + "\n")
    metrics.flush()


class Window:
    """Running sums between two log lines: loss, tokens, gradient norms, clipping. Steps with
    a non-finite loss or norm count towards speed but not towards the averages."""

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.loss, self.loss_tokens, self.norm, self.finite = 0.0, 0, 0.0, 0
        self.tgt, self.src, self.clipped, self.steps = 0, 0, 0, 0
        self.started = time.time()

    def add(self, loss: float, norm: float, clipped: bool, tgt_tokens: int, src_tokens: int):
        if math.isfinite(loss) and math.isfinite(norm):
            self.loss += loss
            self.loss_tokens += tgt_tokens
            self.norm += norm
            self.finite += 1
        self.tgt += tgt_tokens
        self.src += src_tokens
        self.clipped += clipped
        self.steps += 1

    def flush(self, state: TrainState, optimizer: torch.optim.Optimizer, elapsed: float) -> dict:
        """The log entry of the window so far; starts a new window."""
        seconds = max(time.time() - self.started, 1e-9)
        entry = {
            "step": state.step,
            "epoch": state.epoch,
            "elapsed": round(elapsed, 1),
            "train_loss": round(self.loss / max(self.loss_tokens, 1), 4),
            "grad_norm": round(self.norm / max(self.finite, 1), 3),
            "clipped": round(self.clipped / max(self.steps, 1), 3),
            "lr": optimizer.param_groups[0]["lr"],
            "tgt_tok_s": round(self.tgt / seconds),
            "src_tok_s": round(self.src / seconds),
            "skipped": state.skipped,
        }
        self.reset()
        return entry
