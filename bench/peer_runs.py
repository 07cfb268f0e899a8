"""Installing a peer toolkit and running it as a child process: its log, peak memory and
logged throughput, and the interrupt that stops it against the clock. Each toolkit has its own
virtual environment, with the CPU torch this project uses, under a cache folder (default
``bench/.cache/``, about 1.3 GB each; delete it to reinstall).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import yaml

DEFAULT_CACHE = Path(__file__).resolve().parent / ".cache"
TORCH = "torch==2.13.0"  # the CPU build this machine serves; every peer runs on it


class PeerError(RuntimeError):
    """A peer toolkit failed; the message ends with the tail of its log."""


# --- installation ---------------------------------------------------------------------------


def setup_venv(folder: Path, packages: list[str], build: list[str] | None = None) -> Path:
    """Create ``folder`` as a virtual environment holding ``packages`` and return its python.
    With ``build``, those are installed first and ``packages`` built against them, without
    pip's isolated build environments. A file listing the packages marks a finished install,
    so a second call returns at once."""
    python = folder / "bin" / "python"
    marker = folder / "installed.txt"
    wanted = "\n".join([*(build or []), *packages]) + "\n"
    if marker.is_file() and marker.read_text() == wanted:
        return python
    subprocess.run([sys.executable, "-m", "venv", str(folder)], check=True)
    pip = [str(python), "-m", "pip", "install", "-q"]
    if build:
        subprocess.run([*pip, *build], check=True)
        pip.append("--no-build-isolation")
    subprocess.run([*pip, *packages], check=True)
    marker.write_text(wanted)
    return python


# --- running a peer -------------------------------------------------------------------------


@dataclass
class ChildRun:
    """What a finished peer process left: exit code, wall time, peak memory and log."""

    returncode: int
    wall_s: float
    rss_mib: float
    log: str
    interrupted: bool


def child_env(threads: int) -> dict[str, str]:
    """Environment of a peer process. None of the toolkits has a torch thread option, so torch
    takes its intra-op thread count from OMP_NUM_THREADS. torch >= 2.6 loads checkpoints
    with ``weights_only=True``, which the toolkits' pickles fail; the variable restores the
    old behaviour for their process only."""
    return {
        **os.environ,
        "OMP_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
        "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1",
        "PYTHONUNBUFFERED": "1",
    }


def run_child(
    cmd: list[str],
    log_path: Path,
    threads: int,
    stdin: Path | None = None,
    stdout: Path | None = None,
    should_stop: Callable[[float, str], bool] | None = None,
    kill_after: float = 300.0,
) -> ChildRun:
    """Run ``cmd`` with its output (stderr only, when ``stdout`` is given) in ``log_path``;
    send it SIGINT once ``should_stop(elapsed seconds, log so far)`` says so, and SIGKILL
    ``kill_after`` seconds later if it is still running. Peak RSS comes from wait4, so it is
    this child's own."""
    start = time.perf_counter()
    interrupted_at = None
    with ExitStack() as files:
        log = files.enter_context(open(log_path, "w"))
        source = files.enter_context(open(stdin or os.devnull, "rb"))
        out = files.enter_context(open(stdout, "w")) if stdout else log
        proc = subprocess.Popen(
            cmd,
            stdin=source,
            stdout=out,
            stderr=log,
            env=child_env(threads),
            # a shell starts background jobs with SIGINT ignored, and Python then never raises
            # KeyboardInterrupt: JoeyNMT ran on past its stop. Give the child the default.
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            elapsed = time.perf_counter() - start
            if interrupted_at is None and should_stop is not None:
                if should_stop(elapsed, log_path.read_text(errors="replace")):
                    proc.send_signal(signal.SIGINT)
                    interrupted_at = elapsed
            elif interrupted_at is not None and elapsed - interrupted_at > kill_after:
                proc.kill()  # it ignored the interrupt
            time.sleep(0.5)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return ChildRun(
        returncode=proc.returncode,
        wall_s=time.perf_counter() - start,
        rss_mib=usage.ru_maxrss / 1024,
        log=log_path.read_text(errors="replace"),
        interrupted=interrupted_at is not None,
    )


def check(run: ChildRun, what: str) -> None:
    """Raise :class:`PeerError` with the log's tail when a peer exited with an error."""
    if run.returncode != 0 and not run.interrupted:
        tail = "\n".join(run.log.splitlines()[-15:])
        raise PeerError(f"{what} exited with {run.returncode}:\n{tail}")


def window_throughput(log: str, pattern: str) -> float:
    """Target tokens/s over a training run from the rates the toolkit logs per window of
    equal steps. The first window (data loading, allocator warm-up) is dropped when there are
    others; the rest are combined as total tokens / total time, i.e. their harmonic mean,
    since token-sized batches give every window nearly the same number of tokens."""
    rates = [float(rate) for rate in re.findall(pattern, log)]
    if not rates:
        raise PeerError(f"no throughput line ({pattern!r}) in the training log")
    rates = rates[1:] or rates
    return len(rates) / sum(1 / rate for rate in rates)


def logged_value(run: ChildRun, pattern: str) -> float:
    """The number a peer logged in the first group of ``pattern``."""
    found = re.search(pattern, run.log)
    if not found:
        raise PeerError(f"no line matching {pattern!r} in the log:\n{run.log[-2000:]}")
    return float(found.group(1))


def write_train_yaml(workdir: Path, config: dict) -> Path:
    """``workdir/train.yaml`` holding ``config``."""
    path = workdir / "train.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def minutes_after(minutes: float, loop_start: str) -> Callable[[float, str], bool]:
    """A ``should_stop`` for :func:`run_child` that is true ``minutes`` after the toolkit
    logged ``loop_start``, the start of its training loop: ours counts ``train.max_minutes``
    from its loop too, so start-up (imports, data, model) is not part of the budget."""
    started: list[float] = []

    def past(elapsed: float, log: str) -> bool:
        if not started and loop_start in log:
            started.append(elapsed)
        return bool(started) and elapsed - started[0] >= 60 * minutes

    return past


def report_every(steps: int | None) -> int:
    """Steps per logged throughput window: 10, fewer for a short fixed run."""
    return 10 if steps is None else max(1, min(10, steps // 4))


def check_budget(minutes: float | None, steps: int | None) -> None:
    if (minutes is None) == (steps is None):
        raise ValueError("give exactly one of minutes and steps")
