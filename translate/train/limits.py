"""The limits that end a training run (steps, epochs, minutes, patience): the share of them a
run has used, the learning-rate schedule that anneals over that share, and which limits a run
has reached, with the keys to raise to go on.

The schedule is a function of the step, the clock and the limits alone. So a finished run
given a larger limit goes on with the cosine stretched over the new limits: the rate comes back
to the one a run given those limits from the start has at this step, and anneals to 0 at their
end. Raising 1000 steps to 2000 restarts at half the base rate; raising it to 1100, at 2% of
it: a small extension polishes the model instead of shaking it at the full rate.
"""

from __future__ import annotations

import math

from ..config import TrainConfig
from .checkpoint import TrainState

# each limit's key under train.*, and its name in a sentence
LIMITS = {
    "max_steps": "the step limit",
    "max_epochs": "the epoch limit",
    "max_minutes": "the time limit",
    "patience": "the patience limit",
}


def used(step: int, total_steps: int, max_minutes: float, elapsed: float) -> float:
    """The share of its budget a run has used after ``step`` steps and ``elapsed`` seconds:
    steps over the step limit, or the clock over the time limit where that is further along
    (from 0 to 1; it only grows, and reaches 1 at whichever limit ends the run)."""
    share = step / max(total_steps, 1)
    if max_minutes:
        share = max(share, elapsed / (max_minutes * 60))
    return min(share, 1.0)


def schedule(t: TrainConfig, step: int, total_steps: int, elapsed: float) -> float:
    """The learning-rate factor of step number ``step`` (from 1): linear warm-up, then constant
    or a cosine down to 0 at the end of the run, whichever of ``total_steps`` and
    ``max_minutes`` comes first (so a wall-clock budget is annealed into, not cut off)."""
    warm = min(1.0, step / t.warmup_steps) if t.warmup_steps else 1.0
    if t.lr_schedule == "constant":
        return warm
    return warm * 0.5 * (1 + math.cos(math.pi * used(step, total_steps, t.max_minutes, elapsed)))


def reached(t: TrainConfig, state: TrainState, elapsed: float, epochs_done: bool) -> list[str]:
    """The keys of the limits a run at ``state`` and ``elapsed`` seconds has reached under
    ``t``, in the order of :data:`LIMITS`; ``epochs_done``: it has taken the last batch of
    its last epoch."""
    keys = []
    if t.max_steps and state.step >= t.max_steps:
        keys.append("max_steps")
    if epochs_done:
        keys.append("max_epochs")
    if t.max_minutes and elapsed >= t.max_minutes * 60:
        keys.append("max_minutes")
    if t.patience and state.bad_validations >= t.patience:
        keys.append("patience")
    return keys


def ended_by(
    t: TrainConfig, state: TrainState, total_steps: int, elapsed: float, epochs_done: bool
) -> list[str]:
    """The limits that end a run now (``epochs_done``: its last epoch's last batch is taken).
    The step limit the epochs set, ``total_steps`` without max_steps, is the epoch limit."""
    by_steps = bool(t.max_steps) and state.step >= t.max_steps
    return reached(t, state, elapsed, epochs_done or (state.step >= total_steps and not by_steps))


def already_finished(out_dir: str, t: TrainConfig, state: TrainState | None) -> str | None:
    """What to say of a saved run that is finished and stays finished under ``t`` (None when
    ``t`` gives it more to train, or it is not finished). Its epochs are done when it ended
    by them in its last epoch; a checkpoint saved before ``stopped_by`` was kept counts as
    ended by them."""
    if state is None or not state.finished:
        return None
    by_epochs = "max_epochs" in state.stopped_by or not state.stopped_by
    epochs_done = state.epoch > t.max_epochs or (state.epoch == t.max_epochs and by_epochs)
    keys = reached(t, state, state.elapsed, epochs_done)
    if not keys:
        return None
    return (
        f"{out_dir} has already finished: at step {state.step} it {say_reached(t, keys)}; "
        f"{how_to_continue(keys)}"
    )


def continuing(t: TrainConfig, state: TrainState, total_steps: int) -> str:
    """The log line of a finished run going on under larger limits: where its rate goes."""
    rate = t.lr * state.lr_scale * schedule(t, state.step + 1, total_steps, state.elapsed)
    more = f"{total_steps - state.step} more steps at most"
    if t.max_minutes:
        more += f", {max(t.max_minutes - state.elapsed / 60, 0):.1f} more minutes"
    if t.lr_schedule == "constant":
        how = f"the rate stays {rate:.3g}"
    else:
        how = (
            f"the cosine is stretched over the new limits: the rate comes back to {rate:.3g} "
            f"(train.lr x {rate / t.lr:.3g}) and anneals to 0 at their end"
        )
    return f"continuing the finished run from step {state.step} ({more}); {how}"


def say_reached(t: TrainConfig, keys: list[str]) -> str:
    """The reached limits in words: ``reached the step limit (train.max_steps=30)``."""
    return "reached " + " and ".join(
        f"{LIMITS[key]} (train.{key}={getattr(t, key):g})" for key in keys
    )


def how_to_continue(keys: list[str]) -> str:
    """What to change to train a run that reached ``keys`` further."""
    larger = " and ".join(f"train.{key}" for key in keys)
    return f"to train further, run it again with a larger {larger}"
