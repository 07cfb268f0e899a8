"""Peak memory of `translate translate` as the input grows: streaming keeps it flat.

Each size runs in a fresh process; its peak RSS comes from getrusage(RUSAGE_CHILDREN).
"""

from __future__ import annotations

import argparse
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from . import ROOT


def peak_rss_of(command: list[str]) -> tuple[float, float]:
    """(seconds, peak RSS in MiB) of a command run to completion in a child process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    start = time.perf_counter()
    subprocess.run(command, check=True, stderr=subprocess.DEVNULL)
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return seconds, max(after, before) / 1024  # ru_maxrss is the largest child so far


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.stream_memory",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-m", "--model", required=True)
    parser.add_argument("--lines", type=int, nargs="+", default=[10_000, 100_000, 500_000])
    parser.add_argument("--beam", type=int, default=1)
    args = parser.parse_args()
    sentences = (ROOT / "data/toy/test.de").read_text(encoding="utf-8").splitlines()
    rng = random.Random(1)
    work = Path(tempfile.mkdtemp(prefix="stream-"))
    print(f"{'lines':>9} {'seconds':>8} {'lines/s':>8} {'peak RSS MiB':>13}")
    for n in sorted(args.lines):  # ascending, so each peak is that size's own
        source = work / f"in.{n}"
        source.write_text("".join(rng.choice(sentences) + "\n" for _ in range(n)))
        seconds, rss = peak_rss_of(
            [
                sys.executable,
                "-m",
                "translate",
                "translate",
                "-m",
                args.model,
                "-i",
                str(source),
                "-o",
                str(work / "out"),
                "--beam",
                str(args.beam),
            ]
        )
        assert sum(1 for _ in open(work / "out", encoding="utf-8")) == n
        print(f"{n:>9} {seconds:>8.1f} {n / seconds:>8.0f} {rss:>13.0f}")


if __name__ == "__main__":
    main()
