"""The experiment directory (``out_dir``) that prepare and train write: one writer at a time,
and the checks that refuse a run before it writes anything there.

The writer holds ``out_dir/.lock`` with ``flock``, so the kernel lets it go when the process
ends, even by SIGKILL; the file holds the writer's PID for the message that refuses a second.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..config import Config, config_to_dict
from ..errors import UserError
from ..modeldir import CHECKPOINT, CONFIG, read_config

LOCK = ".lock"

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
    """A directory whose checkpoint was trained on other data or model settings is refused:
    preparing or training there would mix two experiments."""
    out = Path(cfg.out_dir)
    if not (out / CHECKPOINT).is_file() or not (out / CONFIG).is_file():
        return
    saved = config_to_dict(read_config(out / CONFIG)[0])  # keys added since get defaults
    now = config_to_dict(cfg)
    for section in ("data", "model"):
        if saved[section] != now[section]:
            changed = [k for k in now[section] if saved[section][k] != now[section][k]]
            raise UserError(
                f"{out} holds a checkpoint trained with other {section} settings "
                f"({', '.join(f'{section}.{k}' for k in changed)}); "
                "use a new out_dir, or delete the old one to start over"
            )
