"""The experiment directory (``out_dir``) that prepare and train write: one writer at a time,
and the checks that refuse a run before it writes anything there.

The writer holds ``out_dir/.lock`` with ``flock``, so the kernel lets it go when the process
ends, even by SIGKILL; the file holds the writer's PID for the message that refuses a second.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..config import Config, config_to_dict, parent_settings
from ..errors import UserError
from ..modeldir import (
    CHECKPOINT,
    CONFIG,
    ModelDirError,
    read_config,
    read_model_dir,
    vocab_paths,
    weights_file,
)

LOCK = ".lock"
PARENT = "parent.json"  # the model a fine-tuned run started from: path, weight file, sha256

# the lock files this process holds open: a forked child (an encoding worker) closes its
# copies, so that a child left behind by a killed parent does not keep the directory locked
_held: set[int] = set()


def _close_held_in_child() -> None:
    for fd in _held:
        os.close(fd)  # closing a copy releases nothing: the parent's descriptor still holds
    _held.clear()


os.register_at_fork(after_in_child=_close_held_in_child)


class Busy(UserError):
    """Another process is writing the same out_dir."""


@contextmanager
def hold(out_dir: str | Path) -> Iterator[Path]:
    """Create ``out_dir`` if needed and hold its lock while the block runs (yields the path).
    A directory another process holds is refused at once, naming that process."""
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd = os.open(out / LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except FileExistsError:
        raise UserError(f"out_dir {out} is a file, not a directory") from None
    except OSError as err:  # a file on the way, no permission, a read-only disk
        raise UserError(f"cannot use {out} as out_dir: {err.strerror or err}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            # empty only in the moment between the holder's flock and its write
            pid = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            raise Busy(
                f"{out} is in use by another translate process (PID {pid}); wait for it to "
                "end or stop it (a stopped train resumes), or use another out_dir"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        _held.add(fd)
        yield out
    finally:
        _held.discard(fd)
        os.close(fd)  # releases the lock


def check_same_experiment(cfg: Config) -> None:
    """A directory whose checkpoint was trained on other data or model settings, or started
    from another model (``train.init_from``), is refused, and so is a run started from its
    own out_dir: preparing or training there would mix two experiments."""
    out = Path(cfg.out_dir)
    if cfg.train.init_from and out.resolve() == Path(cfg.train.init_from).resolve():
        raise UserError(
            f"train.init_from is out_dir itself ({out}): fine-tune into a new out_dir; a larger "
            "train.max_steps, max_epochs or max_minutes trains a finished run further"
        )
    if not (out / CHECKPOINT).is_file() or not (out / CONFIG).is_file():
        return
    saved = config_to_dict(read_config(out / CONFIG)[0])  # keys added since get defaults
    now = config_to_dict(cfg)
    before, now_from = saved["train"]["init_from"], now["train"]["init_from"]
    if before != now_from:
        raise UserError(
            f"{out} holds a checkpoint of a run started {_started(before)}; this one starts "
            f"{_started(now_from)} (train.init_from): use a new out_dir, or delete the old one "
            "to start over"
        )
    for section in ("data", "model"):
        if saved[section] != now[section]:
            changed = [k for k in now[section] if saved[section][k] != now[section][k]]
            raise UserError(
                f"{out} holds a checkpoint trained with other {section} settings "
                f"({', '.join(f'{section}.{k}' for k in changed)}); "
                "use a new out_dir, or delete the old one to start over"
            )


def _recorded_parent(out: Path) -> str | None:
    """The parent out/parent.json names (a fine-tune stopped before its first checkpoint)."""
    try:
        return json.loads((out / PARENT).read_text(encoding="utf-8")).get("init_from")
    except (OSError, ValueError, AttributeError):
        return None


def _started(init_from: str) -> str:
    return f"from {init_from}" if init_from else "from scratch"


def check_parent(cfg: Config) -> None:
    """The model a run starts from (``train.init_from``), checked before anything is written
    (unless the run resumes its own checkpoint, after :func:`check_same_experiment`). Refused:
    a directory that is not a whole model, settings that differ from its own, an out_dir
    holding another model or other SentencePiece models, and ``init_optimizer`` without the
    parent's checkpoint."""
    if not cfg.train.init_from:
        return
    out, parent = Path(cfg.out_dir), Path(cfg.train.init_from)
    if (out / CHECKPOINT).is_file():  # resuming: check_same_experiment found the same parent
        return
    if weights_file(out).is_file() and _recorded_parent(out) != cfg.train.init_from:
        raise UserError(
            f"{out} already holds a model ({weights_file(out).name}) and no checkpoint: "
            "fine-tune into a new out_dir"
        )
    try:
        files = read_model_dir(parent)
    except ModelDirError as err:
        raise UserError(f"train.init_from: {err}") from None
    ours, theirs = parent_settings(cfg), parent_settings(files.cfg)
    differ = [
        f"{k} {ours[k]!r} (the parent's: {theirs[k]!r})" for k in ours if ours[k] != theirs[k]
    ]
    if differ:  # load_config takes the parent's; a config built otherwise must match
        raise UserError(
            f"train.init_from {parent} fixes the model and vocabulary settings, and this config "
            f"has others: {', '.join(differ)}"
        )
    mine = vocab_paths(out, cfg.data.joint_vocab)
    for path, theirs_path in zip(mine, vocab_paths(parent, cfg.data.joint_vocab)):
        if path.is_file() and path.read_bytes() != theirs_path.read_bytes():
            raise UserError(
                f"{path} is not the SentencePiece model of {parent}: {out} holds files of "
                "another experiment; fine-tune into a new out_dir"
            )
    if cfg.train.init_optimizer and not (parent / CHECKPOINT).is_file():
        raise UserError(
            f"train.init_optimizer: {parent} has no {CHECKPOINT} to take the optimiser's state "
            "from (averaged, or its checkpoint deleted); leave init_optimizer out to start "
            "Adam afresh"
        )
