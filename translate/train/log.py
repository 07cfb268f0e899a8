"""Training's log: running sums between log lines, the lines of metrics.jsonl, and where the
progress bar ends."""

from __future__ import annotations

import json
import math
import time
from typing import TYPE_CHECKING, TextIO

from tqdm import tqdm

if TYPE_CHECKING:
    from .checkpoint import TrainState
    from .loop import Run


def last_step(step: int, total_steps: int, max_minutes: float, elapsed: float, pace: float) -> int:
    """The step at which the run will end: ``total_steps``, or sooner when the time budget runs
    out first at ``pace`` seconds per step (for the progress bar's total and ETA)."""
    if not max_minutes or pace <= 0:
        return total_steps
    left = max(max_minutes * 60 - elapsed, 0.0)
    return min(total_steps, step + math.ceil(left / pace))


def log_window(run: Run, window: Window, metrics: TextIO, bar: tqdm) -> None:
    """Write the window's averages to metrics.jsonl and beside the progress bar."""
    entry = window.flush(run.state, run.optimizer, run.elapsed())
    entry["pairs_seen"] = pairs_seen(run)
    record(metrics, entry)
    bar.set_postfix(
        loss=entry["train_loss"],
        tok_s=entry["tgt_tok_s"],
        lr=f"{entry['lr']:.2g}",
        clip=entry["clipped"],
    )


def pairs_seen(run: Run) -> dict[str, int]:
    """How many training pairs of each corpus the run has taken so far."""
    return {corpus.path: n for corpus, n in zip(run.cfg.data.train, run.state.pairs_seen)}


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

    def flush(self, state: TrainState, optimizer, elapsed: float) -> dict:
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
